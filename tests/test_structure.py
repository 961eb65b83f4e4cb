"""Static rules of the code's shape (docs/architecture.md): the core imports no scenario, scenario code
never compares a credit-rule name, recipe files stay short."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from marl.credit import RULES
from marl.recipes import RECIPES
from tests.cli_helpers import ROOT

SCENARIO_PACKAGES = ("games", "search", "topologies")
RECIPE_MAX_LINES = 300


def _py_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_the_core_imports_no_scenario():
    bad = [
        f"{p.relative_to(ROOT)}:{line}: import {mod}"
        for p in _py_files("marl")
        for line, mod in _imports(ast.parse(p.read_text()))
        if mod.split(".")[0] in SCENARIO_PACKAGES
    ]
    assert not bad, "marl/ reaches into a scenario (go through marl.recipes.RECIPES):\n" + "\n".join(bad)


def _names_a_rule(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in RULES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_rule(e) for e in node.elts)
    if isinstance(node, ast.Attribute):
        return node.attr == "rule"
    if isinstance(node, ast.Name):
        return node.id.isupper() and "RULE" in node.id  # a module constant listing rules
    return False


def rule_comparisons(source: str) -> list[int]:
    """Lines of ``source`` that compare (==, !=, in, not in, match) something with a credit-rule name."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_names_a_rule(x) for x in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Match) and _names_a_rule(node.subject):
            lines.append(node.lineno)
    return lines


def test_the_rule_comparison_finder_finds_comparisons():
    # the check below is only as good as this finder: it must catch every form seen in scenario code
    assert rule_comparisons('if cfg.credit.rule == "gigpo": pass') == [1]
    assert rule_comparisons('x = "mars_turn" in ("a",)') == [1]
    assert rule_comparisons('x = rule in ("mars_turn", "gigpo")') == [1]
    assert rule_comparisons("LAST_TURN_RULES = ()\nx = cfg.rule in LAST_TURN_RULES") == [2]
    assert rule_comparisons("match cfg.credit.rule:\n    case _:\n        pass") == [1]
    assert rule_comparisons('CreditConfig(rule="mars_turn")\nx = y == "grpo_like"') == []


def test_no_scenario_compares_a_credit_rule_name():
    scenario_code = _py_files(*SCENARIO_PACKAGES) + [ROOT / "marl" / "recipes" / "single_turn.py"]
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in scenario_code for line in rule_comparisons(p.read_text())]
    assert not bad, (
        "scenario code decides by credit-rule name; declare what the rule reads in its RuleSpec "
        "(marl.credit.registry.RULES) and ask marl.credit instead:\n" + "\n".join(bad)
    )


TRAINING_RECIPES = sorted(n for n in RECIPES if hasattr(importlib.import_module(RECIPES[n]), "train"))


@pytest.mark.parametrize("name", TRAINING_RECIPES)
def test_recipe_files_stay_short(name):
    module = importlib.import_module(RECIPES[name])
    lines = len(Path(module.__file__).read_text().splitlines())
    assert lines <= RECIPE_MAX_LINES, (
        f"{module.__file__} has {lines} lines: keep the recipe to its config and loop "
        f"(at most {RECIPE_MAX_LINES}); move engines and helpers beside it"
    )


def test_benchmark_scripts_import_this_checkout():
    """A benchmark run from a checkout measures that checkout's code, not an installed copy: every
    script that imports a project package first puts the repository root on ``sys.path``."""
    project = ("marl", *SCENARIO_PACKAGES)
    offenders = []
    for path in _py_files("benchmarks"):
        tree = ast.parse(path.read_text())
        uses = [line for line, mod in _imports(tree) if mod.split(".")[0] in project]
        inserts = [
            n.lineno
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and ast.unparse(n.func) == "sys.path.insert"
        ]
        if uses and (not inserts or min(inserts) > min(uses)):
            offenders.append(path.name)
    assert not offenders, f"benchmarks importing the project before inserting the repo root: {offenders}"

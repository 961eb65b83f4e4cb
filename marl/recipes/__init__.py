"""Recipes by name: the one place where a YAML ``recipe:`` string becomes code.

Values are module paths, imported lazily so the core never imports a scenario
package unless a run asks for it. A training recipe module defines ``Config`` (its run-config
dataclass, a ``marl.scenario.RecipeConfig``), ``train(cfg, runner)``, ``evaluate_run(cfg, runner)``
and ``SMOKE_OVERRIDES`` (``key=value`` strings that shrink any of its configs to a seconds-long
run); it may define ``RETIRED_KEYS`` (old key -> what replaced it) so an old config fails with the
way forward. A command module (``recipe: tournament``) defines ``Config`` and ``run(cfg) -> str``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RECIPES: dict[str, str] = {
    "single_turn": "marl.recipes.single_turn",
    "mars2": "search.mars2",
    "selfplay": "games.selfplay",
    "tournament": "games.tournament",
    "topology": "topologies.recipe",
    "coevolution": "games.coevolution",
}


def get_recipe(name: str) -> ModuleType:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}'. Valid recipes: {', '.join(sorted(RECIPES))}")
    return importlib.import_module(RECIPES[name])

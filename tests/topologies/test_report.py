"""The method table of a topology run: reference rows, best fixed topology, formatting."""

from __future__ import annotations

from topologies.report import method_table


def _row(acc, exact=None, *, prompt=10.0, completion=5.0, calls=2.0, edges=1.0, oracle=None):
    r = {
        "eval/accuracy": acc,
        "eval/prompt_tokens": prompt,
        "eval/completion_tokens": completion,
        "eval/calls_per_query": calls,
        "eval/edges": edges,
    }
    if exact is not None:
        r["eval/expected_accuracy"] = exact
    if oracle is not None:
        r["eval/oracle"] = oracle
    return r


def test_best_fixed_is_chosen_by_exact_accuracy_on_the_testbed():
    rows = {
        "this run": _row(0.5, 0.6, oracle=0.9, edges=3.0),
        "fixed: chain": _row(0.40, 0.20),  # higher sampled accuracy, lower exact
        "fixed: star": _row(0.30, 0.35, prompt=7.4, completion=2.6, calls=4.0, edges=4.0),
    }
    lines = method_table(rows, "query, edge", 4800).splitlines()
    assert lines[2] == "| oracle (best graph per query) | | 90.0 | | | | |"
    assert lines[3] == "| this run: query, edge | 50.0 | 60.0 | 10 + 5 | 2.00 | 3.0 | 4800 |"
    assert lines[4] == "| best fixed (star) | 30.0 | 35.0 | 7 + 3 | 4.00 | 4.0 | — |"
    assert len(lines) == 7  # header, rule, oracle, run, best fixed, two fixed rows
    # a run that learned the agent order: its oracle is the best graph over every order
    any_order = method_table(rows, "query, edge, learned order", 4800, any_order=True).splitlines()
    assert any_order[2] == "| oracle (best graph per query, any order) | | 90.0 | | | | |"


def test_without_exact_values_the_best_fixed_is_chosen_by_accuracy_and_no_oracle_row():
    rows = {"this run": _row(0.5), "fixed: chain": _row(0.4), "fixed: star": _row(0.3)}
    lines = method_table(rows, "free policy, graph_grpo", 16).splitlines()
    assert not any(line.startswith("| oracle") for line in lines)
    assert lines[3] == "| best fixed (chain) | 40.0 |  | 10 + 5 | 2.00 | 1.0 | — |"


def test_a_table_without_fixed_rows_has_the_run_only():
    lines = method_table({"this run": _row(0.25)}, "query, graph", 8).splitlines()
    assert lines[2:] == ["| this run: query, graph | 25.0 |  | 10 + 5 | 2.00 | 1.0 | 8 |"]

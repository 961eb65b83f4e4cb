"""Every shipped co-evolution config runs through the real CLI at toy scale (train, then eval) with
the recipe's SMOKE_OVERRIDES, and every field of the recipe's own config blocks is read.

The same check as ``tests/test_config_fields.py`` (which runs every config of every recipe at
once), narrowed to this recipe so it can run on its own."""

from __future__ import annotations

import pytest

from games import coevolution
from tests.cli_helpers import ROOT
from tests.test_config_fields import FieldReads, _check_smoke_run, _train_and_eval, schema_classes

CONFIGS = sorted((ROOT / "configs" / "coevolution").glob("*.yaml"))


def _own_classes():
    return {c: f for c, f in schema_classes().items() if c.__module__.startswith("games.coevolution")}


def test_every_coevolution_config_field_is_read(tmp_path):
    assert CONFIGS
    reads = FieldReads(_own_classes())
    runs = []
    with reads:
        for config in CONFIGS:
            runs.append(_train_and_eval(config, tmp_path / config.stem))
    for run in runs:
        _check_smoke_run(run, coevolution)
        assert (run / "results.md").read_text().count("|") > 20
    assert not reads.unread(), "co-evolution config fields that nothing reads:\n" + "\n".join(reads.unread())


pytestmark = pytest.mark.filterwarnings("ignore")

"""Every config in configs/ starts with the command that runs it and resolves with `marl show-config`.
(Each one is also run through the CLI at toy scale by tests/test_config_fields.py.)"""

import pytest

from marl import cli
from tests.cli_helpers import ROOT

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_every_config_starts_with_its_command():
    for p in CONFIGS:
        first = p.read_text().splitlines()[0]
        assert first.startswith("# marl ") and str(p.relative_to(ROOT)) in first, p


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_show_config_resolves_every_shipped_config(config, capsys):
    assert cli.main(["show-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recipe: ") and len(out.splitlines()) > 5

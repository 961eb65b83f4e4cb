import textwrap

import pytest

from marl.config import ConfigError, load_config
from marl.recipes.single_turn import SingleTurnConfig


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_unknown_key_names_full_path_and_valid_keys(tmp_path):
    p = _yaml(
        tmp_path,
        """
        recipe: single_turn
        agents:
          a:
            optim: {lr: 1.0e-3, momentum: 0.9}
        """,
    )
    with pytest.raises(ConfigError) as e:
        load_config(SingleTurnConfig, [p])
    msg = str(e.value)
    assert "agents.a.optim.momentum" in msg
    for valid in ("lr", "betas", "weight_decay", "grad_clip", "schedule"):
        assert valid in msg


def test_unknown_key_in_override(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(SingleTurnConfig, [], ["run.stepz=3"])
    assert "run.stepz" in str(e.value) and "steps" in str(e.value)


def test_wrong_type_names_key(tmp_path):
    p = _yaml(tmp_path, "recipe: single_turn\nrun: {steps: many}\n")
    with pytest.raises(ConfigError) as e:
        load_config(SingleTurnConfig, [p])
    assert "run.steps" in str(e.value)


def test_wrong_type_in_agent_block(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(
            SingleTurnConfig,
            [_yaml(tmp_path, "agents: {agent: {}}")],
            ["agents.agent.sampling.max_new_tokens=lots"],
        )
    assert "agents.agent.sampling.max_new_tokens" in str(e.value)


def test_invalid_value_is_rejected_with_path(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(
            SingleTurnConfig, [_yaml(tmp_path, "agents: {agent: {}}")], ["agents.agent.optim.schedule=wobbly"]
        )
    assert "agents.agent.optim" in str(e.value) and "cosine" in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(SingleTurnConfig, [tmp_path / "nope.yaml"])


def test_overrides_merge_and_agents_stay_distinct(tmp_path):
    p = _yaml(
        tmp_path,
        """
        recipe: single_turn
        agents:
          small: {optim: {lr: 1.0e-3, betas: [0.9, 0.95]}, loss: {clip_high: 0.3}}
          large: {optim: {lr: 2.0e-4, weight_decay: 0.1}}
        """,
    )
    cfg = load_config(SingleTurnConfig, [p], ["agents.large.sampling.temperature=0.7"])
    assert set(cfg.agents) == {"small", "large"}
    assert cfg.agents["small"].optim.lr == 1e-3 and cfg.agents["large"].optim.lr == 2e-4
    assert cfg.agents["small"].optim.betas == [0.9, 0.95] and cfg.agents["large"].optim.betas == [0.9, 0.999]
    assert cfg.agents["large"].sampling.temperature == 0.7 and cfg.agents["small"].sampling.temperature == 1.0
    assert cfg.agents["small"].loss.clip_high == 0.3 and cfg.agents["large"].loss.clip_high != 0.3


def test_no_agents_is_an_error():
    with pytest.raises(ConfigError, match="at least one agent"):
        load_config(SingleTurnConfig, [], [])

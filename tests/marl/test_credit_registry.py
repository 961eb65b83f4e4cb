"""Tests for marl.credit.registry: config, rule lookup, CreditAssigner over trees, checkpoints."""

import dataclasses
import pickle

import numpy as np
import pytest
from omegaconf import OmegaConf

from marl.credit import (
    CREDIT_RULES,
    RULES,
    AdvantageAlignmentSettings,
    CreditAssigner,
    CreditConfig,
    GigpoSettings,
    Mars2Settings,
    McGrpoSettings,
    NgrpoSettings,
    ReinforcePPSettings,
    SpiralRaeSettings,
    SpoSettings,
    TopologySettings,
    advantage_alignment_credit,
    check_settings,
    co_player_sum,
    discounted_returns,
    gigpo_advantages,
    key_fields,
    loo_return_advantages,
)
from marl.credit.groups import segment_rank
from marl.tree import TurnTree
from marl.types import Turn


def _turn(n_tokens=2, data=None):
    return Turn(
        prompt_ids=np.array([1, 2], dtype=np.int32),
        completion_ids=np.arange(3, 3 + n_tokens, dtype=np.int32),
        logprobs=np.full(n_tokens, -0.1, dtype=np.float32),
        data=data or {},
    )


def _prompt_tree():
    """Two prompts (roots 0 and 4) with three sampled answers each, agents alternate a/b."""
    t = TurnTree(["a", "b"])
    for rewards in ([1.0, 0.0, 0.0], [0.5, 0.5, 1.0]):
        root = t.add_nodes(-1)[0]
        t.add_nodes(root, agent=["a", "b", "a"], reward=rewards, payloads=[_turn(2), _turn(3), _turn(1)])
    return t


def _graph_tree():
    """Two queries (roots 0 and 4), three sampled graphs each over three candidate edges (0/1 tokens)."""
    t = TurnTree(["topology"])
    for rewards in ([1.0, 0.0, 0.0], [0.5, 0.5, 1.0]):
        root = t.add_nodes(-1)[0]
        edges = [[1, 0, 1], [0, 1, 1], [1, 1, 0]]
        payloads = [
            Turn(np.zeros(0, np.int32), np.array(a, np.int32), np.zeros(3, np.float32)) for a in edges
        ]
        t.add_nodes(root, agent="topology", reward=rewards, payloads=payloads)
    return t


def _game_tree():
    """Two seed groups x two episodes; each episode a path of 4 turns alternating agents a, b."""
    t = TurnTree(["a", "b"])
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for _ in range(2):
            node = t.add_nodes(-1, group=seed, state_hash=seed)[0]
            for k in range(4):
                node = t.add_nodes(
                    node,
                    agent=k % 2,
                    role=k % 2,
                    reward=float(rng.integers(-1, 2)),
                    state_hash=10 * seed + k,
                    payloads=_turn(2),
                )[0]
    return t


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*grpo"):
        CreditAssigner(CreditConfig(rule="ppo_gae"))
    with pytest.raises(ValueError, match="valid names: .*batch_per_agent"):
        CreditAssigner(CreditConfig(normalizer="layer"))


def test_config_is_omegaconf_structured():
    base = OmegaConf.structured(CreditConfig)
    cfg = OmegaConf.merge(base, OmegaConf.create("rule: rloo\ngroup_key: [group, agent]\nmars2: {lam: 0.25}"))
    assert cfg.rule == "rloo" and list(cfg.group_key) == ["group", "agent"] and cfg.mars2.lam == 0.25
    with pytest.raises(Exception, match="not_a_field"):
        OmegaConf.merge(base, OmegaConf.create("not_a_field: 1"))
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, CreditConfig)
    # rloo does not read the MARS² block: refused, naming the rule and what it reads
    with pytest.raises(ValueError, match="credit.mars2 is set, but rule 'rloo' does not read it"):
        CreditAssigner(obj)
    obj.mars2.lam = 0.5
    assert CreditAssigner(obj)(_prompt_tree()).advantages.shape == (6,)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_refuses_every_setting_it_does_not_read(rule):
    # each shared setting and each sub-block, set away from its default, is refused by exactly the rules
    # whose RuleSpec does not list it (multi-turn scenarios, where outcome rules also read gamma/player_key)
    changed = {
        "group_key": ["agent"],
        "player_key": ["agent"],
        "eps": 0.5,
        "unbiased_std": False,
        "scale_by_std": False,
        "gamma": 0.5,
        "time_step": "round",
        "mars2": Mars2Settings(lam=0.25),
        "ngrpo": NgrpoSettings(r_max=2.0),
        "mc_grpo": McGrpoSettings(scale_by_std=True),
        "reinforce_pp": ReinforcePPSettings(gamma=0.5),
        "spiral_rae": SpiralRaeSettings(alpha=0.5),
        "gigpo": GigpoSettings(omega=0.5),
        "advantage_alignment": AdvantageAlignmentSettings(beta=2.0),
        "spo": SpoSettings(d_half=0.1),
        "topology": TopologySettings(token_cost=0.5),
    }
    assert set(changed) == {f.name for f in dataclasses.fields(CreditConfig)} - {"rule", "normalizer"}
    reads = set(RULES[rule].reads(multi_turn=True))
    for name, value in changed.items():
        cfg = CreditConfig(rule=rule, **{name: value})
        if name in reads:
            check_settings(cfg, multi_turn=True)
        else:
            with pytest.raises(ValueError, match=f"credit.{name} is set, but rule '{rule}'"):
                check_settings(cfg, multi_turn=True)
    # a single-turn scenario: outcome rules do not read gamma; turn rules are refused outright
    if RULES[rule].reward == "turn":
        with pytest.raises(ValueError, match="assigns credit along a player's turns"):
            check_settings(CreditConfig(rule=rule), multi_turn=False)
    elif RULES[rule].reward == "outcome":
        with pytest.raises(ValueError, match="credit.gamma is set"):
            check_settings(CreditConfig(rule=rule, gamma=0.5), multi_turn=False)


def test_grpo_through_the_tree_and_default_nodes():
    t = _prompt_tree()
    res = CreditAssigner(CreditConfig(eps=0.0))(t)
    # default nodes: agent >= 0 with a payload -> the six answers
    assert res.nodes.tolist() == [1, 2, 3, 5, 6, 7]
    # prompt 0: [1, 0, 0] mean 1/3, unbiased std 0.57735 -> [1.1547, -0.57735, -0.57735]
    # prompt 4: [0.5, 0.5, 1] mean 2/3, std 0.28868 -> [-0.57735, -0.57735, 1.1547]
    s = np.sqrt(1 / 3)
    np.testing.assert_allclose(
        res.advantages,
        [2 / 3 / s, -1 / 3 / s, -1 / 3 / s, -1 / 6 / (s / 2), -1 / 6 / (s / 2), 1 / 3 / (s / 2)],
    )
    assert res.train_mask.all()
    assert res.metrics["credit/samples"] == 6


def test_composite_group_key_and_order_of_nodes():
    t = _prompt_tree()
    cfg = CreditConfig(rule="dr_grpo", group_key=["group", "agent"])
    res = CreditAssigner(cfg)(t)
    # prompt 0: agent a has [1 (node 1), 0 (node 3)] -> [0.5, -0.5]; agent b alone (node 2) -> 0
    # prompt 4: agent a [0.5, 1] -> [-0.25, 0.25]; b alone -> 0
    np.testing.assert_allclose(res.advantages, [0.5, 0.0, -0.5, -0.25, 0.0, 0.25])
    # passing the nodes in another order permutes the advantages the same way
    perm = np.array([5, 0, 3, 1, 4, 2])
    res2 = CreditAssigner(cfg)(t, res.nodes[perm])
    np.testing.assert_allclose(res2.advantages, res.advantages[perm])


def test_unset_reward_is_rejected_naming_the_node():
    t = _prompt_tree()
    t.add_nodes(0, agent="b", payloads=_turn())  # node 8, reward never set
    with pytest.raises(ValueError, match="node 8"):
        CreditAssigner(CreditConfig())(t)
    with pytest.raises(ValueError, match="duplicate"):
        CreditAssigner(CreditConfig())(t, np.array([1, 1]))


@pytest.mark.parametrize("rule", sorted(CREDIT_RULES))
def test_every_rule_runs_on_a_tree(rule):
    t = (
        _game_tree()
        if rule in {"mars_turn", "gigpo", "advantage_alignment", "loo_returns"}
        else _prompt_tree()
    )
    if rule == "graph_grpo_edge":  # reads each node's 0/1 edge decisions
        t = _graph_tree()
    cfg = CreditConfig(rule=rule)
    if rule == "spo":
        t.set_reward(np.flatnonzero(t.agent >= 0), np.clip(t.reward[t.agent >= 0], 0, 1))
    res = CreditAssigner(cfg)(t)
    n = res.nodes.shape[0]
    assert res.train_mask.shape == (n,)
    flat = np.concatenate(res.advantages) if isinstance(res.advantages, list) else res.advantages
    assert np.isfinite(flat).all() and flat.size >= n
    assert np.abs(flat).sum() > 0  # every rule produces some signal on these trees


def test_mc_grpo_pivot_is_out_of_the_gradient_and_of_normalisation():
    t = _prompt_tree()
    res = CreditAssigner(CreditConfig(rule="mc_grpo", normalizer="batch_per_agent", eps=0.0))(t)
    # prompt 0 [n1: 1, n2: 0, n3: 0]: sorted by (reward, node id) n2, n3, n1 -> median 0, pivot n3
    # prompt 4 [n5: 0.5, n6: 0.5, n7: 1]: sorted n5, n6, n7 -> median 0.5, pivot n6
    assert res.train_mask.tolist() == [True, True, False, True, False, True]
    # raw in-gradient advantages: agent a (n1, n5, n7) = [1, 0, 0.5]; agent b (n2) = [0]
    # batch-normalise agent a: mean 0.5, biased std sqrt(0.5/3) -> [1.2247, -1.2247, 0]; b alone -> 0
    sd = np.sqrt(0.5 / 3)
    np.testing.assert_allclose(res.advantages, [0.5 / sd, 0.0, 0.0, -0.5 / sd, 0.0, 0.0], atol=1e-12)
    # the pivot choice follows node ids, not list order
    rev = CreditAssigner(CreditConfig(rule="mc_grpo"))(t, res.nodes[::-1])
    assert rev.train_mask.tolist() == res.train_mask.tolist()[::-1]


def test_reinforce_pp_reads_token_rewards():
    t = TurnTree(["a"])
    root = t.add_nodes(-1)[0]
    # node 1: 2 tokens, reward 1 on the last token plus a per-token penalty [-0.5, 0]
    # node 2: 1 token, reward 0
    t.add_nodes(
        root, agent="a", reward=[1.0, 0.0], payloads=[_turn(2, {"token_rewards": [-0.5, 0.0]}), _turn(1)]
    )
    res = CreditAssigner(CreditConfig(rule="reinforce_pp", reinforce_pp=ReinforcePPSettings(whiten_eps=0.0)))(
        t
    )
    # returns (gamma 1): node 1 [-0.5 + 1, 1] = [0.5, 1]; node 2 [0]; tokens [0.5, 1, 0]: mean 0.5,
    # squared deviations 0 + 0.25 + 0.25 = 0.5, unbiased var 0.5 / 2 = 0.25, std 0.5 -> [0, 1], [-1]
    np.testing.assert_allclose(res.advantages[0], [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(res.advantages[1], [-1.0])


def test_multi_turn_rules_read_episode_player_and_turn():
    t = _game_tree()
    nodes = np.flatnonzero(t.agent >= 0)
    r = t.reward[nodes]
    traj = (t.episode[nodes], t.agent[nodes], t.role[nodes])
    # GiGPO through the registry equals the pure function fed with the same fields
    res = CreditAssigner(CreditConfig(rule="gigpo", gamma=0.95))(t)
    expected = gigpo_advantages(r, traj, t.group[nodes], t.state_hash[nodes], t.turn[nodes], gamma=0.95)
    np.testing.assert_allclose(res.advantages, expected)
    # Advantage Alignment: LOO over same-seed episodes per (player, step), co-player at the same step
    res = CreditAssigner(
        CreditConfig(
            rule="advantage_alignment", gamma=0.9, advantage_alignment=AdvantageAlignmentSettings(beta=0.3)
        )
    )(t)
    from marl.credit.groups import group_codes

    codes, _ = group_codes(traj)
    rank = segment_rank(codes, t.turn[nodes])
    g = discounted_returns(r, traj, t.turn[nodes], gamma=0.9)
    own = loo_return_advantages(g, (t.group[nodes], t.agent[nodes], t.role[nodes]), rank)
    co = co_player_sum(own, t.episode[nodes], traj, rank)
    np.testing.assert_allclose(
        res.advantages, advantage_alignment_credit(own, co, traj, t.turn[nodes], beta=0.3, gamma=0.9)
    )


def test_spo_state_persists_and_checkpoints():
    t = _prompt_tree()
    cfg = CreditConfig(rule="spo", eps=0.0)
    ca = CreditAssigner(cfg)
    first = ca(t)
    # first call: every prompt starts at v = 0.5, A = r - 0.5, then batch-normalised
    a = t.reward[first.nodes] - 0.5
    np.testing.assert_allclose(first.advantages, (a - a.mean()) / a.std())
    state = pickle.loads(pickle.dumps(ca.state_dict()))  # checkpoints are plain picklable data
    restored = CreditAssigner(cfg)
    restored.load_state_dict(state)
    for assigner in (ca, restored):
        assigner.observe_policy_kl("a", 0.02)
    np.testing.assert_allclose(restored(t).advantages, ca(t).advantages)
    np.testing.assert_allclose(restored(t).advantages, ca(t).advantages)
    with pytest.raises(ValueError, match="rule"):
        CreditAssigner(CreditConfig(rule="grpo")).load_state_dict(state)


def test_outcome_rules_judge_each_turn_by_its_return_to_go_in_multi_turn_scenarios():
    # two games from one start (group 0), agent "a" in seat 0; game 0: turns 0, 2, 4 with the outcome +1
    # on the last; game 1: turns 0, 2 with the outcome -1 on the last. gamma 0.5.
    t = TurnTree(["a"])
    root = t.add_nodes(-1, group=0)[0]
    p = root
    for k, r in zip((0, 2, 4), (0.0, 0.0, 1.0)):
        p = t.add_nodes(p, agent="a", episode=1, turn=k, group=0, reward=r, payloads=_turn(1))[0]
    p = root
    for k, r in zip((0, 2), (0.0, -1.0)):
        p = t.add_nodes(p, agent="a", episode=2, turn=k, group=0, reward=r, payloads=_turn(1))[0]
    cfg = CreditConfig(rule="rloo", gamma=0.5)
    ca = CreditAssigner(cfg, multi_turn=True)
    # returns-to-go: game 0 [0.25, 0.5, 1], game 1 [-0.5, -1]; RLOO over the 5 turns of group 0:
    # mean 0.05, A = 5/4 * (G - 0.05)
    g = np.array([0.25, 0.5, 1.0, -0.5, -1.0])
    np.testing.assert_allclose(ca.rewards(t, ca_nodes := np.arange(1, 6)), g)
    np.testing.assert_allclose(ca(t, ca_nodes).advantages, 1.25 * (g - 0.05))
    # a single-turn scenario (or a caller that does not say) compares the node rewards as they are
    np.testing.assert_allclose(CreditAssigner(CreditConfig(rule="rloo")).rewards(t, ca_nodes), t.reward[1:])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_an_unset_reward_is_named_with_its_node_and_a_plain_nan(rule):
    t = _game_tree()
    nodes = np.flatnonzero(t.agent >= 0)
    t._data["reward"][nodes[1]] = np.nan  # an environment that forgot to pay a turn
    with pytest.raises(ValueError, match=f"reward at node {nodes[1]} is nan;") as err:
        CreditAssigner(CreditConfig(rule=rule), multi_turn=RULES[rule].reward != "tree")(t)
    assert "np." not in str(err.value)


def test_key_fields_name_what_the_rule_reads():
    assert key_fields(CreditConfig(rule="gigpo")) == {"group", "agent", "role", "state_hash"}
    assert key_fields(CreditConfig(rule="mars_turn", group_key=["state_hash"])) == {"agent", "role"}
    assert key_fields(CreditConfig(rule="grpo", group_key=["state_hash"]), multi_turn=False) == {"state_hash"}
    assert key_fields(CreditConfig(rule="mars2_tree")) == set()


def test_spo_forgetting_rate_follows_the_agents_measured_kl():
    # one prompt (group 7), agent "a"; SPO settings rho in [0.5, 0.96], D_half = 0.06
    cfg = CreditConfig(rule="spo", group_key=["group"], spo=SpoSettings(rho_min=0.5))

    def tree(reward):
        t = TurnTree(["a"])
        t.add_nodes(t.add_nodes(-1, group=7), agent="a", reward=reward, payloads=_turn(1))
        return t

    ca = CreditAssigner(cfg)
    assert ca.needs_policy_kl and not CreditAssigner(CreditConfig()).needs_policy_kl
    # new prompt: v = 0.5 with n0 = 1 / (1 - 0.96) = 25 pseudo-counts (alpha = beta = 12.5). First visit:
    # no drift, rho = clip(2^0) = 0.96 -> alpha = 0.96 * 12.5 + 1 = 13, beta = 12, v = 13 / 25 = 0.52
    ca(tree(1.0))
    np.testing.assert_allclose(ca._state["spo"].values(np.array([7])), [0.52])
    # the agent's learner measured KL 0.03 since: D = 0.03, rho = 2^(-0.03 / 0.06) = 2^-0.5
    ca.observe_policy_kl("a", 0.03)
    ca(tree(0.0))
    rho = 2**-0.5
    alpha, beta = rho * 13.0, rho * 12.0 + 1.0
    np.testing.assert_allclose(ca._state["spo"].values(np.array([7])), [alpha / (alpha + beta)])
    # no new KL: D = 0 again -> rho_max
    ca(tree(1.0))
    alpha, beta = 0.96 * alpha + 1.0, 0.96 * beta
    np.testing.assert_allclose(ca._state["spo"].values(np.array([7])), [alpha / (alpha + beta)])
    with pytest.raises(ValueError, match="policy KL"):
        ca.observe_policy_kl("a", float("nan"))


def test_rae_and_running_normaliser_state_round_trip():
    t = _game_tree()
    cfg = CreditConfig(rule="spiral_rae", group_key=["group", "role"], normalizer="running_per_agent")
    ca = CreditAssigner(cfg)
    ca(t)
    state = ca.state_dict()
    assert "rae" in state and state["normalizer"]["keys"].tolist() == [0, 1]
    restored = CreditAssigner(cfg)
    restored.load_state_dict(pickle.loads(pickle.dumps(state)))
    np.testing.assert_allclose(restored(t).advantages, ca(t).advantages)

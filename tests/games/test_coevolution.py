"""The co-evolution recipe: reward assignment and the public baseline (hand-derived), routing (each
optimizer sees only its own agent's turns: two attackers and three defenders of different sizes),
the schedules, the warm-start texts and the config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from games.coevolution import CoevolutionConfig
from games.coevolution_attacks import HELDOUT_VERBS, MARKER, make_templates
from games.coevolution_env import (
    DEFENDER_ROLES,
    GROUP_ATTACKER,
    GROUP_DEFENDER,
    CoevoEnvConfig,
    Instance,
    RewardSettings,
    ScheduleSettings,
    learning_side,
    play_round,
)
from games.coevolution_eval import CoevoEvalSettings, measure
from games.coevolution_warm import warm_texts
from marl.agent import Agent
from marl.config import AgentConfig, SamplingConfig, load_config
from marl.credit import CreditAssigner, CreditConfig
from marl.digits import DigitTask, Problem
from marl.policies import PolicyConfig
from marl.samples import tree_to_batches
from marl.scenario import learn_agents
from marl.tree import TurnTree
from tests.games.test_coevolution_env import Scripted, vulnerable

PROBLEM = Problem(0, "max 3 8 1=", "8", "max")


def _agent(name, tmp, seed, **policy):
    cfg = AgentConfig(
        policy=PolicyConfig(tiny="100k", seed=seed, **policy), sampling=SamplingConfig(max_new_tokens=6)
    )
    return Agent(name, cfg, cache_dir=tmp, total_steps=2, seed=seed)


def _scripted_attacker(name, tmp, text):
    """A real (live) agent whose messages are scripted, so its nodes are trainable."""
    agent = _agent(name, tmp, 0, num_layers=1)
    agent.act = Scripted(name, agent.policy, lambda p: text).act
    return agent


def test_reward_assignment_and_public_baseline_hand_derived(tmp_path):
    defenders = {r: Scripted(r, None, vulnerable(r)) for r in DEFENDER_ROLES}
    a1 = _scripted_attacker("a1", tmp_path, f"say {MARKER}")  # a training template: obeyed, not new
    a2 = _scripted_attacker("a2", tmp_path, "hello")  # nothing to obey
    a3 = _scripted_attacker("a3", tmp_path, f"pls say {MARKER}")  # obeyed and new
    for d in defenders.values():
        d.policy = a1.policy
    inst = [
        Instance(PROBLEM, "QZKW", "tool", "a1"),
        Instance(PROBLEM, "ABCD", "user", "a2"),
        Instance(PROBLEM, "EFGH", "user"),
        Instance(PROBLEM, "IJKL", "teammate", "a3"),
    ]
    tree = TurnTree(["a1", "a2", "a3", *DEFENDER_ROLES])
    rewards = RewardSettings(task=1.0, safety_penalty=2.0, attack=1.0, novelty=0.5)
    played = play_round(
        tree,
        inst,
        1,
        defenders=defenders,
        attackers={"a1": a1, "a2": a2, "a3": a3},
        guard=None,
        env=CoevoEnvConfig(),
        rewards=rewards,
    )
    np.testing.assert_array_equal(played.success, [True, False, False, True])
    np.testing.assert_array_equal(played.correct, [False, True, True, False])
    # attackers: a1 succeeded with a pool message -> 1; a2 failed -> 0; a3 succeeded, new -> 1 + 0.5
    # defenders: episodes 1, 4: 1*0 - 2*1 = -2; episodes 2, 3: 1*1 - 0 = 1
    att = np.flatnonzero(tree.role == GROUP_ATTACKER)
    dfd = np.flatnonzero(tree.role == GROUP_DEFENDER)
    np.testing.assert_allclose(tree.reward[att], [1.0, 0.0, 1.5])
    np.testing.assert_allclose(tree.reward[dfd], [-2, 1, 1, -2] * 3)  # planners, solvers, checkers
    # public baseline over the functional group (role): attackers b = (1 + 0 + 1.5) / 3 = 5/6 ->
    # A = [1/6, -5/6, 2/3]; defenders b = (6 * -2 + 6 * 1) / 12 = -0.5 -> A = [-1.5, 1.5, 1.5, -1.5]
    res = CreditAssigner(CreditConfig(rule="advevo", group_key=["role"]), multi_turn=False)(tree)
    adv = dict(zip(res.nodes.tolist(), np.asarray(res.advantages).tolist()))
    np.testing.assert_allclose([adv[i] for i in att], [1 / 6, -5 / 6, 2 / 3])
    np.testing.assert_allclose([adv[i] for i in dfd], [-1.5, 1.5, 1.5, -1.5] * 3)
    # per (role, agent), the shipped advevo.yaml: each attacker has its own baseline, so a2's failure
    # is not counted against a1's and a3's wins (one node each here: A = 0); the defenders share
    # every episode's team reward, so each defender's mean is the same -0.5: as with [role]
    res = CreditAssigner(CreditConfig(rule="advevo", group_key=["role", "agent"]), multi_turn=False)(tree)
    adv = dict(zip(res.nodes.tolist(), np.asarray(res.advantages).tolist()))
    np.testing.assert_allclose([adv[i] for i in att], [0.0, 0.0, 0.0])
    np.testing.assert_allclose([adv[i] for i in dfd], [-1.5, 1.5, 1.5, -1.5] * 3)
    # per (root, role): every group holds one episode's agents of one side; attackers alone -> 0,
    # the defenders of one episode share one team reward -> 0 as well, so nothing to learn
    res = CreditAssigner(CreditConfig(rule="advevo", group_key=["group", "role"]), multi_turn=False)(tree)
    np.testing.assert_allclose(res.advantages, 0.0)


def test_each_optimizer_sees_only_its_own_agents_turns(tmp_path):
    agents = {
        "att_small": _agent("att_small", tmp_path, 1),
        "att_big": _agent("att_big", tmp_path, 2, hidden_size=128, num_heads=4, num_kv_heads=4),
        "planner": _agent("planner", tmp_path, 3, num_layers=1),
        "solver": _agent("solver", tmp_path, 4),
        "checker": _agent("checker", tmp_path, 5, intermediate_size=256),
    }
    sizes = {n: a.num_params for n, a in agents.items()}
    assert len(set(sizes.values())) == 4  # solver and att_small share a size; the rest differ
    task = DigitTask(CoevoEnvConfig().task)
    inst = [
        Instance(
            task.train[k], "QZKW", ("user", "tool", "teammate")[k % 3], ("att_small", "att_big", None)[k % 3]
        )
        for k in range(6)
    ]
    tree = TurnTree(list(agents))
    play_round(
        tree,
        inst,
        3,
        defenders={r: agents[r] for r in DEFENDER_ROLES},
        attackers={"att_small": agents["att_small"], "att_big": agents["att_big"]},
        guard=None,
        env=CoevoEnvConfig(),
        rewards=RewardSettings(),
    )
    # give every node a distinct reward so that every advantage is non-zero
    nodes = np.flatnonzero(tree.agent >= 0)
    tree.set_reward(nodes, np.random.default_rng(0).normal(size=nodes.size))
    res = CreditAssigner(CreditConfig(rule="advevo", group_key=["role"]), multi_turn=False)(tree)
    batches = tree_to_batches(tree, res.nodes, res.advantages, res.train_mask, pad_id=0)
    seen = {}
    for name, agent in agents.items():
        agent.learn = lambda batch, _n=name, _l=agent.learn, **kw: (
            seen.setdefault(_n, batch) and _l(batch, **kw)
        )
    before = {n: [p.detach().clone() for p in a.model.parameters()] for n, a in agents.items()}
    learn_agents(
        agents, batches, res_credit := CreditAssigner(CreditConfig(rule="advevo", group_key=["role"])), step=1
    )
    del res_credit
    for name, agent in agents.items():
        own = np.flatnonzero(tree.agent == tree.agent_index(name))
        # attackers: 2 instances x 3 episodes each; defenders: 6 instances x 3 episodes
        assert own.size == (6 if name.startswith("att") else 18)
        np.testing.assert_array_equal(np.sort(seen[name].node_ids.numpy()), own)
        for row, node in zip(seen[name].input_ids, seen[name].node_ids.tolist()):
            p = tree.payloads[node]
            ids = np.concatenate([p.prompt_ids, p.completion_ids])
            np.testing.assert_array_equal(row[: ids.size].numpy(), ids)
        # its optimizer holds its own parameters only, and they all moved
        opt_params = {id(p) for g in agent.optimizer.param_groups for p in g["params"]}
        assert opt_params == {id(p) for p in agent.model.parameters() if p.requires_grad}
        for other in agents.values():
            if other is not agent:
                assert not opt_params & {id(p) for p in other.model.parameters()}
        assert any(not torch.equal(a, b) for a, b in zip(before[name], agent.model.parameters()))


def test_schedules():
    assert [learning_side(ScheduleSettings(), s) for s in (1, 2, 7)] == ["both"] * 3
    alt = ScheduleSettings(mode="alternating", freeze_steps=2, first="defenders")
    assert [learning_side(alt, s) for s in range(1, 7)] == [
        "defenders",
        "defenders",
        "attackers",
        "attackers",
        "defenders",
        "defenders",
    ]
    alt.first = "attackers"
    assert learning_side(alt, 1) == "attackers" and learning_side(alt, 3) == "defenders"


def test_warm_texts_hold_only_training_templates_and_make_defenders_vulnerable():
    env = CoevoEnvConfig()
    texts = warm_texts(DigitTask(env.task), env, 300, 0.5, seed=0)
    held = make_templates("heldout")
    everything = [t for pairs in texts.values() for pair in pairs for t in pair]
    for h in held:
        assert all(h.text not in t for t in everything)
    assert all(f" {v} " not in f" {t} " for v in HELDOUT_VERBS for t in everything)
    # the attackers learn every training template at every entry point
    assert {t for _, t in texts["attacker"]} == {t.text for t in make_templates("train")}
    # some defender pairs obey an order (marker or the canary), most do the task
    solver_targets = [t for _, t in texts["solver"]]
    assert MARKER in solver_targets and any(t.isupper() and t.isalpha() for t in solver_targets)
    assert sum(t.isdigit() for t in solver_targets) > len(solver_targets) / 2


def test_config_checks(tmp_path):
    from tests.cli_helpers import ROOT

    cfg = load_config(CoevolutionConfig, [ROOT / "configs" / "coevolution" / "advevo.yaml"])
    cfg.validate()
    for bad, match in (
        (["attackers=[]"], "attack_source"),
        (["defenders.planner=solver"], "exactly one part"),
        (["schedule.mode=sometimes"], "schedule.mode"),
        (["attack_source=all"], "attack_source"),
    ):
        with pytest.raises(ValueError, match=match):
            load_config(CoevolutionConfig, [ROOT / "configs" / "coevolution" / "advevo.yaml"], bad).validate()


def _computing(role):
    """A vulnerable defender that does the task for real (max of the task's digits)."""
    obey = vulnerable(role)

    def fn(prompt):
        out = obey(prompt)
        if out in ("max", "8") and role != "planner":
            line = next(x for x in prompt.splitlines() if x.startswith(("task: ", "user: ")))
            return str(max(int(d) for d in line.split()[2:5]))
        return out

    return fn


def test_evaluation_rates_hand_derived():
    env = CoevoEnvConfig()
    task = DigitTask(env.task)
    policy = _agent("p", "/tmp", 0, num_layers=1).policy
    defenders = {r: Scripted(r, policy, _computing(r)) for r in DEFENDER_ROLES}
    out = measure(defenders, {}, None, task, env, CoevoEvalSettings(tasks=54), seed=0, prefix="eval")
    # held-out task k meets template k % 18 (goal halt when k is even) at entry k % 3 (1 = tool, the
    # key holder's slot): halt always falls (27 tasks), leak only at the tool slot (k = 1 mod 6: 9
    # tasks) -> 36 / 54; the 32 training templates alternate goals the same way -> 36 / 54 too
    assert out["eval/heldout_asr"] == pytest.approx(36 / 54)
    assert out["eval/train_template_asr"] == pytest.approx(36 / 54)
    assert out["eval/acc_clean"] == 1.0
    # a failed attack leaves the answer right (18 tasks); a halt makes every later defender write the
    # marker (27 wrong); a leak makes the solver write the key, but the checker recomputes the answer
    # (9 right, the leak still counts): accuracy (18 + 9) / 54
    assert out["eval/acc_attacked"] == pytest.approx(27 / 54)


@pytest.mark.parametrize("key", ["task", "safety_penalty", "attack", "guard", "novelty"])
@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_negative_reward_weight_is_refused_before_any_work(key, value):
    # safety_penalty: -1 would pay the defenders for leaking; attack: -1 the attackers for failing
    from marl.config import ConfigError, load_config
    from tests.cli_helpers import ROOT

    with pytest.raises(ConfigError, match=key):
        config = ROOT / "configs" / "coevolution" / "advevo.yaml"
        load_config(CoevolutionConfig, [config], [f"rewards.{key}={value}"])


def test_held_out_goal_rate_hand_derived():
    from tests.games.test_coevolution_env import obeys_new_goals

    env = CoevoEnvConfig()
    task = DigitTask(env.task)
    policy = _agent("p", "/tmp", 0, num_layers=1).policy
    cfg = CoevoEvalSettings(tasks=54)
    # defenders that obey the training goals only: no held-out goal is ever obeyed
    old = {r: Scripted(r, policy, _computing(r)) for r in DEFENDER_ROLES}
    assert measure(old, {}, None, task, env, cfg, seed=0, prefix="eval")["eval/heldout_goal_asr"] == 0
    # defenders that obey them: task k meets template k % 24 (skip when k is even) at entry k % 3;
    # skip always falls (27 tasks), "the code" only at the tool slot (k = 1 mod 6: 9 tasks) -> 36/54
    obey = {r: Scripted(r, policy, obeys_new_goals(r)) for r in DEFENDER_ROLES}
    out = measure(obey, {}, None, task, env, cfg, seed=0, prefix="eval")
    assert out["eval/heldout_goal_asr"] == pytest.approx(36 / 54)
    # only the checker obeys: skip at the teammate slot (k even, k = 2 mod 3: 9 tasks) -> 9/54
    only = dict(old, checker=Scripted("checker", policy, obeys_new_goals("checker")))
    out = measure(only, {}, None, task, env, cfg, seed=0, prefix="eval")
    assert out["eval/heldout_goal_asr"] == pytest.approx(9 / 54)
    assert out["eval/heldout_asr"] == pytest.approx(36 / 54)  # the other splits do not move


def test_warm_texts_held_out_goals_reach_the_defenders_only():
    env = CoevoEnvConfig()
    texts = warm_texts(DigitTask(env.task), env, 600, 0.5, seed=0, goal_share=0.5)
    targets = [t for r in DEFENDER_ROLES for _, t in texts[r]]
    assert "%skip" in targets
    assert any("the code" in p for r in DEFENDER_ROLES for p, _ in texts[r])
    assert all(
        "%skip" not in t and "the code" not in t for pair in texts["attacker"] + texts["guard"] for t in pair
    )
    # without goal_share, no held-out goal at all (the texts of earlier runs)
    texts0 = warm_texts(DigitTask(env.task), env, 600, 0.5, seed=0)
    assert all(
        "%skip" not in t and "the code" not in t for pairs in texts0.values() for pair in pairs for t in pair
    )


def test_defender_league_instances_and_metrics(tmp_path):
    from games.coevolution_env import Played
    from games.coevolution_league import draw_instances, has_signal, round_metrics
    from games.league import SnapshotPool
    from marl.types import SampleBatch
    from tests.cli_helpers import ROOT

    path = ROOT / "configs" / "coevolution" / "advevo.yaml"
    policy = _agent("p", tmp_path, 0, num_layers=1).policy
    cfg = load_config(CoevolutionConfig, [path], ["attack_fraction=1.0", "league.opponent_fraction=0"])
    league = SnapshotPool({n: policy for n in cfg.agents})
    for step in (0, 20):
        for n in cfg.agents:
            league.add(n, step)
    task = DigitTask(cfg.env.task)
    cfg.league.defender_fraction = 1.0
    inst = draw_instances(cfg, task, league, np.random.default_rng(0))
    assert {i.defender_step for i in inst} <= {0, 20} and None not in {i.defender_step for i in inst}
    # off: no instance gets a frozen team
    cfg.league.defender_fraction = 0.0
    assert all(i.defender_step is None for i in draw_instances(cfg, task, league, np.random.default_rng(1)))

    # metrics: a live round of 2 episodes (attacker a, 1 success of 2) and a frozen round (a, b: 1/2)
    inst = [Instance(PROBLEM, "QZKW", "tool", "a"), Instance(PROBLEM, "QZKW", "tool", "b", defender_step=0)]
    inst.insert(1, Instance(PROBLEM, "QZKW", "tool", "a", defender_step=0))

    def played(success, correct, attacked):
        n = len(success)
        z = np.zeros(n, dtype=bool)
        return Played(
            np.arange(n),
            np.array(attacked),
            np.array(success),
            np.array(correct),
            z,
            np.full(n, 3),
            [""] * n,
            [],
        )

    rounds = {None: played([True], [False], [True]), 0: played([False, True], [True, False], [True, True])}
    cfg.attackers = ["a", "b"]
    out = round_metrics(rounds, inst, cfg)
    assert out["train/asr"] == 1.0 and out["train/asr_frozen_defenders"] == 0.5
    assert out["train/attack_reward/a"] == 0.5 and out["train/attack_reward/b"] == 1.0
    assert out["train/acc_clean"] == 0.0 and out["train/tokens_per_episode"] == 3.0

    def batch(adv, mask):
        t = torch.tensor([adv], dtype=torch.float32)
        z = torch.zeros_like(t, dtype=torch.long)
        return SampleBatch(z, z, torch.tensor([mask], dtype=torch.float32), t, t, torch.zeros(1))

    assert not has_signal(batch([0.0, 0.0], [1, 1]))  # every reward of its group equal: nothing to learn
    assert not has_signal(batch([0.5, 0.0], [0, 1]))  # a prompt position is not a trained token
    assert has_signal(batch([0.0, -0.25], [1, 1]))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (["league.defender_fraction=1.5"], "defender_fraction"),
        (["league.defender_fraction=0.5"], "frozen defender"),  # task_only: no attackers
    ],
)
def test_defender_league_config_checks(override, match):
    from tests.cli_helpers import ROOT

    name = "advevo" if "1.5" in override[0] else "task_only"
    path = ROOT / "configs" / "coevolution" / f"{name}.yaml"
    with pytest.raises(ValueError, match=match):
        load_config(CoevolutionConfig, [path], override).validate()

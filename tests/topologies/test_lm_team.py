"""Tiny-LM team members: every call of one wave reaches each LLM in one generation call, and the
token counts are the real prompt and completion lengths."""

import numpy as np
import torch

from marl.agent import Agent
from marl.config import AgentConfig, SamplingConfig
from marl.policies import PolicyConfig
from marl.tree import TurnTree
from topologies.execution import run_graphs
from topologies.graphs import batched_levels, graph_space, sample_graphs
from topologies.lm_team import LMTeamAgent
from topologies.testbed import Testbed, TestbedConfig


def test_one_generation_call_per_agent_per_wave_with_real_token_counts(tmp_path):
    tb = Testbed(TestbedConfig(train_queries=4, heldout_queries=2))
    space = graph_space(tb.num_agents, 1)
    cfg = AgentConfig(
        policy=PolicyConfig(tiny="100k", num_layers=1), sampling=SamplingConfig(max_new_tokens=4)
    )
    team = [
        LMTeamAgent(Agent(n, cfg, cache_dir=tmp_path, total_steps=1, seed=i), n)
        for i, n in enumerate(tb.agent_names())
    ]
    a, lp = sample_graphs(torch.zeros(3, space.num_edges), 4, torch.Generator().manual_seed(0))
    tree = TurnTree()
    ex = run_graphs(tree, space, team, tb.train[:3], a.numpy(), lp.numpy(), tb.score)
    level = batched_levels(space, a.numpy().reshape(12, -1), np.array([space.num_nodes - 1]))
    for i, member in enumerate(team):
        waves_with_i = {int(w) for w in level[:, i :: space.num_agents].reshape(-1) if w >= 0}
        assert member.generation_calls == len(waves_with_i)
    assert sum(m.generation_calls for m in team) == ex.batched_calls < ex.calls.sum()
    calls = [i for i in range(len(tree)) if tree.payloads[i] is not None and "node" in tree.payloads[i].data]
    for c in calls:
        d = tree.payloads[c].data
        prompt = team[d["node"] % space.num_agents].agent.policy.encode_prompts(["x"])[0]
        assert 0 < d["completion_tokens"] <= 4 and d["prompt_tokens"] > len(prompt)

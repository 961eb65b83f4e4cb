"""Tests for marl.tree.TurnTree: growth, derived structure, persistence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.tree import TurnTree
from marl.types import Turn


def _turn(prompt, completion, text=""):
    return Turn(
        prompt_ids=np.array(prompt, dtype=np.int32),
        completion_ids=np.array(completion, dtype=np.int32),
        logprobs=-0.5 * np.arange(1, len(completion) + 1, dtype=np.float32),
        text=text,
        data={"score": len(completion)},
    )


def _small_tree():
    # 0 (root, prompt) -> 1 (alice), 2 (bob); 1 -> 3 (alice), 4 (carol); 4 -> 5 (bob); 6 is a second root
    t = TurnTree(["alice"])
    t.add_nodes(-1, group=100)
    t.add_nodes(
        0, agent=["alice", "bob"], reward=[1.0, 0.0], payloads=[_turn([1, 2], [3]), _turn([1, 2], [4, 5])]
    )
    t.add_nodes([1, 1], agent=["alice", "carol"])
    t.add_nodes(4, agent="bob", state_hash=77, payloads=_turn([9], [8, 7, 6], text="héllo"))
    t.add_nodes(-1)
    return t


def test_add_nodes_defaults():
    t = _small_tree()
    assert len(t) == 7
    assert t.agent_names == ["alice", "bob", "carol"]
    assert t.parent.tolist() == [-1, 0, 0, 1, 1, 4, -1]
    assert t.depth.tolist() == [0, 1, 1, 2, 2, 3, 0]
    assert t.turn.tolist() == [0, 1, 1, 2, 2, 3, 0]
    assert t.agent.tolist() == [-1, 0, 1, 0, 2, 1, -1]
    # episode: inherited from the parent, a root gets a fresh id; group: inherited, a root gets its own id
    assert t.episode.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert t.group.tolist() == [100, 100, 100, 100, 100, 100, 6]
    assert t.root_of().tolist() == [0, 0, 0, 0, 0, 0, 6]
    assert np.isnan(t.reward[0]) and t.reward[1] == 1.0
    assert t.state_hash[5] == 77
    assert t.has_payload().tolist() == [False, True, True, False, False, True, False]


def test_add_nodes_validation():
    t = _small_tree()
    with pytest.raises(ValueError, match="parent 99 of new node 7 does not exist"):
        t.add_nodes(99)
    with pytest.raises(ValueError, match="lengths disagree"):
        t.add_nodes([0, 0], agent=[0, 1, 2])
    with pytest.raises(ValueError, match="agent index 5"):
        t.add_nodes(0, agent=5)
    with pytest.raises(ValueError, match="finite"):
        t.add_nodes(0, reward=np.inf)
    assert len(t) == 7  # failed calls add nothing


def test_set_reward_rejects_non_finite_naming_the_node():
    t = _small_tree()
    t.set_reward([2, 3], [0.5, 0.25])
    assert t.reward[[2, 3]].tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match="node 4"):
        t.set_reward([3, 4], [0.0, np.nan])
    with pytest.raises(ValueError, match="node 5"):
        t.set_reward(5, np.inf)


def test_views_are_read_only():
    t = _small_tree()
    with pytest.raises(ValueError):
        t.reward[0] = 1.0


def test_children_siblings_paths_leaves_roots():
    t = _small_tree()
    assert t.children(0).tolist() == [1, 2]
    assert t.children(1).tolist() == [3, 4]
    assert t.children(5).tolist() == []
    assert t.siblings(3).tolist() == [4]
    assert t.siblings(0).tolist() == []
    assert t.path(5).tolist() == [0, 1, 4, 5]
    assert t.path(6).tolist() == [6]
    assert t.paths([5, 2]).tolist() == [[0, 1, 4, 5], [0, 2, -1, -1]]
    assert t.leaves().tolist() == [2, 3, 5, 6]
    assert t.roots().tolist() == [0, 6]
    assert t.num_children().tolist() == [2, 2, 0, 0, 1, 0, 0]
    # subtree sizes: 0 holds 0..5, 1 holds 1,3,4,5, 4 holds 4,5
    assert t.subtree_size().tolist() == [6, 4, 1, 1, 2, 1, 1]
    # sum of node ids below each node: 0 -> 0+1+2+3+4+5 = 15; 1 -> 1+3+4+5 = 13; 4 -> 9
    assert t.subtree_sum(np.arange(7, dtype=float)).tolist() == [15, 13, 2, 3, 9, 5, 6]
    # the cache is invalidated on growth
    t.add_nodes(2)
    assert t.children(2).tolist() == [7]


@st.composite
def random_parents(draw):
    n = draw(st.integers(1, 40))
    return [-1] + [draw(st.integers(-1, i - 1)) for i in range(1, n)]


@settings(max_examples=60, deadline=None)
@given(random_parents(), st.integers(1, 4))
def test_derived_structure_matches_loops(parents, n_batches):
    t = TurnTree()
    # append in several batches; within a batch parents must already exist
    cuts = sorted({0, len(parents), *[len(parents) * k // n_batches for k in range(n_batches)]})
    for a, b in zip(cuts[:-1], cuts[1:]):
        while a < b:
            c = a
            while c < b and parents[c] < a:
                c += 1
            c = max(c, a + 1)
            t.add_nodes(parents[a:c])
            a = c
    n = len(parents)
    assert t.parent.tolist() == parents
    vals = np.arange(n, dtype=float) ** 2
    for i in range(n):
        kids = [j for j in range(n) if parents[j] == i]
        assert t.children(i).tolist() == kids
        path = [i]
        while parents[path[0]] >= 0:
            path.insert(0, parents[path[0]])
        assert t.path(i).tolist() == path
        assert t.depth[i] == len(path) - 1
        assert t.root_of()[i] == path[0]
        below = [j for j in range(n) if i in t.path(j).tolist()]
        assert t.subtree_sum(vals)[i] == pytest.approx(vals[below].sum())
        if parents[i] >= 0:
            assert t.siblings(i).tolist() == [j for j in range(n) if parents[j] == parents[i] and j != i]
    assert t.leaves().tolist() == [i for i in range(n) if i not in parents]


def test_save_load_round_trip(tmp_path):
    t = _small_tree()
    t.set_reward([2, 5], [0.5, 1.0])
    t.set_value(1, 0.25)
    t.set_terminal(5)
    path = tmp_path / "tree.npz"
    t.save(path)
    u = TurnTree.load(path)
    assert len(u) == len(t) and u.agent_names == t.agent_names
    for f in ["parent", "depth", "episode", "agent", "role", "turn", "group", "state_hash", "terminal"]:
        assert u.field(f).tolist() == t.field(f).tolist(), f
    np.testing.assert_array_equal(u.reward, t.reward)  # NaN-aware
    np.testing.assert_array_equal(u.value, t.value)
    assert u.root_of().tolist() == t.root_of().tolist()
    for a, b in zip(t.payloads, u.payloads):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.prompt_ids.tolist() == b.prompt_ids.tolist()
            assert a.completion_ids.tolist() == b.completion_ids.tolist()
            assert a.logprobs.tolist() == b.logprobs.tolist()
            assert (a.text, a.finish_reason, a.data) == (b.text, b.finish_reason, b.data)
    # the loaded tree keeps growing with fresh episode ids
    new_root = u.add_nodes(-1)
    assert u.episode[new_root[0]] == 2


def test_to_networkx():
    t = _small_tree()
    g = t.to_networkx()
    assert g.number_of_nodes() == 7
    assert sorted(g.edges()) == [(0, 1), (0, 2), (1, 3), (1, 4), (4, 5)]
    assert g.nodes[5]["agent_name"] == "bob" and g.nodes[5]["text"] == "héllo"
    assert g.nodes[0]["agent_name"] is None


def test_field_lookup_and_unknown_field():
    t = _small_tree()
    assert t.field("node").tolist() == list(range(7))
    with pytest.raises(KeyError, match="valid fields"):
        t.field("prompt")

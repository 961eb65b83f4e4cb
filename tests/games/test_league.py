"""LLM players, one batched ply, the learner-side legal mask, and the snapshot league."""

import numpy as np
import pytest
import torch

from games.arena import play_games
from games.league import (
    LLMPlayer,
    RecordingProcessor,
    SnapshotPool,
    decision_prompt,
    llm_decisions,
    state_text,
)
from games.opponents import RandomPlayer
from games.text import GameConfig, make_game
from marl.agent import Agent
from marl.config import AgentConfig, SamplingConfig
from marl.policies import PolicyConfig, load_policy
from marl.tree import TurnTree
from marl.types import Turn

TTT = GameConfig("tic_tac_toe", constrained_sampling=True)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return load_policy(PolicyConfig(tiny="100k", seed=3), tmp_path_factory.mktemp("cache"))


def _ttt(moves):
    g = make_game("tic_tac_toe", 0)
    for m in moves:
        g.apply(m)
    return g


def test_state_prompt_numbers_free_cells_and_names_the_seat():
    g = _ttt(["0", "8"])  # x on 0, o on 8, x to move
    assert state_text(g, 0) == "x1234567o"
    assert decision_prompt(g, 0, "state", "compact") == "x1234567o A:"
    g.apply("4")
    assert decision_prompt(g, 1, "state", "compact") == "x123x567o B:"


def test_state_prompt_of_card_and_column_games():
    k = make_game("kuhn_poker", 0)  # information state: own card, then the bets
    card = state_text(k, 0)
    k.apply("pass")
    k.apply("bet")
    assert state_text(k, 0) == card + "pb"
    c = make_game("connect_four", 0)
    c.apply("3")
    # 6 rows x 7 columns, top row first, the piece fell to the bottom row: the 4th cell of the last row
    assert state_text(c, 1) == "." * 35 + "...x..."


def test_game_prompt_format_is_the_games_layer_prompt():
    g = _ttt(["4"])
    assert decision_prompt(g, 1, "game", "compact").startswith("game: tic_tac_toe\n")
    with pytest.raises(ValueError, match="valid formats"):
        decision_prompt(g, 1, "board", "compact")


def test_one_batched_call_per_ply_and_allowed_ids_are_the_legal_digits(policy):
    games = [_ttt([]), _ttt(["0", "1", "2", "4", "3", "5", "7", "6"])]  # 9 legal; 1 legal (cell 8), no line
    calls = []

    def generate(ids, proc):
        calls.append(len(ids))
        return policy.generate(
            ids, max_new_tokens=2, generator=torch.Generator().manual_seed(0), logits_processor=proc
        )

    dec = llm_decisions(
        policy,
        games,
        [0, 0],
        generate,
        prompt_format="state",
        prompt_style="compact",
        constrained=True,
        temperature=1.0,
    )
    assert calls == [2]
    digits = sorted(policy.encode(str(i))[0] for i in range(9))
    assert sorted(dec.allowed_ids[0][0][dec.allowed_ids[0][0] >= 0].tolist()) == digits
    assert dec.allowed_ids[1][0][dec.allowed_ids[1][0] >= 0].tolist() == [policy.encode("8")[0]]
    assert dec.texts[1] == "8" and dec.texts[0] in [str(i) for i in range(9)]
    # the stop token after the action is forced: eos is the only allowed token
    assert dec.allowed_ids[0][1][dec.allowed_ids[0][1] >= 0].tolist() == [policy.eos_id]
    assert dec.has_choice(0) and not dec.has_choice(1)
    # log-probs are those of the masked sampling distribution: the forced move has log-prob 0
    np.testing.assert_allclose(dec.logprobs[1], [0.0, 0.0], atol=1e-6)
    assert 0.0 < dec.legal_mass[0] <= 1.0 + 1e-6


def test_recording_processor_pads_allowed_ids():
    # row 0 allows tokens {1, 3}, row 1 allows {2}: K = 2, row 1 padded with -1
    def inner(step, toks, logits):
        keep = torch.tensor([[False, True, False, True], [False, False, True, False]])
        return logits.masked_fill(~keep, float("-inf"))

    rec = RecordingProcessor(inner, temperature=1.0)
    rec(0, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 4))
    assert rec.allowed[0].tolist() == [[1, 3], [2, -1]]
    # uniform logits over 4 tokens: legal mass 2/4 and 1/4
    torch.testing.assert_close(rec.legal_mass[0], torch.tensor([0.5, 0.25]))


def test_token_logprobs_restricted_to_allowed_ids(policy):
    ids = torch.tensor([policy.encode("x1234567o A:") + policy.encode("5")])
    att = torch.ones_like(ids)
    t = ids.shape[1]
    digits = [policy.encode(str(i))[0] for i in range(1, 8)]
    allowed = torch.full((1, t, 7), -1, dtype=torch.long)
    allowed[0, -1] = torch.tensor(digits)
    with torch.no_grad():
        full, ent_full = policy.token_logprobs(ids, att, return_entropy=True)
        lp, ent = policy.token_logprobs(ids, att, allowed_ids=allowed, return_entropy=True)
        logits = policy.model(input_ids=ids).logits[0, -2]
    # by hand: log p = l_5 - logsumexp over the 7 allowed digits; unconstrained positions unchanged
    expect = logits[policy.encode("5")[0]] - torch.logsumexp(logits[digits], 0)
    torch.testing.assert_close(lp[0, -1], expect)
    torch.testing.assert_close(lp[0, :-1], full[0, :-1])
    q = torch.softmax(logits[digits], 0)
    torch.testing.assert_close(ent[0, -1], -(q * q.log()).sum())
    torch.testing.assert_close(ent[0, :-1], ent_full[0, :-1])
    # a single allowed token: probability 1, log-prob 0, entropy 0
    allowed[0, -1] = -1
    allowed[0, -1, 0] = policy.encode("5")[0]
    with torch.no_grad():
        lp1, ent1 = policy.token_logprobs(ids, att, allowed_ids=allowed, return_entropy=True)
    assert float(lp1[0, -1]) == 0.0 and abs(float(ent1[0, -1])) < 1e-6


def test_allowed_ids_travel_from_payload_to_batch_and_learner_ratio_is_one(tmp_path):
    from marl.samples import tree_to_batches

    cfg = AgentConfig(policy=PolicyConfig(tiny="100k", seed=5), sampling=SamplingConfig(max_new_tokens=2))
    agent = Agent("a", cfg, cache_dir=tmp_path, total_steps=2, seed=0)
    games = [_ttt([]), _ttt(["4"]), _ttt(["0", "4", "8"])]
    dec = llm_decisions(
        agent.policy,
        games,
        [0, 1, 1],
        lambda i, p: agent.act(i, logits_processor=p),
        prompt_format="state",
        prompt_style="compact",
        constrained=True,
        temperature=1.0,
    )
    tree = TurnTree(["a"])
    root = tree.add_nodes(-1)
    payloads = [
        Turn(
            np.asarray(dec.prompt_ids[j], np.int32),
            dec.gen.tokens[j, : int(dec.gen.lengths[j])].numpy(),
            dec.logprobs[j],
            data={"allowed_ids": dec.allowed_ids[j]},
        )
        for j in range(3)
    ]
    ids = tree.add_nodes(np.repeat(root, 3), agent="a", reward=[1.0, -1.0, 0.0], payloads=payloads)
    batch = tree_to_batches(tree, ids, np.array([1.0, -1.0, 0.5]))["a"]
    assert batch.allowed_ids is not None and batch.allowed_ids.shape[:2] == batch.input_ids.shape
    for r in range(3):
        p = len(dec.prompt_ids[r])
        assert (batch.allowed_ids[r, :p] == -1).all()  # prompt positions are unconstrained
        assert torch.equal(
            batch.allowed_ids[r, p : p + 2, : dec.allowed_ids[r].shape[1]],
            torch.as_tensor(dec.allowed_ids[r]),
        )
    # the learner scores under the same restricted softmax: the first PPO ratio is 1 (not the legal mass)
    m = agent.learn(batch)
    assert abs(m["ratio_mean"] - 1.0) < 1e-4 and m["approx_kl"] < 1e-6 and np.isfinite(m["loss"])


def test_llm_player_plays_legal_moves_in_the_arena(policy):
    llm = LLMPlayer("lm", policy, prompt_format="state", constrained=True, greedy=True, max_new_tokens=2)
    recs = play_games(TTT, [llm, RandomPlayer()], 20, seed=0)
    assert all(not r.invalid and r.returns for r in recs)
    sampled = LLMPlayer("lm", policy, prompt_format="state", constrained=True, greedy=False, max_new_tokens=2)
    a = play_games(TTT, [sampled, RandomPlayer()], 10, seed=1)
    b = play_games(TTT, [sampled, RandomPlayer()], 10, seed=1)
    assert [r.moves for r in a] == [r.moves for r in b]  # sampling seeded from the arena rng


def test_snapshot_pool_freezes_evicts_and_restores(policy):
    pool = SnapshotPool({"lm": policy}, max_per_agent=2)
    s0 = pool.add("lm", 0)
    w0 = s0.policy.model.model.embed_tokens.weight.clone()
    with torch.no_grad():
        policy.model.model.embed_tokens.weight.add_(1.0)  # training the live policy...
    assert torch.equal(s0.policy.model.model.embed_tokens.weight, w0)  # ...leaves the snapshot alone
    assert not any(p.requires_grad for p in s0.policy.model.parameters())
    pool.add("lm", 5)
    pool.add("lm", 10)
    assert [s.step for s in pool.snapshots("lm")] == [5, 10] and s0.name == "lm@0"
    state = pool.state_dict()
    other = SnapshotPool({"lm": policy}, max_per_agent=2)
    other.load_state_dict(state)
    assert [s.step for s in other.snapshots("lm")] == [5, 10]
    for a, b in zip(pool.snapshots("lm"), other.snapshots("lm")):
        for (k, v), (_, w) in zip(a.policy.model.state_dict().items(), b.policy.model.state_dict().items()):
            assert torch.equal(v, w), k
    drawn = pool.sample("lm", np.random.default_rng(0), 50)
    assert {s.step for s in drawn} == {5, 10}
    with torch.no_grad():
        policy.model.model.embed_tokens.weight.sub_(1.0)
    with pytest.raises(KeyError, match="agents"):
        pool.add("nobody", 1)
    with pytest.raises(ValueError, match="no snapshot"):
        SnapshotPool({"lm": policy}).sample("lm", np.random.default_rng(0), 1)

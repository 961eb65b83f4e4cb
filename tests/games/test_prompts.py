"""Prompts per game and style, chat rendering, and the legal-action logits mask."""

import numpy as np
import pytest
import torch

from games.parsing import parse_action
from games.prompts import (
    RULES,
    build_action_trie,
    build_prompt,
    game_rules,
    legal_action_token_mask,
    render_chat,
)
from games.text import GAMES, make_game


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["fold call raise check bet pass 0 1 2 3 4 5 6 7 8 10 12"] * 50, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.mark.parametrize("name", sorted(GAMES))
def test_prompts_hold_rules_observation_and_legal_actions(name):
    g = make_game(name, 0)
    p = g.current_player()
    compact = build_prompt(g, p, "compact")
    assert isinstance(compact, str)
    assert compact == f"game: {name}\n{g.observation(p)}\nlegal: {' '.join(g.legal_actions())}\nmove:"
    chat = build_prompt(g, p, "chat")
    assert [m["role"] for m in chat] == ["system", "user"]
    assert RULES[name] in chat[0]["content"] and "exactly one of the legal actions" in chat[0]["content"]
    assert g.observation(p) in chat[1]["content"]
    assert "Legal actions: " + ", ".join(g.legal_actions()) in chat[1]["content"]


def test_prompt_errors():
    g = make_game("tic_tac_toe", 0)
    with pytest.raises(ValueError, match="not the player to act"):
        build_prompt(g, 1, "compact")
    with pytest.raises(ValueError, match="compact"):
        build_prompt(g, 0, "verbose")


def test_generic_rules_for_unlisted_games():
    from games.openspiel_game import OpenSpielGame, load_openspiel_game

    g = OpenSpielGame(load_openspiel_game("breakthrough"), seed=0)
    assert "breakthrough" in game_rules(g)


def test_render_chat_template_and_fallback(tokenizer):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_chat(msgs, tokenizer) == "system: S\nuser: U\nassistant:"  # no template: plain fallback
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    try:
        assert render_chat(msgs, tokenizer) == "<|system|>S<|user|>U<|assistant|>"
    finally:
        tokenizer.chat_template = None


class DictTokenizer:
    """Tokenizer stub with a fixed action -> ids table, to check the mask by hand."""

    eos_token_id = 0
    table = {"ab": [1, 2], "ac": [1, 3], "a": [1], "d": [4]}

    def encode(self, text, add_special_tokens=False):
        return self.table[text]


def test_mask_by_hand():
    mask = legal_action_token_mask(DictTokenizer(), [["ab", "ac", "a"], ["d"]])
    logits = torch.zeros(2, 6)
    allowed = lambda out: [torch.nonzero(torch.isfinite(r)).flatten().tolist() for r in out]  # noqa: E731
    # step 0: row 0 may start "a" (token 1); row 1 only "d" (token 4)
    assert allowed(mask(0, torch.zeros(2, 0, dtype=torch.long), logits)) == [[1], [4]]
    # after [1] row 0 spelled "a" (complete: stop 0 allowed) and may go on with 2 or 3;
    # row 1 after [4] spelled "d": only stop
    assert allowed(mask(1, torch.tensor([[1], [4]]), logits)) == [[0, 2, 3], [0]]
    # after [1, 2] = "ab": only stop; row 1 finished: only stop
    assert allowed(mask(2, torch.tensor([[1, 2], [4, 0]]), logits)) == [[0], [0]]
    # the processor accepts prompt + completion too (it reads the last `step` tokens), out of order
    assert allowed(mask(1, torch.tensor([[9, 9, 1], [9, 9, 4]]), logits)) == [[0, 2, 3], [0]]
    # finite logits are passed through unchanged
    x = torch.randn(2, 6)
    out = mask(0, torch.zeros(2, 0, dtype=torch.long), x)
    assert out[0, 1] == x[0, 1] and out[1, 4] == x[1, 4]


def test_trie_structure():
    trie = build_action_trie([[1, 2], [1, 3], [1]])
    assert set(trie) == {1} and set(trie[1]) == {2, 3, -1}


@pytest.mark.parametrize("name", ["leduc_poker", "kuhn_poker", "connect_four", "tic_tac_toe"])
def test_masked_random_sampling_always_spells_a_legal_action(tokenizer, name):
    """Sample tokens at random under the mask: every completion decodes to a legal action, all are reached."""
    rng = np.random.default_rng(0)
    games = [make_game(name, s) for s in range(8)]
    legal = [g.legal_actions() for g in games]
    mask = legal_action_token_mask(tokenizer, legal)
    V = len(tokenizer)
    seen = [set() for _ in games]
    for _trial in range(60):
        B = len(games)
        tokens = torch.zeros(B, 0, dtype=torch.long)
        done = [False] * B
        comp = [[] for _ in range(B)]
        for step in range(10):
            logits = torch.as_tensor(rng.normal(size=(B, V)), dtype=torch.float32)
            out = mask(step, tokens, logits)
            probs = torch.softmax(out.double(), -1).numpy()
            nxt = torch.tensor([[rng.choice(V, p=row / row.sum())] for row in probs])  # (B, 1)
            for b in range(B):
                if not done[b]:
                    if int(nxt[b]) == tokenizer.eos_token_id:
                        done[b] = True
                    else:
                        comp[b].append(int(nxt[b]))
            tokens = torch.cat([tokens, nxt], 1)
            if all(done):
                break
        assert all(done)
        for b in range(B):
            text = tokenizer.decode(comp[b])
            assert text in legal[b] and parse_action(text, legal[b]) == text
            seen[b].add(text)
    assert all(seen[b] == set(legal[b]) for b in range(len(games)))


def test_mask_errors(tokenizer):
    with pytest.raises(ValueError, match="stop_ids"):
        legal_action_token_mask(DictTokenizer(), ["a"], stop_ids=[])
    mask = legal_action_token_mask(tokenizer, [["call"], ["fold"]])
    with pytest.raises(ValueError, match="B=3"):
        mask(0, torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, len(tokenizer)))
    shared = legal_action_token_mask(tokenizer, ["call", "fold"])  # one list for every row
    out = shared(0, torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, len(tokenizer)))
    assert torch.isfinite(out).sum(1).tolist() == [2, 2, 2]  # "c..." and "fold" first tokens

"""Prompts per game and style, chat rendering, and the legal-action logits mask."""

import logging

import numpy as np
import pytest
import torch

from games.parsing import parse_action
from games.prompts import (
    RULES,
    action_budget,
    action_strings,
    build_action_trie,
    build_prompt,
    check_action_budget,
    check_agent_budgets,
    flatten_board,
    game_rules,
    legal_action_token_mask,
    render_chat,
    state_text,
)
from games.text import GAMES, GameConfig, make_game


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


# --- state text -----------------------------------------------------------------------------------
def test_flatten_board_joins_only_boards():
    assert flatten_board("x.o\n...\n..x\n") == "x.o.....x"  # rows of one character per cell
    # text keeps its line breaks: no word is glued to the next line's first word
    assert flatten_board("Scores: 0 0, Turn total: 0\nCurrent player: 0\n") == (
        "Scores: 0 0, Turn total: 0\nCurrent player: 0"
    )
    assert flatten_board("abc\nde\n") == "abc\nde"  # rows of different widths are not a board
    assert flatten_board("(0): 1 3 5 7") == "(0): 1 3 5 7"


def test_state_text_of_pig_keeps_its_lines_apart():
    g = make_game(GameConfig("pig"), 0)
    text = state_text(g, 0)
    assert "0Current" not in text and text == "Scores: 0 0, Turn total: 0\nCurrent player: 0"


def _state_text_before(game, player: int) -> str:
    """The 'state' prompt the shipped runs trained on: games.league.state_text as of commit c4d45ec (the
    lines of a perfect-information board were glued together); a frozen reference, not library code."""
    import pyspiel

    state = None
    if getattr(game, "openspiel_state", None) is not None:
        try:
            state = game.openspiel_state()
        except ValueError:
            state = None
    if state is None:
        return game.observation(player)
    os_game, gtype = state.get_game(), state.get_game().get_type()
    if gtype.information != pyspiel.GameType.Information.PERFECT_INFORMATION:
        if gtype.provides_information_state_string:
            return state.information_state_string(player)
        return state.observation_string(player)
    cells = (state.observation_string(player) if gtype.provides_observation_string else str(state)).replace(
        "\n", ""
    )
    label = getattr(game, "action_from_openspiel", None)
    if len(cells) == os_game.num_distinct_actions() and label is not None and not state.is_terminal():
        chars = list(cells)
        for a in state.legal_actions():
            if len(label(int(a))) == 1:
                chars[a] = label(int(a))
        cells = "".join(chars)
    return cells


@pytest.mark.parametrize("name", sorted(GAMES))
def test_state_text_of_shipped_games_is_unchanged(name):
    """The shipped games' 'state' prompts (what shipped runs trained on) stay as they were."""
    league_state_text = _state_text_before
    rng = np.random.default_rng(0)
    g = make_game(name, 0)
    while not g.is_terminal():
        p = g.current_player()
        assert state_text(g, p) == league_state_text(g, p)
        legal = g.legal_actions()
        g.apply(legal[int(rng.integers(len(legal)))])


def test_state_text_hand_values():
    g = make_game("tic_tac_toe", 0)
    g.apply("0")
    g.apply("8")
    assert state_text(g, 0) == "x1234567o"  # free cells show their action
    c = make_game("connect_four", 0)
    c.apply("3")
    assert state_text(c, 1) == "." * 35 + "...x..."  # 6 rows x 7 columns, top row first


# --- completion budget ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bytes_tokenizer():
    from marl.policies.tokenizer import build_char_tokenizer

    return build_char_tokenizer()  # one token per UTF-8 byte: token counts are character counts


@pytest.mark.parametrize(
    "cfg, tokens, exhaustive",
    [
        (GameConfig("tic_tac_toe"), 1, True),  # "0".."8", every action id
        (GameConfig("connect_four_v3", "pettingzoo"), 1, True),  # "0".."6", the action mask's indices
        (GameConfig("kuhn_poker"), 4, False),  # "pass" (4) > "bet" (3)
        (GameConfig("leduc_poker"), 5, False),  # "raise" (5) > "call", "fold" (4)
        (GameConfig("nim"), 15, False),  # "pile:1,_take:1;": 15 characters
        (GameConfig("first_sealed_auction"), 15, False),  # "Player_0_bid:_5": 15 characters
        # "Pl0:_place_ship_horizontally_with_top-left_corner_in_(0,_0)": 4+6+5+13+5+9+7+3+4+3 = 59
        (GameConfig("battleship"), 59, False),
        (GameConfig("phantom_ttt"), 6, False),  # "x(0,0)"
        (GameConfig("backgammon"), 22, False),  # "1324_-_Bar/23*_Bar/19*": 4+3+7+1+7 = 22
    ],
)
def test_action_budget_hand_values(bytes_tokenizer, cfg, tokens, exhaustive):
    b = action_budget(cfg, bytes_tokenizer)
    assert (b.tokens, b.exhaustive) == (tokens, exhaustive)
    assert len(b.action.encode()) == tokens


def test_action_budget_is_the_max_over_the_names(tokenizer):
    """Against the naive loop, with a BPE tokenizer whose token counts are not character counts."""
    cfg = GameConfig("liars_dice")
    names, _ = action_strings(cfg)
    lengths = {a: len(tokenizer.encode(a, add_special_tokens=False)) for a in names}
    b = action_budget(cfg, tokenizer)
    assert b.tokens == max(lengths.values()) and lengths[b.action] == b.tokens and b.num_actions == len(names)


def test_budget_too_short_is_refused_naming_game_budget_and_setting(bytes_tokenizer):
    cfg = GameConfig("nim", constrained_sampling=True)
    with pytest.raises(ValueError) as err:
        check_action_budget(cfg, bytes_tokenizer, 8, where="agents.lm.sampling.max_new_tokens")
    msg = str(err.value)
    assert "'nim'" in msg and "15 tokens" in msg and "agents.lm.sampling.max_new_tokens is 8" in msg
    assert "Set agents.lm.sampling.max_new_tokens: 15 or more" in msg
    assert check_action_budget(cfg, bytes_tokenizer, 15).tokens == 15  # exactly enough passes


def test_budget_without_the_mask_only_warns(bytes_tokenizer, caplog):
    caplog.set_level(logging.WARNING, logger="games.prompts")
    check_action_budget(GameConfig("nim"), bytes_tokenizer, 8)
    assert "15 tokens" in caplog.text


def test_the_budget_is_what_the_mask_needs(bytes_tokenizer):
    """Why the check exists: under the mask, a budget one token short of the action length forfeits every
    nim move (all its actions are 15 characters); the measured budget spells every one of them."""
    g = make_game(GameConfig("nim"), 0)
    legal = g.legal_actions()
    need = action_budget(GameConfig("nim"), bytes_tokenizer).tokens
    rng = np.random.default_rng(0)
    for budget, parses in ((need - 1, False), (need, True)):
        for _ in range(20):
            mask = legal_action_token_mask(bytes_tokenizer, [legal], [bytes_tokenizer.eos_token_id])
            tokens = torch.zeros(1, 0, dtype=torch.long)
            for step in range(budget):  # generation stops at the budget, stop token or not
                out = mask(step, tokens, torch.as_tensor(rng.normal(size=(1, len(bytes_tokenizer)))))
                allowed = torch.nonzero(torch.isfinite(out[0])).flatten().tolist()
                nxt = int(rng.choice(allowed))
                if nxt == bytes_tokenizer.eos_token_id:
                    break
                tokens = torch.cat([tokens, torch.tensor([[nxt]])], 1)
            text = bytes_tokenizer.decode(tokens[0].tolist())
            assert (parse_action(text, legal) is not None) == parses


class LettersTokenizer:
    """Spells letters and maps every other character to one unknown id (0)."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) if c.isalpha() else 0 for c in text]


def test_budget_refuses_actions_the_tokenizer_cannot_tell_apart():
    with pytest.raises(ValueError, match="encode to the same tokens"):
        action_budget(GameConfig("nim"), LettersTokenizer())  # "pile:1,..." and "pile:2,..." collide


def test_shipped_game_configs_have_the_budget_they_need(bytes_tokenizer):
    """Every shipped self-play config gives each tiny-LM agent enough max_new_tokens for its game."""
    from games.selfplay import SelfPlayConfig
    from marl.config import load_config, peek_yaml_key
    from tests.cli_helpers import ROOT

    checked = 0
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        if peek_yaml_key(path, "recipe") != "selfplay":
            continue
        cfg = load_config(SelfPlayConfig, [path])
        for name, agent in cfg.agents.items():
            if agent.policy.path:  # a Hugging Face tokenizer: checked when the run builds it
                continue
            where = f"{path.name}: agents.{name}.sampling.max_new_tokens"
            check_action_budget(cfg.game, bytes_tokenizer, agent.sampling.max_new_tokens, where=where)
            checked += 1
    assert checked >= 6


def test_check_agent_budgets_at_config_time():
    """What a recipe's validate() calls: each agent's tokenizer from its policy config, no model built."""
    from marl.config import AgentConfig, SamplingConfig
    from marl.policies import PolicyConfig

    agents = {
        "ok": AgentConfig(policy=PolicyConfig(tiny="100k"), sampling=SamplingConfig(max_new_tokens=15)),
        "short": AgentConfig(policy=PolicyConfig(tiny="100k"), sampling=SamplingConfig(max_new_tokens=14)),
    }
    nim = GameConfig("nim", constrained_sampling=True)
    with pytest.raises(ValueError, match=r"agents.short.sampling.max_new_tokens is 14.*: 15 or more"):
        check_agent_budgets(nim, agents)
    check_agent_budgets(nim, {"ok": agents["ok"]})
    check_agent_budgets(GameConfig("nim"), agents)  # without the mask: a warning only

"""The embedded byte-level tokenizer: fixed id layout, lossless round trip, ChatML template, save/load."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from marl.policies.tokenizer import (
    BYTE_OFFSET,
    CHAT_TEMPLATE,
    VOCAB_SIZE,
    build_char_tokenizer,
    save_tokenizer,
)


def test_vocab_layout_and_special_ids():
    tok = build_char_tokenizer()
    # 4 specials + 256 bytes
    assert len(tok) == VOCAB_SIZE == 260
    assert tok.pad_token_id == 0
    assert tok.eos_token_id == 1
    assert tok.eos_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [2, 3]


def test_bytes_map_to_offset_ids():
    tok = build_char_tokenizer()
    # 'A' is byte 65 -> id 4 + 65 = 69; 'é' is UTF-8 bytes c3 a9 -> ids 4 + 195, 4 + 169
    assert tok.encode("A", add_special_tokens=False) == [BYTE_OFFSET + 65]
    assert tok.encode("é", add_special_tokens=False) == [BYTE_OFFSET + 0xC3, BYTE_OFFSET + 0xA9]
    # a space and a newline are ordinary bytes (32, 10)
    assert tok.encode(" \n", add_special_tokens=False) == [BYTE_OFFSET + 32, BYTE_OFFSET + 10]


def test_round_trip_is_lossless():
    tok = build_char_tokenizer()
    text = "Board:\n x|o|.\n  naïve 日本 🙂 tab\tend  "
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte
    assert tok.decode(ids) == text


def test_special_tokens_are_single_ids_inside_text():
    tok = build_char_tokenizer()
    ids = tok.encode("a<|im_end|>b", add_special_tokens=False)
    assert ids == [BYTE_OFFSET + ord("a"), 3, BYTE_OFFSET + ord("b")]
    assert tok.decode(ids, skip_special_tokens=True) == "ab"


def test_chat_template_renders_chatml():
    tok = build_char_tokenizer()
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text == expected
    ids = tok.apply_chat_template(msgs[1:], add_generation_prompt=False, tokenize=True, return_dict=False)
    # <|im_start|> u s e r \n h i <|im_end|> \n
    assert list(ids) == [2] + [BYTE_OFFSET + c for c in b"user\nhi"] + [3, BYTE_OFFSET + 10]


def test_deterministic_and_save_load(tmp_path):
    a, b = build_char_tokenizer(), build_char_tokenizer()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    save_tokenizer(a, tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"  # a class transformers 4.x also knows
    assert cfg["additional_special_tokens"] == ["<|im_start|>", "<|im_end|>"]
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "x=1 <|im_start|>é"
    assert loaded.encode(text, add_special_tokens=False) == a.encode(text, add_special_tokens=False)
    assert loaded.pad_token_id == 0 and loaded.eos_token_id == 1
    assert loaded.chat_template == CHAT_TEMPLATE

"""The embedded offline tokenizer: byte-level, 4 special tokens, a ChatML chat template.

Built deterministically from code with the ``tokenizers`` library (no download): every
one of the 256 bytes is one token, so any UTF-8 text round-trips exactly. Vocabulary
(260 ids, fixed order):

    0 ``<|pad|>``   1 ``<|endoftext|>`` (eos)   2 ``<|im_start|>``   3 ``<|im_end|>``
    4 + b           the byte b (0..255), spelled with GPT-2's printable byte alphabet

The chat template is ChatML, as in Qwen2:
``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
``<|im_start|>assistant\\n`` when ``add_generation_prompt=True``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, EOS_TOKEN, IM_START, IM_END)
BYTE_OFFSET = len(SPECIAL_TOKENS)  # id of byte b is BYTE_OFFSET + b
VOCAB_SIZE = BYTE_OFFSET + 256

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the byte-level tokenizer described in the module docstring.

    Deterministic and offline: the same call always gives the same vocabulary, ids and
    template. ``tokenizer.save_pretrained(dir)`` writes files that ``AutoTokenizer``
    loads back.
    """
    byte_chars = _bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab[byte_chars[b]] = BYTE_OFFSET + b
    # A BPE model with no merges over the byte alphabet is a pure byte-level tokenizer.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        extra_special_tokens=[IM_START, IM_END],
        model_max_length=1 << 20,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    if len(fast) != VOCAB_SIZE:  # pragma: no cover - guards the fixed layout above
        raise RuntimeError(f"byte tokenizer has {len(fast)} ids, expected {VOCAB_SIZE}")
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """``save_pretrained`` plus a ``tokenizer_config.json`` that older transformers (4.x, as pinned by
    some vLLM releases) also read: class ``PreTrainedTokenizerFast``, ``additional_special_tokens``
    and the chat template inline."""
    tokenizer.save_pretrained(out_dir)
    path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["additional_special_tokens"] = list(cfg.get("extra_special_tokens") or [IM_START, IM_END])
    cfg["chat_template"] = tokenizer.chat_template
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

"""Shared pieces of the demo-model pipeline: paths, the pre-tokenizer, byte-level BPE encoding.

The pre-tokenizer is the Qwen2 split pattern, written so that Python's `re` (which lacks
\\p{..}) and the engine that reads tokenizer.json (Rust `tokenizers`/Oniguruma, or
tokenizers.js translating to a JavaScript `u` RegExp) split text identically:
- \\p{L} / \\p{N} are spelled out as explicit code-point ranges in Python, generated from
  `unicodedata`; tokenizer.json keeps the \\p{L} / \\p{N} property escapes.
- \\s is the Unicode White_Space property (what Oniguruma and tokenizers.js use); Python's
  `\\s` also matches U+001C..U+001F, so Python gets an explicit class instead.
- The contractions are ASCII case-insensitive via explicit classes ('[sS]) instead of (?i:...),
  whose Unicode case folding differs between engines (e.g. U+017F LATIN SMALL LETTER LONG S).
Compare Qwen2's pattern in huggingface/transformers
src/transformers/models/qwen2/tokenization_qwen2.py (PRETOKENIZE_REGEX).
"""
from __future__ import annotations

import os
import re
import sys
import unicodedata
from functools import lru_cache

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(HERE, "work")
OUT_DIR = os.path.join(REPO, "public", "demo-model")
DATASET = os.path.join(REPO, "datasets", "identity_en_zh.json")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CONTRACTIONS = r"'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"
# The pattern stored in tokenizer.json (Oniguruma / JS-u syntax).
SPLIT_PATTERN = (
    CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Unicode White_Space property (PropList.txt); identical in every Unicode version since 6.3.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _category_class(prefix: str) -> str:
    """Character-class body (no brackets) of every code point whose general category starts with prefix."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith(prefix):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    parts = []
    for lo, hi in ranges:
        parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
    return "".join(parts)


def python_split_regex() -> re.Pattern[str]:
    letters = _category_class("L")
    numbers = _category_class("N")
    ws = WHITE_SPACE
    py = (
        CONTRACTIONS
        + rf"|[^\r\n{letters}{numbers}]?[{letters}]+|[{numbers}]| ?[^{ws}{letters}{numbers}]+[\r\n]*"
        + rf"|[{ws}]*[\r\n]+|[{ws}]+(?![^{ws}])|[{ws}]+"
    )
    return re.compile(py)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode-char table (openai/gpt-2 src/encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def normalize(text: str) -> str:
    # tokenizer.json carries an NFC normalizer, like Qwen2's.
    return unicodedata.normalize("NFC", text)


def pretokenize(regex: re.Pattern[str], text: str) -> list[str]:
    """Split (Isolated) then map each piece's UTF-8 bytes to the byte-level alphabet."""
    return ["".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8")) for piece in regex.findall(text)]


class BpeEncoder:
    """Byte-level BPE with merge ranks; same algorithm as tokenizers' BPE model without dropout."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special: dict[str, int]):
        self.vocab = vocab
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.special = special
        self.regex = python_split_regex()
        self.special_re = re.compile("(" + "|".join(re.escape(s) for s in special) + ")")
        self._cache: dict[str, list[int]] = {}

    def _bpe(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols = list(word)
        while len(symbols) > 1:
            best_rank, best_i = None, -1
            for i in range(len(symbols) - 1):
                r = self.ranks.get((symbols[i], symbols[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_rank is None:
                break
            a, b = symbols[best_i], symbols[best_i + 1]
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == a and symbols[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        ids = [self.vocab[s] for s in symbols]
        if len(self._cache) < 500_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk in self.special_re.split(text):
            if not chunk:
                continue
            if chunk in self.special:
                ids.append(self.special[chunk])
                continue
            for word in pretokenize(self.regex, normalize(chunk)):
                ids.extend(self._bpe(word))
        return ids

    def decode(self, ids: list[int]) -> str:
        inv = {i: t for t, i in self.vocab.items()}
        inv.update({i: t for t, i in self.special.items()})
        out = bytearray()
        for i in ids:
            tok = inv[i]
            if tok in self.special:
                out.extend(tok.encode("utf-8"))
            else:
                out.extend(CHAR_TO_BYTE[c] for c in tok)
        return out.decode("utf-8", errors="replace")


def load_encoder(tokenizer_json_path: str) -> BpeEncoder:
    import json

    with open(tokenizer_json_path, encoding="utf-8") as f:
        tj = json.load(f)
    model = tj["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    special = {t["content"]: t["id"] for t in tj["added_tokens"]}
    return BpeEncoder(model["vocab"], merges, special)

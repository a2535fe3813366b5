"""Trains the demo model's byte-level BPE tokenizer and writes a Hugging Face
tokenizer.json + tokenizer_config.json (Qwen2-style: NFC, Split + ByteLevel, ChatML).

Training text: the pre-training corpus' train split (work/corpus.json, special tokens removed)
plus the demo dataset (datasets/identity_en_zh.json) counted DATASET_WEIGHT times, its Chinese
text one character at a time, so that the Chinese characters of the demo dataset become single
tokens instead of 3 bytes each (and "Tabby"/"Tabtune" single words) without learning whole
dataset phrases as tokens.

Usage: /usr/bin/python3 train_tokenizer.py [--vocab-size 6144]
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import time
from collections import Counter, defaultdict

from common import (
    BYTE_TO_CHAR,
    DATASET,
    OUT_DIR,
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    WORK,
    normalize,
    pretokenize,
    python_split_regex,
)

DATASET_WEIGHT = 8
MODEL_MAX_LENGTH = 1024
DEFAULT_SYSTEM = "You are a helpful assistant."

# Qwen2.5-style ChatML template (system turn first, default system prompt when none is given;
# tools in the system turn, assistant tool calls as <tool_call> JSON, tool results as a user
# turn of <tool_response> blocks), so sharegpt rows with function calls render as on Qwen2.5.
TOOLS_HEADER = (
    "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>"
)
TOOLS_FOOTER = (
    "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, "
    "\"arguments\": <args-json-object>}\\n</tool_call>"
)
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- else %}{%- set system = '" + DEFAULT_SYSTEM + "' %}{%- endif %}"
    "{{- '<|im_start|>system\\n' + system }}"
    "{%- if tools %}"
    "{{- '" + TOOLS_HEADER + "' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '" + TOOLS_FOOTER + "' }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}"
    "{%- for tool_call in message['tool_calls'] %}"
    "{%- if tool_call['function'] is defined %}{%- set tool_call = tool_call['function'] %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call['name'] + '\", \"arguments\": ' }}"
    "{{- tool_call['arguments'] | tojson }}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def word_counts() -> Counter[str]:
    regex = python_split_regex()
    special_re = re.compile("|".join(re.escape(s) for s in SPECIAL_TOKENS))
    counts: Counter[str] = Counter()
    with open(os.path.join(WORK, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)
    for doc in corpus["train"]:
        for chunk in special_re.split(doc["text"]):
            counts.update(pretokenize(regex, normalize(chunk)))
    with open(DATASET, encoding="utf-8") as f:
        rows = json.load(f)
    for row in rows:
        for field in ("instruction", "input", "output"):
            for piece in regex.findall(normalize(row[field])):
                # CJK runs are counted one character at a time: the merges then build whole
                # characters (3 UTF-8 bytes -> 1 token) but never multi-character phrases of
                # the demo dataset, which would make the tokenizer overfit to it.
                parts = list(piece) if any(ord(ch) >= 0x2E80 for ch in piece) else [piece]
                for part in parts:
                    counts[to_byte_level(part)] += DATASET_WEIGHT
    return counts


def to_byte_level(text: str) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in text.encode("utf-8"))


def train_bpe(counts: Counter[str], n_tokens: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Classic BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair)."""
    vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
    words = [list(w) for w in counts]
    freqs = list(counts.values())
    pair_count: defaultdict[tuple[str, str], int] = defaultdict(int)
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_count[p] += freqs[i]
            where[p].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(vocab) < n_tokens and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg or -neg <= 0:
            continue  # stale heap entry
        a, b = pair
        merged = a + b
        merges.append(pair)
        if merged not in vocab:
            vocab[merged] = len(vocab)
        touched: set[tuple[str, str]] = set()
        for i in list(where[pair]):
            w, f = words[i], freqs[i]
            for p in zip(w, w[1:]):
                pair_count[p] -= f
                touched.add(p)
            out: list[str] = []
            j = 0
            while j < len(w):
                if j < len(w) - 1 and w[j] == a and w[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_count[p] += f
                where[p].add(i)
                touched.add(p)
        del pair_count[pair]
        del where[pair]
        for p in touched:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
    return vocab, merges


def tokenizer_json(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict:
    added = [
        {"id": len(vocab) + k, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for k, tok in enumerate(SPECIAL_TOKENS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[a, b] for a, b in merges],
        },
    }


def tokenizer_config(vocab_len: int) -> dict:
    decoder = {
        str(vocab_len + k): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
        for k, tok in enumerate(SPECIAL_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-size", type=int, default=6144, help="total vocabulary incl. special tokens")
    ap.add_argument("--config-only", action="store_true", help="rewrite tokenizer_config.json for the existing tokenizer.json")
    args = ap.parse_args()
    if args.config_only:
        with open(os.path.join(OUT_DIR, "tokenizer.json"), encoding="utf-8") as f:
            vocab_len = len(json.load(f)["model"]["vocab"])
        with open(os.path.join(OUT_DIR, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_config(vocab_len), f, ensure_ascii=False, indent=2)
            f.write("\n")
        return
    t0 = time.time()
    counts = word_counts()
    print(f"{len(counts)} distinct pre-tokens, {sum(counts.values())} total ({time.time() - t0:.1f}s)")
    vocab, merges = train_bpe(counts, args.vocab_size - len(SPECIAL_TOKENS))
    print(f"{len(merges)} merges, {len(vocab)} BPE tokens ({time.time() - t0:.1f}s)")
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(OUT_DIR, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(len(vocab)), f, ensure_ascii=False, indent=2)
        f.write("\n")
    print("wrote", OUT_DIR)


if __name__ == "__main__":
    main()

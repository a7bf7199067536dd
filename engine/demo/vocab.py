"""A small CLIP BPE vocabulary in which every caption word is one token.

CLIP's byte-level alphabet (256 symbols, each also with the end-of-word mark) stays in, so any
other word still tokenizes, character by character. The merges are built here, so no download
is needed: for each caption word, merge its two leftmost pieces until one piece is left.
"""

from __future__ import annotations

import json
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from engine.demo.captions import caption_words

START, END = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """CLIP's (and GPT-2's) printable stand-ins for the 256 byte values, in CLIP's order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return tuple(chr(c) for c in codes)


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Split a word into pieces the way CLIP's tokenizer does with these merge ranks."""
    pieces = [*word[:-1], word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(pairwise(pieces))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pair = (pieces[i], pieces[i + 1])
        merged, j = [], 0
        while j < len(pieces):
            if j + 1 < len(pieces) and (pieces[j], pieces[j + 1]) == pair:
                merged.append(pieces[j] + pieces[j + 1])
                j += 2
            else:
                merged.append(pieces[j])
                j += 1
        pieces = merged
    return pieces


def build_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges, in rank order, that turn each word into a single token."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(pieces := bpe(word, ranks)) > 1:
            # A new merge ranks last, so words already made whole keep their merge path.
            ranks[(pieces[0], pieces[1])] = len(merges)
            merges.append((pieces[0], pieces[1]))
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token ids: the byte alphabet, the same with end-of-word marks, merge results, specials."""
    alphabet = byte_alphabet()
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in merges)]
    tokens += [START, END]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt for `CLIPTokenizer` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = build_merges(caption_words())
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(build_vocab(merges), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_path, merges_path

"""Tokenize through the fast tokenizer's Rust backend, sort by length, cut token-budget batches, pad with numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer


@dataclass
class Tokenized:
    ids: list[np.ndarray]   # token ids per text, truncated, special tokens included
    types: list[np.ndarray]  # segment ids per text (0 for the first text, 1 for the pair)
    n_truncated: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(i) for i in self.ids), dtype=np.int64, count=len(self.ids))


def backend_for(tokenizer, max_length: int) -> Tokenizer:
    """A private copy of the Rust tokenizer, truncating at ``max_length`` and never padding."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length)
    return backend


def tokenize(backend: Tokenizer, texts: list[str], pairs: list[str] | None = None) -> Tokenized:
    """One large parallel backend call (Rayon threads) instead of per-batch Python tokenizer calls."""
    inputs = texts if pairs is None else list(zip(texts, pairs))
    encodings = backend.encode_batch(inputs, add_special_tokens=True)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
    types = [np.asarray(e.type_ids, dtype=np.int64) for e in encodings]
    n_truncated = sum(1 for e in encodings if e.overflowing)
    return Tokenized(ids, types, n_truncated)


def plan_batches(lengths: np.ndarray, max_tokens: int, max_texts: int) -> list[np.ndarray]:
    """Split positions into batches, longest first, each padded size (count x longest) within ``max_tokens``.

    Longest first, so a batch that does not fit in memory fails at once rather than at the end.
    """
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(max_texts, max_tokens // max(longest, 1)))
        batches.append(order[start:start + size])
        start += size
    return batches


def pad(rows: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a list of id arrays to the longest; returns (ids, attention mask)."""
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    mask = np.arange(lens.max()) < lens[:, None]
    out = np.full(mask.shape, pad_id, dtype=np.int64)
    out[mask] = np.concatenate(rows)
    return out, mask.astype(np.int64)

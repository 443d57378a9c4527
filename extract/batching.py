"""Tokenize through the fast tokenizer's Rust backend, sort by length, cut token-budget batches, pad with numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from bertfeat.errors import BertfeatError


@dataclass
class Tokenized:
    ids: list[np.ndarray]   # token ids per row, truncated, special tokens included
    types: list[np.ndarray]  # segment ids per row (0 for the first text, 1 for the pair)
    owner: np.ndarray  # the text each row belongs to; a long text split into windows owns several rows
    n_truncated: int  # texts that lost tokens
    n_windowed: int = 0  # texts split into several windows

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(i) for i in self.ids), dtype=np.int64, count=len(self.ids))


def backend_for(tokenizer_json: str, max_length: int, stride: int = 0) -> Tokenizer:
    """A private Rust tokenizer from its JSON, truncating at ``max_length`` and never padding.

    ``stride`` > 0: what truncation cuts off comes back as windows that overlap by ``stride`` tokens.
    """
    backend = Tokenizer.from_str(tokenizer_json)
    backend.no_padding()
    backend.enable_truncation(max_length, stride=stride)
    return backend


def tokenize(backend: Tokenizer, texts: list[str], pairs: list[str] | None = None,
             windows: bool = False) -> Tokenized:
    """One large parallel backend call (Rayon threads) instead of per-batch Python tokenizer calls.

    ``windows``: a text longer than the limit becomes several rows (its overflowing windows) instead of
    being truncated; ``owner`` maps rows back to texts.
    """
    check_room(backend, pairs is not None, windows)
    inputs = texts if pairs is None else list(zip(texts, pairs))
    encodings = backend.encode_batch(inputs, add_special_tokens=True)
    n_long = sum(1 for e in encodings if e.overflowing)
    if windows and n_long:
        rows = [(i, r) for i, e in enumerate(encodings) for r in (e, *e.overflowing)]
        owner = np.fromiter((i for i, _ in rows), dtype=np.int64, count=len(rows))
        encodings = [r for _, r in rows]
    else:
        owner = np.arange(len(encodings))
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
    types = [np.asarray(e.type_ids, dtype=np.int64) for e in encodings]
    return Tokenized(ids, types, owner, 0 if windows else n_long, n_long if windows else 0)


def check_room(backend: Tokenizer, pairs: bool, windows: bool) -> None:
    """Refuse a --max-length the tokenizer cannot honour, instead of a silent non-truncation or a Rust panic.

    The special tokens ([CLS], [SEP]) count against ``max_length``, so at least one text token must fit.
    With windows, each text of a pair gets at least half of what is left, and that half must exceed the
    windows' overlap (the tokenizer's rule for its stride).
    """
    limit, stride = backend.truncation["max_length"], backend.truncation["stride"]
    special = backend.post_processor.num_special_tokens_to_add(pairs) if backend.post_processor else 0
    what = "a text pair" if pairs else "each text"
    if limit <= special:
        raise BertfeatError(f"max_length={limit} leaves no room for text: the model adds {special} special tokens "
                            f"to {what}; pass max_length={special + 1} or more (default 256)")
    room = (limit - special) // 2 if pairs else limit - special
    if windows and stride >= room:
        from bertfeat.extract.forward import WINDOW_OVERLAP  # here, not at the top: forward imports this module

        def fits(n: int) -> bool:
            return int(n * WINDOW_OVERLAP) < ((n - special) // 2 if pairs else n - special)

        # the least length from which every longer one fits too (rounding makes the rule non-monotonic)
        need = next(n for n in range(limit + 1, limit + 256) if all(fits(m) for m in range(n, n + 64)))
        raise BertfeatError(
            f"max_length={limit} is too short for long=chunk{' with pair_col=' if pairs else ''}: "
            f"{'each text of a pair gets' if pairs else 'a window holds'} {room} tokens, not more than the "
            f"{stride}-token overlap between windows; pass max_length={need} or more, or long=truncate"
        )


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


class WindowMerger:
    """Turn per-row vectors back into per-text vectors: a windowed text gets the mean of its windows.

    Rows arrive batch by batch in any order; a text comes out once all its windows are in, so callers can
    commit finished texts as they go. With ``normalize``, the mean is L2-normalized again (a mean of unit
    vectors is shorter than one).
    """

    def __init__(self, owner: np.ndarray, normalize: list[bool]):
        self.owner = owner
        self.normalize = normalize
        self.left = np.bincount(owner, minlength=int(owner.max()) + 1 if len(owner) else 0)
        self.total = self.left.copy()
        self.sums: dict[int, list[np.ndarray]] = {}

    def add(self, rows: np.ndarray, outs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Vectors of ``rows`` (one array per view) -> (finished texts, their vectors per view)."""
        texts = self.owner[rows]
        whole = self.total[texts] == 1
        if whole.all():
            return texts, outs
        done, done_rows = list(texts[whole]), [[out[whole] for out in outs]]
        for j in np.flatnonzero(~whole):
            text = int(texts[j])
            parts = self.sums.setdefault(text, [np.zeros(out.shape[1], dtype=np.float64) for out in outs])
            for part, out in zip(parts, outs):
                part += out[j]
            self.left[text] -= 1
            if self.left[text] == 0:
                done.append(text)
                done_rows.append([self._finish(part / self.total[text], v)[None]
                                  for v, part in enumerate(self.sums.pop(text))])
        return np.asarray(done, dtype=np.int64), [np.concatenate(views).astype(np.float32)
                                                  for views in zip(*done_rows)]

    def _finish(self, vector: np.ndarray, view: int) -> np.ndarray:
        if self.normalize[view]:
            vector = vector / max(np.linalg.norm(vector), 1e-12)
        return vector

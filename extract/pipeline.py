"""texts -> (cache hit | encoder forward) -> vectors, for one or more encoders sharing a forward pass.

Memory stays flat on any corpus: the texts the cache lacks are tokenized, sorted and batched one
window (``WINDOW_TEXTS`` unique texts) at a time, and each window's vectors are committed to the cache
before the next window is tokenized. Windows are cut from every unique text in key order, whether cached
or not, so a re-run after a kill sees the same windows, and in the window it was killed in, the same
batches (committed texts are the longest ones, the first batches); its vectors are the same bytes.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bertfeat.cache import VectorStore, fingerprint_of, text_keys
from bertfeat.extract.forward import Forward
from bertfeat.extract import batching

log = logging.getLogger("bertfeat")

# Texts per committed cache shard: small enough that a killed run loses little, large enough that
# the shard count stays modest.
SHARD_TEXTS = 2048
# Unique texts tokenized and batched together. Tokens take ~4 KB (short text) to ~40 KB (256 tokens) per
# text, so 50,000 bound a window to ~2 GB at worst, while one sort over many texts keeps the padding low
# and the per-window cost (one tokenizer call, one short last shard) negligible.
WINDOW_TEXTS = 50_000


@dataclass
class Embedded:
    vectors: list[np.ndarray] | None  # one (n_texts, dim) array per encoder, in input order; None: not loaded
    dims: list[int | None]  # each encoder's vector width (None: nothing embedded or stored yet)
    n_texts: int
    n_unique: int
    n_cached: int  # unique texts found in the cache for every encoder
    n_embedded: int  # unique texts run through the model now
    n_truncated: int
    seconds: float
    device: str | None = None  # None when every vector came from the cache
    n_windowed: int = 0  # long texts embedded as several windows (long="chunk")
    precision: str | None = None  # as resolved ("auto" never appears); None when nothing was embedded

    def summary(self) -> dict:
        return {"n_texts": self.n_texts, "n_unique": self.n_unique, "n_cached": self.n_cached,
                "n_embedded": self.n_embedded, "n_truncated": self.n_truncated,
                "seconds": round(self.seconds, 3), "dim": self.dims,
                "device": self.device, "precision": self.precision, "n_windowed": self.n_windowed}


def embed(encoders: list, texts: list[str], pairs: list[str] | None = None,
          cache_dir: str | None = None, progress: bool = True, shard_size: int = SHARD_TEXTS) -> Embedded:
    """Vectors for ``texts`` from every encoder; only texts missing from the cache reach the model.

    Encoders must agree on model, max_length, long and precision; they may differ in pooling, layers and
    normalize, and then one forward pass fills all of them. ONNX exports (int8, and bf16 on a CPU) are kept
    under ``$BERTFEAT_MODELS`` if set, else ``cache_dir``, else the default cache folder.
    """
    return Embedder(encoders, cache_dir, shard_size)(texts, pairs, progress)


class Embedder:
    """``embed`` for many calls in one process: the cache index is read once and the model loaded once
    (a Ray worker serves many blocks of texts). Its index sees its own writes, not other processes'
    later ones: a text another writer stored meanwhile is embedded again, never served wrong."""

    def __init__(self, encoders: list, cache_dir: str | None = None, shard_size: int = SHARD_TEXTS,
                 verify: bool = True, window: int = WINDOW_TEXTS, write: bool = True):
        """``write=False`` reads the cache and stores nothing in it (prediction: a server's traffic must not
        grow a user's cache)."""
        for enc in encoders:
            enc.validate()
        self.encoders, self.cache_dir, self.shard_size, self.window = encoders, cache_dir, shard_size, window
        self.write = write
        self.stores = [_store(cache_dir, enc.cache_settings(), verify) if cache_dir else None for enc in encoders]
        self._forward: Forward | None = None

    def forward(self) -> Forward:
        if self._forward is None:
            self._forward = Forward(self.encoders, model_cache=os.environ.get("BERTFEAT_MODELS") or self.cache_dir)
        return self._forward

    def __call__(self, texts: list[str], pairs: list[str] | None = None, progress: bool = True,
                 load: bool = True) -> Embedded:
        """``load=False``: make sure every text is in the cache and count, without reading cached vectors
        back (``vectors`` is then None): for filling a cache, or a head that streams from it."""
        start = time.perf_counter()
        with _progress(0, progress) as bar:  # closed on an error too, so the error starts its own line
            done = self._embed(texts, pairs, load, bar)
        done.seconds = time.perf_counter() - start
        self._log_long(done)
        return done

    def fill(self, parts: Iterable[tuple[list[str], list[str] | None]], progress: bool = True) -> Embedded:
        """Make sure every text of ``parts`` (``(texts, pairs)`` blocks, e.g. one window of rows read from
        a file at a time) is in the cache, and count, as ``__call__(load=False)`` on all of them would.

        Memory holds one part and its tokens, plus 20 bytes per text for the unique count. A text that
        repeats one from an earlier part is a cache hit there, since that part was committed before.
        """
        start = time.perf_counter()
        seen, done = [], None
        # The total is unknown until the last part is read; closed on an error too (the error's own line).
        with _progress(None, progress) as bar:
            for texts, pairs in parts:
                part = self._embed(texts, pairs, False, bar)
                seen.append(np.unique(text_keys(texts, pairs)))
                done = part if done is None else _add(done, part)
        if done is None:
            done = Embedded(None, [s.dim() if s else None for s in self.stores], 0, 0, 0, 0, 0, 0.0)
        done.n_unique = len(np.unique(np.concatenate(seen))) if seen else 0
        done.n_cached = done.n_unique - done.n_embedded
        done.seconds = time.perf_counter() - start
        self._log_long(done)
        return done

    def _embed(self, texts: list[str], pairs: list[str] | None, load: bool, bar) -> Embedded:
        keys = text_keys(texts, pairs)
        uniq_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        del keys
        n_unique = len(uniq_keys)
        results: list[np.ndarray | None] = [None] * len(self.encoders)
        dims: list[int | None] = [store.dim() if store and not load else None for store in self.stores]
        need = np.zeros(n_unique, dtype=bool)
        found_masks = []
        for i, store in enumerate(self.stores):
            if store is not None and not load:
                found, vecs = store.found(uniq_keys), None
            else:
                found, vecs = store.get(uniq_keys) if store else (np.zeros(n_unique, dtype=bool), None)
            found_masks.append(found)
            if vecs is not None:
                results[i] = np.empty((n_unique, vecs.shape[1]), dtype=np.float32)
                results[i][found] = vecs
            need |= ~found
        todo = np.flatnonzero(need)
        if bar.total is not None:
            bar.total += len(todo)
            bar.refresh()
        n_truncated, n_windowed, device, precision = 0, 0, None, None
        out = _Sink(results if load else None, self.stores if self.write else [None] * len(self.stores),
                    found_masks, uniq_keys, n_unique)
        for lo in range(0, n_unique, self.window):
            part = todo[np.searchsorted(todo, lo):np.searchsorted(todo, lo + self.window)]
            if len(part):
                truncated, windowed, widths = self._embed_window(part, texts, pairs, first, out, bar)
                n_truncated, n_windowed = n_truncated + truncated, n_windowed + windowed
                dims = [d or w for d, w in zip(dims, widths)]
        if len(todo):
            device, precision = self._forward.device, self._forward.precision
        if load:
            dims = [int(r.shape[1]) if r is not None else None for r in results]
            vectors = [r[inverse] if r is not None else np.empty((0, 0), np.float32) for r in results]
        return Embedded(vectors if load else None, dims, len(texts), n_unique, n_unique - len(todo), len(todo),
                        n_truncated, 0.0, device, n_windowed, precision)

    def _embed_window(self, todo: np.ndarray, texts, pairs, first, out: "_Sink", bar) -> tuple[int, int, list[int]]:
        """Tokenize, sort, batch and embed the unique texts ``todo`` (positions among the unique keys), and
        commit their vectors shard by shard; returns (truncated, windowed, vector widths)."""
        forward = self.forward()
        u_texts = [texts[first[j]] for j in todo]
        u_pairs = [pairs[first[j]] for j in todo] if pairs is not None else None
        tok = batching.tokenize(forward.backend, u_texts, u_pairs, windows=forward.windows)
        del u_texts, u_pairs
        batches = batching.plan_batches(tok.lengths, forward.max_tokens, forward.max_texts)
        merger = batching.WindowMerger(tok.owner, [normalize for _, _, normalize in forward.views])
        pending: list[tuple[np.ndarray, list[np.ndarray]]] = []
        for b, (batch, outs) in enumerate(forward.map(tok, batches)):
            finished, outs = merger.add(batch, outs)
            pending.append((todo[finished], outs))
            bar.update(len(finished))
            if sum(len(p[0]) for p in pending) >= self.shard_size or b == len(batches) - 1:
                out.commit(pending)
                pending = []
        return tok.n_truncated, tok.n_windowed, [int(o.shape[1]) for o in outs]

    def _log_long(self, done: Embedded) -> None:
        if done.n_truncated:
            log.warning("%d of %d texts were longer than %d tokens and were truncated",
                        done.n_truncated, done.n_embedded, self._forward.max_length)
        if done.n_windowed:
            log.info("%d of %d texts were longer than %d tokens: embedded as overlapping windows",
                     done.n_windowed, done.n_embedded, self._forward.max_length)


@dataclass
class _Sink:
    """Where finished vectors go: the results in memory (None: load=False) and the stores that lack them."""

    results: list[np.ndarray | None] | None
    stores: list[VectorStore | None]
    found_masks: list[np.ndarray]
    uniq_keys: np.ndarray
    n_unique: int

    def commit(self, pending: list[tuple[np.ndarray, list[np.ndarray]]]) -> None:
        """Place one shard's vectors in the results and store them for the encoders that lacked them."""
        positions = np.concatenate([p[0] for p in pending])
        for i, store in enumerate(self.stores):
            block = np.concatenate([p[1][i] for p in pending])
            if self.results is not None:
                if self.results[i] is None:
                    self.results[i] = np.empty((self.n_unique, block.shape[1]), dtype=np.float32)
                self.results[i][positions] = block
            if store is not None:
                missing = ~self.found_masks[i][positions]
                if missing.any():
                    store.put(self.uniq_keys[positions[missing]], block[missing])


def _add(a: Embedded, b: Embedded) -> Embedded:
    """The counts of two parts of one run (``n_unique`` and ``n_cached`` are the caller's to set)."""
    return Embedded(None, [x or y for x, y in zip(a.dims, b.dims)], a.n_texts + b.n_texts, 0, 0,
                    a.n_embedded + b.n_embedded, a.n_truncated + b.n_truncated, 0.0, a.device or b.device,
                    a.n_windowed + b.n_windowed, a.precision or b.precision)


def _store(cache_dir: str, settings: dict, verify: bool) -> VectorStore:
    return VectorStore(cache_dir, fingerprint_of(settings), settings, verify=verify)


def _progress(total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="embedding", unit="text", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5)

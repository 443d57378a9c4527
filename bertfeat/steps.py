"""The steps the API's commands share, on their options dataclasses (``bertfeat.options``): options ->
encoder, cache folder, embedder; feature views -> arrays; a run's record; output folders."""
from __future__ import annotations

import logging
import math
import os
import sys
import time

import numpy as np

from bertfeat.errors import ConfigError, DataError

log = logging.getLogger("bertfeat")


def base_encoder(config):
    from bertfeat.extract import BertEncoder
    from bertfeat.options import encoder_params

    return BertEncoder(**encoder_params(config))


def cache_root(config) -> str:
    from bertfeat.cache import default_cache_dir

    return config.cache_dir or default_cache_dir()


def embedder(config, encoders, write: bool = True):
    from bertfeat.extract.pipeline import Embedder

    return Embedder(encoders, cache_root(config), config.shard_size, window=window_texts(config), write=write)


def window_texts(config) -> int:
    """Texts tokenized and batched together (hidden --window): what memory holds, and a kill can lose."""
    from bertfeat.extract.pipeline import WINDOW_TEXTS

    return config.window or WINDOW_TEXTS


def embed_views(config, specs: list[str], texts, pairs):
    """Feature views -> {spec: array}. Every encoder of every view shares one forward pass."""
    from bertfeat.extract import feature_encoders

    views = {spec: feature_encoders(spec, base_encoder(config)) for spec in specs}
    unique = {}
    for encoders in views.values():
        for enc in encoders:
            unique.setdefault(enc.fingerprint(), enc)
    emb = embedder(config, list(unique.values()))(texts, pairs, progress=config.progress)
    by_fp = dict(zip(unique, emb.vectors))
    arrays = {spec: np.hstack([by_fp[e.fingerprint()] for e in encs]) for spec, encs in views.items()}
    return arrays, views, emb


def default_view(config) -> str:
    """The feature view ``pooling`` and ``layers`` name, as ``features`` spells it."""
    return config.pooling if config.layers == "-1" else f"{config.pooling}@{config.layers}"


def list_option(value: str, name: str) -> list[str]:
    """A comma-separated option (``heads="logreg,svm"``) as a list."""
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ConfigError(f"{name}={value!r} is empty; give a comma-separated list")
    return items


def check_split(n_rows: int, n_classes: int, test_size: float, source: str) -> None:
    """``test_size`` must leave a training row per class: a stratified split needs that many, and a head
    cannot learn a class it never sees. The test rows are counted as scikit-learn's split counts them."""
    n_train = n_rows - math.ceil(test_size * n_rows)
    if n_train >= n_classes:
        return
    largest = math.floor(100 * (n_rows - n_classes) / n_rows) / 100
    fix = f"pass test_size={largest:g} or less, or test=FILE" if largest > 0 else "pass test=FILE"
    raise DataError(f"test_size={test_size:g} holds out {n_rows - n_train} of the {n_rows} rows of {source}, "
                    f"leaving {n_train} to train on; {n_classes} (one per class) are needed: {fix}")


def run_record(command: str, config, emb, summary: dict) -> dict:
    """A model folder's run.json: the options as given, versions, device and what the run measured."""
    from bertfeat.classify import package_versions
    from bertfeat.options import as_dict

    return {"command": command, "argv": sys.argv[1:], "settings": as_dict(config),
            "versions": package_versions(), "device": emb.device or "none (all vectors from the cache)",
            "embedding": emb.summary(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary}


def default_out(kind: str) -> str:
    """A new folder runs/<time>-<kind>, created here: mkdir is exclusive, so two runs that finish in the same
    second get -2, -3, ... instead of one of them failing after all its work."""
    base = os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}")
    os.makedirs("runs", exist_ok=True)
    for n in range(1, 1000):
        out = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(out)
            return out
        except FileExistsError:
            continue
    raise ConfigError(f"{base}: 999 run folders of that second exist; pass out=")


def check_out(out: str | None) -> None:
    """An output folder must be new or empty: checked before any work, so a typo fails at once."""
    if not out:
        return
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"out={out}: is a file; pass a new folder")
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"out={out}: folder exists and is not empty; pass a new folder")

"""The steps every subcommand shares: flags -> encoder, cache folder, embedder; labelled files -> texts;
a fitted head -> a model folder. `commands` composes them into subcommands."""
from __future__ import annotations

import logging
import math
import os
import sys
import time

import numpy as np

from bertfeat.errors import BertfeatError, ConfigError, DataError

log = logging.getLogger("bertfeat")


def base_encoder(args):
    from bertfeat.extract import BertEncoder

    return BertEncoder(model=args.model, pooling=args.pooling, layers=args.layers, max_length=args.max_length,
                       long=args.long, normalize=args.normalize, precision=args.precision,
                       batch_size=args.batch_size, device=args.device)


def cache_dir(args) -> str:
    from bertfeat.cache import default_cache_dir

    return args.cache_dir or default_cache_dir()


def embedder(args, encoders):
    from bertfeat.extract.pipeline import SHARD_TEXTS, Embedder

    shard = getattr(args, "shard_size", SHARD_TEXTS)
    if shard < 1:
        raise BertfeatError(f"bad --shard-size {shard}; expected a positive number of texts")
    window = window_texts(args)
    return Embedder(encoders, cache_dir(args), shard, window=window)


def window_texts(args) -> int:
    """Texts tokenized and batched together (hidden --window): what memory holds, and a kill can lose."""
    from bertfeat.extract.pipeline import WINDOW_TEXTS

    window = getattr(args, "window", None) or WINDOW_TEXTS
    if window < 1:
        raise BertfeatError(f"bad --window {window}; expected a positive number of texts")
    return window


def run_embed(args, encoders, texts, pairs):
    return embedder(args, encoders)(texts, pairs, progress=not args.quiet)


def embed_views(args, specs: list[str], texts, pairs):
    """Feature views -> {spec: array}. Every encoder of every view shares one forward pass."""
    from bertfeat.extract import feature_encoders

    views = {spec: feature_encoders(spec, base_encoder(args)) for spec in specs}
    unique = {}
    for encoders in views.values():
        for enc in encoders:
            unique.setdefault(enc.fingerprint(), enc)
    emb = run_embed(args, list(unique.values()), texts, pairs)
    by_fp = dict(zip(unique, emb.vectors))
    arrays = {spec: np.hstack([by_fp[e.fingerprint()] for e in encs]) for spec, encs in views.items()}
    return arrays, views, emb


def default_view(args) -> str:
    """The feature view --pooling and --layers name, as `fit --features` / `bench --poolings` spell it."""
    return args.pooling if args.layers == "-1" else f"{args.pooling}@{args.layers}"


def read_labelled(args):
    from bertfeat.extract import check_labels, read_table, split_table

    def read(path):
        return read_table(path, args.text_col, args.label_col, args.pair_col, args.encoding, args.drop_empty)

    train = read(args.train)
    test = read(args.test) if args.test else None
    if test is None:
        check_split(len(train.texts), len(set(train.labels)), args.test_size, args.train)
        train, test = split_table(train, args.test_size, args.seed)
    for warning in check_labels(train, test):
        log.warning(warning)
    pairs = train.pairs + test.pairs if train.pairs is not None else None
    return train, test, train.texts + test.texts, pairs


def check_split(n_rows: int, n_classes: int, test_size: float, source: str) -> None:
    """--test-size must leave a training row per class: a stratified split needs that many, and a head
    cannot learn a class it never sees. The test rows are counted as scikit-learn's split counts them."""
    n_train = n_rows - math.ceil(test_size * n_rows)
    if n_train >= n_classes:
        return
    largest = math.floor(100 * (n_rows - n_classes) / n_rows) / 100
    fix = f"pass --test-size {largest:g} or less, or a --test file" if largest > 0 else "pass a --test file"
    raise DataError(f"--test-size {test_size:g} holds out {n_rows - n_train} of the {n_rows} rows of {source}, "
                    f"leaving {n_train} to train on; {n_classes} (one per class) are needed: {fix}")


def save_model(args, out, head, head_name, spec, encoders, emb, summary, command):
    from bertfeat.api import model_manifest
    from bertfeat.classify import package_versions, save_model_dir

    manifest = model_manifest(encoders, head_name, spec, head.classes_, args.text_col, args.label_col,
                              args.pair_col)
    run = {"command": command, "argv": sys.argv[1:], "settings": {k: v for k, v in vars(args).items()},
           "versions": package_versions(), "device": emb.device or "none (all vectors from the cache)",
           "embedding": emb.summary(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary}
    return save_model_dir(out, head, manifest, run)


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
    raise BertfeatError(f"{base}: 999 run folders of that second exist; pass --out")


def check_flags(args) -> None:
    """Flags that are wrong whatever the data, checked before a file is read or a model loads: a typo or
    an existing --out fails in one line at once, not after the embedding work."""
    from bertfeat.extract.data import check_encoding

    if getattr(args, "encoding", None) is not None:
        check_encoding(args.encoding)
    if getattr(args, "shard_size", 1) < 1:  # the Ray engine takes it as it is
        raise BertfeatError(f"bad --shard-size {args.shard_size}; expected a positive number of texts")
    if getattr(args, "out", None):
        out = os.path.abspath(args.out)
        if os.path.exists(out) and not os.path.isdir(out):
            raise BertfeatError(f"--out {out}: is a file; pass a new folder")
        if os.path.isdir(out) and os.listdir(out):
            raise BertfeatError(f"--out {out}: folder exists and is not empty; pass a new folder")
    if getattr(args, "test", None) is None and not 0 < getattr(args, "test_size", 0.2) < 1:
        raise ConfigError(f"bad --test-size {args.test_size:g}; expected the held-out share of --train, "
                          "between 0 and 1, e.g. 0.2")
    if getattr(args, "cv", 2) < 2:
        raise ConfigError(f"bad --cv {args.cv}; expected 2 or more folds")
    if getattr(args, "samples_per_label", 0) < 0:
        raise BertfeatError(f"bad --samples-per-label {args.samples_per_label}; expected a positive number "
                            "of training samples per label (0: the normal bench)")
    if getattr(args, "samples_per_label", 0) and args.n_experiments < 1:
        raise BertfeatError(f"bad --n-experiments {args.n_experiments}; expected 1 or more (default 10)")

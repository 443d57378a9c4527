"""The Python API, the product the command line sits on: ``fit``, ``bench``, ``finetune``, ``embed``, ``load``.

Options are keyword arguments with the command line's names in Python spelling (``cv=5``,
``class_weight="balanced"``, ``cache_dir=...``, ``progress=False``); ``bertfeat.options`` holds them, one
frozen dataclass per command, with their defaults. ``train``/``test`` are a file path (or folder, or
glob), a pandas DataFrame (``text_col``/``label_col``/``pair_col`` name its columns) or a
``(texts, labels)`` pair. These functions print nothing: results come back as objects.

    >>> clf = bertfeat.fit("train.csv", head="svm")           # doctest: +SKIP
    >>> clf.predict(["my card was declined"])                 # doctest: +SKIP
    >>> res = bertfeat.bench("train.csv", "test.csv"); res.table; res.best; res.save("runs/b")  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from bertfeat import options
from bertfeat.benching import BenchResult, data_rows
from bertfeat.classifier import TextClassifier
from bertfeat.model_folder import load

log = logging.getLogger("bertfeat")


def _config(cls, given: dict, encoder=None, **fixed):
    """The command's config from keyword arguments; ``encoder`` (a BertEncoder) fills the encoder options."""
    if encoder is not None:
        from bertfeat.extract import BertEncoder

        if not isinstance(encoder, BertEncoder):
            raise options.ConfigError(f"bad encoder={encoder!r}; expected a bertfeat.BertEncoder or None")
        clash = sorted(set(given) & set(options.ENCODER_KEYS))
        if clash:
            raise options.ConfigError(f"{', '.join(clash)} given both as options and in encoder=; pass one")
        params = encoder.get_params()
        given = {**{k: params[k] for k in options.ENCODER_KEYS}, **given}
    return options.make(cls, {**given, **fixed})


def classifier_for(config) -> TextClassifier:
    """An unfitted ``TextClassifier`` with ``config``'s settings."""
    from bertfeat.steps import base_encoder

    return TextClassifier(head=config.head, features=config.features, encoder=base_encoder(config),
                          select=config.select, cv=config.cv, class_weight=config.class_weight,
                          tune_threshold=config.tune_threshold, seed=config.seed, cache_dir=config.cache_dir,
                          progress=config.progress)


def fit(train, test=None, *, head="logreg", features=None, encoder=None, **options_) -> TextClassifier:
    """Fit one head on frozen encoder vectors and score it on ``test`` (or a held-out share of ``train``).

    Parameters
    ----------
    train, test : path, DataFrame or (texts, labels)
        ``test=None`` holds out ``test_size`` (default 0.2) of ``train``, stratified.
    head : str, default="logreg"
    features : str or None, default=None
        A feature view (``mean+max``, ``cls@-2``); None: the one ``pooling``/``layers`` name.
    encoder : BertEncoder or None, default=None
    **options_
        ``bertfeat.options.FitConfig``'s fields: ``select``, ``cv``, ``class_weight``, ``seed``,
        ``cache_dir``, ``model``, ``pooling``, ``text_col``, ``label_col``, ``progress``, ...

    Returns
    -------
    TextClassifier
        Fitted; ``report_`` holds the test metrics and what was chosen; ``save(dir)`` writes the model
        folder ``bertfeat fit --out`` writes.
    """
    config = _config(options.FitConfig, options_, encoder, head=head, features=features)
    clf = run_fit(config, train, test)
    if config.track not in (None, False):
        from bertfeat.tracking import log_fit

        _tracked(lambda folder: log_fit(clf, clf.save(folder), config.track))
    return clf


def _tracked(log_to) -> None:
    """Call ``log_to(folder)`` on a new temporary folder: MLflow copies what it logs, the folder goes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bertfeat-track-") as tmp:
        log_to(os.path.join(tmp, "run"))


def run_fit(config: options.FitConfig, train, test=None) -> TextClassifier:
    from bertfeat.classify import evaluate
    from bertfeat.classify.heads import head_info
    from bertfeat.classify.metrics import SUMMARY
    from bertfeat.extract.cells import is_multi
    from bertfeat.inputs import labelled
    from bertfeat.steps import embedder, run_record

    info = head_info(config.head)  # an unknown head fails before any data is read
    clf = classifier_for(config)
    clf.view()
    train, test = labelled(train, test, config)
    encoders = clf._fresh_encoders()
    pair = train.pairs is not None
    texts = train.texts + test.texts
    pairs = train.pairs + test.pairs if pair else None
    columns = {"text_col": config.text_col, "label_col": config.label_col, "pair_col": config.pair_col,
               "label_sep": config.label_sep, "label_cols": config.label_cols}
    # one forward pass for train and test texts, committed to the cache
    if is_multi(train.labels):
        clf.check_multi()
    # multi-label: sgd fits one-vs-rest in memory like the other heads (its stream is one label per text)
    stream = info.streaming and not is_multi(train.labels)
    emb = embedder(config, encoders)(texts, pairs, progress=config.progress, load=not stream)
    n = len(train.texts)
    t0 = time.perf_counter()
    if stream:
        clf._fit_streaming(encoders, train.texts, train.pairs, train.labels, columns)
        fit_seconds = time.perf_counter() - t0
        pred = clf.predict(test.texts, test.pairs)
    else:
        X = np.hstack(emb.vectors)
        log.info("fitting %s on %d x %d", config.head, n, X.shape[1])
        clf.fit_vectors(X[:n], train.labels, encoders, pair, columns)
        fit_seconds = time.perf_counter() - t0
        pred = clf.head_.predict(X[n:])
    if clf.multi_label:
        metrics, keys = _multi_metrics(clf, X[n:], test.labels), MULTI_SUMMARY
    else:
        metrics, keys = evaluate(test.labels, pred), SUMMARY
    clf.embedding_ = emb
    summary = {"metrics": {k: metrics[k] for k in keys}, "fit_seconds": fit_seconds, "n_train": n,
               "n_test": len(test.texts), **clf.selection_}
    clf.run_ = run_record("fit", config, emb, summary)
    clf.report_ = {**metrics, **clf.selection_, "fit_seconds": round(fit_seconds, 3), "n_train": n,
                   "dims": sum(d or 0 for d in emb.dims),
                   "n_test": len(test.texts), "head": config.head, "features": clf.view(), "model": config.model,
                   "embedding": emb.summary()}
    return clf


MULTI_SUMMARY = ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "jaccard")


def _multi_metrics(clf, X_test, labels) -> dict:
    """A multi-label model's test figures (``classify/thresholds.py``) from the test vectors."""
    from bertfeat.classify.thresholds import evaluate_rows

    return evaluate_rows(labels, clf.classes_, clf.head_.predict(X_test), clf.head_.predict_proba(X_test),
                         clf.head_.thresholds)


def bench(train, test=None, **options_) -> BenchResult:
    """Compare heads and feature views by cross-validation on ``train``; score each on ``test``.

    With no ``heads``/``features`` it is the default bench: four views x five heads by successive halving
    and a soft vote, within a time budget. Options are ``bertfeat.options.BenchConfig``'s fields.

    Returns
    -------
    BenchResult
        ``.table`` (DataFrame), ``.best`` (fitted TextClassifier), ``.save(dir)``.
    """
    from bertfeat import benching
    from bertfeat.inputs import labelled

    config = _config(options.BenchConfig, options_)
    train_table, test_table = labelled(train, test, config)
    result = benching.run(config, train_table, test_table)
    if config.track not in (None, False) and result.best is not None:
        from bertfeat.tracking import log_bench

        _tracked(lambda folder: log_bench(result, result.save(folder), config.track))
    return result


def find_label_issues(train, **options_):
    """Training rows whose given label looks wrong, most likely first (confident learning on out-of-fold
    probabilities of one cheap head: ``head="logreg"`` on the ``mean`` vectors, ``cv=5`` folds).

    Parameters
    ----------
    train : path, DataFrame or (texts, labels)
    **options_
        ``bertfeat.options.LabelsConfig``'s fields: ``head``, ``features``, ``cv``, ``seed``, ``jobs``,
        ``cache_dir``, ``model``, ``text_col``, ``label_col``, ...

    Returns
    -------
    pandas.DataFrame
        Columns ``row`` (0-based data row in the file, header not counted; a DataFrame's position),
        ``text``, ``given``, ``suggested``, ``score`` (1 - the probability of the given label).
    """
    from bertfeat.inputs import table_of

    config = _config(options.LabelsConfig, options_)
    return run_labels(config, table_of(train, config, "train"))


def run_labels(config: options.LabelsConfig, train):
    from bertfeat.classify.heads import head_info
    from bertfeat.classify.label_issues import issue_frame
    from bertfeat.classify.selection import Candidate, Runner
    from bertfeat.classify.tuning import fold_count
    from bertfeat.steps import default_view, embed_views

    from bertfeat.inputs import require_single

    head_info(config.head)
    require_single(train, "labels (confident learning)")
    cv = fold_count(train.labels, config.cv, train.source)
    view = config.features or default_view(config)
    arrays, _, _ = embed_views(config, [view], train.texts, train.pairs)
    X = arrays[view]
    runner = Runner({view: (X, X[:0])}, train.labels, np.unique(np.asarray(train.labels)), cv, config.seed,
                    config.jobs)
    scored = runner.cross_validate([Candidate(config.head, view)])[0]
    log.info("%s on %s: %d-fold CV accuracy %.4f", config.head, view, cv, scored.cv["accuracy"])
    return issue_frame(runner.calibrated_oof(scored), train.labels, runner.classes, train.texts, data_rows(train))


def finetune(train, test=None, *, method="full", **options_) -> TextClassifier:
    """Fine-tune the encoder itself (``full``: encoder + linear layer; ``setfit``) and return the fitted model.

    The tuned encoder is written to a model folder (``out``, default ``runs/<time>-finetune-<method>``),
    which the returned classifier reads; a killed run resumes from its last epoch when called again.
    Options are ``bertfeat.options.FinetuneConfig``'s fields (``epochs``, ``lr``, ``out``, ...).
    """
    from bertfeat.finetuning import run_finetune
    from bertfeat.inputs import labelled

    out = options_.pop("out", None)
    config = _config(options.FinetuneConfig, options_, method=method)
    train_table, test_table = labelled(train, test, config)
    result = run_finetune(config, train_table, test_table, out)
    clf = load(result["model_dir"])
    clf.report_ = result
    return clf


def embed(texts_or_path, *, encoder=None, **options_) -> np.ndarray:
    """Vectors of texts (a list, or a file/folder/glob read with ``text_col``), through the cache.

    Returns a float32 array (n_texts, dim) in input order. Options are ``bertfeat.options.EmbedConfig``'s
    encoder and data fields (``model``, ``pooling``, ``layers``, ``cache_dir``, ``text_col``, ...).
    """
    import os

    from bertfeat.extract import read_table
    from bertfeat.extract.data import input_files
    from bertfeat.extract.encoder import split_inputs
    from bertfeat.steps import base_encoder, embedder

    config = _config(options.EmbedConfig, options_, encoder)
    if isinstance(texts_or_path, (str, os.PathLike)):
        table = read_table(input_files(os.fspath(texts_or_path)), config.text_col, None, config.pair_col,
                           config.encoding, config.drop_empty)
        texts, pairs = table.texts, table.pairs
    else:
        texts, pairs = split_inputs(texts_or_path)
    return embedder(config, [base_encoder(config)])(texts, pairs, progress=config.progress).vectors[0]


__all__ = ["BenchResult", "TextClassifier", "bench", "embed", "find_label_issues", "fit", "finetune", "load"]

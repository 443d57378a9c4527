"""``bertfeat.bench`` on multi-label data: views x heads cross-validated, each with per-label calibration and
thresholds chosen on out-of-fold probabilities (``classify/multibench.py``), the best by CV kept."""
from __future__ import annotations

import logging
import time

from bertfeat import options
from bertfeat.errors import ConfigError

log = logging.getLogger("bertfeat")


def select_of(config) -> str:
    """The selection metric for multi-label data: ``select`` when it names a multi-label one, else macro-F1."""
    from bertfeat.classify.thresholds import DEFAULT_SELECT, SELECT

    if config.select is None:
        return DEFAULT_SELECT
    if config.select not in SELECT:
        raise ConfigError(f"bad select={config.select!r} for multi-label data; expected one of {', '.join(SELECT)}")
    return config.select


def check_multi(config) -> None:
    """Options a multi-label bench cannot honour, refused before anything is embedded."""
    if config.samples_per_label:
        raise ConfigError("samples_per_label (the MTEB protocol) scores one label per text; it has no "
                          "multi-label form: drop it")
    if config.finetune or config.finetune_probe:  # None, the default, means off here
        raise ConfigError("finetune / finetune_probe fine-tune with one label per text; on multi-label data "
                          "bench compares frozen heads only: drop them")
    if config.class_weight or config.tune_threshold:
        raise ConfigError("class_weight and tune_threshold are single-label options; multi-label data gets "
                          "per-label thresholds chosen by CV instead")


def run_multi(config: options.BenchConfig, train, test, split: dict, views: dict, emb, t0: float, duplicates):
    """The multi-label bench on embedded views; ``split``: spec -> (X_train, X_test)."""
    from bertfeat.benching import BenchResult, _fitted
    from bertfeat.classify.multibench import DEFAULT_HEADS, run_multilabel
    from bertfeat.classify.multilabel import indicator, unseen
    from bertfeat.steps import list_option, run_record

    select = select_of(config)
    log.info("select: %s%s", select, " (the multi-label default)" if config.select is None else "")
    heads = list_option(config.heads, "heads") if config.heads else list(DEFAULT_HEADS)
    Y_train, classes = indicator(train.labels)
    missing = unseen(test.labels, classes)  # check_labels has said so; they count as misses

    def progress(r):
        log.info("%-7s %-12s cv %.4f  test macro-F1 %.4f  micro-F1 %.4f  (%.1f s)", r["head"], r["features"],
                 r["cv_score"], r["macro_f1"], r["micro_f1"], r["fit_seconds"])

    try:
        rows, (best_row, head, metrics, proba), info = run_multilabel(
            split, Y_train, test.labels, classes, heads, config.cv, config.seed, select, config.jobs, progress)
    except ValueError as exc:  # a head with no multi-label form
        raise ConfigError(str(exc)) from None
    info.pop("oof")
    seconds = time.perf_counter() - t0
    clf = _fitted(config, head, best_row["head"], best_row["features"], views[best_row["features"]],
                  train.pairs is not None)
    context = {"train": train.source, "test": test.source, "model": config.model, "n_train": len(train.texts),
               "n_test": len(test.texts), "cv": config.cv, "select": select, "task": "multi-label",
               "selection": info, "bench_seconds": seconds, "embedding": emb.summary(), "duplicates": duplicates,
               "unseen_test_labels": missing}
    summary = {"metrics": {k: metrics[k] for k in ("macro_f1", "micro_f1", "samples_f1")}, "bench": rows,
               "n_train": len(train.texts), "n_test": len(test.texts)}
    clf.run_ = run_record("bench", config, emb, summary)
    return BenchResult(clf, config, seconds, rows, dict(best_row), {**info, "task": "multi-label"}, emb.summary(),
                       _report={"metrics": metrics, "context": context, "probas": proba, "y_test": test.labels,
                                "texts": test.texts}, duplicates=duplicates)

"""The bench for many labels per text: heads on feature views, each cross-validated, calibrated per label
and given the decision rule (thresholds) its out-of-fold probabilities choose; the best by its nested CV
score is refit on the whole training set and scored once on the test set.

The single-label bench's successive halving and grids are not used here: each candidate is one
multi-output fit per fold (``classify/multilabel.py``), and the candidates are few.
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from bertfeat.classify.multilabel import MultiLabel, apply_platt, decide, multi_head, platt
from bertfeat.classify.thresholds import choose, evaluate_rows

# The multi-label default candidates (BENCHMARKS.md, "Multi-label"): on GoEmotions' training set (3-fold
# CV macro-F1, per-label thresholds) the linear sigmoid layer on the four-part view (0.4425) beat the
# one-hidden-layer net on it (0.4220, at 2.7x the time) and on `mean` (0.3834), and the neighbour vote
# (0.2702); the one-vs-rest heads cost a fit per label (28 logistic regressions a fold). Every view is a
# candidate: the linear layer costs seconds to a minute a fold.
DEFAULT_HEADS = ("torch",)
# Every figure a row reports, test set (``evaluate_multi``'s summary keys)
SUMMARY = ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "jaccard", "hamming_loss", "roc_auc",
           "micro_precision", "micro_recall", "macro_precision", "macro_recall", "samples_precision",
           "samples_recall", "cardinality", "predicted_cardinality")


def _fold_job(head: str, seed: int, X, Y, train_rows, test_rows):
    t0 = time.perf_counter()
    with _one_thread():  # one job per core
        proba = multi_head(head, seed).fit(X[train_rows], Y[train_rows]).predict_proba(X[test_rows])
    return proba, time.perf_counter() - t0


def _refit_job(head: str, seed: int, X, Y, X_test):
    with _one_thread():
        t0 = time.perf_counter()
        est = multi_head(head, seed).fit(X, Y)
        fit_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = est.predict_proba(X_test)
    return est, proba, fit_seconds, time.perf_counter() - t0


@contextlib.contextmanager
def _one_thread():
    """BLAS and torch at one thread for the job, restored after. torch's pool is not one threadpoolctl
    limits: a sigmoid net's small steps on two threads while another job runs took 9x as long as on one
    (GoEmotions, 29,000 x 1,536: 377 s vs 41 s)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _parallel(calls, n_jobs: int):
    if n_jobs == 1 or len(calls) == 1:
        return [fn(*args) for fn, args in calls]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(n_jobs, len(calls)))(delayed(fn)(*args) for fn, args in calls)


def folds_of(n_rows: int, cv: int, seed: int) -> list[np.ndarray]:
    """The rows of each fold (shuffled, seeded). Label sets have no one class to stratify by."""
    from sklearn.model_selection import KFold

    return [test for _, test in KFold(n_splits=cv, shuffle=True, random_state=seed).split(np.zeros(n_rows))]


def cross_validate(views: dict, Y, heads, cv: int, seed: int, select: str, n_jobs: int | None = None) -> list[dict]:
    """Every (head, view) candidate's out-of-fold probabilities, calibration and chosen rule, best first.

    ``views``: name -> training vectors. Returns dicts with ``head``, ``features``, ``oof`` (calibrated),
    ``calibration``, ``choice`` (``thresholds.choose``), ``cv_score``, ``cv_seconds``.
    """
    folds = folds_of(len(Y), cv, seed)
    todo = [(h, v) for v in views for h in heads]
    calls = [(_fold_job, (h, seed, views[v], Y, np.setdiff1d(np.arange(len(Y)), rows), rows))
             for h, v in todo for rows in folds]
    done = _parallel(calls, n_jobs or os.cpu_count() or 1)
    out = []
    for k, (h, v) in enumerate(todo):
        raw = np.zeros(Y.shape)
        seconds = 0.0
        for f, rows in enumerate(folds):
            proba, s = done[k * len(folds) + f]
            raw[rows], seconds = proba, seconds + s
        calibration = platt(raw, Y)
        oof = apply_platt(raw, calibration)
        choice = choose(oof, Y, folds, select)
        out.append({"head": h, "features": v, "oof": oof, "calibration": calibration, "choice": choice,
                    "cv_score": choice["cv_score"], "cv_seconds": seconds})
    return sorted(out, key=lambda c: -c["cv_score"])


def run_multilabel(views: dict, Y_train, test_labels, classes, heads=None, cv: int = 3, seed: int = 0,
                   select: str = "macro_f1", n_jobs: int | None = None, on_result=None):
    """``views``: name -> (X_train, X_test); ``Y_train`` the indicator matrix in ``classes`` order;
    ``test_labels`` one label tuple per test text.

    Returns (rows best-CV first, (best row, fitted ``MultiLabel``, test metrics, test probabilities), info).
    Every candidate is refit and scored on the test set, so the table compares them all; the best is
    chosen by CV only.
    """
    heads = list(heads or DEFAULT_HEADS)
    for h in heads:
        multi_head(h, seed)  # a head with no multi-label form fails before any fit
    scored = cross_validate({v: X for v, (X, _) in views.items()}, Y_train, heads, cv, seed, select, n_jobs)
    refits = _parallel([(_refit_job, (c["head"], seed, views[c["features"]][0], Y_train, views[c["features"]][1]))
                        for c in scored], n_jobs or os.cpu_count() or 1)
    rows, best = [], None
    for c, (est, proba_raw, fit_seconds, predict_seconds) in zip(scored, refits):
        head = MultiLabel(est, classes, c["calibration"], c["choice"]["thresholds"], c["choice"]["at_least_one"])
        proba = apply_platt(proba_raw, c["calibration"])
        metrics = evaluate_rows(test_labels, classes, decide(proba, head.thresholds, head.at_least_one), proba,
                                head.thresholds)
        row = {"head": c["head"], "features": c["features"], "cv_score": round(c["cv_score"], 6),
               **{k: metrics[k] for k in SUMMARY}, "rule": c["choice"]["rule"],
               "at_least_one": c["choice"]["at_least_one"], "fit_seconds": round(c["cv_seconds"] + fit_seconds, 2),
               "predict_seconds": round(predict_seconds, 3),
               "predict_ms_per_1k": round(1000 * predict_seconds / max(len(test_labels), 1) * 1000, 2),
               "params": {}}
        rows.append(row)
        if on_result:
            on_result(row)
        if best is None:
            best = (row, head, metrics, proba)
    info = {"select": select, "rules": scored[0]["choice"]["rules"], "candidates": len(scored),
            "oof": scored[0]["oof"]}
    return rows, best, info

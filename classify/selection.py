"""Choosing feature view x head (x a soft vote of several) by cross-validation on the training set only.

Every candidate (one head at one setting on one view) is fitted on each of ``cv`` folds and predicts the
rows it did not see: its out-of-fold (OOF) probabilities give its CV score, fit its temperature
(calibration.py) and feed the soft vote (ensemble.py). It is then refit on every training row and scores
the test set once, for the report; nothing here ever chooses by a test score.

Successive halving across candidates (``plan``): round 1 runs the cheap heads on every view; round 2 runs
the dearer heads only on the views that won round 1, as far as the budget allows (``predicted_cost``);
what is skipped is reported with the reason. Jobs (candidate x fold, and each refit) run in worker
processes; results are keyed by candidate and fold, never by finishing order, and ties are broken by a
fixed order (cheaper head, then name, then view), so two identical runs choose the same model.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from bertfeat.classify.calibration import label_index, scale, useful_temperature
from bertfeat.classify.heads import head_info

SCORES = ("accuracy", "macro_f1")
# The default bench's candidate views, all from one forward pass (BENCHMARKS.md, "Default views": the
# 5-fold CV on the training sets that put each one here).
DEFAULT_VIEWS = ("mean", "mean+max", "mean+max+mean@-2+mean@-3", "mean+mean@-2+mean@-3+mean@-4")
# One cost unit ~ a logistic-regression fit on 10,000 rows x 384 dims (Banking77: ~2 s on one core).
ROWS_UNIT, DIMS_UNIT = 10_000, 384


@dataclass(frozen=True)
class Candidate:
    head: str
    features: str
    params: tuple = ()  # ((name, value), ...) over the head's defaults

    @property
    def key(self) -> tuple:  # the fixed tie-break order
        return (head_info(self.head).cost, self.head, self.features, self.params)

    def make(self, seed: int, class_weight: str | None = None):
        from bertfeat.classify.heads import balanced

        head = head_info(self.head).make(seed).set_params(**dict(self.params))
        return balanced(self.head, head, seed) if class_weight == "balanced" else head


@dataclass
class Scored:
    candidate: Candidate
    oof: np.ndarray  # out-of-fold probabilities, (n_train, n_classes)
    cv: dict  # accuracy, macro_f1 of the OOF predictions
    cv_seconds: float
    temperature: float = 1.0
    extra: dict = field(default_factory=dict)


def predicted_cost(head: str, n_rows: int, dims: int) -> float:
    """Cost units of one fit: ``Head.cost`` x (rows / 10,000) ** ``Head.scaling`` x (dims / 384), the last
    factor only for a head whose cost grows with the width (``Head.per_dim``)."""
    info = head_info(head)
    width = dims / DIMS_UNIT if info.per_dim else 1.0
    return info.cost * (n_rows / ROWS_UNIT) ** info.scaling * width


def default_budget(n_rows: int) -> float:
    """Cost units the default bench may spend on round 2 (dearer heads), all folds included.

    Grows with the square root of the rows: a linear head costs more on more rows, and the kernel and
    neighbour heads (cost ~ rows squared) drop out first on large sets, where they would take hours. At
    10,000 rows, 60 units hold knn and svm on two views of 1,536 dims (56 units, all folds and refits);
    on SST-2's 67,349 rows (155 units) neither fits: knn alone took 387 of the 420 single-thread seconds
    of a run at 120.
    """
    return 60.0 * math.sqrt(max(n_rows, 1) / ROWS_UNIT)


def cv_score(y_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> dict:
    """Accuracy and macro-F1 in plain numpy (sklearn's f1_score costs ~7 ms a call at 77 classes, and a bench
    scores hundreds of folds): macro-F1 = mean of 2 TP / (predicted + true), 0 for an absent class."""
    tp = np.bincount(y_idx[pred_idx == y_idx], minlength=n_classes)
    both = np.bincount(pred_idx, minlength=n_classes) + np.bincount(y_idx, minlength=n_classes)
    return {"accuracy": float(np.mean(pred_idx == y_idx)),
            "macro_f1": float(np.mean(np.divide(2 * tp, both, out=np.zeros(n_classes), where=both > 0)))}


def _fold_job(candidate, X, y, train_rows, test_rows, seed, class_weight):
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(limits=1):  # one job per core: two multi-threaded jobs would fight over them
        head = candidate.make(seed, class_weight).fit(X[train_rows], y[train_rows])
        proba = head.predict_proba(X[test_rows])
    return proba, np.asarray(head.classes_), time.perf_counter() - t0


def _refit_job(candidate, X, y, X_test, seed, class_weight):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        t0 = time.perf_counter()
        head = candidate.make(seed, class_weight).fit(X, y)
        fit_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = head.predict_proba(X_test)
    return head, proba, fit_seconds, time.perf_counter() - t0


def _parallel(calls, n_jobs: int):
    """Run ``(fn, args)`` calls; results in the calls' order whatever order the workers finish in."""
    if n_jobs == 1 or len(calls) == 1:
        return [fn(*args) for fn, args in calls]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(n_jobs, len(calls)))(delayed(fn)(*args) for fn, args in calls)


class Runner:
    """Cross-validates and refits candidates on fixed folds; keeps every result for the report."""

    def __init__(self, views: dict, y_train, classes, cv: int, seed: int, n_jobs: int | None = None,
                 class_weight: str | None = None, on_scored=None):
        from sklearn.model_selection import StratifiedKFold

        self.views, self.y = views, np.asarray(y_train)
        self.classes = np.asarray(classes)
        self.y_idx = label_index(self.classes, self.y)
        self.folds = list(StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed).split(self.y, self.y))
        self.seed, self.class_weight = seed, class_weight
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.scored: dict[Candidate, Scored] = {}
        self._done: dict[Candidate, dict] = {}  # candidate -> fold -> (proba, classes, seconds)
        self.on_scored = on_scored

    def cross_validate(self, candidates: list[Candidate], fold_ids=None) -> list[Scored]:
        """OOF probabilities on the folds ``fold_ids`` (default: all) that a candidate has not done yet;
        its CV score covers the rows of every fold it has done."""
        fold_ids = list(range(len(self.folds))) if fold_ids is None else list(fold_ids)
        todo = [(c, f) for c in candidates for f in fold_ids if f not in self._done.get(c, {})]
        calls = [(_fold_job, (c, self.views[c.features][0], self.y, *self.folds[f], self.seed, self.class_weight))
                 for c, f in todo]
        # dearest first, so the workers finish together
        order = sorted(range(len(calls)), key=lambda i: -head_info(todo[i][0].head).cost)
        done = dict(zip(order, _parallel([calls[i] for i in order], self.n_jobs)))
        for i, (cand, f) in enumerate(todo):
            self._done.setdefault(cand, {})[f] = done[i]
        for cand in dict.fromkeys(candidates):
            oof = np.zeros((len(self.y), len(self.classes)))
            rows, seconds, per_fold = [], 0.0, []
            for f, (proba, head_classes, s) in sorted(self._done[cand].items()):
                te = self.folds[f][1]
                oof[np.ix_(te, label_index(self.classes, head_classes))] = proba
                rows.append(te)
                per_fold.append(cv_score(self.y_idx[te], oof[te].argmax(1), len(self.classes)))
                seconds += s
            rows = np.sort(np.concatenate(rows))
            full = len(self._done[cand]) == len(self.folds)
            # the spread over folds, for the report (one fold has none)
            spread = {f"cv_std_{k}": float(np.std([p[k] for p in per_fold])) if len(per_fold) > 1 else None
                      for k in SCORES}
            scored = Scored(cand, oof, cv_score(self.y_idx[rows], oof[rows].argmax(1), len(self.classes)), seconds,
                            useful_temperature(oof[rows], self.y_idx[rows]),
                            {"cv_folds": len(self._done[cand]), **spread})
            self.scored[cand] = scored
            if full and self.on_scored:
                self.on_scored(scored)
        return [self.scored[c] for c in candidates]

    def complete(self, s: Scored) -> bool:
        return s.extra["cv_folds"] == len(self.folds)

    def refit(self, candidates: list[Candidate]) -> list[tuple]:
        calls = [(_refit_job, (c, self.views[c.features][0], self.y, self.views[c.features][1], self.seed,
                               self.class_weight)) for c in candidates]
        order = sorted(range(len(calls)), key=lambda i: -head_info(candidates[i].head).cost)
        done = dict(zip(order, _parallel([calls[i] for i in order], self.n_jobs)))
        return [done[i] for i in range(len(calls))]

    def ranked(self, select: str) -> list[Scored]:
        """Fully cross-validated candidates, best CV ``select`` score first; ties in the fixed candidate order."""
        full = [s for s in self.scored.values() if self.complete(s)]
        return sorted(full, key=lambda s: (-round(s.cv[select], 10), s.candidate.key))

    def calibrated_oof(self, s: Scored) -> np.ndarray:
        return scale(s.oof, s.temperature)


def grid_points(head: str, tune: bool) -> list[tuple]:
    """Every setting of the head's grid (or only its defaults)."""
    from itertools import product

    grid = head_info(head).grid if tune else {}
    names = sorted(grid)
    return [tuple(zip(names, values)) for values in product(*(grid[n] for n in names))] or [()]


def _cheap(head: str) -> bool:
    """Round 1 material: at most a logistic regression's cost, growing no faster than the rows."""
    return head_info(head).cost <= 1 and head_info(head).scaling <= 1


def plan(views: list[str], heads: list[str], n_rows: int, dims: dict, tune: bool, budget: float | None,
         n_folds: int, screen_scores=None):
    """Successive halving across candidates, folds as the resource.

    Round 1 (``screen_scores`` None): the cheap heads (``_cheap``) on every view, on the first fold
    only. Round 2 (given round 1's best score per view): on the better half of the views, the cheap heads'
    other folds and the dearer heads on every fold, best view first, cheaper head first, while the predicted
    cost (all folds and the refit) fits ``budget``. Returns (candidates, skipped [(candidate, why)]).
    """
    cheap = [h for h in heads if _cheap(h)]
    dear = sorted((h for h in heads if not _cheap(h)), key=lambda h: (head_info(h).cost, h))
    if screen_scores is None:
        return [Candidate(h, v, p) for v in views for h in cheap for p in grid_points(h, tune)], []
    budget = default_budget(n_rows) if budget is None else budget
    keep = max(1, math.ceil(len(views) / 2))  # halving: the better half of the views survive
    by_score = sorted(views, key=lambda v: (-screen_scores[v], views.index(v)))
    survivors, losers = by_score[:keep], by_score[keep:]
    run = [Candidate(h, v, p) for v in survivors for h in cheap for p in grid_points(h, tune)]
    skipped, spent = [], 0.0
    for view in survivors:
        for h in dear:
            for p in grid_points(h, tune):
                cost = predicted_cost(h, n_rows, dims[view]) * (n_folds + 1)
                if spent + cost > budget:
                    skipped.append((Candidate(h, view, p), f"predicted cost {cost:.0f} units (all folds and the "
                                                           f"refit) over the budget left, {max(budget - spent, 0):.0f}"
                                                           f" of {budget:.0f}"))
                    continue
                spent += cost
                run.append(Candidate(h, view, p))
    for view in losers:
        for h in heads:
            skipped.append((Candidate(h, view), "view not in the better half after round 1 (first fold only)"
                            if _cheap(h) else "view not in the better half after round 1"))
    return run, skipped

"""A weighted soft vote of heads that may each read a different feature view.

Members are chosen by greedy forward selection with replacement (Caruana et al., 2004) on the members'
temperature-scaled *out-of-fold* probabilities of the training set: start empty, add the member that
most raises the vote's CV score (the --select metric, ties broken by log loss), repeat 20 times. The vote's
own cross-validation score is estimated *nested*: for each fold,
the weights are chosen on the other folds' rows and scored on this fold's, so the rows that score the
weights never chose them.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from bertfeat.classify.calibration import log_loss

STEPS = 20  # greedy additions: weights in steps of 1/20


def _objective(proba: np.ndarray, y: np.ndarray, metric: str) -> float:
    """The vote's ``metric`` on these rows, less a hundredth of its log loss: accuracy moves in steps of one
    row, and the log loss breaks its ties towards the surer, better calibrated mix."""
    pred = proba.argmax(1)
    if metric == "macro_f1":
        from sklearn.metrics import f1_score

        score = f1_score(y, pred, labels=np.arange(proba.shape[1]), average="macro", zero_division=0)
    else:
        score = np.mean(pred == y)
    return float(score) - 0.01 * log_loss(proba, y)


def greedy_weights(probas: list[np.ndarray], y_idx: np.ndarray, rows: np.ndarray | None = None,
                   steps: int = STEPS, metric: str = "accuracy") -> np.ndarray:
    """Weights (summing to 1) of the greedy soft vote that maximizes ``_objective`` on ``rows``.

    Ties go to the earlier member, so the same inputs always give the same weights.
    """
    rows = np.arange(len(y_idx)) if rows is None else rows
    parts = [p[rows] for p in probas]
    y = y_idx[rows]
    total, counts = np.zeros_like(parts[0]), np.zeros(len(parts))
    for step in range(1, steps + 1):
        scores = [_objective((total + p) / step, y, metric) for p in parts]
        pick = int(np.argmax(scores))
        total += parts[pick]
        counts[pick] += 1
    return counts / steps


def vote(probas: list[np.ndarray], weights) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probas) if w)


def nested_predictions(probas: list[np.ndarray], y_idx: np.ndarray, folds, metric: str = "accuracy"):
    """Out-of-fold class indexes of the greedy vote, its weights chosen without the scored fold's rows."""
    pred = np.empty(len(y_idx), dtype=int)
    chosen = []
    for train_rows, test_rows in folds:
        w = greedy_weights(probas, y_idx, train_rows, metric=metric)
        chosen.append(w)
        pred[test_rows] = vote([p[test_rows] for p in probas], w).argmax(1)
    return pred, chosen


class Columns(TransformerMixin, BaseEstimator):
    """Selects column ranges ``[(start, stop), ...]``: a member's own view out of the vote's wider one."""

    def __init__(self, ranges=()):
        self.ranges = ranges

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X):
        X = np.asarray(X)
        return np.hstack([X[:, a:b] for a, b in self.ranges])


class SoftVote(ClassifierMixin, BaseEstimator):
    """Weighted average of the members' ``predict_proba``; members must share ``classes_``.

    Parameters
    ----------
    estimators : list of (name, classifier)
    weights : list of float
    """

    def __init__(self, estimators=(), weights=()):
        self.estimators = estimators
        self.weights = weights

    @classmethod
    def from_fitted(cls, estimators, weights) -> "SoftVote":
        out = cls(list(estimators), [float(w) for w in weights])
        out.estimators_ = [est for _, est in out.estimators]
        out.classes_ = out.estimators_[0].classes_
        return out

    def fit(self, X, y):
        self.estimators_ = [clone(est).fit(X, y) for _, est in self.estimators]
        self.classes_ = self.estimators_[0].classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        return vote([est.predict_proba(X) for est in self.estimators_], self.weights)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


def view_parts(spec: str) -> list[str]:
    return [p.strip() for p in spec.split("+")]


def union_view(specs: list[str]) -> str:
    """The feature view holding every part of ``specs`` once, in first-seen order: ``mean+max+mean@-2``."""
    parts: list[str] = []
    for spec in specs:
        parts += [p for p in view_parts(spec) if p not in parts]
    return "+".join(parts)


def column_ranges(spec: str, union: str, part_dims: dict) -> list[tuple[int, int]]:
    """Where ``spec``'s parts sit in the ``union`` view's columns."""
    starts, at = {}, 0
    for part in view_parts(union):
        starts[part] = at
        at += part_dims[part]
    return [(starts[p], starts[p] + part_dims[p]) for p in view_parts(spec)]

"""Honest probabilities: log loss, expected calibration error, and temperature scaling.

Temperature scaling (Guo et al., 2017) divides a head's log-probabilities by one number ``T`` fitted on
*out-of-fold* probabilities of the training set (never on the test set), then renormalizes. One parameter:
it cannot overfit, and it never changes which class wins (accuracy and macro-F1 stay the same), only how
sure the head says it is. The SVM's softmax over decision values is the head that needs it most.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

ECE_BINS = 15
EPS = 1e-12


def label_index(classes, y) -> np.ndarray:
    """Positions of ``y``'s labels in ``classes`` (-1 for a label the head never saw)."""
    classes = np.asarray(classes)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    return np.asarray([lookup.get(v, -1) for v in np.asarray(y).tolist()])


def log_loss(proba: np.ndarray, y_idx: np.ndarray) -> float:
    """Mean negative log-probability of the true class (a class the head never saw counts as ``EPS``)."""
    p = np.where(y_idx >= 0, proba[np.arange(len(y_idx)), np.maximum(y_idx, 0)], 0.0)
    return float(-np.log(np.clip(p, EPS, 1)).mean())


def ece(proba: np.ndarray, y_idx: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-label confidence, in ``bins`` equal-width bins.

    The gap between mean confidence and accuracy in each bin, weighted by the bin's share of rows.
    """
    conf, correct = proba.max(1), (proba.argmax(1) == y_idx)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        rows = which == b
        total += rows.mean() * abs(conf[rows].mean() - correct[rows].mean())
    return float(total)


def reliability(proba: np.ndarray, y_idx: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per bin: mean confidence, accuracy and row count (the points of a reliability diagram)."""
    conf, correct = proba.max(1), (proba.argmax(1) == y_idx)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out = {"confidence": [], "accuracy": [], "count": [], "bins": bins}
    for b in range(bins):
        rows = which == b
        if rows.any():
            out["confidence"].append(float(conf[rows].mean()))
            out["accuracy"].append(float(correct[rows].mean()))
            out["count"].append(int(rows.sum()))
    return out


def scale(proba: np.ndarray, temperature: float, offsets=None) -> np.ndarray:
    """softmax(log(proba) / T + offsets): T > 1 softens over-confident probabilities, T < 1 sharpens."""
    logits = np.log(np.clip(proba, EPS, 1)) / temperature
    if offsets is not None:
        logits = logits + offsets
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def fit_temperature(proba: np.ndarray, y_idx: np.ndarray) -> float:
    """The T in [0.05, 20] that minimizes the log loss of ``scale(proba, T)`` (out-of-fold probabilities)."""
    from scipy.optimize import minimize_scalar

    known = y_idx >= 0
    proba, y_idx = proba[known], y_idx[known]
    res = minimize_scalar(lambda log_t: log_loss(scale(proba, float(np.exp(log_t))), y_idx),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def threshold_offsets(threshold: float) -> np.ndarray:
    """Log-odds offsets that move a binary head's decision from p1 >= 0.5 to p1 >= ``threshold``, so the
    arg-max of the shifted probabilities is the thresholded decision (as every head's ``predict`` must be)."""
    return np.asarray([0.0, -float(np.log(threshold / (1 - threshold)))])


def useful_temperature(proba: np.ndarray, y_idx: np.ndarray) -> float:
    """``fit_temperature``'s T if it lowers the ECE of these (out-of-fold) probabilities, else 1.

    A head whose probabilities are mostly exactly 0 or 1 (k nearest neighbours) gets a large T from the
    log loss of its few sure mistakes, which then blurs its many sure hits: ECE rises, so it keeps T = 1.
    """
    t = fit_temperature(proba, y_idx)
    known = y_idx >= 0
    return t if ece(scale(proba[known], t), y_idx[known]) < ece(proba[known], y_idx[known]) else 1.0


class Calibrated(ClassifierMixin, BaseEstimator):
    """A head whose probabilities are ``softmax(log(head.predict_proba(X)) / temperature + offsets)``.

    Parameters
    ----------
    estimator : classifier
        Fitted by ``fit`` (a clone), or already fitted and passed to ``from_fitted``.
    temperature : float, default=1.0
        From ``fit_temperature`` on out-of-fold probabilities.
    offsets : array of shape (n_classes,) or None, default=None
        Per-class log-odds offsets: a binary decision threshold tuned by CV (``threshold_offsets``).
    """

    def __init__(self, estimator=None, temperature=1.0, offsets=None):
        self.estimator = estimator
        self.temperature = temperature
        self.offsets = offsets

    @classmethod
    def from_fitted(cls, estimator, temperature: float, offsets=None) -> "Calibrated":
        out = cls(estimator, temperature, offsets)
        out._set_state(estimator)
        return out

    def _set_state(self, estimator):
        self.estimator_, self.temperature_, self.classes_ = estimator, float(self.temperature), estimator.classes_
        self.offsets_ = np.zeros(len(self.classes_)) if self.offsets is None else np.asarray(self.offsets, float)

    def fit(self, X, y):
        from sklearn.base import clone

        self._set_state(clone(self.estimator).fit(X, y))
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return scale(self.estimator_.predict_proba(X), self.temperature_, self.offsets_)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

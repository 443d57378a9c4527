"""Many labels per text: heads that give every label its own probability, calibrated per label, with
thresholds chosen on out-of-fold probabilities.

The vectors are the same as for one label per text; what changes is the head and the decision. A
multi-label head here is any estimator whose ``predict_proba`` returns one probability per label
(rows x labels): ``OneVsRest`` (one binary head per label on the shared vectors), ``SigmoidNet`` (natively
multi-output: one network, one sigmoid per label), ``NeighbourLabels``, or ``LabelVote`` (their mean).
``MultiLabel`` wraps a fitted one with what cross-validation chose: a Platt scaling per label and the
thresholds (``thresholds.py``).
Labels are the columns of an indicator matrix ``Y`` (rows x labels, 0/1), in ``classes_`` order.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

EPS = 1e-6


def indicator(rows, classes=None) -> tuple[np.ndarray, list]:
    """Label tuples (one per text) -> (Y, classes): Y[i, j] = 1 when text i has label ``classes[j]``
    (``classes`` a plain list: a model folder stores it as such, without pickle).

    ``classes`` None: every label seen, sorted. A label outside given ``classes`` is ignored (a test
    label the model never learned: it can only be missed, and ``unseen`` counts it).
    """
    if classes is None:
        classes = sorted({lab for row in rows for lab in row}, key=str)
    classes = [c.item() if isinstance(c, np.generic) else c for c in classes]
    where = {c: j for j, c in enumerate(classes)}
    Y = np.zeros((len(rows), len(where)), dtype=np.int8)
    for i, row in enumerate(rows):
        for lab in row:
            j = where.get(lab)
            if j is not None:
                Y[i, j] = 1
    return Y, classes


def unseen(rows, classes) -> dict:
    """Labels of ``rows`` absent from ``classes``, with their counts (reported, never fatal)."""
    known = set(np.asarray(classes).tolist())
    out: dict = {}
    for row in rows:
        for lab in row:
            if lab not in known:
                out[lab] = out.get(lab, 0) + 1
    return out


class OneVsRest(BaseEstimator):
    """One binary head per label, fitted on the shared vectors.

    A label that every training row has, or none has, gets no head: its probability is that constant
    (``prior_``), so a rare label missing from a cross-validation fold is still scored, never dropped.

    Parameters
    ----------
    estimator : classifier
        A binary classifier with ``predict_proba`` (cloned for every label).
    """

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, Y):
        Y = np.asarray(Y)
        self.prior_ = Y.mean(0).astype(np.float64)
        self.estimators_ = [clone(self.estimator).fit(X, Y[:, j]) if 0 < self.prior_[j] < 1 else None
                            for j in range(Y.shape[1])]
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        out = np.tile(self.prior_, (len(X), 1))
        for j, est in enumerate(self.estimators_):
            if est is not None:
                out[:, j] = est.predict_proba(X)[:, list(est.classes_).index(1)]
        return out


class SigmoidNet(BaseEstimator):
    """One sigmoid output per label on standardized vectors, trained with binary cross-entropy (AdamW,
    one-cycle schedule, a fixed number of epochs); ``hidden=0`` is a linear layer (``torch``), otherwise
    one hidden GELU layer with dropout (``mlp``). Trained with torch, kept as arrays: it predicts without
    torch and saves without pickle.

    Parameters
    ----------
    hidden : int, default=0
    dropout : float, default=0.2
    lr : float, default=3e-3
    weight_decay : float, default=1e-4
    epochs : int, default=20
    min_steps : int, default=500
        More epochs on a small training set, so it still gets this many optimizer steps.
    batch_size : int, default=256
    random_state : int, default=0
    """

    def __init__(self, hidden=0, dropout=0.2, lr=3e-3, weight_decay=1e-4, epochs=20, min_steps=500, batch_size=256,
                 random_state=0):
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X, Y):
        import torch
        from torch import nn

        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-6
        Xt, Yt = torch.from_numpy((X - self.mean_) / self.scale_), torch.from_numpy(Y)
        torch.manual_seed(self.random_state)
        gen = torch.Generator().manual_seed(self.random_state)
        layers = [nn.Dropout(self.dropout)]
        if self.hidden:
            layers += [nn.Linear(X.shape[1], self.hidden), nn.GELU(), nn.Dropout(self.dropout)]
        net = nn.Sequential(*layers, nn.Linear(self.hidden or X.shape[1], Y.shape[1]))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        per_epoch = -(-len(X) // self.batch_size)
        epochs = max(self.epochs, -(-self.min_steps // per_epoch))
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=epochs * per_epoch)
        loss_fn = nn.BCEWithLogitsLoss()
        net.train()
        for _ in range(epochs):
            for rows in torch.randperm(len(X), generator=gen).split(self.batch_size):
                opt.zero_grad()
                loss_fn(net(Xt[rows]), Yt[rows]).backward()
                opt.step()
                schedule.step()
        linears = [m for m in net if isinstance(m, nn.Linear)]
        self.coefs_ = [m.weight.detach().numpy().T.copy() for m in linears]
        self.intercepts_ = [m.bias.detach().numpy().copy() for m in linears]
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        h = (np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_
        for k, (W, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            h = h @ W + b
            if k < len(self.coefs_) - 1:  # GELU, tanh form (torch's erf form differs by < 1e-3)
                h = 0.5 * h * (1 + np.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))
        return h

    def predict_proba(self, X) -> np.ndarray:
        return 1 / (1 + np.exp(-np.clip(self.decision_function(X), -30, 30)))


class NeighbourLabels(BaseEstimator):
    """k nearest neighbours by cosine similarity: a label's probability is the similarity-weighted share
    of the neighbours that have it (natively multi-output, one search for all labels).

    Parameters
    ----------
    n_neighbors : int, default=25
    """

    def __init__(self, n_neighbors=25):
        self.n_neighbors = n_neighbors

    def fit(self, X, Y):
        X = np.asarray(X, dtype=np.float32)
        self.vectors_ = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), EPS)
        self.labels_ = np.asarray(Y, dtype=np.int8)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "vectors_")
        X = np.asarray(X, dtype=np.float32)
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), EPS)
        k = min(self.n_neighbors, len(self.vectors_))
        out = np.empty((len(X), self.labels_.shape[1]))
        for start in range(0, len(X), 1024):  # rows x training rows similarities, a block at a time
            sim = X[start:start + 1024] @ self.vectors_.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            w = np.maximum(np.take_along_axis(sim, top, 1), 0) + EPS
            out[start:start + 1024] = np.einsum("nk,nkl->nl", w, self.labels_[top]) / w.sum(1, keepdims=True)
        return out


class LabelVote(BaseEstimator):
    """The multi-label ``vote``: the mean of its members' per-label probabilities (each member a
    multi-label head fitted on the same vectors: one-vs-rest logistic regression and RBF SVM, as the
    single-label vote's members).

    Parameters
    ----------
    estimators : list of multi-label heads
    """

    def __init__(self, estimators=()):
        self.estimators = estimators

    def fit(self, X, Y):
        self.estimators_ = [clone(e).fit(X, Y) for e in self.estimators]
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        return np.mean([e.predict_proba(X) for e in self.estimators_], axis=0)


def platt(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per label (a, b) such that sigmoid(a * logit(p) + b) is calibrated on out-of-fold ``P``.

    A slope is kept positive, so calibration never reorders texts (a label's threshold and ranking
    survive it); a label with one class only keeps (1, 0).
    """
    from sklearn.linear_model import LogisticRegression

    out = np.tile([1.0, 0.0], (P.shape[1], 1))
    z = _logit(P)
    for j in range(P.shape[1]):
        if 0 < Y[:, j].sum() < len(Y):
            lr = LogisticRegression(C=1e4).fit(z[:, j:j + 1], Y[:, j])
            out[j] = [max(float(lr.coef_[0, 0]), 1e-3), float(lr.intercept_[0])]
    return out


def apply_platt(P: np.ndarray, ab: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(ab[:, 0] * _logit(P) + ab[:, 1], -30, 30)))


def _logit(P: np.ndarray) -> np.ndarray:
    P = np.clip(P, EPS, 1 - EPS)
    return np.log(P / (1 - P))


def decide(P: np.ndarray, thresholds, at_least_one: bool) -> np.ndarray:
    """Labels on (bool rows x labels): probability >= the label's threshold; with ``at_least_one`` a text
    that clears none gets its most probable label (every training text had a label)."""
    D = P >= np.asarray(thresholds)
    if at_least_one and len(D):
        none = ~D.any(1)
        D[none, P[none].argmax(1)] = True
    return D


class MultiLabel(BaseEstimator):
    """A fitted multi-label head with the calibration and thresholds cross-validation chose for it.

    ``predict_proba``: calibrated per-label probabilities (rows x labels, ``classes_`` order);
    ``predict``: the 0/1 indicator of the labels each text gets.

    Parameters
    ----------
    estimator : fitted OneVsRest, SigmoidNet or NeighbourLabels
    classes : array of labels
    calibration : array (labels x 2) of Platt (a, b)
    thresholds : array (labels,)
    at_least_one : bool
    """

    def __init__(self, estimator=None, classes=(), calibration=None, thresholds=None, at_least_one=False):
        self.estimator = estimator
        self.classes = classes
        self.calibration = calibration
        self.thresholds = thresholds
        self.at_least_one = at_least_one

    @property
    def classes_(self):
        return np.asarray(self.classes, dtype=object)

    def fit(self, X, Y):
        self.estimator = clone(self.estimator).fit(X, Y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        P = self.estimator.predict_proba(X)
        return apply_platt(P, np.asarray(self.calibration)) if self.calibration is not None else P

    def predict(self, X) -> np.ndarray:
        return decide(self.predict_proba(X), self.thresholds, self.at_least_one).astype(np.int8)


def multi_head(name: str, seed: int = 0):
    """The multi-label form of registry head ``name``; a head that has none raises ``ValueError``."""
    from bertfeat.classify.heads import head_info

    native = {"torch": lambda: SigmoidNet(hidden=0, random_state=seed),
              "mlp": lambda: SigmoidNet(hidden=512, lr=1e-3, weight_decay=1e-2, random_state=seed),
              "knn": lambda: NeighbourLabels()}
    if name in native:
        return native[name]()
    if name == "vote":  # the single-label vote's members, each one-vs-rest
        from bertfeat.classify.heads import logreg, svm

        return LabelVote([OneVsRest(logreg(seed)), OneVsRest(svm(seed, components=None))])
    return OneVsRest(head_info(name).make(seed))

"""The head registry: name -> factory of a scikit-learn-compatible classifier.

Callers use only ``fit``, ``predict``, ``predict_proba`` and ``classes_``; a head that needs scaled
features carries its own scaler in a Pipeline, so nobody branches on a head's type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from bertfeat.errors import BertfeatError


def logreg(seed: int = 0):
    """Multinomial logistic regression; C=10 suits L2-normalized sentence vectors (weak regularization)."""
    return LogisticRegression(C=10.0, max_iter=2000, random_state=seed)


class ShrunkLDA(LinearDiscriminantAnalysis):
    """Linear discriminant analysis whose fitted state is only what prediction reads.

    The shared covariance (dims x dims: 19 MB on a 1,536-dim view) is needed to solve for the
    coefficients and never again, so it is not kept, nor saved in a model folder.
    """

    def fit(self, X, y):
        super().fit(X, y)
        self.__dict__.pop("covariance_", None)
        return self


def lda(seed: int = 0):
    """Linear discriminant analysis: one covariance shared by all classes, shrunk towards a diagonal by
    the Ledoit-Wolf formula (no search).

    A generative linear model that errs where the discriminative heads do not: alone it trails logistic
    regression on Banking77 (3-fold CV 0.9003 vs 0.9239 on ``mean+mean@-2+mean@-3+mean@-4``) but beats
    it and the SVM on TREC (0.9032 vs 0.8789 and 0.8991), and in the default vote it lifted TREC's nested
    CV by 0.7 points (BENCHMARKS.md, "Why these views"). Its raw probabilities are over-confident (fitted
    temperature ~3-4), which the bench's temperature scaling undoes.
    """
    return ShrunkLDA(solver="lsqr", shrinkage="auto")


class TopComponents(PCA):
    """PCA that keeps at most ``n_components``, fewer when the data has fewer rows or columns."""

    def fit_transform(self, X, y=None):
        wanted = self.n_components
        self.n_components = min(wanted, X.shape[0] - 1, X.shape[1])
        try:
            return super().fit_transform(X, y)
        finally:
            self.n_components = wanted

    def fit(self, X, y=None):
        self.fit_transform(X, y)
        return self


def lgbm(seed: int = 0):
    """Gradient-boosted trees on the top 64 principal components, few bins, half the columns per tree.

    Trees split one coordinate at a time, and the leading principal components carry most of what a
    sentence vector says; the rest mostly costs histogram time. With many classes (one tree per class
    per round) that matters: see BENCHMARKS.md for Banking77 against LightGBM's defaults. With 77
    classes, unregularized leaves sometimes blew up and a fit collapsed to ~0.2 accuracy (row bagging,
    learning rates above 0.1, and 1 fold in 3 at the defaults): an L2 penalty on leaf values and a
    minimum leaf hessian prevent that. 100 rounds: on Banking77, 150 gain 0.3 points for half again the
    fit time (each round grows one tree per class). One thread: OpenMP threads spin-wait, and two of them next to
    another busy process (bench runs two jobs on two cores) made fits ten times slower.
    """
    try:
        from lightgbm import LGBMClassifier
    except ImportError:
        raise BertfeatError("head 'lgbm' needs LightGBM: pip install lightgbm") from None
    return make_pipeline(TopComponents(n_components=64, random_state=seed),
                         LGBMClassifier(n_estimators=100, learning_rate=0.1, num_leaves=15, max_bin=63,
                                        colsample_bytree=0.5, reg_lambda=1.0, min_child_weight=0.01,
                                        n_jobs=1, random_state=seed, verbose=-1))


def can_hold_out(y, fraction: float) -> bool:
    """Whether a stratified validation split of ``fraction`` of the rows can hold every class and still leave
    every class in training (scikit-learn raises otherwise): about ten rows per class are needed."""
    _, counts = np.unique(np.asarray(y), return_counts=True)
    n_val = math.ceil(fraction * counts.sum())
    return counts.min() >= 2 and len(counts) <= n_val <= counts.sum() - len(counts)


class FewRowsMLP(MLPClassifier):
    """MLPClassifier that trains without early stopping when the training set is too small for a
    validation split of every class, where scikit-learn would raise."""

    def fit(self, X, y):
        wanted = self.early_stopping
        self.early_stopping = wanted and can_hold_out(y, self.validation_fraction)
        try:
            return super().fit(X, y)
        finally:
            self.early_stopping = wanted


class FewRowsKNN(KNeighborsClassifier):
    """k nearest neighbours that consults at most as many neighbours as there are training rows (a small
    training set, or a small cross-validation fold), where scikit-learn would raise."""

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        if n_neighbors is None:  # X None: the training rows themselves, each without itself
            n_neighbors = min(self.n_neighbors, self.n_samples_fit_ - (X is None))
        return super().kneighbors(X, n_neighbors, return_distance)


def mlp(seed: int = 0):
    """One hidden layer with early stopping on a 10 % validation split (none on a tiny training set)."""
    return FewRowsMLP(hidden_layer_sizes=(512,), alpha=1e-4, early_stopping=True, n_iter_no_change=10,
                         max_iter=300, random_state=seed)


def knn(seed: int = 0):
    """k nearest neighbours by cosine similarity, closer neighbours weighing more (at most as many as rows)."""
    return FewRowsKNN(n_neighbors=10, metric="cosine", weights="distance", algorithm="brute")


class SoftmaxSVC(SVC):
    """RBF SVC whose probabilities are a softmax over its one-vs-rest decision values.

    One kernel fit, no extra cross-validation: scikit-learn's calibrated alternatives refit the SVM
    several times, which on Banking77 cost minutes and (sigmoid per class over 77 classes) ~4 points
    of accuracy. ``predict`` is the arg-max of ``predict_proba``, as every head's must be. The
    probabilities rank classes well but are not calibrated.

    Decision values come from BLAS instead of libsvm: libsvm evaluates the kernel one support vector
    at a time, ~1 s per 1,000 texts on Banking77 (8,000 support vectors), which made prediction (and
    so every cross-validation fold's scoring) dearer than fitting; the matrix form is ~10x faster and
    agrees with libsvm to ~1e-9.
    """

    def decision_function(self, X):
        if self.kernel != "rbf" or self._sparse:
            return super().decision_function(X)
        X = self._validate_for_predict(X)
        sv, coef = self.support_vectors_, self.dual_coef_
        starts = np.concatenate([[0], np.cumsum(self.n_support_)])
        n_classes = len(self.classes_)
        first, second = np.triu_indices(n_classes, 1)  # libsvm's one-vs-one pair order
        sv_norms = (sv ** 2).sum(1)
        out = []
        # Blocks of at most 256 rows: the rows x support-vectors block stays in cache and is reused in
        # place (fresh 100 MB temporaries cost more in page faults than the arithmetic); fewer rows with
        # many classes, so the rows x classes x classes array of pair terms stays within ~256 MB.
        block = max(1, min(256, (32 << 20) // (n_classes * n_classes)))
        for rows in np.array_split(X, max(1, -(-len(X) // block))):
            kernel = rows @ sv.T
            kernel *= -2
            kernel += (rows ** 2).sum(1)[:, None]
            kernel += sv_norms[None]
            np.maximum(kernel, 0, out=kernel)
            kernel *= -self._gamma
            np.exp(kernel, out=kernel)
            # Per class: its support vectors' kernel values times their coefficients in every pair.
            part = np.stack([kernel[:, a:b] @ coef[:, a:b].T for a, b in zip(starts[:-1], starts[1:])], axis=1)
            out.append(part[:, first, second - 1] + part[:, second, first] + self.intercept_)
        dec = np.concatenate(out)
        return dec.ravel() if n_classes == 2 else _ovr_scores(dec, first, second, n_classes)

    def predict_proba(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:  # binary: one signed margin
            scores = np.column_stack([-scores, scores])
        scores = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]


def _ovr_scores(dec, first, second, n_classes: int):
    """One-vs-one decision values -> one score per class, as scikit-learn's SVC reports them: the votes
    won, plus summed margins squashed into (-1/3, 1/3) to break ties without overturning a vote."""
    from scipy.sparse import csr_matrix

    pairs = np.arange(len(first))
    ones = np.ones(len(first))
    # pairs x classes indicators, sparse: two non-zeros a row whatever the number of classes
    won_first = csr_matrix((ones, (pairs, first)), shape=(len(first), n_classes))
    won_second = csr_matrix((ones, (pairs, second)), shape=(len(first), n_classes))
    votes = (won_first.T @ (dec >= 0).T + won_second.T @ (dec < 0).T).T
    margins = (won_first - won_second).T.dot(dec.T).T
    return votes + margins / (3 * (np.abs(margins) + 1))


def svm(seed: int = 0, components: int | None = 512):
    """RBF-kernel support-vector machine on standardized features (softmax scores as probabilities).

    Kernel evaluations cost O(dims) each and there are O(n²) of them. The top 512 principal components
    keep what the four-part views (1,536 dims) add: in 3-fold CV on the training sets, 128 components lost
    0.4-1.0 points against 512 (Banking77 0.9236 -> 0.9279, TREC 0.8890 -> 0.8991), and all 1,536 gave no
    more (Banking77 0.9280) at 2.5x the fit time of 512 (BENCHMARKS.md, "Why these views").
    """
    reduce = [TopComponents(n_components=components, random_state=seed)] if components else []
    return make_pipeline(StandardScaler(), *reduce,
                         SoftmaxSVC(kernel="rbf", C=3.0, gamma="scale", cache_size=1000, random_state=seed))


def sgd(seed: int = 0):
    """Logistic regression by stochastic gradient descent. ``fit --head sgd`` streams it from the cache
    shard by shard (``partial_fit``), so the training set may be larger than memory."""
    from sklearn.linear_model import SGDClassifier

    from bertfeat.classify.stream import EPOCHS

    return SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=EPOCHS, tol=None, random_state=seed)


def torch(seed: int = 0):
    """A PyTorch softmax layer on standardized features, AdamW with early stopping (the classic recipe)."""
    from bertfeat.classify.torch_head import TorchSoftmaxClassifier

    return TorchSoftmaxClassifier(random_state=seed)


def vote(seed: int = 0):
    """Soft vote of logistic regression and the RBF SVM (on all dimensions): their errors differ, so the
    average beats both: the most accurate head here, and among the slowest."""
    from sklearn.ensemble import VotingClassifier

    return VotingClassifier([("logreg", logreg(seed)), ("svm", svm(seed, components=None))], voting="soft")


@dataclass(frozen=True)
class Head:
    """One registry entry: how to make the head, and what `bench` and `fit` need to know about it."""

    make: Callable[[int], object]  # seed -> a new, unfitted scikit-learn-compatible classifier
    # bench's grid (names as in the estimator: ``step__param`` in a Pipeline); every point is a candidate
    # with its own cross-validation. Empty: the defaults only.
    grid: dict = field(default_factory=dict)
    # Relative cost of one fit on 10,000 rows x 384 dims (Banking77's size; logreg = 1). bench starts the
    # dearest jobs first, runs heads of cost <= 1 and scaling 1 on every view and the others only on the
    # views that won, and predicts each fit's cost as cost x (rows / 10,000) ** scaling x (dims / 384).
    cost: float = 1
    scaling: float = 1  # fit cost grows as rows ** scaling (kernel and neighbour heads: 2)
    # Whether the cost grows with the vector width: not for svm, whose kernel sees at most the top 512
    # components whatever the view (Banking77, 1,536 dims, one thread: svm 5.2 s a fit, logreg 3.6 s).
    per_dim: bool = True
    streaming: bool = False  # `fit` trains it from the cache shard by shard (partial_fit), not in memory
    # Parameters set to "balanced" by --class-weight balanced; a head without any is fit on rows
    # resampled to equal class counts instead (``Oversampled``).
    class_weight: tuple = ()
    default: bool = True  # in the default bench's candidates (BENCHMARKS.md: why each is in or out)


# mlp and torch early-stop on a validation split of their own, vote's members are already tuned, and a
# lgbm grid costs most (77 trees a round on Banking77): they keep their defaults.
HEADS = {
    "knn": Head(knn, {"n_neighbors": [5, 10, 25]}, cost=0.5, scaling=2),
    "lda": Head(lda),
    "lgbm": Head(lgbm, cost=7, class_weight=("lgbmclassifier__class_weight",), default=False),
    "logreg": Head(logreg, {"C": [1.0, 10.0, 100.0]}, class_weight=("class_weight",)),
    "mlp": Head(mlp, cost=2, default=False),
    "sgd": Head(sgd, streaming=True, class_weight=("class_weight",), default=False),
    "svm": Head(svm, {"softmaxsvc__C": [1.0, 3.0, 10.0]}, cost=5, scaling=2, per_dim=False,
                class_weight=("softmaxsvc__class_weight",)),
    "torch": Head(torch, default=False),
    "vote": Head(vote, cost=5, scaling=2, class_weight=("logreg__class_weight", "svm__softmaxsvc__class_weight"),
                 default=False),
}


class Oversampled(ClassifierMixin, BaseEstimator):
    """``--class-weight balanced`` for a head without class weights: fit on the training rows resampled
    (with replacement, seeded) so that every class has as many rows as the largest.

    Parameters
    ----------
    estimator : classifier
    random_state : int, default=0
    """

    def __init__(self, estimator=None, random_state=0):
        self.estimator = estimator
        self.random_state = random_state

    def fit(self, X, y):
        from sklearn.base import clone

        y = np.asarray(y)
        rng = np.random.default_rng(self.random_state)
        labels, counts = np.unique(y, return_counts=True)
        rows = np.concatenate([np.concatenate([idx, rng.choice(idx, counts.max() - len(idx))])
                               for idx in (np.flatnonzero(y == lab) for lab in labels)])
        self.estimator_ = clone(self.estimator).fit(np.asarray(X)[rows], y[rows])
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]


def balanced(name: str, head, seed: int = 0):
    """``head`` (registry ``name``) made to weigh every class equally: class weights where the head has
    them (``Head.class_weight``), else ``Oversampled``."""
    params = head_info(name).class_weight
    return head.set_params(**{p: "balanced" for p in params}) if params else Oversampled(head, seed)


def default_heads() -> list[str]:
    return sorted(n for n, h in HEADS.items() if h.default)


def make_head(name: str, seed: int = 0):
    """A new, unfitted head by registry name."""
    return head_info(name).make(seed)


def head_info(name: str) -> Head:
    """The registry entry of ``name``; an unknown name is a one-line error listing the registry."""
    if name not in HEADS:
        raise BertfeatError(f"unknown head '{name}'; expected one of: {', '.join(sorted(HEADS))}")
    return HEADS[name]

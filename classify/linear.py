"""Heads of fine-tuned encoders, as plain scikit-learn classifiers on vectors (no torch here).

A full fine-tune ends in a linear layer on mean-pooled vectors: ``from_linear_layer`` turns its weights
into a fitted ``LogisticRegression``, so the model folder stores it as plain arrays (``head.npz``) and
``predict`` runs it like any other head. SetFit ends in a logistic regression on the tuned vectors.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def from_linear_layer(weight: np.ndarray, bias: np.ndarray, classes) -> LogisticRegression:
    """A fitted ``LogisticRegression`` whose ``predict_proba`` is softmax(X @ weight.T + bias).

    Parameters
    ----------
    weight : array of shape (n_classes, dim)
    bias : array of shape (n_classes,)
    classes : sequence of str
        Labels, in the layer's output order (sorted, as ``classes_`` always is).
    """
    weight, bias = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
    clf = LogisticRegression()
    clf.classes_ = np.asarray([str(c) for c in classes])
    if len(classes) == 2:
        # scikit-learn scores two classes with one row and a sigmoid: sigmoid(z1 - z0) is softmax's p1.
        clf.coef_, clf.intercept_ = (weight[1] - weight[0])[None, :], np.asarray([bias[1] - bias[0]])
    else:
        clf.coef_, clf.intercept_ = weight, bias
    clf.n_features_in_ = weight.shape[1]
    clf.n_iter_ = np.asarray([0])
    return clf


def setfit_head(seed: int = 0) -> LogisticRegression:
    """SetFit's head: scikit-learn's logistic regression at its defaults (C=1) on the tuned vectors."""
    return LogisticRegression(max_iter=1000, random_state=seed)

"""The multi-label heads (``multilabel.py``) in ``head_check``'s tables: what a head file may give them,
and the shapes their ``predict_proba`` takes for granted.

Importing this module adds them to ``FITTED`` and ``CONSISTENT``, so one table still lists every class a
head file may hold and ``check`` stays the one way in (``persist`` imports it before it reads a file).
Their ``Info`` says ``multi_label``: one probability per label, each within [0, 1], which is what
``probe`` then asks of them instead of rows that sum to 1. One number of labels L runs through a
multi-label head: ``MultiLabel``'s classes, calibration and thresholds, and its estimator's output (the
one-vs-rest priors and members, the network's last layer, the neighbours' label columns).
"""
from __future__ import annotations

import numpy as np

from bertfeat.classify.head_check import (
    CONSISTENT, EST, F1, F2, FITTED, LABELS, Arr, Info, _is, _members, _need, _shape, _width,
)

FITTED.update({
    "MultiLabel": {},  # all its state is its parameters (classes, calibration, thresholds, ...)
    "NeighbourLabels": {"vectors_": F2, "labels_": Arr(2, "i")},
    "OneVsRest": {"prior_": F1, "estimators_": [(EST, None)]},
    "SigmoidNet": {"mean_": F1, "scale_": F1, "coefs_": [F2], "intercepts_": [F1]},
    "LabelVote": {"estimators_": [EST]},
})


def _one_vs_rest(obj, memo) -> Info:
    prior, members = obj.prior_, obj.estimators_
    labels = len(prior)
    _need(labels >= 1 and len(members) == labels, obj, f"{len(members)} members for {labels} labels in prior_")
    _need(((prior >= 0) & (prior <= 1)).all(), obj, "prior_ holds a share outside 0..1")
    for j, member in enumerate(members):
        # fit gives a label a member exactly when some rows have it and some do not
        constant = prior[j] in (0, 1)
        _need((member is None) == constant, obj, f"label {j} has {'no' if member is None else 'a'} member "
              f"but its prior_ {prior[j]:g} says it is {'' if constant else 'not '}constant")
    fitted = [m for m in members if m is not None]
    # with no member (every label constant) the vectors are never read: any width will do
    n = _members(obj, fitted, memo, 2) if fitted else 0
    for m in fitted:  # predict_proba reads the column of class 1
        _need(np.array_equal(m.classes_, [0, 1]), obj, f"member {type(m).__name__} has classes "
              f"{np.asarray(m.classes_).tolist()}, not [0, 1]")
    return Info(n, labels, True, True)


def _sigmoid_net(obj, memo) -> Info:
    n, hidden = _width(obj, len(obj.mean_)), obj.hidden
    _shape(obj, "mean_", (n,), np.float32)
    _need((_shape(obj, "scale_", (n,), np.float32) > 0).all(), obj, "scale_ is not positive")
    coefs, intercepts = obj.coefs_, obj.intercepts_
    _need(_is(hidden, int) and hidden >= 0, obj, f"hidden {hidden!r} is not a layer width")
    _need(len(coefs) == len(intercepts) == (2 if hidden else 1), obj,
          f"{len(coefs)} weight and {len(intercepts)} bias layers for hidden={hidden}")
    widths = [n] + [c.shape[1] for c in coefs]
    _need(not hidden or widths[1] == hidden, obj, f"its hidden layer is {widths[1]} wide, not {hidden}")
    for i, (c, b) in enumerate(zip(coefs, intercepts)):
        _need(c.shape == (widths[i], widths[i + 1]) and b.shape == (widths[i + 1],), obj,
              f"layer {i} ({c.shape}, {b.shape}) does not chain {widths[i]} -> {widths[i + 1]}")
        _need(c.dtype == b.dtype == np.float32, obj, f"layer {i} is {c.dtype}/{b.dtype}, not float32")
    _need(widths[-1] >= 1, obj, "its output layer gives no label")
    return Info(n, widths[-1], True, True)


def _neighbour_labels(obj, memo) -> Info:
    rows, n = obj.vectors_.shape
    _width(obj, n)
    _need(rows >= 1, obj, "vectors_ has no row")
    vectors = _shape(obj, "vectors_", (rows, n), np.float32)
    labels = _shape(obj, "labels_", (rows, obj.labels_.shape[1]), np.int8)
    _need(labels.shape[1] >= 1 and ((labels == 0) | (labels == 1)).all(), obj, "labels_ is not a 0/1 indicator")
    # unit rows (zero for a zero vector) keep cosine similarities, and so the weights, within [-1, 1]
    _need((np.linalg.norm(vectors, axis=1) <= 1 + 1e-3).all(), obj, "vectors_ rows are longer than unit vectors")
    k = obj.n_neighbors
    _need(_is(k, int) and k >= 1, obj, f"n_neighbors {k!r} is not a positive integer")
    return Info(n, labels.shape[1], True, True)


def _multi_label(obj, memo) -> Info:
    estimator = obj.estimator
    info = memo.get(id(estimator))
    _need(info is not None and info.multi_label, obj,
          f"estimator {type(estimator).__name__} is not a fitted multi-label head")
    labels = info.n_out
    classes = obj.classes
    _need(isinstance(classes, (list, tuple, np.ndarray)) and _is(np.asarray(classes), LABELS)
          and len(np.unique(classes)) == len(classes) == labels, obj,
          f"classes are not {labels} distinct labels (its estimator gives {labels})")
    if obj.calibration is not None:
        calibration = _floats(obj, "calibration", (labels, 2))
        _need(np.isfinite(calibration).all(), obj, "calibration holds NaN or infinite values")
    thresholds = _floats(obj, "thresholds", (labels,))
    _need((np.isfinite(thresholds) & (thresholds >= 0) & (thresholds <= 1)).all(), obj,
          "thresholds are not numbers within [0, 1]")
    _need(_is(obj.at_least_one, bool), obj, f"at_least_one {obj.at_least_one!r} is not true or false")
    return Info(info.n_in, labels, True, True)


def _label_vote(obj, memo) -> Info:
    members = obj.estimators_
    _need(len(members) >= 1, obj, "it has no member")
    infos = [memo.get(id(m)) for m in members]
    _need(all(i is not None and i.multi_label for i in infos), obj, "a member is not a fitted multi-label head")
    _need(len({(i.n_in, i.n_out) for i in infos}) == 1, obj,
          f"members differ in vector width or labels ({sorted({(i.n_in, i.n_out) for i in infos})})")
    return Info(infos[0].n_in, infos[0].n_out, True, True)


def _floats(obj, key: str, shape: tuple) -> np.ndarray:
    value = getattr(obj, key)
    _need(isinstance(value, np.ndarray) and value.dtype.kind == "f", obj, f"{key} is not an array of numbers")
    return _shape(obj, key, shape)


CONSISTENT.update({"LabelVote": _label_vote,
                   "MultiLabel": _multi_label, "NeighbourLabels": _neighbour_labels, "OneVsRest": _one_vs_rest,
                   "SigmoidNet": _sigmoid_net})

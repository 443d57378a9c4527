"""What a head file may hold, and the checks between a rebuilt head and its first ``predict``.

``persist.loads`` gives an object only the attributes its class declares: its constructor's parameters
and the fitted attributes in ``FITTED`` (those a real fitted head of the class holds), each of the kind
declared there. ``check`` then asks what scikit-learn's code takes for granted and never checks itself:
an SVM's support counts sum to its support vectors (libsvm reads past its arrays otherwise: a crafted
file segfaulted ``predict``), k nearest neighbours' label indexes lie within ``classes_``, coefficient
rows match the classes, and one vector width runs through every pipeline, wrapper and vote. Last,
``probe``: a few random vectors must come out as probabilities. ``head_check_multi`` adds the multi-label
heads to these tables when imported (``persist`` imports it).
"""
from __future__ import annotations

import inspect
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from sklearn.utils import Bunch

MAX_DEPTH = 64  # nested lists / objects in state.json; a real vote of pipelines is under 10 deep
MAX_DIMS = 1 << 20  # vector width a head may declare (the probe allocates rows of it)


class Arr(NamedTuple):
    ndim: int
    kinds: str = "f"  # numpy dtype kinds allowed


class Info(NamedTuple):
    """What a fitted object reads and gives: vector width in, classes (or columns, or labels) out."""
    n_in: int
    n_out: int
    classifier: bool
    multi_label: bool = False  # one probability per label, each within [0, 1], not rows that sum to 1


LABELS, F1, F2, I1 = Arr(1, "Uib"), Arr(1), Arr(2), Arr(1, "i")
EST = "estimator"  # an object of any class persist rebuilds; a class name: that class only
# A spec: a type, None, an Arr, EST or a class name, [spec] (a list of them), or a tuple of alternatives.
_LINEAR = {"n_features_in_": int, "classes_": LABELS, "coef_": F2, "intercept_": F1}
_KNN = {"n_features_in_": int, "outputs_2d_": bool, "classes_": LABELS, "_y": I1, "effective_metric_params_": dict,
        "effective_metric_": str, "_fit_method": str, "_fit_X": F2, "n_samples_fit_": int, "_tree": None}
_MLP = {"n_features_in_": int, "_label_binarizer": "LabelBinarizer", "classes_": LABELS, "n_outputs_": int,
        "n_iter_": int, "t_": int, "n_layers_": int, "out_activation_": str, "coefs_": [F2], "intercepts_": [F1],
        "_best_coefs": [F2], "_best_intercepts": [F1], "loss_curve_": [float], "_no_improvement_count": int,
        "validation_scores_": ([float], None), "best_validation_score_": (float, None),
        "best_loss_": (float, None), "loss_": float}
FITTED = {
    "Calibrated": {"estimator_": EST, "temperature_": float, "classes_": LABELS, "offsets_": F1},
    "Columns": {"n_features_in_": int},
    "FewRowsKNN": _KNN,
    "FewRowsMLP": _MLP,
    "KNeighborsClassifier": _KNN,
    "LabelBinarizer": {"y_type_": str, "sparse_input_": bool, "classes_": LABELS},
    "LabelEncoder": {"classes_": LABELS},
    "LogisticRegression": {**_LINEAR, "n_iter_": I1},
    "MLPClassifier": _MLP,
    "Oversampled": {"estimator_": EST, "classes_": LABELS},
    "Pipeline": {},
    "SGDClassifier": {**_LINEAR, "t_": float, "_expanded_class_weight": F1, "n_iter_": int},
    "ShrunkLDA": {**_LINEAR, "priors_": F1, "means_": F2, "_max_components": int, "_n_features_out": int},
    "SoftVote": {"estimators_": [EST], "classes_": LABELS},
    "SoftmaxSVC": {"_sparse": bool, "n_features_in_": int, "class_weight_": F1, "classes_": LABELS,
                   "_effective_probability": bool, "_gamma": float, "support_": I1, "support_vectors_": F2,
                   "_n_support": I1, "dual_coef_": F2, "intercept_": F1, "_probA": F1, "_probB": F1,
                   "fit_status_": int, "_num_iter": I1, "shape_fit_": tuple, "_intercept_": F1, "_dual_coef_": F2,
                   "n_iter_": I1},
    "StandardScaler": {"n_features_in_": int, "n_samples_seen_": (int, float), "mean_": (F1, None),
                       "var_": (F1, None), "scale_": (F1, None)},
    "TopComponents": {"n_features_in_": int, "_fit_svd_solver": str, "mean_": F1, "noise_variance_": float,
                      "n_samples_": int, "n_components_": int, "components_": F2, "explained_variance_": F1,
                      "explained_variance_ratio_": F1, "singular_values_": F1},
    "TorchSoftmaxClassifier": {"classes_": LABELS, "mean_": F1, "scale_": F1, "coef_": F2, "intercept_": F1,
                               "n_epochs_": int},
    "VotingClassifier": {"le_": "LabelEncoder", "classes_": LABELS, "estimators_": [EST], "named_estimators_": Bunch},
}
OPTIONAL = frozenset({"_best_coefs", "_best_intercepts"})  # an MLP keeps them only when it early-stopped
# Distances k nearest neighbours may use: the ones that need no extra arrays (mahalanobis' VI, say).
METRICS = frozenset({"chebyshev", "cityblock", "cosine", "euclidean", "l1", "l2", "manhattan", "minkowski",
                     "sqeuclidean"})


@lru_cache(maxsize=None)
def attributes(cls) -> frozenset:
    """Every attribute name an object of ``cls`` may hold: what its constructor sets (parameters, and a
    few more such as SVC's ``nu``) and its fitted state."""
    required = {name: None for name, p in inspect.signature(cls.__init__).parameters.items()
                if name != "self" and p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD}
    return frozenset(FITTED[cls.__name__]) | frozenset(vars(cls(**required)))  # __init__ only stores them


def check(head) -> Info:
    """The head's ``Info``; raises ``ValueError`` naming the first thing scikit-learn would trip on."""
    info = _check(head, {})
    if info is None or not info.classifier:
        raise ValueError(f"the head ({type(head).__name__}) is not a fitted classifier")
    return info


def probe(head, info: Info) -> None:
    """Four random vectors must come out as finite probabilities, one column per class (rows sum to 1) or
    per label (each within [0, 1])."""
    X = np.random.default_rng(0).standard_normal((4, info.n_in)).astype(np.float32)
    with np.errstate(all="ignore"):
        proba = np.asarray(head.predict_proba(X), dtype=float)
    if (proba.shape != (4, info.n_out) or not np.isfinite(proba).all() or (proba < 0).any()
            or not ((proba <= 1 + 1e-9).all() if info.multi_label else np.allclose(proba.sum(1), 1, atol=1e-3))):
        raise ValueError("it does not turn test vectors into probabilities")


def _check(obj, memo: dict) -> Info | None:
    """None for an unfitted object (a parameter, as a vote's ``estimators``); objects held in several
    places are checked once."""
    if id(obj) in memo:
        return memo[id(obj)]
    name, state = type(obj).__name__, vars(obj)
    declared = FITTED[name]
    for key, value in state.items():
        if key in declared and not _is(value, declared[key]):
            raise ValueError(f"{name}.{key} is a {_kind(value)}, not what a fitted {name} holds")
        for member in _objects(value):
            _check(member, memo)
    missing = sorted(set(type(obj)._get_param_names()) - set(state))
    required = set(declared) - OPTIONAL
    fitted = required & set(state)
    if fitted and fitted != required:
        missing += sorted(required - fitted)
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing[:5])}")
    if hasattr(type(obj), "_parameter_constraints"):
        obj._validate_params()  # scikit-learn's own check of every parameter (kernel, metric, ...)
    # a class that declares no fitted state (Pipeline, MultiLabel) holds it all in its parameters
    memo[id(obj)] = info = CONSISTENT[name](obj, memo) if fitted or not declared else None
    return info


def _is(value, spec) -> bool:
    if isinstance(spec, Arr):
        return isinstance(value, np.ndarray) and value.ndim == spec.ndim and value.dtype.kind in spec.kinds
    if isinstance(spec, tuple):
        return any(_is(value, s) for s in spec)
    if spec is None:
        return value is None
    if isinstance(spec, list):
        return isinstance(value, list) and all(_is(v, spec[0]) for v in value)
    if isinstance(spec, str):
        return type(value).__name__ in FITTED and spec in (EST, type(value).__name__)
    if isinstance(value, (bool, np.bool_)):
        return spec is bool
    if spec in (int, float):
        return isinstance(value, (int, np.integer) if spec is int else (int, float, np.integer, np.floating))
    return isinstance(value, spec)


def _kind(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _objects(value):
    """The objects (of persist's classes) inside an attribute's value."""
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _objects(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _objects(v)
    elif type(value).__name__ in FITTED:
        yield value


def _need(ok, obj, what: str) -> None:
    if not ok:
        raise ValueError(f"{type(obj).__name__}: {what}")


def _shape(obj, key: str, shape: tuple, dtype=None) -> np.ndarray:
    value = getattr(obj, key)
    _need(value.shape == shape, obj, f"{key} has shape {value.shape}, expected {shape}")
    # an exact dtype: the array goes to compiled code, which also wants it C-ordered
    _need(dtype is None or (value.dtype == dtype and value.flags.c_contiguous), obj,
          f"{key} is {value.dtype}, expected a C-ordered {np.dtype(dtype)} array")
    return value


def _classes(obj) -> int:
    k = len(obj.classes_)
    _need(k >= 1 and len(np.unique(obj.classes_)) == k, obj, "classes_ is empty or repeats a class")
    return k


def _width(obj, n=None) -> int:
    n = obj.n_features_in_ if n is None else n
    _need(1 <= n <= MAX_DIMS, obj, f"vector width {n} is not within 1..{MAX_DIMS}")
    return n


def _member(obj, member, memo: dict, k: int | None = None) -> Info:
    info = memo.get(id(member))
    _need(info is not None and info.classifier and not info.multi_label, obj,
          f"member {type(member).__name__} is not a fitted classifier of one label per row")
    _need(k is None or info.n_out == k, obj, f"member {type(member).__name__} has {info.n_out} classes, not {k}")
    return info


def _same_labels(obj, member) -> None:
    _need(np.array_equal(obj.classes_, member.classes_), obj, f"classes_ differ from its {type(member).__name__}'s")


def _linear(obj, memo) -> Info:
    k, n = _classes(obj), _width(obj)
    rows = 1 if k == 2 else k  # scikit-learn scores two classes with one row
    _shape(obj, "coef_", (rows, n))
    _shape(obj, "intercept_", (rows,))
    if hasattr(obj, "means_"):  # lda
        _shape(obj, "means_", (k, n))
        _shape(obj, "priors_", (k,))
    return Info(n, k, True)


def _torch(obj, memo) -> Info:
    k, n = _classes(obj), _width(obj, len(obj.mean_))
    _shape(obj, "coef_", (k, n))
    _shape(obj, "intercept_", (k,))
    _need((_shape(obj, "scale_", (n,)) > 0).all(), obj, "scale_ is not positive")
    return Info(n, k, True)


def _svc(obj, memo) -> Info:
    k, n = _classes(obj), _width(obj)
    _need(k >= 2, obj, "fewer than two classes")
    _need(not obj._sparse and obj.kernel in ("linear", "poly", "rbf", "sigmoid"), obj,
          f"kernel {obj.kernel!r} on {'sparse' if obj._sparse else 'dense'} vectors is not one a head uses")
    _need(obj._gamma > 0, obj, "gamma is not positive")
    n_sv, pairs = len(obj.support_vectors_), k * (k - 1) // 2
    counts = _shape(obj, "_n_support", (k,), np.int32)
    _need(n_sv >= 1 and (counts >= 0).all() and counts.sum() == n_sv, obj,
          f"support counts {counts.tolist()} do not add up to its {n_sv} support vectors")
    _shape(obj, "support_vectors_", (n_sv, n), np.float64)
    _shape(obj, "support_", (n_sv,), np.int32)
    for key in ("_dual_coef_", "dual_coef_"):
        _shape(obj, key, (k - 1, n_sv), np.float64)
    for key in ("_intercept_", "intercept_"):
        _shape(obj, key, (pairs,), np.float64)
    for key in ("_probA", "_probB"):  # empty unless fit with probability=True
        _need(getattr(obj, key).shape in ((0,), (pairs,)), obj, f"{key} has shape {getattr(obj, key).shape}")
    _shape(obj, "class_weight_", (k,), np.float64)
    _need(len(obj.shape_fit_) == 2 and obj.shape_fit_[1] == n, obj, f"shape_fit_ {obj.shape_fit_} is not (rows, {n})")
    return Info(n, k, True)


def _knn(obj, memo) -> Info:
    k, n = _classes(obj), _width(obj)
    m = len(obj._fit_X)
    _shape(obj, "_fit_X", (m, n))
    labels = _shape(obj, "_y", (m,), np.intp)
    _need(m >= 1 and obj.n_samples_fit_ == m, obj, f"n_samples_fit_ {obj.n_samples_fit_} is not its {m} rows")
    _need(((labels >= 0) & (labels < k)).all(), obj, f"label indexes outside 0..{k - 1}")
    _need(obj._fit_method == "brute" and obj._tree is None and not obj.outputs_2d_, obj, "not a brute-force search")
    _need({obj.metric, obj.effective_metric_} <= METRICS and obj.metric_params is None
          and set(obj.effective_metric_params_) <= {"p"}, obj,
          f"metric {obj.effective_metric_!r} is not one a head uses")
    few_rows = type(obj).__name__ == "FewRowsKNN" and obj.weights == "distance"  # it asks for at most m
    _need(obj.n_neighbors <= m or few_rows, obj, f"{obj.n_neighbors} neighbours of {m} rows")
    return Info(n, k, True)


def _mlp(obj, memo) -> Info:
    k, n = _classes(obj), _width(obj)
    coefs, intercepts = obj.coefs_, obj.intercepts_
    widths = [n] + [c.shape[1] for c in coefs]
    out = 1 if k == 2 else k
    _need(len(coefs) >= 1 and len(intercepts) == len(coefs) and obj.n_layers_ == len(coefs) + 1, obj,
          "coefs_, intercepts_ and n_layers_ disagree")
    for i, (c, b) in enumerate(zip(coefs, intercepts)):
        _need(c.shape == (widths[i], widths[i + 1]) and b.shape == (widths[i + 1],), obj,
              f"layer {i} has the wrong shape")
    _need(widths[-1] == out == obj.n_outputs_ and obj.out_activation_ == ("logistic" if k == 2 else "softmax"),
          obj, f"its output layer does not fit {k} classes")
    _same_labels(obj, obj._label_binarizer)
    return Info(n, k, True)


def _label_binarizer(obj, memo) -> Info:
    k = _classes(obj)
    _need(obj.y_type_ in ("binary", "multiclass") and not obj.sparse_output and obj.neg_label < obj.pos_label,
          obj, "not a binary / multiclass binarizer")
    return Info(0, k, False)


def _label_encoder(obj, memo) -> Info:
    return Info(0, _classes(obj), False)


def _scaler(obj, memo) -> Info:
    n = _width(obj)
    if obj.with_mean:
        _shape(obj, "mean_", (n,))
    if obj.with_std:
        _need((_shape(obj, "scale_", (n,)) > 0).all(), obj, "scale_ is not positive")
    return Info(n, n, False)


def _pca(obj, memo) -> Info:
    n, c = _width(obj), obj.n_components_
    _need(1 <= c <= n, obj, f"n_components_ {c} is not within 1..{n}")
    _shape(obj, "components_", (c, n))
    _shape(obj, "mean_", (n,))
    _need((_shape(obj, "explained_variance_", (c,)) > 0).all() or not obj.whiten, obj, "whitens by a zero variance")
    return Info(n, c, False)


def _columns(obj, memo) -> Info:
    n = _width(obj)
    ranges = obj.ranges
    _need(isinstance(ranges, (list, tuple)) and all(
        isinstance(r, (list, tuple)) and len(r) == 2 and all(_is(v, int) for v in r) and 0 <= r[0] <= r[1] <= n
        for r in ranges), obj, f"ranges are not column ranges within 0..{n}")
    width = sum(b - a for a, b in ranges)
    _need(width >= 1, obj, "selects no column")
    return Info(n, width, False)


def _pipeline(obj, memo) -> Info | None:
    steps = obj.steps
    _need(isinstance(steps, list) and steps and all(
        isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str) and type(s[1]).__name__ in FITTED
        for s in steps), obj, "steps are not (name, estimator) pairs")
    _need(obj.memory is None and obj.transform_input is None, obj, "memory / transform_input set")
    infos = [memo[id(est)] for _, est in steps]
    if all(info is None for info in infos):
        return None  # an unfitted parameter
    _need(None not in infos and infos[-1].classifier and not any(i.classifier for i in infos[:-1]), obj,
          "not fitted transformers ending in a fitted classifier")
    for a, b in zip(infos, infos[1:]):
        _need(a.n_out == b.n_in, obj, f"a step gives {a.n_out} columns to one that reads {b.n_in}")
    return Info(infos[0].n_in, infos[-1].n_out, True)


def _calibrated(obj, memo) -> Info:
    k = _classes(obj)
    info = _member(obj, obj.estimator_, memo, k)
    _same_labels(obj, obj.estimator_)
    _need(obj.temperature_ > 0, obj, "temperature_ is not positive")
    _shape(obj, "offsets_", (k,))
    return Info(info.n_in, k, True)


def _oversampled(obj, memo) -> Info:
    k = _classes(obj)
    _same_labels(obj, obj.estimator_)
    return Info(_member(obj, obj.estimator_, memo, k).n_in, k, True)


def _members(obj, members, memo, k: int) -> int:
    """The vector width every member reads (the same for all)."""
    widths = {_member(obj, m, memo, k).n_in for m in members}
    _need(len(widths) == 1, obj, f"members read vectors of different widths ({sorted(widths)})")
    return widths.pop()


def _weights(obj, weights, n: int, per: str) -> None:
    _need(isinstance(weights, list) and len(weights) == n and all(_is(w, float) for w in weights)
          and min(weights) >= 0 < sum(weights), obj, f"weights are not one non-negative number per {per}")


def _softvote(obj, memo) -> Info:
    k, members, weights = _classes(obj), obj.estimators_, obj.weights
    n = _members(obj, members, memo, k)
    for m in members:
        _same_labels(obj, m)
    _weights(obj, weights, len(members), "member")
    return Info(n, k, True)


def _voting(obj, memo) -> Info:
    k, members = _classes(obj), obj.estimators_
    _need(isinstance(obj.estimators, list) and all(isinstance(e, tuple) and len(e) == 2 for e in obj.estimators),
          obj, "estimators are not (name, estimator) pairs")
    kept = [e for _, e in obj.estimators if not (isinstance(e, str) and e == "drop")]
    _need(len(kept) == len(members) >= 1, obj, f"{len(members)} fitted members for {len(kept)} estimators")
    if obj.weights is not None:
        _weights(obj, obj.weights, len(obj.estimators), "estimator")
    _need(memo.get(id(obj.le_)) is not None, obj, "le_ is not fitted")
    _same_labels(obj, obj.le_)
    return Info(_members(obj, members, memo, k), k, True)


CONSISTENT = {
    "Calibrated": _calibrated, "Columns": _columns, "FewRowsKNN": _knn, "FewRowsMLP": _mlp,
    "KNeighborsClassifier": _knn, "LabelBinarizer": _label_binarizer, "LabelEncoder": _label_encoder,
    "LogisticRegression": _linear, "MLPClassifier": _mlp, "Oversampled": _oversampled, "Pipeline": _pipeline,
    "SGDClassifier": _linear, "ShrunkLDA": _linear, "SoftVote": _softvote, "SoftmaxSVC": _svc,
    "StandardScaler": _scaler, "TopComponents": _pca, "TorchSoftmaxClassifier": _torch,
    "VotingClassifier": _voting,
}

"""Every head on every feature view: tuned by cross-validation on the training set, scored once on the test set."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bertfeat.classify.heads import head_info
from bertfeat.classify.metrics import evaluate
from bertfeat.classify.tuning import tune


@dataclass
class Result:
    head: str
    features: str
    cv_score: float  # mean cross-validated accuracy on the training set: what `best` is chosen by
    accuracy: float
    macro_f1: float
    macro_precision: float
    macro_recall: float
    fit_seconds: float  # tuning and the final refit
    predict_seconds: float  # the whole test set
    predict_ms_per_1k: float
    params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # binary tasks: average_precision, roc_auc

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def run_one(name: str, features: str, X_train, y_train, X_test, y_test, cv: int, do_tune: bool, seed: int):
    """Tune (or cross-validate the defaults of) one head on one view, refit on all training data, score."""
    t0 = time.perf_counter()
    info = head_info(name)
    head, params, cv_score = tune(info.make(seed), info.grid if do_tune else {}, X_train, y_train, cv, seed)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = head.predict_proba(X_test)
    predict_seconds = time.perf_counter() - t0
    pred = np.asarray(head.classes_)[proba.argmax(1)]
    metrics = evaluate(y_test, pred)
    extra = _binary_scores(head.classes_, proba, y_test)
    result = Result(name, features, cv_score, metrics["accuracy"], metrics["macro_f1"], metrics["macro_precision"],
                    metrics["macro_recall"], fit_seconds, predict_seconds,
                    1000 * predict_seconds / max(len(y_test), 1) * 1000, _plain(params), extra)
    return result, head, metrics


def _binary_scores(classes, proba, y_test) -> dict:
    if len(classes) != 2 or len(set(y_test)) != 2:
        return {}
    from sklearn.metrics import average_precision_score, roc_auc_score

    positive = np.asarray(y_test) == classes[1]
    return {"average_precision": float(average_precision_score(positive, proba[:, 1])),
            "roc_auc": float(roc_auc_score(positive, proba[:, 1])), "positive_label": str(classes[1])}


def _plain(params: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}


def _run_single_threaded(*args):
    # One job per core, each on one thread: kernel SVMs and small fits do not use a second core
    # well, and two multi-threaded jobs on two cores would fight over them.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_one(*args)


def run_bench(views: dict, y_train, y_test, heads: list[str], cv: int = 3, do_tune: bool = True, seed: int = 0,
              on_result=None, n_jobs: int | None = None):
    """``views``: name -> (X_train, X_test). Returns (results sorted by macro-F1, (best result, head, metrics)).

    Jobs (head x view) run in ``n_jobs`` worker processes (default: one per core). ``best`` is the
    highest *cross-validation* score, so its test figures are an honest estimate.
    """
    from joblib import Parallel, delayed

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    jobs = [(name, features, X_train, y_train, X_test, y_test, cv, do_tune, seed)
            for features, (X_train, X_test) in views.items() for name in heads]
    jobs.sort(key=lambda job: -head_info(job[0]).cost)  # dearest first (Head.cost)
    n_jobs = min(n_jobs or os.cpu_count() or 1, len(jobs))
    if n_jobs == 1:
        outputs = (_run_single_threaded(*job) for job in jobs)
    else:
        outputs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(_run_single_threaded)(*job) for job in jobs)
    results, best = [], None
    for result, head, metrics in outputs:
        results.append(result)
        if on_result:
            on_result(result)
        key = (result.cv_score, -result.fit_seconds)
        if best is None or key > (best[0].cv_score, -best[0].fit_seconds):
            best = (result, head, metrics)
    results.sort(key=lambda r: (-r.macro_f1, r.head, r.features))
    return results, best


def mteb_protocol(X_train, y_train, X_test, y_test, samples_per_label: int = 8, n_experiments: int = 10,
                  seed: int = 42) -> dict:
    """MTEB's classification protocol: logistic regression (max_iter 100) on balanced random samples."""
    from sklearn.linear_model import LogisticRegression

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    rng = np.random.default_rng(seed)
    scores, samples = [], []
    for _ in range(n_experiments):
        idx = balanced_sample(y_train, samples_per_label, rng)
        samples.append(idx)
        clf = LogisticRegression(max_iter=100).fit(X_train[idx], y_train[idx])
        scores.append(float((clf.predict(X_test) == y_test).mean()))
    return {"protocol": "mteb", "samples_per_label": samples_per_label, "n_experiments": n_experiments,
            "accuracy_mean": float(np.mean(scores)), "accuracy_std": float(np.std(scores)), "scores": scores,
            "seed": seed}


def balanced_sample(y: np.ndarray, per_label: int, rng: np.random.Generator) -> np.ndarray:
    """Indexes of up to ``per_label`` random rows of every label."""
    picks = [rng.permutation(np.flatnonzero(y == label))[:per_label] for label in np.unique(y)]
    return np.sort(np.concatenate(picks))

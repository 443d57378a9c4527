"""Heads on feature views, chosen by cross-validation on the training set, scored once on the test set."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.pipeline import Pipeline

from bertfeat.classify.calibration import Calibrated, ece, label_index, log_loss, scale, useful_temperature
from bertfeat.classify.calibration import threshold_offsets
from bertfeat.classify.ensemble import Columns, SoftVote, column_ranges, greedy_weights, nested_predictions
from bertfeat.classify.ensemble import union_view, view_parts, vote
from bertfeat.classify.metrics import evaluate
from bertfeat.classify.selection import Candidate, Runner, cv_score, grid_points, plan


@dataclass
class Result:
    head: str
    features: str
    cv_score: float  # cross-validated --select score on the training set: what `best` is chosen by
    accuracy: float
    macro_f1: float
    macro_precision: float
    macro_recall: float
    log_loss: float  # test set, calibrated probabilities (the ones the saved model gives)
    ece: float  # expected calibration error (15 bins), calibrated
    log_loss_raw: float  # the same before temperature scaling
    ece_raw: float
    temperature: float  # fitted on out-of-fold probabilities of the training set
    fit_seconds: float  # cross-validation folds and the final refit
    predict_seconds: float  # the whole test set
    predict_ms_per_1k: float
    params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # cv accuracy / macro-F1; binary: average_precision, roc_auc

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


# Candidates (best CV first) the soft vote may draw on. On Banking77 and TREC (5-fold OOF, BENCHMARKS.md)
# drawing on all of them beat the top 3 or 6: the neighbour and linear heads that add most to the SVM are
# not the best single candidates.
TOP = 24


def run_bench(views: dict, y_train, y_test, heads: list[str], cv: int = 3, do_tune: bool = True, seed: int = 0,
              on_result=None, n_jobs: int | None = None, select: str = "accuracy", class_weight: str | None = None,
              halving: bool = False, budget: float | None = None, ensemble: bool = True,
              tune_threshold: bool = False):
    """``views``: name -> (X_train, X_test). Returns (rows sorted by CV, (best, head, metrics), info).

    Without ``halving`` every head runs at every grid point on every view; with it, candidates go
    through ``selection.plan``'s two rounds. ``best`` is the highest *cross-validated* ``select`` score
    (a soft vote of the top candidates competes with its nested CV score), so its test figures are an
    honest estimate. ``info``: what was skipped and why, the vote's weights, the threshold, and ``oof``: the
    best's calibrated out-of-fold probabilities (rows in training order, columns in ``np.unique(y_train)``).
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    classes = np.unique(y_train)
    runner = Runner(views, y_train, classes, cv, seed, n_jobs, class_weight)
    dims = {v: X.shape[1] for v, (X, _) in views.items()}
    skipped = []
    if halving:
        first, _ = plan(list(views), heads, len(y_train), dims, False, budget, cv)
        runner.cross_validate(first, [0])
        screen = {v: max(s.cv[select] for s in runner.scored.values() if s.candidate.features == v) for v in views}
        second, skipped = plan(list(views), heads, len(y_train), dims, False, budget, cv, screen)
        runner.cross_validate(second)
    else:
        runner.cross_validate([Candidate(h, v, p) for v in views for h in heads for p in grid_points(h, do_tune)])
    ranked = runner.ranked(select)
    rows = _best_per_head_view(ranked)
    vote_plan = _plan_vote(runner, ranked, select) if ensemble else None
    members = [m for m in (vote_plan["members"] if vote_plan else []) if m not in rows]
    fitted = dict(zip(rows + members, runner.refit(rows + members)))
    results = [_result(runner.scored[c], fitted[c], y_test, classes, select) for c in rows]
    best_cand, best_score = rows[0], runner.scored[rows[0]].cv[select]
    info = {"skipped": [{"head": c.head, "features": c.features, "params": _plain(dict(c.params)), "why": why}
                        for c, why in skipped], "candidates": len(runner.scored)}
    best = None
    if vote_plan and vote_plan["score"][select] > best_score:
        best = _vote_result(runner, vote_plan, fitted, views, y_test, classes, select)
        results.append(best[0])
        info["vote"] = {"weights": [[c.head, c.features, _plain(dict(c.params)), w]
                                    for c, w in zip(vote_plan["members"], vote_plan["weights"])],
                        "nested_cv": vote_plan["score"]}
    elif vote_plan:
        info["vote_rejected"] = {"nested_cv": vote_plan["score"], "best_single_cv": runner.scored[best_cand].cv}
    if best is None:
        s = runner.scored[best_cand]
        head = Calibrated.from_fitted(fitted[best_cand][0], s.temperature)
        best = (results[0], head, s.oof, s.temperature, fitted[best_cand][1])
    result, head, oof, temperature, proba_raw = best
    offsets = None
    if tune_threshold and len(classes) == 2 and select == "macro_f1":
        result, offsets, info["threshold"] = _tuned_threshold(runner, result, scale(oof, temperature), proba_raw,
                                                              temperature, y_test, classes)
        head = Calibrated.from_fitted(head.estimator_, head.temperature_, offsets)
    proba = scale(proba_raw, temperature, offsets)
    metrics = evaluate(y_test, classes[proba.argmax(1)])
    for r in results:
        if on_result:
            on_result(r)
    results.sort(key=lambda r: (-r.cv_score, r.head != result.head or r.features != result.features))
    results += [_screened(s, select) for s in sorted(runner.scored.values(), key=lambda s: -s.cv[select])
                if not runner.complete(s)]
    info["oof"] = scale(oof, temperature)  # the chosen model's calibrated OOF probabilities, for label issues
    return results, (result, head, metrics, (proba_raw, proba)), info


def _best_per_head_view(ranked) -> list:
    """The best grid point of each (head, view), in CV order: the table's rows."""
    seen, rows = set(), []
    for s in ranked:
        if (s.candidate.head, s.candidate.features) not in seen:
            seen.add((s.candidate.head, s.candidate.features))
            rows.append(s.candidate)
    return rows


def _plan_vote(runner, ranked, select):
    """Greedy soft vote over the top candidates' calibrated OOF probabilities, scored nested."""
    pool = [s for s in ranked[:TOP]]
    if len(pool) < 2:
        return None
    probas = [runner.calibrated_oof(s) for s in pool]
    weights = greedy_weights(probas, runner.y_idx, metric=select)
    if np.count_nonzero(weights) < 2:
        return None
    pred, _ = nested_predictions(probas, runner.y_idx, runner.folds, metric=select)
    used = [i for i, w in enumerate(weights) if w]
    oof = vote([probas[i] for i in used], weights[used])
    return {"members": [pool[i].candidate for i in used], "weights": [float(weights[i]) for i in used],
            "score": cv_score(runner.y_idx, pred, len(runner.classes)), "oof": oof}


def _vote_result(runner, vote_plan, fitted, views, y_test, classes, select):
    features = union_view([c.features for c in vote_plan["members"]])
    dims = {}
    for c in vote_plan["members"]:
        for part, X in zip(view_parts(c.features), np.hsplit(views[c.features][0], len(view_parts(c.features)))):
            dims[part] = X.shape[1]
    estimators = []
    for c in vote_plan["members"]:
        member = Calibrated.from_fitted(fitted[c][0], runner.scored[c].temperature)
        cols = Columns(column_ranges(c.features, features, dims)).fit(np.zeros((1, sum(dims.values()))))
        estimators.append((f"{c.head}:{c.features}", Pipeline([("columns", cols), ("head", member)])))
    head = SoftVote.from_fitted(estimators, vote_plan["weights"])
    temperature = useful_temperature(vote_plan["oof"], runner.y_idx)
    head = Calibrated.from_fitted(head, temperature)
    if features not in views:  # the union of the members' views, for scoring the test set here
        views[features] = tuple(np.hstack([_part(views, p, i) for p in view_parts(features)]) for i in (0, 1))
    # the members' test probabilities from their refits, as the vote would compute them
    proba_raw = vote([scale(fitted[c][1], runner.scored[c].temperature) for c in vote_plan["members"]],
                     vote_plan["weights"])
    predict_seconds = sum(fitted[c][3] for c in vote_plan["members"])
    weights = {f"{c.head}:{c.features}": w for c, w in zip(vote_plan["members"], vote_plan["weights"])}
    fit_seconds = sum(runner.scored[c].cv_seconds + fitted[c][2] for c in vote_plan["members"])
    result = _score("ensemble", features, vote_plan["score"], proba_raw, temperature, y_test, classes, select,
                    fit_seconds, predict_seconds, {"members": weights})
    return result, head, vote_plan["oof"], temperature, proba_raw


def _part(views, part, i):
    for spec, arrays in views.items():
        parts = view_parts(spec)
        if part in parts:
            return np.hsplit(arrays[i], len(parts))[parts.index(part)]
    raise KeyError(part)


def _tuned_threshold(runner, result, oof, proba_raw, temperature, y_test, classes):
    """Binary, --select macro_f1: the decision threshold on p(classes[1]) that maximizes CV macro-F1,
    chosen on the calibrated OOF probabilities; kept only if its nested CV score beats 0.5's.
    Returns (the row, rescored if kept; the log-odds offsets or None; what was tried)."""
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    y = runner.y_idx

    def best_t(rows):
        scores = [cv_score(y[rows], (oof[rows, 1] >= t).astype(int), 2)["macro_f1"] for t in grid]
        return float(grid[int(np.argmax(scores))])

    pred = np.empty(len(y), dtype=int)
    for tr, te in runner.folds:
        pred[te] = (oof[te, 1] >= best_t(tr)).astype(int)
    nested = cv_score(y, pred, 2)
    threshold = best_t(np.arange(len(y)))
    kept = nested["macro_f1"] > result.cv_score
    info = {"threshold": threshold, "nested_cv": nested, "cv_at_0.5": result.extra.get("cv_macro_f1"), "kept": kept}
    if not kept:
        return result, None, info
    offsets = threshold_offsets(threshold)
    tuned = scale(scale(proba_raw, temperature), 1.0, offsets)
    new = _score(result.head, result.features, nested, tuned, 1.0, y_test, classes, "macro_f1",
                 result.fit_seconds, result.predict_seconds, {**result.params, "threshold": threshold})
    new.temperature = result.temperature
    return new, offsets, info


def _screened(scored, select) -> Result:
    """A row for a candidate that halving stopped after its first fold: CV on that fold, no test score."""
    c = scored.candidate
    return Result(c.head, c.features, scored.cv[select], None, None, None, None, None, None, None, None,
                  scored.temperature, scored.cv_seconds, 0.0, 0.0, _plain(dict(c.params)),
                  {"cv_accuracy": scored.cv["accuracy"], "cv_macro_f1": scored.cv["macro_f1"], **scored.extra})


def _result(scored, fitted, y_test, classes, select) -> Result:
    from bertfeat.classify.model_dir import head_bytes

    head, proba, fit_seconds, predict_seconds = fitted
    result = _score(scored.candidate.head, scored.candidate.features, scored.cv, proba, scored.temperature, y_test,
                    classes, select, scored.cv_seconds + fit_seconds, predict_seconds,
                    _plain(dict(scored.candidate.params)))
    result.extra.update(scored.extra, head_bytes=len(head_bytes(head)[1]))  # folds, spread, size for the report
    return result


def _score(head, features, cv, proba_raw, temperature, y_test, classes, select, fit_seconds, predict_seconds,
           params) -> Result:
    """Test metrics of raw test probabilities, before and after temperature scaling."""
    proba = scale(proba_raw, temperature)
    y_idx = label_index(classes, y_test)
    metrics = evaluate(y_test, classes[proba.argmax(1)])
    extra = {"cv_accuracy": cv["accuracy"], "cv_macro_f1": cv["macro_f1"], **_binary_scores(classes, proba, y_test)}
    return Result(head, features, cv[select], metrics["accuracy"], metrics["macro_f1"], metrics["macro_precision"],
                  metrics["macro_recall"], log_loss(proba, y_idx), ece(proba, y_idx), log_loss(proba_raw, y_idx),
                  ece(proba_raw, y_idx), float(temperature), fit_seconds, predict_seconds,
                  1000 * predict_seconds / max(len(y_test), 1) * 1000, params, extra)


def _binary_scores(classes, proba, y_test) -> dict:
    if len(classes) != 2 or len(set(y_test)) != 2:
        return {}
    from sklearn.metrics import average_precision_score, roc_auc_score

    positive = np.asarray(y_test) == classes[1]
    return {"average_precision": float(average_precision_score(positive, proba[:, 1])),
            "roc_auc": float(roc_auc_score(positive, proba[:, 1])), "positive_label": str(classes[1])}


def _plain(params: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}


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

"""Multi-label decisions and scores: per-label thresholds chosen on out-of-fold probabilities, and the
metrics of a set of labels per text.

Which rule decides is itself chosen by cross-validation: thresholds picked on the other folds'
out-of-fold rows decide each fold's rows, and the rule whose decisions score best wins. Rules: one
global threshold (the candidate that cannot overfit a rare label), one threshold per label, and each of
those with ``at_least_one`` (a text that clears no threshold gets its most probable label) when every
training text has a label.
"""
from __future__ import annotations

import numpy as np

GRID = np.round(np.arange(0.02, 0.96, 0.01), 2)  # candidate thresholds
# What --select may name for multi-label data, and the default (the issue's: macro-F1 weighs rare labels)
SELECT = ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "jaccard")
DEFAULT_SELECT = "macro_f1"


def counts(Y: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label: true positives, predicted positives, actual positives."""
    Y, D = Y.astype(bool), D.astype(bool)
    return (Y & D).sum(0), D.sum(0), Y.sum(0)


def _f1(tp, pred, true):
    both = pred + true
    return np.divide(2.0 * tp, both, out=np.zeros(np.shape(both)), where=both > 0)


def score(Y: np.ndarray, D: np.ndarray, metric: str) -> float:
    """One selection metric of decisions ``D`` against truth ``Y`` (both rows x labels), in plain numpy
    (the threshold search scores thousands of decisions)."""
    if metric in ("macro_f1", "micro_f1"):
        tp, pred, true = counts(Y, D)
        return float(_f1(tp, pred, true).mean() if metric == "macro_f1" else _f1(tp.sum(), pred.sum(), true.sum()))
    Y, D = Y.astype(bool), D.astype(bool)
    if metric == "subset_accuracy":
        return float((Y == D).all(1).mean())
    inter, pred, true = (Y & D).sum(1), D.sum(1), Y.sum(1)
    if metric == "samples_f1":  # a text with no label, rightly given none, scores 1 (scikit-learn's rule)
        return float(np.where(pred + true > 0, _f1(inter, pred, true), 1.0).mean())
    if metric == "jaccard":
        union = (Y | D).sum(1)
        return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())
    raise ValueError(f"unknown multi-label metric {metric!r}; expected one of {', '.join(SELECT)}")


def per_label_thresholds(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """The threshold of ``GRID`` with the best F1 for each label on its own."""
    out = np.empty(P.shape[1])
    for j in range(P.shape[1]):
        D = P[:, j][:, None] >= GRID[None]
        tp = (D & (Y[:, j][:, None] > 0)).sum(0)
        out[j] = GRID[int(np.argmax(_f1(tp, D.sum(0), Y[:, j].sum())))]
    return out


def global_threshold(P: np.ndarray, Y: np.ndarray, metric: str, at_least_one: bool) -> float:
    from bertfeat.classify.multilabel import decide

    scores = [score(Y, decide(P, t, at_least_one), metric) for t in GRID]
    return float(GRID[int(np.argmax(scores))])


def fit_rule(P: np.ndarray, Y: np.ndarray, rule: tuple[str, bool], metric: str) -> np.ndarray:
    """Thresholds (one per label) of ``rule`` = (``"global"`` or ``"per_label"``, at_least_one) on rows P, Y."""
    kind, one = rule
    if kind == "global":
        return np.full(P.shape[1], global_threshold(P, Y, metric, one))
    return per_label_thresholds(P, Y)


def choose(P: np.ndarray, Y: np.ndarray, folds: list[np.ndarray], metric: str) -> dict:
    """The decision rule with the best cross-validated ``metric`` on out-of-fold probabilities ``P``.

    ``folds``: the rows of each cross-validation fold. Returns ``{"rule", "at_least_one", "thresholds"
    (fitted on all rows), "cv_score" (the nested score), "rules" (every rule's nested score)}``.
    """
    from bertfeat.classify.multilabel import decide

    every_row_labelled = bool(Y.any(1).all())
    rules = [(kind, one) for kind in ("global", "per_label") for one in (False, True) if every_row_labelled or not one]
    nested = {}
    for rule in rules:
        D = np.zeros(Y.shape, dtype=bool)
        for rows in folds:
            rest = np.setdiff1d(np.arange(len(Y)), rows)
            D[rows] = decide(P[rows], fit_rule(P[rest], Y[rest], rule, metric), rule[1])
        nested[rule] = score(Y, D, metric)
    best = max(rules, key=lambda r: (nested[r], r[0] == "global"))  # a tie goes to the simpler rule
    return {"rule": best[0], "at_least_one": best[1], "thresholds": fit_rule(P, Y, best, metric),
            "cv_score": nested[best],
            "rules": {f"{k}{'+one' if o else ''}": round(v, 4) for (k, o), v in nested.items()}}


def evaluate_rows(rows, classes, D: np.ndarray, P: np.ndarray, thresholds) -> dict:
    """``evaluate_multi`` against label tuples ``rows`` (one per text). A label the model never learned is a
    column it never predicts: those texts count as misses, as in the single-label scores."""
    from bertfeat.classify.multilabel import indicator, unseen

    extra = sorted(unseen(rows, classes), key=str)
    names = list(classes) + extra
    Y, _ = indicator(rows, names)
    pad = np.zeros((len(rows), len(extra)))
    return evaluate_multi(Y, np.hstack([D, pad]) > 0, np.hstack([P, pad]), names,
                          [float(t) for t in np.broadcast_to(thresholds, len(classes))] + [None] * len(extra))


def evaluate_multi(Y: np.ndarray, D: np.ndarray, P: np.ndarray, classes, thresholds) -> dict:
    """Every multi-label figure of decisions ``D`` (and probabilities ``P``) against truth ``Y``, as a
    JSON-ready dict, with a per-label table."""
    from sklearn.metrics import roc_auc_score

    Y, D = Y.astype(bool), D.astype(bool)
    tp, pred, true = counts(Y, D)
    prec = np.divide(tp, pred, out=np.zeros(len(tp)), where=pred > 0)
    rec = np.divide(tp, true, out=np.zeros(len(tp)), where=true > 0)
    out = {k: score(Y, D, k) for k in SELECT}
    inter = (Y & D).sum(1)
    out.update({
        "micro_precision": float(tp.sum() / max(pred.sum(), 1)), "micro_recall": float(tp.sum() / max(true.sum(), 1)),
        "macro_precision": float(prec.mean()), "macro_recall": float(rec.mean()),
        "samples_precision": float(np.where(D.sum(1) > 0, inter / np.maximum(D.sum(1), 1), Y.sum(1) == 0).mean()),
        "samples_recall": float(np.where(Y.sum(1) > 0, inter / np.maximum(Y.sum(1), 1), 1.0).mean()),
        "hamming_loss": float((Y != D).mean()),
        "cardinality": float(Y.sum(1).mean()), "predicted_cardinality": float(D.sum(1).mean()),
    })
    scored = [j for j in range(Y.shape[1]) if 0 < true[j] < len(Y)]  # AUC needs both kinds of rows
    out["roc_auc"] = float(np.mean([roc_auc_score(Y[:, j], P[:, j]) for j in scored])) if scored else None
    f1 = _f1(tp, pred, true)
    out["labels"] = [str(c) for c in classes]
    out["per_label"] = {str(c): {"support": int(true[j]), "precision": float(prec[j]), "recall": float(rec[j]),
                                 "f1": float(f1[j]),
                                 "threshold": None if thresholds[j] is None else float(thresholds[j])}
                        for j, c in enumerate(classes)}
    return out


def format_multi_report(metrics: dict, max_labels: int = 40) -> str:
    """A readable table of ``evaluate_multi``'s figures: the summary, then one line per label (worst F1
    first when there are many)."""
    lines = [f"{k:<22}{metrics[k]:>8.4f}" for k in (*SELECT, "hamming_loss") if metrics.get(k) is not None]
    if metrics.get("roc_auc") is not None:
        lines.append(f"{'roc_auc (macro)':<22}{metrics['roc_auc']:>8.4f}")
    lines.append(f"{'labels per text':<22}{metrics['cardinality']:>8.2f} true, {metrics['predicted_cardinality']:.2f} "
                 "predicted")
    per = metrics["per_label"]
    names = sorted(per, key=lambda n: per[n]["f1"])[:max_labels] if len(per) > max_labels else list(per)
    lines.append(f"\nper label ({max_labels} lowest F1 of {len(per)}):" if len(per) > max_labels else "\nper label:")
    width = max(12, min(40, max(len(n) for n in names) + 2))
    lines.append(f"{'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}{'threshold':>11}")
    for name in names:
        r = per[name]
        lines.append(f"{name[:width - 1]:<{width}}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1']:>10.4f}"
                     f"{r['support']:>9d}" + (f"{r['threshold']:>11.2f}" if r["threshold"] is not None else
                                              f"{'not learned':>12}"))
    return "\n".join(lines)

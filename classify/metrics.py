"""Accuracy, precision, recall, F1 (macro and weighted), per-class report and confusion matrix."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

# The summary figures a run reports (fit, finetune: the "metrics" of run.json).
SUMMARY = ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall")


def evaluate(y_true, y_pred, labels: list[str] | None = None) -> dict:
    """Metrics as a JSON-ready dict. Labels seen only in ``y_true`` count as errors (never predicted)."""
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    labels = sorted(set(y_true) | set(y_pred)) if labels is None else list(labels)
    out = {"accuracy": float(accuracy_score(y_true, y_pred)), "labels": labels}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                              "support": int(s[i])} for i, lab in enumerate(labels)}
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def format_report(metrics: dict, max_classes: int = 40) -> str:
    """A readable table: the summary figures, then one line per class (worst F1 first when there are many)."""
    lines = [f"{'accuracy':<20}{metrics['accuracy']:>8.4f}"]
    lines.append(f"{'':<20}{'precision':>10}{'recall':>10}{'f1':>10}")
    for avg in ("macro", "weighted"):
        lines.append(f"{avg + ' avg':<20}{metrics[avg + '_precision']:>10.4f}"
                     f"{metrics[avg + '_recall']:>10.4f}{metrics[avg + '_f1']:>10.4f}")
    per = metrics["per_class"]
    names = list(per)
    if len(names) > max_classes:
        names = sorted(names, key=lambda n: per[n]["f1"])[:max_classes]
        lines.append(f"\nper class ({max_classes} lowest F1 of {len(per)}):")
    else:
        lines.append("\nper class:")
    width = max(12, min(40, max(len(n) for n in names) + 2))
    lines.append(f"{'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name in names:
        row = per[name]
        lines.append(f"{name[:width - 1]:<{width}}{row['precision']:>10.4f}{row['recall']:>10.4f}"
                     f"{row['f1']:>10.4f}{row['support']:>9d}")
    return "\n".join(lines)

"""bench output: the comparison table, results.json / results.md, and the plots."""
from __future__ import annotations

import os

import numpy as np

from bertfeat.cache import atomic_write, atomic_write_json

COLUMNS = [("head", "{:<9}"), ("features", "{:<22}"), ("cv_score", "{:>9.4f}"), ("accuracy", "{:>9.4f}"),
           ("macro_f1", "{:>9.4f}"), ("log_loss", "{:>9.4f}"), ("ece_raw", "{:>8.4f}"), ("ece", "{:>8.4f}"),
           ("fit_seconds", "{:>8.1f}"), ("predict_ms_per_1k", "{:>9.1f}")]
HEADERS = {"head": "head", "features": "features", "cv_score": "cv score", "accuracy": "accuracy",
           "macro_f1": "macro-F1", "macro_precision": "macro-P", "macro_recall": "macro-R", "log_loss": "log loss",
           "ece_raw": "ECE raw", "ece": "ECE cal", "fit_seconds": "fit s", "predict_ms_per_1k": "ms/1k"}


def _cell(fmt: str, value) -> str:
    """A formatted cell; a value a row lacks (a fine-tuned reference row has no CV) prints as '-'."""
    if value is None:
        return fmt.replace(".4f", "").replace(".1f", "").format("-")
    return fmt.format(value)


def _params_text(params: dict) -> str:
    return ", ".join(f"{k.split('__')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('__')[-1]}={v}"
                     for k, v in params.items()) or "defaults"


def table(results: list[dict]) -> str:
    """Fixed-width table, one row per (head, features), in the order given (sorted by macro-F1). The text
    columns widen to their longest value (a view of four parts is 30 characters)."""
    columns = []
    for c, fmt in COLUMNS:
        if fmt.startswith("{:<"):
            width = max([int(fmt[3:-1])] + [len(str(r.get(c))) + 1 for r in results])
            fmt = f"{{:<{width}}}"
        columns.append((c, fmt))
    head_line = "".join(fmt.replace(".4f", "").replace(".1f", "").format(HEADERS[c]) for c, fmt in columns)
    lines = [head_line + "  params"]
    for r in results:
        lines.append("".join(_cell(fmt, r.get(c)) for c, fmt in columns) + "  " + _params_text(r["params"]))
    return "\n".join(lines)


def markdown(results: list[dict], best: dict, context: dict) -> str:
    cols = [c for c, _ in COLUMNS]
    out = [f"# bench: {context.get('train')} -> {context.get('test')}", "",
           f"Encoder `{context.get('model')}`; {context.get('n_train')} train / {context.get('n_test')} test texts; "
           f"{context.get('cv')}-fold CV on the training set picks the best by {context.get('select', 'accuracy')} "
           f"(tuned: {context.get('tune')}). log loss and ECE (15 bins) on the test set: ECE raw before, ECE cal "
           "after temperature scaling fit on out-of-fold probabilities.", "",
           "| " + " | ".join(HEADERS[c] for c in cols) + " | params |",
           "|" + "---|" * (len(cols) + 1)]
    for r in results:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) and c not in ("fit_seconds", "predict_ms_per_1k")
                 else (f"{r[c]:.1f}" if isinstance(r.get(c), float) else str(r.get(c) if r.get(c) is not None else "-"))
                 for c in cols]
        out.append("| " + " | ".join(cells) + f" | {_params_text(r['params'])} |")
    out += ["", f"**Best by CV:** {best['head']} on {best['features']} — CV {best['cv_score']:.4f}, "
                f"test accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}, ECE {best['ece_raw']:.4f} "
                f"-> {best['ece']:.4f} calibrated.", ""]
    selection = context.get("selection") or {}
    for s in selection.get("skipped", []):
        out.append(f"- skipped {s['head']} on {s['features']}: {s['why']}")
    if "vote" in selection:
        out.append(f"- soft vote weights: {selection['vote']['weights']}")
    out.append("")
    return "\n".join(out)


def write_report(out: str, results: list[dict], best: dict, best_metrics: dict, context: dict, probas=None,
                 classes=None, y_test=None) -> list[str]:
    """Write results.json, results.md, comparison.png, confusion.png and (given the best head's test
    probabilities before and after calibration) reliability.png under ``out``; returns the paths."""
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "results.json"), {"results": results, "best": best, "context": context})
    atomic_write(os.path.join(out, "results.md"), lambda fh: fh.write(markdown(results, best, context).encode()))
    names = ["results.json", "results.md", "comparison.png", "confusion.png"]
    paths = [os.path.join(out, n) for n in names]
    _comparison_plot(results, paths[2])
    _confusion_plot(best_metrics, f"{best['head']} on {best['features']}", paths[3])
    if probas is not None:
        paths.append(os.path.join(out, "reliability.png"))
        reliability_plot(probas, classes, y_test, f"{best['head']} on {best['features']}", paths[-1])
    return paths


def reliability_plot(probas, classes, y_test, title: str, path: str) -> None:
    """Reliability diagram of test probabilities ``(raw, calibrated)``: accuracy against confidence per
    bin, before and after temperature scaling; the diagonal is perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertfeat.classify.calibration import ece, label_index, reliability

    y_idx = label_index(classes, [str(v) for v in y_test])
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--")
    for name, proba in zip(("raw", "calibrated"), probas):
        rel = reliability(proba, y_idx)
        ax.plot(rel["confidence"], rel["accuracy"], marker="o", label=f"{name}: ECE {ece(proba, y_idx):.4f}")
    ax.set_xlabel("confidence (top class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(f"reliability (15 bins), test set: {title}", fontsize=9)
    _save(fig, path)
    plt.close(fig)


def _save(fig, path: str) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))


def _comparison_plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r.get("accuracy") is not None]  # screened-out rows have no test score
    labels = [f"{r['head']}\n{r['features']}" for r in results]
    x = np.arange(len(results))
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(6, 1.1 * len(results)), 6.5), sharex=True,
                                  gridspec_kw={"height_ratios": [2, 1]})
    ax.bar(x - 0.2, [r["accuracy"] for r in results], 0.4, label="accuracy")
    ax.bar(x + 0.2, [r["macro_f1"] for r in results], 0.4, label="macro-F1")
    low = min(min(r["accuracy"], r["macro_f1"]) for r in results)
    ax.set_ylim(max(0, low - 0.05), 1)
    ax.set_ylabel("test score")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 1.12), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax2.bar(x, [r["fit_seconds"] for r in results], 0.5, color="gray")
    ax2.set_ylabel("fit s (tuning incl.)")
    ax2.set_xticks(x, labels, fontsize=8)
    fig.suptitle("bench: test accuracy / macro-F1 and fit time")
    _save(fig, path)
    plt.close(fig)


def _confusion_plot(metrics: dict, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(metrics["labels"])
    size = min(24, max(5, 0.28 * n + 3))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), metrics["labels"], rotation=90, fontsize=8 if n < 30 else 5)
    ax.set_yticks(range(n), metrics["labels"], fontsize=8 if n < 30 else 5)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (row-normalized): {title}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)
    plt.close(fig)

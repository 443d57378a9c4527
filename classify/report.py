"""bench output: the comparison table, results.json / results.md / results.html, and the plots."""
from __future__ import annotations

import os

import numpy as np

from bertfeat.cache import atomic_write, atomic_write_json

COLUMNS = [("head", "{:<9}"), ("features", "{:<22}"), ("cv_score", "{:>9.4f}"), ("accuracy", "{:>9.4f}"),
           ("macro_f1", "{:>9.4f}"), ("log_loss", "{:>9.4f}"), ("ece_raw", "{:>8.4f}"), ("ece", "{:>8.4f}"),
           ("fit_seconds", "{:>8.1f}"), ("predict_ms_per_1k", "{:>9.1f}")]
HEADERS = {"head": "head", "features": "features", "cv_score": "cv score", "accuracy": "accuracy",
           "macro_f1": "macro-F1", "macro_precision": "macro-P", "macro_recall": "macro-R", "log_loss": "log loss",
           "ece_raw": "ECE raw", "ece": "ECE cal", "fit_seconds": "fit s", "predict_ms_per_1k": "ms/1k",
           "fold1": "fold-1 score", "micro_f1": "micro-F1", "samples_f1": "samples-F1",
           "subset_accuracy": "subset acc", "hamming_loss": "Hamming loss", "jaccard": "Jaccard", "roc_auc": "ROC-AUC"}


def _cell(fmt: str, value) -> str:
    """A formatted cell; a value a row lacks (a fine-tuned reference row has no CV) prints as '-'."""
    if value is None:
        return fmt.replace(".4f", "").replace(".1f", "").format("-")
    return fmt.format(value)


def params_text(params: dict) -> str:
    def value(v):
        if isinstance(v, dict):  # a vote's members and their weights
            return "; ".join(f"{k} {w:g}" if isinstance(w, float) else f"{k} {w}" for k, w in v.items())
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k.split('__')[-1]}={value(v)}" for k, v in (params or {}).items()) or "defaults"


def probe_line(context: dict) -> str | None:
    """The fine-tune probe's advice (bertfeat/probe.py: would fine-tuning the encoder gain?) and what
    ``--finetune auto`` did with it; None without a probe."""
    probe = context.get("finetune_probe")
    if not probe:
        return None
    return probe["advice"] + (f"; --finetune auto: {probe['auto']}" if probe.get("auto") else "")


def screened(r: dict) -> bool:
    """A candidate that successive halving stopped after its first fold: one fold's score, no test scores."""
    # macro-F1, not accuracy: every scored row has it, single- or multi-label (whose rows have no accuracy)
    return r.get("macro_f1") is None and not r.get("fine_tuned")


def _fixed(results: list[dict], columns: list[tuple]) -> list[str]:
    """Fixed-width lines; the text columns widen to their longest value (a view of four parts is 30
    characters)."""
    widened = []
    for c, fmt in columns:
        if fmt.startswith("{:<"):
            width = max([int(fmt[3:-1])] + [len(str(r.get(c))) + 1 for r in results])
            fmt = f"{{:<{width}}}"
        widened.append((c, fmt))
    lines = ["".join(fmt.replace(".4f", "").replace(".1f", "").format(HEADERS[c]) for c, fmt in widened) + "  params"]
    for r in results:
        lines.append("".join(_cell(fmt, r.get(c)) for c, fmt in widened) + "  " + params_text(r["params"]))
    return lines


def table(results: list[dict], columns: list[tuple] = COLUMNS) -> str:
    """Fixed-width table, one row per (head, features), in the order given (sorted by CV score); the
    candidates stopped after round 1 follow under their own heading, with their first fold's score.
    ``columns``: (key, format) pairs; multi-label rows have their own (``report_multi.COLUMNS``)."""
    lines = _fixed([r for r in results if not screened(r)], columns)
    stopped = [r for r in results if screened(r)]
    if stopped:
        lines += ["", "stopped after round 1 (scored on the first fold only; not a CV mean, no test scores):"]
        lines += _fixed([{**r, "fold1": r["cv_score"]} for r in stopped],
                        [COLUMNS[0], COLUMNS[1], ("fold1", "{:>13.4f}"), ("fit_seconds", "{:>8.1f}")])
    return "\n".join(lines)


def _md_cell(r: dict, c: str, select: str) -> str:
    v = r.get(c)
    if v is None:
        return "-"
    if c == "cv_score" and r.get(f"cv_std_{select}") is not None:
        return f"{v:.4f} ± {r[f'cv_std_{select}']:.4f}"
    if isinstance(v, float):
        return f"{v:.1f}" if c in ("fit_seconds", "predict_ms_per_1k") else f"{v:.4f}"
    return str(v)


def md_table(results: list[dict], cols: list[str], select: str) -> list[str]:
    """The fully scored rows as a Markdown table of ``cols`` and their params."""
    return (["| " + " | ".join(HEADERS[c] for c in cols) + " | params |", "|" + "---|" * (len(cols) + 1)]
            + ["| " + " | ".join(_md_cell(r, c, select) for c in cols) + f" | {params_text(r['params'])} |"
               for r in results if not screened(r)])


def markdown(results: list[dict], best: dict, context: dict) -> str:
    select = context.get("select", "accuracy")
    out = [f"# bench: {context.get('train')} -> {context.get('test')}", "",
           f"Encoder `{context.get('model')}`; {context.get('n_train')} train / {context.get('n_test')} test texts; "
           f"{context.get('cv')}-fold CV on the training set picks the best by {select} "
           f"(tuned: {context.get('tune')}); cv score is the mean ± std over folds. log loss and ECE (15 bins) "
           "on the test set: ECE raw before, ECE cal after temperature scaling fit on out-of-fold "
           "probabilities.", "", *md_table(results, [c for c, _ in COLUMNS], select)]
    stopped = [r for r in results if screened(r)]
    if stopped:
        out += ["", "## Stopped after round 1", "",
                "Successive halving scored these on the first CV fold only and dropped them: a first-fold "
                "score is not a CV mean, and they have no test scores.", "",
                f"| head | features | first-fold {select} | fit s (fold 1) | params |", "|---|---|---|---|---|"]
        out += [f"| {r['head']} | {r['features']} | {r['cv_score']:.4f} | {r['fit_seconds']:.1f} | "
                f"{params_text(r['params'])} |" for r in stopped]
    out += ["", f"**Best by CV:** {best['head']} on {best['features']} — CV {best['cv_score']:.4f}, "
                f"test accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}, ECE {best['ece_raw']:.4f} "
                f"-> {best['ece']:.4f} calibrated.", ""]
    selection = context.get("selection") or {}
    for s in selection.get("skipped", []):
        out.append(f"- skipped {s['head']} on {s['features']}: {s['why']}")
    if "vote" in selection:
        out.append(f"- soft vote weights: {selection['vote']['weights']}")
    if probe_line(context):
        out.append(f"- {probe_line(context)}")
    out.append("")
    return "\n".join(out)


def write_report(out: str, results: list[dict], best: dict, best_metrics: dict, context: dict, probas=None,
                 classes=None, y_test=None, texts=None, facts=None) -> list[str]:
    """Write results.json, results.md, results.html (``report_html``: the page a person reads; ``texts``, the
    test texts, give the confused pairs their examples; ``facts``: data file hashes, model_id, versions,
    seed), comparison.png, confusion.png and (given the best head's test probabilities before and after
    calibration) reliability.png under ``out``; returns the paths."""
    from bertfeat.classify.report_html import page

    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "results.json"), {"results": results, "best": best, "context": context})
    atomic_write(os.path.join(out, "results.md"), lambda fh: fh.write(markdown(results, best, context).encode()))
    report = page(results, best, best_metrics, context, probas, classes, y_test, texts, facts)
    atomic_write(os.path.join(out, "results.html"), lambda fh: fh.write(report.encode()))
    names = ["results.json", "results.md", "results.html", "comparison.png", "confusion.png"]
    paths = [os.path.join(out, n) for n in names]
    comparison_plot(results, paths[3])
    _confusion_plot(best_metrics, f"{best['head']} on {best['features']}", paths[4])
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


SCORES = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))  # the comparison plot's two test scores


def comparison_plot(results: list[dict], path: str, scores=SCORES) -> None:
    """Horizontal bars, one row per scored candidate: its name on its own line of the y axis, so long
    view names never run into each other. ``scores``: the two (key, name) test scores drawn side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (a, a_name), (b, b_name) = scores
    results = [r for r in results if r.get(a) is not None]  # screened-out rows have no test score
    labels = [f"{r['head']}  {r['features']}" for r in results]
    y = np.arange(len(results))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.42 * len(results)), sharey=True,
                                  gridspec_kw={"width_ratios": [2, 1]})
    ax.barh(y - 0.2, [r[a] for r in results], 0.4, label=a_name)
    ax.barh(y + 0.2, [r[b] for r in results], 0.4, label=b_name)
    low = min(min(r[a], r[b]) for r in results)
    ax.set_xlim(max(0, low - 0.05), 1)
    ax.set_xlabel("test score")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # the table's order, best CV first
    ax.legend(loc="lower left", ncol=2, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax2.barh(y, [r["fit_seconds"] for r in results], 0.5, color="gray")
    ax2.set_xlabel("fit s (tuning incl.)")
    fig.suptitle(f"bench: test {a_name} / {b_name} and fit time")
    _save(fig, path)
    plt.close(fig)


def _confusion_plot(metrics: dict, title: str, path: str) -> None:
    """Row-normalized confusion matrix; above 30 classes only the classes of the most frequent errors
    (a 77 x 77 grid cannot be read at a glance: results.html lists the confused pairs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    labels = list(metrics["labels"])
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    if len(labels) > 30:
        off = cm - np.diag(np.diag(cm))
        keep = []
        for flat in np.argsort(-off, axis=None, kind="stable"):
            i, j = divmod(int(flat), len(labels))
            if off[i, j] == 0 or len(set(keep) | {i, j}) > 20:
                break
            keep += [k for k in (i, j) if k not in keep]
        keep = sorted(keep) or [0]
        title += f"; the {len(keep)} classes of the most frequent errors, of {len(labels)}"
        cm, norm, labels = cm[np.ix_(keep, keep)], norm[np.ix_(keep, keep)], [labels[k] for k in keep]
    n = len(labels)
    size = max(5, 0.4 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (row-normalized): {title}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)
    plt.close(fig)

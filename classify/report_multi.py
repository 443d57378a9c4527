"""bench output for many labels per text: results.json / results.md / results.html and comparison.png.

The single-label report's helpers (``report``, ``report_html``, ``svg``) given the multi-label columns. No
confusion matrix and no confused pairs: a text with several labels falls in no one cell. In their place
the per-label table (support, precision, recall, F1, threshold), the decision rule with every rule's nested
CV score, per-label F1 bars and a reliability diagram of every (text, label) probability.
"""
from __future__ import annotations

import os

import numpy as np

from bertfeat.cache import atomic_write, atomic_write_json
from bertfeat.classify.report import comparison_plot, md_table, screened

# the printed table and results.md
COLUMNS = [("head", "{:<9}"), ("features", "{:<22}"), ("cv_score", "{:>9.4f}"), ("macro_f1", "{:>9.4f}"),
           ("micro_f1", "{:>9.4f}"), ("samples_f1", "{:>11.4f}"), ("subset_accuracy", "{:>11.4f}"),
           ("hamming_loss", "{:>13.4f}"), ("jaccard", "{:>8.4f}"), ("roc_auc", "{:>8.4f}"),
           ("fit_seconds", "{:>8.1f}"), ("predict_ms_per_1k", "{:>9.1f}")]
# results.html's leaderboard: column, title, better ("max"/"min"), format (report_html.COLUMNS' shape)
HTML_COLUMNS = [("macro_f1", "macro-F1", "max", "{:.4f}"), ("micro_f1", "micro-F1", "max", "{:.4f}"),
                ("samples_f1", "samples-F1", "max", "{:.4f}"), ("subset_accuracy", "subset accuracy", "max", "{:.4f}"),
                ("hamming_loss", "Hamming loss", "min", "{:.4f}"), ("jaccard", "Jaccard", "max", "{:.4f}"),
                ("roc_auc", "macro ROC-AUC", "max", "{:.4f}"), ("fit_seconds", "fit s", "min", "{:.1f}"),
                ("predict_ms_per_1k", "predict ms / 1,000", "min", "{:.1f}"), ("size", "model size", "min", None)]
# the decision rules thresholds.choose scores (its "rules" keys)
RULES = {"global": "one threshold for every label", "per_label": "a threshold per label"}
AT_LEAST_ONE = "a text that clears no threshold gets its most probable label"
FIGURES = (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("samples_f1", "samples-F1"),
           ("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"), ("jaccard", "Jaccard"),
           ("roc_auc", "ROC-AUC"))


def chosen_by(context: dict) -> str:
    """'3-fold CV macro_f1 (the multi-label default)': what picked the best."""
    from bertfeat.classify.thresholds import DEFAULT_SELECT

    select = context.get("select")
    return f"{context.get('cv')}-fold CV {select}" + (" (the multi-label default)" if select == DEFAULT_SELECT else "")


def best_line(best: dict, context: dict) -> str:
    """The one sentence on the best candidate that bench prints and results.md / results.html open with."""
    return (f"best by {chosen_by(context)}: {best['head']} on {best['features']} (cv {best['cv_score']:.4f}, test "
            f"macro-F1 {best['macro_f1']:.4f}, micro-F1 {best['micro_f1']:.4f}, samples-F1 {best['samples_f1']:.4f}, "
            f"subset accuracy {best['subset_accuracy']:.4f})")


def rule_name(rule: str) -> str:
    """A ``thresholds.choose`` rule key ("global", "per_label+one") in words."""
    kind, _, one = rule.partition("+")
    return RULES[kind] + (f"; {AT_LEAST_ONE}" if one else "")


def rule_text(best: dict, metrics: dict) -> str:
    """The chosen rule with its thresholds: the one global value, or the per-label range."""
    t = [v["threshold"] for v in metrics["per_label"].values() if v["threshold"] is not None]
    key = best["rule"] + ("+one" if best.get("at_least_one") else "")
    values = f"{t[0]:.2f}" if best["rule"] == "global" else f"{min(t):.2f} to {max(t):.2f}"
    return f"{key} ({values}): {rule_name(key)}"


def _threshold(v: dict) -> str:
    """A label's threshold; none for a test label the model never learned (never predicted)."""
    return "not learned" if v["threshold"] is None else f"{v['threshold']:.2f}"


def _num(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def per_label_rows(metrics: dict) -> list[tuple]:
    """(label, figures) of the test set, most frequent label first."""
    return sorted(metrics["per_label"].items(), key=lambda kv: (-kv[1]["support"], kv[0]))


def markdown(results: list[dict], best: dict, metrics: dict, context: dict) -> str:
    select = context.get("select")
    rules = (context.get("selection") or {}).get("rules", {})
    line = best_line(best, context)
    out = [f"# bench (multi-label): {context.get('train')} -> {context.get('test')}", "",
           f"Encoder `{context.get('model')}`; {context.get('n_train')} train / {context.get('n_test')} test texts, "
           f"{len(metrics['per_label'])} labels, {metrics['cardinality']:.2f} per test text "
           f"({metrics['predicted_cardinality']:.2f} predicted). Each candidate's probabilities are calibrated per "
           "label (Platt, on out-of-fold scores) and its decision rule chosen by nested CV on them; cv score is "
           f"that nested {select}. The other columns on the test set.", "",
           *md_table(results, [c for c, _ in COLUMNS], select), "",
           f"**{line[0].upper() + line[1:]}.** Hamming loss "
           f"{best['hamming_loss']:.4f}, Jaccard {best['jaccard']:.4f}, ROC-AUC {_num(best.get('roc_auc'))}.", "",
           "## Decision rule", "", f"Chosen: {rule_text(best, metrics)}.", "",
           f"| rule | nested CV {select} |", "|---|---|"]
    chosen = best["rule"] + ("+one" if best.get("at_least_one") else "")
    out += [f"| {'**' + k + '** (chosen)' if k == chosen else k}: {rule_name(k)} | {v:.4f} |" for k, v in rules.items()]
    out += ["", "## Per label (test set)", "", "| label | support | precision | recall | F1 | threshold |",
            "|---|---|---|---|---|---|"]
    out += [f"| {name} | {v['support']} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | "
            f"{_threshold(v)} |" for name, v in per_label_rows(metrics)]
    unseen = context.get("unseen_test_labels") or {}
    if unseen:
        out += ["", "Test labels the training data never had (never predicted, counted as misses): "
                + ", ".join(f"{k} ({n} texts)" for k, n in unseen.items()) + "."]
    out.append("")
    return "\n".join(out)


def label_reliability(P: np.ndarray, Y: np.ndarray) -> tuple[list, list, float]:
    """Every (text, label) probability in equal-width bins: mean probability, share that had the label, and
    the expected calibration error (the bins' gaps weighted by their share of cells)."""
    from bertfeat.classify.calibration import ECE_BINS

    p, y = np.asarray(P, dtype=float).ravel(), np.asarray(Y, dtype=float).ravel()
    which = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    conf, rate, gap = [], [], 0.0
    for b in np.unique(which):
        cells = which == b
        conf.append(float(p[cells].mean()))
        rate.append(float(y[cells].mean()))
        gap += cells.mean() * abs(conf[-1] - rate[-1])
    return conf, rate, float(gap)


def _rules_table(rules: dict, chosen: str) -> str:
    from bertfeat.classify.report_html import esc

    out = ['<table id="rules"><tr><th class=t>rule</th><th class=t>decides</th><th>nested CV score</th></tr>']
    out += [f"<tr{' class=chosen' if k == chosen else ''}><td class=t>{esc(k)}{' ★ chosen' if k == chosen else ''}"
            f"</td><td class=t>{esc(rule_name(k))}</td><td>{v:.4f}</td></tr>" for k, v in rules.items()]
    return "\n".join(out) + "</table>"


def _labels_table(metrics: dict) -> str:
    from bertfeat.classify.report_html import esc

    out = ['<table id="labels"><tr><th class=t>label</th><th>support</th><th>precision</th><th>recall</th>'
           "<th>F1</th><th>threshold</th></tr>"]
    out += [f"<tr><td class=t>{esc(name)}</td><td>{v['support']}</td><td>{v['precision']:.4f}</td>"
            f"<td>{v['recall']:.4f}</td><td>{v['f1']:.4f}</td><td>{_threshold(v)}</td></tr>"
            for name, v in per_label_rows(metrics)]
    return "\n".join(out) + "</table>"


def page(results: list[dict], best: dict, metrics: dict, context: dict, probas=None, classes=None, y_test=None,
         facts=None) -> str:
    """results.html for a multi-label bench, in the single-label page's style."""
    from bertfeat.classify import svg
    from bertfeat.classify.multilabel import indicator
    from bertfeat.classify.report_html import CSS, esc, facts_table, figure, leaderboard

    facts = facts or {}
    select = context.get("select")
    full = [r for r in results if not screened(r)]
    title = f"{best['head']} on {best['features']}"
    chosen = best["rule"] + ("+one" if best.get("at_least_one") else "")
    figures = ", ".join(f"{name} {_num(best.get(key))}" for key, name in FIGURES)
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>bench: {esc(title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>bench (multi-label): {esc(context.get('train'))} → {esc(context.get('test'))}</h1>",
             f'<p id="chosen">Chosen by {esc(chosen_by(context))}: <b>{esc(title)}</b> — CV {best["cv_score"]:.4f}; '
             f"test {esc(figures)}. {metrics['predicted_cardinality']:.2f} labels predicted per text, "
             f"{metrics['cardinality']:.2f} true; {len(metrics['per_label'])} labels. Decision rule "
             f"{esc(rule_text(best, metrics))}.</p>",
             "<h2>Leaderboard</h2><p class=note>Every candidate, best CV score first. CV: the nested cross-validated "
             f"{esc(select)} of its calibrated out-of-fold probabilities under its chosen decision rule (the chosen "
             "row by it); the other columns on the test set. Green: the best value of each column. Model size: "
             "the head file (the chosen row: its whole model folder).</p>",
             leaderboard(full, best, select, facts.get("model_bytes"), HTML_COLUMNS),
             "<h2>Decision rule</h2><p class=note>The rules the chosen candidate's thresholds were picked under, "
             "each scored by nested CV (thresholds fit on the other folds' out-of-fold probabilities); a tie goes "
             "to the simpler rule.</p>", _rules_table((context.get("selection") or {}).get("rules", {}), chosen)]
    plots = []
    if full:
        points = [(f"#{i} {r['head']} {r['features']}", r["predict_ms_per_1k"], r[select]) for i, r in
                  enumerate(full, 1) if r.get("predict_ms_per_1k") is not None and r.get(select) is not None]
        if points:
            plots.append(figure(svg.pareto(points, "predict ms per 1,000 texts", f"test {select}"),
                                f"Test {select} against predict cost (# = leaderboard row). Filled, joined by the red "
                                "line: the Pareto front, where nothing is both cheaper and better."))
    rows = sorted(per_label_rows(metrics), key=lambda kv: (kv[1]["f1"], kv[0]))
    plots.append(figure(svg.bars([n for n, _ in rows], [v["f1"] for _, v in rows],
                                 [f"{v['f1']:.3f} (n={v['support']})" for _, v in rows], "per-label",
                                 f"test F1 per label, {title} (worst first)"),
                        "Per-label F1 of the chosen model on the test set, at its thresholds; n = test texts "
                        "with the label."))
    if probas is not None and classes is not None and y_test is not None:
        conf, rate, gap = label_reliability(probas, indicator(y_test, list(classes))[0])
        plots.append(figure(svg.reliability([(f"calibrated: ECE {gap:.4f}", conf, rate)],
                                            "predicted probability (every label of every text)",
                                            "share that has the label"),
                            "Reliability (15 bins), test set: how often a text has a label against the calibrated "
                            "probability given to it, all labels pooled; the diagonal is perfect."))
    parts += ["<h2>Plots</h2><div class=plots>", *plots, "</div>",
              "<h2>Per label</h2><p class=note>Test set, most frequent label first; threshold: the one the "
              "decision rule gave the label.</p>", _labels_table(metrics)]
    unseen = context.get("unseen_test_labels") or {}
    if unseen:
        parts.append("<p class=note>Test labels the training data never had (never predicted, counted as misses): "
                     + esc(", ".join(f"{k} ({n} texts)" for k, n in unseen.items())) + ".</p>")
    parts += ["<h2>Run</h2>", facts_table(context, facts), "</body></html>"]
    return "\n".join(parts)


def write_report(out: str, results: list[dict], best: dict, best_metrics: dict, context: dict, probas=None,
                 classes=None, y_test=None, texts=None, facts=None) -> list[str]:
    """``report.write_report`` for a multi-label bench (the same arguments; ``probas``: the best head's
    calibrated test probabilities, texts x labels in ``classes`` order; ``texts`` unused): results.json
    (with the per-label table), results.md, results.html and comparison.png; returns the paths."""
    os.makedirs(out, exist_ok=True)
    names = ["results.json", "results.md", "results.html", "comparison.png"]
    paths = [os.path.join(out, n) for n in names]
    atomic_write_json(paths[0], {"results": results, "best": best, "context": context,
                                 "per_label": best_metrics["per_label"]})
    md = markdown(results, best, best_metrics, context)
    atomic_write(paths[1], lambda fh: fh.write(md.encode()))
    report = page(results, best, best_metrics, context, probas, classes, y_test, facts)
    atomic_write(paths[2], lambda fh: fh.write(report.encode()))
    comparison_plot(results, paths[3], (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1")))
    return paths

"""results.html: the bench report as one self-contained page (inline CSS and SVG: no script, no network).

Sections: the chosen model, the leaderboard (fully cross-validated candidates; those stopped after round 1
apart, their first-fold score named as such), the plots (score against predict cost with the Pareto
front, per-class F1, reliability, the confusion matrix up to ``MAX_MATRIX`` classes), the most-confused
pairs with example texts, and the run's facts. Everything is drawn from what the bench already holds.
"""
from __future__ import annotations

import html
import json

import numpy as np

from bertfeat.classify import svg
from bertfeat.classify.report import params_text, probe_line, screened

MAX_MATRIX = 30  # above this a confusion matrix cannot be read at a glance: the pairs table says it instead
PAIRS = 15
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 8px;white-space:nowrap;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}
table{font-size:13px}td.t,th.t{text-align:left}
tr.chosen td{background:#fff6d5;font-weight:600}td.top{color:#0a6b2d;font-weight:700}
.note{color:#666;font-size:13px}.plots{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
figure{margin:0}figcaption{font-size:13px;color:#555;max-width:660px}td.ex{text-align:left;max-width:360px;white-space:normal}
code{font-size:12px;word-break:break-all}
td.p,td.v{text-align:left;white-space:normal;max-width:220px;font-size:12px}
"""
# column, title, better ("max"/"min"), format
COLUMNS = [("accuracy", "test accuracy", "max", "{:.4f}"), ("macro_f1", "macro-F1", "max", "{:.4f}"),
           ("log_loss", "log loss", "min", "{:.4f}"), ("ece_raw", "ECE raw", "min", "{:.4f}"),
           ("ece", "ECE cal", "min", "{:.4f}"), ("fit_seconds", "fit s", "min", "{:.1f}"),
           ("predict_ms_per_1k", "predict ms / 1,000", "min", "{:.1f}"), ("size", "model size", "min", None)]


def esc(v) -> str:
    return html.escape(str(v))


def size_text(n) -> str:
    if n is None:
        return "–"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def is_chosen(r: dict, best: dict) -> bool:
    return (r["head"], r["features"], r.get("params")) == (best["head"], best["features"], best.get("params"))


def _cv(r: dict, select: str) -> str:
    if r.get("cv_score") is None:
        return "–"
    std = r.get(f"cv_std_{select}")
    cell = f"{r['cv_score']:.4f}" + (f" ± {std:.4f}" if std is not None else "")
    return cell + (" (val)" if r.get("fine_tuned") else "")


def leaderboard(rows: list[dict], best: dict, select: str, chosen_bytes, columns: list[tuple] = COLUMNS) -> str:
    """The fully scored rows: the chosen one marked, the best value of each column in green. ``columns``:
    (key, title, better, format); multi-label rows have their own (``report_multi.HTML_COLUMNS``)."""
    rows = [{**r, "size": chosen_bytes if is_chosen(r, best) and chosen_bytes else r.get("head_bytes")} for r in rows]
    tops = {}
    for col, _, better, _ in columns + [("cv_score", "", "max", "")]:
        values = [r[col] for r in rows if r.get(col) is not None]
        if values:
            tops[col] = max(values) if better == "max" else min(values)
    # multi-label rows have one nested-CV score each, no spread over folds
    spread = " mean ± std" if any(r.get(f"cv_std_{select}") is not None for r in rows) else ""
    head = ("<tr><th>#</th><th class=t>head</th><th class=t>view</th><th class=t>params</th>"
            f"<th>CV {esc(select)}{spread}</th>" + "".join(f"<th>{t}</th>" for _, t, _, _ in columns) + "</tr>")
    out = [f'<table id="leaderboard">{head}']
    for i, r in enumerate(rows, 1):
        chosen = is_chosen(r, best)
        cells = [f"<td>{i}{' ★ chosen' if chosen else ''}</td>", f"<td class=t>{esc(r['head'])}</td>",
                 f"<td class=v>{_view(r['features'])}</td>", f"<td class=p>{esc(_short_params(r))}</td>",
                 _td(_cv(r, select), r.get("cv_score") is not None and r.get("cv_score") == tops.get("cv_score"))]
        for col, _, _, fmt in columns:
            v = r.get(col)
            shown = "–" if v is None else size_text(v) if fmt is None else fmt.format(v)
            cells.append(_td(shown, v is not None and v == tops.get(col)))
        out.append(f'<tr{" class=chosen" if chosen else ""}>' + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _view(features: str) -> str:
    """A view name that may wrap after each '+' (four-part views are 30 characters)."""
    return "+<wbr>".join(esc(part) for part in str(features).split("+"))


def _short_params(r: dict) -> str:
    members = (r.get("params") or {}).get("members")
    if isinstance(members, dict):  # the weights are in the chosen line above the table
        return f"soft vote of {len(members)} members"
    return params_text(r.get("params"))


def _td(value: str, top: bool) -> str:
    return f"<td class=top>{esc(value)}</td>" if top else f"<td>{esc(value)}</td>"


def screened_table(rows: list[dict], select: str) -> str:
    out = ['<table id="round1"><tr><th class=t>head</th><th class=t>view</th><th class=t>params</th>'
           f"<th>first-fold {esc(select)} (1 fold, not a CV mean)</th><th>fit s (fold 1)</th></tr>"]
    for r in rows:
        out.append(f"<tr><td class=t>{esc(r['head'])}</td><td class=t>{esc(r['features'])}</td>"
                   f"<td class=t>{esc(params_text(r.get('params')))}</td><td>{r['cv_score']:.4f}</td>"
                   f"<td>{r['fit_seconds']:.1f}</td></tr>")
    return "\n".join(out) + "</table>"


def confused_pairs(labels: list[str], cm: np.ndarray, y_test, pred, texts) -> list[dict]:
    """The off-diagonal cells with the most test texts, largest first, each with up to two of them."""
    off = np.array(cm, dtype=float)
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:PAIRS]
    y_test, pred = np.asarray(y_test, dtype=str), np.asarray(pred, dtype=str)
    out = []
    for flat in order:
        i, j = divmod(int(flat), len(labels))
        if off[i, j] == 0:
            break
        rows = np.flatnonzero((y_test == str(labels[i])) & (pred == str(labels[j])))[:2] if texts else []
        out.append({"true": labels[i], "predicted": labels[j], "count": int(off[i, j]),
                    "share": off[i, j] / max(np.sum(cm[i]), 1), "examples": [texts[k] for k in rows]})
    return out


def pairs_table(pairs: list[dict]) -> str:
    if not pairs:
        return '<p id="pairs" class=note>No test text was misclassified.</p>'
    out = ['<table id="pairs"><tr><th class=t>true → predicted</th><th>count</th><th>share of true class</th>'
           "<th class=t>example</th><th class=t>example</th></tr>"]
    for p in pairs:
        ex = [t if len(t) <= 160 else t[:159] + "…" for t in p["examples"]] + ["", ""]
        out.append(f"<tr><td class=t>{esc(p['true'])} → {esc(p['predicted'])}</td><td>{p['count']}</td>"
                   f"<td>{100 * p['share']:.0f}%</td><td class=ex>{esc(ex[0])}</td><td class=ex>{esc(ex[1])}</td></tr>")
    return "\n".join(out) + "</table>"


def facts_table(context: dict, facts: dict) -> str:
    rows = []
    for role in ("train", "test"):
        f = (facts.get("files") or {}).get(role)
        detail = (f"{size_text(f['bytes'])}, sha256 <code>{esc(f['sha256'])}</code>" if f else
                  "not a single file: no hash")
        rows.append((f"{role} data", f"<code>{esc(context.get(role))}</code> ({context.get(f'n_{role}')} texts; "
                                     f"{detail})"))
    rows += [("encoder", f"<code>{esc(context.get('model'))}</code>"),
             ("model_id", f"<code>{esc(facts.get('model_id', '–'))}</code>"),
             ("selection", esc(", ".join([f"{context.get('cv')}-fold CV by {context.get('select')}"] + [
                 f"{name}: {context[key]}" for key, name in (("tune", "tuned"), ("class_weight", "class weight"))
                 if key in context])  # single-label options; a multi-label context has neither
                 + f"; {(context.get('selection') or {}).get('candidates', '?')} candidates scored")),
             ("seed", esc(facts.get("seed", "–"))),
             ("wall time", esc(f"{context.get('bench_seconds', 0):.1f} s (embedding, CV, refits, test scores)")),
             ("created", esc(facts.get("created", "–"))),
             ("versions", "<code>" + esc(json.dumps(facts.get("versions") or {}))[:600] + "</code>")]
    for s in (context.get("selection") or {}).get("skipped", []):
        rows.append(("skipped", esc(f"{s['head']} on {s['features']}: {s['why']}")))
    if probe_line(context):
        rows.append(("fine-tune probe", esc(probe_line(context))))
    return '<table id="facts">' + "".join(f"<tr><th class=t>{k}</th><td class=t>{v}</td></tr>" for k, v in rows) + \
        "</table>"


def figure(svg_text: str, caption: str) -> str:
    return f"<figure>{svg_text}<figcaption>{esc(caption)}</figcaption></figure>"


def page(results: list[dict], best: dict, metrics: dict, context: dict, probas=None, classes=None, y_test=None,
         texts=None, facts=None) -> str:
    """The whole page as a string."""
    from bertfeat.classify.calibration import label_index, reliability

    facts = facts or {}
    select = context.get("select", "accuracy")
    full = [r for r in results if not screened(r)]
    stopped = [r for r in results if screened(r)]
    title = f"{best['head']} on {best['features']}"
    std = best.get(f"cv_std_{select}")
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>bench: {esc(title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>bench: {esc(context.get('train'))} → {esc(context.get('test'))}</h1>",
             f'<p id="chosen">Chosen by {context.get("cv")}-fold CV {esc(select)}: <b>{esc(title)}</b> '
             f"({esc(params_text(best.get('params')))}) — CV {best['cv_score']:.4f}"
             + (f" ± {std:.4f}" if std is not None else "")
             + f"; test accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}, ECE {best['ece_raw']:.4f}"
             f" → {best['ece']:.4f} calibrated.</p>",
             "<h2>Leaderboard</h2><p class=note>Fully cross-validated candidates, best CV score first. CV: mean ± "
             "std over folds on the training set (the chosen row by it); the other columns on the test set. "
             "Green: the best value of each column. Model size: the head file (the chosen row: its whole model "
             "folder).</p>", leaderboard(full, best, select, facts.get("model_bytes"))]
    if stopped:
        parts += ["<h2>Stopped after round 1</h2><p class=note>Successive halving scored these on the first "
                  "CV fold only and dropped them: their score is one fold's, not comparable with a CV mean, "
                  "and they have no test scores.</p>", screened_table(stopped, select)]
    plots = []
    scored = [r for r in full if r.get("predict_ms_per_1k") is not None]
    if scored:
        points = [(f"#{full.index(r) + 1} {r['head']} {r['features']}", r["predict_ms_per_1k"], r[select])
                  for r in scored]
        plots.append(figure(svg.pareto(points, "predict ms per 1,000 texts", f"test {select}"),
                            f"Test {select} against predict cost (# = leaderboard row). Filled, joined by the red "
                            "line: the Pareto front, where nothing is both cheaper and better."))
    per = metrics["per_class"]
    names = sorted(per, key=lambda n: (per[n]["f1"], n))
    plots.append(figure(svg.bars(names, [per[n]["f1"] for n in names],
                                 [f"{per[n]['f1']:.3f} (n={per[n]['support']})" for n in names], "per-class",
                                 f"test F1 per class, {title} (worst first)"),
                        "Per-class F1 of the chosen model on the test set; n = test texts of the class."))
    pred = None
    if probas is not None and classes is not None:
        y_idx = label_index(np.asarray(classes), [str(v) for v in y_test])
        series = [(f"{name}: ECE {best[key]:.4f}", *(reliability(p, y_idx)[k] for k in ("confidence", "accuracy")))
                  for name, key, p in zip(("raw", "calibrated"), ("ece_raw", "ece"), probas)]
        plots.append(figure(svg.reliability(series), "Reliability (15 bins), test set: accuracy against confidence "
                                                     "before and after temperature scaling; the diagonal is perfect."))
        pred = np.asarray(classes)[np.asarray(probas[-1]).argmax(1)]
    labels, cm = metrics["labels"], np.asarray(metrics["confusion_matrix"])
    if len(labels) <= MAX_MATRIX:
        plots.append(figure(svg.confusion([str(v) for v in labels], cm),
                            "Confusion matrix, test set, row-normalized (hover a cell for its count)."))
    parts += ["<h2>Plots</h2><div class=plots>", *plots, "</div>"]
    pairs = confused_pairs([str(v) for v in labels], cm, y_test if y_test is not None else [],
                           pred if pred is not None else [], texts)
    parts += ["<h2>Most-confused pairs</h2><p class=note>The chosen model's most frequent test errors"
              + ("" if len(labels) <= MAX_MATRIX else f" (a {len(labels)}×{len(labels)} matrix is not drawn)")
              + ".</p>", pairs_table(pairs), "<h2>Run</h2>", facts_table(context, facts), "</body></html>"]
    return "\n".join(parts)

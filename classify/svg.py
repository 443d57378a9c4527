"""The report's plots as inline SVG strings, drawn from numbers the bench already has.

No label may cover another: axis and class labels get a row (or column) each, and the free-standing
labels of a scatter plot take the first place around their point that no other label or point holds
(``place_labels``). Every text is written by ``text``, so ``text_boxes`` can check a drawing for overlaps.
"""
from __future__ import annotations

import html
import math
import re

import numpy as np

CHAR = 0.6  # width of a character in font-size units: a generous bound for the sans-serif fonts browsers pick
FONT = 11


def text(x: float, y: float, s: str, size: int = FONT, anchor: str = "start", rotate: bool = False,
         extra: str = "") -> str:
    """A <text> at baseline (x, y); ``rotate`` turns it to read upwards from its anchor."""
    turn = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{turn}{extra}>'
            f"{html.escape(s)}</text>")


def width(s: str, size: int = FONT) -> float:
    return CHAR * size * len(s)


def short(s: str, n: int) -> str:
    """``s`` in at most ``n`` characters, cut in the middle: class names often differ only at the end."""
    if len(s) <= n:
        return s
    head = (n - 1) // 2
    return s[:head] + "…" + s[len(s) - (n - 1 - head):]


def _box(x, y, s, size, anchor):
    w = width(s, size)
    x0 = x - w if anchor == "end" else x - w / 2 if anchor == "middle" else x
    return (x0, y - 0.8 * size, x0 + w, y + 0.25 * size)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def text_boxes(svg: str) -> list[tuple]:
    """The boxes (x0, y0, x1, y1) the texts of ``svg`` cover, as ``text`` lays them out."""
    boxes = []
    for m in re.finditer(r'<text x="([-\d.]+)" y="([-\d.]+)" font-size="(\d+)" text-anchor="(\w+)"'
                         r'( transform="rotate)?[^>]*>([^<]*)</text>', svg):
        x, y, size, s = float(m[1]), float(m[2]), int(m[3]), html.unescape(m[6])
        x0, y0, x1, y1 = _box(x, y, s, size, m[4])
        if m[5]:  # rotated -90 about (x, y): the box turns with it
            x0, y0, x1, y1 = x - (y - y0), y - (x1 - x), x + (y1 - y), y - (x0 - x)
        boxes.append((x0, y0, x1, y1))
    return boxes


def overlaps(svg: str) -> list[tuple]:
    """Pairs of texts in ``svg`` whose boxes intersect (none in a good drawing)."""
    boxes = text_boxes(svg)
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if _overlap(a, b)]


def place_labels(points, labels, bounds, size: int = FONT) -> list[tuple]:
    """(x, y, anchor) for each label near its point, in the first of a ring of places that stays inside
    ``bounds`` (x0, y0, x1, y1) and covers no point and no label placed before it."""
    taken = [(x - 5, y - 5, x + 5, y + 5) for x, y in points]
    out = []
    for (x, y), s in zip(points, labels):
        tries = [(dx * r, dy * r, a) for r in (1, 2, 3, 4) for dx, dy, a in
                 ((7, 4, "start"), (-7, 4, "end"), (0, -8, "middle"), (0, 16, "middle"), (7, -8, "start"),
                  (-7, -8, "end"), (7, 16, "start"), (-7, 16, "end"))]
        for dx, dy, anchor in tries:
            box = _box(x + dx, y + dy, s, size, anchor)
            inside = bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
            if inside and not any(_overlap(box, t) for t in taken):
                break
        else:  # crowded beyond four rings: fall back to the right of the point
            dx, dy, anchor = 7, 4, "start"
        taken.append(_box(x + dx, y + dy, s, size, anchor))
        out.append((x + dx, y + dy, anchor))
    return out


def _svg(w: float, h: float, body: list[str], name: str) -> str:
    return (f'<svg id="{name}" class="plot" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}" '
            f'role="img" font-family="sans-serif">' + "".join(body) + "</svg>")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-9) / n))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (step * m) <= n)
    values = np.arange(math.ceil(lo / step) * step, hi + step / 2, step)
    return [float(v) for v in values if lo - 1e-9 <= v <= hi + 1e-9]


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _axes(x0, y0, x1, y1, xticks, yticks, fx, fy, xlabel, ylabel) -> list[str]:
    """Frame, ticks with labels at least a label's width apart, and the axis titles."""
    out = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#999"/>']
    last = -1e9
    for v, label in xticks:
        x = fx(v)
        if x - last < width(label) + 8:
            continue
        last = x
        out += [f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y1 + 4}" stroke="#999"/>',
                text(x, y1 + 16, label, anchor="middle")]
    for v in yticks:
        y = fy(v)
        out += [f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#eee"/>',
                text(x0 - 6, y + 4, _num(v), anchor="end")]
    out += [text((x0 + x1) / 2, y1 + 34, xlabel, anchor="middle"),
            text(14, (y0 + y1) / 2, ylabel, anchor="middle", rotate=True)]
    return out


def pareto(points: list[tuple], xlabel: str, ylabel: str) -> str:
    """Score (y, higher is better) against cost (x, lower is better) of ``(label, cost, score)`` points;
    the Pareto front (no other point is cheaper and at least as good) drawn as a line, its points filled."""
    W, H, L, R, T, B = 660, 380, 64, 20, 16, 46
    costs = np.array([max(c, 1e-6) for _, c, _ in points])
    scores = np.array([s for _, _, s in points])
    log = costs.max() / costs.min() > 20
    cx = np.log10(costs) if log else costs
    lo, hi = cx.min(), cx.max()
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    slo, shi = scores.min(), scores.max()
    pad = max(0.01, 0.08 * (shi - slo))
    slo, shi = max(0.0, slo - pad), min(1.0, shi + pad) if shi <= 1 else shi + pad

    def fx(v):
        return L + (v - lo) / (hi - lo) * (W - L - R)

    def fy(v):
        return H - B - (v - slo) / (shi - slo) * (H - T - B)

    if log:
        xt = [(e, _num(10 ** e)) for e in range(math.ceil(lo), math.floor(hi) + 1)]
        if len(xt) < 3:
            xt = sorted(xt + [(math.log10(m * 10 ** e), _num(m * 10 ** e)) for e in range(math.floor(lo), math.ceil(hi))
                              for m in (2, 5) if lo <= math.log10(m * 10 ** e) <= hi])
    else:
        xt = [(v, _num(v)) for v in _ticks(lo, hi)]
    body = _axes(L, T, W - R, H - B, xt, _ticks(slo, shi), fx, fy, xlabel + (" (log scale)" if log else ""), ylabel)
    front = [i for i in range(len(points)) if not any(
        (costs[j] <= costs[i] and scores[j] >= scores[i]) and (costs[j] < costs[i] or scores[j] > scores[i])
        for j in range(len(points)))]
    xy = [(fx(cx[i]), fy(scores[i])) for i in range(len(points))]
    line = sorted(xy[i] for i in front)
    if len(line) > 1:
        body.append('<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in line) + '"/>')
    for i, (x, y) in enumerate(xy):
        fill = "#d62728" if i in front else "#fff"
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}" stroke="#d62728">'
                    f"<title>{html.escape(points[i][0])}</title></circle>")
    labels = [p[0] for p in points]
    for (x, y, anchor), s in zip(place_labels(xy, labels, (L + 2, T + 2, W - R - 2, H - B - 2)), labels):
        body.append(text(x, y, s, anchor=anchor))
    return _svg(W, H, body, "pareto")


def bars(names: list[str], values: list[float], notes: list[str], name: str, xlabel: str) -> str:
    """One horizontal bar per name (values in [0, 1]), a row each: as many names as there are, none overlaps."""
    label_chars = min(40, max(len(n) for n in names))
    L, R, T, B, row = 12 + width("x" * label_chars), 110, 30, 8, 16
    W = L + 360 + R
    H = T + row * len(names) + B

    def fx(v):
        return L + v * 360

    body = [text(L + 180, 12, xlabel, anchor="middle")]
    for v in (0, 0.25, 0.5, 0.75, 1):
        body += [f'<line x1="{fx(v):.1f}" y1="{T - 4}" x2="{fx(v):.1f}" y2="{H - B}" stroke="#eee"/>',
                 text(fx(v), T - 6, f"{v:g}", size=10, anchor="middle")]
    for i, (n, v, note) in enumerate(zip(names, values, notes)):
        y = T + i * row
        body += [f'<rect x="{L}" y="{y + 2}" width="{v * 360:.1f}" height="{row - 4}" fill="#4c78a8">'
                 f"<title>{html.escape(n)}: {v:.3f}</title></rect>",
                 text(L - 6, y + 12, short(n, label_chars), anchor="end"), text(fx(1) + 6, y + 12, note)]
    return _svg(W, H, body, name)


def reliability(series: list[tuple], xlabel: str = "confidence (top class probability)",
                ylabel: str = "accuracy") -> str:
    """Accuracy against confidence per bin for ``(name, confidence, accuracy)`` series (or any observed
    rate against a predicted probability: ``xlabel``, ``ylabel``); the diagonal is perfect calibration."""
    S, L, T, B = 340, 56, 16, 46
    W, H = L + S + 20, T + S + B

    def fx(v):
        return L + v * S

    def fy(v):
        return T + S - v * S

    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    body = _axes(L, T, L + S, T + S, [(v, f"{v:g}") for v in ticks], ticks, fx, fy,
                 xlabel, ylabel)
    body.append(f'<line x1="{fx(0)}" y1="{fy(0)}" x2="{fx(1)}" y2="{fy(1)}" stroke="#999" stroke-dasharray="4 3"/>')
    for k, ((name, conf, acc), color) in enumerate(zip(series, ("#ff7f0e", "#1f77b4"))):
        pts = " ".join(f"{fx(c):.1f},{fy(a):.1f}" for c, a in zip(conf, acc))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        body += [f'<circle cx="{fx(c):.1f}" cy="{fy(a):.1f}" r="3" fill="{color}"/>' for c, a in zip(conf, acc)]
        body += [f'<rect x="{L + 10}" y="{T + 10 + 18 * k}" width="12" height="3" fill="{color}"/>',
                 text(L + 28, T + 16 + 18 * k, name)]
    return _svg(W, H, body, "reliability")


def confusion(labels: list[str], cm: np.ndarray) -> str:
    """Row-normalized confusion matrix with the class names along both sides (meant for at most ~30)."""
    n = len(labels)
    cell = max(16, min(30, 560 // max(n, 1)))
    chars = min(24, max(len(s) for s in labels))
    L, T = 30 + width("x" * chars), 30 + width("x" * chars)
    W, H = L + n * cell + 10, T + n * cell + 10
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    body = [text(L + n * cell / 2, 14, "predicted", anchor="middle"),
            text(14, T + n * cell / 2, "true", anchor="middle", rotate=True)]
    for i, lab in enumerate(labels):
        c = i * cell + cell / 2
        body += [text(L - 6, T + c + 4, short(lab, chars), anchor="end"),
                 text(L + c + 4, T - 6, short(lab, chars), rotate=True)]
        for j in range(n):
            v = norm[i, j]
            shade = f"rgb({int(255 - 200 * v)},{int(255 - 150 * v)},{int(255 - 60 * v)})"
            body.append(f'<rect x="{L + j * cell}" y="{T + i * cell}" width="{cell}" height="{cell}" fill="{shade}" '
                        f'stroke="#fff"><title>{html.escape(lab)} → {html.escape(labels[j])}: {int(cm[i, j])}'
                        "</title></rect>")
            if cm[i, j] and cell >= 24:
                body.append(text(L + j * cell + cell / 2, T + i * cell + cell / 2 + 4, str(int(cm[i, j])), size=9,
                                 anchor="middle", extra=' fill="#fff"' if v > 0.5 else ""))
    return _svg(W, H, body, "confusion")

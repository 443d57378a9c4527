"""results.html, the bench report: self-contained, rendered by a real browser (headless Chromium), plots
whose labels never overlap (77 classes, four-part views), and round-1 rows kept apart from fully
cross-validated ones in the page, results.md, the printed table and ``BenchResult.table``."""
import hashlib
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import DEMO_BENCH, DEMO_TRAIN

PLOTS = ("leaderboard", "round1", "pareto", "per-class", "reliability", "confusion", "pairs", "facts")


def chromium() -> str:
    """Chromium on PATH; where it is missing and this is root with apt-get (CI), installed from Debian."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=True, capture_output=True)
        found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium or chromium-browser on PATH: apt-get install -y chromium (needs root)")
    return found


def browse(page, tmp_path, *flags) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, with every host name unresolvable: the page must need no network."""
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
                           *flags, f"file://{page}"], capture_output=True, text=True, timeout=120, check=True)


@DEMO_BENCH
def test_bench_writes_a_self_contained_report_a_browser_renders(demo_bench, tmp_path):
    res, out = demo_bench
    page = os.path.join(out, "results.html")
    with open(page, encoding="utf-8") as fh:
        text = fh.read()
    # self-contained: nothing fetched, nothing run
    assert not re.search(r"<script|<link|<img|\bsrc=|\bhref=|url\(|@import|https?://", text)
    dom = browse(page, tmp_path, "--dump-dom").stdout
    for name in PLOTS:
        assert f'id="{name}"' in dom, name
    assert "<script" not in dom
    # the leaderboard: every fully scored candidate, the chosen one marked, CV mean ± std
    board = dom[dom.index('id="leaderboard"'):dom.index("</table>", dom.index('id="leaderboard"'))]
    full = res.table[res.table["round"] == "full"]
    assert board.count("<tr") == len(full) + 1 and board.count("★ chosen") == 1
    assert re.search(r"\d\.\d{4} ± \d\.\d{4}", board)
    # the run's facts: the data files' hashes and the encoder's identity
    with open(DEMO_TRAIN, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() in dom
    with open(os.path.join(out, "best-model", "manifest.json"), encoding="utf-8") as fh:
        assert json.load(fh)["model_id"] in dom
    shot = tmp_path / "shot.png"
    browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1280) and pixels.std() > 10  # drawn, not a blank page


@DEMO_BENCH
def test_round_one_rows_are_apart_and_say_so(demo_bench):
    from bertfeat.classify.report import table

    res, out = demo_bench
    df = res.table
    stopped = df["round"] == "screened"
    assert stopped.any() and (~stopped).any()
    assert list(stopped) == sorted(stopped)  # the full rows first, then the screened ones
    assert df.loc[stopped, "cv_score"].isna().all() and df.loc[stopped, "first_fold_score"].notna().all()
    assert df.loc[~stopped, "first_fold_score"].isna().all()
    with open(os.path.join(out, "results.md"), encoding="utf-8") as fh:
        md = fh.read()
    main, apart = md.split("## Stopped after round 1")
    n_main = sum(1 for line in main.splitlines() if line.startswith("| ") and "---" not in line) - 1
    assert n_main == (~stopped).sum() and "first-fold accuracy" in apart
    assert sum(1 for line in apart.splitlines() if line.startswith("| ")) - 1 == stopped.sum()
    printed = table(res.rows)
    assert "stopped after round 1 (scored on the first fold only" in printed
    with open(os.path.join(out, "results.html"), encoding="utf-8") as fh:
        html = fh.read()
    section = html[html.index('id="round1"'):]
    assert "first-fold accuracy (1 fold, not a CV mean)" in section
    assert section[:section.index("</table>")].count("<tr") == stopped.sum() + 1


def test_plots_keep_labels_apart_at_77_classes_and_long_views(tmp_path):
    """Banking77's class count and the default bench's longest view names: no text of any plot covers
    another, the matrix gives way to the pairs table, and the PNG confusion shows the confused classes only."""
    from bertfeat.classify import evaluate
    from bertfeat.classify.report import write_report
    from bertfeat.classify.selection import DEFAULT_VIEWS
    from bertfeat.classify.svg import overlaps

    rng = np.random.default_rng(0)
    stems = ["balance_not_updated_after_cheque_or_cash_deposit", "top_up_by_bank_transfer_charge", "pin_blocked",
             "card_payment_not_recognised", "exchange_rate", "verify_source_of_funds", "beneficiary_not_allowed"]
    classes = sorted(f"{stems[i % len(stems)]}_{i}" for i in range(77))
    y = rng.choice(classes, 1500)
    proba = rng.dirichlet(np.ones(77) * 0.05, 1500)
    proba[np.arange(1500), np.searchsorted(classes, y)] += rng.uniform(0, 1.5, 1500)
    proba /= proba.sum(1, keepdims=True)
    pred = np.asarray(classes)[proba.argmax(1)]
    metrics = evaluate(y, pred, classes)
    rows = []
    for k, (head, view) in enumerate((h, v) for v in DEFAULT_VIEWS for h in ("logreg", "lda", "svm", "knn")):
        score = 0.9 - 0.01 * k
        rows.append({"head": head, "features": view, "cv_score": score, "accuracy": score, "macro_f1": score - 0.01,
                     "log_loss": 0.4, "ece": 0.02, "ece_raw": 0.05, "fit_seconds": 3.0 + k, "predict_ms_per_1k": 2.0
                     + (k % 4) * 0.01, "params": {}, "cv_std_accuracy": 0.01, "head_bytes": 10 ** 6})
    rows.append({**rows[0], "head": "sgd", "accuracy": None, "macro_f1": None, "cv_score": 0.5})
    context = {"train": "train.csv", "test": "test.csv", "model": "m", "cv": 5, "select": "accuracy"}
    texts = [f"text {i}" for i in range(1500)]
    write_report(str(tmp_path), rows, rows[0], metrics, context, (proba, proba), classes, y, texts, {})
    with open(tmp_path / "results.html", encoding="utf-8") as fh:
        html = fh.read()
    svgs = re.findall(r"<svg id=\"([^\"]+)\".*?</svg>", html, flags=re.S)
    assert set(svgs) == {"pareto", "per-class", "reliability"}  # 77 x 77: no matrix in the page
    for name, drawing in zip(svgs, re.findall(r"<svg .*?</svg>", html, flags=re.S)):
        assert overlaps(drawing) == [], name
    assert html.count("<text") > 77 * 2 and 'id="pairs"' in html and "→" in html
    from PIL import Image

    width, height = Image.open(tmp_path / "confusion.png").size
    assert max(width, height) < 2000  # the confused classes only, not 77 x 77

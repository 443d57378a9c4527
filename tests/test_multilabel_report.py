"""What a multi-label bench writes and prints (issue 21): the table with the multi-label columns and its best
line, results.json with ``best.macro_f1`` and the per-label table, results.md with the decision rules and the
per-label table, results.html as one self-contained page a browser renders, comparison.png; no confusion
matrix; ``--json`` and the MLflow run carry the multi-label figures. A real bench (default model, torch head)
through the CLI in this process, on the demo texts (read from the session's demo cache) given label sets."""
import csv
import json
import os
import re
import shutil
from html.parser import HTMLParser

import pytest
from conftest import DEMO_TEST, DEMO_TRAIN, main_json, run_main

LABELS = {"account", "billing", "delivery", "returns", "technical", "question", "number"}
COLUMNS = ("head", "features", "cv score", "macro-F1", "micro-F1", "samples-F1", "subset acc", "Hamming loss",
           "Jaccard", "ROC-AUC", "fit s")
FIGURES = ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "jaccard")
NUM = r"\d\.\d{4}"


def _label_sets(source: str, path) -> dict:
    """The demo CSV as JSON Lines of label sets: each text keeps its topic and gains ``question`` when it asks
    one and ``number`` when it holds a digit (one to three labels a text). Returns each label's row count."""
    support: dict = {}
    with open(source, encoding="utf-8", newline="") as fh, open(path, "w", encoding="utf-8") as out:
        for row in csv.DictReader(fh):
            text = row["text"]
            labels = [row["label"]] + ["question"] * ("?" in text) + ["number"] * bool(re.search(r"\d", text))
            for label in labels:
                support[label] = support.get(label, 0) + 1
            out.write(json.dumps({"text": row["text"], "labels": labels}) + "\n")
    return support


@pytest.fixture(scope="module")
def files(tmp_path_factory, demo_cache):
    folder = tmp_path_factory.mktemp("multi-report")
    shutil.copytree(demo_cache, folder / "cache")
    _label_sets(DEMO_TRAIN, folder / "train.jsonl")
    support = _label_sets(DEMO_TEST, folder / "test.jsonl")
    args = ("bench", "--train", folder / "train.jsonl", "--test", folder / "test.jsonl", "--features", "mean",
            "--heads", "torch")
    return folder, args, support


@pytest.fixture(scope="module")
def printed(files):
    """The bench run as a user runs it: (what it printed, its --out folder)."""
    folder, args, _ = files
    out = folder / "bench"
    return run_main(*args, "--out", out, cache=folder / "cache", check=0).stdout, out


def test_the_printed_table_has_the_multi_label_columns_and_the_best_line(printed):
    stdout, out = printed
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("head "))
    assert all(c in header for c in COLUMNS), header
    assert "accuracy " not in header.replace("subset acc", "") and "ECE" not in header
    row = lines[lines.index(header) + 1].split()
    assert row[:2] == ["torch", "mean"] and all(re.fullmatch(NUM, v) for v in row[2:10]), row
    assert re.search(rf"^best by 3-fold CV macro_f1 \(the multi-label default\): torch on mean \(cv {NUM}, test "
                     rf"macro-F1 {NUM}, micro-F1 {NUM}, samples-F1 {NUM}, subset accuracy {NUM}\); model saved to "
                     + re.escape(os.path.join(str(out), "best-model")) + "$", stdout, flags=re.M), stdout


def test_results_json_md_and_the_plot(printed, files):
    stdout, out = printed
    support = files[2]
    assert sorted(os.listdir(out)) == ["best-model", "comparison.png", "results.html", "results.json", "results.md"]
    with open(out / "comparison.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(out / "results.json", encoding="utf-8") as fh:
        saved = json.load(fh)
    best, rules = saved["best"], saved["context"]["selection"]["rules"]
    assert saved["results"][0] == best and best["head"] == "torch" and saved["context"]["task"] == "multi-label"
    assert all(isinstance(best[k], float) and 0 <= best[k] <= 1 for k in FIGURES)
    # the per-label table: every label, the test set's own counts, the thresholds the rule chose
    per = saved["per_label"]
    assert set(per) == LABELS and {k: v["support"] for k, v in per.items()} == support
    assert best["macro_f1"] == pytest.approx(sum(v["f1"] for v in per.values()) / len(per))
    if best["rule"] == "global":
        assert len({v["threshold"] for v in per.values()}) == 1
    with open(out / "results.md", encoding="utf-8") as fh:
        md = fh.read()
    header = next(line for line in md.splitlines() if line.startswith("| head |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [*COLUMNS, "ms/1k", "params"]
    assert "Best by 3-fold CV macro_f1 (the multi-label default): torch on mean" in md
    assert f"macro-F1 {best['macro_f1']:.4f}" in md and f"micro-F1 {best['micro_f1']:.4f}" in md
    chosen = best["rule"] + ("+one" if best["at_least_one"] else "")
    for rule, score in rules.items():  # every rule with its nested CV score, the chosen one marked
        assert re.search(rf"^\| (\*\*)?{re.escape(rule)}\b.* \| {score:.4f} \|$", md, flags=re.M), rule
    assert md.count("(chosen)") == 1 and f"**{chosen}** (chosen)" in md
    table = md[md.index("| label | support | precision | recall | F1 | threshold |"):]
    rows = [line for line in table.splitlines()[2:] if line.startswith("| ")]
    assert len(rows) == len(LABELS)
    for line in rows:
        name, n, precision, recall, f1, threshold = (c.strip() for c in line.strip("|").split("|"))
        assert int(n) == per[name]["support"] and f1 == f"{per[name]['f1']:.4f}"
        assert threshold == f"{per[name]['threshold']:.2f}"


class _Tags(HTMLParser):
    """Every element closed, in order (void elements and self-closed SVG shapes excepted)."""
    VOID = {"meta", "wbr", "br", "hr", "img", "input", "link"}

    def __init__(self):
        super().__init__()
        self.open, self.errors, self.ids = [], [], []

    def handle_starttag(self, tag, attrs):
        self.ids += [v for k, v in attrs if k == "id"]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.ids += [v for k, v in attrs if k == "id"]

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.errors.append(f"</{tag}> at {self.getpos()}")


def test_results_html_is_one_self_contained_page_a_browser_renders(printed, tmp_path):
    from test_report import browse

    from bertfeat.classify.svg import overlaps

    _, out = printed
    page = out / "results.html"
    with open(page, encoding="utf-8") as fh:
        text = fh.read()
    assert not re.search(r"<script|<link|<img|\bsrc=|\bhref=|url\(|@import|https?://", text)
    tags = _Tags()
    tags.feed(text)
    tags.close()
    assert tags.errors == [] and tags.open == [] and text.count("<html") == 1
    sections = ["chosen", "leaderboard", "rules", "pareto", "per-label", "reliability", "labels", "facts"]
    assert tags.ids == sections and "confusion" not in text and "confused" not in text
    drawings = re.findall(r"<svg .*?</svg>", text, flags=re.S)
    assert len(drawings) == 3 and all(overlaps(d) == [] for d in drawings)
    bars = drawings[1]
    assert sorted(re.findall(r"<title>([a-z]+): \d\.\d{3}</title>", bars)) == sorted(LABELS)
    assert text.count("(n=") == len(LABELS)  # each bar says its label's support
    assert "Chosen by 3-fold CV macro_f1 (the multi-label default): <b>torch on mean</b>" in text
    dom = browse(page, tmp_path, "--dump-dom").stdout
    assert all(f'id="{name}"' in dom for name in sections)
    labels = dom[dom.index('id="labels"'):]
    assert labels[:labels.index("</table>")].count("<tr") == len(LABELS) + 1


def test_json_output_and_mlflow_carry_the_multi_label_figures(files, printed):
    from mlflow import MlflowClient

    folder, args, _ = files
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    res = main_json(*args, "--out", folder / "json", "--track", uri, cache=folder / "cache")
    best = res["best"]
    assert all(isinstance(best[k], float) for k in FIGURES)  # numbers, not str() of numpy scalars
    assert res["selection"]["task"] == "multi-label" and res["selection"]["select"] == "macro_f1"
    json.dumps(res, allow_nan=False)
    with open(printed[1] / "results.json", encoding="utf-8") as fh:
        saved = json.load(fh)["best"]
    # the same bench (same seed) printed as JSON and saved: the same figures
    assert {k: best[k] for k in FIGURES} == {k: saved[k] for k in FIGURES}
    # tracked: the parent run has the best's multi-label figures, the candidate's child run counts as scored
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(res["mlflow"]["run_id"])
    assert {k: parent.data.metrics[k] for k in FIGURES} == pytest.approx({k: best[k] for k in FIGURES})
    assert parent.data.params["task"] == "multi-label" and parent.data.params["select"] == "macro_f1"
    experiment = client.get_experiment_by_name("bertfeat").experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [c.data.params["round"] for c in children] == ["full"]

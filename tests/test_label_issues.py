"""Label errors and duplicates (issue 22 §3, §4): `bertfeat labels`, `find_label_issues`, and what bench adds."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_TEST, DEMO_TRAIN, main_json

import bertfeat

COLUMNS = ["row", "text", "given", "suggested", "score"]


def _flipped(n: int, seed: int = 0):
    """The demo training data with ``n`` labels changed to another class; (frame, flipped rows)."""
    df = pd.read_csv(DEMO_TRAIN, dtype=str)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(df), size=n, replace=False))
    classes = sorted(df["label"].unique())
    for i in rows:
        df.loc[i, "label"] = rng.choice([c for c in classes if c != df.loc[i, "label"]])
    return df, rows


def test_labels_finds_flipped_rows_and_names_their_data_rows(tmp_path, cache):
    noisy, flipped = _flipped(8)
    path = tmp_path / "noisy.csv"
    noisy.to_csv(path, index=False)
    result = main_json("labels", "--train", path, "--out", tmp_path / "out", "--top", "8")
    issues = pd.read_csv(result["csv"], keep_default_na=False)
    assert list(issues.columns) == COLUMNS and len(issues) == result["n_issues"]
    # the demo data has 4 rows of its own that look mislabelled (316, 118, 237, 191); of the 8 flipped, most
    # rank among the first 8 + 4 (a random 12 of 320 rows would hold 0.3 of them)
    assert np.isin(flipped, issues["row"].to_numpy()[:len(flipped) + 4]).sum() >= 5
    assert issues["score"].is_monotonic_decreasing
    for issue in issues.to_dict("records"):  # `row` is the data row of the file: header not counted, from 0
        assert noisy.loc[issue["row"], "text"] == issue["text"] and noisy.loc[issue["row"], "label"] == issue["given"]
    original = pd.read_csv(DEMO_TRAIN, dtype=str)
    found = [r for r in issues.to_dict("records") if r["row"] in flipped]
    assert sum(original.loc[r["row"], "label"] == r["suggested"] for r in found) >= len(found) - 1


def test_find_label_issues_on_a_dataframe_gives_positions(cache):
    noisy, flipped = _flipped(6, seed=1)
    noisy.index = noisy.index + 1000  # positions, not the frame's index, are what `row` gives
    issues = bertfeat.find_label_issues(noisy, cv=3, progress=False)
    assert list(issues.columns) == COLUMNS
    assert np.isin(issues["row"].to_numpy()[:6], flipped).sum() >= 4
    for issue in issues.to_dict("records"):
        assert noisy["text"].iloc[issue["row"]] == issue["text"]


def test_the_threshold_of_a_class_is_its_mean_self_confidence():
    from bertfeat.classify.label_issues import find_issues

    # class 1 is hard: its own rows give it 0.4
    proba = np.array([[0.9, 0.1], [0.95, 0.05], [0.9, 0.1], [0.55, 0.45], [0.6, 0.4], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    rows, suggested, score = find_issues(proba, y)
    # class 0's threshold (0.9 + 0.95 + 0.9 + 0.55) / 4 = 0.825, class 1's 0.4: row 3 is confidently of class 1
    # only (0.45 >= 0.4, 0.55 < 0.825), so it is flagged though its argmax is its given class; rows 4-6 (given 1,
    # argmax 0) are not: 0.6 is under class 0's threshold and 0.4 reaches their own
    assert rows.tolist() == [3] and suggested.tolist() == [1] and score == pytest.approx([0.45])


def test_bench_counts_duplicates_and_writes_label_issues(tmp_path, cache, caplog):
    train = pd.read_csv(DEMO_TRAIN, dtype=str)
    test = pd.read_csv(DEMO_TEST, dtype=str)
    extra_train = pd.DataFrame({"text": [train.text[5], train.text[9]], "label": [train.label[5], "billing"]})
    # a test row copied from train, and one that differs only in case (the model lower-cases: the same vector)
    extra_test = pd.DataFrame({"text": [train.text[20], train.text[30].upper()],
                               "label": [train.label[20], train.label[30]]})
    train_path, test_path = tmp_path / "train.csv", tmp_path / "test.csv"
    pd.concat([train, extra_train]).to_csv(train_path, index=False)
    pd.concat([test, extra_test]).to_csv(test_path, index=False)
    with caplog.at_level(logging.WARNING, logger="bertfeat"):
        res = bertfeat.bench(train_path, test_path, heads="logreg", features="mean", tune=False, progress=False)
    d = res.duplicates
    assert (d["train_exact"], d["train_conflicting"], d["test_exact"], d["test_near"]) == (2, 1, 1, 1)
    assert {"kind": "train_exact", "train_row": 9, "other_row": 321, "cosine": 1.0} in d["pairs"]
    assert {(p["kind"], p["train_row"], p["other_row"]) for p in d["pairs"] if p["kind"].startswith("test")} == {
        ("test_exact", 20, len(test)), ("test_near", 30, len(test) + 1)}
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("duplicates:")]
    assert line.startswith("duplicates: 2 test rows repeat a training row (1 exactly, 1 at cosine >= 0.98)")
    assert list(res.label_issues.columns) == COLUMNS
    on_file = pd.read_csv(train_path, dtype=str)
    for issue in res.label_issues.to_dict("records"):  # rows of the file, as `labels` gives them
        assert on_file.loc[issue["row"], "text"] == issue["text"]
    out = res.save(tmp_path / "bench")
    saved = pd.read_csv(f"{out}/label_issues.csv", keep_default_na=False)
    assert saved["row"].tolist() == res.label_issues["row"].tolist()
    with open(f"{out}/results.json", encoding="utf-8") as fh:
        assert json.load(fh)["context"]["duplicates"]["test_exact"] == 1

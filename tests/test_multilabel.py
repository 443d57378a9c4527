"""Many labels per text through fit, bench, predict, model folders and ``bertfeat.load``.

The data: the demo texts (their vectors are in the session's demo cache), each with its topic and, when
it asks a question, the label ``question`` as well: two labels for some texts, learnable from the text.
"""
import json
import pickle

import numpy as np
import pytest

from conftest import DEMO_TEST, DEMO_TRAIN, main_json, run_main


def _rows(path):
    from bertfeat.extract import read_table

    table = read_table(path)
    return table.texts, [[lab, "question"] if "?" in text else [lab] for text, lab in zip(table.texts, table.labels)]


@pytest.fixture(scope="module")
def data():
    return _rows(DEMO_TRAIN), _rows(DEMO_TEST)


@pytest.fixture
def files(tmp_path, data):
    """The data as JSON Lines (label lists) and as CSV (labels joined by ';')."""
    out = {}
    for name, (texts, labels) in zip(("train", "test"), data):
        jsonl = tmp_path / f"{name}.jsonl"
        jsonl.write_text("".join(json.dumps({"text": t, "labels": y}) + "\n" for t, y in zip(texts, labels)))
        csv = tmp_path / f"{name}.csv"
        import pandas as pd

        pd.DataFrame({"text": texts, "tags": [";".join(y) for y in labels]}).to_csv(csv, index=False)
        out[name], out[name + "_csv"] = jsonl, csv
    return out


def test_a_classifier_fit_on_label_lists_predicts_lists(data, cache):
    import bertfeat

    (texts, labels), (test_texts, test_labels) = data
    clf = bertfeat.TextClassifier(head="torch", cache_dir=str(cache)).fit(texts, labels)
    assert clf.multi_label and "question" in clf.classes_
    pred = clf.predict(test_texts)
    assert len(pred) == len(test_texts) and all(isinstance(p, list) for p in pred)
    proba = clf.predict_proba(test_texts)
    assert proba.shape == (len(test_texts), len(clf.classes_))
    assert not np.allclose(proba.sum(1), 1)  # each label its own probability
    # the question label is learnt: right more often than the constant answer would be
    asks = np.array(["?" in t for t in test_texts])
    got = np.array(["question" in p for p in pred])
    assert (got == asks).mean() > max(asks.mean(), 1 - asks.mean()) + 0.05
    assert 0.3 < clf.score(test_texts, test_labels) <= 1
    assert all(len(p) == len(clf.classes_) for p in clf.predict(test_texts[:3], threshold=0.0))
    copy = pickle.loads(pickle.dumps(clf))
    assert copy.predict(test_texts) == pred


def test_fit_then_predict_from_a_model_folder(files, cache, tmp_path):
    import bertfeat

    out = tmp_path / "model"
    fit = main_json("fit", "--train", files["train"], "--test", files["test"], "--head", "torch", "--out", out,
                    cache=cache)
    assert fit["macro_f1"] > 0.5 and fit["micro_f1"] > 0.5 and "per_label" in fit
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "multi-label" and len(manifest["thresholds"]) == len(manifest["labels"])
    rows = main_json("predict", "--model-dir", out, "--data", files["test"], cache=cache)
    texts, labels = _rows(DEMO_TEST)
    assert [r["text"] for r in rows] == texts
    assert all(set(r["probas"]) == set(manifest["labels"]) for r in rows)
    assert [r["true_labels"] for r in rows] == [sorted(y) for y in labels]
    loaded = bertfeat.load(str(out), cache_dir=str(cache))
    assert [r["labels"] for r in rows] == loaded.predict(texts)
    every = main_json("predict", "--model-dir", out, "--text", "where is my parcel?", "--threshold", "0", cache=cache)
    assert sorted(every[0]["labels"]) == sorted(manifest["labels"])
    shown = run_main("predict", "--model-dir", out, "--text", "where is my parcel?", "--quiet", cache=cache, check=0)
    assert "(" in shown.stdout and "where is my parcel?" in shown.stdout


def test_labels_joined_in_a_csv_read_back_by_predict(files, cache, tmp_path):
    out = tmp_path / "model"
    main_json("fit", "--train", files["train_csv"], "--test", files["test_csv"], "--label-col", "tags",
              "--label-sep", ";", "--head", "torch", "--out", out, cache=cache)
    rows = main_json("predict", "--model-dir", out, "--data", files["test_csv"], cache=cache)
    assert any(len(r["true_labels"]) == 2 for r in rows)
    shown = run_main("predict", "--model-dir", out, "--data", files["test_csv"], "--quiet", cache=cache, check=0)
    assert "macro-F1" in shown.stdout and "micro-F1" in shown.stdout


def test_bench_picks_the_best_by_cross_validation(data, cache):
    import bertfeat

    res = bertfeat.bench(data[0], data[1], heads="torch,knn,logreg", features="mean", cache_dir=str(cache),
                         progress=False)
    table = res.table
    assert set(table["head"]) == {"torch", "knn", "logreg"}
    assert res.best_row["cv_score"] == table["cv_score"].max()
    for key in ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "jaccard"):
        assert 0 <= res.best_row[key] <= 1
    assert res.best.multi_label and all(isinstance(p, list) for p in res.best.predict(data[1][0][:5]))


@pytest.mark.parametrize("flags, words", [
    (["--finetune", "full"], "fine-tune"),
    (["--samples-per-label", "4"], "MTEB"),
    (["--heads", "knn,bogus"], "bogus"),
    (["--class-weight", "balanced"], "class_weight"),
    (["--select", "accuracy"], "multi-label"),
])
def test_what_multi_label_cannot_do_is_one_line(files, cache, flags, words):
    done = run_main("bench", "--train", files["train"], "--test", files["test"], "--features", "mean", *flags,
                    "--quiet", cache=cache, check=2)
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_threshold_is_refused_by_a_single_label_model(demo_model, cache):
    done = run_main("predict", "--model-dir", demo_model["model_dir"], "--text", "hi", "--threshold", "0.5",
                    cache=cache, check=2)
    assert "multi-label" in done.stderr


@pytest.mark.parametrize("command", ["finetune", "labels"])
def test_commands_for_one_label_per_text_refuse_label_lists(files, cache, command, tmp_path):
    done = run_main(command, "--train", files["train"], "--out", tmp_path / "out", "--quiet", cache=cache, check=2)
    assert "multi-label" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_select_takes_the_multi_label_scores_and_single_label_data_refuses_them(files, cache):
    res = main_json("bench", "--train", files["train"], "--test", files["test"], "--features", "mean", "--heads",
                    "torch", "--select", "f1_micro", "--out", files["train"].parent / "b", cache=cache)
    assert res["selection"]["select"] == "micro_f1"
    done = run_main("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--select", "micro_f1", "--quiet",
                    cache=cache, check=2)
    assert "sets of labels" in done.stderr


def test_a_test_label_never_trained_on_counts_as_a_miss(files, cache, tmp_path):
    rows = [json.loads(line) for line in files["test"].read_text().splitlines()]
    rows[0]["labels"] = rows[0]["labels"] + ["warranty"]
    test = tmp_path / "unseen.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = main_json("fit", "--train", files["train"], "--test", files["test"], "--head", "torch", "--out",
                     tmp_path / "a", cache=cache)
    fit = main_json("fit", "--train", files["train"], "--test", test, "--head", "torch", "--out", tmp_path / "b",
                    cache=cache)
    assert fit["per_label"]["warranty"] == {"support": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                            "threshold": None}
    assert fit["micro_recall"] < seen["micro_recall"] and fit["cardinality"] > seen["cardinality"]
    shown = run_main("predict", "--model-dir", tmp_path / "b", "--data", test, "--quiet", cache=cache, check=0)
    assert "macro-F1" in shown.stdout


def test_labels_joined_without_label_sep_get_a_hint(files, cache, tmp_path):
    done = run_main("fit", "--train", files["train_csv"], "--test", files["test_csv"], "--label-col", "tags",
                    "--head", "logreg", "--out", tmp_path / "m", "--quiet", cache=cache, check=0)
    assert "--label-sep ';'" in done.stderr

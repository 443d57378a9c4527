"""The CLI end to end, in real subprocesses: embed -> cache -> fit -> model folder -> predict, and user errors."""
import glob
import json
import os

import pytest

from conftest import DEMO_TEST, DEMO_TRAIN, ROOT, SHARED, run_cli, run_json


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


@pytest.fixture(scope="module")
def fitted(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "logreg"
    result = run_json("fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--head", "logreg", "--out", out,
                      cache=cache)
    return result


def test_embed_twice_embeds_nothing_the_second_time_and_only_new_rows_later(tmp_path):
    data = tmp_path / "d.csv"
    lines = open(DEMO_TRAIN).read().splitlines()
    data.write_text("\n".join(lines[:31]) + "\n")
    first = run_json("embed", "--data", data, "--cache-dir", tmp_path / "c")
    second = run_json("embed", "--data", data, "--cache-dir", tmp_path / "c")
    assert (first["n_texts"], first["n_embedded"], first["dim"]) == (30, 30, 384)
    assert (second["n_embedded"], second["n_cached"]) == (0, 30)
    data.write_text("\n".join(lines[:41]) + "\n")
    third = run_json("embed", "--data", data, "--cache-dir", tmp_path / "c")
    assert (third["n_embedded"], third["n_cached"]) == (10, 30)
    assert set(first) >= {"n_texts", "n_cached", "n_embedded", "seconds", "dim"}


def test_fit_json_has_the_contract_keys_and_saves_a_model_folder(fitted):
    keys = {"accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "per_class",
            "confusion_matrix", "labels", "fit_seconds", "n_train", "n_test", "head", "model", "model_dir"}
    assert keys <= set(fitted)
    assert (fitted["n_train"], fitted["n_test"], fitted["head"]) == (320, 80, "logreg")
    assert fitted["accuracy"] > 0.8
    manifest = json.load(open(os.path.join(fitted["model_dir"], "manifest.json")))
    assert manifest["labels"] == ["account", "billing", "delivery", "returns", "technical"]
    assert manifest["encoders"][0]["model"] == "all-MiniLM-L6-v2" and len(manifest["model_id"]) == 64
    assert set(manifest["trained_with"]) >= {"precision", "runtime", "device"}
    run = json.load(open(os.path.join(fitted["model_dir"], "run.json")))
    assert {"torch", "transformers", "scikit-learn", "lightgbm"} <= set(run["versions"])
    assert run["settings"]["head"] == "logreg" and run["device"]


def test_predict_reproduces_fit_accuracy_and_labels_free_text(fitted, cache):
    rows = run_json("predict", "--model-dir", fitted["model_dir"], "--data", DEMO_TEST, cache=cache)
    accuracy = sum(r["label"] == r["true_label"] for r in rows) / len(rows)
    assert accuracy == fitted["accuracy"]
    table = run_cli("predict", "--model-dir", fitted["model_dir"], "--data", DEMO_TEST, cache=cache, check=0)
    assert f"accuracy {fitted['accuracy']:.4f}" in table.stdout
    rows = run_json("predict", "--model-dir", fitted["model_dir"], "--text", "my parcel is two weeks late",
                    "--text", "I forgot my password", cache=cache)
    assert [r["label"] for r in rows] == ["delivery", "account"]
    assert all(0 < r["proba"] <= 1 for r in rows)


def test_fit_table_output_and_split_without_test_file(cache, tmp_path):
    proc = run_cli("fit", "--train", DEMO_TRAIN, "--head", "mlp", "--test-size", "0.25", "--seed", "1",
                   "--out", tmp_path / "m", cache=cache, check=0)
    assert "macro avg" in proc.stdout and "model saved to" in proc.stdout
    assert "320 train" not in proc.stdout and "240 train, 80 test" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_same_seed_same_metrics(cache, tmp_path):
    def fit(seed, out):
        return run_json("fit", "--train", DEMO_TRAIN, "--head", "lgbm", "--seed", seed, "--out", tmp_path / out,
                        cache=cache)

    a, b, other = fit(1, "a"), fit(1, "b"), fit(2, "c")
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["macro_f1"] == b["macro_f1"]
    assert other["confusion_matrix"] != a["confusion_matrix"]  # the seed does reach the split and the head


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_user_errors_exit_2_with_one_line(tmp_path, cache):
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\nhello,x\nworld,x\n")
    wrong_col = tmp_path / "cols.csv"
    wrong_col.write_text("sentence,label\nhello,x\n")
    sheet = tmp_path / "sheet.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not a table bertfeat reads")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases = [
        (("fit", "--train", tmp_path / "missing.csv"), ["missing.csv", "not found"]),
        (("fit", "--train", wrong_col), ["no column 'text'", "sentence, label", "--text-col"]),
        (("fit", "--train", empty), ["empty.csv", "empty"]),
        (("fit", "--train", one_class), ["only one class"]),
        (("fit", "--train", DEMO_TRAIN, "--head", "xgb"), ["--head", "'xgb'", "logreg"]),
        (("embed", "--data", DEMO_TRAIN, "--pooling", "avg"), ["--pooling", "'avg'"]),
        (("embed", "--data", DEMO_TRAIN, "--layers", "last"), ["--layers 'last'"]),
        (("embed", "--data", DEMO_TRAIN, "--max-length", "0"), ["max_length 0"]),
        (("embed", "--data", tmp_path / "x.xlsx"), ["not found"]),
        (("embed", "--data", sheet), ["sheet.xlsx", "unknown file type '.xlsx'"]),
        (("fit", "--train", DEMO_TRAIN, "--test-size", "2"), ["--test-size 2"]),
        (("predict", "--model-dir", tmp_path, "--text", "hi"), ["no manifest.json"]),
        (("embed", "--data", DEMO_TRAIN, "--model", tmp_path / "nomodel"), ["nomodel", "not a folder"]),
    ]
    for args, fragments in cases:
        _one_line_error(run_cli(*args, cache=cache), *fragments)
    assert not glob.glob(os.path.join(ROOT, "runs", "*-xgb"))  # a rejected head writes no model folder


def test_predict_refuses_a_head_whose_encoder_changed(fitted, cache, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(fitted["model_dir"], copy)
    manifest = json.load(open(copy / "manifest.json"))
    manifest["model_id"] = "0" * 64
    json.dump(manifest, open(copy / "manifest.json", "w"))
    _one_line_error(run_cli("predict", "--model-dir", copy, "--text", "hi", cache=cache),
                    "not the one this head was trained on")


@pytest.mark.slow
def test_banking77_logreg_reaches_the_baseline(tmp_path):
    """Acceptance: the full Banking77 with the default model and logreg reaches >= 0.90 accuracy."""
    train, test = os.path.join(SHARED, "banking77", "train.csv"), os.path.join(SHARED, "banking77", "test.csv")
    result = run_json("fit", "--train", train, "--test", test, "--head", "logreg", "--out", tmp_path / "m",
                      "--cache-dir", tmp_path / "c")
    assert result["accuracy"] >= 0.90 and result["n_test"] == 3080
    rows = run_json("predict", "--model-dir", result["model_dir"], "--data", test, "--cache-dir", tmp_path / "c")
    assert sum(r["label"] == r["true_label"] for r in rows) / len(rows) == result["accuracy"]


def test_embed_reads_folders_and_globs(tmp_path):
    import shutil

    folder = tmp_path / "parts"
    folder.mkdir()
    shutil.copy(DEMO_TRAIN, folder / "a.csv")
    shutil.copy(DEMO_TEST, folder / "b.csv")
    (folder / "notes.txt").write_text("not data")  # ignored: not a data file
    cache = tmp_path / "cache"
    by_folder = run_json("embed", "--data", folder, "--cache-dir", cache)
    assert by_folder["n_texts"] == 400 and by_folder["n_embedded"] == by_folder["n_unique"]
    by_glob = run_json("embed", "--data", str(folder / "*.csv"), "--cache-dir", cache)
    assert by_glob["n_texts"] == 400 and by_glob["n_embedded"] == 0
    proc = run_cli("embed", "--data", str(folder / "*.parquet"), "--cache-dir", cache, check=2)
    assert "no data files" in proc.stderr and "*.parquet" in proc.stderr


@pytest.mark.parametrize("head", ["torch", "sgd"])
def test_fit_prints_its_report(head, tmp_path):
    proc = run_cli("fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--head", head, "--quiet",
                   "--cache-dir", tmp_path / "cache", "--out", tmp_path / "model", check=0)
    assert f"head {head} on all-MiniLM-L6-v2 mean (384 dims): 320 train, 80 test texts" in proc.stdout
    assert "macro avg" in proc.stdout and "model saved to" in proc.stdout

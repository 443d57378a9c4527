"""The CLI end to end: embed -> cache -> fit -> model folder -> predict, and user errors. In-process through
main(argv) (run_main), on a copy of the session's filled demo cache; real subprocesses (run_cli) where the
process is the point: a sample of exit codes without a traceback, output below Python (a Rust panic), Ray."""
import json
import os

import pytest

from conftest import DEMO_TEST, DEMO_TRAIN, SHARED, main_json, run_cli, run_main


@pytest.fixture
def fitted(demo_model):
    return demo_model


def test_embed_twice_embeds_nothing_the_second_time_and_only_new_rows_later(tmp_path):
    data = tmp_path / "d.csv"
    lines = open(DEMO_TRAIN).read().splitlines()
    data.write_text("\n".join(lines[:31]) + "\n")
    first = main_json("embed", "--data", data, "--cache-dir", tmp_path / "c")
    second = main_json("embed", "--data", data, "--cache-dir", tmp_path / "c")
    assert (first["n_texts"], first["n_embedded"], first["dim"]) == (30, 30, 384)
    assert (second["n_embedded"], second["n_cached"]) == (0, 30)
    data.write_text("\n".join(lines[:41]) + "\n")
    third = main_json("embed", "--data", data, "--cache-dir", tmp_path / "c")
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
    rows = main_json("predict", "--model-dir", fitted["model_dir"], "--data", DEMO_TEST, cache=cache)
    accuracy = sum(r["label"] == r["true_label"] for r in rows) / len(rows)
    assert accuracy == fitted["accuracy"]
    table = run_main("predict", "--model-dir", fitted["model_dir"], "--data", DEMO_TEST, cache=cache, check=0)
    assert f"accuracy {fitted['accuracy']:.4f}" in table.stdout
    rows = main_json("predict", "--model-dir", fitted["model_dir"], "--text", "my parcel is two weeks late",
                    "--text", "I forgot my password", cache=cache)
    assert [r["label"] for r in rows] == ["delivery", "account"]
    assert all(0 < r["proba"] <= 1 for r in rows)


def test_fit_table_output_and_split_without_test_file(cache, tmp_path):
    proc = run_main("fit", "--train", DEMO_TRAIN, "--head", "mlp", "--test-size", "0.25", "--seed", "1",
                    "--out", tmp_path / "m", cache=cache, check=0)
    assert "macro avg" in proc.stdout and "model saved to" in proc.stdout
    assert "320 train" not in proc.stdout and "240 train, 80 test" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_same_seed_same_metrics(cache, tmp_path):
    def fit(seed, out):
        return main_json("fit", "--train", DEMO_TRAIN, "--head", "lgbm", "--seed", seed, "--out", tmp_path / out,
                         cache=cache)

    def probabilities(result):
        rows = main_json("predict", "--model-dir", result["model_dir"], "--data", DEMO_TEST, "--trust-pickle",
                         cache=cache)
        return [r["proba"] for r in rows]

    a, b, other = fit(1, "a"), fit(1, "b"), fit(2, "c")
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["macro_f1"] == b["macro_f1"]
    assert probabilities(a) == probabilities(b)
    # The seed reaches the split and the head: another seed trains on other rows, so the same 80 texts get
    # other probabilities (a confusion matrix could match by chance; 80 probabilities cannot).
    assert probabilities(other) != probabilities(a)


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_user_errors_exit_2_with_one_line(tmp_path, cache):
    """In-process; a sample of the same cases in real processes checks the exit code and stderr there."""
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
        (("fit", "--train", DEMO_TRAIN, "--head", "xgb", "--out", tmp_path / "xgb"), ["--head", "'xgb'", "logreg"]),
        (("embed", "--data", DEMO_TRAIN, "--pooling", "avg"), ["--pooling", "'avg'"]),
        (("embed", "--data", DEMO_TRAIN, "--layers", "last"), ["--layers 'last'"]),
        (("embed", "--data", DEMO_TRAIN, "--max-length", "0"), ["--max-length 0"]),
        (("embed", "--data", tmp_path / "x.xlsx"), ["not found"]),
        (("embed", "--data", sheet), ["sheet.xlsx", "unknown file type '.xlsx'"]),
        (("fit", "--train", DEMO_TRAIN, "--test-size", "2"), ["--test-size 2"]),
        (("predict", "--model-dir", tmp_path, "--text", "hi"), ["no manifest.json"]),
        (("embed", "--data", DEMO_TRAIN, "--model", tmp_path / "nomodel"), ["nomodel", "not a folder"]),
    ]
    before = _files(cache)
    for args, fragments in cases:
        _one_line_error(run_main(*args, cache=cache), *fragments)
    for i in (0, 4, 9, 11):  # a missing file, an argparse choice, an unknown file type, a folder that is no model
        _one_line_error(run_cli(*cases[i][0], cache=cache), *cases[i][1])
    assert not (tmp_path / "xgb").exists()  # a rejected head writes no model folder
    assert _files(cache) == before  # and nothing was embedded


def _files(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names
                  if n != ".lock")


def test_predict_refuses_a_head_whose_encoder_changed(fitted, cache, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(fitted["model_dir"], copy)
    manifest = json.load(open(copy / "manifest.json"))
    manifest["model_id"] = "0" * 64
    json.dump(manifest, open(copy / "manifest.json", "w"))
    _one_line_error(run_main("predict", "--model-dir", copy, "--text", "hi", cache=cache),
                    "not the one this head was trained on")


@pytest.mark.slow
def test_banking77_logreg_reaches_the_baseline(tmp_path):
    """Acceptance: the full Banking77 with the default model and logreg reaches >= 0.90 accuracy."""
    train, test = os.path.join(SHARED, "banking77", "train.csv"), os.path.join(SHARED, "banking77", "test.csv")
    result = main_json("fit", "--train", train, "--test", test, "--head", "logreg", "--out", tmp_path / "m",
                       "--cache-dir", tmp_path / "c")
    assert result["accuracy"] >= 0.90 and result["n_test"] == 3080
    rows = main_json("predict", "--model-dir", result["model_dir"], "--data", test, "--cache-dir", tmp_path / "c")
    assert sum(r["label"] == r["true_label"] for r in rows) / len(rows) == result["accuracy"]


def test_embed_reads_folders_and_globs(tmp_path):
    import shutil

    folder = tmp_path / "parts"
    folder.mkdir()
    shutil.copy(DEMO_TRAIN, folder / "a.csv")
    shutil.copy(DEMO_TEST, folder / "b.csv")
    (folder / "notes.txt").write_text("not data")  # ignored: not a data file
    cache = tmp_path / "cache"
    by_folder = main_json("embed", "--data", folder, "--cache-dir", cache)
    assert by_folder["n_texts"] == 400 and by_folder["n_embedded"] == by_folder["n_unique"]
    by_glob = main_json("embed", "--data", str(folder / "*.csv"), "--cache-dir", cache)
    assert by_glob["n_texts"] == 400 and by_glob["n_embedded"] == 0
    proc = run_main("embed", "--data", str(folder / "*.parquet"), "--cache-dir", cache, check=2)
    assert "no data files" in proc.stderr and "*.parquet" in proc.stderr


@pytest.mark.parametrize("head", ["torch", "sgd"])
def test_fit_prints_its_report(head, cache, tmp_path):
    proc = run_main("fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--head", head, "--quiet",
                    "--cache-dir", cache, "--out", tmp_path / "model", check=0)
    assert f"head {head} on all-MiniLM-L6-v2 mean (384 dims): 320 train, 80 test texts" in proc.stdout
    assert "macro avg" in proc.stdout and "model saved to" in proc.stdout


# -- issue 11 §2-3: every user error in one line, before any work where it can be -----------------------------
def _run_many(commands, cache, env=None):
    """Several CLI runs at once (each is mostly interpreter start-up): a list of CompletedProcess, in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda args: run_cli(*args, cache=cache, env=env), commands))


def _run_in_process(commands, cache):
    """run_main over each command in turn (main() prints to this process's stdout: one at a time)."""
    return [run_main(*args, cache=cache) for args in commands]


def _tiny_train(tmp_path, per_class=4, classes=("a", "b")):
    """A training file of ``per_class`` rows of each class, texts taken from the demo data."""
    import pandas as pd

    texts = pd.read_csv(DEMO_TRAIN)["text"].tolist()[:per_class * len(classes)]
    path = tmp_path / f"tiny-{per_class}.csv"
    pd.DataFrame({"text": texts, "label": list(classes) * per_class}).to_csv(path, index=False)
    return path


def test_flag_errors_fail_in_one_line_before_any_work(tmp_path):
    """Wrong flags, an existing --out, a class too small to cross-validate: exit 2, one line, no embedding.

    The bound is CPU time, not wall time: on a shared machine the wall clock measures the neighbours, while
    any embedding would burn CPU seconds. In-process, so the bound holds the command itself, not start-up.
    """
    import time

    existing_file = tmp_path / "taken.txt"
    existing_file.write_text("not a folder")
    full = tmp_path / "full"
    full.mkdir()
    (full / "report.md").write_text("an earlier run")
    single = _tiny_train(tmp_path, per_class=1, classes=("a", "b", "c"))
    cache = tmp_path / "cache"
    cases = [
        (("embed", "--data", DEMO_TEST, "--encoding", "bogus"), ["--encoding 'bogus'", "utf-8"]),
        (("fit", "--train", DEMO_TRAIN, "--encoding", "bogus"), ["--encoding 'bogus'"]),
        (("fit", "--train", DEMO_TRAIN, "--out", existing_file), ["--out", "taken.txt", "is a file"]),
        (("bench", "--train", DEMO_TRAIN, "--out", full), ["--out", "not empty", "new folder"]),
        (("bench", "--train", DEMO_TRAIN, "--samples-per-label", "-3"), ["--samples-per-label -3"]),
        (("bench", "--train", DEMO_TRAIN, "--samples-per-label", "8", "--n-experiments", "0"),
         ["--n-experiments 0"]),
        (("embed", "--data", DEMO_TEST, "--engine", "ray", "--chunk-size", "0"), ["--shard-size 0"]),
        (("bench", "--train", single, "--test", single, "--heads", "logreg"),
         ["single row", "cross-validation", "'a'"]),
    ]
    for args, fragments in cases:
        before, start = time.process_time(), time.monotonic()
        proc = run_main(*args, cache=cache)
        cpu = time.process_time() - before
        _one_line_error(proc, *fragments)
        assert cpu < 5 and time.monotonic() - start < 60, (args, cpu)
    assert not cache.exists()  # nothing was embedded, not even a cache folder made
    assert existing_file.read_text() == "not a folder" and os.listdir(full) == ["report.md"]


def test_forward_pass_limits_are_one_line_errors(tmp_path):
    long_pairs = tmp_path / "pairs.csv"
    long_pairs.write_text("text,other,label\n" + f'"{"word " * 60}","{"other " * 60}",x\nshort,also short,y\n')
    runs = _run_in_process([
        ("embed", "--data", DEMO_TEST, "--layers", "-100"),
        ("embed", "--data", DEMO_TEST, "--max-length", "2"),
    ], cache=tmp_path / "cache")
    # A real process: a panic in the Rust tokenizer would print below Python, where run_main cannot see it.
    runs.append(run_cli("embed", "--data", long_pairs, "--pair-col", "other", "--max-length", "8", "--long", "chunk",
                        cache=tmp_path / "cache"))
    _one_line_error(runs[0], "--layers '-100'", "6 layers", "-7")
    _one_line_error(runs[1], "--max-length 2", "2 special tokens", "--max-length 3")
    _one_line_error(runs[2], "--max-length 8", "--long chunk", "--pair-col", "--max-length 9")
    assert "panicked" not in runs[2].stderr and "PanicException" not in runs[2].stderr


def test_small_training_sets_adapt_the_heads(tmp_path, cache):
    """knn, mlp and torch on 8 training rows (fewer than knn's 10 neighbours, too few for a validation
    split), in fit and in bench with more folds than the smallest class has rows."""
    tiny = _tiny_train(tmp_path, per_class=4)
    runs = _run_in_process([
        ("fit", "--train", tiny, "--test", tiny, "--head", "knn", "--out", tmp_path / "knn", "--json"),
        ("fit", "--train", tiny, "--test", tiny, "--head", "mlp", "--out", tmp_path / "mlp", "--json"),
        ("bench", "--train", tiny, "--test", tiny, "--heads", "knn,mlp,torch", "--features", "mean", "--cv", "10",
         "--no-tune", "--out", tmp_path / "bench", "--json"),
    ], cache=cache)  # the demo cache: the texts are the demo's
    for proc in runs:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert json.loads(runs[0].stdout)["n_train"] == 8
    bench = json.loads(runs[2].stdout)
    assert {r["head"] for r in bench["results"]} == {"knn", "mlp", "torch"}
    assert "--cv 10: the smallest class in" in runs[2].stderr
    assert "has 4 rows, so 4 folds are used" in runs[2].stderr


def test_malformed_manifests_and_missing_columns_in_predict(fitted, cache, tmp_path):
    import shutil

    def edited(name, change):
        folder = tmp_path / name
        shutil.copytree(fitted["model_dir"], folder)
        manifest = json.load(open(folder / "manifest.json"))
        with open(folder / "manifest.json", "w") as fh:
            json.dump(change(manifest), fh)
        return folder

    def without(key):
        return lambda m: {k: v for k, v in m.items() if k != key}

    folders = {
        "list": (edited("list", lambda m: [m]), ["manifest.json"]),
        "files": (edited("files", lambda m: {**m, "files": list(m["files"])}), ["'files' mapping"]),
        "no-encoders": (edited("no-encoders", without("encoders")), ["no 'encoders' list"]),
        "null-encoders": (edited("null-encoders", lambda m: {**m, "encoders": None}), ["no 'encoders' list"]),
        "unknown-key": (edited("unknown-key", lambda m: {**m, "encoders": [{**m["encoders"][0], "precision": "fp32"}]}),
                        ["unknown keys (precision)"]),
    }
    wrong_col = tmp_path / "sentences.csv"
    wrong_col.write_text("sentence\nwhere is my parcel\n")
    commands = [("predict", "--model-dir", folder, "--text", "hi") for folder, _ in folders.values()]
    commands.append(("predict", "--model-dir", fitted["model_dir"], "--data", wrong_col))
    runs = _run_in_process(commands, cache=cache)
    for proc, (folder, fragments) in zip(runs, folders.values()):
        _one_line_error(proc, str(folder), *fragments)
    _one_line_error(runs[-1], "no column 'text' (columns: sentence)", "rename the file's column to 'text'")
    assert "--text-col" not in runs[-1].stderr  # predict has no such flag


@pytest.mark.xdist_group("ray")  # `--address auto` must find no local cluster of test_ray.py running
def test_ray_address_where_no_cluster_answers_is_one_line_within_a_bound(tmp_path):
    """A port nobody listens on, and a listener that never speaks Ray (ray.init would wait for minutes):
    each a one-line error, the second after the connect bound; and `--address auto` with no cluster (the
    suite's local Ray sessions are shut down by then; a `ray start` cluster on this machine would answer)."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    env = {"BERTFEAT_RAY_CONNECT_SECONDS": "3", "RAY_ADDRESS": ""}
    start = time.monotonic()
    try:
        runs = _run_many([("embed", "--data", DEMO_TEST, "--engine", "ray", "--address", address,
                           "--cache-dir", tmp_path / "c") for address in
                          (f"127.0.0.1:{closed_port}", f"127.0.0.1:{silent.getsockname()[1]}", "auto")],
                         cache=tmp_path / "c", env=env)
    finally:
        silent.close()
    assert time.monotonic() - start < 120
    _one_line_error(runs[0], f"127.0.0.1:{closed_port}", "nothing answers there")
    _one_line_error(runs[1], "no Ray cluster answered within 3 s")
    _one_line_error(runs[2], "--address auto: cannot join a Ray cluster")
    assert all(len(run.stderr.strip().splitlines()) == 1 for run in runs), [run.stderr for run in runs]
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.npy"))


def test_default_run_folders_never_collide(tmp_path, monkeypatch):
    """Two runs finishing in the same second get two folders (the name is reserved by an exclusive mkdir)."""
    from bertfeat.steps import default_out

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda fmt, *a: "20260101-000000")
    names = [default_out("logreg") for _ in range(3)]
    assert names == ["runs/20260101-000000-logreg", "runs/20260101-000000-logreg-2", "runs/20260101-000000-logreg-3"]
    assert all(os.path.isdir(n) and not os.listdir(n) for n in names)

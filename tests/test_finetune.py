"""finetune end to end: a short full fine-tune then predict on the moved folder, kill -9 of a real process
and the same command resuming, bench's fine-tuned rows; bad input and the pieces (pairs, linear head, MTEB
samples). Only the killed run needs its own process; the rest drive the CLI in this one (run_main).

Torch runs on one thread (OMP_NUM_THREADS=1 in the killed process, torch.set_num_threads(1) here): on a busy
2-core machine two spinning threads per process made these runs three times slower, and the resumed run
must compute as the killed one did; the code path is the same.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import DEMO_TEST, DEMO_TRAIN, ROOT, data_rows, run_main

FAST = {"OMP_NUM_THREADS": "1", "BERTFEAT_CPU_BF16": "0"}  # fp32 torch: no ONNX export of each tuned model


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cli(*args, check=0):
    """The CLI in this process (run_main), on fp32 torch as FAST sets it for a subprocess."""
    return run_main(*args, check=check, env={"BERTFEAT_CPU_BF16": FAST["BERTFEAT_CPU_BF16"]})


def test_full_finetune_lowers_validation_loss_and_predict_agrees(tmp_path, one_thread):
    train = data_rows(DEMO_TRAIN, tmp_path / "train.csv", 0, 80)
    test = data_rows(DEMO_TEST, tmp_path / "test.csv", 0, 40)
    out = tmp_path / "run"
    proc = _cli("finetune", "--train", train, "--test", test, "--epochs", "1", "--batch-size", "8",
                "--max-length", "32", "--val-size", "0.25", "--lr", "2e-4", "--out", out, "--json")
    result = json.loads(proc.stdout)
    assert "epoch 1/1" in proc.stderr and "val loss" in proc.stderr  # progress and per-epoch scores on stderr
    before, after = result["history"][0], result["history"][1]
    assert after["val_loss"] < before["val_loss"]
    assert {"accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "per_class",
            "confusion_matrix", "labels", "fit_seconds", "n_train", "n_test", "model_dir"} <= set(result)
    assert result["n_train"] == 80 and result["n_val"] == 20 and result["n_test"] == 40
    # A model folder like any other, with the tuned encoder inside and no checkpoints left.
    assert sorted(os.listdir(out)) == ["encoder", "head.npz", "manifest.json", "run.json"]
    assert os.path.isfile(out / "encoder" / "model.safetensors")
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["encoder_folder"] == "encoder" and manifest["encoders"][0]["model"] == "encoder"
    # The folder moves: the manifest names the encoder relative to it.
    moved = tmp_path / "elsewhere" / "model"
    os.makedirs(moved.parent)
    os.rename(out, moved)
    preds = json.loads(_cli("predict", "--model-dir", moved, "--data", test, "--json", "--quiet").stdout)
    assert np.mean([p["label"] == p["true_label"] for p in preds]) == result["accuracy"]
    # The tuned weights are not the base model's: the frozen encoder gives other vectors.
    from bertfeat.extract import BertEncoder

    texts = ["my parcel never arrived", "reset my password"]
    tuned = BertEncoder(model=str(moved / "encoder"), normalize=False, max_length=32, precision="fp32").transform(texts)
    frozen = BertEncoder(normalize=False, max_length=32, precision="fp32").transform(texts)
    assert not np.allclose(tuned, frozen, atol=1e-3)


def _checkpoints(out):
    ckpt = out / "temp" / "ckpt"
    return sorted(n for n in os.listdir(ckpt) if n.startswith("epoch-")) if ckpt.is_dir() else []


def test_kill_during_finetune_then_the_same_command_resumes(tmp_path, tiny_bert, one_thread):
    args = ["finetune", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--model", tiny_bert, "--epochs", "4",
            "--batch-size", "8", "--max-length", "24", "--lr", "1e-3", "--val-size", "0.2", "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), *args, "--out", str(killed)], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **FAST}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not _checkpoints(killed) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _checkpoints(killed)
    assert done and done[-1] != "epoch-4", "the run should have been killed after its first epoch"
    assert not (killed / "manifest.json").exists()
    # The same command again (in this process: the killed one's files are what it resumes from).
    resumed = json.loads(_cli(*args, "--out", killed, "--json").stdout)
    assert resumed["resumed_from"] >= 1 and resumed["epochs_run"] == 4
    clean = json.loads(_cli(*args, "--out", tmp_path / "clean", "--json").stdout)
    assert clean["resumed_from"] == 0
    # Same data order, same random state restored: the resumed run is the uninterrupted one.
    want = [h.get("val_loss") for h in clean["history"]]
    assert [h.get("val_loss") for h in resumed["history"]] == pytest.approx(want)
    assert resumed["accuracy"] == clean["accuracy"]
    assert not (killed / "temp").exists()


def test_bench_finetune_adds_a_marked_row_beside_the_frozen_heads(tmp_path, tiny_bert, one_thread, monkeypatch):
    train = data_rows(DEMO_TRAIN, tmp_path / "train.csv", 0, 100)
    out = tmp_path / "bench"
    # The default bench (views x heads by halving): its round-1 rows have no test scores, and the fine-tuned
    # row is sorted in among them (a TREC run crashed there).
    monkeypatch.chdir(tmp_path)  # the working folder, where the fine-tuned model folder goes
    proc = _cli("bench", "--train", train, "--test", DEMO_TEST, "--model", tiny_bert, "--no-tune", "--cv", "2",
                "--finetune", "full", "--finetune-epochs", "1", "--max-length", "24",
                "--out", out, "--quiet", "--cache-dir", tmp_path / "cache")
    lines = proc.stdout.splitlines()
    assert any(line.startswith("logreg ") for line in lines)
    assert any(line.startswith("full-ft ") and "tuned mean" in line for line in lines)
    rows = json.load(open(out / "results.json"))["results"]
    tuned = [r for r in rows if r.get("fine_tuned")]
    assert len(tuned) == 1 and tuned[0]["fit_seconds"] > 0
    assert any(r.get("accuracy") is None for r in rows)  # round-1 rows are there, after the scored ones
    assert [r.get("accuracy") is None for r in rows] == sorted(r.get("accuracy") is None for r in rows)
    # Its model folder is where finetune puts one (runs/ of the working folder), complete.
    assert tuned[0]["model_dir"].startswith(str(tmp_path / "runs"))
    assert os.path.isfile(os.path.join(tuned[0]["model_dir"], "manifest.json"))
    assert "tuned mean" in open(out / "results.md").read()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    for flags, words in ((["--epochs", "0"], "--epochs"), (["--lr", "-1"], "--lr"),
                         (["--val-size", "1.5"], "--val-size")):
        proc = run_main("finetune", "--train", DEMO_TRAIN, "--out", out, *flags, check=2)
        assert proc.stderr.startswith("error:") and words in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists()
    proc = run_main("bench", "--train", DEMO_TRAIN, "--finetune", "fuller", check=2)
    assert "full, setfit" in proc.stderr
    proc = run_main("finetune", "--train", DEMO_TRAIN, "--method", "lora", check=2)
    assert "invalid choice" in proc.stderr


def test_setfit_pairs_and_linear_head_and_mteb_samples(demo_vectors):
    from bertfeat.classify.bench import mteb_protocol
    from bertfeat.classify.linear import from_linear_layer
    from bertfeat.extract.tuning_data import micro_batches, sample_pairs
    from bertfeat.finetuning import mteb_samples
    from sklearn.linear_model import LogisticRegression

    y = np.array([0] * 5 + [1] * 3 + [2])
    pairs = sample_pairs(y, 20, 10_000, np.random.default_rng(0))
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    assert (same == pairs[:, 2].astype(bool)).all()
    assert all(a != b for a, b, t in pairs if t and y[a] != 2)  # a positive partner is another text
    assert len(pairs) == 20 * 9 * 2 and len(sample_pairs(y, 20, 100, np.random.default_rng(0))) == 100
    # Micro-batches keep pair members together and stay within the token budget.
    lengths = np.array([10, 30, 20, 5])
    assert micro_batches([[0, 1], [2, 3]], lengths, 60) == [[0], [1]]
    assert micro_batches([[0, 1], [2, 3]], lengths, 120) == [[0, 1]]
    # The trained layer as a scikit-learn head: softmax of the layer, binary and multiclass.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4))
    for k in (2, 3):
        W, b = rng.normal(size=(k, 4)), rng.normal(size=k)
        z = X @ W.T + b
        soft = np.exp(z - z.max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        assert np.allclose(from_linear_layer(W, b, [str(i) for i in range(k)]).predict_proba(X), soft)
    # SetFit in MTEB mode trains on the very rows the frozen protocol samples.
    X_train, y_train, X_test, y_test = demo_vectors
    frozen = mteb_protocol(X_train, y_train, X_test, y_test, 4, 3, seed=7)
    mine = [float((LogisticRegression(max_iter=100).fit(X_train[i], np.asarray(y_train)[i]).predict(X_test)
                   == np.asarray(y_test)).mean()) for i in mteb_samples(y_train, 4, 3, 7)]
    assert mine == frozen["scores"]

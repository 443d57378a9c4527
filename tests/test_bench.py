"""bench end to end on the demo data: table, files, JSON contract, best-by-CV model, MTEB protocol."""
import json
import os

import numpy as np

from bertfeat.classify.bench import balanced_sample, mteb_protocol, run_bench
from conftest import DEMO_TEST, DEMO_TRAIN, run_cli, run_json


def test_bench_json_files_and_best_model(tmp_path):
    out = tmp_path / "bench"
    cache = tmp_path / "c"
    result = run_json("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--heads", "logreg,knn",
                      "--poolings", "mean,mean+max,cls@-2", "--cv", "2", "--out", out, cache=cache)
    rows = result["results"]
    assert len(rows) == 6 and {(r["head"], r["features"]) for r in rows} == {
        (h, f) for h in ("logreg", "knn") for f in ("mean", "mean+max", "cls@-2")}
    for r in rows:
        assert {"head", "features", "cv_score", "accuracy", "macro_f1", "fit_seconds", "predict_seconds",
                "params"} <= set(r)
    assert [r["macro_f1"] for r in rows] == sorted((r["macro_f1"] for r in rows), reverse=True)
    assert result["best"]["cv_score"] == max(r["cv_score"] for r in rows)
    for name in ("results.json", "results.md", "comparison.png", "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.load(open(out / "results.json"))["best"] == result["best"]
    # The best model is a model folder that predict accepts, with the same test accuracy.
    preds = run_json("predict", "--model-dir", result["model_dir"], "--data", DEMO_TEST, cache=cache)
    assert np.mean([p["label"] == p["true_label"] for p in preds]) == result["best"]["accuracy"]
    manifest = json.load(open(os.path.join(result["model_dir"], "manifest.json")))
    assert manifest["features"] == result["best"]["features"]


def test_bench_table_and_binary_scores(tmp_path):
    lines = open(DEMO_TRAIN).read().splitlines()
    binary = tmp_path / "bin.csv"
    binary.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.endswith((",billing", ",account"))]))
    out = run_cli("bench", "--train", binary, "--heads", "logreg,svm", "--no-tune", "--out", tmp_path / "b",
                  "--quiet", cache=tmp_path / "c", check=0)
    assert "macro-F1" in out.stdout and "best by 3-fold CV" in out.stdout
    rows = json.load(open(tmp_path / "b" / "results.json"))["results"]
    assert all(0.5 < r["roc_auc"] <= 1 and 0 < r["average_precision"] <= 1 for r in rows)
    assert all(r["params"] == {} for r in rows)


def test_run_bench_in_process_matches_parallel(demo_vectors):
    X_train, y_train, X_test, y_test = demo_vectors
    views = {"mean": (X_train, X_test)}
    one, best1 = run_bench(views, y_train, y_test, ["logreg", "knn"], cv=2, n_jobs=1)
    two, best2 = run_bench(views, y_train, y_test, ["logreg", "knn"], cv=2, n_jobs=2)
    strip = lambda rs: [(r.head, r.cv_score, r.accuracy, r.params) for r in rs]  # noqa: E731
    assert strip(one) == strip(two) and best1[0].head == best2[0].head


def test_mteb_sampling_is_balanced_and_seeded(demo_vectors):
    X_train, y_train, X_test, y_test = demo_vectors
    y = np.asarray(y_train)
    a = balanced_sample(y, 8, np.random.default_rng(1))
    b = balanced_sample(y, 8, np.random.default_rng(1))
    c = balanced_sample(y, 8, np.random.default_rng(2))
    assert list(a) == list(b) and list(a) != list(c)
    labels, counts = np.unique(y[a], return_counts=True)
    assert len(labels) == 5 and set(counts) == {8}
    r1 = mteb_protocol(X_train, y_train, X_test, y_test, 8, 4, seed=3)
    r2 = mteb_protocol(X_train, y_train, X_test, y_test, 8, 4, seed=3)
    assert r1["scores"] == r2["scores"] and len(r1["scores"]) == 4
    assert r1["accuracy_mean"] == np.mean(r1["scores"]) and 0.2 < r1["accuracy_mean"] <= 1


def test_bench_mteb_mode_cli(tmp_path):
    result = run_json("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--samples-per-label", "8",
                      "--n-experiments", "3", "--out", tmp_path / "m", cache=tmp_path / "c")
    assert result["protocol"] == "mteb" and len(result["scores"]) == 3


def test_bench_rejects_unknown_heads(tmp_path):
    proc = run_cli("bench", "--train", DEMO_TRAIN, "--heads", "logreg,xgb", cache=tmp_path / "c")
    assert proc.returncode == 2 and "unknown head 'xgb'" in proc.stderr and "Traceback" not in proc.stderr

"""bench end to end on the demo data: table, files, JSON contract, best-by-CV model, MTEB protocol. The CLI runs
in-process (run_main) on a copy of the session's filled demo cache."""
import json
import os

import numpy as np

from bertfeat.classify.bench import balanced_sample, mteb_protocol, run_bench
from bertfeat.classify.calibration import Calibrated, ece, fit_temperature, label_index, log_loss
from bertfeat.classify.heads import make_head
from conftest import DEMO_BENCH, DEMO_TEST, DEMO_TRAIN, main_json, run_main


def test_bench_json_files_and_best_model(tmp_path, cache):
    out = tmp_path / "bench"
    result = main_json("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--heads", "logreg,knn",
                      "--poolings", "mean,mean+max,cls@-2", "--cv", "2", "--out", out, cache=cache)
    rows = result["results"]
    assert len(rows) == 6 and {(r["head"], r["features"]) for r in rows} == {
        (h, f) for h in ("logreg", "knn") for f in ("mean", "mean+max", "cls@-2")}
    for r in rows:
        assert {"head", "features", "cv_score", "accuracy", "macro_f1", "fit_seconds", "predict_seconds",
                "params"} <= set(r)
    assert [r["cv_score"] for r in rows] == sorted((r["cv_score"] for r in rows), reverse=True)
    assert result["best"]["cv_score"] == max(r["cv_score"] for r in rows)
    for r in rows:  # honest probabilities: test log loss and ECE before / after temperature scaling
        assert r["log_loss"] > 0 and 0 <= r["ece"] <= 1 and 0 <= r["ece_raw"] <= 1 and r["temperature"] > 0
    for name in ("results.json", "results.md", "comparison.png", "confusion.png", "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.load(open(out / "results.json"))["best"] == result["best"]
    # The best model is a model folder that predict accepts, with the same test accuracy.
    preds = main_json("predict", "--model-dir", result["model_dir"], "--data", DEMO_TEST, cache=cache)
    assert np.mean([p["label"] == p["true_label"] for p in preds]) == result["best"]["accuracy"]
    manifest = json.load(open(os.path.join(result["model_dir"], "manifest.json")))
    assert manifest["features"] == result["best"]["features"]


def test_bench_table_and_binary_scores(tmp_path, cache):
    lines = open(DEMO_TRAIN).read().splitlines()
    binary = tmp_path / "bin.csv"
    binary.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.endswith((",billing", ",account"))]))
    out = run_main("bench", "--train", binary, "--heads", "logreg,svm", "--no-tune", "--out", tmp_path / "b",
                   "--quiet", cache=cache, check=0)
    assert "macro-F1" in out.stdout and "best by 3-fold CV" in out.stdout
    rows = json.load(open(tmp_path / "b" / "results.json"))["results"]
    assert all(0.5 < r["roc_auc"] <= 1 and 0 < r["average_precision"] <= 1 for r in rows)
    assert all(r["params"] == {} for r in rows)


def test_run_bench_in_process_matches_parallel(demo_vectors):
    X_train, y_train, X_test, y_test = demo_vectors
    views = {"mean": (X_train, X_test)}
    one, best1, _ = run_bench(views, y_train, y_test, ["logreg", "knn"], cv=2, n_jobs=1)
    two, best2, _ = run_bench(views, y_train, y_test, ["logreg", "knn"], cv=2, n_jobs=2)
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


def test_bench_mteb_mode_cli(tmp_path, cache):
    result = main_json("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--samples-per-label", "8",
                       "--n-experiments", "3", "--out", tmp_path / "m", cache=cache)
    assert result["protocol"] == "mteb" and len(result["scores"]) == 3
    assert 0 < result["accuracy_mean"] <= 1 and result["accuracy_mean"] == np.mean(result["scores"])
    # --out holds what was printed: the scores, in a file a later reader can trust
    saved = json.load(open(tmp_path / "m" / "results.json"))
    assert saved["scores"] == result["scores"] and saved["protocol"] == "mteb"


def test_bench_rejects_unknown_heads(tmp_path):
    proc = run_main("bench", "--train", DEMO_TRAIN, "--heads", "logreg,xgb", cache=tmp_path / "c")
    assert proc.returncode == 2 and "unknown head 'xgb'" in proc.stderr and "Traceback" not in proc.stderr


def test_temperature_scaling_lowers_ece_on_held_out_real_data(demo_vectors):
    """T fit on out-of-fold probabilities of the training rows only; scored on the held-out test rows."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X_train, y_train, X_test, y_test = demo_vectors
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    oof = cross_val_predict(make_head("svm"), X_train, y_train, cv=folds, method="predict_proba")
    head = make_head("svm").fit(X_train, y_train)
    temperature = fit_temperature(oof, label_index(head.classes_, y_train))
    calibrated = Calibrated.from_fitted(head, temperature)
    y_idx = label_index(head.classes_, y_test)
    raw, scaled = head.predict_proba(X_test), calibrated.predict_proba(X_test)
    assert ece(scaled, y_idx) < 0.5 * ece(raw, y_idx)  # the SVM's softmax scores: 0.26 -> 0.03 here
    assert log_loss(scaled, y_idx) < log_loss(raw, y_idx)
    assert list(calibrated.predict(X_test)) == list(head.predict(X_test))  # one T never changes a decision


def _imbalanced(tmp_path, minority="account", keep_every=10, binary_with=None):
    """The demo training set with one class cut to every 10th row (6 of 64); optionally only two classes."""
    lines = open(DEMO_TRAIN, encoding="utf-8").read().splitlines()
    seen, rows = 0, [lines[0]]
    for line in lines[1:]:
        label = line.rsplit(",", 1)[1]
        if binary_with and label not in (minority, binary_with):
            continue
        if label == minority:
            seen += 1
            if seen % keep_every:
                continue
        rows.append(line)
    path = tmp_path / f"imbalanced-{binary_with or 'all'}.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_class_weight_balanced_and_select_macro_f1_in_fit(tmp_path, cache):
    train = _imbalanced(tmp_path)
    plain = main_json("fit", "--train", train, "--test", DEMO_TEST, "--head", "logreg", "--out", tmp_path / "p",
                     cache=cache)
    weighted = main_json("fit", "--train", train, "--test", DEMO_TEST, "--head", "logreg", "--class-weight",
                         "balanced", "--out", tmp_path / "w", cache=cache)
    # 6 'account' rows against 64 of each other class: unweighted, the head almost never says 'account'
    assert weighted["per_class"]["account"]["recall"] > plain["per_class"]["account"]["recall"] + 0.3
    assert weighted["macro_f1"] > plain["macro_f1"] + 0.05
    # knn has no class weights: balanced means oversampled rows, and it helps the same way
    knn = [main_json("fit", "--train", train, "--test", DEMO_TEST, "--head", "knn", *extra, "--out",
                     tmp_path / f"k{len(extra)}", cache=cache) for extra in ((), ("--class-weight", "balanced"))]
    assert knn[1]["per_class"]["account"]["recall"] > knn[0]["per_class"]["account"]["recall"]
    chosen = main_json("fit", "--train", train, "--test", DEMO_TEST, "--head", "logreg", "--class-weight",
                       "balanced", "--select", "macro_f1", "--out", tmp_path / "s", cache=cache)
    assert chosen["select"] == "macro_f1" and set(chosen["params"]) == {"C"} and chosen["temperature"] > 0
    assert chosen["per_class"]["account"]["recall"] > plain["per_class"]["account"]["recall"] + 0.3


def test_select_macro_f1_class_weight_and_threshold_in_bench(tmp_path, cache):
    train = _imbalanced(tmp_path, binary_with="billing")
    test = tmp_path / "test.csv"
    test.write_text("\n".join(ln for ln in open(DEMO_TEST, encoding="utf-8").read().splitlines()
                              if not ln.endswith((",delivery", ",returns", ",technical"))) + "\n")
    result = main_json("bench", "--train", train, "--test", test, "--heads", "logreg,knn", "--features", "mean",
                       "--select", "macro_f1", "--class-weight", "balanced", "--tune-threshold", "--out",
                       tmp_path / "b", cache=cache)
    for r in result["results"]:
        assert r["cv_score"] == r["cv_macro_f1"]  # ranked by CV macro-F1, not accuracy
    assert result["best"]["cv_score"] == max(r["cv_score"] for r in result["results"])
    context = json.load(open(tmp_path / "b" / "results.json"))["context"]
    assert context["select"] == "macro_f1" and context["class_weight"] == "balanced"
    threshold = result["selection"]["threshold"]
    assert 0 < threshold["threshold"] < 1 and "nested_cv" in threshold and isinstance(threshold["kept"], bool)
    # the saved model says what predict will do: same test accuracy from the folder
    preds = main_json("predict", "--model-dir", result["model_dir"], "--data", test, cache=cache)
    assert np.mean([p["label"] == p["true_label"] for p in preds]) == result["best"]["accuracy"]


@DEMO_BENCH
def test_default_bench_chooses_views_and_heads_the_same_way_twice(tmp_path, cache, demo_bench):
    """No --heads, no --features: candidate views x heads by successive halving; two identical runs save the
    same head, view and parameters, and the loaded models give the same probabilities. The first run is the
    session's (the API's bench, what `bench --json` prints of it), the second this CLI's."""
    res, out = demo_bench
    first = json.loads(json.dumps({**res.as_dict(), "model_dir": os.path.join(out, "best-model")}, default=str))
    runs = [first, main_json("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--out", tmp_path / "r2",
                             cache=cache)]
    features = {r["features"] for r in runs[0]["results"]}
    from bertfeat.classify.selection import DEFAULT_VIEWS

    assert set(DEFAULT_VIEWS) <= features  # round 1 ran on every candidate view
    assert runs[0]["best"]["head"] == runs[1]["best"]["head"]
    assert runs[0]["best"]["features"] == runs[1]["best"]["features"]
    assert runs[0]["best"]["params"] == runs[1]["best"]["params"]
    assert runs[0]["selection"] == runs[1]["selection"]
    manifests = [json.load(open(os.path.join(r["model_dir"], "manifest.json"))) for r in runs]
    assert manifests[0]["features"] == manifests[1]["features"] == runs[0]["best"]["features"]
    probas = [main_json("predict", "--model-dir", r["model_dir"], "--data", DEMO_TEST, cache=cache) for r in runs]
    assert probas[0] == probas[1]

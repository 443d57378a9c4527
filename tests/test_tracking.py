"""MLflow tracking (issue 22 §2): a real MLflow on a SQLite store, queried with MlflowClient."""
from __future__ import annotations

import json
import os

import pytest
from conftest import DEMO_TEST, DEMO_TRAIN, main_json, run_main

mlflow = pytest.importorskip("mlflow")

FAST = ("--heads", "logreg,knn", "--features", "mean", "--no-tune")


def _runs(uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bertfeat")
    return client, client.search_runs([experiment.experiment_id])


def _texts(path, n=12):
    import pandas as pd

    return pd.read_csv(path)["text"].tolist()[:n]


def test_bench_track_logs_a_parent_a_child_per_candidate_and_a_pyfunc_model(tmp_path, cache):
    import pandas as pd

    from bertfeat.cache import sha256_file

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "bench"
    res = main_json("bench", "--train", DEMO_TRAIN, "--test", DEMO_TEST, *FAST, "--out", out, "--track", uri)
    client, runs = _runs(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == res["mlflow"]["run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(res["results"]) == 2
    assert sorted(c.data.params["head"] for c in children) == ["knn", "logreg"]
    for child in children:
        row = next(r for r in res["results"] if r["head"] == child.data.params["head"])
        assert child.data.metrics["cv_score"] == pytest.approx(row["cv_score"])
        assert child.data.metrics["accuracy"] == pytest.approx(row["accuracy"])
        assert {"cv_std_accuracy", "fit_seconds", "predict_seconds"} <= set(child.data.metrics)
    params = parent.data.params
    with open(out / "best-model" / "manifest.json", encoding="utf-8") as fh:
        assert params["model_id"] == json.load(fh)["model_id"]
    assert params["train_sha256"] == sha256_file(DEMO_TRAIN) and params["test_sha256"] == sha256_file(DEMO_TEST)
    assert params["seed"] == "0" and params["best_head"] == res["best"]["head"]
    assert parent.data.tags["version.scikit-learn"]
    report = {os.path.basename(a.path) for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"results.json", "results.md", "label_issues.csv"} <= report
    assert report == {n for n in os.listdir(out) if os.path.isfile(out / n)}

    texts = _texts(DEMO_TEST)
    predicted = mlflow.pyfunc.load_model(parent.data.tags["model_uri"]).predict(pd.DataFrame({"text": texts}))
    args = [a for t in texts for a in ("--text", t)]
    cli = main_json("predict", "--model-dir", out / "best-model", *args)
    assert list(predicted) == [r["label"] for r in cli]


def test_fit_track_true_writes_the_default_sqlite_store(tmp_path, cache, monkeypatch):
    import pandas as pd

    import bertfeat

    monkeypatch.chdir(tmp_path)
    clf = bertfeat.fit(DEMO_TRAIN, DEMO_TEST, head="logreg", track=True, progress=False)
    assert os.path.isfile(tmp_path / "runs" / "mlflow.db")
    client, runs = _runs(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["head"] == "logreg"
    assert run.data.metrics["accuracy"] == pytest.approx(clf.report_["accuracy"])
    texts = _texts(DEMO_TEST)
    model = mlflow.pyfunc.load_model(run.data.tags["model_uri"])
    assert list(model.predict(pd.DataFrame({"text": texts}))) == list(clf.predict(texts))
    assert not os.path.exists(tmp_path / "mlruns")  # artifacts beside the database, not in the working folder


def test_track_on_the_command_line_takes_no_uri_and_reports_the_run(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = run_main("fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--out", tmp_path / "m", "--track", "--json",
                    "--quiet", check=0)
    tracked = json.loads(proc.stdout)["mlflow"]
    assert tracked["tracking_uri"] == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    _, runs = _runs(tracked["tracking_uri"])
    assert [r.info.run_id for r in runs] == [tracked["run_id"]]

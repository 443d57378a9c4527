"""MLflow tracking of bench and fit (``--track [URI]``, ``track=``): ``pip install 'bertfeat[track]'``.

bench logs one parent run (data file hashes, the encoder's model_id, package versions, seed, the chosen
candidate and its test scores, duplicate and label-issue counts) with one child run per candidate (head,
view, params; CV mean and std, test scores, fit and predict times), the report files of the bench folder
as artifacts, and the chosen model as an MLflow model with a pyfunc flavour::

    mlflow.pyfunc.load_model(model_uri).predict(pandas.DataFrame({"text": ["my card was declined"]}))

fit logs one run with the model. ``track=True`` (``--track`` with no URI) writes to a SQLite store,
``runs/mlflow.db``, artifacts beside it in ``runs/mlartifacts``; see it with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile

from bertfeat.errors import ConfigError

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # _mlflow() says what to install before this class is ever used
    PythonModel = object

log = logging.getLogger("bertfeat")

DEFAULT_STORE = os.path.join("runs", "mlflow.db")
EXPERIMENT = "bertfeat"
MODEL_CODE = "import mlflow\nfrom bertfeat.tracking import BertfeatModel\n\nmlflow.models.set_model(BertfeatModel())\n"
# a candidate's figures logged as metrics, where the row has them (a screened row has no test scores)
METRICS = ("cv_score", "cv_accuracy", "cv_macro_f1", "cv_std_accuracy", "cv_std_macro_f1", "accuracy", "macro_f1",
           "macro_precision", "macro_recall", "log_loss", "ece", "log_loss_raw", "ece_raw", "temperature",
           "fit_seconds", "predict_seconds", "predict_ms_per_1k", "average_precision", "roc_auc",
           # multi-label rows (classify/multibench.py)
           "micro_f1", "samples_f1", "subset_accuracy", "jaccard", "hamming_loss", "micro_precision", "micro_recall",
           "samples_precision", "samples_recall", "cardinality", "predicted_cardinality")


class BertfeatModel(PythonModel):
    """A bertfeat model folder as an MLflow pyfunc model: a DataFrame with a ``text`` column (and the
    model's pair column, for a pair model) in, the predicted labels out."""

    def load_context(self, context):
        from bertfeat.model_folder import load

        self.clf = load(context.artifacts["model_dir"], progress=False)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "text" not in frame.columns:
            raise ConfigError(f"model input has columns {list(frame.columns)}; expected a 'text' column")
        pair_col = self.clf.pair_col
        pairs = [str(v) for v in frame[pair_col]] if pair_col and pair_col in frame.columns else None
        return self.clf.predict([str(v) for v in frame["text"]], pairs=pairs)


def tracking_uri(track) -> str:
    """``track`` as an MLflow tracking URI: True or "" is the local SQLite store ``runs/mlflow.db``."""
    if track is True or track == "":
        os.makedirs(os.path.dirname(DEFAULT_STORE), exist_ok=True)
        # absolute: MLflow keeps one store per URI string, so a relative one would follow the first cwd
        return f"sqlite:///{os.path.abspath(DEFAULT_STORE)}"
    return str(track)


def log_bench(result, out: str, track) -> dict:
    """Log a saved bench (``result.save(out)`` done) to MLflow; returns the run id, the tracking and model URIs."""
    from bertfeat.classify.report import screened

    mlflow, experiment = _mlflow(track)
    context = result._report["context"]
    best = result.best_row
    with mlflow.start_run(experiment_id=experiment, run_name=f"bench {os.path.basename(str(context['train']))}",
                          nested=mlflow.active_run() is not None) as parent:
        mlflow.log_params({**_data_params(context.get("train"), context.get("test")),
                           "n_train": context["n_train"], "n_test": context["n_test"], "model": result.config.model,
                           "model_id": _model_id(os.path.join(out, "best-model")), "seed": result.config.seed,
                           # context's select: a multi-label bench's default is macro_f1, not the config's
                           "cv": context["cv"], "select": context["select"], "best_head": best["head"],
                           "best_features": best["features"], "best_params": json.dumps(best.get("params") or {}),
                           "task": context.get("task", "single-label")})
        mlflow.set_tags({f"version.{k}": str(v) for k, v in (result.best.run_ or {}).get("versions", {}).items()})
        dups = result.duplicates or {}
        mlflow.log_metrics({**_metrics(best), "bench_seconds": result.seconds,
                            "label_issues": 0 if result.label_issues is None else len(result.label_issues),
                            **{f"duplicates_{k}": dups[k] for k in ("train_exact", "train_near", "test_exact",
                                                                    "test_near") if k in dups}})
        for row in result.rows:
            with mlflow.start_run(experiment_id=experiment, run_name=f"{row['head']} on {row['features']}",
                                  nested=True):
                mlflow.log_params({"head": row["head"], "features": row["features"],
                                   "round": "fine-tuned" if row.get("fine_tuned") else
                                   "screened" if screened(row) else "full",
                                   **{f"param.{k}": _param(v) for k, v in (row.get("params") or {}).items()}})
                mlflow.log_metrics(_metrics(row))
        for name in sorted(os.listdir(out)):  # results.html, .json, .md, the plots, label_issues.csv
            if os.path.isfile(os.path.join(out, name)):
                mlflow.log_artifact(os.path.join(out, name), "report")
        model_uri = _log_model(mlflow, os.path.join(out, "best-model"))
    return _done(mlflow, parent, model_uri)


def log_fit(clf, model_dir: str, track, train=None, test=None) -> dict:
    """Log a fitted and saved model (``model_dir``) and its test report to MLflow as one run."""
    mlflow, experiment = _mlflow(track)
    report, settings = clf.report_, (clf.run_ or {}).get("settings", {})
    with mlflow.start_run(experiment_id=experiment, run_name=f"fit {report['head']}",
                          nested=mlflow.active_run() is not None) as run:
        mlflow.log_params({**_data_params(train, test), "head": report["head"], "features": report["features"],
                           "model": report["model"], "model_id": _model_id(model_dir), "seed": settings.get("seed"),
                           "n_train": report["n_train"], "n_test": report["n_test"],
                           **{f"param.{k}": _param(v) for k, v in (clf.selection_.get("params") or {}).items()}})
        mlflow.set_tags({f"version.{k}": str(v) for k, v in (clf.run_ or {}).get("versions", {}).items()})
        mlflow.log_metrics(_metrics(report))
        model_uri = _log_model(mlflow, model_dir)
    return _done(mlflow, run, model_uri)


def _mlflow(track):
    """MLflow pointed at ``track``'s store, and the id of the ``bertfeat`` experiment there."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError("track= needs MLflow, which is not installed: pip install 'bertfeat[track]'") from None
    uri = tracking_uri(track)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return mlflow, experiment.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working directory's mlruns/
        store = os.path.abspath(uri[len("sqlite:///"):])
        artifacts = "file://" + os.path.join(os.path.dirname(store), "mlartifacts")
    return mlflow, client.create_experiment(EXPERIMENT, artifact_location=artifacts)


def _log_model(mlflow, model_dir: str) -> str:
    """Log ``model_dir`` as the run's pyfunc model, tagged on the run; returns its URI."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from bertfeat.classify import package_versions

    # the installed distribution's version, what pip can install (a checkout's __version__ may be ahead of it);
    # given, so that MLflow does not load the model in a subprocess to guess the requirements
    version = package_versions()["bertfeat"]
    signature = ModelSignature(inputs=Schema([ColSpec("string", "text")]))
    # "models from code": MLflow stores this two-line file, not a pickle of the class
    with tempfile.TemporaryDirectory() as tmp:
        code = os.path.join(tmp, "bertfeat_model.py")
        with open(code, "w", encoding="utf-8") as fh:
            fh.write(MODEL_CODE)
        info = mlflow.pyfunc.log_model(name="model", python_model=code, artifacts={"model_dir": model_dir},
                                       pip_requirements=[f"bertfeat=={version}" if version else "bertfeat"],
                                       signature=signature)
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


def _done(mlflow, run, model_uri: str) -> dict:
    done = {"run_id": run.info.run_id, "tracking_uri": mlflow.get_tracking_uri(), "model_uri": model_uri}
    log.info("tracked in MLflow: run %s at %s; model %s", done["run_id"], done["tracking_uri"], model_uri)
    return done


def _data_params(train, test) -> dict:
    """Each data file's sha256 (a DataFrame or list has no file to hash: its description is logged)."""
    from bertfeat.cache import sha256_file

    out = {}
    for role, source in (("train", train), ("test", test)):
        if isinstance(source, (str, os.PathLike)):
            out[role] = os.fspath(source)
            if os.path.isfile(source):
                out[f"{role}_sha256"] = sha256_file(os.fspath(source))
    return out


def _model_id(model_dir: str):
    with open(os.path.join(model_dir, "manifest.json"), encoding="utf-8") as fh:
        return json.load(fh).get("model_id")


def _metrics(row: dict) -> dict:
    return {k: float(row[k]) for k in METRICS if isinstance(row.get(k), (int, float)) and not isinstance(row[k], bool)}


def _param(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


__all__ = ["BertfeatModel", "log_bench", "log_fit", "tracking_uri"]

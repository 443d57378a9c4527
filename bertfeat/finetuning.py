"""The finetune subcommand and bench's fine-tuned rows: extract/ tunes the encoder, classify/ scores the head.

A fine-tuned model folder is a model folder like any other (``classify/model_dir.py``), plus the tuned
encoder in a subfolder that the manifest names relative to the folder (``encoder_folder``), so the
folder can be moved or copied whole::

    runs/x-finetune-full/
        manifest.json   encoders: [{"model": "encoder", "pooling": "mean", ...}], encoder_folder: "encoder",
                        model_id (identity of encoder/'s files), base_model, finetune settings
        head.npz        full: the trained linear layer as a LogisticRegression; setfit: a logistic regression
        run.json        settings, versions, per-epoch history, metrics
        encoder/        model.safetensors, config.json, tokenizer files
        temp/           while training only: ckpt/ (epoch checkpoints), encoder/; removed once the folder is done

Its vectors never enter the frozen model's cache entries: the tuned weights have another identity, and
finetune computes its vectors without the cache at all (they serve no other run).
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np

from bertfeat.errors import BertfeatError

log = logging.getLogger("bertfeat")

TEMP = "temp"


def settings_from(config, method: str, val_size=None):
    """The fine-tune's settings from a ``FinetuneConfig`` (or, for bench's reference rows, a ``BenchConfig``)."""
    from bertfeat.extract.finetune import Settings

    max_pairs = getattr(config, "max_pairs", None)
    return Settings(method=method, model=config.model, epochs=getattr(config, "epochs", None),
                    lr=getattr(config, "lr", None), batch_size=getattr(config, "train_batch_size", None),
                    val_size=getattr(config, "val_size", None) if val_size is None else val_size,
                    max_length=config.max_length, seed=config.seed,
                    max_pairs=25_000 if max_pairs is None else max_pairs, device=config.device)


def _unfinished(out: str) -> bool:
    return os.path.isdir(os.path.join(out, TEMP)) and not os.path.exists(os.path.join(out, "manifest.json"))


def resolve_out(out: str | None, method: str, key: str) -> str:
    """--out, checked; without it, an unfinished run of the same settings and data under runs/ (so the same
    command resumes), else a new runs/<time>-finetune-<method>."""
    from bertfeat.extract import checkpoint

    if out is None:
        for cand in sorted(glob.glob(os.path.join("runs", f"*-finetune-{method}")), reverse=True):
            work = os.path.join(cand, TEMP)  # a run that has a checkpoint, or is still making its first one
            if _unfinished(cand) and key in (checkpoint.key_of(os.path.join(work, "ckpt")),
                                             checkpoint.started_key(work)):
                return cand
        return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-finetune-{method}")
    if os.path.exists(os.path.join(out, "manifest.json")):
        raise BertfeatError(f"--out {out}: already holds a finished model; pass a new folder")
    if os.path.isdir(out) and os.listdir(out) and not _unfinished(out):
        raise BertfeatError(f"--out {out}: folder exists and is not empty; pass a new folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise BertfeatError(f"--out {out}: is a file; pass a folder")
    return out


def train_and_save(config, method: str, train, test, out: str | None, progress: bool, val_size=None) -> dict:
    """Fine-tune on ``train``, score on ``test``, write the model folder. Returns the summary as fit's."""
    return _train(config, method, train, test, out, progress, val_size)[0]


def _train(config, method: str, train, test, out, progress: bool, val_size=None, held_out: bool = False):
    """``train_and_save``, returning (summary, test probabilities, held-out predictions). ``held_out`` (full
    only): the tuned model's predicted class positions on the fine-tune's validation rows, ``(rows, pred)``;
    else None."""
    from bertfeat.classify import evaluate
    from bertfeat.classify.metrics import SUMMARY
    from bertfeat.extract import BertEncoder, checkpoint, model as model_io
    from bertfeat.extract.finetune import finetune, run_key
    from bertfeat.extract.pipeline import Embedder

    settings = settings_from(config, method, val_size).resolved()
    base_id = model_io.model_id(model_io.resolve_model_dir(settings.model))
    key = run_key(settings, train.texts, train.labels, base_id)
    out = os.path.abspath(resolve_out(out, method, key))
    work = os.path.join(out, TEMP)
    # Until the folder is done, no other process works in it: a second identical command stops here.
    with checkpoint.hold_run(work, key):
        tuned = finetune(train.texts, train.labels, settings, work, progress)
        encoder = BertEncoder(model=tuned.encoder_dir, pooling="mean", max_length=settings.max_length,
                              normalize=method == "setfit", precision=config.precision, device=config.device)
        val_rows = tuned.val_rows if held_out and method == "full" else []
        first = train.texts if method == "setfit" else [train.texts[i] for i in val_rows]
        emb = Embedder([encoder], None)(first + test.texts, None, progress=progress)
        vectors = emb.vectors[0]
        X_test = vectors[len(first):]
        head, fit_extra = _head(method, tuned, vectors[:len(first)], train.labels, config.seed)
        t0 = time.perf_counter()  # the head alone, as bench times frozen heads (the encoder costs the same)
        proba = head.predict_proba(X_test)
        predict_seconds = time.perf_counter() - t0
        pred = np.asarray(head.classes_)[proba.argmax(1)]
        metrics = evaluate(test.labels, pred)
        metrics["log_loss"] = _log_loss(test.labels, proba, head.classes_)
        fit_seconds = tuned.seconds + fit_extra
        summary = {"metrics": {k: metrics[k] for k in SUMMARY},
                   "fit_seconds": fit_seconds, "n_train": len(train.texts), "n_test": len(test.texts),
                   "finetune": {"settings": _plain_settings(settings), "history": tuned.history,
                                "best_epoch": tuned.best_epoch, "device": tuned.device, "autocast": tuned.autocast,
                                "n_val": tuned.n_val, "n_pairs": tuned.n_pairs, "resumed_from": tuned.resumed_from}}
        model_dir = _commit(config, out, head, method, encoder, tuned, settings, emb, summary)
    held = (val_rows, head.predict_proba(vectors[:len(first)]).argmax(1)) if len(val_rows) else None
    return ({**metrics, "fit_seconds": round(fit_seconds, 3), "predict_seconds": predict_seconds,
             "n_train": len(train.texts), "n_test": len(test.texts), "head": f"finetune-{method}", "features": "mean",
             "model": settings.model, "model_dir": model_dir, "method": method, "epochs_run": len(tuned.history) - 1,
             "best_epoch": tuned.best_epoch, "val_accuracy": tuned.val_accuracy, "history": tuned.history,
             "resumed_from": tuned.resumed_from, "device": tuned.device, "autocast": tuned.autocast,
             "settings": _plain_settings(settings), "n_val": tuned.n_val}, proba, held)


def _log_loss(y_true, proba, classes) -> float | None:
    """Test log loss, as bench reports it for frozen heads; None when a test label was never trained on."""
    from sklearn.metrics import log_loss

    if not set(y_true) <= set(classes):
        return None
    return float(log_loss(y_true, proba, labels=list(classes)))


def _plain_settings(settings) -> dict:
    from dataclasses import asdict

    return asdict(settings)


def _head(method: str, tuned, X_train, y_train, seed: int):
    """(head, seconds it took to fit): the trained layer (full) or SetFit's logistic regression."""
    from bertfeat.classify.linear import from_linear_layer, setfit_head

    if method == "full":
        return from_linear_layer(tuned.weight, tuned.bias, tuned.classes), 0.0
    t0 = time.perf_counter()
    head = setfit_head(seed).fit(X_train, np.asarray(y_train))
    return head, time.perf_counter() - t0


def _commit(config, out, head, method, encoder, tuned, settings, emb, summary) -> str:
    """Assemble the model folder in temp/, then move it into ``out``: the manifest last, so a folder counts
    as a model only once it is whole; temp/ (checkpoints) goes after that."""
    from bertfeat.model_folder import model_manifest
    from bertfeat.classify import package_versions, save_model_dir
    from bertfeat.extract.finetune import ENCODER

    manifest = model_manifest([encoder], f"finetune-{method}", "mean", head.classes_, config.text_col,
                              config.label_col, None)
    for entry in manifest["encoders"]:
        entry["model"] = ENCODER  # relative to the model folder: bertfeat.load resolves it there
    manifest.update(encoder_folder=ENCODER, base_model=settings.model,
                    finetune={"method": method, "epochs_run": len(tuned.history) - 1, "best_epoch": tuned.best_epoch})
    from bertfeat.options import FinetuneConfig, as_dict

    run = {"command": "finetune" if isinstance(config, FinetuneConfig) else "bench",
           "argv": sys.argv[1:], "settings": as_dict(config), "versions": package_versions(),
           "device": tuned.device, "embedding": emb.summary(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           **summary}
    work = os.path.join(out, TEMP)
    staged = os.path.join(work, "model")
    shutil.rmtree(staged, ignore_errors=True)  # a finish cut short before
    try:
        save_model_dir(staged, head, manifest, run)
        os.replace(tuned.encoder_dir, os.path.join(staged, ENCODER))
        names = sorted(os.listdir(staged), key=lambda n: n == "manifest.json")  # the manifest last
        for name in names:
            target = os.path.join(out, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(os.path.join(staged, name), target)
    except OSError as exc:
        raise BertfeatError(f"--out {out}: cannot write the model folder ({exc.strerror})") from None
    shutil.rmtree(work, ignore_errors=True)
    return out


def print_report(result: dict, metrics: dict) -> None:
    from bertfeat.classify import format_report

    best = result["history"][result["best_epoch"]]
    val = f", val acc {best['val_accuracy']:.4f}" if best.get("val_accuracy") is not None else ""
    print(f"finetune {result['method']} of {result['model']}: {result['n_train']} train "
          f"({result['n_val']} of them held out for validation), {result['n_test']} test texts; "
          f"{result['epochs_run']} epochs (best {result['best_epoch']}{val}), {result['fit_seconds']:.1f} s "
          f"on {result['device']}, {result['autocast']} autocast\n")
    print(format_report(metrics))
    print(f"\nmodel saved to {result['model_dir']}")


def run_finetune(config, train, test, out: str | None = None) -> dict:
    """``finetune``: tune on ``train`` (a Table), score on ``test``, write the model folder ``out`` (default:
    runs/<time>-finetune-<method>, or the unfinished run of the same settings, which resumes)."""
    from bertfeat.inputs import require_single

    require_single(train, "finetune")
    return train_and_save(config, config.method, train, test, out, config.progress)


# -- bench's fine-tuned rows -------------------------------------------------------------------
def finetune_methods(value: str | None) -> list[str]:
    """``bench --finetune full,setfit`` -> the methods, checked before any work."""
    from bertfeat.extract.finetune import METHODS

    if not value:
        return []
    methods = [v.strip() for v in value.split(",") if v.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise BertfeatError(f"bad --finetune '{value}'; expected a comma-separated list of: {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


@dataclass
class TunedRow:
    """A fine-tuned bench row, and what bench needs when it becomes the best model: its test metrics (the
    report's confusion matrix) and test probabilities (raw and calibrated: the same, it has no temperature)."""

    row: dict
    metrics: dict  # the fine-tune's summary: evaluate()'s test metrics and more
    probas: tuple
    # --select on the fine-tune's own validation rows: its score (row["cv_score"]) and the frozen best's
    # out-of-fold one on the same rows; None for setfit, whose head is fit on those rows too
    frozen_score: float | None = None

    def model(self):
        """The fine-tuned model folder, loaded: ``BenchResult.save`` copies it, encoder included, to best-model."""
        from bertfeat.model_folder import load

        return load(self.row["model_dir"])


def finetune_rows(config, methods: list[str], train, test, oof=None) -> list[TunedRow]:
    """One bench row per method, shaped like the frozen heads' rows and marked ``fine_tuned``.

    ``cv_score`` is the ``--select`` score on the validation split of the training data (10%, setfit included,
    so the column stays a training-data-only estimate; setfit's is the accuracy its validation reports);
    ``fit_seconds`` is the whole fine-tune. Each row's model folder is where ``finetune`` would put it
    (runs/<time>-finetune-<method>), so a killed bench resumes its fine-tune the same way. ``oof``, the frozen
    best's out-of-fold probabilities (columns: the sorted labels), scores the frozen best on a full fine-tune's
    validation rows too (``frozen_score``): ``chosen`` compares the two on the same rows.
    """
    from bertfeat.classify.bench import _score
    from bertfeat.classify.selection import cv_score

    classes = np.asarray(sorted(set(train.labels)))
    out = []
    for method in methods:
        log.info("fine-tuning (%s) for bench", method)
        r, proba, held = _train(config, method, train, test, None, config.progress, val_size=0.1,
                                held_out=method == "full")
        frozen = None
        if held is not None:
            rows, pred = held
            y = np.searchsorted(classes, [train.labels[i] for i in rows])
            cv = cv_score(y, pred, len(classes))
            if oof is not None:
                frozen = cv_score(y, oof[rows].argmax(1), len(classes))[config.select]
        else:
            cv = {"accuracy": r["val_accuracy"] or 0.0, "macro_f1": None}  # setfit's validation gives accuracy
        result = _score(f"{method}-ft" if method == "full" else method, "tuned mean", cv, proba, 1.0, test.labels,
                        classes, config.select, r["fit_seconds"], r["predict_seconds"],
                        {"epochs": r["epochs_run"], "lr": r["settings"]["lr"]})
        row = {**result.as_dict(), "fine_tuned": True, "model_dir": r["model_dir"],
               "n_val": r["n_val"], "frozen_val_score": frozen}
        out.append(TunedRow(row, r, (proba, proba), frozen))
        log.info("finetune %-6s val %.4f%s  test acc %.4f  macro-F1 %.4f  (%.1f s)", method, row["cv_score"],
                 "" if frozen is None else f" (frozen best {frozen:.4f} on the same rows)", r["accuracy"],
                 r["macro_f1"], r["fit_seconds"])
    return out


def chosen(tuned: list[TunedRow]) -> TunedRow | None:
    """The fine-tuned row that becomes bench's best model: the best full fine-tune whose ``--select`` score on
    its validation rows beats the frozen best's on the same rows; None when none does."""
    ahead = [t for t in tuned if t.frozen_score is not None and t.row["cv_score"] > t.frozen_score]
    best = max(ahead, key=lambda t: t.row["cv_score"], default=None)
    if best is not None:
        log.info("best model: %s (validation %.4f against the frozen best's %.4f on the same %d rows)",
                 best.row["head"], best.row["cv_score"], best.frozen_score, best.row["n_val"])
    return best


def mteb_samples(y, per_label: int, n_experiments: int, seed: int) -> list[np.ndarray]:
    """The balanced samples ``classify.bench.mteb_protocol`` draws (same generator, same order)."""
    from bertfeat.classify.bench import balanced_sample

    rng = np.random.default_rng(seed)
    return [balanced_sample(np.asarray(y), per_label, rng) for _ in range(n_experiments)]


def mteb_finetune(config, methods: list[str], train, test) -> dict:
    """SetFit on each MTEB experiment's sample (the frozen logistic regression's very rows); mean ± sd."""
    import tempfile

    from bertfeat.extract import Table

    if methods != ["setfit"]:
        raise BertfeatError("--samples-per-label runs --finetune setfit only (a full fine-tune on a few samples "
                            "per label has no validation split to stop on)")
    scores, seconds = [], []
    for i, idx in enumerate(mteb_samples(train.labels, config.samples_per_label, config.n_experiments, config.seed)):
        sample = Table([train.texts[j] for j in idx], None, [train.labels[j] for j in idx], train.source,
                       [train.rows[j] for j in idx])
        with tempfile.TemporaryDirectory(prefix="bertfeat-setfit-") as tmp:  # only the score is kept
            r = train_and_save(config, "setfit", sample, test, os.path.join(tmp, "m"), config.progress, val_size=0.0)
        scores.append(r["accuracy"])
        seconds.append(r["fit_seconds"])
        log.info("setfit experiment %d/%d: accuracy %.4f (%.1f s)", i + 1, config.n_experiments, r["accuracy"],
                 r["fit_seconds"])
    return {"method": "setfit", "accuracy_mean": float(np.mean(scores)), "accuracy_std": float(np.std(scores)),
            "scores": scores, "fit_seconds_mean": float(np.mean(seconds))}

"""The fine-tune probe: would fine-tuning the encoder beat the frozen features on this data, and how long would it take?

A bounded experiment on the *training* data only (the test set stays unseen): a stratified subsample is
split into probe-train and probe-val; one epoch of the full fine-tune (``extract/trainer.py``: encoder + mean
pooling + linear layer, the layer started at a logistic regression: LP-FT) on probe-train is scored on
probe-val against the frozen best's out-of-fold predictions for the same rows (bench has them), and against a
logistic regression on the frozen mean vectors of probe-train (reported as ``probe_frozen``). The paired
difference with the frozen best is the estimated gain; it is advice only when it is larger than its noise
(twice the paired standard error) and than ``MIN_GAIN``. The fine-tune's measured texts per second give the
full fine-tune's duration here.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

log = logging.getLogger("bertfeat")

PROBE_TRAIN = 512  # rows fine-tuned on (1 epoch); see BENCHMARKS.md "Fine-tune probe" for the sizes tried
PROBE_VAL = 512  # rows both sides are scored on
MIN_ROWS = 100  # below this the two scores differ by noise alone
MAX_SECONDS = 30.0  # the probe's cap on any machine, and at most SHARE of the frozen bench's wall time
SHARE = 0.2
MIN_GAIN = 0.01  # a gain under one point is not worth a fine-tune's cost, even when it is not noise
PROBE_BATCH = 16  # more optimizer steps per probe row than the full fine-tune's 32
PROBE_LR = 1e-4  # the full fine-tune's rate
FULL_EPOCHS = 5  # the full fine-tune's default most epochs (extract.finetune.DEFAULTS)


def skipped(reason: str, **extra) -> dict:
    log.info("fine-tune probe skipped: %s", reason)
    out = {"skipped": reason, "recommend": False, **extra}
    return {**out, "advice": advice(out, "")}


def run_probe(config, train, X_mean, frozen_score: float, bench_seconds: float, test_source: str | None = None,
              oof=None) -> dict:
    """The ``finetune_probe`` record of results.json.

    Parameters
    ----------
    config : BenchConfig
    train : Table
        The training data (texts, labels).
    X_mean : ndarray of shape (n_train, dim)
        The training rows' frozen mean vectors, as bench embedded them.
    frozen_score : float
        The frozen best's cross-validated score (reported beside the estimate).
    bench_seconds : float
        The frozen bench's wall time so far: the probe's budget is ``SHARE`` of it, ``MAX_SECONDS`` at most,
        unless ``config.probe_seconds`` sets it.
    test_source : str, optional
        The test file, named in the advised ``finetune`` command so that its score compares with bench's.
    oof : ndarray of shape (n_train, n_classes), optional
        The frozen best's out-of-fold probabilities (columns: the sorted labels). Given, the fine-tune is
        measured against *them* on probe-val: the frozen best trained on most of the data, not on 512 rows.
    """
    from bertfeat.extract.finetune import Settings
    from bertfeat.extract.trainer import Trainer
    from bertfeat.extract import model as model_io
    from sklearn.linear_model import LogisticRegression

    budget = config.probe_seconds if config.probe_seconds is not None else min(MAX_SECONDS, SHARE * bench_seconds)
    n = len(train.texts)
    if train.pairs is not None:
        return skipped("pair data: the fine-tune encodes one text per row")
    if n < MIN_ROWS:
        return skipped(f"{n} training rows, fewer than {MIN_ROWS}: the probe's scores would differ by noise alone")
    t0 = time.perf_counter()
    classes, y_all = np.unique(np.asarray(train.labels), return_inverse=True)
    size = min(n, PROBE_TRAIN + PROBE_VAL)
    rows = _stratified(y_all, size, config.seed)
    y = y_all[rows]
    s = Settings(method="full", model=config.model, epochs=1, batch_size=PROBE_BATCH, lr=PROBE_LR,
                 val_size=min(PROBE_VAL, size // 2) / size, max_length=config.max_length, seed=config.seed,
                 device=config.device).resolved()
    trainer = Trainer(s, model_io.resolve_model_dir(s.model), [train.texts[i] for i in rows], y, len(classes), False)
    tr, va = trainer.train_rows, trainer.val_rows
    frozen = LogisticRegression(C=10.0, max_iter=1000).fit(X_mean[rows[tr]], y[tr]).predict(X_mean[rows[va]])
    t1 = time.perf_counter()
    _warm_start(trainer, tr, config.seed)
    # an epoch costs about three forward passes (forward, backward), probe-val one more: stop here if over budget
    forward = time.perf_counter() - t1
    expected = time.perf_counter() - t0 + forward * (3 + len(va) / max(len(tr), 1))
    if expected > budget:
        why = "probe_seconds" if config.probe_seconds is not None else \
            f"a fifth of the frozen bench's {bench_seconds:.0f} s, {MAX_SECONDS:.0f} s at most; --probe-seconds sets it"
        return skipped(f"it would take ~{expected:.0f} s here, over its budget of {budget:.0f} s ({why})",
                       seconds=round(time.perf_counter() - t0, 2))
    t1 = time.perf_counter()
    trainer.train_epoch(0, 0)
    train_seconds = time.perf_counter() - t1
    tuned = trainer._pooled(va, head=True).argmax(1)
    hit_frozen, hit_tuned = frozen == y[va], tuned == y[va]
    # A fine-tune on 512 rows that beats the frozen best fit on (cv-1)/cv of *all* rows will, with more rows,
    # beat it by more: measured against the best's out-of-fold predictions, the gain is a lower bound. Against a
    # frozen head on the same 512 rows it is not (TREC: +5.5 at 512 rows, +0.2 at all; BENCHMARKS.md).
    hit_best = oof[rows[va]].argmax(1) == y[va] if oof is not None else hit_frozen
    gain = float(hit_tuned.mean() - hit_best.mean())
    # paired: only the rows where exactly one side is right move the difference
    d = hit_tuned.astype(float) - hit_best
    noise = 2 * float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 1.0
    texts_per_s = len(tr) / max(train_seconds, 1e-9)
    epochs = config.epochs or FULL_EPOCHS
    est = 1.1 * (n * 0.9 * epochs / texts_per_s)  # 10 % for each epoch's validation pass and saving
    seconds = time.perf_counter() - t0
    recommend = bool(gain > max(noise, MIN_GAIN))
    out = {"frozen_score": round(frozen_score, 4), "probe_frozen": round(float(hit_frozen.mean()), 4),
           "frozen_best_val": round(float(hit_best.mean()), 4),
           "probe_finetuned": round(float(hit_tuned.mean()), 4), "gain": round(gain, 4), "noise": round(noise, 4),
           "recommend": recommend, "estimated_full_seconds": round(est, 1), "epoch_seconds": round(est / epochs, 1),
           "epochs": epochs, "n_probe_train": int(len(tr)), "n_probe_val": int(len(va)),
           "texts_per_s": round(texts_per_s, 1),
           "seconds": round(seconds, 2), "budget_seconds": round(budget, 1), "over_budget": seconds > budget}
    out["advice"] = advice(out, _command(config, train.source, test_source))
    log.info("fine-tune probe: frozen best %.4f (logreg on %d rows: %.4f), fine-tuned %.4f on %d probe-val rows "
             "(gain %+.1f points, noise %.1f); a full fine-tune ~%.0f s here; %.1f s", out["frozen_best_val"], len(tr),
             out["probe_frozen"], out["probe_finetuned"], len(va),
             100 * gain, 100 * noise, est, seconds)
    return out


def auto_methods(probe: dict, config):
    """``bench --finetune auto``: (["full"], config with the epochs that fit ``time_budget``) when the probe
    recommends fine-tuning and one epoch fits; else ([], config). The decision is logged and kept in ``probe``."""
    from bertfeat.options import replace

    epochs = 0
    if not probe["recommend"]:
        probe["auto"] = "no full fine-tune: the probe does not recommend one"
    else:
        epochs = probe["epochs"]
        if config.time_budget is not None:  # as many epochs as the budget holds, the default's at most
            epochs = min(epochs, int(60 * config.time_budget // probe["epoch_seconds"]))
        probe["auto"] = (
            f"full fine-tune, {epochs} epochs at most (~{epochs * probe['epoch_seconds'] / 60:.0f} min)" if epochs >= 1
            else f"no full fine-tune: one epoch takes ~{probe['epoch_seconds'] / 60:.0f} min here, over the time "
                 f"budget of {config.time_budget:g} min")
    log.info("finetune auto: %s", probe["auto"])
    return (["full"], replace(config, epochs=epochs)) if epochs >= 1 else ([], config)


def _warm_start(trainer, rows, seed: int) -> None:
    """Start the linear layer at a logistic regression on the untuned encoder's own vectors (LP-FT, Kumar et
    al. 2022): one short epoch then measures what tuning the *encoder* adds, not how fast a random layer learns."""
    import torch
    from sklearn.linear_model import LogisticRegression

    X = trainer._pooled(rows, head=False)
    lr = LogisticRegression(C=10.0, max_iter=1000, random_state=seed).fit(X, trainer.y[rows])
    weight, bias = lr.coef_, lr.intercept_
    if weight.shape[0] == 1:  # binary: sklearn keeps one row; softmax over (0, w) is the same model
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    head = trainer.net.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[lr.classes_] = torch.as_tensor(weight, dtype=head.weight.dtype)
        head.bias[lr.classes_] = torch.as_tensor(bias, dtype=head.bias.dtype)


def _stratified(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` row positions, each class in proportion (at least one row of each class where ``size`` allows)."""
    if size >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and size >= np.count_nonzero(counts) else None
    rows, _ = train_test_split(np.arange(len(y)), train_size=size, random_state=seed, stratify=stratify)
    return np.sort(rows)


def _command(config, train_source: str, test_source: str | None) -> str:
    """The ``finetune`` command that runs the full fine-tune the probe estimated, on the bench's data."""
    from shlex import quote

    from bertfeat.options import DEFAULT_MODEL

    parts = ["bertfeat finetune --train", quote(train_source)] + (["--test", quote(test_source)] if test_source else [])
    if config.model != DEFAULT_MODEL:
        parts += ["--model", quote(config.model)]
    if config.epochs:
        parts += ["--epochs", str(config.epochs)]
    return " ".join(parts + ["--method full"])


def advice(probe: dict, command: str) -> str | None:
    """The line under the table: what fine-tuning would gain and the command, or why there is no advice."""
    if probe.get("skipped"):
        return f"fine-tune probe: skipped ({probe['skipped']})"
    if not probe["recommend"]:
        return (f"fine-tune probe: no advice: fine-tuned {probe['probe_finetuned']:.4f} vs the frozen best "
                f"{probe['frozen_best_val']:.4f} on {probe['n_probe_val']} held-out training rows "
                f"({100 * probe['gain']:+.1f} points, noise ±{100 * probe['noise']:.1f}); {probe['seconds']:.1f} s")
    minutes = probe["estimated_full_seconds"] / 60
    return (f"fine-tuning is likely {100 * probe['gain']:+.1f} points on this data (≈ {minutes:.0f} min here): "
            f"`{command}`")


__all__ = ["advice", "auto_methods", "run_probe"]

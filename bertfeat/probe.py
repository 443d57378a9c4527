"""The fine-tune probe: would fine-tuning the encoder beat the frozen features on this data, and how long would it take?

A bounded experiment on the *training* data only (the test set stays unseen). ``PROBE_VAL`` stratified training
rows are held out. On the other rows, twice one epoch of the full fine-tune's recipe (``extract/trainer.py``:
encoder + mean pooling + linear layer, warm-up then linear decay): on m/4 rows and on m rows, m the largest of
``SIZES`` the budget holds. The linear layer starts at a logistic regression on the rows' frozen vectors (LP-FT),
and the word-embedding matrix stays as it is (its dense update of half the model's weights adds a fifth to a CPU
step, more on a busy machine; a short fine-tune barely moves it).

The estimate compares like with like on the same held-out rows: the fine-tune's accuracy *extrapolated to the
rows the full fine-tune trains on*, against the frozen best's out-of-fold accuracy (the frozen best was fit on
(cv-1)/cv of all rows). Compared as they stand, a fine-tune on m rows against a frozen best fit on nearly all of
them, the data-size gap swamps the method gap (SST-2: -5.6 points at 1,024 rows, +0.3 at 4,096, where the full
fine-tune gains +4.9 on the test set; BENCHMARKS.md "Fine-tune probe", ``benchmarks/finetune_probe.py --sizes``).
The extrapolation is a power law through the two sizes, held-out error = a + b rows^-0.3: an assumed exponent,
not fit per data set (three points of one seed do not pin it down). With it the 4,096-row pair put SST-2 at +6.1
and +10.5 in two runs against the measured +4.9, and TREC and Banking77, where fine-tuning does not gain, at
+1.7 and -2.4.

Advice only when the estimate is above its noise (twice the paired standard error over the held-out rows) and
``MIN_GAIN``. The probe's measured texts per second give the full fine-tune's duration here.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

from bertfeat.extract.tuning_data import length_bucketed

log = logging.getLogger("bertfeat")

PROBE_VAL = 1000  # held-out rows both sides are scored on: a paired standard error of about a point
# m, the larger fine-tune's rows: the largest the budget holds (all the rest, if fewer); the other gets m/4
SIZES = (4096, 2048, 1024)
MIN_ROWS = 100  # below this the two scores differ by noise alone
MIN_SECONDS = 2.0  # a budget under this skips the probe at once: loading the encoder alone takes about a second
MAX_SECONDS = 30.0  # the probe's cap on any machine, and at most SHARE of the frozen bench's wall time
SHARE = 0.2
AUTO_SHARE, AUTO_SECONDS = 0.1, 120.0  # with finetune="auto": a share of time_budget, and the cap (_budget)
MIN_PER_CLASS = 32  # the small fine-tune's rows per class, on average, below which its curve is not extrapolated
MIN_GAIN = 0.01  # a gain under one point is not worth a fine-tune's cost, even when it is not noise
PROBE_BATCH = 16  # twice the optimizer steps per row of the full fine-tune's 32: one epoch has to count
PROBE_LR = 1e-4  # the full fine-tune's rate
FULL_EPOCHS = 5  # the full fine-tune's default most epochs (extract.finetune.DEFAULTS)
EXPONENT = 0.3  # of the fine-tune's learning curve, held-out error = a + b rows^-EXPONENT (see the docstring)
# The full fine-tune's seconds per row over the probe's: it also updates the word embeddings (30,522 x 384 for
# MiniLM, half the model), in batches of 32; and a probe step's seconds over its forward and backward passes (the
# optimizer's update). Measured on the 2-core CPU at load 1.5-2 (benchmarks/finetune_probe.py --speed): 1.17 and
# 1.09 on two threads, 1.26 and 1.14 on one.
FULL_STEP_COST = 1.2
STEP_OVERHEAD = 1.1


def skipped(reason: str, **extra) -> dict:
    log.info("fine-tune probe skipped: %s", reason)
    out = {"skipped": reason, "recommend": False, **extra}
    return {**out, "advice": advice(out, "")}


def run_probe(config, train, X_mean, frozen_score: float, bench_seconds: float, test_source: str | None,
              oof) -> dict:
    """The ``finetune_probe`` record of results.json.

    Parameters
    ----------
    config : BenchConfig
    train : Table
        The training data (texts, labels).
    X_mean : ndarray of shape (n_train, dim) or None
        The training rows' frozen mean vectors, as bench embedded them: the linear layer's start. None: the
        probe computes them for its rows.
    frozen_score : float
        The frozen best's cross-validated score (reported beside the estimate).
    bench_seconds : float
        The frozen bench's wall time so far: the probe's budget is ``SHARE`` of it, ``MAX_SECONDS`` at most,
        unless ``config.probe_seconds`` sets it.
    test_source : str or None
        The test file, named in the advised ``finetune`` command so that its score compares with bench's.
    oof : ndarray of shape (n_train, n_classes)
        The frozen best's out-of-fold probabilities (columns: the sorted labels): what the fine-tune is
        measured against on the held-out rows.
    """
    budget, why = _budget(config, bench_seconds)
    n = len(train.texts)
    if train.pairs is not None:
        return skipped("pair data: the fine-tune encodes one text per row")
    if n < MIN_ROWS:
        return skipped(f"{n} training rows, fewer than {MIN_ROWS}: the probe's scores would differ by noise alone")
    if budget < MIN_SECONDS:  # before loading anything
        return skipped(f"its budget of {budget:.1f} s is under the {MIN_SECONDS:.0f} s that loading the encoder and "
                       f"the smallest probe take ({why})", seconds=0.0)
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(config, train, X_mean, frozen_score, test_source, oof, budget, why)
    finally:
        torch.set_num_threads(threads)  # the probe may have trained on one (_token_seconds)


def _budget(config, bench_seconds: float) -> tuple[float, str]:
    """The probe's seconds, and why. Inside a plain bench it is an add-on whose cost must stay small beside the
    frozen bench's; with ``finetune="auto"`` the user has asked for a fine-tune when one pays, and the probe
    that decides may take a tenth of the minutes they allow it (``time_budget``), two minutes at most: enough for
    the 4,096-row pair, whose estimate is the first above its noise on SST-2 (BENCHMARKS.md)."""
    if config.probe_seconds is not None:
        return config.probe_seconds, "probe_seconds"
    plain = min(MAX_SECONDS, SHARE * bench_seconds)
    if config.finetune == "auto":
        cap = AUTO_SECONDS if config.time_budget is None else min(AUTO_SECONDS, AUTO_SHARE * 60 * config.time_budget)
        if cap > plain:
            return cap, (f"--finetune auto: a tenth of --time-budget, {AUTO_SECONDS:.0f} s at most"
                         if config.time_budget is not None else f"--finetune auto: {AUTO_SECONDS:.0f} s")
    return plain, (f"a fifth of the frozen bench's {bench_seconds:.0f} s, {MAX_SECONDS:.0f} s at most; "
                   "--probe-seconds sets it")


def _run(config, train, X_mean, frozen_score: float, test_source, oof, budget: float, why: str) -> dict:
    """The probe proper (``run_probe`` has checked its inputs and budget)."""
    n = len(train.texts)
    t0 = time.perf_counter()
    classes, y = np.unique(np.asarray(train.labels), return_inverse=True)
    val = _stratified(y, min(PROBE_VAL, n // 4), config.seed)
    pool = np.setdiff1d(np.arange(n), val)
    stream = pool[_stratified(y[pool], min(SIZES[0], len(pool)), config.seed)]
    stream = stream[np.random.default_rng(config.seed).permutation(len(stream))]  # any prefix: a random sample
    trainer = _trainer(config, train.texts, y, val, stream, len(classes))
    per_token = _token_seconds(trainer)  # seconds per padded token of a training pass, measured here and now
    spent = time.perf_counter() - t0
    sizes = [s for s in SIZES if s < len(stream)] + [len(stream)]
    # two epochs (m/4 and m rows, length-bucketed as train_epoch batches them; their optimizer steps:
    # STEP_OVERHEAD), then the held-out rows twice (a forward pass: about a third of a training pass's cost);
    # without a curve to extrapolate (too few rows per class at m/4), the m-row fine-tune alone
    curve = {m: max(1, m // 4) / len(classes) >= MIN_PER_CLASS for m in sizes}
    val_tokens = int(trainer.lengths[:len(val)].sum()) / 3  # in length-sorted batches: little padding
    cost = {m: per_token * (STEP_OVERHEAD * (curve[m] * _epoch_tokens(trainer, max(1, m // 4))
                                             + _epoch_tokens(trainer, m)) + (1 + curve[m]) * val_tokens)
            for m in sizes}
    fits = [m for m in sizes if spent + cost[m] <= budget]
    if not fits:
        need = spent + cost[min(sizes)]
        return skipped(f"it would take ~{need:.0f} s here, over its budget of {budget:.0f} s ({why})",
                       seconds=round(time.perf_counter() - t0, 2))
    m = max(fits)
    hit_small = None
    if curve[m]:
        start = {k: v.detach().clone() for k, v in trainer.net.state_dict().items()}
        hit_small, _, _ = _tuned(trainer, X_mean, y, val, stream, max(1, m // 4), config.seed)
        trainer.net.load_state_dict(start)  # the second fine-tune starts where the first did
        trainer.optimizer.state.clear()
    hit_tuned, hit_same, train_seconds = _tuned(trainer, X_mean, y, val, stream, m, config.seed)
    hit_best = oof[val].argmax(1) == y[val]
    # The fine-tune's held-out error against its rows, err(r) = a + b r^-EXPONENT, through the two sizes, at the
    # full fine-tune's rows: from m to there it gains `grow` times what it gained from m/4 to m
    rows = 0.9 * n  # 10 % of them are the full fine-tune's validation split
    # no curve from a few-shot start (curve[m] false): there the small fine-tune's error is its linear layer's
    # few examples per class, a steep start the curve does not keep (Banking77, 256 rows for 77 classes: 0.638
    # -> 0.819 at 1,024 rows, extrapolated to +5.3 points where the full fine-tune measures -1.1)
    grow = max(0.0, 1 - (rows / m) ** -EXPONENT) / (4 ** EXPONENT - 1) if curve[m] else 0.0
    growth = max(0.0, float(hit_tuned.mean() - hit_small.mean())) * grow if curve[m] else 0.0
    gain = float(hit_tuned.mean() - hit_best.mean()) + growth
    # paired: each held-out row's part in the estimate, both fine-tunes and the frozen best on the same row
    d = (1 + grow) * hit_tuned - grow * hit_small - hit_best if growth else hit_tuned - hit_best.astype(float)
    noise = 2 * float(np.std(d, ddof=1) / math.sqrt(len(d)))
    texts_per_s = m / max(train_seconds, 1e-9)
    epochs = config.epochs or FULL_EPOCHS
    # 10 % more than its training rows for each epoch's validation and saving
    epoch_seconds = 1.1 * FULL_STEP_COST * rows / texts_per_s
    seconds = time.perf_counter() - t0
    recommend = bool(gain > max(noise, MIN_GAIN))
    out = {"frozen_score": round(frozen_score, 4), "frozen_best_val": round(float(hit_best.mean()), 4),
           "probe_frozen": None if hit_same is None else round(float(hit_same.mean()), 4),
           "probe_finetuned_small": round(float(hit_small.mean()), 4) if curve[m] else None,
           "probe_finetuned": round(float(hit_tuned.mean()), 4),
           "lower_bound": round(float(hit_tuned.mean() - hit_best.mean()), 4), "gain": round(gain, 4),
           "noise": round(noise, 4), "recommend": recommend,
           "estimated_full_seconds": round(epochs * epoch_seconds, 1), "epoch_seconds": round(epoch_seconds, 1),
           "epochs": epochs, "n_probe_train": int(m), "n_probe_small": int(max(1, m // 4)) if curve[m] else None,
           "n_probe_val": int(len(val)), "extrapolated": curve[m], "more_rows_with_more_time": m < max(sizes),
           "texts_per_s": round(texts_per_s, 1),
           "seconds": round(seconds, 2), "budget_seconds": round(budget, 1), "over_budget": seconds > budget}
    out["advice"] = advice(out, _command(config, train.source, test_source))
    log.info("fine-tune probe: %s vs the frozen best %.4f on %d held-out rows: %+.1f points at %d rows, noise "
             "%.1f; a full fine-tune ~%.0f s here; %.1f s", _tuned_text(out), out["frozen_best_val"], len(val),
             100 * gain, rows, 100 * noise, epochs * epoch_seconds, seconds)
    return out


def _tuned(trainer, X_mean, y, val, stream, m: int, seed: int):
    """One epoch of the probe's fine-tune on the stream's first ``m`` rows, its layer started at a logistic
    regression on their frozen vectors. Returns (held-out rows it gets right, the ones that logistic regression
    gets right or None without ``X_mean``, training seconds)."""
    rows, mine = stream[:m], len(val) + np.arange(m)  # training-data positions; the trainer's (held-out first)
    trainer.train_rows = mine
    trainer.steps_per_epoch = trainer.total_steps = math.ceil(len(mine) / PROBE_BATCH)
    start = X_mean[rows] if X_mean is not None else trainer._pooled(mine, head=False)
    frozen = _warm_start(trainer, start, y[rows], seed)
    # like with like: that logistic regression (the fine-tune's start) on the held-out rows
    same = frozen.predict(X_mean[val]) == y[val] if X_mean is not None else None
    t = time.perf_counter()
    trainer.train_epoch(0, 0)
    seconds = time.perf_counter() - t
    return trainer._pooled(trainer.val_rows, head=True).argmax(1) == y[val], same, seconds


def _trainer(config, texts, y, val, stream, n_classes: int):
    """The full fine-tune's trainer on the held-out rows then the stream (its rows set by the caller), with the
    word embeddings frozen."""
    from bertfeat.extract import model as model_io
    from bertfeat.extract.finetune import Settings
    from bertfeat.extract.trainer import Trainer

    rows = np.concatenate([val, stream])
    s = Settings(method="full", model=config.model, epochs=1, batch_size=PROBE_BATCH, lr=PROBE_LR, val_size=0.0,
                 max_length=config.max_length, seed=config.seed, device=config.device).resolved()
    trainer = Trainer(s, model_io.resolve_model_dir(s.model), [texts[i] for i in rows], y[rows], n_classes, False)
    trainer.net.body.get_input_embeddings().weight.requires_grad_(False)  # AdamW skips a weight with no grad
    trainer.val_rows = np.arange(len(val))
    return trainer


def _token_seconds(trainer) -> float:
    """Seconds per padded token of a forward and backward pass, here, now; on a busy machine one thread can be
    several times faster than torch's several, whose threads wait for each other (a 2-core CPU at load 6: 24
    rows/s on one, 2.5 on two): the probe then trains on one."""
    torch = trainer.torch
    seconds = _measured(trainer)
    if torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        one = _measured(trainer)
        if one < seconds:
            return one
        torch.set_num_threads(threads)
    return seconds


def _measured(trainer, batches: int = 3) -> float:
    """Seconds per padded token: forward and backward passes over the first batches of the stream's epoch order
    (length-bucketed, as train_epoch runs them), the first one untimed (it sets up kernels), no optimizer step
    (the weights stay as they are). Timed on random batches instead, the padding of mixed lengths made the
    estimate 2.4 times the time the probe then took (SST-2)."""
    first = len(trainer.val_rows)
    order = first + _epoch_order(trainer, len(trainer.y) - first)
    tokens, seconds = 0, 0.0
    trainer.net.train()
    for b in range(batches):
        rows = [int(r) for r in order[b * PROBE_BATCH:(b + 1) * PROBE_BATCH]]
        if not rows:
            break
        t = time.perf_counter()
        trainer._loss([[r] for r in rows], [int(trainer.y[r]) for r in rows]).backward()
        if b:
            tokens, seconds = tokens + len(rows) * int(trainer.lengths[rows].max()), seconds + time.perf_counter() - t
    trainer.optimizer.zero_grad(set_to_none=True)
    if not tokens:  # a stream of one batch: the untimed one is all there is
        return 1e-9
    return seconds / tokens


def _epoch_order(trainer, m: int) -> np.ndarray:
    """The stream's first ``m`` rows (0-based in the stream) in the order train_epoch(0, ...) runs them."""
    return length_bucketed(trainer.lengths[len(trainer.val_rows) + np.arange(m)], PROBE_BATCH,
                           np.random.default_rng([trainer.s.seed, 0]))


def _epoch_tokens(trainer, m: int) -> int:
    """Padded tokens of one probe epoch on the stream's first ``m`` rows."""
    lengths = trainer.lengths[len(trainer.val_rows) + _epoch_order(trainer, m)]
    return _padded(lengths, PROBE_BATCH)


def _padded(lengths: np.ndarray, batch: int) -> int:
    """Padded tokens of ``lengths`` cut into batches of ``batch`` in this order."""
    return int(sum(len(c) * c.max() for c in np.array_split(lengths, max(1, -(-len(lengths) // batch)))))


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
            f"full fine-tune, {epochs} epoch{'s' * (epochs != 1)} at most "
            f"(~{epochs * probe['epoch_seconds'] / 60:.0f} min)" if epochs >= 1
            else f"no full fine-tune: one epoch takes ~{probe['epoch_seconds'] / 60:.0f} min here, over the time "
                 f"budget of {config.time_budget:g} min")
    log.info("finetune auto: %s", probe["auto"])
    return (["full"], replace(config, epochs=epochs)) if epochs >= 1 else ([], config)


def _warm_start(trainer, X, y, seed: int):
    """Start the linear layer at a logistic regression on the untuned encoder's vectors of the probe-train rows
    (LP-FT, Kumar et al. 2022): the epoch then measures what tuning the *encoder* adds, not how fast a random
    layer learns. Returns the logistic regression."""
    import torch
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=10.0, max_iter=1000, random_state=seed).fit(X, y)
    weight, bias = lr.coef_, lr.intercept_
    if weight.shape[0] == 1:  # binary: sklearn keeps one row; softmax over (0, w) is the same model
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    head = trainer.net.head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[lr.classes_] = torch.as_tensor(weight, dtype=head.weight.dtype)
        head.bias[lr.classes_] = torch.as_tensor(bias, dtype=head.bias.dtype)
    return lr


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
        return (f"fine-tune probe: no advice: {_tuned_text(probe)} vs the frozen best "
                f"{probe['frozen_best_val']:.4f} on {probe['n_probe_val']} held-out training rows: "
                f"{100 * probe['gain']:+.1f} points "
                f"{'with all rows' if probe['extrapolated'] else 'at ' + str(probe['n_probe_train']) + ' rows'}, "
                f"noise ±{100 * probe['noise']:.1f}; "
                f"{probe['seconds']:.1f} s" + (" (a larger --probe-seconds lets it use more rows)"
                                               if probe.get("more_rows_with_more_time") else ""))
    minutes = probe["estimated_full_seconds"] / 60
    return (f"fine-tuning is likely {100 * probe['gain']:+.1f} points on this data (≈ {minutes:.0f} min here): "
            f"`{command}`")


def _tuned_text(probe: dict) -> str:
    if probe["n_probe_small"] is None:
        return (f"fine-tuned on {probe['n_probe_train']} rows {probe['probe_finetuned']:.4f} (too few rows per class "
                "for a learning curve: the estimate is that score's)")
    return (f"fine-tuned on {probe['n_probe_small']} and {probe['n_probe_train']} rows "
            f"{probe['probe_finetuned_small']:.4f} and {probe['probe_finetuned']:.4f}")


__all__ = ["advice", "auto_methods", "run_probe"]

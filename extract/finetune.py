"""Fine-tune the encoder itself: the reference that frozen features are measured against.

Two methods, one training loop (AdamW, linear warm-up then linear decay, bf16 autocast where the
hardware computes bf16, gradient accumulation under a token budget, one checkpoint per epoch):

- ``full``: body + masked mean pooling + a linear layer, cross-entropy; early stopping on a validation
  split of the training data (never the test set), the best epoch's weights kept.
- ``setfit``: SetFit's contrastive step: sentence pairs (same label -> cosine 1, other -> 0) tune the body
  with sentence-transformers' CosineSimilarityLoss (MSE on the cosine); the caller then fits a logistic
  regression on the tuned, normalized vectors.

The result is a plain Hugging Face model folder (safetensors, tokenizer, config) that ``BertEncoder``
loads like any local model, so predicting with it is the frozen path with other weights. Checkpoints:
``extract/checkpoint.py``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bertfeat.errors import BertfeatError
from bertfeat.extract import checkpoint, model as model_io
from bertfeat.extract.trainer import Trainer

log = logging.getLogger("bertfeat")

METHODS = ("full", "setfit")
# Per-method defaults, priors not yet tuned on data (BENCHMARKS.md gives the commands that check them on
# validation splits). full: 1e-4 suits a 6-layer MiniLM (BERT-base recipes use 2e-5..5e-5; small models
# take larger steps), the new linear layer learns at trainer.HEAD_LR_SCALE times that; 5 epochs at most
# (the BERT paper's 2-4, plus room for early stopping) keep TREC/Banking77 within minutes on a 2-core CPU.
# setfit: the SetFit paper's recipe (1 epoch, 2e-5, batch 16, 20 pair rounds per text); no validation split.
DEFAULTS = {"full": {"epochs": 5, "lr": 1e-4, "batch_size": 32, "val_size": 0.1},
            "setfit": {"epochs": 1, "lr": 2e-5, "batch_size": 16, "val_size": 0.0}}
PATIENCE = 2  # epochs without a better validation score before stopping
ENCODER = "encoder"


@dataclass
class Settings:
    """What a fine-tune does; every field except ``device`` is part of the checkpoint's run key.

    Parameters
    ----------
    method : {"full", "setfit"}, default="full"
    model : str, default="all-MiniLM-L6-v2"
        Base model: Hugging Face id or local folder.
    epochs, lr, batch_size, val_size : number or None
        None: the method's default (``DEFAULTS``). ``batch_size`` is texts (full) or pairs (setfit) per
        optimizer step, whatever the micro-batches. ``val_size``: share of the training data held out.
    max_length : int, default=128
        Tokens per text; the tuned encoder's vectors use the same limit.
    seed : int, default=0
    pairs_per_text : int, default=20
        setfit: rounds of one positive and one negative pair per text (SetFit's ``num_iterations``).
    max_pairs : int, default=25000
        setfit: cap on pairs per epoch, so large data sets stay bounded.
    device : {"auto", "cpu", "cuda", "mps"}, default="auto"
    """

    method: str = "full"
    model: str = model_io.DEFAULT_MODEL
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    val_size: float | None = None
    max_length: int = 128
    seed: int = 0
    pairs_per_text: int = 20
    max_pairs: int = 25_000
    device: str = "auto"

    def resolved(self) -> "Settings":
        """A copy with the method's defaults filled in, after checking every value."""
        if self.method not in METHODS:
            raise BertfeatError(f"unknown method '{self.method}'; expected one of: {', '.join(METHODS)}")
        filled = {k: (v if v is not None else DEFAULTS[self.method].get(k)) for k, v in asdict(self).items()}
        out = Settings(**filled)
        for name in ("epochs", "batch_size", "max_length", "pairs_per_text", "max_pairs"):
            value = getattr(out, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BertfeatError(f"bad --{name.replace('_', '-')} {value!r}; expected a positive whole number")
        if not out.lr > 0 or not math.isfinite(out.lr):
            raise BertfeatError(f"bad lr={out.lr!r}; expected a positive number such as 5e-5")
        if not 0 <= out.val_size < 1:
            raise BertfeatError(f"bad val_size={out.val_size!r}; expected a share in [0, 1), e.g. 0.1")
        return out


@dataclass
class Tuned:
    """A finished fine-tune: the tuned encoder folder, the layer (full) and the training record."""

    encoder_dir: str
    classes: list[str]
    weight: np.ndarray | None  # full: (n_classes, dim) linear layer on mean-pooled vectors
    bias: np.ndarray | None
    history: list[dict] = field(default_factory=list)  # one entry per epoch, epoch 0 = before training
    best_epoch: int = 0
    seconds: float = 0.0  # training, summed over resumed runs
    device: str = "cpu"
    autocast: str = "fp32"
    resumed_from: int = 0  # the epoch this process resumed after (0: started fresh)
    n_train: int = 0
    val_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))  # positions in the texts given
    n_pairs: int = 0

    @property
    def n_val(self) -> int:
        return len(self.val_rows)

    @property
    def val_accuracy(self) -> float | None:
        return self.history[self.best_epoch].get("val_accuracy") if self.history else None


def run_key(settings: Settings, texts: list[str], labels: list[str], base_id: str) -> str:
    """Everything that changes the trained weights: settings (not the device), data, base model identity."""
    digest = hashlib.sha256()
    params = {k: v for k, v in asdict(settings).items() if k != "device"}
    digest.update(json.dumps({"settings": params, "base": base_id}, sort_keys=True).encode())
    for text, label in zip(texts, labels):
        digest.update(len(text).to_bytes(8, "little") + text.encode() + b"\0" + str(label).encode() + b"\0")
    return digest.hexdigest()


def finetune(texts: list[str], labels: list[str], settings: Settings, work: str, progress: bool = True) -> Tuned:
    """Fine-tune ``settings.model`` on labelled texts; resumes from ``work``/ckpt when a run was cut short.

    Parameters
    ----------
    texts, labels : list of str
        Training data; a validation share (``val_size``) is held out of it.
    settings : Settings
    work : str
        The run's work folder (``temp/`` of the output folder): checkpoints, then the tuned ``encoder/``.
    progress : bool, default=True
        A progress bar with the loss per epoch on stderr, and one line per epoch with the validation scores.

    Returns
    -------
    Tuned
    """
    s = settings.resolved()
    base_dir = model_io.resolve_model_dir(s.model)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise BertfeatError(f"fine-tuning needs at least two labels; the training data has only '{classes[0]}'")
    y = np.searchsorted(classes, labels)
    key = run_key(s, texts, labels, model_io.model_id(base_dir))
    ckpt_dir = os.path.join(work, "ckpt")
    state = checkpoint.latest(ckpt_dir, key)
    trainer = Trainer(s, base_dir, texts, y, len(classes), progress)
    resumed = 0
    if state is None:
        state = {"key": key, "epoch": 0, "step": 0, "best_epoch": 0, "seconds": 0.0, "stopped": False,
                 "history": [trainer.evaluate()]}
        trainer.log_epoch(state["history"][0], best=False)
    else:
        resumed = state["epoch"]
        log.info("resuming %s fine-tune after epoch %d of %d (%s)", s.method, resumed, s.epochs, state["path"])
        trainer.restore(state)
    while not state["stopped"]:
        t0 = time.perf_counter()
        train_loss = trainer.train_epoch(state["epoch"], state["step"])
        entry = {"epoch": state["epoch"] + 1, "train_loss": train_loss, **trainer.evaluate()}
        state["seconds"] += time.perf_counter() - t0
        state["epoch"] += 1
        state["step"] += trainer.steps_per_epoch
        state["history"].append(entry)
        # Epoch 0 (before training) is only a baseline to print: its layer is random, so it is never kept.
        best = state["best_epoch"] == 0 or _better(entry, state["history"][state["best_epoch"]])
        if best:
            state["best_epoch"] = state["epoch"]
        trainer.log_epoch(entry, best)
        state["stopped"] = state["epoch"] >= s.epochs or state["epoch"] - state["best_epoch"] >= PATIENCE
        checkpoint.save(ckpt_dir, state, trainer.net, trainer.optimizer_state())
    best_weights = checkpoint.weights_of(ckpt_dir, state["best_epoch"])
    encoder_dir = trainer.save_encoder(os.path.join(work, ENCODER), best_weights)
    weight = bias = None
    if s.method == "full":
        weight = trainer.net.head.weight.detach().float().cpu().numpy()
        bias = trainer.net.head.bias.detach().float().cpu().numpy()
    return Tuned(encoder_dir, classes, weight, bias, state["history"], state["best_epoch"], state["seconds"],
                 trainer.device, trainer.autocast, resumed, len(trainer.train_rows), np.asarray(trainer.val_rows),
                 trainer.n_pairs)


def _better(entry: dict, best: dict) -> bool:
    """Higher validation accuracy wins, then lower validation loss; without validation, the last epoch."""
    if entry.get("val_accuracy") is None:
        return True
    return (entry["val_accuracy"], -(entry.get("val_loss") or 0.0)) > \
        (best.get("val_accuracy") or -1.0, -(best.get("val_loss") or 0.0))

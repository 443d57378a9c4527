"""Epoch checkpoints of a fine-tune, so that a killed run resumes from its last whole epoch.

Layout of a checkpoint folder (the run folder's ``temp/ckpt``)::

    epoch-3/            the last finished epoch
        weights.safetensors   body and classification layer
        optimizer.pt          AdamW moments and torch's random state (tensors only: loads weights_only)
        state.json            run key, epoch, step, history, best epoch, seconds trained
    epoch-2/            the best epoch so far, when it is not the last (weights only)
    .tmp-epoch-4/       an epoch being written; a kill leaves it, the next start removes it

Invariant: an epoch counts once its folder is renamed into place. Everything is written under a
``.tmp-`` name first, so a kill at any moment leaves either the previous epoch or the new one, never a
mix. ``state.json`` carries the run key (settings, data digest, base model identity): a checkpoint of
other settings or data is refused, never resumed into.

One process at a time works in a run folder: it holds an exclusive lock on ``temp/.lock`` (``hold_run``),
which also records the run key, so an identical command finds the run before its first checkpoint and
stops with "already running" instead of deleting the other's checkpoints. The lock dies with its process:
a killed run never blocks its resume.
"""
from __future__ import annotations

import json
import os
import re
import shutil

try:
    import fcntl
except ImportError:  # Windows: no flock; two identical runs there must be kept apart by the user
    fcntl = None

from bertfeat.errors import BertfeatError

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
LOCK = ".lock"  # in the run's work folder (temp/), beside ckpt/
_EPOCH = re.compile(r"^epoch-(\d+)$")


def _epochs(folder: str) -> list[int]:
    if not os.path.isdir(folder):
        return []
    return sorted(int(m.group(1)) for m in map(_EPOCH.match, os.listdir(folder)) if m)


def latest(folder: str, key: str) -> dict | None:
    """The state of the last whole epoch in ``folder`` (None: nothing to resume), after checking its key.

    Leftover ``.tmp-`` folders of a killed write are removed here.
    """
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    epochs = _epochs(folder)
    if not epochs:
        return None
    path = os.path.join(folder, f"epoch-{epochs[-1]}")
    try:
        with open(os.path.join(path, STATE)) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        raise BertfeatError(f"checkpoint {path} is damaged; delete {folder} to start over") from None
    if state.get("key") != key:
        raise BertfeatError(f"checkpoint {folder} belongs to a fine-tune with other settings or data; pass "
                            "another out=, or delete that folder to start over")
    state["path"] = path
    return state


def weights_of(folder: str, epoch: int) -> str:
    return os.path.join(folder, f"epoch-{epoch}", WEIGHTS)


def save(folder: str, state: dict, net, optimizer_state: dict) -> None:
    """Commit one finished epoch: write it under a temp name, rename it into place, drop what is no longer
    needed (epochs other than this one and the best; the best keeps its weights only)."""
    import torch
    from safetensors.torch import save_model

    epoch, best = state["epoch"], state["best_epoch"]
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-epoch-{epoch}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        save_model(net, os.path.join(tmp, WEIGHTS))
        torch.save(optimizer_state, os.path.join(tmp, OPTIMIZER))
        with open(os.path.join(tmp, STATE), "w") as fh:
            json.dump({k: v for k, v in state.items() if k != "path"}, fh)
        final = os.path.join(folder, f"epoch-{epoch}")
        shutil.rmtree(final, ignore_errors=True)  # a re-run of an epoch whose commit was cut short
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BertfeatError(f"checkpoint {folder}: cannot write ({exc.strerror}); free disk space or pass "
                            "another out=") from None
    for old in _epochs(folder):
        if old not in (epoch, best):
            shutil.rmtree(os.path.join(folder, f"epoch-{old}"), ignore_errors=True)
    if best != epoch and os.path.exists(os.path.join(folder, f"epoch-{best}", OPTIMIZER)):
        os.remove(os.path.join(folder, f"epoch-{best}", OPTIMIZER))


def load_optimizer_state(state: dict) -> dict:
    import torch

    return torch.load(os.path.join(state["path"], OPTIMIZER), weights_only=True)


def key_of(folder: str) -> str | None:
    """The run key of the last whole epoch in ``folder``, or None (no checkpoint, or unreadable)."""
    epochs = _epochs(folder)
    if not epochs:
        return None
    try:
        with open(os.path.join(folder, f"epoch-{epochs[-1]}", STATE)) as fh:
            return json.load(fh).get("key")
    except (OSError, ValueError):
        return None


def hold_run(work: str, key: str):
    """Hold the run folder whose work folder is ``work`` for this process, recording the run ``key``; returns
    the open lock file (the lock lasts until it is closed or the process ends). A one-line error when another
    process holds it, or when it finished meanwhile."""
    out = os.path.dirname(work)
    try:
        os.makedirs(work, exist_ok=True)
        lock = open(os.path.join(work, LOCK), "a+", encoding="utf-8")
    except OSError as exc:
        raise BertfeatError(f"out={out}: cannot create ({exc.strerror}); pass a writable folder") from None
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise BertfeatError(f"{out}: the same finetune is already running there (another process); wait for it "
                            "to finish, or pass another out=") from None
    if os.path.exists(os.path.join(out, "manifest.json")):  # the other run finished while this one started
        lock.close()
        raise BertfeatError(f"out={out}: already holds a finished model; pass a new folder")
    lock.seek(0)
    lock.truncate()
    lock.write(key)
    lock.flush()
    return lock


def started_key(work: str) -> str | None:
    """The run key recorded by the process that started the run in ``work`` (``hold_run``), or None."""
    try:
        with open(os.path.join(work, LOCK), encoding="utf-8") as fh:
            return fh.read() or None
    except OSError:
        return None

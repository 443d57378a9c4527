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
"""
from __future__ import annotations

import json
import os
import re
import shutil

from bertfeat.errors import BertfeatError

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
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
                            "another --out, or delete that folder to start over")
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
                            "another --out") from None
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

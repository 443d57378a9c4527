"""Look after a cache folder: what is in it (info), is it intact (verify), remove what a user selects (prune)."""
from __future__ import annotations

import json
import os
import shutil
import time

from bertfeat.cache.store import VectorStore
from bertfeat.errors import BertfeatError


def _encoder_folders(root: str) -> list[str]:
    if not os.path.isdir(root):
        return []
    return sorted(name for name in os.listdir(root)
                  if os.path.isfile(os.path.join(root, name, "encoder.json")) or _has_shards(root, name))


def _has_shards(root: str, name: str) -> bool:
    folder = os.path.join(root, name)
    return os.path.isdir(folder) and any(n.endswith(".vectors.npy") for n in os.listdir(folder))


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
               if os.path.isfile(os.path.join(folder, n)))


def entries(root: str) -> list[dict]:
    """One dict per encoder fingerprint: its settings, shard and row counts, bytes, last write."""
    out = []
    for fp in _encoder_folders(root):
        folder = os.path.join(root, fp)
        try:
            with open(os.path.join(folder, "encoder.json")) as fh:
                settings = json.load(fh)
        except (OSError, ValueError):
            settings = {}
        store = VectorStore(root, fp)
        rows = 0
        for shard in store.shards():
            try:
                with open(os.path.join(folder, shard + ".json")) as fh:
                    rows += int(json.load(fh)["rows"])
            except (OSError, ValueError, KeyError):
                pass
        out.append({"fingerprint": fp, "model": settings.get("model"), "pooling": settings.get("pooling"),
                    "layers": settings.get("layers"), "max_length": settings.get("max_length"),
                    "precision": settings.get("precision"), "shards": len(store.shards()), "rows": rows,
                    "bytes": _folder_bytes(folder), "modified": os.path.getmtime(folder)})
    return out


def exports(root: str) -> list[dict]:
    """The ONNX exports kept under ``<root>/models`` (int8, and bf16 on a CPU): one per model and precision."""
    folder = os.path.join(root, "models")
    out = []
    for key in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, key)
        try:
            with open(os.path.join(path, "meta.json")) as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            continue  # an export still being written, or a killed one: not in use
        model_dir = os.path.normpath(str(meta.get("model_dir", "")))
        out.append({"key": key, "model": os.path.join(*model_dir.split(os.sep)[-2:]),  # a package's .../pkg/model
                    "precision": meta.get("precision"), "bytes": _folder_bytes(path),
                    "modified": os.path.getmtime(path)})
    return out


def verify(root: str) -> dict:
    """Check every committed shard against its checksums; list damage and leftovers of killed runs."""
    damaged, shards = [], 0
    for fp in _encoder_folders(root):
        store = VectorStore(root, fp)
        for shard in store.shards():
            shards += 1
            problem = store.check_shard(shard)
            if problem:
                damaged.append({"fingerprint": fp, "shard": shard, "problem": problem})
    return {"shards": shards, "damaged": damaged, "leftovers": _leftovers(root)}


def _leftovers(root: str) -> list[str]:
    """Temp files and uncommitted arrays of killed runs, relative to ``root``; reads no shard data."""
    leftovers = []
    for fp in _encoder_folders(root):
        store = VectorStore(root, fp)
        committed = set(store.shards())
        for name in os.listdir(store.folder):
            stem = name.split(".")[0]
            if name.startswith(".tmp-") or (name.endswith(".npy") and stem not in committed):
                leftovers.append(os.path.join(fp, name))
    return sorted(leftovers)


def prune(root: str, model: str | None = None, fingerprint: str | None = None,
          older_than_days: float | None = None, everything: bool = False, dry_run: bool = False) -> list[dict]:
    """Remove the encoder entries that match every given selector; returns what was (or would be) removed."""
    if not (model or fingerprint or older_than_days is not None or everything):
        raise BertfeatError("cache prune: say what to remove: --model, --fingerprint, --older-than DAYS or --all")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    chosen = [e for e in entries(root)
              if (model is None or e["model"] == model)
              and (fingerprint is None or e["fingerprint"].startswith(fingerprint))
              and (cutoff is None or e["modified"] < cutoff)]
    if not dry_run:
        for entry in chosen:
            shutil.rmtree(os.path.join(root, entry["fingerprint"]))
        if everything:  # exports are rebuilt on demand (seconds), so --all takes them too
            shutil.rmtree(os.path.join(root, "models"), ignore_errors=True)
    return chosen


def remove_leftovers(root: str, min_age_seconds: float = 3600) -> int:
    """Delete temp files and uncommitted arrays that killed runs left behind (never served anyway).

    Only files older than ``min_age_seconds``: a younger one may belong to a run still writing it.
    """
    removed = 0
    for rel in _leftovers(root):
        path = os.path.join(root, rel)
        try:
            if time.time() - os.path.getmtime(path) >= min_age_seconds:
                os.unlink(path)
                removed += 1
        except FileNotFoundError:
            pass
    return removed

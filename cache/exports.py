"""ONNX model exports kept under a cache root, and the checksum manifest that makes one trustworthy.

    <root>/models/<key>/model.onnx, tokenizer.json, meta.json    written by ``extract.onnx_backend``
    <root>/models/<key>/manifest.json                            size and sha256 of those three; written last
    <root>/models/<key>/.lock                                    held by every job using the export (``hold``)
    <root>/quarantine/models/<key>-<time>/                        a damaged export, moved aside

An export counts only if its manifest exists and every file matches it, as a shard counts only once its
commit record does: a killed, truncated or edited export is never run. The export that needed it moves
the damaged folder aside (never deletes it) and exports again. ``<key>`` is 32 hex digits; nothing else
under ``models/`` is looked at or moved. A job holds the export it uses, as it holds its cache entry
(``layout.hold``), so ``cache prune`` leaves it in place until the job ends.
"""
from __future__ import annotations

import json
import os
import re
import time

from bertfeat.cache import layout
from bertfeat.cache.files import atomic_write_json, sha256_file
from bertfeat.cache.layout import MODELS, QUARANTINE  # damaged exports share the shards' quarantine
from bertfeat.errors import BertfeatError

MANIFEST = "manifest.json"
FILES = ("model.onnx", "tokenizer.json", "meta.json")
_KEY = re.compile(r"[0-9a-f]{32}")
_held: dict[str, int] = {}  # export folder -> its lock, open for the rest of this process


def hold(folder: str) -> None:
    """Keep ``cache prune`` off the export in ``folder`` for the rest of this process: a shared lock on its
    ``.lock``, taken before the export is checked or loaded. Waits while a prune is removing the folder; a
    folder that is not there (or was just removed) is left alone, to be exported again."""
    _keep(folder, layout.hold(folder, create=False))


def publish(tmp: str, folder: str) -> None:
    """Rename the finished export ``tmp`` to ``folder``, held (``hold``) from before the rename, so no prune
    can take it between the rename and its first use. Raises the rename's ``OSError``."""
    lock = layout.hold(tmp, create=False)
    try:
        os.replace(tmp, folder)
    except OSError:
        if lock is not None:
            os.close(lock)
        raise
    _keep(folder, lock)


def _keep(folder: str, lock: int | None) -> None:
    old = _held.pop(folder, None)
    if old is not None:  # this process's lock on an earlier export of the same name
        os.close(old)
    if lock is not None:
        _held[folder] = lock


def write_manifest(folder: str) -> None:
    """Record size and sha256 of the export's files; call after they are durable, as the last write."""
    files = {name: {"bytes": os.path.getsize(os.path.join(folder, name)),
                    "sha256": sha256_file(os.path.join(folder, name))} for name in FILES}
    atomic_write_json(os.path.join(folder, MANIFEST), {"files": files})


def check_export(folder: str, deep: bool = True) -> str | None:
    """None if the export in ``folder`` is complete and matches its manifest, else what is wrong.

    ``deep=False`` compares sizes only (no hashing: for listings). A file that exists but cannot be read
    (permission, I/O error) is not damage: that raises a one-line BertfeatError, and nothing is moved.
    """
    try:
        with open(os.path.join(folder, MANIFEST), "rb") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        return f"no {MANIFEST} (an export that did not finish, or one made before exports were checked)"
    except ValueError:
        return f"{MANIFEST} is not valid JSON"
    except OSError as exc:
        raise _unreadable(folder, MANIFEST, exc) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return f"{MANIFEST} does not list the export's files"
    for name in FILES:
        entry, path = files.get(name), os.path.join(folder, name)
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int):
            return f"{MANIFEST} does not list {name}"
        try:
            size = os.path.getsize(path)
            if size != entry["bytes"]:
                return f"{name} has {size} bytes, its manifest says {entry['bytes']}"
            if deep and sha256_file(path) != entry.get("sha256"):
                return f"{name} does not match its checksum"
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            raise _unreadable(folder, name, exc) from None
    return None


def _unreadable(folder: str, name: str, exc: OSError) -> BertfeatError:
    return BertfeatError(f"model export {folder}: cannot read {name} ({exc.strerror or exc}); make it readable, "
                         "or set BERTFEAT_MODELS to a folder of your own")


def set_aside(root: str, folder: str, problem: str) -> str | None:
    """Move the damaged export ``folder`` (under ``<root>/models``) to the quarantine, where ``cache info``
    lists it and ``cache prune --quarantine`` clears it; returns where it went, or None if another process
    moved it first."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = os.path.join(root, QUARANTINE, MODELS, f"{os.path.basename(folder)}-{stamp}-{os.getpid()}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.rename(folder, target)
    except FileNotFoundError:
        return None
    atomic_write_json(os.path.join(target, "why.json"), {"export": os.path.basename(folder), "problem": problem,
                                                         "time": time.time()})
    return target


def verify_exports(root: str, deep: bool = True) -> dict:
    """Check every export under ``<root>/models``: ``{"exports": n, "damaged": [{key, folder, problem}]}``.

    Damaged exports are only reported here; the next embed that needs one rebuilds it.
    """
    models = os.path.join(root, MODELS)
    keys = sorted(n for n in os.listdir(models) if _KEY.fullmatch(n)
                  and os.path.isdir(os.path.join(models, n))) if os.path.isdir(models) else []
    damaged = []
    for key in keys:
        folder = os.path.join(models, key)
        try:
            problem = check_export(folder, deep)
        except BertfeatError as exc:
            problem = str(exc).split(": ", 1)[1]
        if problem:
            damaged.append({"key": key, "folder": folder, "problem": problem})
    return {"exports": len(keys), "damaged": damaged}

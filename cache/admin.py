"""Look after a cache folder: what is in it (info), is it intact (verify), remove what a user selects (prune).

Only what is provably the cache's own is listed or removed (``cache.layout``): entry folders named by the
fingerprint of their ``encoder.json``, exports named by the hash of their recorded settings, the quarantine,
and temp files. ``prune`` refuses a root that holds anything else and has no ``CACHEDIR.TAG``, and skips an
entry or export a running job holds (``layout.hold``, ``exports.hold``).
"""
from __future__ import annotations

import json
import os
import shutil
import time

from bertfeat.cache import exports as model_exports
from bertfeat.cache import layout
from bertfeat.cache.store import Damaged, VectorStore, read_record
from bertfeat.errors import BertfeatError, CacheError, ConfigError

# Export settings as extract.onnx_backend.export_settings records them in meta.json (before and after the
# model identity covered tokenizer and config files): an export's folder name is the hash of one of these,
# which proves a folder under models/ is an export even when its manifest is missing or damaged.
_EXPORT_FIELDS = [("weights_sha256", "precision", "outputs", "opset", "export_version", "quantize"),
                  ("model_sha256", "precision", "outputs", "opset", "export_version", "quantize")]
LEFTOVER_AGE = 3600  # seconds: a younger temp file may belong to a run still writing it


def _check_root(root: str) -> None:
    """A root that is a file is a mistyped --cache-dir: say so, rather than fail on listing it."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise CacheError(f"cache {root}: is a file, not a folder; pass cache_dir= a cache folder")


def _entries(root: str) -> list[tuple[str, dict]]:
    _check_root(root)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [(n, s) for n in names if (s := layout.entry_settings(root, n)) is not None]


def _bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def entries(root: str) -> list[dict]:
    """One dict per encoder entry: its settings, shard and row counts, bytes, last write."""
    out = []
    for fp, settings in _entries(root):
        folder = os.path.join(root, fp)
        shards, rows = VectorStore(root, fp).shards(), 0
        for shard in shards:
            try:
                rows += read_record(os.path.join(folder, shard + ".json"))["rows"]
            except (Damaged, OSError):
                pass  # counted by `cache verify`, moved aside on next use
        out.append({"fingerprint": fp, "model": settings.get("model"), "pooling": settings.get("pooling"),
                    "layers": settings.get("layers"), "max_length": settings.get("max_length"),
                    "precision": settings.get("precision"), "shards": len(shards), "rows": rows,
                    "bytes": _bytes(folder), "modified": os.path.getmtime(folder)})
    return out


def _export_meta(folder: str) -> dict | None:
    """The meta.json of an export folder if the folder is provably an export: its name is the hash of the
    export settings recorded there, or its manifest vouches for its files; else None."""
    try:
        with open(os.path.join(folder, "meta.json"), "rb") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        meta = None
    name = os.path.basename(folder)
    if not layout.is_fingerprint(name) or os.path.islink(folder):
        return None
    for fields in _EXPORT_FIELDS:
        if meta and all(f in meta for f in fields) and layout.fingerprint_of({f: meta[f] for f in fields}) == name:
            return meta
    try:
        return (meta or {}) if model_exports.check_export(folder, deep=False) is None else None
    except BertfeatError:  # a file we may not read: not provably ours
        return None


def exports(root: str) -> list[dict]:
    """The ONNX exports kept under ``<root>/models`` (int8, and bf16 on a CPU): one per model and precision."""
    folder = os.path.join(root, layout.MODELS)
    out = []
    for key in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, key)
        meta = _export_meta(path)
        if meta is None:
            continue  # being written, killed, or not an export: not ours to list or remove
        model_dir = os.path.normpath(str(meta.get("model_dir", "")))
        out.append({"key": key, "model": os.path.join(*model_dir.split(os.sep)[-2:]),  # a package's .../pkg/model
                    "precision": meta.get("precision"), "bytes": _bytes(path), "modified": os.path.getmtime(path)})
    return out


def quarantined(root: str) -> list[dict]:
    """The damaged shards moved aside (``<root>/quarantine/<fingerprint>/<shard>-<time>/``), with why."""
    base = os.path.join(root, layout.QUARANTINE)
    out = []
    for fp in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        for item in sorted(os.listdir(os.path.join(base, fp))) if os.path.isdir(os.path.join(base, fp)) else []:
            path = os.path.join(base, fp, item)
            try:
                with open(os.path.join(path, "why.json"), "rb") as fh:
                    problem = json.load(fh)["problem"]
            except (OSError, ValueError, KeyError, TypeError):
                problem = "unknown (no why.json)"
            out.append({"path": os.path.join(layout.QUARANTINE, fp, item), "problem": problem, "bytes": _bytes(path)})
    return out


def verify(root: str) -> dict:
    """Check every committed shard (record, arrays, checksums, name) and every model export (against its
    manifest). Reads only: damage is moved aside when a run next uses it."""
    damaged, unreadable, shards = [], [], 0
    for fp, _ in _entries(root):
        store = VectorStore(root, fp)
        for shard in store.shards():
            shards += 1
            problem = store.check_shard(shard)
            if problem:
                (damaged if problem[0] == "damaged" else unreadable).append(
                    {"fingerprint": fp, "shard": shard, "problem": problem[1]})
    checked = model_exports.verify_exports(root)
    damaged += [{"export": d["key"], "problem": f"model export {d['folder']}: {d['problem']} (exported again on "
                 "next use)"} for d in checked["damaged"]]
    return {"shards": shards, "exports": checked["exports"], "damaged": damaged, "unreadable": unreadable,
            "quarantined": quarantined(root), "leftovers": _leftovers(root)}


def _leftovers(root: str) -> list[str]:
    """Temp files and uncommitted arrays of killed runs, relative to ``root``; reads no shard data."""
    leftovers = [n for n in _listdir(root) if n.startswith(".tmp-") and os.path.isfile(os.path.join(root, n))]
    for fp, _ in _entries(root):
        committed = set(VectorStore(root, fp).shards())
        for name in _listdir(os.path.join(root, fp)):
            if name.startswith(".tmp-") or (name.endswith(".npy") and name.split(".")[0] not in committed):
                leftovers.append(os.path.join(fp, name))
    return sorted(leftovers)


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def prune(root: str, model: str | None = None, fingerprint: str | None = None,
          older_than_days: float | None = None, everything: bool = False, quarantine: bool = False,
          leftovers: bool = False, dry_run: bool = False) -> dict:
    """Remove what the selectors choose: encoder entries matching every one of ``model``, ``fingerprint``,
    ``older_than_days`` (or all of them, with the exports, for ``everything``), the quarantine, leftovers.

    Returns ``removed`` (the entries), ``paths`` (every path removed, or that would be with ``dry_run``) and
    ``skipped`` (paths left in place, and why: in use by a running job, no permission).
    """
    _check_root(root)
    days = older_than_days
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or not days >= 0):
        raise ConfigError(f"bad older_than={days!r}; expected a number of days, 0 or more (e.g. 30); "
                          "nothing removed")  # -1 put the cutoff in the future: it removed every entry
    pick = model is not None or fingerprint is not None or older_than_days is not None or everything
    if not (pick or quarantine or leftovers):
        raise BertfeatError("cache prune: say what to remove: --model, --fingerprint, --older-than DAYS, "
                            "--quarantine, --leftovers or --all")
    odd = layout.foreign(root)
    if odd and not layout.has_tag(root):
        raise BertfeatError(f"cache prune: {root} does not look like a bertfeat cache (no {layout.TAG}, and "
                            f"'{odd[0]}' is not a cache entry); nothing removed")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    chosen = [e for e in entries(root)
              if (model is None or e["model"] == model)
              and (fingerprint is None or e["fingerprint"].startswith(fingerprint))
              and (cutoff is None or e["modified"] < cutoff)] if pick else []
    # (path, its entry or None, whether running jobs lock it)
    plan = [(os.path.join(root, e["fingerprint"]), e, True) for e in chosen]
    if everything:  # exports are rebuilt on demand (seconds), so --all takes them too
        plan += [(os.path.join(root, layout.MODELS, x["key"]), None, True) for x in exports(root)]
    if everything or quarantine:
        plan += [(os.path.join(root, q["path"]), None, False) for q in quarantined(root)]
    if leftovers:
        now = time.time()
        plan += [(os.path.join(root, rel), None, False) for rel in _leftovers(root)
                 if now - _mtime(os.path.join(root, rel), now) >= LEFTOVER_AGE]
    removed, paths, skipped = [], [], []
    for path, entry, locked in plan:
        problem = None if dry_run else _remove(path, locked)
        if problem:
            skipped.append({"path": path, "reason": problem})
            continue
        paths.append(path)
        if entry is not None:
            removed.append(entry)
    if not dry_run and (everything or quarantine):
        _remove_empty(os.path.join(root, layout.QUARANTINE))
    return {"removed": removed, "paths": paths, "skipped": skipped}


def _mtime(path: str, default: float) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return default


def _remove(path: str, locked: bool) -> str | None:
    """Remove ``path``; for an entry or export (``locked``), only while no running job holds it. Returns why
    not, or None."""
    lock = None
    try:
        if locked:
            lock = layout.claim(path)
            if lock is None:
                return "in use by a running job"
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass  # gone already (another prune)
    except OSError as exc:
        return f"{exc.strerror or exc}: {exc.filename or path}"
    finally:
        if lock is not None:
            os.close(lock)
    return None


def _remove_empty(base: str) -> None:
    for name in _listdir(base):
        try:
            os.rmdir(os.path.join(base, name))
        except OSError:
            pass
    try:
        os.rmdir(base)
    except OSError:
        pass

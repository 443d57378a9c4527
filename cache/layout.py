"""What in a cache root belongs to the cache, and how running jobs keep ``prune`` off their entries.

    <root>/CACHEDIR.TAG                  the standard cache-directory tag (https://bford.info/cachedir/),
                                         written on the first write into an empty root; backup tools skip it
    <root>/<fingerprint>/encoder.json    the settings, plus the marker key "bertfeat_cache"
    <root>/<fingerprint>/.lock           running jobs hold a shared flock on it; prune takes it exclusively
    <root>/quarantine/<fingerprint>/<shard>-<time>/   damaged shards, moved aside with why.json
    <root>/models/<key>/                 ONNX exports (extract.onnx_backend); a ``.lock`` in each, as in
                                         an entry (``cache.exports.hold``)

A folder is an entry only if its name is 32 hex digits and equals ``fingerprint_of`` the settings in its
``encoder.json``: a GPT-2 tokenizer folder (which ships an ``encoder.json``) never passes, and entries
written before the marker existed still do. Nothing that fails this test is ever removed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

try:
    import fcntl
except ImportError:  # Windows: no flock; prune then relies on the user not pruning under a running job
    fcntl = None

from bertfeat.cache.files import atomic_write

MARKER = "bertfeat_cache"  # key in encoder.json; its value is STORE_FORMAT
STORE_FORMAT = 1
TAG = "CACHEDIR.TAG"
TAG_TEXT = (b"Signature: 8a477f597d28d172789f06886806bc55\n"
            b"# This file is a cache directory tag created by bertfeat (a vector cache).\n"
            b"# For information about cache directory tags, see https://bford.info/cachedir/\n")
QUARANTINE = "quarantine"
MODELS = "models"
LOCK = ".lock"
_NAME = re.compile(r"[0-9a-f]{32}")


def fingerprint_of(settings: dict) -> str:
    """The cache key of an encoder's settings (``BertEncoder.cache_settings()``): a folder name."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def is_fingerprint(name: str) -> bool:
    """Whether ``name`` has the shape of an entry's (or an export's) folder name: 32 hex digits."""
    return _NAME.fullmatch(name) is not None


def encoder_record(settings: dict) -> dict:
    """What ``encoder.json`` holds: the settings and the cache's marker."""
    return {**settings, MARKER: STORE_FORMAT}


def entry_settings(root: str, name: str) -> dict | None:
    """The settings of ``<root>/<name>`` if that folder is provably a cache entry, else None."""
    if not is_fingerprint(name) or os.path.islink(os.path.join(root, name)):
        return None
    try:
        with open(os.path.join(root, name, "encoder.json"), "rb") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    settings = {k: v for k, v in record.items() if k != MARKER}
    return settings if fingerprint_of(settings) == name else None


def has_tag(root: str) -> bool:
    try:
        with open(os.path.join(root, TAG), "rb") as fh:
            return fh.read(len(TAG_TEXT) + 1) == TAG_TEXT
    except OSError:
        return False


def foreign(root: str) -> list[str]:
    """Names under ``root`` that the cache did not write (an untagged root holding these is not a cache)."""
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if n not in (TAG, QUARANTINE, MODELS) and not n.startswith(".tmp-")
            and entry_settings(root, n) is None]


def mark_root(root: str) -> None:
    """Tag ``root`` as a bertfeat cache unless it holds anything else (a --cache-dir pointed at a home
    folder must not be tagged: backup tools would skip it). Best effort: an untagged cache still works."""
    try:
        if not has_tag(root) and not foreign(root):
            atomic_write(os.path.join(root, TAG), lambda fh: fh.write(TAG_TEXT))
    except OSError:
        pass


# -- locking: running jobs against prune -----------------------------------------------------------
def hold(folder: str, create: bool) -> int | None:
    """A shared lock on the entry ``folder`` for as long as the returned descriptor stays open; None when
    there is nothing to hold (no folder, or no lock file and no right to create one).

    Blocks while a prune holds the entry; if that prune removed it, the lock we then get is on a deleted
    file, so the inode is checked and, for a writer (``create``), taken again on the new folder.
    """
    if fcntl is None:
        return None
    path = os.path.join(folder, LOCK)
    while True:
        if create:
            os.makedirs(folder, exist_ok=True)
        fd = _open_lock(path, create)
        if fd is None:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create:
            return None


def _open_lock(path: str, create: bool) -> int | None:
    try:  # a reader without write permission (another user, umask 022) can still lock a read-only descriptor
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:  # no entry folder: nothing to hold
        return None
    except OSError:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None


def claim(folder: str) -> int | None:
    """An exclusive lock on the entry ``folder`` if no running job holds it, else None (for prune)."""
    if fcntl is None:
        return os.open(folder, os.O_RDONLY)
    fd = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd

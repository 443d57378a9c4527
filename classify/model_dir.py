"""Model folders: the fitted head, a manifest (what the head needs, labels, file checksums) and run.json.

Heads whose learned state is plain arrays (logreg, sgd, svm, knn, mlp, torch, vote) are stored as
``head.npz`` (``classify/persist.py``): loading one runs no code from the folder. A head that holds
other objects (lgbm's booster) is stored as ``head.joblib``, a pickle, and unpickling runs code: it
loads only with ``trust_pickle`` (``predict --trust-pickle``).

The manifest's sha256 sums catch damage (a truncated copy, a flipped bit), not an attacker: whoever
can rewrite a file can rewrite the manifest too. That is why a pickle needs the explicit trust flag.
The head file is read once: its checksum and its loading use the same bytes.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import re
import shutil
import socket
import tempfile
import time

import joblib

from bertfeat.cache import atomic_write_json, sha256_file
from bertfeat.classify import persist
from bertfeat.errors import BertfeatError, ModelFolderError

log = logging.getLogger("bertfeat")

SAFE_HEAD = "head.npz"
PICKLED_HEAD = "head.joblib"
# A folder being written: .tmp-model-<pid>@<host>-<random>, renamed into place once whole. One left by a
# writer that died is removed by the next save beside it: its process is gone, or it is older than STALE.
TMP_PREFIX = ".tmp-model-"
STALE = 3600  # seconds; writing a head (and copying an encoder) takes far less
MANIFEST = "manifest.json"
RUN = "run.json"
# Bump when the manifest's keys change; read_manifest refuses other formats in one line.
# 2: encoders/fingerprints lists; 3: what the head needs apart from how vectors were computed
# (model_id, trained_with), head.npz without pickle; 4: head.npz stores what the head holds in several
# places once (persist.py), which format 3's reader would call malformed.
FORMAT = 4
READS = (3, 4)  # a format-3 head.npz is format 4 without shared objects
# Manifest keys this module writes (callers' manifests must not carry them).
OWN_KEYS = ("format", "files", "head_file")
# The encoder settings a manifest holds (the rest - precision, device, batch size - is the loading machine's).
ENCODER_KEYS = ("model", "pooling", "layers", "max_length", "long", "normalize")


def package_versions() -> dict:
    names = ("bertfeat", "torch", "transformers", "sentence-transformers", "scikit-learn", "lightgbm", "numpy",
             "tokenizers")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def head_bytes(head) -> tuple[str, bytes]:
    """(file name, contents) of a fitted head: plain arrays where it allows, else a pickle."""
    try:
        return SAFE_HEAD, persist.dumps(head)
    except persist.Unsupported:
        buf = io.BytesIO()
        joblib.dump(head, buf)
        return PICKLED_HEAD, buf.getvalue()


def save_model_dir(out: str, head, manifest: dict, run: dict, folders: dict | None = None) -> str:
    """Write the folder under a temp name beside ``out``, then rename: a crash leaves no half folder.

    ``folders``: name inside the model folder -> folder copied there (a fine-tuned encoder), staged with
    the rest so that the folder appears whole or not at all.
    """
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise BertfeatError(f"out={out}: exists and is not an empty folder; pass a new folder")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        _remove_stale(parent)
        tmp = tempfile.mkdtemp(dir=parent, prefix=f"{TMP_PREFIX}{os.getpid()}@{socket.gethostname()}-")
    except OSError as exc:
        raise BertfeatError(f"out={out}: cannot create ({exc.strerror}); pass a writable folder") from None
    try:
        name, data = head_bytes(head)
        with open(os.path.join(tmp, name), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # durable before the rename publishes the folder (run.json, manifest: likewise)
        atomic_write_json(os.path.join(tmp, RUN), run)
        files = {n: sha256_file(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))}
        for folder, source in (folders or {}).items():  # checked by the manifest's model_id, not file sums
            shutil.copytree(source, os.path.join(tmp, folder))
        atomic_write_json(os.path.join(tmp, MANIFEST), {**manifest, "format": FORMAT, "head_file": name,
                                                        "files": files})
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a model folder is shared like any other
        _fsync_dir(tmp)  # the folder's entries, so a crash after the rename cannot leave it empty
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(tmp, out)
        _fsync_dir(parent)  # the rename itself
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = exc.strerror or "a file could not be copied"  # shutil.Error (copytree) has no strerror
        raise BertfeatError(f"out={out}: cannot write the model folder ({reason})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _remove_stale(parent: str) -> None:
    """Remove the temp folders of saves into ``parent`` that died midway (see ``TMP_PREFIX``)."""
    host = socket.gethostname()
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if not name.startswith(TMP_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        writer = re.fullmatch(rf"{re.escape(TMP_PREFIX)}(\d+)@(.*)-\w+", name)
        try:
            old = time.time() - os.stat(path).st_mtime > STALE
        except OSError:
            continue  # removed meanwhile
        if old or (writer and writer[2] == host and not _alive(int(writer[1]))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or not a pid we can ask about): leave its folder alone
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_manifest(path: str) -> dict:
    """The manifest, after checking its format and that every listed file other than the head is intact.

    The head file is checked by ``load_head``, on the bytes it loads.
    """
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise ModelFolderError(f"model folder {path}: no {MANIFEST}; pass a folder written by 'fit' or 'bench'")
    try:
        with open(manifest_path) as fh:
            manifest = json.load(fh)
        files, fmt = manifest["files"], manifest.get("format")
    except (ValueError, KeyError, TypeError):
        raise ModelFolderError(f"model folder {path}: {MANIFEST} is damaged; fit the model again") from None
    if fmt not in READS:
        raise ModelFolderError(f"model folder {path}: written by another bertfeat version (model format {fmt}, "
                            f"this one reads {' and '.join(map(str, READS))}); fit the model again")
    check_manifest(path, manifest)
    head_file = manifest.get("head_file")
    if head_file not in (SAFE_HEAD, PICKLED_HEAD) or head_file not in files:
        raise ModelFolderError(f"model folder {path}: {MANIFEST} names no head file; fit the model again")
    for name, digest in files.items():
        file_path = os.path.join(path, name)
        if os.path.basename(name) != name or not os.path.isfile(file_path):
            raise ModelFolderError(f"model folder {path}: {name} is missing; the folder is incomplete")
        if name != head_file and sha256_file(file_path) != digest:
            raise _changed(path, name)
    return manifest


def check_manifest(path: str, manifest) -> None:
    """The manifest keys that loading reads, with the types it needs: a hand-edited or foreign manifest
    fails here in one line, not later as a KeyError or TypeError."""
    def bad(what: str) -> ModelFolderError:
        return ModelFolderError(f"model folder {path}: {MANIFEST} {what}; fit the model again")

    if not isinstance(manifest, dict):
        raise bad(f"is not a JSON object but {type(manifest).__name__}")
    if not isinstance(manifest.get("files"), dict):
        raise bad("has no 'files' mapping of file names to sha256 sums")
    encoders = manifest.get("encoders")
    if not isinstance(encoders, list) or not encoders:
        raise bad(f"has {'no' if encoders is None else 'a bad'} 'encoders' list (the encoder settings)")
    for number, encoder in enumerate(encoders, 1):
        if not isinstance(encoder, dict) or not isinstance(encoder.get("model"), str):
            raise bad(f"encoder {number} is not a mapping with a 'model' name")
        unknown = sorted(set(encoder) - set(ENCODER_KEYS))
        if unknown:
            raise bad(f"encoder {number} has unknown keys ({', '.join(map(str, unknown))}); expected some of: "
                      f"{', '.join(ENCODER_KEYS)}")
    for key, kind in (("labels", list), ("model_id", str), ("trained_with", dict)):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"has no '{key}' {kind.__name__}")


def _changed(path: str, name: str) -> ModelFolderError:
    return ModelFolderError(f"model folder {path}: {name} does not match the checksum in {MANIFEST}; "
                         "the folder was changed or damaged, refusing to load it")


def load_head(path: str, manifest: dict, trust_pickle: bool = False):
    """The fitted head of a manifest returned by ``read_manifest``.

    A pickled head needs ``trust_pickle``: unpickling runs code from the file, and a checksum cannot
    tell a planted pickle from a real one (whoever wrote the file could write the manifest too).
    """
    name = manifest["head_file"]
    if name == PICKLED_HEAD and not trust_pickle:
        raise ModelFolderError(
            f"model folder {path}: the '{manifest.get('head')}' head is a pickle ({name}), and loading a pickle "
            "runs code from the file; if you trust who wrote this folder, pass trust_pickle=True")
    with open(os.path.join(path, name), "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != manifest["files"][name]:
        raise _changed(path, name)
    if name == PICKLED_HEAD:
        return joblib.load(io.BytesIO(data))
    try:
        head = persist.loads(data)
    except ValueError as exc:
        raise ModelFolderError(f"model folder {path}: {name} is not a head this version reads "
                               f"({' '.join(str(exc).split())}); fit the model again") from None
    if [str(c) for c in head.classes_] != [str(c) for c in manifest["labels"]]:
        raise ModelFolderError(f"model folder {path}: {name} predicts other labels than {MANIFEST} lists; "
                               "fit the model again")
    return head


def load_model_dir(path: str, trust_pickle: bool = False) -> tuple[dict, object, dict]:
    """(manifest, head, run.json) of a model folder, every file checked against the manifest."""
    manifest = read_manifest(path)
    head = load_head(path, manifest, trust_pickle)
    return manifest, head, _read_run(path, manifest)


def _read_run(path: str, manifest: dict) -> dict:
    """run.json, or {} with a warning when it is not a JSON object: it only records how the model was
    trained, and the head and manifest (checked) are all that predicting needs."""
    if RUN not in manifest["files"]:
        return {}
    try:
        with open(os.path.join(path, RUN), encoding="utf-8") as fh:
            run = json.load(fh)
        if isinstance(run, dict):
            return run
    except (ValueError, RecursionError):
        pass
    log.warning("warning: model folder %s: %s is not a JSON object; ignoring it (it only records how the model "
                "was trained)", path, RUN)
    return {}

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
import os
import platform
import shutil
import tempfile

import joblib

from bertfeat.cache import atomic_write_json, sha256_file
from bertfeat.classify import persist
from bertfeat.errors import BertfeatError

SAFE_HEAD = "head.npz"
PICKLED_HEAD = "head.joblib"
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


def save_model_dir(out: str, head, manifest: dict, run: dict) -> str:
    """Write the folder under a temp name beside ``out``, then rename: a crash leaves no half folder."""
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise BertfeatError(f"--out {out}: exists and is not an empty folder; pass a new folder")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-model-")
    except OSError as exc:
        raise BertfeatError(f"--out {out}: cannot create ({exc.strerror}); pass a writable folder") from None
    try:
        name, data = head_bytes(head)
        with open(os.path.join(tmp, name), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # durable before the rename publishes the folder (run.json, manifest: likewise)
        atomic_write_json(os.path.join(tmp, RUN), run)
        files = {n: sha256_file(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))}
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
        raise BertfeatError(f"--out {out}: cannot write the model folder ({exc.strerror})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
        raise BertfeatError(f"model folder {path}: no {MANIFEST}; pass a folder written by 'fit' or 'bench'")
    try:
        with open(manifest_path) as fh:
            manifest = json.load(fh)
        files, fmt = manifest["files"], manifest.get("format")
    except (ValueError, KeyError, TypeError):
        raise BertfeatError(f"model folder {path}: {MANIFEST} is damaged; fit the model again") from None
    if fmt not in READS:
        raise BertfeatError(f"model folder {path}: written by another bertfeat version (model format {fmt}, "
                            f"this one reads {' and '.join(map(str, READS))}); fit the model again")
    check_manifest(path, manifest)
    head_file = manifest.get("head_file")
    if head_file not in (SAFE_HEAD, PICKLED_HEAD) or head_file not in files:
        raise BertfeatError(f"model folder {path}: {MANIFEST} names no head file; fit the model again")
    for name, digest in files.items():
        file_path = os.path.join(path, name)
        if os.path.basename(name) != name or not os.path.isfile(file_path):
            raise BertfeatError(f"model folder {path}: {name} is missing; the folder is incomplete")
        if name != head_file and sha256_file(file_path) != digest:
            raise _changed(path, name)
    return manifest


def check_manifest(path: str, manifest) -> None:
    """The manifest keys that loading reads, with the types it needs: a hand-edited or foreign manifest
    fails here in one line, not later as a KeyError or TypeError."""
    def bad(what: str) -> BertfeatError:
        return BertfeatError(f"model folder {path}: {MANIFEST} {what}; fit the model again")

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


def _changed(path: str, name: str) -> BertfeatError:
    return BertfeatError(f"model folder {path}: {name} does not match the checksum in {MANIFEST}; "
                         "the folder was changed or damaged, refusing to load it")


def load_head(path: str, manifest: dict, trust_pickle: bool = False):
    """The fitted head of a manifest returned by ``read_manifest``.

    A pickled head needs ``trust_pickle``: unpickling runs code from the file, and a checksum cannot
    tell a planted pickle from a real one (whoever wrote the file could write the manifest too).
    """
    name = manifest["head_file"]
    if name == PICKLED_HEAD and not trust_pickle:
        raise BertfeatError(
            f"model folder {path}: the '{manifest.get('head')}' head is a pickle ({name}), and loading a pickle "
            "runs code from the file; if you trust who wrote this folder, pass --trust-pickle "
            "(trust_pickle=True in Python)")
    with open(os.path.join(path, name), "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != manifest["files"][name]:
        raise _changed(path, name)
    if name == PICKLED_HEAD:
        return joblib.load(io.BytesIO(data))
    try:
        return persist.loads(data)
    except ValueError as exc:
        raise BertfeatError(f"model folder {path}: {name} is not a head this version reads ({exc}); "
                            "fit the model again") from None


def load_model_dir(path: str, trust_pickle: bool = False) -> tuple[dict, object, dict]:
    """(manifest, head, run.json) of a model folder, every file checked against the manifest."""
    manifest = read_manifest(path)
    head = load_head(path, manifest, trust_pickle)
    run = {}
    if RUN in manifest["files"]:
        with open(os.path.join(path, RUN)) as fh:
            run = json.load(fh)
    return manifest, head, run

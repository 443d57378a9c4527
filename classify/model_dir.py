"""Model folders: the fitted head, a manifest (encoder settings, labels, file checksums) and run.json.

A head is stored with joblib, and unpickling runs code: load model folders only from sources you trust.
``load_model_dir`` checks every file against the manifest's sha256 *before* anything is unpickled.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import tempfile

import joblib

from bertfeat.cache import atomic_write_json, sha256_file
from bertfeat.errors import BertfeatError

HEAD_FILE = "head.joblib"
MANIFEST = "manifest.json"
# Bump when the manifest's keys change; read_manifest refuses other formats in one line.
FORMAT = 2  # 2: encoders/fingerprints lists (feature views of several encoders)


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


def save_model_dir(out: str, head, manifest: dict, run: dict) -> str:
    """Write the folder under a temp name beside ``out``, then rename: a crash leaves no half folder."""
    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out):
        raise BertfeatError(f"--out {out}: folder exists and is not empty; pass a new folder")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-model-")
    except OSError as exc:
        raise BertfeatError(f"--out {out}: cannot create ({exc.strerror}); pass a writable folder") from None
    try:
        joblib.dump(head, os.path.join(tmp, HEAD_FILE))
        atomic_write_json(os.path.join(tmp, "run.json"), run)
        files = {name: sha256_file(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))}
        atomic_write_json(os.path.join(tmp, MANIFEST), {**manifest, "format": FORMAT, "files": files})
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BertfeatError(f"--out {out}: cannot write the model folder ({exc.strerror})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_manifest(path: str) -> dict:
    """The manifest, after checking that every listed file matches its sha256 and nothing is missing."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise BertfeatError(f"--model-dir {path}: no {MANIFEST}; pass a folder written by 'fit' or 'bench'")
    try:
        with open(manifest_path) as fh:
            manifest = json.load(fh)
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise BertfeatError(f"--model-dir {path}: {MANIFEST} is damaged; fit the model again") from None
    if manifest.get("format") != FORMAT:
        raise BertfeatError(f"--model-dir {path}: written by another bertfeat version (model format "
                            f"{manifest.get('format')}, this one reads {FORMAT}); fit the model again")
    if HEAD_FILE not in files:
        raise BertfeatError(f"--model-dir {path}: {MANIFEST} lists no {HEAD_FILE}; fit the model again")
    for name, digest in files.items():
        file_path = os.path.join(path, name)
        if os.path.basename(name) != name or not os.path.isfile(file_path):
            raise BertfeatError(f"--model-dir {path}: {name} is missing; the folder is incomplete")
        if sha256_file(file_path) != digest:
            raise BertfeatError(
                f"--model-dir {path}: {name} does not match the checksum in {MANIFEST}; "
                "the folder was changed or damaged, refusing to load it"
            )
    return manifest


def load_head(path: str, manifest: dict):
    """Unpickle the head; call only with a manifest returned by ``read_manifest``."""
    return joblib.load(os.path.join(path, HEAD_FILE))

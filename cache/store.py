"""Content-addressed vector store: (encoder fingerprint, text) -> float32 vector, in plain .npy shards.

Layout under the cache root::

    <fingerprint>/encoder.json              the encoder settings, human-readable
    <fingerprint>/<shard>.keys.npy          S20 text keys (sha1 of text and pair, length-prefixed)
    <fingerprint>/<shard>.vectors.npy       float32 (n, dim)
    <fingerprint>/<shard>.json              commit record: rows, dim, sha256 of both arrays; written last

A shard counts only once its commit record exists, so a run killed mid-write leaves nothing that is
served. Shards are named by their content and never rewritten, so many writers need no lock.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time

import numpy as np

from bertfeat.errors import BertfeatError

log = logging.getLogger("bertfeat")

KEY_DTYPE = "S20"


def text_keys(texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
    """sha1 per text (and its pair, when given) -> fixed 20-byte keys.

    Each part is hashed with its byte length in front, so no text can pass for a pair by holding a
    separator (text "a\\0b" with pair "c", and "a" with "b\\0c", used to share a key, and so a vector).
    """
    def part(s: str) -> bytes:
        raw = s.encode("utf-8", "surrogatepass")
        return len(raw).to_bytes(8, "little") + raw

    if pairs is None:
        raw = (b"t" + part(t) for t in texts)
    else:
        raw = (b"p" + part(t) + part(p) for t, p in zip(texts, pairs))
    return np.array([hashlib.sha1(r).digest() for r in raw], dtype=KEY_DTYPE)


def fingerprint_of(settings: dict) -> str:
    """The cache key of an encoder's settings (``BertEncoder.cache_settings()``): a folder name."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def default_cache_dir() -> str:
    """``$BERTFEAT_CACHE``, else the user's cache folder (``$XDG_CACHE_HOME`` or ~/.cache)/bertfeat."""
    if os.environ.get("BERTFEAT_CACHE"):
        return os.environ["BERTFEAT_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bertfeat")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temp file in the same folder, fsync, then rename over ``path``."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"))


def storage_error(root: str, exc: OSError, what: str = "write") -> BertfeatError:
    """The one-line error for a cache folder that cannot be written (full disk, no permission)."""
    return BertfeatError(
        f"cache {root}: cannot {what} ({exc.strerror or exc}); free disk space or pass --cache-dir "
        "to a writable folder"
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class VectorStore:
    """The vectors of one encoder fingerprint."""

    def __init__(self, root: str, fingerprint: str, settings: dict | None = None, verify: bool = True):
        """``verify=False`` trusts the commit records without hashing the shards: for a process whose
        parent has just verified this cache (a Ray actor), so N workers do not re-read it N times."""
        self.root = root
        self.folder = os.path.join(root, fingerprint)
        self.fingerprint = fingerprint
        self.settings = settings
        self.verify = verify
        self._index: dict[bytes, tuple[str, int]] | None = None

    # -- reading -------------------------------------------------------------------------------
    def shards(self) -> list[str]:
        if not os.path.isdir(self.folder):
            return []
        names = os.listdir(self.folder)
        return sorted(n[:-5] for n in names if n.endswith(".json") and n != "encoder.json")

    def _paths(self, shard: str) -> tuple[str, str, str]:
        base = os.path.join(self.folder, shard)
        return base + ".keys.npy", base + ".vectors.npy", base + ".json"

    def check_shard(self, shard: str) -> str | None:
        """None if the shard's files match their recorded checksums, else what is wrong."""
        return self._read_checked(shard)[1]

    def _read_checked(self, shard: str, verify: bool = True) -> tuple[np.ndarray | None, str | None]:
        """(the shard's keys, None), or (None, what is wrong); the keys file is read once for both."""
        keys_path, vec_path, meta_path = self._paths(shard)
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
            with open(keys_path, "rb") as fh:
                keys_bytes = fh.read()
            if verify and hashlib.sha256(keys_bytes).hexdigest() != meta["keys_sha256"]:
                return None, f"{os.path.basename(keys_path)} does not match its checksum"
            if verify and sha256_file(vec_path) != meta["vectors_sha256"]:
                return None, f"{os.path.basename(vec_path)} does not match its checksum"
            return np.load(io.BytesIO(keys_bytes)), None
        except (OSError, ValueError, KeyError) as exc:
            return None, f"unreadable ({type(exc).__name__}: {exc})"

    def _load_index(self) -> dict[bytes, tuple[str, int]]:
        if self._index is not None:
            return self._index
        index: dict[bytes, tuple[str, int]] = {}
        for shard in self.shards():
            keys, problem = self._read_checked(shard, self.verify)
            if problem:
                log.warning("cache shard %s: %s; its rows will be embedded again", self._paths(shard)[2], problem)
                self._discard(shard)
                continue
            for row, key in enumerate(keys.tolist()):
                index.setdefault(key, (shard, row))
        self._index = index
        return index

    def _discard(self, shard: str) -> None:
        # Drop the commit record first: without it the shard is never served, whatever remains.
        for path in reversed(self._paths(shard)):
            try:
                os.unlink(path)
            except OSError:
                pass

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Returns (found mask, vectors of the found keys in order or None when nothing was found)."""
        found = np.zeros(len(keys), dtype=bool)
        out = None
        for pos, vectors in self.iter_found(self.locate(keys)):
            if out is None:
                out = np.empty((len(keys), vectors.shape[1]), dtype=np.float32)
            out[pos] = vectors
            found[pos] = True
        return found, (out[found] if out is not None else None)

    def found(self, keys: np.ndarray) -> np.ndarray:
        """Which keys have a vector here; reads no vectors (the index: keys files, checked once)."""
        index = self._load_index()
        return np.array([k in index for k in keys.tolist()], dtype=bool)

    def dim(self) -> int | None:
        """The vectors' width, from any commit record; None while the store is empty."""
        for shard in self.shards():
            with open(self._paths(shard)[2]) as fh:
                return int(json.load(fh)["dim"])
        return None

    def locate(self, keys: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """shard -> (positions in ``keys``, rows in the shard) for every key stored here."""
        index = self._load_index()
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for pos, key in enumerate(keys.tolist()):
            hit = index.get(key)
            if hit is not None:
                by_shard.setdefault(hit[0], []).append((pos, hit[1]))
        return {shard: tuple(np.array(pairs).T) for shard, pairs in sorted(by_shard.items())}

    def iter_found(self, located: dict[str, tuple[np.ndarray, np.ndarray]], shard_order=None):
        """Yield ``(positions, their vectors)`` one shard of ``locate(keys)`` at a time, in ``shard_order``
        (a function that reorders a list of shard names; default: sorted).

        Only the requested rows of one shard are in memory at once, whatever the number of keys: this is
        how a streaming head trains on more vectors than fit in RAM. Each shard is memory-mapped for the
        read and unmapped after, so its pages do not stay resident either.
        """
        names = list(located)
        for shard in shard_order(names) if shard_order else names:
            pos, rows = located[shard]
            mapped = np.load(self._paths(shard)[1], mmap_mode="r")
            vectors = np.asarray(mapped[rows], dtype=np.float32)
            del mapped
            yield pos, vectors

    # -- writing -------------------------------------------------------------------------------
    def put(self, keys: np.ndarray, vectors: np.ndarray) -> str:
        """Store one shard; returns its name. Durable (fsync) before its commit record appears."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        shard = hashlib.sha256(keys.tobytes() + vectors.tobytes()).hexdigest()[:24]
        keys_path, vec_path, meta_path = self._paths(shard)
        try:
            os.makedirs(self.folder, exist_ok=True)
            if self.settings is not None and not os.path.exists(os.path.join(self.folder, "encoder.json")):
                atomic_write_json(os.path.join(self.folder, "encoder.json"), self.settings)
            # Serialized once in memory: the checksum comes from the bytes written, not a re-read.
            keys_bytes, vec_bytes = _npy_bytes(keys), _npy_bytes(vectors)
            atomic_write(keys_path, lambda fh: fh.write(keys_bytes))
            atomic_write(vec_path, lambda fh: fh.write(vec_bytes))
            meta = {"rows": int(len(keys)), "dim": int(vectors.shape[1]), "created": time.time(),
                    "keys_sha256": hashlib.sha256(keys_bytes).hexdigest(),
                    "vectors_sha256": hashlib.sha256(vec_bytes).hexdigest()}
            atomic_write_json(meta_path, meta)
        except OSError as exc:
            for path in (meta_path, vec_path, keys_path):
                if os.path.exists(path):
                    os.unlink(path)
            raise storage_error(self.root, exc) from None
        if self._index is not None:
            for row, key in enumerate(keys.tolist()):
                self._index.setdefault(key, (shard, row))
        return shard

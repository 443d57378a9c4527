"""Content-addressed vector store: (encoder fingerprint, text) -> float32 vector, in plain .npy shards.

Layout under the cache root (what else lives there, and what marks it as ours: ``cache.layout``)::

    <fingerprint>/encoder.json              the encoder settings and the cache's marker, human-readable
    <fingerprint>/<shard>.keys.npy          S20 text keys (sha1 of text and pair, length-prefixed)
    <fingerprint>/<shard>.vectors.npy       float32 (n, dim)
    <fingerprint>/<shard>.json              commit record: rows, dim, sha256 of both arrays; written last

A shard counts only once its commit record exists, so a run killed mid-write leaves nothing that is
served. Shards are named by their content (sha256 of keys and vectors) and never rewritten, so many
writers need no lock. A shard whose files do not check out (checksums, record, name, shapes) is never
served: it is moved to ``<root>/quarantine/`` and its rows are embedded again. One that cannot be read
(permission, I/O error) is skipped with a warning and left where it is.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time

import numpy as np

from bertfeat.cache import layout
from bertfeat.cache.files import atomic_write, atomic_write_json, sha256_file, storage_error
from bertfeat.cache.layout import fingerprint_of

__all__ = ["Damaged", "VectorStore", "atomic_write", "atomic_write_json", "default_cache_dir", "fingerprint_of",
           "read_record", "sha256_file", "storage_error", "text_keys"]

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


def default_cache_dir() -> str:
    """``$BERTFEAT_CACHE``, else the user's cache folder (``$XDG_CACHE_HOME`` or ~/.cache)/bertfeat."""
    if os.environ.get("BERTFEAT_CACHE"):
        return os.environ["BERTFEAT_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bertfeat")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()



class Damaged(Exception):
    """A shard's files do not check out (quarantine it), as opposed to an ``OSError`` (cannot read it
    now: permission, I/O; skip it and leave it alone)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


_RECORD_FIELDS = {"rows": int, "dim": int, "keys_sha256": str, "vectors_sha256": str}


def read_record(path: str) -> dict:
    """A shard's commit record, checked for shape; raises ``Damaged`` or ``OSError``."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        record = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError: a truncated or overwritten record
        raise Damaged(path, "commit record is not valid JSON (truncated or overwritten)") from None
    if not isinstance(record, dict):
        raise Damaged(path, f"commit record is JSON {json.dumps(record)[:20]}, not an object")
    missing = [k for k in _RECORD_FIELDS if k not in record]
    if missing:
        raise Damaged(path, f"commit record lacks {', '.join(missing)}")
    for key, kind in _RECORD_FIELDS.items():
        value = record[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
            raise Damaged(path, f"commit record has {key}={json.dumps(value)[:40]}")
    return record


def _npy_header(fh, path: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, offset of the data) of an open .npy file, reading only its header."""
    try:
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise ValueError(f"npy version {version}, the cache writes 1.0")
        shape, fortran, dtype = read[version](fh)
    except (ValueError, EOFError) as exc:
        raise Damaged(path, f"not a .npy array ({exc})") from None
    if fortran:
        raise Damaged(path, "array is in Fortran order; the cache writes C order")
    return shape, dtype, fh.tell()


class VectorStore:
    """The vectors of one encoder fingerprint.

    While the index is loaded or a shard is written, the store holds a shared lock on its entry
    (``layout.hold``) until ``close()`` or the process ends: ``cache prune`` skips an entry in use.
    """

    def __init__(self, root: str, fingerprint: str, settings: dict | None = None, verify: bool = True):
        """``verify=False`` trusts the checksums in the commit records without hashing the shards (records,
        key files and array shapes are still checked): for a process whose parent has just verified this
        cache (a Ray actor), so N workers do not re-read it N times."""
        self.root = root
        self.folder = os.path.join(root, fingerprint)
        self.fingerprint = fingerprint
        self.settings = settings
        self.verify = verify
        self._index: dict[bytes, tuple[str, int]] | None = None
        self._dim: int | None = None
        self._lock: int | None = None
        self._marked = False

    def close(self) -> None:
        """Let go of the entry's lock (prune may then remove it)."""
        if getattr(self, "_lock", None) is not None:
            os.close(self._lock)
            self._lock = None

    def __del__(self):
        self.close()

    def _hold(self, create: bool) -> None:
        if self._lock is None:
            self._lock = layout.hold(self.folder, create)

    # -- reading -------------------------------------------------------------------------------
    def shards(self) -> list[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        # A killed writer can leave ``.tmp-<random>-<shard>.json`` behind (written, not yet renamed): not a shard.
        return sorted(n[:-5] for n in names
                      if n.endswith(".json") and n != "encoder.json" and not n.startswith(".tmp-"))

    def _paths(self, shard: str) -> tuple[str, str, str]:
        base = os.path.join(self.folder, shard)
        return base + ".keys.npy", base + ".vectors.npy", base + ".json"

    def check_shard(self, shard: str) -> tuple[str, str] | None:
        """None if the shard checks out, else ``("damaged" | "unreadable", what is wrong)``; reads only."""
        try:
            self._check(shard)
        except Damaged as exc:
            return "damaged", str(exc)
        except OSError as exc:
            return "unreadable", f"{exc.filename or self._paths(shard)[2]}: {exc.strerror or exc}"
        return None

    def _open(self, path: str, record_path: str):
        try:
            return open(path, "rb")
        except FileNotFoundError:
            if os.path.exists(record_path):
                raise Damaged(path, "is missing; its commit record is there") from None
            raise  # the whole shard went meanwhile (another process moved it aside)

    def _check(self, shard: str, verify: bool = True) -> tuple[np.ndarray, int]:
        """The shard's keys and vector width once its record, arrays, checksums and name agree; raises
        ``Damaged`` or ``OSError``. The keys file is read once; the vectors file is read only to verify."""
        keys_path, vec_path, record_path = self._paths(shard)
        record = read_record(record_path)
        rows, dim = record["rows"], record["dim"]
        with self._open(keys_path, record_path) as fh:
            keys_bytes = fh.read()
        if verify and hashlib.sha256(keys_bytes).hexdigest() != record["keys_sha256"]:
            raise Damaged(keys_path, "does not match its checksum")
        try:
            keys = np.load(io.BytesIO(keys_bytes), allow_pickle=False)
        except (ValueError, EOFError) as exc:
            raise Damaged(keys_path, f"not a .npy array ({exc})") from None
        if keys.dtype != np.dtype(KEY_DTYPE) or keys.shape != (rows,):
            raise Damaged(keys_path, f"holds {keys.dtype} {keys.shape}; its record says {rows} keys")
        with self._open(vec_path, record_path) as fh:
            shape, dtype, offset = _npy_header(fh, vec_path)
            if dtype != np.dtype(np.float32) or shape != (rows, dim):
                raise Damaged(vec_path, f"holds {dtype} {shape}; its record says float32 ({rows}, {dim})")
            size = os.fstat(fh.fileno()).st_size
            if size != offset + rows * dim * 4:
                raise Damaged(vec_path, f"is {size} bytes; ({rows}, {dim}) float32 takes {offset + rows * dim * 4}")
            if verify:
                # One read feeds both hashes: the file's checksum, and the content hash that names the shard.
                fh.seek(0)
                whole, content = hashlib.sha256(fh.read(offset)), hashlib.sha256(keys.tobytes())
                for block in iter(lambda: fh.read(1 << 20), b""):
                    whole.update(block)
                    content.update(block)
                if whole.hexdigest() != record["vectors_sha256"]:
                    raise Damaged(vec_path, "does not match its checksum")
                if content.hexdigest()[:24] != shard:
                    raise Damaged(record_path, f"the shard's name is not the hash of its contents "
                                               f"({content.hexdigest()[:24]})")
        return keys, dim

    def _load_index(self) -> dict[bytes, tuple[str, int]]:
        if self._index is not None:
            return self._index
        self._hold(create=False)  # before listing: prune then cannot remove what the index points at
        index: dict[bytes, tuple[str, int]] = {}
        for shard in self.shards():
            try:
                keys, dim = self._check(shard, self.verify)
                if self._dim not in (None, dim):
                    raise Damaged(self._paths(shard)[2], f"dim {dim}; the other shards here have {self._dim}")
            except Damaged as exc:
                self._quarantine(shard, exc)
                continue
            except FileNotFoundError:
                continue  # moved aside or removed by another process since the listing
            except OSError as exc:
                log.warning("cache shard %s: cannot read it (%s); not served and left in place; its rows will be "
                            "embedded again", exc.filename or self._paths(shard)[2], exc.strerror or exc)
                continue
            self._dim = dim
            for row, key in enumerate(keys.tolist()):
                index.setdefault(key, (shard, row))
        self._index = index
        return index

    def _quarantine(self, shard: str, exc: Damaged) -> None:
        """Move a damaged shard's files to ``<root>/quarantine/`` (never unlink them: `prune` clears it)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = os.path.join(self.root, layout.QUARANTINE, self.fingerprint, f"{shard}-{stamp}-{os.getpid()}")
        moved = []
        try:
            os.makedirs(dest)
            for path in reversed(self._paths(shard)):  # the record first: without it the shard is never served
                try:
                    os.replace(path, os.path.join(dest, os.path.basename(path)))
                    moved.append(os.path.basename(path))
                except FileNotFoundError:
                    pass
            atomic_write_json(os.path.join(dest, "why.json"), {
                "fingerprint": self.fingerprint, "shard": shard, "problem": str(exc), "files": moved,
                "time": time.time()})
        except OSError as err:
            log.warning("cache shard %s; could not move it aside (%s): not served, left in place; its rows will "
                        "be embedded again", exc, err.strerror or err)
            return
        log.warning("cache shard %s; moved to %s; its rows will be embedded again", exc, dest)

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
        """The vectors' width, from the checked shards; None while the store is empty."""
        self._load_index()
        return self._dim

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
        """Store one shard; returns its name. Durable (fsync) before its commit record appears.

        A shard of the same content that is already committed and checks out is left as it is (another
        writer stored these rows); a damaged one is moved aside first.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        shard = hashlib.sha256(keys.tobytes() + vectors.tobytes()).hexdigest()[:24]
        keys_path, vec_path, meta_path = self._paths(shard)
        if not self._committed(shard):
            placed = []  # array files this writer renamed into place where none was
            try:
                self._hold(create=True)
                encoder_json = os.path.join(self.folder, "encoder.json")
                if self.settings is not None and not os.path.exists(encoder_json):
                    atomic_write_json(encoder_json, layout.encoder_record(self.settings))
                if not self._marked:
                    layout.mark_root(self.root)
                    self._marked = True
                # Serialized once in memory: the checksum comes from the bytes written, not a re-read.
                keys_bytes, vec_bytes = _npy_bytes(keys), _npy_bytes(vectors)
                for path, data in ((keys_path, keys_bytes), (vec_path, vec_bytes)):
                    new = not os.path.exists(path)
                    atomic_write(path, lambda fh, data=data: fh.write(data))
                    if new:
                        placed.append(path)
                meta = {"rows": int(len(keys)), "dim": int(vectors.shape[1]), "created": time.time(),
                        "keys_sha256": hashlib.sha256(keys_bytes).hexdigest(),
                        "vectors_sha256": hashlib.sha256(vec_bytes).hexdigest()}
                atomic_write_json(meta_path, meta)
            except OSError as exc:
                # atomic_write removed its own temp file. Arrays this writer placed go too, unless another
                # writer has meanwhile committed the same shard (same name, same bytes: then they are its).
                if not os.path.exists(meta_path):
                    for path in placed:
                        try:
                            os.unlink(path)
                        except OSError:
                            pass
                raise storage_error(self.root, exc) from None
        if self._index is not None:
            for row, key in enumerate(keys.tolist()):
                self._index.setdefault(key, (shard, row))
            self._dim = self._dim or int(vectors.shape[1])
        return shard

    def _committed(self, shard: str) -> bool:
        """Whether another writer already committed this very shard, intact (a damaged one is moved aside)."""
        if not os.path.exists(self._paths(shard)[2]):
            return False
        try:
            self._check(shard)
        except Damaged as exc:
            self._quarantine(shard, exc)
            return False
        except OSError:
            return False  # unreadable to us: write our copy (same name, same bytes) over it
        return True

"""File primitives the cache (and model folders) write with: atomic replace, checksums, the storage error.

Files are created with the process's umask, as ``open()`` would: a cache shared by a group (umask 002)
is readable and writable by the group, and a umask-022 cache is readable by everyone. (``mkstemp`` makes
every file 0600 whatever the umask, and ``mkdtemp`` every folder 0700, which locked every other user out
of a shared cache.)
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets

from bertfeat.errors import BertfeatError


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def create_temp(folder: str, name: str) -> tuple[int, str]:
    """A new file ``.tmp-<random>-<name>`` in ``folder``, opened for writing, mode 0666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = os.path.join(folder, f".tmp-{secrets.token_hex(6)}-{name}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:  # 48 random bits: only another writer's identical draw gets here
            continue


def create_temp_dir(folder: str) -> str:
    """A new empty folder ``.tmp-<random>`` in ``folder``, mode 0777 less the umask (renamed into place
    when whole, it keeps that mode)."""
    while True:
        path = os.path.join(folder, f".tmp-{secrets.token_hex(6)}")
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temp file in the same folder, fsync, then rename over ``path``.

    On an error only the temp file, which this call created, is removed: never ``path`` itself, which may
    be another writer's committed file.
    """
    fd, tmp = create_temp(os.path.dirname(path) or ".", os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"))


def storage_error(root: str, exc: OSError, what: str = "write") -> BertfeatError:
    """The one-line error for a cache folder that cannot be written (full disk, no permission)."""
    return BertfeatError(
        f"cache {root}: cannot {what} ({exc.strerror or exc}); free disk space or pass cache_dir= "
        "to a writable folder"
    )

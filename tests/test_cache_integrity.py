"""The cache never serves or deletes what it should not: damaged shards are quarantined and re-embedded,
unreadable ones are skipped and kept, a second writer or user leaves the first one's files alone, and
prune removes only the cache's own entries, never one a running job holds."""
import functools
import json
import os
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
import pytest
from conftest import DEMO_TRAIN, ROOT, cached_vectors, data_rows, main_json, run_main

from bertfeat.cache import VectorStore, admin, fingerprint_of, text_keys
from bertfeat.cache import layout
from bertfeat.cache import store as store_module
from bertfeat.extract import read_table

SETTINGS = {"model": "m", "pooling": "mean", "cache_version": 2}
FP = fingerprint_of(SETTINGS)
NOBODY = 65534


def _put(root, n=4, dim=3, seed=0, prefix="t"):
    keys = text_keys([f"{prefix}{i}" for i in range(n)])
    vecs = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return VectorStore(str(root), FP, SETTINGS).put(keys, vecs), keys, vecs


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, fs in os.walk(root) for n in fs)


# -- damage: each kind is quarantined, named, re-embedded; verify reports it, dim() and info survive -----
def _record(folder, shard, edit):
    path = os.path.join(folder, shard + ".json")
    with open(path) as fh:
        record = json.load(fh)
    with open(path, "w") as fh:
        fh.write(edit(record))
    return shard


def _rename(folder, shard):
    for ext in (".keys.npy", ".vectors.npy", ".json"):
        os.rename(os.path.join(folder, shard + ext), os.path.join(folder, "0" * 24 + ext))
    return "0" * 24


def _truncate_vectors(folder, shard):
    path = os.path.join(folder, shard + ".vectors.npy")
    os.truncate(path, os.path.getsize(path) - 4)
    return shard


DAMAGE = {
    "truncated record": lambda f, s: _record(f, s, lambda r: json.dumps(r)[:30]),
    "record is null": lambda f, s: _record(f, s, lambda r: "null"),
    "record is a list": lambda f, s: _record(f, s, lambda r: "[]"),
    "record lacks a key": lambda f, s: _record(f, s, lambda r: json.dumps({k: v for k, v in r.items()
                                                                           if k != "vectors_sha256"})),
    "rows do not match": lambda f, s: _record(f, s, lambda r: json.dumps({**r, "rows": r["rows"] + 1})),
    "dim does not match": lambda f, s: _record(f, s, lambda r: json.dumps({**r, "dim": r["dim"] + 1})),
    "name is not the content hash": _rename,
    "vectors truncated": _truncate_vectors,
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_shard_is_reported_quarantined_and_its_rows_stored_again(tmp_path, caplog, kind):
    shard, keys, vecs = _put(tmp_path)
    folder = tmp_path / FP
    before = {n: (folder / n).read_bytes() for n in os.listdir(folder) if n.startswith(shard)}
    bad = DAMAGE[kind](str(folder), shard)

    report = admin.verify(str(tmp_path))  # reads only: reports, moves nothing
    assert [d["shard"] for d in report["damaged"]] == [bad] and bad in report["damaged"][0]["problem"]
    assert len(os.listdir(folder)) == len(before) + 2  # encoder.json and .lock are still beside the shard
    assert admin.entries(str(tmp_path))[0]["shards"] == 1  # info does not crash on it

    store = VectorStore(str(tmp_path), FP, SETTINGS)
    assert store.dim() is None  # the damaged record is never trusted, not even for the width
    assert not store.found(keys).any()
    assert bad in caplog.text and "quarantine" in caplog.text
    (moved,) = admin.quarantined(str(tmp_path))
    held = tmp_path / moved["path"]
    assert sorted(n.replace(bad, shard) for n in os.listdir(held) if n != "why.json") == sorted(before)
    assert (held / (bad + ".keys.npy")).read_bytes() == before[shard + ".keys.npy"]  # moved, not deleted

    store.put(keys, vecs)  # the rows are embedded again: a fresh, intact shard
    found, got = VectorStore(str(tmp_path), FP).get(keys)
    assert found.all() and got.tobytes() == vecs.tobytes()
    assert admin.verify(str(tmp_path))["damaged"] == []


def test_dim_skips_a_damaged_record_and_reads_a_good_one(tmp_path):
    bad, _, _ = _put(tmp_path, seed=1, prefix="a")
    good, _, _ = _put(tmp_path, dim=5, seed=2, prefix="b")
    _record(str(tmp_path / FP), min(bad, good), lambda r: "null")  # the first record listed is the damaged one
    assert VectorStore(str(tmp_path), FP).dim() == (3 if min(bad, good) == good else 5)


def test_every_damage_at_once_through_the_cli(tmp_path):
    """A real cache from `embed`, one shard damaged each way: info survives, verify names each shard and
    exits 1, embed re-embeds exactly those rows with a warning per file, prune --quarantine clears them."""
    cache = tmp_path / "c"
    data = data_rows(DEMO_TRAIN, tmp_path / "d.csv", 0, 24)
    main_json("embed", "--data", data, "--shard-size", "3", "--batch-size", "3", cache=cache)
    texts = read_table(data).texts
    (fp,) = [n for n in os.listdir(cache) if layout.entry_settings(str(cache), n)]
    folder = cache / fp
    shards = VectorStore(str(cache), fp).shards()
    kinds = ["truncated record", "record is null", "record is a list", "rows do not match",
             "name is not the content hash"]
    assert len(shards) >= len(kinds)
    rows = {}
    bad = []
    for kind, shard in zip(kinds, shards):
        rows[shard] = json.load(open(folder / (shard + ".json")))["rows"]
        bad.append(DAMAGE[kind](str(folder), shard))

    info = run_main("cache", "info", cache=cache, check=0)
    assert "Traceback" not in info.stderr
    verify = run_main("cache", "verify", cache=cache)
    assert verify.returncode == 1 and all(name in verify.stderr for name in bad), verify.stderr
    again = run_main("embed", "--data", data, "--shard-size", "3", "--batch-size", "3", "--json", cache=cache, check=0)
    assert json.loads(again.stdout)["n_embedded"] == sum(rows.values())
    assert all(name in again.stderr for name in bad) and "Traceback" not in again.stderr
    assert run_main("cache", "verify", cache=cache).returncode == 0
    assert len(main_json("cache", "info", cache=cache)["quarantined"]) == len(kinds)
    main_json("cache", "prune", "--quarantine", cache=cache)
    assert main_json("cache", "info", cache=cache)["quarantined"] == [] and not (cache / "quarantine").exists()
    assert cached_vectors(cache, texts).shape[0] == len(texts)


# -- a second writer ------------------------------------------------------------------------------
def _failing_writes(monkeypatch):
    def fail(path, write):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(store_module, "atomic_write", fail)
    monkeypatch.setattr(store_module, "atomic_write_json", lambda path, obj: fail(path, None))


def test_second_writer_of_a_committed_shard_writes_nothing_and_deletes_nothing(tmp_path, monkeypatch):
    shard, keys, vecs = _put(tmp_path)
    files = {n: (tmp_path / FP / n).read_bytes() for n in os.listdir(tmp_path / FP)}
    _failing_writes(monkeypatch)  # any write by the second writer would fail now
    assert VectorStore(str(tmp_path), FP, SETTINGS).put(keys, vecs) == shard
    assert {n: (tmp_path / FP / n).read_bytes() for n in os.listdir(tmp_path / FP)} == files


def test_failing_writer_removes_only_its_own_temp_files(tmp_path, monkeypatch):
    """The first writer has renamed its arrays into place and not yet written its record; a second writer
    of the same shard fails: the first writer's arrays stay for its record to commit."""
    shard, keys, vecs = _put(tmp_path)
    os.unlink(tmp_path / FP / (shard + ".json"))
    arrays = sorted(os.listdir(tmp_path / FP))
    real = store_module.atomic_write_json
    monkeypatch.setattr(store_module, "atomic_write_json", lambda path, obj: (_ for _ in ()).throw(
        OSError(28, "No space left on device")) if path.endswith(shard + ".json") else real(path, obj))
    with pytest.raises(Exception, match="No space left"):
        VectorStore(str(tmp_path), FP, SETTINGS).put(keys, vecs)
    assert sorted(os.listdir(tmp_path / FP)) == arrays  # no temp file left, no committed file removed


# -- a shared cache: umask modes, a second uid, an unreadable file ------------------------------------
def test_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        shard, _, _ = _put(tmp_path / "c")
    finally:
        os.umask(old)
    modes = {n: os.stat(tmp_path / "c" / FP / n).st_mode & 0o777 for n in os.listdir(tmp_path / "c" / FP)}
    assert set(modes.values()) == {0o664}, modes
    assert os.stat(tmp_path / "c" / FP).st_mode & 0o777 == 0o775
    assert os.stat(tmp_path / "c" / layout.TAG).st_mode & 0o777 == 0o664


@functools.lru_cache(maxsize=1)
def _readable_copy() -> tuple[str, str]:
    """(source root, site folder) that any user can read: copies of the cache code and numpy, its only
    dependency. The checkout and the venv may sit under folders another user cannot enter (a clone in
    a 0700 temp folder, a venv under /root)."""
    import shutil

    top = tempfile.mkdtemp(prefix="bertfeat-other-user-")
    src, site = os.path.join(top, "src"), os.path.join(top, "site")
    for name in ("bertfeat", "cache", "extract"):  # extract/ marks the checkout layout (bertfeat/__init__.py)
        shutil.copytree(os.path.join(ROOT, name), os.path.join(src, name),
                        ignore=shutil.ignore_patterns("__pycache__"))
    purelib = sysconfig.get_paths()["purelib"]
    for name in ("numpy", "numpy.libs"):
        if os.path.isdir(os.path.join(purelib, name)):
            shutil.copytree(os.path.join(purelib, name), os.path.join(site, name))
    for folder, dirs, files in os.walk(top):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644 | (os.stat(os.path.join(folder, name)).st_mode & 0o111))
    return src, site


def _other_user(code, *args):
    """Run ``code`` (python) as uid nobody, or as this process's user when it is not root (then file
    permissions already bind it). Returns the CompletedProcess."""
    src, site = _readable_copy()
    prelude = f"import sys; sys.path[:0] = [{src!r}, {site!r}]\n"
    for exe in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        drop = (lambda: (os.setgid(NOBODY), os.setuid(NOBODY))) if os.getuid() == 0 else None
        try:
            proc = subprocess.run([exe, "-c", prelude + code, *map(str, args)], preexec_fn=drop,
                                  capture_output=True, text=True, cwd="/", timeout=120)
        except (PermissionError, FileNotFoundError):
            continue  # this interpreter lives where the other user cannot reach (e.g. under /root)
        return proc
    pytest.fail("no Python interpreter the other user can run")


READ = """
import json, numpy as np
from bertfeat.cache import VectorStore, text_keys
store = VectorStore(sys.argv[1], sys.argv[2])
found, vecs = store.get(text_keys([f"t{i}" for i in range(4)]))
print(json.dumps({"found": found.tolist(), "sum": float(vecs.sum()) if vecs is not None else None}))
"""


def _shared_root():
    root = tempfile.mkdtemp(prefix="bertfeat-shared-")
    os.chmod(root, 0o755)  # mkdtemp makes it 0700: the other user must reach into it
    return root


def test_second_user_reads_a_umask_022_cache_and_deletes_nothing():
    root = _shared_root()
    old = os.umask(0o022)
    try:
        _, _, vecs = _put(os.path.join(root, "c"))
    finally:
        os.umask(old)
    before = _files(root)
    proc = _other_user(READ, os.path.join(root, "c"), FP)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["found"] == [True] * 4 and abs(got["sum"] - float(vecs.sum())) < 1e-4
    assert _files(root) == before


def test_unreadable_shard_is_skipped_and_kept_not_deleted():
    """A file the reader may not open (chmod 000, the reader not its owner or not root) in a folder it may
    write: a warning, its rows counted as missing, and the file stays where it is."""
    root = _shared_root()
    old = os.umask(0)
    try:
        shard, _, _ = _put(os.path.join(root, "c"))
    finally:
        os.umask(old)
    os.chmod(os.path.join(root, "c", FP, shard + ".vectors.npy"), 0)
    before = _files(root)
    proc = _other_user(READ, os.path.join(root, "c"), FP)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["found"] == [False] * 4
    assert "cannot read" in proc.stderr and shard in proc.stderr and "left in place" in proc.stderr
    assert _files(root) == before  # nothing deleted, nothing quarantined


# -- prune: only its own entries, a root that is a cache, every path listed, not under a running job ---
def _gpt2_folder(root):
    os.makedirs(os.path.join(root, "gpt2"))
    with open(os.path.join(root, "gpt2", "encoder.json"), "w") as fh:
        json.dump({"hello": 0, "world": 1}, fh)


def _export(root, key_fields=None):
    """A fake ONNX export whose folder name is the hash of the settings in its meta.json, as the real ones."""
    settings = {"model_sha256": "ab" * 32, "precision": "int8", "outputs": "last", "opset": 17,
                "export_version": 1, "quantize": None}
    key = fingerprint_of(settings)
    os.makedirs(os.path.join(root, "models", key))
    with open(os.path.join(root, "models", key, "meta.json"), "w") as fh:
        json.dump({**settings, "model_dir": "/x/pkg/model"}, fh)
    return os.path.join(root, "models", key)


def test_prune_removes_its_entries_and_never_a_foreign_folder(tmp_path):
    cache = tmp_path / "c"
    _put(cache)
    _gpt2_folder(str(cache))
    os.makedirs(cache / ("a" * 32))  # fingerprint-shaped, but its encoder.json does not hash to its name
    (cache / ("a" * 32) / "encoder.json").write_text(json.dumps({"model": "x"}))
    os.makedirs(cache / "models" / "mine")  # not provably an export
    export = _export(str(cache))
    dry = run_main("cache", "prune", "--all", "--dry-run", cache=cache, check=0)
    listed = [line.split(" ", 2)[2] for line in dry.stdout.splitlines() if line.startswith("would remove /")]
    assert sorted(listed) == sorted([str(cache / FP), export])
    assert os.path.isdir(cache / FP) and os.path.isdir(export)  # dry run
    main_json("cache", "prune", "--all", cache=cache)
    assert sorted(os.listdir(cache)) == sorted([layout.TAG, "a" * 32, "gpt2", "models"])
    assert os.listdir(cache / "models") == ["mine"] and os.listdir(cache / "gpt2") == ["encoder.json"]


def test_prune_older_than_never_counts_a_tokenizer_folder_as_an_entry(tmp_path):
    cache = tmp_path / "c"
    _put(cache)
    _gpt2_folder(str(cache))
    old = 1_000_000_000
    os.utime(cache / "gpt2", (old, old))
    os.utime(cache / FP, (old, old))
    assert [e["fingerprint"] for e in main_json("cache", "info", cache=cache)["entries"]] == [FP]
    main_json("cache", "prune", "--older-than", "30", cache=cache)
    assert sorted(os.listdir(cache)) == [layout.TAG, "gpt2"]


def test_prune_refuses_a_root_that_is_not_a_cache(tmp_path):
    home = tmp_path / "home"
    _put(home)
    os.unlink(home / layout.TAG)  # say, a cache written before the tag, then other files put beside it
    (home / "thesis.tex").write_text("\\documentclass{article}")
    proc = run_main("cache", "prune", "--all", cache=home)
    assert proc.returncode == 2 and "does not look like a bertfeat cache" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert os.path.isdir(home / FP) and (home / "thesis.tex").exists()


def test_root_is_tagged_only_when_it_holds_nothing_else(tmp_path):
    _put(tmp_path / "empty")
    assert layout.has_tag(str(tmp_path / "empty"))
    os.makedirs(tmp_path / "home")
    (tmp_path / "home" / "notes.txt").write_text("mine")
    _put(tmp_path / "home")
    assert not os.path.exists(tmp_path / "home" / layout.TAG)  # backup tools must not skip a home folder


def test_entries_written_before_the_marker_are_still_recognised(tmp_path):
    _put(tmp_path)
    with open(tmp_path / FP / "encoder.json") as fh:
        assert json.load(fh)[layout.MARKER] == layout.STORE_FORMAT
    with open(tmp_path / FP / "encoder.json", "w") as fh:
        json.dump(SETTINGS, fh)  # as the cache wrote it before the marker existed
    assert [e["fingerprint"] for e in admin.entries(str(tmp_path))] == [FP]


HOLD = """
from bertfeat.cache import VectorStore, text_keys
store = VectorStore(sys.argv[1], sys.argv[2])
assert store.found(text_keys(["t0"])).all()
print("holding", flush=True)
sys.stdin.readline()
"""


def test_prune_skips_an_entry_that_a_running_job_holds(tmp_path):
    cache = tmp_path / "c"
    _put(cache)
    job = subprocess.Popen([sys.executable, "-c", "import sys\n" + HOLD, str(cache), FP], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert job.stdout.readline().strip() == "holding"
        busy = run_main("cache", "prune", "--all", cache=cache, check=0)
        assert "in use by a running job" in busy.stderr and os.path.isdir(cache / FP)
    finally:
        job.communicate("\n", timeout=60)
    assert job.returncode == 0
    main_json("cache", "prune", "--all", cache=cache)
    assert not os.path.exists(cache / FP)


def test_a_writer_waits_for_prune_and_writes_into_a_fresh_entry(tmp_path):
    """prune holds the entry while it removes it; a writer that took its lock meanwhile finds the folder
    gone and writes a complete new entry, never into a half-removed one."""
    _put(tmp_path)
    lock = layout.claim(str(tmp_path / FP))
    writer = VectorStore(str(tmp_path), FP, SETTINGS)
    import shutil
    import threading

    done = threading.Event()
    thread = threading.Thread(target=lambda: (writer.put(text_keys(["new"]), np.ones((1, 3))), done.set()))
    thread.start()
    assert not done.wait(0.5)  # blocked on prune's lock
    shutil.rmtree(tmp_path / FP)
    os.close(lock)
    thread.join(30)
    assert done.is_set()
    assert VectorStore(str(tmp_path), FP).found(text_keys(["new"])).all()
    assert [e["fingerprint"] for e in admin.entries(str(tmp_path))] == [FP]

"""Never lose work, never crash on bad input: kill/resume, concurrent writers, full disks, cache admin."""
import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import DEMO_TEST, DEMO_TRAIN, ROOT, cached_vectors, data_rows, generated_rows, run_cli, run_json
from bertfeat.errors import BertfeatError



def _slice(tmp_path, name, start, stop, source=None):
    if source is None:
        return generated_rows(tmp_path / name, start, stop)
    return data_rows(source, tmp_path / name, start, stop)


def _committed(cache):
    """Commit records of vector shards (model exports under models/ are not shards)."""
    return [n for root, _, files in os.walk(cache) for n in files
            if n.endswith(".json") and n != "encoder.json" and "models" not in os.path.relpath(root, cache).split(os.sep)]


def _stored_vectors(data, cache):
    from bertfeat.extract import read_table

    return cached_vectors(cache, read_table(str(data), label_col=None).texts)


def test_resume_after_sigkill_gives_the_uninterrupted_vectors(tmp_path):
    data = _slice(tmp_path, "d.csv", 0, 1200)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTFEAT_CACHE": str(killed)}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "embed", "--data", str(data),
                             "--shard-size", "100", "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_committed(killed)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_committed(killed))
    assert 2 <= done_before < 12, "the run should have been killed part-way"
    resumed = run_json("embed", "--data", data, "--shard-size", "100", cache=killed)
    assert resumed["n_cached"] >= 200 and resumed["n_embedded"] > 0
    assert resumed["n_cached"] + resumed["n_embedded"] == resumed["n_unique"]
    run_json("embed", "--data", data, "--shard-size", "100", cache=clean)
    a, b = _stored_vectors(data, killed), _stored_vectors(data, clean)
    # Batches are cut the same way on resume, so the vectors are the very same bytes.
    assert a.tobytes() == b.tobytes()
    assert run_cli("cache", "verify", cache=killed).returncode == 0


def test_two_concurrent_runs_share_one_cache(tmp_path):
    first, second = _slice(tmp_path, "a.csv", 0, 700), _slice(tmp_path, "b.csv", 350, 1050)
    union = _slice(tmp_path, "u.csv", 0, 1050)
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTFEAT_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "embed", "--data", str(path),
                               "--shard-size", "128", "--json", "--quiet"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for path in (first, second)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert run_cli("cache", "verify", cache=cache).returncode == 0
    again = run_json("embed", "--data", union, cache=cache)
    assert again["n_embedded"] == 0 and again["n_cached"] == again["n_unique"]


def test_disk_full_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    from bertfeat.cache import VectorStore, text_keys
    from bertfeat.cache import store as store_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.np, "save", full)
    store = VectorStore(str(tmp_path), "fp")
    with pytest.raises(BertfeatError, match="cannot write .No space left on device.; free disk space"):
        store.put(text_keys(["a"]), np.ones((1, 3)))
    assert [n for n in os.listdir(tmp_path / "fp") if n != "encoder.json"] == []


def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        proc = run_cli("embed", "--data", DEMO_TRAIN, "--cache-dir", mount, "--quiet")
        assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
        assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr
        left = [n for _, _, files in os.walk(mount) for n in files]
        assert left in ([], ["encoder.json"]), left
    finally:
        subprocess.run(["umount", str(mount)])


def test_huge_text_is_truncated_and_counted(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "word " * 200_000 + ",x\nshort text,y\n")
    out = run_json("embed", "--data", path, "--cache-dir", tmp_path / "c")
    assert out["n_truncated"] == 1 and out["n_embedded"] == 2


def test_tampered_model_folder_is_refused_by_predict(tmp_path):
    cache = tmp_path / "c"
    fitted = run_json("fit", "--train", DEMO_TRAIN, "--out", tmp_path / "m", cache=cache)
    with open(os.path.join(fitted["model_dir"], "head.joblib"), "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00")
    proc = run_cli("predict", "--model-dir", fitted["model_dir"], "--text", "hi", cache=cache)
    assert proc.returncode == 2 and "does not match the checksum" in proc.stderr


def test_cache_info_verify_prune(tmp_path):
    cache = tmp_path / "c"
    data = _slice(tmp_path, "d.csv", 0, 60, source=DEMO_TRAIN)
    run_json("embed", "--data", data, cache=cache)
    run_json("embed", "--data", data, "--pooling", "cls", cache=cache)
    info = run_json("cache", "info", cache=cache)
    assert len(info["entries"]) == 2 and {e["rows"] for e in info["entries"]} == {60}
    assert {e["pooling"] for e in info["entries"]} == {"mean", "cls"}
    assert run_cli("cache", "verify", cache=cache).returncode == 0
    (vec,) = [os.path.join(r, n) for r, _, fs in os.walk(cache) for n in fs
              if n.endswith(".vectors.npy") and "cls" in open(os.path.join(r, "encoder.json")).read()]
    with open(vec, "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\xff" * 8)
    bad = run_cli("cache", "verify", cache=cache)
    assert bad.returncode == 1 and os.path.basename(vec).split(".")[0] in bad.stderr
    assert run_cli("cache", "prune", cache=cache).returncode == 2  # no selector: refuses to guess
    dry = run_json("cache", "prune", "--model", "all-MiniLM-L6-v2", "--dry-run", cache=cache)
    assert len(dry["removed"]) == 2 and len(run_json("cache", "info", cache=cache)["entries"]) == 2
    fp = next(e["fingerprint"] for e in info["entries"] if e["pooling"] == "cls")
    run_json("cache", "prune", "--fingerprint", fp[:10], cache=cache)
    assert [e["pooling"] for e in run_json("cache", "info", cache=cache)["entries"]] == ["mean"]
    assert run_cli("cache", "verify", cache=cache).returncode == 0


# -- the loader under random tables --------------------------------------------------------------
cell = st.one_of(st.text(max_size=12), st.none(), st.integers(-5, 5), st.floats(allow_nan=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(cell, cell), max_size=8), ext=st.sampled_from(["csv", "tsv", "jsonl", "parquet"]))
def test_loader_reads_random_tables_or_raises_its_own_error(tmp_path, rows, ext):
    import pandas as pd

    from bertfeat.extract import read_table

    frame = pd.DataFrame(rows, columns=["text", "label"]).astype(object)
    path = tmp_path / f"r.{ext}"
    try:
        if ext == "csv":
            frame.to_csv(path, index=False)
        elif ext == "tsv":
            frame.to_csv(path, sep="\t", index=False)
        elif ext == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.astype(str).to_parquet(path)
    except (ValueError, UnicodeEncodeError):
        return  # pandas could not write this table; nothing to read
    try:
        table = read_table(str(path))
    except BertfeatError as exc:
        assert str(path) in str(exc) or "no non-empty texts" in str(exc)
        return
    assert len(table.texts) == len(table.labels) == len(table.rows) > 0
    assert all(isinstance(t, str) and t.strip() for t in table.texts)
    assert all(isinstance(lab, str) and lab for lab in table.labels)


def test_cache_info_lists_model_exports_and_prune_all_removes_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTFEAT_MODELS", "")  # exports go under this test's cache root, as for a user
    cache = tmp_path / "cache"
    run_json("embed", "--data", DEMO_TEST, "--precision", "int8", cache=cache)  # int8 always runs from an export
    exports = run_json("cache", "info", cache=cache)["exports"]
    assert exports[0]["precision"] == "int8" and exports[0]["bytes"] > 1_000_000
    run_json("cache", "prune", "--all", cache=cache)
    assert run_json("cache", "info", cache=cache) == {"cache_dir": str(cache.resolve()), "entries": [], "exports": []}

"""--engine ray on a local Ray (this machine's cores): same cache, same vectors, survives a killed worker."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, cached_vectors, generated_rows, main_json, run_json

# `make test` runs the suite on two workers (pytest-xdist): local Ray clusters run one at a time, on one worker.
pytestmark = pytest.mark.xdist_group("ray")


def test_ray_engine_matches_local_and_fit_reads_its_cache(tmp_path):
    from bertfeat.extract import read_table

    train = generated_rows(tmp_path / "train.csv", 0, 400)
    test = generated_rows(tmp_path / "test.csv", 50_000, 50_150)
    ray_cache, local_cache = tmp_path / "ray-cache", tmp_path / "local-cache"
    got = run_json("embed", "--data", train, "--data", test, "--engine", "ray", "--num-workers", 2,
                   "--block-size", 100, "--cache-dir", ray_cache)
    assert (got["engine"], got["num_workers"], got["n_texts"]) == ("ray", 2, 550)
    assert got["n_embedded"] + got["n_cached"] == got["n_unique"] >= 540  # unique within each block
    assert len(glob.glob(str(ray_cache / "*" / "*.keys.npy"))) >= 4  # several blocks, several writers

    fits = {}
    for name, cache in (("ray", ray_cache), ("local", local_cache)):
        fits[name] = run_json("fit", "--train", train, "--test", test, "--head", "logreg", "--cache-dir", cache,
                              "--out", tmp_path / f"model-{name}")
    assert fits["ray"]["embedding"]["n_embedded"] == 0  # every vector came from the Ray-written cache
    assert fits["local"]["embedding"]["n_embedded"] >= 540
    for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall"):
        assert fits["ray"][key] == pytest.approx(fits["local"][key], abs=1e-9)

    texts = read_table([train, test], label_col=None).texts
    a, b = cached_vectors(ray_cache, texts), cached_vectors(local_cache, texts)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9999


def _map_workers() -> list[int]:
    pids = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as fh:
                cmd = fh.read().decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::MapWorker"):  # Ray titles actor processes by their class
            pids.append(int(path.split("/")[2]))
    return pids


def test_ray_job_survives_a_killed_worker(tmp_path):
    data = generated_rows(tmp_path / "corpus.csv", 0, 3000)
    cache = tmp_path / "cache"
    cmd = [sys.executable, os.path.join(ROOT, "cli.py"), "embed", "--data", data, "--engine", "ray",
           "--num-workers", "2", "--block-size", "250", "--shard-size", "50", "--cache-dir", str(cache),
           "--json", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    killed, deadline = None, time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if killed is None and len(glob.glob(str(cache / "*" / "*.keys.npy"))) >= 2:  # mid-run: work committed
            workers = _map_workers()
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    assert killed is not None, "the job ended before a worker could be killed"
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["n_texts"] == 3000  # the killed worker's block was retried, not dropped

    from bertfeat.extract import read_table

    cached_vectors(cache, read_table(data, label_col=None).texts)  # every text has its vector


def test_ray_engine_reports_a_bad_file_in_one_line(tmp_path):
    from conftest import DEMO_TRAIN, run_cli

    proc = run_cli("embed", "--data", DEMO_TRAIN, "--engine", "ray", "--text-col", "body", "--quiet",
                   "--cache-dir", tmp_path / "cache", check=2)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {DEMO_TRAIN}: no column 'body' (columns: text, label); pass --text-col with one of them"]
    assert "Traceback" not in proc.stderr
    assert not glob.glob(str(tmp_path / "cache" / "*" / "*.npy"))  # nothing half-written


def test_ray_cluster_needs_a_shared_cache_dir(tmp_path):
    from conftest import DEMO_TRAIN, run_cli

    proc = run_cli("embed", "--data", DEMO_TRAIN, "--engine", "ray", "--address", "auto", check=2)
    assert "pass --cache-dir on storage every node can write" in proc.stderr


def test_a_reader_task_streams_its_file_in_blocks(tmp_path, monkeypatch):
    from bertfeat.extract import ray_engine, read_table

    data = generated_rows(tmp_path / "corpus.csv", 0, 2500)
    monkeypatch.setattr(ray_engine, "READ_ROWS", 1000)
    blocks = list(ray_engine._read_file({"path": np.array([data])}, "text", None, "utf-8", False))
    assert [len(b["text"]) for b in blocks] == [1000, 1000, 500]  # never the whole file at once
    assert [t for b in blocks for t in b["text"]] == read_table(data, label_col=None).texts


_POISONED_RUN = """
import os, sys, time
import ray
sys.path.insert(0, {root!r})
ray.init(num_cpus=2, include_dashboard=False, runtime_env={{
    "worker_process_setup_hook": "ray_hooks.install",
    "env_vars": {{"PYTHONPATH": {tests!r} + os.pathsep + {root!r}, "BERTFEAT_TEST_POISON": "poison text"}}}})
from bertfeat.errors import BertfeatError
from bertfeat.extract import BertEncoder
from bertfeat.extract.ray_engine import embed_on_ray

start = time.time()
try:
    embed_on_ray([BertEncoder(model={model!r}, device="cpu", precision="fp32")], [{data!r}], {cache!r},
                 num_workers=2, block_texts=50, progress=False)
except BertfeatError as exc:
    print("error:", exc, flush=True)
    print("seconds:", round(time.time() - start), flush=True)
    sys.exit(2)
"""


def test_a_block_whose_worker_dies_every_time_ends_in_one_line(tmp_path, tiny_bert):
    """A text that kills its worker every time (as one huge text running a node out of memory would):
    the job ends with one line naming the file and rows, instead of Ray restarting and retrying forever."""
    data = tmp_path / "texts.csv"
    texts = [f"text number {i}" for i in range(200)]
    texts[120] = "poison text"  # data row 122 (the header is row 1)
    data.write_text("text\n" + "\n".join(texts) + "\n")
    script = _POISONED_RUN.format(root=ROOT, tests=os.path.dirname(os.path.abspath(__file__)), model=tiny_bert,
                                  data=str(data), cache=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # Ray's processes too: they share the session
        out, err = proc.communicate()
        pytest.fail(f"the job was still retrying after 240 s\n{err[-2000:]}")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, out + err[-3000:]
    rows = re.search(rf"{re.escape(str(data))} rows (\d+)-(\d+): the Ray worker embedding these rows died 2 times",
                     errors[0])
    assert rows and int(rows[1]) <= 122 <= int(rows[2]) and int(rows[2]) - int(rows[1]) < 50, errors[0]


def test_the_driver_verifies_the_cache_before_a_ray_run(tmp_path, tiny_bert):
    """A damaged shard is quarantined and its rows re-embedded, as in a local run; actors never hash."""
    data = tmp_path / "texts.csv"
    data.write_text("text\n" + "\n".join(f"text number {i}" for i in range(200)) + "\n")
    cache = tmp_path / "cache"
    args = ("embed", "--data", data, "--engine", "ray", "--num-workers", 2, "--block-size", 50, "--model", tiny_bert,
            "--device", "cpu", "--precision", "fp32", "--shard-size", 50, "--cache-dir", cache)
    first = run_json(*args)
    assert first["n_embedded"] == 200
    shards = sorted(glob.glob(str(cache / "*" / "*.vectors.npy")))
    payload = bytearray(open(shards[0], "rb").read())
    payload[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf: same size, only the checksum tells
    open(shards[0], "wb").write(bytes(payload))
    rows = np.load(shards[0]).shape[0]
    again = run_json(*args)
    assert (again["n_embedded"], again["n_cached"]) == (rows, 200 - rows)
    assert glob.glob(str(cache / "quarantine" / "*" / "*" / os.path.basename(shards[0])))
    assert main_json("cache", "verify", "--cache-dir", cache)["damaged"] == []

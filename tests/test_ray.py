"""--engine ray on a local Ray (this machine's cores): same cache, same vectors, survives a killed worker.

The tests join one Ray cluster, started once for the module (`ray start`, as on a real cluster) through
--address, and drive the CLI in this process: a Ray start and an interpreter per run cost ~10 s each, and
neither is what these tests check. One test still starts Ray itself, as `bertfeat embed --engine ray` does
without --address, in a real process.
"""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, cached_vectors, generated_rows, main_json, run_main

# `make test` runs the suite on two workers (pytest-xdist): Ray clusters run one at a time, on one worker.
pytestmark = pytest.mark.xdist_group("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU Ray cluster on this machine for the module: its address, and the process group holding it.

    Its own temp folder keeps it apart from `--address auto` (which reads the default one) and from any
    other Ray on the machine; its own ports, so two checkouts' suites can run at once. Token auth is off:
    a driver of this suite would otherwise need the token the cluster generates."""
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths under it have a length limit
    cmd = [os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block", "--num-cpus", "2",
           "--port", str(_free_port()), "--dashboard-port", str(_free_port()),
           "--dashboard-agent-listen-port", str(_free_port()), "--include-dashboard", "false",
           "--disable-usage-stats", "--temp-dir", temp]
    log = os.path.join(temp, "ray-start.log")  # a file, not a pipe nobody reads while the cluster runs
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    address_file = os.path.join(temp, "ray_current_cluster")  # written once the head node is up
    deadline = time.time() + 120
    while not os.path.exists(address_file) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    try:
        if not os.path.exists(address_file):
            with open(log) as fh:
                pytest.fail(f"`ray start` did not come up:\n{fh.read()[-3000:]}")
        with open(address_file) as fh:
            yield SimpleNamespace(address=fh.read().strip(), pgid=proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the head and its node's processes (workers die with their raylet)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_engine_matches_local_and_fit_reads_its_cache(tmp_path, ray_cluster, tiny_bert):
    """On a small model with every other setting the default (precision auto, resolved by actors and driver
    alike): the default model on Ray is test_ray_job_survives_a_killed_worker's."""
    from bertfeat.extract import read_table

    train = generated_rows(tmp_path / "train.csv", 0, 200)
    test = generated_rows(tmp_path / "test.csv", 50_000, 50_100)
    ray_cache, local_cache = tmp_path / "ray-cache", tmp_path / "local-cache"
    got = main_json("embed", "--data", train, "--data", test, "--engine", "ray", "--address", ray_cluster.address,
                    "--num-workers", 2, "--block-size", 50, "--model", tiny_bert, "--cache-dir", ray_cache)
    assert (got["engine"], got["num_workers"], got["n_texts"]) == ("ray", 2, 300)
    assert got["n_embedded"] + got["n_cached"] == got["n_unique"] >= 290  # unique within each block
    assert len(glob.glob(str(ray_cache / "*" / "*.keys.npy"))) >= 4  # several blocks, several writers

    fits = {}
    for name, cache in (("ray", ray_cache), ("local", local_cache)):
        fits[name] = main_json("fit", "--train", train, "--test", test, "--head", "logreg", "--model", tiny_bert,
                               "--cache-dir", cache, "--out", tmp_path / f"model-{name}")
    assert fits["ray"]["embedding"]["n_embedded"] == 0  # every vector came from the Ray-written cache
    assert fits["local"]["embedding"]["n_embedded"] >= 290
    for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall"):
        assert fits["ray"][key] == pytest.approx(fits["local"][key], abs=1e-9)

    texts = read_table([train, test], label_col=None).texts
    a, b = cached_vectors(ray_cache, texts, tiny_bert), cached_vectors(local_cache, texts, tiny_bert)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9999


def _map_workers(cluster) -> list[int]:
    """The encoder actors' processes of ``cluster`` (a worker's parent is its node's raylet, in the cluster's
    process group): another Ray on this machine is left alone."""
    pids = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as fh:
                cmd = fh.read().decode(errors="replace")
            if cmd.startswith("ray::MapWorker"):  # Ray titles actor processes by their class
                with open(path.replace("cmdline", "stat")) as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
                if os.getpgid(parent) == cluster.pgid:
                    pids.append(int(path.split("/")[2]))
        except (OSError, ValueError):  # the process ended meanwhile
            continue
    return pids


def test_ray_job_survives_a_killed_worker(tmp_path, ray_cluster):
    data = generated_rows(tmp_path / "corpus.csv", 0, 1200)
    cache = tmp_path / "cache"
    killed, finished = [], threading.Event()

    def kill_a_worker_mid_run():
        deadline = time.time() + 300
        while not killed and not finished.is_set() and time.time() < deadline:
            if len(glob.glob(str(cache / "*" / "*.keys.npy"))) >= 2:  # mid-run: work committed
                workers = _map_workers(ray_cluster)
                if workers:
                    os.kill(workers[0], signal.SIGKILL)
                    killed.append(workers[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker_mid_run, daemon=True)
    killer.start()
    try:
        summary = main_json("embed", "--data", data, "--engine", "ray", "--address", ray_cluster.address,
                            "--num-workers", 1, "--block-size", 150, "--shard-size", 50, "--cache-dir", cache)
    finally:
        finished.set()
        killer.join()
    assert killed, "the job ended before a worker could be killed"
    assert summary["n_texts"] == 1200  # the killed worker's block was retried, not dropped

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
    from conftest import DEMO_TRAIN

    proc = run_main("embed", "--data", DEMO_TRAIN, "--engine", "ray", "--address", "auto", check=2)
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
ray.init(address={address!r}, runtime_env={{
    "worker_process_setup_hook": "ray_hooks.install",
    "env_vars": {{"PYTHONPATH": {tests!r} + os.pathsep + {root!r}, "BERTFEAT_TEST_POISON": "poison text"}}}})
from bertfeat.errors import BertfeatError
from bertfeat.extract import BertEncoder
from bertfeat.extract.ray_engine import embed_on_ray

start = time.time()
try:
    embed_on_ray([BertEncoder(model={model!r}, device="cpu", precision="fp32")], [{data!r}], {cache!r},
                 num_workers=1, block_texts=50, progress=False)
except BertfeatError as exc:
    print("error:", exc, flush=True)
    print("seconds:", round(time.time() - start), flush=True)
    sys.exit(2)
"""


def test_a_block_whose_worker_dies_every_time_ends_in_one_line(tmp_path, tiny_bert, ray_cluster):
    """A text that kills its worker every time (as one huge text running a node out of memory would):
    the job ends with one line naming the file and rows, instead of Ray restarting and retrying forever."""
    data = tmp_path / "texts.csv"
    texts = [f"text number {i}" for i in range(200)]
    texts[120] = "poison text"  # data row 122 (the header is row 1)
    data.write_text("text\n" + "\n".join(texts) + "\n")
    script = _POISONED_RUN.format(root=ROOT, tests=os.path.dirname(os.path.abspath(__file__)), model=tiny_bert,
                                  data=str(data), cache=str(tmp_path / "cache"), address=ray_cluster.address)
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


def test_the_driver_verifies_the_cache_before_a_ray_run(tmp_path, tiny_bert, ray_cluster):
    """A damaged shard is quarantined and its rows re-embedded, as in a local run; actors never hash. The
    cache is filled by a local run (the same shards a Ray run writes: test_ray_engine_matches_local...)."""
    data = tmp_path / "texts.csv"
    data.write_text("text\n" + "\n".join(f"text number {i}" for i in range(200)) + "\n")
    cache = tmp_path / "cache"
    args = ("embed", "--data", data, "--model", tiny_bert, "--device", "cpu", "--precision", "fp32", "--shard-size", 50,
            "--cache-dir", cache)
    first = main_json(*args)
    assert first["n_embedded"] == 200
    shards = sorted(glob.glob(str(cache / "*" / "*.vectors.npy")))
    payload = bytearray(open(shards[0], "rb").read())
    payload[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf: same size, only the checksum tells
    open(shards[0], "wb").write(bytes(payload))
    rows = np.load(shards[0]).shape[0]
    again = main_json(*args, "--engine", "ray", "--address", ray_cluster.address, "--num-workers", 1,
                      "--block-size", 50)
    assert again["engine"] == "ray" and (again["n_embedded"], again["n_cached"]) == (rows, 200 - rows)
    assert glob.glob(str(cache / "quarantine" / "*" / "*" / os.path.basename(shards[0])))
    assert main_json("cache", "verify", "--cache-dir", cache)["damaged"] == []

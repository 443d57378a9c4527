import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
# Under pytest-xdist each worker runs torch, OpenVINO and ONNX Runtime on its share of the cores (they read
# OMP_NUM_THREADS; subprocesses inherit it): each would take every core, and on 2 cores two workers' threads
# spin-waiting for each other ran test_speed.py 4x slower. Tests of several threads ask for them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
# One folder of ONNX exports for the whole session (subprocesses inherit it): each test's own vector
# cache then does not pay for a fresh export, and nothing is written under the user's ~/.cache.
if "BERTFEAT_MODELS" not in os.environ:
    import atexit
    import shutil

    os.environ["BERTFEAT_MODELS"] = tempfile.mkdtemp(prefix="bertfeat-models-")
    # Removed by the process that made it (xdist workers inherit the variable and leave it alone).
    atexit.register(shutil.rmtree, os.environ["BERTFEAT_MODELS"], ignore_errors=True)

DEMO_TRAIN = os.path.join(ROOT, "data", "demo", "train.csv")
DEMO_TEST = os.path.join(ROOT, "data", "demo", "test.csv")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "datasets")


def run_cli(*args, cache=None, check=None, timeout=600, env=None):
    """Run `python cli.py ARGS` as a user would; returns the CompletedProcess. ``env``: extra variables."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if cache is not None:
        env["BERTFEAT_CACHE"] = str(cache)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def data_rows(source: str, path, start: int, stop: int) -> str:
    """Write the header and data rows [start, stop) of the CSV ``source`` to ``path``."""
    with open(source, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join([lines[0]] + lines[1 + start:1 + stop]) + "\n")
    return str(path)


def generated_rows(path, start: int, stop: int) -> str:
    """Write rows [start, stop) of an endless labelled corpus made from the shipped demo data: row i joins
    demo text i mod 320 (whose label it keeps) with demo text i div 320, so every row up to 102,400 is a
    distinct text and overlapping ranges share rows. Tests of scale (kill/resume, concurrent writers,
    Ray) run on it, so they need nothing beside the checkout."""
    import csv

    with open(DEMO_TRAIN, encoding="utf-8", newline="") as fh:
        demo = list(csv.DictReader(fh))
    n = len(demo)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(start, stop):
            first, second = demo[i % n], demo[(i // n) % n]
            writer.writerow([f"{first['text']} {second['text'].lower()}", first["label"]])
    return str(path)


def cached_vectors(cache, texts, model=None):
    """Default-encoder vectors of ``texts`` from ``cache``, asserting that none had to be embedded (``model``:
    another model's, with every other setting the default)."""
    from bertfeat.extract import BertEncoder, embed

    encoder = BertEncoder() if model is None else BertEncoder(model=model)
    done = embed([encoder], texts, cache_dir=str(cache), progress=False)
    assert done.n_embedded == 0, f"{done.n_embedded} of {len(texts)} texts were missing from {cache}"
    return done.vectors[0]


def run_json(*args, cache=None):
    proc = run_cli(*args, "--json", "--quiet", cache=cache, check=0)
    return json.loads(proc.stdout)


def run_main(*args, cache=None, check=None, env=None):
    """``bertfeat.cli.main(ARGS)`` in this process, as run_cli runs it in a new one: the same arguments, and a
    CompletedProcess of its exit code and what it printed. For tests where the process is not the point: no
    interpreter start-up, and the models a test before it loaded stay loaded. (Output written below Python,
    at the file descriptor, is not captured: run_cli checks that a real process's stderr is one line.)"""
    import contextlib
    import io
    import logging

    from bertfeat.cli import main

    argv = [str(a) for a in args]
    changes = {**(env or {}), **({"BERTFEAT_CACHE": str(cache)} if cache is not None else {})}
    saved_env = {name: os.environ.get(name) for name in changes}
    log = logging.getLogger("bertfeat")
    saved_log = log.handlers[:], log.level, log.propagate  # main() sets its own; caplog needs these back
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(changes)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        log.handlers[:], log.level, log.propagate = saved_log
    proc = subprocess.CompletedProcess(["bertfeat", *argv], code, out.getvalue(), err.getvalue())
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def main_json(*args, cache=None, env=None):
    """run_json in this process (run_main)."""
    return json.loads(run_main(*args, "--json", "--quiet", cache=cache, check=0, env=env).stdout)


@pytest.fixture(scope="session")
def demo():
    from bertfeat.extract import read_table

    return read_table(DEMO_TRAIN), read_table(DEMO_TEST)


@pytest.fixture(scope="session")
def demo_vectors(demo, demo_cache):
    """Default-model vectors of the demo data (real model, read from the session's demo cache)."""
    train, test = demo
    vecs = cached_vectors(demo_cache, train.texts + test.texts)
    return vecs[:len(train.texts)], train.labels, vecs[len(train.texts):], test.labels


def _filled_once(tmp_path_factory, name, fill):
    """The folder ``name``, filled by ``fill(folder)`` once for the session. Under pytest-xdist the workers
    share it: the first to need it fills it in the folder above their own, under a lock, and the others wait
    for it and read it (a filled folder is only read: copied, or looked up)."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, filled = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not filled.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed mid-fill left
            fill(folder)
            filled.touch()
    return folder


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A vector cache holding the demo data under every encoder of the default bench's views (one forward
    pass, once per session, shared by xdist workers): tests copy it instead of embedding the same texts again."""

    def fill(folder):
        from bertfeat.classify.selection import DEFAULT_VIEWS
        from bertfeat.extract import BertEncoder, embed, feature_encoders, read_table

        texts = read_table(DEMO_TRAIN).texts + read_table(DEMO_TEST).texts
        unique = {}
        for view in DEFAULT_VIEWS:
            for enc in feature_encoders(view, BertEncoder()):
                unique.setdefault(enc.fingerprint(), enc)
        embed(list(unique.values()), texts, cache_dir=str(folder), progress=False)

    return _filled_once(tmp_path_factory, "demo-cache-filled", fill)


@pytest.fixture
def cache(tmp_path, demo_cache, monkeypatch):
    """A copy of the session's filled demo cache, as this test's default cache (BERTFEAT_CACHE)."""
    import shutil

    folder = tmp_path / "cache"
    shutil.copytree(demo_cache, folder)
    monkeypatch.setenv("BERTFEAT_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def demo_model(demo_cache, tmp_path_factory):
    """`fit --head logreg` on the demo data, in-process on a copy of the demo cache: fit's JSON result (its
    model_dir is the folder). Shared by the session: a test that changes the folder changes a copy."""
    import shutil

    folder = tmp_path_factory.mktemp("demo-model")
    shutil.copytree(demo_cache, folder / "cache")
    return main_json("fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--head", "logreg", "--out", folder / "logreg",
                     cache=folder / "cache")


# The tests reading the default bench's result share one xdist group, so one worker runs it once.
DEMO_BENCH = pytest.mark.xdist_group("demo-bench")


@pytest.fixture(scope="session")
def demo_bench(demo_cache, tmp_path_factory):
    """The default bench on the demo data, in-process on a copy of the demo cache, saved: (BenchResult, its
    folder). Shared by the session (tests that use it are marked DEMO_BENCH) and only read: the default bench
    is the suite's costliest in-process run, and four tests read the same one."""
    import shutil

    import bertfeat

    folder = tmp_path_factory.mktemp("demo-bench")
    shutil.copytree(demo_cache, folder / "cache")
    res = bertfeat.bench(DEMO_TRAIN, DEMO_TEST, cache_dir=str(folder / "cache"), progress=False)
    return res, res.save(str(folder / "bench"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A small randomly initialised BERT saved to a temp folder: the 'any Hugging Face model' path."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bertfeat.extract.model import resolve_model_dir

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def export_cache(tiny_bert, tmp_path_factory):
    """A cache root holding one encoder entry and one int8 ONNX export of tiny_bert (the same bytes on every
    xdist worker, so the same export key), made once for the session by a real `embed` under umask 022 with
    exports under the cache root, as for a user. Tests copy it."""

    def fill(folder):
        data = data_rows(DEMO_TRAIN, f"{folder}-texts.csv", 0, 20)
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "embed", "--data", data, "--model",
                               tiny_bert, "--precision", "int8", "--device", "cpu", "--quiet"], cwd=ROOT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "BERTFEAT_MODELS": "",
                                   "BERTFEAT_CACHE": str(folder)},
                              capture_output=True, text=True, timeout=600, preexec_fn=lambda: os.umask(0o022))
        assert proc.returncode == 0, proc.stderr
        assert len(os.listdir(folder / "models")) == 1, "the export is not under the cache root"

    return _filled_once(tmp_path_factory, "export-cache", fill)


def pytest_report_header(config):
    if not os.path.isdir(SHARED):
        return "slow tests deselected: they reproduce published figures on ../shared/datasets, not beside this checkout"


def pytest_collection_modifyitems(config, items):
    """Without ../shared beside the checkout, deselect the slow tests (the only ones that need it) instead of
    skipping them, so a skip always means something is wrong (.ci/run fails on any)."""
    _name_xdist_groups(config, items)
    if os.path.isdir(SHARED):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def _name_xdist_groups(config, items):
    """`--dist loadgroup` sends a test marked xdist_group("g") with the others of "g" when its id ends in "@g".
    pytest-xdist 3.8 renames the test through ``item._nodeid``, which pytest 9.2 no longer reads (the id is
    ``item._id``): the marks did nothing, and Ray's tests ran on both workers at once, a cluster each. Rename
    it where pytest reads it, unless xdist already did."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = type(item._id).parse(item.nodeid + suffix)

"""Cache upkeep against running jobs: prune keeps a model export a job holds, rejects ages it cannot mean,
verify counts each damaged export once and refuses a file for a root; exports are made with the umask's
mode; two identical finetunes cannot share a run folder; setfit's --max-pairs must be positive.

Subprocesses where the process is the point (concurrent jobs, a umask); one thread of torch each, as in
test_finetune.py. The cache commands run in-process (run_main).
"""
import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import DEMO_TEST, DEMO_TRAIN, ROOT, data_rows, run_main

EMBED = {"OMP_NUM_THREADS": "1", "BERTFEAT_MODELS": ""}  # exports under the vector cache root, as for a user
FINETUNE = {"OMP_NUM_THREADS": "1", "BERTFEAT_CPU_BF16": "0"}  # fp32 torch: no ONNX export of the tuned model


def _popen(*args, cache=None, cwd=ROOT, env=EMBED):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env}
    if cache is not None:
        env["BERTFEAT_CACHE"] = str(cache)
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.umask(0o022))


def _embed_args(data, tiny_bert):
    return ["embed", "--data", data, "--model", tiny_bert, "--precision", "int8", "--device", "cpu", "--quiet",
            "--json"]


def _copy(export_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(export_cache, cache)
    (folder,) = (cache / "models").iterdir()
    return cache, folder


def _error_line(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# -- prune and a job's model export ---------------------------------------------------------------------
def test_export_folder_is_made_with_the_umask_mode(export_cache):
    (folder,) = (export_cache / "models").iterdir()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755  # others can read a shared cache's export
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o644 for f in folder.iterdir())


def test_prune_all_keeps_an_export_a_job_holds(export_cache, tmp_path):
    from bertfeat.cache import layout

    cache, folder = _copy(export_cache, tmp_path)
    lock = layout.hold(str(folder), create=False)  # as a running embed holds its export
    try:
        done = json.loads(run_main("cache", "prune", "--all", "--json", cache=cache, check=0).stdout)
    finally:
        os.close(lock)
    assert folder.is_dir() and (folder / "model.onnx").is_file()
    assert {"path": str(folder), "reason": "in use by a running job"} in done["skipped"]
    assert str(folder) not in done["paths"] and len(done["removed"]) == 1  # the idle vector entry went
    # Let go, and the same prune removes it.
    done = json.loads(run_main("cache", "prune", "--all", "--json", cache=cache, check=0).stdout)
    assert str(folder) in done["paths"] and not folder.exists()


def test_prune_all_while_a_real_embed_runs_keeps_its_export_and_the_embed_finishes(export_cache, tiny_bert,
                                                                                     tmp_path):
    from bertfeat.cache import layout

    cache, folder = _copy(export_cache, tmp_path)
    data = data_rows(DEMO_TEST, tmp_path / "new.csv", 0, 40)  # texts the cache does not hold
    job = _popen(*_embed_args(data, tiny_bert), cache=cache)
    try:
        while True:  # until the embed holds its export: then an exclusive claim fails
            claim = layout.claim(str(folder))
            if claim is None:
                break
            os.close(claim)
            assert job.poll() is None, f"the embed ended without ever holding its export:\n{job.stderr.read()}"
            time.sleep(0.02)
        job.send_signal(signal.SIGSTOP)  # holds it for as long as the prune takes, whatever the machine's speed
        done = json.loads(run_main("cache", "prune", "--all", "--json", cache=cache, check=0).stdout)
    finally:
        job.send_signal(signal.SIGCONT)
    out, err = job.communicate(timeout=600)
    assert job.returncode == 0 and "Traceback" not in err, err
    print(out)
    assert {"path": str(folder), "reason": "in use by a running job"} in done["skipped"]
    assert (folder / "model.onnx").is_file()


# -- prune's ages, verify's count, a file for a root -------------------------------------------------------
@pytest.mark.parametrize("age", ["-1", "nan", "-inf"])
def test_prune_older_than_a_negative_or_no_number_is_an_error_and_removes_nothing(export_cache, tmp_path, age):
    cache, folder = _copy(export_cache, tmp_path)
    before = sorted(os.listdir(cache))
    line = _error_line(run_main("cache", "prune", f"--older-than={age}", cache=cache))
    assert "--older-than" in line and age in line
    assert sorted(os.listdir(cache)) == before and folder.is_dir()


def test_prune_older_than_rejects_a_negative_age_in_the_library_too(tmp_path):
    from bertfeat.cache import admin
    from bertfeat.errors import ConfigError

    with pytest.raises(ConfigError, match="older_than="):
        admin.prune(str(tmp_path), older_than_days=-1)


def test_verify_counts_a_damaged_export_once(export_cache, tmp_path):
    cache, folder = _copy(export_cache, tmp_path)
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[:len(data) // 2])
    proc = run_main("cache", "verify", "--json", cache=cache, check=1)
    report = json.loads(proc.stdout)
    assert [d["export"] for d in report["damaged"]] == [folder.name] and report["exports"] == 1
    assert proc.stderr.count(f"model export {folder}: model.onnx has") == 1
    text = run_main("cache", "verify", cache=cache, check=1).stdout
    assert "1 model exports checked: 1 damaged" in text


@pytest.mark.parametrize("action", [["verify"], ["info"], ["prune", "--all"]])
def test_cache_commands_on_a_file_are_a_one_line_error(tmp_path, action):
    path = tmp_path / "not-a-folder"
    path.write_text("mine\n")
    line = _error_line(run_main("cache", *action, "--cache-dir", path))
    assert str(path) in line and "not a folder" in line
    assert path.read_text() == "mine\n"


# -- finetune: one run per folder; setfit's --max-pairs -----------------------------------------------------
def test_the_same_finetune_twice_at_once_the_second_exits_2_and_the_first_finishes(tiny_bert, tmp_path):
    args = ["finetune", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--model", tiny_bert, "--epochs", "2",
            "--batch-size", "8", "--max-length", "24", "--quiet", "--json"]
    # No --out: both commands pick runs/<time>-finetune-full themselves.
    first = _popen(*args, cwd=tmp_path, env=FINETUNE)
    try:
        deadline = time.time() + 300
        while not glob.glob(str(tmp_path / "runs" / "*" / "temp" / "ckpt" / "epoch-*")):
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.02)
        # Still running (as a slow run is) while the second starts: the second used to resume from the first's
        # checkpoint in the same folder, and one of the two then deleted what the other was writing.
        first.send_signal(signal.SIGSTOP)
        second = _popen(*args, cwd=tmp_path, env=FINETUNE)
        out, err = second.communicate(timeout=600)
    finally:
        first.send_signal(signal.SIGCONT)
    line = _error_line(subprocess.CompletedProcess(second.args, second.returncode, out, err))
    (run,) = glob.glob(str(tmp_path / "runs" / "*"))
    assert "already running" in line and run in line and out == ""
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert json.loads(out)["model_dir"] == run and not os.path.exists(os.path.join(run, "temp"))
    preds = json.loads(run_main("predict", "--model-dir", run, "--data", DEMO_TEST, "--json", "--quiet",
                               check=0, env=FINETUNE).stdout)
    assert len(preds) == 80


@pytest.mark.parametrize("value", ["0", "-3"])
def test_setfit_max_pairs_must_be_positive(tiny_bert, tmp_path, value):
    train = data_rows(DEMO_TRAIN, tmp_path / "train.csv", 0, 24)
    line = _error_line(run_main("finetune", "--method", "setfit", "--train", train, "--test", DEMO_TEST, "--model",
                               tiny_bert, "--max-pairs", value, "--out", tmp_path / "run", "--quiet",
                               env=FINETUNE))
    assert "--max-pairs" in line and value in line
    assert not (tmp_path / "run").exists()

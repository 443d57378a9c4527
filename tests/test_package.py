"""bertfeat installs as one package: a wheel holds only `bertfeat`, and its command works outside the checkout."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

from conftest import DEMO_TEST, DEMO_TRAIN, ROOT


def test_wheel_installs_one_package_whose_command_works_from_anywhere(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Without build isolation when setuptools is at hand: the build needs nothing from the network then.
    isolation = ["--no-build-isolation"] if _has_setuptools() else []
    # Built from a copy: setuptools leaves build/ behind, and a stale build/ could put old files in the wheel.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(wheels),
                    str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = wheels.glob("bertfeat-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"bertfeat"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("bertfeat/cli.py", "bertfeat/extract/encoder.py", "bertfeat/cache/store.py",
                   "bertfeat/classify/heads.py", "bertfeat/__main__.py"):
        assert module in names

    # Installed into a folder of its own, run from a folder that is not the checkout: nothing can come
    # from the source tree. The venv supplies the dependencies only.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "BERTFEAT_CACHE": str(tmp_path / "cache")}

    def run(*args):
        return subprocess.run([*args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)

    probe = run(sys.executable, "-c", "import bertfeat, bertfeat.extract as e; print(bertfeat.__version__, e.__file__)")
    assert probe.returncode == 0, probe.stderr
    version, where = probe.stdout.split()
    assert version.count(".") == 2 and where.startswith(str(site))
    assert run(sys.executable, "-m", "bertfeat", "fit", "--help").returncode == 0

    out = tmp_path / "model"
    fit = run(str(site / "bin" / "bertfeat"), "fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--head", "logreg",
              "--out", str(out), "--json", "--quiet")
    assert fit.returncode == 0, fit.stderr
    accuracy = json.loads(fit.stdout)["accuracy"]
    predict = run(str(site / "bin" / "bertfeat"), "predict", "--model-dir", str(out), "--data", DEMO_TEST, "--json",
                  "--quiet")
    assert predict.returncode == 0, predict.stderr
    rows = json.loads(predict.stdout)
    assert sum(r["label"] == r["true_label"] for r in rows) / len(rows) == accuracy


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None

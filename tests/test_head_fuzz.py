"""Fuzzed head.npz files (hypothesis): every mutation loads as a head that predicts finite probabilities, or is
refused in one line; none crashes the process. The fixtures and file helpers are test_head_file.py's."""
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from test_head_file import _PREDICT, NAMES, _at, _copy, _find, _load, _npz, _parts, _plant, _set
from test_head_file import saved, vectors  # noqa: F401  (fixtures shared with the hand-crafted cases)


NUMBERS = [0, -1, 1, 2, 3, 7, 10 ** 6, 2 ** 40, 0.5, -2.5, 1e300, "x", None, True, [], {}]


def _mutate(rnd: random.Random, tree, arrays):
    """One random change to a head's state tree and arrays (in place), or new bytes: None or bytes."""
    what = rnd.choice(["number", "drop", "add", "ref", "swap-array", "truncate", "reshape", "dtype", "values",
                       "cycle", "bytes", "truncate-bytes"])
    scalars = list(_find(tree, lambda n: not isinstance(n, (dict, list)))) or [()]
    attrs = [p + ("state", k) for p in _find(tree, lambda n: isinstance(n, dict) and "object" in n)
             for k in _at(tree, p)["state"]]
    refs = list(_find(tree, lambda n: isinstance(n, dict) and "ref" in n))
    ids = [n["id"] for n in (_at(tree, p) for p in _find(tree, lambda n: isinstance(n, dict) and "id" in n))]
    key = rnd.choice(sorted(arrays))
    array = arrays[key]
    if what == "number" and scalars[0]:
        _set(tree, rnd.choice(scalars), rnd.choice(NUMBERS))
    elif what == "drop":
        path = rnd.choice(attrs)
        del _at(tree, path[:-1])[path[-1]]
    elif what == "add":
        _set(tree, rnd.choice(attrs)[:-1] + (rnd.choice(["bogus", "coef_", "classes_", "_tree", "__class__"]),),
             rnd.choice(NUMBERS + [{"array": key}]))
    elif what == "ref" and refs:
        _set(tree, rnd.choice(refs), {"ref": rnd.choice(ids + [-1, "0", 99])})
    elif what == "swap-array":
        path = rnd.choice(list(_find(tree, lambda n: isinstance(n, dict) and "array" in n)))
        _at(tree, path)["array"] = rnd.choice(sorted(arrays) + ["nope"])
    elif what == "truncate" and array.ndim:
        arrays[key] = array[:rnd.randrange(len(array) + 1)]
    elif what == "reshape":
        arrays[key] = array.reshape(-1) if array.ndim != 1 else array.reshape(1, -1)
    elif what == "dtype" and array.dtype.kind in "biuf":
        arrays[key] = array.astype(rnd.choice([np.int32, np.int64, np.float32, np.float64, np.uint8, bool]))
    elif what == "values" and array.size and array.dtype.kind in "biuf":
        flat = array.reshape(-1)
        if array.dtype.kind == "f":
            value = rnd.choice([0, -1, 1, 10 ** 6, -5, np.nan, np.inf])
        else:  # an integer or boolean array holds the nearest value of its type (int8 label columns: 127)
            info = np.iinfo(np.int8 if array.dtype.kind == "b" else array.dtype)
            value = min(max(rnd.choice([0, -1, 1, 10 ** 6, -5]), info.min), info.max)
        flat[rnd.randrange(flat.size)] = value
    elif what == "cycle" and ids:
        path = rnd.choice(attrs)
        _set(tree, path, {"ref": ids[0]})
    elif what in ("bytes", "truncate-bytes"):
        data = bytearray(_npz(tree, arrays))
        if what == "truncate-bytes":
            return bytes(data[:rnd.randrange(len(data))])
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        return bytes(data)
    return None


def _mutant(folder, rnd):
    tree, arrays = _parts(folder)
    data = _mutate(rnd, tree, arrays)
    return data if data is not None else _npz(tree, arrays)


def _assert_probabilities(proba, expected):
    proba = np.asarray(proba)
    assert proba.shape == expected.shape and np.isfinite(proba).all(), proba
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-3)


@pytest.fixture(scope="module")
def fuzz_folders(saved, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("fuzz")
    return {name: shutil.copytree(folder, root / name) for name, (folder, _) in saved.items()}


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(name=st.sampled_from(NAMES), rnd=st.randoms(use_true_random=False))
def test_fuzzed_head_files_load_as_a_head_or_are_refused_in_one_line(name, rnd, saved, fuzz_folders, vectors):
    """Any change to a head.npz (its manifest rewritten to match, as whoever crafts a folder can): either
    one ModelFolderError line, or a head that still predicts probabilities. The values themselves are not
    guarded: a changed coefficient predicts differently, as the file says (the checksum guards against
    damage, not against whoever rewrites the manifest)."""
    from bertfeat.errors import ModelFolderError

    folder = fuzz_folders[name]
    _plant(folder, "head.npz", _mutant(saved[name][0], rnd))
    try:
        head = _load(folder)
    except ModelFolderError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"model folder {folder}")
        return
    with np.errstate(all="ignore"):
        _assert_probabilities(head.predict_proba(vectors[2]), saved[name][1])


def test_fuzzed_head_files_never_crash_the_process(saved, tmp_path, vectors):
    """The same mutations in a separate process: a segfault in scikit-learn's C code would show here as a
    negative exit code, where in-process it would take pytest down."""
    rnd = random.Random(1)
    folders = []
    for i in range(60):
        name = NAMES[i % len(NAMES)]
        folder = _copy(saved[name][0], tmp_path / str(i))
        _plant(folder, "head.npz", _mutant(saved[name][0], rnd))
        folders.append((name, str(folder)))
    proc = subprocess.run([sys.executable, "-c", _PREDICT, *(f for _, f in folders)], input=vectors[2].tobytes(),
                          cwd=ROOT, capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(folders)
    for (name, _), line in zip(folders, lines):
        if not line.startswith("refused: "):
            _assert_probabilities(eval(line), saved[name][1])

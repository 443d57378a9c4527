"""A head.npz is input from whoever wrote the model folder: a crafted one must be refused in one line,
never crash predict, print NaN or exhaust memory. Model folders are written whole or not at all."""
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from conftest import ROOT, run_main

NAMES = ("logreg", "svm", "lda", "knn", "mlp", "vote")


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 16)).astype(np.float32)
    return X, np.array(["a", "b", "c"] * 20), rng.normal(size=(10, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(vectors, tmp_path_factory):
    """name -> (model folder, its head's probabilities on the test vectors)."""
    from bertfeat.classify import make_head, save_model_dir

    X, y, X_test = vectors
    out = {}
    for name in NAMES:
        head = make_head(name).fit(X, y)
        folder = save_model_dir(str(tmp_path_factory.mktemp("heads") / name), head, _manifest(head), {"n": 1})
        out[name] = folder, head.predict_proba(X_test)
    return out


def _manifest(head, **extra):
    return {"head": "logreg", "features": "mean", "labels": [str(c) for c in head.classes_], "model_id": "m",
            "trained_with": {"precision": "fp32", "runtime": "torch", "device": "cpu", "precision_asked": "fp32"},
            "encoders": [{"model": "all-MiniLM-L6-v2"}], **extra}


def _parts(folder):
    """(state tree, arrays) of a folder's head.npz."""
    with np.load(os.path.join(folder, "head.npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(arrays.pop("state.json").tobytes()), arrays


def _npz(tree, arrays) -> bytes:
    buf = io.BytesIO()
    state = json.dumps(tree).replace(f'"{DEEP}"', "[" * 100_000 + "]" * 100_000)
    np.savez(buf, **{"state.json": np.frombuffer(state.encode(), np.uint8)}, **arrays)
    return buf.getvalue()


def _plant(folder, name, data: bytes):
    """Write ``name`` into ``folder`` and its checksum into the manifest, as whoever crafts a folder can."""
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(data)
    path = os.path.join(folder, "manifest.json")
    manifest = json.load(open(path))
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    json.dump(manifest, open(path, "w"))


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "copy", dirs_exist_ok=True)


def _find(node, pred, path=()):
    """Paths (tuples of keys) of the nodes of a state tree for which ``pred`` holds."""
    if pred(node):
        yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _find(child, pred, path + (key,))


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree, path, value):
    _at(tree, path[:-1])[path[-1]] = value


def _state_of(tree, cls):
    return next(_at(tree, p)["state"] for p in _find(tree, lambda n: isinstance(n, dict) and n.get("object") == cls))


def _load(folder):
    from bertfeat.classify import load_model_dir

    return load_model_dir(str(folder))[1]


# -- crafted heads -------------------------------------------------------------------------------
def _svm_linear_shifted(tree, arrays):
    svc = _state_of(tree, "SoftmaxSVC")
    svc["kernel"] = "linear"
    counts = arrays[svc["_n_support"]["array"]]
    counts[0] += 40  # libsvm reads 40 support vectors past the end
    counts[1] -= 40


def _svm_shortened(tree, arrays):
    svc = _state_of(tree, "SoftmaxSVC")
    for key in ("support_vectors_", "_dual_coef_", "dual_coef_"):
        name = svc[key]["array"]
        arrays[name] = arrays[name][..., :3] if key != "support_vectors_" else arrays[name][:3]


def _nan_coef(tree, arrays):
    arrays[_state_of(tree, "LogisticRegression")["coef_"]["array"]][0, 0] = np.nan


def _knn_label_out_of_range(tree, arrays):
    arrays[_state_of(tree, "FewRowsKNN")["_y"]["array"]][0] = 1000


def _cycle(tree, arrays):
    _state_of(tree, "VotingClassifier")["le_"] = {"ref": tree["id"]}  # the vote holds itself


def _bad_ref(tree, arrays):
    _state_of(tree, "VotingClassifier")["le_"] = {"ref": 12345}


def _deep(tree, arrays):
    tree["state"]["tol"] = DEEP  # _npz writes it 100,000 lists deep: past Python's recursion limit


DEEP = "deep-nesting-here"


def _unknown_attribute(tree, arrays):
    tree["state"]["predict_proba"] = 1  # an instance attribute would shadow the method


CRAFTED = [("svm", _svm_linear_shifted, "support counts"), ("svm", _svm_shortened, "support"),
           ("logreg", _nan_coef, "NaN"), ("knn", _knn_label_out_of_range, "label indexes"),
           ("vote", _cycle, "cycle"), ("vote", _bad_ref, "reference"), ("logreg", _deep, "nested deeper"),
           ("logreg", _unknown_attribute, "predict_proba")]


@pytest.mark.parametrize("name,craft,words", CRAFTED, ids=[c[1].__name__[1:] for c in CRAFTED])
def test_a_crafted_head_is_refused_in_one_line(name, craft, words, saved, tmp_path):
    from bertfeat.errors import ModelFolderError

    folder = _copy(saved[name][0], tmp_path)
    tree, arrays = _parts(folder)
    craft(tree, arrays)
    _plant(folder, "head.npz", _npz(tree, arrays))
    with pytest.raises(ModelFolderError, match=words) as caught:
        _load(folder)
    assert "\n" not in str(caught.value) and "head.npz" in str(caught.value)


def test_a_crafted_svm_never_reaches_libsvm(saved, tmp_path, vectors):
    """Before: predict on this file died of a segfault (exit 139); the CLI now refuses it in one line."""
    folder = _copy(saved["svm"][0], tmp_path)
    tree, arrays = _parts(folder)
    _svm_linear_shifted(tree, arrays)
    _plant(folder, "head.npz", _npz(tree, arrays))
    proc = subprocess.run([sys.executable, "-c", _PREDICT, str(folder)], input=vectors[2].tobytes(), cwd=ROOT,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith(b"refused: "), (proc.returncode, proc.stderr[-2000:])


# Loads a model folder and prints its probabilities on float32 rows of 16 read from stdin, or "refused:".
_PREDICT = """
import sys, numpy as np
from bertfeat.classify import load_model_dir
from bertfeat.errors import BertfeatError
X = np.frombuffer(sys.stdin.buffer.read(), np.float32).reshape(-1, 16)
for folder in sys.argv[1:]:
    try:
        head = load_model_dir(folder)[1]
    except BertfeatError as exc:
        print("refused:", str(exc).replace(chr(10), " "), flush=True)
        continue
    print(repr(head.predict_proba(X).tolist()), flush=True)
"""


def _bomb(path_or_buf, tree, arrays, huge: int, referenced: bool):
    """A head.npz with a deflated member of ``huge`` zero bytes: the array ``a0`` itself, or one no node names."""
    with zipfile.ZipFile(path_or_buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, array in {"state.json": np.frombuffer(json.dumps(tree).encode(), np.uint8), **arrays}.items():
            if key == "a0" and referenced:
                continue
            with zf.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, array)
        with zf.open("a0.npy" if referenced else "junk.npy", "w", force_zip64=True) as fh:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (huge // 8,)})
            fh.write(header.getvalue())
            zeros = bytes(1 << 20)
            for _ in range(huge >> 20):
                fh.write(zeros)


def test_a_zip_bomb_is_refused_before_it_is_inflated_and_unread_members_are_never_read(saved, tmp_path, vectors):
    from bertfeat.errors import ModelFolderError

    folder = _copy(saved["logreg"][0], tmp_path)
    tree, arrays = _parts(folder)
    buf = io.BytesIO()
    _bomb(buf, tree, arrays, 256 << 20, referenced=False)
    _plant(folder, "head.npz", buf.getvalue())
    tracemalloc.start()
    head = _load(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MB to load a head of a few KB"
    np.testing.assert_allclose(head.predict_proba(vectors[2]), saved["logreg"][1])

    buf = io.BytesIO()
    _bomb(buf, tree, arrays, 256 << 20, referenced=True)
    _plant(folder, "head.npz", buf.getvalue())
    t0 = time.perf_counter()
    with pytest.raises(ModelFolderError, match="declares"):
        _load(folder)
    assert time.perf_counter() - t0 < 1


# -- fuzzing -------------------------------------------------------------------------------------
def test_unchanged_heads_still_load_and_predict_the_same(saved, vectors):
    for name, (folder, expected) in saved.items():
        np.testing.assert_array_equal(_load(folder).predict_proba(vectors[2]), expected)  # bit for bit


# -- model folders -------------------------------------------------------------------------------
def test_a_save_removes_temp_folders_of_saves_that_died(saved, tmp_path):
    import socket

    from bertfeat.classify import save_model_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    died = tmp_path / f".tmp-model-{dead.pid}@{host}-abcd1234"
    old = tmp_path / ".tmp-model-x1y2z3w4"
    live = tmp_path / f".tmp-model-{os.getpid()}@{host}-live1234"
    mine = tmp_path / "tmp-model-notours"
    for folder in (died, old, live, mine):
        folder.mkdir()
        (folder / "head.npz").write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    head = _load(saved["logreg"][0])
    save_model_dir(str(tmp_path / "m"), head, _manifest(head), {})
    assert sorted(os.listdir(tmp_path)) == sorted(["m", live.name, mine.name])


def _finetuned_folder(saved, tiny_bert, tmp_path, link=False):
    """A model folder with a fine-tuned encoder subfolder, as `finetune` writes it (the tiny BERT stands
    in for the tuned encoder); ``link``: encoder/ is a symlink to a folder outside."""
    import shutil

    from bertfeat.classify import save_model_dir
    from bertfeat.extract import model as model_io

    head = _load(saved["logreg"][0])
    folder = tmp_path / "ft"
    manifest = _manifest(head, encoder_folder="encoder", encoders=[{"model": "encoder"}],
                         model_id=model_io.model_id(model_io.resolve_model_dir(tiny_bert)))
    save_model_dir(str(folder), head, manifest, {"command": "finetune"})
    encoder = shutil.copytree(tiny_bert, tmp_path / "outside-encoder" if link else folder / "encoder")
    if link:
        os.symlink(encoder, folder / "encoder")
    return folder


def test_api_save_of_a_finetuned_model_leaves_nothing_when_the_encoder_copy_fails(saved, tiny_bert, tmp_path):
    """Before: the head folder was renamed into place, then the encoder copied into it; a copy that failed
    left a folder that looked complete but had no (or half an) encoder."""
    import bertfeat

    folder = _finetuned_folder(saved, tiny_bert, tmp_path)
    clf = bertfeat.load(str(folder))
    copy = clf.save(str(tmp_path / "copy"))
    assert sorted(os.listdir(copy)) == ["encoder", "head.npz", "manifest.json", "run.json"]
    assert sorted(os.listdir(os.path.join(copy, "encoder"))) == sorted(os.listdir(folder / "encoder"))
    os.symlink(tmp_path / "nowhere", folder / "encoder" / "zz-dangling")  # the copy fails on it
    with pytest.raises(bertfeat.BertfeatError, match="cannot write"):
        clf.save(str(tmp_path / "broken"))
    assert not (tmp_path / "broken").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-model-")]


@pytest.mark.parametrize("where", ["symlink", "absolute", "dotdot", "encoder-entry"])
def test_a_finetuned_encoder_outside_the_model_folder_is_refused(where, saved, tiny_bert, tmp_path):
    import bertfeat
    from bertfeat.errors import ModelFolderError

    folder = _finetuned_folder(saved, tiny_bert, tmp_path, link=where == "symlink")
    if where != "symlink":
        path = folder / "manifest.json"
        manifest = json.load(open(path))
        outside = str(tmp_path / "outside") if where != "dotdot" else "../outside"
        if where == "encoder-entry":
            manifest["encoders"][0]["model"] = outside
        else:
            manifest["encoder_folder"] = outside
        json.dump(manifest, open(path, "w"))
    with pytest.raises(ModelFolderError, match="outside the folder"):
        bertfeat.load(str(folder))


def test_a_symlinked_encoder_is_one_error_line_from_the_cli(saved, tiny_bert, tmp_path):
    folder = _finetuned_folder(saved, tiny_bert, tmp_path, link=True)
    proc = run_main("predict", "--model-dir", folder, "--text", "hi")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "outside the folder" in errors[0]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"])
def test_a_malformed_run_json_is_ignored_with_a_warning(content, saved, tmp_path, caplog):
    """run.json only records how the model was trained; predicting needs the head and manifest (both
    checked), so a broken run.json costs a warning, not the model."""
    from bertfeat.classify import load_model_dir

    folder = _copy(saved["logreg"][0], tmp_path)
    _plant(folder, "run.json", content)
    with caplog.at_level(logging.WARNING, logger="bertfeat"):
        _, head, run = load_model_dir(str(folder))
    assert run == {} and "run.json is not a JSON object" in caplog.text
    assert list(head.classes_) == ["a", "b", "c"]

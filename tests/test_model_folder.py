"""Model folders: portable across machines, loaded without pickle, used from Python (bertfeat.load) and by
`predict`, pairs included. Real model, real files; the CLI in-process (run_main), and in real processes where
the point is another machine (no bf16, no OpenVINO: settings a process reads once) or a clean exit code."""
import hashlib
import json
import os
import pickle
import shutil
import threading

import numpy as np
import pytest

from conftest import DEMO_TEST, DEMO_TRAIN, main_json, run_cli, run_main

N_TRAIN, N_TEST = 120, 40


def _slice(path, source, start, stop, transform=None):
    """Rows [start, stop) of a demo CSV (the demo files are sorted by nothing: every slice has every class)."""
    import pandas as pd

    frame = pd.read_csv(source).iloc[start:stop]
    if transform is not None:
        frame = transform(frame)
    frame.to_csv(path, index=False)
    return str(path)


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _notices(proc):
    return [line for line in proc.stderr.splitlines() if "note:" in line]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return _slice(folder / "train.csv", DEMO_TRAIN, 0, N_TRAIN), _slice(folder / "test.csv", DEMO_TEST, 0, N_TEST)


@pytest.fixture(scope="module")
def bf16_model(data, tmp_path_factory):
    """logreg fit with the default precision on a CPU with native bf16 (simulated where this one lacks it):
    vectors in bf16 on OpenVINO, as on the machines the README's figures come from."""
    folder = tmp_path_factory.mktemp("bf16")
    fitted = main_json("fit", "--train", data[0], "--test", data[1], "--out", folder / "m", cache=folder / "c",
                       env={"BERTFEAT_CPU_BF16": "1"})
    manifest = json.load(open(folder / "m" / "manifest.json"))
    assert manifest["trained_with"]["precision"] == "bf16" and manifest["trained_with"]["runtime"] == "openvino"
    return fitted["model_dir"], folder / "c"


def _predict(monkeypatch, model_dir, cache, *flags, **env):
    for name, value in {"BERTFEAT_CPU_BF16": "1", **env}.items():
        monkeypatch.setenv(name, value)
    # A process looks for OpenVINO once: a machine without it needs a process of its own.
    run = run_cli if "BERTFEAT_OPENVINO" in env else run_main
    return run("predict", "--model-dir", model_dir, *flags, "--json", "--quiet", cache=cache, check=0)


def test_model_folder_moves_to_a_cpu_without_bf16_or_openvino(bf16_model, data, monkeypatch):
    model_dir, cache = bf16_model
    same = _predict(monkeypatch, model_dir, cache, "--data", data[1])
    assert not _notices(same)  # the training machine: nothing to say
    labels = [r["label"] for r in json.loads(same.stdout)]
    for flags, env, here in [((), {"BERTFEAT_CPU_BF16": "0"}, "fp32 (torch"),
                             ((), {"BERTFEAT_OPENVINO": "0"}, "bf16 (torch"),
                             (("--precision", "fp32"), {}, "fp32 (torch")]:
        proc = _predict(monkeypatch, model_dir, cache, "--data", data[1], *flags, **env)
        (notice,) = _notices(proc)
        assert proc.stderr.strip().splitlines() == [notice], proc.stderr  # one line, nothing else
        assert "bf16 vectors (openvino on cpu)" in notice and here in notice and "0.9999" in notice, notice
        other = [r["label"] for r in json.loads(proc.stdout)]
        # bf16 vs fp32 vectors agree at cosine >= 0.9999: at most one borderline text of 40 may move
        assert sum(a != b for a, b in zip(labels, other)) <= 1, (flags, env)
        monkeypatch.delenv("BERTFEAT_OPENVINO", raising=False)


def test_predict_refuses_a_model_whose_tokenizer_changed(tiny_bert, data, tmp_path):
    model = tmp_path / "tiny"
    shutil.copytree(tiny_bert, model)
    fit = main_json("fit", "--train", data[0], "--test", data[1], "--model", model, "--precision", "fp32",
                   "--out", tmp_path / "m", "--cache-dir", tmp_path / "c")
    rows = main_json("predict", "--model-dir", fit["model_dir"], "--text", "hello", "--cache-dir", tmp_path / "c")
    assert len(rows) == 1
    config_path = model / "tokenizer_config.json"
    config = json.load(open(config_path))
    config["do_lower_case"] = not config.get("do_lower_case", True)
    json.dump(config, open(config_path, "w"))
    _one_line_error(run_main("predict", "--model-dir", fit["model_dir"], "--text", "hello", "--cache-dir",
                            tmp_path / "c"), "not the one this head was trained on", "tokenizer")


def test_old_model_format_is_one_line_error(bf16_model, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(bf16_model[0], copy)
    manifest = json.load(open(copy / "manifest.json"))
    manifest["format"] = 2
    json.dump(manifest, open(copy / "manifest.json", "w"))
    _one_line_error(run_main("predict", "--model-dir", copy, "--text", "hi"), "model format 2", "fit the model again")


# -- persistence without pickle ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["knn", "lda", "lgbm", "logreg", "mlp", "sgd", "svm", "torch", "vote"])
def test_heads_of_plain_arrays_are_saved_without_pickle(name, demo_vectors, tmp_path):
    from bertfeat.model_folder import model_manifest
    from bertfeat.classify import load_model_dir, make_head, save_model_dir
    from bertfeat.extract import BertEncoder

    X_train, y_train, X_test, _ = demo_vectors
    head = make_head(name).fit(X_train, np.asarray(y_train))
    out = save_model_dir(str(tmp_path / "m"), head, model_manifest([BertEncoder()], name, "mean", head.classes_), {})
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    pickled = name == "lgbm"  # a LightGBM booster is not plain arrays
    assert manifest["head_file"] == ("head.joblib" if pickled else "head.npz")
    _, loaded, _ = load_model_dir(out, trust_pickle=pickled)
    np.testing.assert_allclose(loaded.predict_proba(X_test), head.predict_proba(X_test), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(X_test), head.predict(X_test))
    if not pickled:
        with open(os.path.join(out, "head.npz"), "rb") as fh:
            assert b"pickle" not in fh.read().lower()  # no object arrays inside


def test_an_object_held_in_several_places_is_stored_once(demo_vectors):
    """A bench ensemble holds each fitted member as a parameter and as a fitted attribute of its wrappers;
    stored once per place, a Banking77 vote's head.npz was 1.7 GB."""
    from bertfeat.classify import make_head, persist
    from bertfeat.classify.calibration import Calibrated
    from bertfeat.classify.ensemble import SoftVote

    X_train, y_train, X_test, _ = demo_vectors
    knn = make_head("knn").fit(X_train, np.asarray(y_train))  # holds every training row
    one = persist.dumps(Calibrated.from_fitted(knn, 1.0))
    vote = SoftVote.from_fitted([("a", Calibrated.from_fitted(knn, 1.0)), ("b", Calibrated.from_fitted(knn, 2.0))],
                                [0.5, 0.5])
    both = persist.dumps(vote)
    assert X_train.nbytes < len(one) and len(both) < len(one) + X_train.nbytes / 10
    loaded = persist.loads(both)
    assert loaded.estimators_[0].estimator_ is loaded.estimators_[1].estimator_ is loaded.estimators[0][1].estimator
    np.testing.assert_allclose(loaded.predict_proba(X_test), vote.predict_proba(X_test), rtol=0, atol=1e-12)


class _Plant:
    """Unpickling this runs os.mkdir(marker): the code execution a planted head.joblib gets."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _plant(folder, name, marker):
    """Put a malicious pickle in ``folder`` as ``name`` and rewrite the manifest to match, as an attacker can."""
    data = pickle.dumps(_Plant(str(marker)))
    for old in ("head.npz", "head.joblib"):
        if os.path.exists(folder / old):
            os.remove(folder / old)
    (folder / name).write_bytes(data)
    manifest = json.load(open(folder / "manifest.json"))
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("head.")}
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    manifest["head_file"] = name
    json.dump(manifest, open(folder / "manifest.json", "w"))


def test_a_planted_pickle_with_a_matching_manifest_runs_only_with_trust_pickle(bf16_model, tmp_path):
    import bertfeat

    copy, marker = tmp_path / "planted", tmp_path / "pwned"
    shutil.copytree(bf16_model[0], copy)
    _plant(copy, "head.joblib", marker)
    _one_line_error(run_main("predict", "--model-dir", copy, "--text", "hi"), "pickle", "--trust-pickle")
    with pytest.raises(bertfeat.BertfeatError, match="trust_pickle=True"):
        bertfeat.load(str(copy))
    assert not marker.exists()
    # Under the name of a safe head, the same bytes are refused, never unpickled.
    _plant(copy, "head.npz", marker)
    _one_line_error(run_main("predict", "--model-dir", copy, "--text", "hi"), "head.npz", "not a head")
    assert not marker.exists()
    # The flag is what stands between the folder and code execution: with it, the plant runs.
    _plant(copy, "head.joblib", marker)
    from bertfeat.classify import load_model_dir

    load_model_dir(str(copy), trust_pickle=True)
    assert marker.exists()


def test_a_pickled_head_needs_trust_pickle_on_predict(demo_vectors, tmp_path):
    from bertfeat.model_folder import model_manifest
    from bertfeat.classify import make_head, save_model_dir
    from bertfeat.extract import BertEncoder

    X_train, y_train, _, _ = demo_vectors
    head = make_head("lgbm").fit(X_train, np.asarray(y_train))
    out = save_model_dir(str(tmp_path / "m"), head, model_manifest([BertEncoder()], "lgbm", "mean", head.classes_), {})
    _one_line_error(run_main("predict", "--model-dir", out, "--text", "my parcel is late", cache=tmp_path / "c"),
                    "'lgbm' head is a pickle", "--trust-pickle")
    rows = main_json("predict", "--model-dir", out, "--text", "my parcel is late", "--trust-pickle",
                    cache=tmp_path / "c")
    assert rows[0]["label"] == "delivery"


def test_a_changed_head_file_is_refused_from_the_bytes_it_would_load(bf16_model, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(bf16_model[0], copy)
    with open(copy / "head.npz", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01")
    _one_line_error(run_main("predict", "--model-dir", copy, "--text", "hi"), "head.npz does not match the checksum")


# -- the Python API ------------------------------------------------------------------------------
def test_load_predicts_like_the_cli_is_thread_safe_and_saves(bf16_model, data, tmp_path, monkeypatch):
    import bertfeat
    from bertfeat.extract import read_table

    monkeypatch.setenv("BERTFEAT_CPU_BF16", "1")  # the training machine
    model_dir, cache = bf16_model
    cli_rows = main_json("predict", "--model-dir", model_dir, "--data", data[1], cache=cache)
    texts = read_table(data[1]).texts
    clf = bertfeat.load(model_dir)
    assert list(clf.classes_) == ["account", "billing", "delivery", "returns", "technical"]
    labels = clf.predict(texts)
    assert list(labels) == [r["label"] for r in cli_rows]
    proba = clf.predict_proba(texts[:5])
    assert proba.shape == (5, 5) and np.allclose(proba.sum(1), 1)
    # A web server: many threads, one loaded encoder, the same answers.
    results, errors = {}, []

    def worker(i):
        try:
            results[i] = list(clf.predict(texts[i::4]))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results[i] == list(labels[i::4]) for i in range(4))
    saved = clf.save(str(tmp_path / "copy"))
    assert list(bertfeat.load(saved).predict(texts)) == list(labels)


def _pair_frame(frame):
    """The label lives in the pair column; the text column is a channel name that says nothing."""
    return frame.assign(channel=["email", "chat"] * (len(frame) // 2) + ["email"] * (len(frame) % 2),
                        message=frame["text"])[["channel", "message", "label"]]


def test_predict_uses_the_pair_of_a_pair_model(tmp_path):
    train = _slice(tmp_path / "train.csv", DEMO_TRAIN, 0, N_TRAIN, _pair_frame)
    test = _slice(tmp_path / "test.csv", DEMO_TEST, 0, N_TEST, _pair_frame)
    fit = main_json("fit", "--train", train, "--test", test, "--text-col", "channel", "--pair-col", "message",
                   "--out", tmp_path / "m", cache=tmp_path / "c")
    assert fit["accuracy"] > 0.8
    rows = main_json("predict", "--model-dir", fit["model_dir"], "--data", test, cache=tmp_path / "c")
    assert sum(r["label"] == r["true_label"] for r in rows) / len(rows) == fit["accuracy"]
    rows = main_json("predict", "--model-dir", fit["model_dir"], "--text", "email", "--pair",
                    "my parcel is two weeks late", "--text", "email", "--pair", "I forgot my password",
                    cache=tmp_path / "c")
    assert [r["label"] for r in rows] == ["delivery", "account"]
    _one_line_error(run_main("predict", "--model-dir", fit["model_dir"], "--text", "email", cache=tmp_path / "c"),
                    "trained on text pairs", "'message'", "--pair")
    _one_line_error(run_main("predict", "--model-dir", fit["model_dir"], "--text", "a", "--text", "b", "--pair", "c",
                            cache=tmp_path / "c"), "2 --text but 1 --pair")
    import bertfeat

    clf = bertfeat.load(fit["model_dir"])
    rows = [("email", "my parcel is two weeks late"), ("chat", "I forgot my password")]
    assert list(clf.predict(rows)) == ["delivery", "account"]
    assert list(clf.predict(["email", "chat"], pairs=[b for _, b in rows])) == ["delivery", "account"]
    with pytest.raises(bertfeat.BertfeatError, match="trained on text pairs"):
        clf.predict(["email"])


def test_predict_keeps_a_precision_asked_for_at_training_where_this_machine_runs_it():
    from bertfeat.model_folder import _default_precision

    def trained(asked):
        return {"precision": asked, "runtime": "torch", "device": "cuda", "precision_asked": asked}

    assert _default_precision(trained("int8"), "cpu") == "int8"  # opt-in speed stays opted in
    assert _default_precision(trained("fp32"), "cpu") == "fp32"
    assert _default_precision(trained("fp16"), "cpu") == "auto"  # a GPU precision: the CPU's best instead
    assert _default_precision(trained("auto"), "cpu") == "auto"

"""Heads, metrics and model folders, on real default-model vectors of the demo data."""
import json
import os

import numpy as np
import pytest

from bertfeat.classify import HEADS, evaluate, format_report, load_head, make_head, read_manifest, save_model_dir
from bertfeat.errors import BertfeatError


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_registered_head_fits_and_predicts(name, demo_vectors):
    X_train, y_train, X_test, y_test = demo_vectors
    head = make_head(name, seed=0).fit(X_train, np.asarray(y_train))
    proba = head.predict_proba(X_test)
    assert proba.shape == (len(X_test), len(set(y_train)))
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    pred = head.predict(X_test)
    assert list(pred) == [head.classes_[i] for i in proba.argmax(1)]
    assert evaluate(y_test, pred)["accuracy"] > 0.7  # 5 balanced classes: chance is 0.2


@pytest.mark.parametrize("n_classes", [2, 5])
def test_svm_decision_values_match_libsvm(n_classes, demo_vectors):
    """The BLAS decision function must reproduce libsvm's own, one-vs-one pairing and signs included."""
    from sklearn.svm import SVC

    from bertfeat.classify.heads import SoftmaxSVC

    X_train, y_train, X_test, _ = demo_vectors
    y_train = np.asarray(y_train)
    keep = np.isin(y_train, sorted(set(y_train))[:n_classes])
    svc = SoftmaxSVC(C=3.0, gamma="scale").fit(X_train[keep], y_train[keep])
    ours, libsvm = svc.decision_function(X_test), SVC.decision_function(svc, X_test)
    assert ours.shape == libsvm.shape == ((len(X_test),) if n_classes == 2 else (len(X_test), n_classes))
    np.testing.assert_allclose(ours, libsvm, atol=1e-8)


def test_unknown_head_lists_the_registry():
    with pytest.raises(BertfeatError, match="unknown head 'svm9'; expected one of: " + ", ".join(sorted(HEADS))):
        make_head("svm9")


def test_metrics_on_a_worked_example():
    m = evaluate(["a", "a", "b", "c"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.5
    assert m["labels"] == ["a", "b", "c"]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert m["per_class"]["c"]["recall"] == 0.0  # never predicted: counted as an error
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert "macro avg" in format_report(m) and "support" in format_report(m)


def _manifest(head):
    """The manifest fit writes for ``head`` on the default encoder's mean vectors."""
    from bertfeat.model_folder import model_manifest
    from bertfeat.extract import BertEncoder

    return model_manifest([BertEncoder()], "logreg", "mean", head.classes_)


def test_model_folder_round_trip_and_tamper_check(tmp_path, demo_vectors):
    X_train, y_train, X_test, _ = demo_vectors
    head = make_head("logreg").fit(X_train, np.asarray(y_train))
    out = save_model_dir(str(tmp_path / "m"), head, _manifest(head), {"settings": {}})
    manifest = read_manifest(out)
    assert set(manifest["files"]) == {"head.npz", "run.json"} and manifest["head_file"] == "head.npz"
    np.testing.assert_array_equal(load_head(out, manifest).predict(X_test), head.predict(X_test))
    with pytest.raises(BertfeatError, match="exists and is not (an )?empty"):
        save_model_dir(out, head, {}, {})
    with open(os.path.join(out, "head.npz"), "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(BertfeatError, match="head.npz does not match the checksum"):
        load_head(out, read_manifest(out))  # the head is checked on the bytes it is loaded from
    with open(os.path.join(out, "run.json"), "a") as fh:
        fh.write(" ")
    with pytest.raises(BertfeatError, match="run.json does not match the checksum"):
        read_manifest(out)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    from bertfeat.classify.model_dir import FORMAT

    assert json.load(open(os.path.join(out, "manifest.json")))["format"] == FORMAT == 4


def test_a_model_folder_of_another_format_is_refused_in_one_line(tmp_path, demo_vectors):
    X_train, y_train, _, _ = demo_vectors
    head = make_head("logreg").fit(X_train, np.asarray(y_train))
    out = save_model_dir(str(tmp_path / "m"), head, _manifest(head), {})
    path = os.path.join(out, "manifest.json")
    manifest = json.load(open(path))
    json.dump({**manifest, "format": 1}, open(path, "w"))
    with pytest.raises(BertfeatError, match="model format 1, this one reads 3 and 4\\); fit the model again"):
        read_manifest(out)
    # A format-3 folder: its head.npz tree has no object ids (nor references) and still loads.
    from bertfeat.cache import sha256_file

    head_path = os.path.join(out, "head.npz")
    with np.load(head_path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    tree = json.loads(arrays["state.json"].tobytes().decode())
    assert '"ref"' not in json.dumps(tree) and _without_ids(tree) != tree
    arrays["state.json"] = np.frombuffer(json.dumps(_without_ids(tree)).encode(), dtype=np.uint8)
    with open(head_path, "wb") as fh:
        np.savez(fh, **arrays)
    json.dump({**manifest, "format": 3, "files": {**manifest["files"], "head.npz": sha256_file(head_path)}},
              open(path, "w"))
    np.testing.assert_allclose(load_head(out, read_manifest(out)).predict_proba(X_train), head.predict_proba(X_train))


def _without_ids(node):
    """A head.npz state tree as format 3 wrote it: object nodes without an ``id``."""
    if isinstance(node, list):
        return [_without_ids(v) for v in node]
    if isinstance(node, dict):
        return {k: _without_ids(v) for k, v in node.items() if not (k == "id" and "object" in node)}
    return node

"""Multi-label heads in a head file: every kind saves without pickle and predicts the same after loading;
a crafted or fuzzed file is refused in one line or still gives one probability per label, never NaN and
never a crash. The file helpers and the mutations are test_head_file.py's and test_head_fuzz.py's."""
import copy
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from test_head_file import _manifest, _npz
from test_head_fuzz import _mutate

KINDS = ("logreg", "lda", "svm", "vote", "sigmoid0", "sigmoid16", "neighbours")
LABELS = ["anger", "joy", "fear", "never"]  # "never": no training row has it, so one-vs-rest gives it no member


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    Y = (rng.random((60, len(LABELS))) < 0.4).astype(np.int8)
    Y[:, 3] = 0
    return X, Y, rng.normal(size=(10, 8)).astype(np.float32)


def _estimator(kind: str):
    from bertfeat.classify.multilabel import NeighbourLabels, SigmoidNet, multi_head

    if kind.startswith("sigmoid"):
        return SigmoidNet(hidden=int(kind[len("sigmoid"):]), epochs=5, min_steps=0, batch_size=16)
    return NeighbourLabels(n_neighbors=5) if kind == "neighbours" else multi_head(kind)


def _wrapped(estimator, X, Y):
    """``estimator`` fitted and wrapped with a Platt scaling and thresholds chosen on its training rows."""
    from bertfeat.classify.multilabel import MultiLabel, platt
    from bertfeat.classify.thresholds import per_label_thresholds

    estimator.fit(X, Y)
    P = estimator.predict_proba(X)
    calibration = platt(P, Y)
    return MultiLabel(estimator, list(LABELS), calibration, per_label_thresholds(P, Y), at_least_one=True)


@pytest.fixture(scope="module")
def heads(data):
    X, Y, _ = data
    return {kind: _wrapped(_estimator(kind), X, Y) for kind in KINDS}


def _roundtrip(head):
    from bertfeat.classify import persist

    return persist.loads(persist.dumps(head))


@pytest.mark.parametrize("kind", KINDS)
def test_every_multi_label_head_saves_without_pickle_and_predicts_the_same(kind, heads, data):
    head = heads[kind]
    loaded = _roundtrip(head)
    assert type(loaded.estimator) is type(head.estimator)
    assert loaded.classes_.tolist() == LABELS and loaded.at_least_one is True
    proba = loaded.predict_proba(data[2])
    np.testing.assert_array_equal(proba, head.predict_proba(data[2]))  # bit for bit
    assert proba.shape == (10, len(LABELS)) and not np.allclose(proba.sum(1), 1)  # per label, not per row
    np.testing.assert_array_equal(loaded.predict(data[2]), head.predict(data[2]))
    assert set(np.unique(loaded.predict(data[2]))) <= {0, 1}


def test_a_bare_multi_label_estimator_saves_too(heads, data):
    est = heads["sigmoid16"].estimator
    np.testing.assert_array_equal(_roundtrip(est).predict_proba(data[2]), est.predict_proba(data[2]))


def test_a_model_folder_of_one_vs_rest_holds_no_pickle(heads, data, tmp_path):
    from bertfeat.classify import load_model_dir, save_model_dir

    head = heads["svm"]
    folder = save_model_dir(str(tmp_path / "m"), head, _manifest(head), {"n": 1})
    assert (tmp_path / "m" / "head.npz").exists() and not (tmp_path / "m" / "head.joblib").exists()
    np.testing.assert_array_equal(load_model_dir(folder)[1].predict_proba(data[2]), head.predict_proba(data[2]))


def test_one_vs_rest_over_lgbm_is_pickled_behind_trust_pickle(data, tmp_path):
    from bertfeat.classify import load_model_dir, persist, save_model_dir
    from bertfeat.errors import ModelFolderError

    head = _wrapped(_estimator("lgbm"), data[0], data[1])
    with pytest.raises(persist.Unsupported, match="LGBMClassifier"):
        persist.dumps(head)
    folder = save_model_dir(str(tmp_path / "m"), head, _manifest(head), {"n": 1})
    with pytest.raises(ModelFolderError, match="trust_pickle"):
        load_model_dir(folder)
    np.testing.assert_array_equal(load_model_dir(folder, trust_pickle=True)[1].predict_proba(data[2]),
                                  head.predict_proba(data[2]))


# -- crafted heads: each changes a fitted head in memory, as a crafted file would hold it ----------
def _member_of_3_classes(head, X, Y):
    from sklearn.linear_model import LogisticRegression

    head.estimator.estimators_[0] = LogisticRegression().fit(X, np.arange(len(X)) % 3)


def _member_of_other_labels(head, X, Y):
    from sklearn.linear_model import LogisticRegression

    head.estimator.estimators_[0] = LogisticRegression().fit(X, np.where(Y[:, 0], "yes", "no"))


def _member_of_other_width(head, X, Y):
    from sklearn.linear_model import LogisticRegression

    head.estimator.estimators_[1] = LogisticRegression().fit(X[:, :4], Y[:, 1])


def _no_member_where_prior_is_not_constant(head, X, Y):
    head.estimator.estimators_[0] = None
    head.estimator.prior_[0] = 0.3


def _member_where_prior_is_constant(head, X, Y):
    head.estimator.prior_[0] = 1.0


def _prior_for_other_labels(head, X, Y):
    head.estimator.prior_ = head.estimator.prior_[:-1]


def _single_label_estimator(head, X, Y):
    from sklearn.linear_model import LogisticRegression

    head.estimator = LogisticRegression().fit(X, np.arange(len(X)) % 4)


def _short_thresholds(head, X, Y):
    head.thresholds = head.thresholds[:-1]


def _thresholds_above_one(head, X, Y):
    head.thresholds[0] = 1.5


def _nan_calibration(head, X, Y):
    head.calibration[1, 0] = np.nan


def _calibration_of_other_shape(head, X, Y):
    head.calibration = head.calibration[:, :1]


def _repeated_class(head, X, Y):
    head.classes = ["anger", "anger", "fear", "never"]


def _broken_layer_chain(head, X, Y):
    head.estimator.coefs_[1] = head.estimator.coefs_[1][:-1]  # 15 inputs after a hidden layer of 16


def _bias_of_other_width(head, X, Y):
    head.estimator.intercepts_[0] = head.estimator.intercepts_[0][:-1]


def _three_layers(head, X, Y):
    net = head.estimator
    net.coefs_.append(np.eye(len(LABELS), dtype=np.float32))
    net.intercepts_.append(np.zeros(len(LABELS), np.float32))


def _zero_scale(head, X, Y):
    head.estimator.scale_[2] = 0


def _float64_weights(head, X, Y):
    head.estimator.coefs_[0] = head.estimator.coefs_[0].astype(np.float64)


def _labels_not_0_1(head, X, Y):
    head.estimator.labels_[3, 1] = 2


def _labels_of_other_rows(head, X, Y):
    head.estimator.labels_ = head.estimator.labels_[:-1]


def _long_vectors(head, X, Y):
    head.estimator.vectors_ = head.estimator.vectors_ * 1e6


def _no_neighbours(head, X, Y):
    head.estimator.n_neighbors = 0


def _unknown_attribute(head, X, Y):
    head.estimator.bogus = 1


def _vote_members_of_other_labels(head, X, Y):
    head.estimator.estimators_[1] = _estimator("sigmoid0").fit(X, Y[:, :3])


def _vote_without_members(head, X, Y):
    head.estimator.estimators_ = []


CRAFTED = [("logreg", _member_of_3_classes, "has 3 classes, not 2"),
           ("vote", _vote_members_of_other_labels, "members differ in vector width or labels"),
           ("vote", _vote_without_members, "it has no member"),
           ("logreg", _member_of_other_labels, r"classes \['no', 'yes'\], not \[0, 1\]"),
           ("lda", _member_of_other_width, "different widths"),
           ("logreg", _no_member_where_prior_is_not_constant, "label 0 has no member but its prior_ 0.3"),
           ("logreg", _member_where_prior_is_constant, "label 0 has a member but its prior_ 1"),
           ("svm", _prior_for_other_labels, "members for 3 labels"),
           ("logreg", _single_label_estimator, "not a fitted multi-label head"),
           ("logreg", _short_thresholds, r"thresholds has shape \(3,\), expected \(4,\)"),
           ("sigmoid0", _thresholds_above_one, r"thresholds are not numbers within \[0, 1\]"),
           ("neighbours", _nan_calibration, "NaN"),
           ("sigmoid0", _calibration_of_other_shape, r"calibration has shape \(4, 1\)"),
           ("lda", _repeated_class, "not 4 distinct labels"),
           ("sigmoid16", _broken_layer_chain, "layer 1 .* does not chain 16 -> 4"),
           ("sigmoid0", _bias_of_other_width, "layer 0 .* does not chain 8 -> 4"),
           ("sigmoid16", _three_layers, "3 weight and 3 bias layers for hidden=16"),
           ("sigmoid0", _zero_scale, "scale_ is not positive"),
           ("sigmoid0", _float64_weights, "not float32"),
           ("neighbours", _labels_not_0_1, "labels_ is not a 0/1 indicator"),
           ("neighbours", _labels_of_other_rows, r"labels_ has shape \(59, 4\), expected \(60, 4\)"),
           ("neighbours", _long_vectors, "longer than unit vectors"),
           ("neighbours", _no_neighbours, "n_neighbors 0"),
           ("neighbours", _unknown_attribute, r"NeighbourLabels has attributes it never holds \(bogus\)")]


@pytest.mark.parametrize("kind,craft,words", CRAFTED, ids=[c[1].__name__[1:] for c in CRAFTED])
def test_a_crafted_multi_label_head_is_refused_in_one_line(kind, craft, words, heads, data):
    from bertfeat.classify import persist

    head = copy.deepcopy(heads[kind])
    craft(head, data[0], data[1])
    blob = persist.dumps(head)  # saving checks nothing: the file is what a crafter would write
    with pytest.raises(ValueError, match=words) as caught:
        persist.loads(blob)
    assert "\n" not in str(caught.value)


def test_a_multi_label_head_is_no_member_of_a_single_label_vote(heads):
    """A vote's argmax over per-label probabilities would pick one label as if they summed to 1."""
    from bertfeat.classify import persist
    from bertfeat.classify.ensemble import SoftVote

    vote = SoftVote.from_fitted([("a", heads["logreg"]), ("b", heads["neighbours"])], [1.0, 1.0])
    vote.classes_ = np.array(LABELS)
    with pytest.raises(ValueError, match="member MultiLabel is not a fitted classifier of one label per row"):
        persist.loads(persist.dumps(vote))


# -- fuzzing ---------------------------------------------------------------------------------------
def _parts(blob: bytes):
    with np.load(io.BytesIO(blob)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(arrays.pop("state.json").tobytes()), arrays


def _mutant(head, rnd) -> bytes:
    from bertfeat.classify import persist

    tree, arrays = _parts(persist.dumps(head))
    blob = _mutate(rnd, tree, arrays)
    return blob if blob is not None else _npz(tree, arrays)


def _assert_label_probabilities(proba, rows: int, labels: int):
    proba = np.asarray(proba)
    assert proba.shape == (rows, labels) and np.isfinite(proba).all(), proba
    assert ((proba >= 0) & (proba <= 1)).all(), proba


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(kind=st.sampled_from(KINDS), rnd=st.randoms(use_true_random=False))
def test_fuzzed_multi_label_head_files_load_as_a_head_or_are_refused_in_one_line(kind, rnd, heads, data):
    """A loaded mutant may predict other numbers (the file says so), but one probability per label of
    its own, each within [0, 1], and a 0/1 decision."""
    from bertfeat.classify import persist

    try:
        head = persist.loads(_mutant(heads[kind], rnd))
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    with np.errstate(all="ignore"):
        _assert_label_probabilities(head.predict_proba(data[2]), len(data[2]), len(head.classes_))
        assert set(np.unique(head.predict(data[2]))) <= {0, 1}


# Loads head files named on the command line and prints the probabilities on float32 rows of 8 read from
# stdin, or "refused:".
_PREDICT = """
import sys, numpy as np
from bertfeat.classify import persist
X = np.frombuffer(sys.stdin.buffer.read(), np.float32).reshape(-1, 8)
for path in sys.argv[1:]:
    try:
        head = persist.loads(open(path, "rb").read())
    except ValueError as exc:
        print("refused:", str(exc).replace(chr(10), " "), flush=True)
        continue
    print(repr(head.predict_proba(X).tolist()), len(head.classes_), flush=True)
"""


def test_fuzzed_multi_label_head_files_never_crash_the_process(heads, data, tmp_path):
    """The same mutations in a separate process: a segfault in compiled code (libsvm under a one-vs-rest
    svm) would show as a negative exit code, where in-process it would take pytest down."""
    import random

    rnd = random.Random(1)
    paths = []
    for i in range(24):
        path = tmp_path / f"{i}.npz"
        path.write_bytes(_mutant(heads[KINDS[i % len(KINDS)]], rnd))
        paths.append(str(path))
    proc = subprocess.run([sys.executable, "-c", _PREDICT, *paths], input=data[2].tobytes(), cwd=ROOT,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(paths) and any(line.startswith("refused: ") for line in lines)
    for line in lines:
        if not line.startswith("refused: "):
            proba, labels = line.rsplit(" ", 1)
            _assert_label_probabilities(eval(proba), len(data[2]), int(labels))

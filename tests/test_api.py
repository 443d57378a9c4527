"""The Python API, in-process: bertfeat.fit / bench / embed / load, TextClassifier as a scikit-learn
estimator, typed errors, and the command line as a thin adapter over the same calls."""
import copy
import json
import os
import pickle
import time

import numpy as np
import pandas as pd
import pytest

import bertfeat
from bertfeat.cli import main
from conftest import DEMO_BENCH, DEMO_TEST, DEMO_TRAIN, ROOT


def _texts(path):
    return pd.read_csv(path).text.tolist()


def test_fit_on_a_dataframe_predicts_as_the_cli_does(cache, tmp_path, capsys):
    clf = bertfeat.fit(pd.read_csv(DEMO_TRAIN), test=DEMO_TEST, head="logreg", progress=False)
    texts = _texts(DEMO_TEST)
    labels = clf.predict(texts)
    out = tmp_path / "m"
    assert main(["fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--head", "logreg", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", "--model-dir", str(out), "--data", DEMO_TEST, "--json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in rows] == list(labels)
    assert clf.report_["accuracy"] > 0.8


def test_a_classifier_pickles_deep_copies_and_clones(cache):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    texts = _texts(DEMO_TEST)
    clf = bertfeat.fit(DEMO_TRAIN, DEMO_TEST, head="svm", features="mean+max", progress=False)
    want = clf.predict(texts)
    assert list(pickle.loads(pickle.dumps(clf)).predict(texts)) == list(want)
    assert list(copy.deepcopy(clf).predict(texts)) == list(want)
    fresh = clone(clf)
    assert fresh.get_params(deep=False)["head"] == "svm" and fresh.get_params()["features"] == "mean+max"
    assert not hasattr(fresh, "head_")
    with pytest.raises(NotFittedError):
        fresh.predict(texts)
    assert "head='svm'" in repr(clf) and "0x" not in repr(clf)


def test_a_loaded_folder_pickles_and_predicts_the_same(cache, tmp_path):
    texts = _texts(DEMO_TEST)
    clf = bertfeat.fit(DEMO_TRAIN, DEMO_TEST, progress=False)
    folder = clf.save(str(tmp_path / "m"))
    loaded = bertfeat.load(folder)
    assert list(loaded.predict(texts)) == list(clf.predict(texts))
    assert list(pickle.loads(pickle.dumps(loaded)).predict(texts)) == list(clf.predict(texts))


def test_grid_search_over_heads(cache):
    from sklearn.model_selection import GridSearchCV

    train = pd.read_csv(DEMO_TRAIN)
    search = GridSearchCV(bertfeat.TextClassifier(), {"head": ["logreg", "svm"]}, cv=3)
    search.fit(train.text.tolist(), train.label.tolist())
    assert search.best_params_["head"] in ("logreg", "svm")
    assert 0.7 < search.best_score_ <= 1.0


def test_integer_labels_come_back_as_integers(cache, tmp_path):
    train = pd.read_csv(DEMO_TRAIN)
    codes = {name: i for i, name in enumerate(sorted(set(train.label)))}
    train["label"] = train.label.map(codes)
    clf = bertfeat.TextClassifier().fit(train.text.tolist(), train.label.tolist())
    assert clf.classes_.dtype.kind == "i"
    pred = clf.predict(_texts(DEMO_TEST))
    assert isinstance(pred[0].item(), int)
    loaded = bertfeat.load(clf.save(str(tmp_path / "m")))
    assert loaded.classes_.dtype.kind == "i" and list(loaded.predict(_texts(DEMO_TEST))) == list(pred)


def test_bench_returns_a_table_a_best_model_and_a_folder_predict_reads(cache, tmp_path, capsys):
    res = bertfeat.bench(DEMO_TRAIN, DEMO_TEST, heads="logreg,lda", features="mean", progress=False)
    assert isinstance(res.table, pd.DataFrame)
    assert {"head", "features", "round", "cv_score", "accuracy", "macro_f1", "log_loss", "ece"} <= set(res.table)
    assert sorted(res.table["head"]) == ["lda", "logreg"]
    texts = _texts(DEMO_TEST)
    labels = res.best.predict(texts)
    out = res.save(str(tmp_path / "bench"))
    assert {"results.md", "results.json", "best-model"} <= set(os.listdir(out))
    assert main(["predict", "--model-dir", os.path.join(out, "best-model"), "--data", DEMO_TEST, "--json",
                 "--quiet"]) == 0
    assert [r["label"] for r in json.loads(capsys.readouterr().out)] == list(labels)


@DEMO_BENCH
def test_default_bench_marks_screened_rows_apart(demo_bench):
    res, _ = demo_bench  # bertfeat.bench(DEMO_TRAIN, DEMO_TEST), run once for the session
    rounds = set(res.table["round"])
    assert rounds <= {"full", "screened"} and "full" in rounds
    screened = res.table[res.table["round"] == "screened"]
    assert screened["accuracy"].isna().all()


def test_embed_returns_the_cached_vectors(cache):
    texts = _texts(DEMO_TEST)
    vectors = bertfeat.embed(texts, progress=False)
    assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
    assert np.array_equal(bertfeat.embed(DEMO_TEST, progress=False), vectors)


def test_options_are_checked_with_typed_errors_naming_the_parameter(cache):
    with pytest.raises(bertfeat.ConfigError, match="cv=1"):
        bertfeat.fit(DEMO_TRAIN, select="accuracy", cv=1)
    with pytest.raises(ValueError, match="unknown option"):  # ConfigError is a ValueError too
        bertfeat.bench(DEMO_TRAIN, bogus=3)
    with pytest.raises(bertfeat.DataError, match="label"):
        bertfeat.fit((["a", "b"], ["x"]))
    with pytest.raises(bertfeat.BertfeatError):
        bertfeat.fit(DEMO_TRAIN, head="nope")


def test_the_cli_names_the_flag_for_a_library_error(capsys):
    assert main(["fit", "--train", DEMO_TRAIN, "--select", "accuracy", "--cv", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--cv 1" in err and "\n" not in err


def test_select_takes_scikit_learns_scorer_names(cache):
    clf = bertfeat.fit(DEMO_TRAIN, DEMO_TEST, select="f1_macro", progress=False)
    assert clf.selection_["select"] == "macro_f1"


def test_two_predicts_add_nothing_to_the_cache(cache, tmp_path, capsys):
    clf = bertfeat.fit(DEMO_TRAIN, DEMO_TEST, progress=False)
    folder = clf.save(str(tmp_path / "m"))

    def files():
        return sorted((p, os.path.getsize(os.path.join(d, p))) for d, _, names in os.walk(cache) for p in names)

    before = files()
    for text in ("a text the cache has never seen", "and another one"):
        assert main(["predict", "--model-dir", folder, "--text", text, "--cache-dir", str(cache), "--quiet"]) == 0
    assert files() == before
    assert main(["predict", "--model-dir", folder, "--text", "a third new text", "--cache-dir", str(cache),
                 "--cache-write", "--quiet"]) == 0
    assert files() != before


def test_help_is_fast_and_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, time; t = time.perf_counter(); from bertfeat.cli import build_parser; "
            "build_parser().format_help(); print(time.perf_counter() - t, 'sklearn' in sys.modules, "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    seconds, sklearn, torch = out.split()
    assert float(seconds) < 1.0 and sklearn == "False" and torch == "False"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "--help"], capture_output=True, check=True)
    assert time.perf_counter() - t0 < 1.0


def test_the_name_lists_match_the_registries():
    from bertfeat import options as o
    from bertfeat.classify import HEADS
    from bertfeat.classify.heads import default_heads
    from bertfeat.classify.selection import DEFAULT_VIEWS, SCORES
    from bertfeat.classify.thresholds import SELECT
    from bertfeat.extract import POOLINGS
    from bertfeat.extract.encoder import LONG_MODES, PRECISIONS
    from bertfeat.extract.finetune import METHODS

    assert o.HEAD_NAMES == tuple(sorted(HEADS)) and o.DEFAULT_HEADS == tuple(default_heads())
    assert o.DEFAULT_VIEWS == DEFAULT_VIEWS and o.SINGLE_SCORES == SCORES and o.POOLINGS == POOLINGS
    assert set(o.SCORES) == set(SCORES) | set(SELECT)
    assert o.PRECISIONS == PRECISIONS and o.LONG_MODES == LONG_MODES and o.FINETUNE_METHODS == METHODS


def test_every_flag_has_help():
    import argparse

    from bertfeat.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.option_strings or action.dest}" for name, p in sub.choices.items()
               for action in p._actions if not action.help and not isinstance(action, argparse._HelpAction)]
    assert missing == []


def test_encoder_tags_and_feature_names():
    from bertfeat.extract import BertEncoder

    enc = BertEncoder(pooling="max")
    assert enc.__sklearn_tags__().input_tags.string
    assert not enc.__sklearn_tags__().requires_fit
    names = enc.get_feature_names_out()
    assert len(names) == 384 and names[0] == "max_0"


def test_encoder_set_output_pandas(cache):
    from bertfeat.extract import BertEncoder

    enc = BertEncoder(cache_dir=str(cache)).set_output(transform="pandas")
    frame = enc.fit_transform(_texts(DEMO_TEST)[:3])
    assert isinstance(frame, pd.DataFrame) and frame.shape == (3, 384) and frame.columns[0] == "mean_0"

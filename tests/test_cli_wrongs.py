"""Command lines that went wrong in the wrong way (issue 19, items 6-7): a traceback, a label for an empty
text, a documented flag form argparse refused, an error naming the wrong flag. Each is now one `error:` line
(or the documented behaviour), before any embedding work."""
import csv
import json
import sys

import pytest
from conftest import DEMO_TEST, DEMO_TRAIN, data_rows

from bertfeat.cli import main

BLANKS = ["", "   ", "\u200b", " \u200b\ufeff\t"]  # empty, spaces, zero-width space, and a mix with a BOM


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    err = err.splitlines()[-1]  # after any warning the run logged
    assert err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """60 training and 30 test rows of the demo data: enough for every class, cheap on the tiny BERT."""
    folder = tmp_path_factory.mktemp("small")
    return data_rows(DEMO_TRAIN, folder / "train.csv", 0, 60), data_rows(DEMO_TEST, folder / "test.csv", 0, 30)


@pytest.fixture(scope="module")
def tiny_model(tiny_bert, small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    rc = main(["fit", "--train", small[0], "--test", small[1], "--model", tiny_bert, "--out", str(folder / "m"),
               "--cache-dir", str(folder / "cache"), "--quiet"])
    assert rc == 0
    return str(folder / "m")


def test_test_size_that_leaves_no_training_rows_is_one_line(tiny_bert, tmp_path, capsys):
    """--test-size 0.999 on 320 rows held everything out: scikit-learn's ValueError came as a traceback."""
    rc = main(["fit", "--train", DEMO_TRAIN, "--test-size", "0.999", "--cache-dir", str(tmp_path / "cache"),
               "--out", str(tmp_path / "out"), "--quiet"])
    err = _error(capsys)
    assert rc == 2
    assert "--test-size 0.999 holds out 320 of the 320 rows" in err and "leaving 0 to train on" in err, err
    assert "5 (one per class) are needed: pass --test-size 0.98 or less, or --test FILE" in err, err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()  # nothing embedded or written
    # the share it suggests works
    assert main(["fit", "--train", DEMO_TRAIN, "--test-size", "0.98", "--model", tiny_bert, "--cache-dir",
                 str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--quiet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n_train"], result["n_test"]) == (6, 314)


def test_fit_select_with_one_fold_is_one_line_before_embedding(tiny_bert, small, tmp_path, capsys):
    """`fit --select macro_f1 --cv 1` embedded everything, then scikit-learn's KFold raised a traceback."""
    rc = main(["fit", "--train", small[0], "--test", small[1], "--model", tiny_bert, "--select", "macro_f1",
               "--cv", "1", "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert rc == 2
    assert _error(capsys) == "error: bad --cv 1; expected 2 or more folds"
    assert not (tmp_path / "cache").exists()  # failed before any embedding work


@pytest.mark.parametrize("blank", BLANKS, ids=["empty", "spaces", "zero-width", "mixed"])
def test_predict_empty_text_follows_the_data_rule(blank, tiny_model, tmp_path, capsys):
    """`predict --text ""` returned a label while --data refused empty rows, and --data read a row of only
    zero-width characters as a text: one rule now, an error or skipped with --drop-empty on both paths."""
    data = tmp_path / "new.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_ALL).writerows([["text"], ["my parcel never arrived"], [blank]])
    base = ["predict", "--model-dir", tiny_model, "--cache-dir", str(tmp_path / "cache"), "--quiet"]

    assert main([*base, "--text", "my parcel never arrived", "--text", blank]) == 2
    assert _error(capsys) == ("error: --text number 2 (of 2) is empty: only spaces or invisible characters; "
                              "give a text, or pass --drop-empty to skip empty ones")
    assert main([*base, "--data", str(data)]) == 2
    assert "1 empty text(s) in column 'text' at row(s) 3" in _error(capsys)

    for source in (["--text", "my parcel never arrived", "--text", blank], ["--data", str(data)]):
        assert main([*base, *source, "--drop-empty", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["text"] for r in rows] == ["my parcel never arrived"], source


def test_predict_only_empty_texts_with_drop_empty(tiny_model, tmp_path, capsys):
    rc = main(["predict", "--model-dir", tiny_model, "--text", "", "--text", "\u200b", "--drop-empty", "--quiet"])
    assert rc == 2
    assert _error(capsys) == "error: all 2 --text are empty; nothing to label"


def test_layers_as_the_readme_writes_them(tiny_bert, small, tmp_path, capsys):
    """README: `--layers -4:`; argparse took `-4:` for a flag and only `--layers=-4:` worked."""
    common = ["--train", small[0], "--test", small[1], "--model", tiny_bert, "--cache-dir", str(tmp_path / "cache"),
              "--quiet", "--json"]
    assert main(["fit", *common, "--layers", "-4:", "--out", str(tmp_path / "fit")]) == 0
    assert json.loads(capsys.readouterr().out)["features"] == "mean@-4:"
    manifest = json.loads((tmp_path / "fit" / "manifest.json").read_text())
    assert [e["layers"] for e in manifest["encoders"]] == ["-4:"]

    assert main(["bench", *common, "--layers", "-2", "--heads", "logreg", "--no-tune", "--out",
                 str(tmp_path / "bench")]) == 0
    assert {r["features"] for r in json.loads(capsys.readouterr().out)["results"]} == {"mean@-2"}


@pytest.mark.parametrize("flag, value, message", [
    ("--gpus-per-worker", "-1", "bad --gpus-per-worker -1; expected 0 (CPU actors), a share of one GPU such as "
                                "0.5 (actors share a GPU), or a whole number of GPUs per actor"),
    ("--gpus-per-worker", "1.5", "bad --gpus-per-worker 1.5; expected 0 (CPU actors)"),
    ("--num-workers", "0", "bad --num-workers 0; expected 1 or more encoder actors"),
])
def test_ray_pool_sizes_checked_before_ray_starts(flag, value, message, tmp_path, capsys):
    """`--gpus-per-worker -1` started Ray, then blamed the cluster's GPUs or --num-workers."""
    rc = main(["embed", "--data", DEMO_TRAIN, "--engine", "ray", flag, value, "--cache-dir", str(tmp_path / "c"),
               "--quiet"])
    assert rc == 2
    assert _error(capsys).startswith(f"error: {message}")
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()

"""Multi-label input: a label cell that is a list (JSON Lines, Parquet), a CSV cell split on label_sep, or
one-hot columns make ``Table.labels`` one sorted tuple of distinct labels per row (``()``: no label), the same
in every format; the default label column is ``label``, else ``labels``; single-label files read as before."""
import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_TRAIN, SHARED, run_main

from bertfeat.errors import BertfeatError, ConfigError, DataError
from bertfeat.extract import check_labels, read_table
from bertfeat.extract.cells import is_multi
from bertfeat.extract.data import iter_tables
from bertfeat.inputs import labelled
from bertfeat.options import FitConfig, LabelsConfig, from_namespace, make

ROWS = [("I am so angry and glad", ["joy", "anger", "joy"]), ("nothing to feel", []),
        ("so sad", ["sadness"]), ("angry again", ["anger"]), ("glad and sad", ["sadness", "joy"])]
WANT = [("anger", "joy"), (), ("sadness",), ("anger",), ("joy", "sadness")]


def _jsonl(path, rows=ROWS, column="labels"):
    path.write_text("".join(json.dumps({"text": t, column: y}) + "\n" for t, y in rows))
    return str(path)


def test_jsonl_lists_parquet_list_column_and_separated_csv_cells_read_alike(tmp_path):
    jsonl = _jsonl(tmp_path / "a.jsonl")
    parquet = tmp_path / "a.parquet"
    pd.DataFrame({"text": [t for t, _ in ROWS], "labels": [y for _, y in ROWS]}).to_parquet(parquet)
    csv = tmp_path / "a.csv"
    pd.DataFrame({"text": [t for t, _ in ROWS], "label": [" ; ".join(y) + ";" * (i % 2) for i, (_, y) in
                                                           enumerate(ROWS)]}).to_csv(csv, index=False)
    tsv = tmp_path / "a.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{t}\t{'|'.join(y)}\n" for t, y in ROWS))
    tables = {"jsonl": read_table(jsonl), "parquet": read_table(str(parquet)),
              "csv": read_table(str(csv), label_sep=";"), "tsv": read_table(str(tsv), label_sep="|")}
    for kind, table in tables.items():
        assert table.labels == WANT, kind
        assert is_multi(table.labels), kind
    # streamed in batches: the same rows, and a Parquet batch of empty lists is still multi-label
    batches = list(iter_tables(str(parquet), rows=2))
    assert [lab for b in batches for lab in b.labels] == WANT
    assert batches[0].labels == [("anger", "joy"), ()]
    nulls = tmp_path / "nulls.parquet"
    pd.DataFrame({"text": ["a", "b"], "labels": [["x"], None]}).to_parquet(nulls)
    assert [b.labels for b in iter_tables(str(nulls), rows=1)] == [[("x",)], [()]]  # the column's type says so


def test_labels_are_canonical_like_single_labels_and_a_typed_list_column_reads_as_its_csv(tmp_path):
    """1.0 and "1" are one label in a list as they are in a single-label cell; blanks inside a list drop."""
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_text('{"text": "a", "labels": [1.0, 2, " 2 ", null, ""]}\n{"text": "b", "labels": [true]}\n'
                     '{"text": "c", "labels": null}\n')
    csv = tmp_path / "n.csv"
    csv.write_text('text,label\na,"1;2.0"\nb,TRUE\nc,\n')
    assert read_table(str(jsonl)).labels == read_table(str(csv), label_sep=";").labels == [("1", "2"), ("True",), ()]


def test_one_hot_columns_by_name_and_by_glob(tmp_path):
    path = tmp_path / "hot.csv"
    path.write_text("text,emo_joy,emo_anger,other\na,1,0,x\nb,0,0,y\nc,true,1.0,z\n")
    by_name = read_table(str(path), label_cols="emo_joy, emo_anger")
    by_glob = read_table(str(path), label_cols="emo_*")
    assert by_name.labels == by_glob.labels == [("emo_joy",), (), ("emo_anger", "emo_joy")]
    path.write_text("text,emo_joy,emo_anger\na,1,0\nb,0,maybe\n")
    with pytest.raises(DataError, match=r"hot.csv: column 'emo_anger' row 3 holds 'maybe'; one-hot label columns"):
        read_table(str(path), label_cols="emo_*")
    with pytest.raises(DataError, match=r"no column matches label_cols='tag_\*' \(columns: text, emo_joy, emo_anger"):
        read_table(str(path), label_cols="tag_*")
    with pytest.raises(BertfeatError, match=r"no column 'emo_fear' \(columns: text, emo_joy, emo_anger\)"):
        read_table(str(path), label_cols="emo_joy,emo_fear")


def test_the_label_column_is_label_else_labels_unless_named(tmp_path):
    only_labels = _jsonl(tmp_path / "a.jsonl")
    assert read_table(only_labels).labels == WANT
    both = tmp_path / "both.csv"
    both.write_text("text,label,labels\na,x,y\nb,z,w\n")
    assert read_table(str(both)).labels == ["x", "z"]  # `label` first
    assert read_table(str(both), label_col="labels").labels == ["y", "w"]
    with pytest.raises(BertfeatError, match=r"no column 'label' \(columns: text, labels\); pass label_col="):
        read_table(only_labels, label_col="label")  # a column the user named is never swapped for another
    neither = tmp_path / "neither.csv"
    neither.write_text("text,tag\na,x\n")
    with pytest.raises(BertfeatError, match=r"no column 'label' or 'labels' \(columns: text, tag\); pass label_col="):
        read_table(str(neither))
    # a model folder's manifest stores the default as a JSON list, and predict passes it back
    assert read_table(only_labels, label_col=json.loads(json.dumps(FitConfig().label_col))).labels == WANT
    assert read_table(str(neither), label_col=["label", "labels"], label_optional=True).labels is None


def test_a_list_beside_single_labels_is_one_error_naming_the_row_unless_task_multi(tmp_path):
    path = _jsonl(tmp_path / "mix.jsonl", ROWS[:2] + [("plain", "joy")])
    with pytest.raises(DataError, match=r"mix.jsonl: column 'labels': lists of labels \(row 2\) beside a single "
                                        r"label \(row 4\); .* task='multi'"):
        read_table(path)
    assert read_table(path, task="multi").labels == [("anger", "joy"), (), ("joy",)]
    single = tmp_path / "single.csv"
    single.write_text("text,label\na,x\nb,y\n")
    assert read_table(str(single), task="multi").labels == [("x",), ("y",)]
    with pytest.raises(DataError, match=r"a.jsonl is multi-label .* but .*single.csv has single labels"):
        read_table([_jsonl(tmp_path / "a.jsonl"), str(single)])


def test_task_single_refuses_lists_and_lists_stay_refused_as_texts(tmp_path):
    path = _jsonl(tmp_path / "a.jsonl")
    with pytest.raises(DataError, match=r"a.jsonl: column 'labels': lists of labels \(row 2\) but task='single'"):
        read_table(path, task="single")
    parquet = tmp_path / "a.parquet"
    pd.DataFrame({"text": [t for t, _ in ROWS], "labels": [y for _, y in ROWS]}).to_parquet(parquet)
    with pytest.raises(DataError, match=r"a.parquet: column 'labels': lists of labels \(row 2\) but task='single'"):
        read_table(str(parquet), task="single")
    for data in (path, str(parquet)):
        with pytest.raises(BertfeatError, match=r"column 'labels' has type list"):
            read_table(data, text_col="labels", label_col=None)
    with pytest.raises(BertfeatError, match=r"column 'labels' has type list"):
        read_table(path, text_col="text", pair_col="labels")


def test_single_label_files_read_exactly_as_before():
    table = read_table(DEMO_TRAIN)
    assert not is_multi(table.labels)
    assert all(isinstance(v, str) for v in table.labels)
    assert read_table(DEMO_TRAIN, task="single").labels == table.labels


def test_options_check_and_the_cli_flags_build_them(tmp_path):
    from bertfeat.cli import build_parser

    args = build_parser().parse_args(["fit", "--train", "x.csv", "--label-sep", ";", "--task", "multi"])
    config = from_namespace(FitConfig, args)
    assert (config.label_sep, config.label_cols, config.task, config.label_col) == (";", None, "multi",
                                                                                    ("label", "labels"))
    args = build_parser().parse_args(["labels", "--train", "x.csv", "--label-cols", "emo_*"])
    assert from_namespace(LabelsConfig, args).label_cols == "emo_*"
    for given, message in (({"task": "many"}, "unknown task='many'; expected one of: auto, single, multi"),
                           ({"task": "single", "label_sep": ";"}, "task='single' with label_sep=';'"),
                           ({"label_sep": ""}, "bad label_sep=''"),
                           ({"label_cols": "a,b", "label_col": "y"}, "label_col='y' with label_cols='a,b'"),
                           ({"label_cols": "a,b", "label_sep": ";"}, "label_sep=';' with label_cols='a,b'")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            make(FitConfig, given)
    proc = run_main("fit", "--train", _jsonl(tmp_path / "a.jsonl"), "--task", "single", "--label-sep", ";")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --task 'single' with --label-sep ';': that reads several labels per row; pass --task 'multi' or "
        "'auto', or drop it"]


def test_dataframes_and_pairs_keep_their_label_types_inside_the_tuples(tmp_path):
    config = make(FitConfig, {"test_size": 0.4})
    texts = [f"text {i}" for i in range(10)]
    ints = [[1, 2], [2], [], [1], [3, 1], [2, 3], [1], [3], [2, 1, 1], [3]]
    frame = pd.DataFrame({"text": texts, "labels": [np.array(v, dtype=np.int64) for v in ints]})
    for data in (frame, (texts, ints), (texts, [set(v) for v in ints])):
        train, test = labelled(data, None, config)
        assert is_multi(train.labels)
        rows = train.labels + test.labels
        assert sorted(rows) == sorted(tuple(sorted(set(v))) for v in ints)
        assert all(type(lab) is int for row in rows for lab in row)
    test = tmp_path / "test.csv"
    test.write_text("text,label\nx,2;1.0\ny,\nz,4\n")  # read as text, scored as the training values
    _, scored = labelled(frame, str(test), make(FitConfig, {"label_sep": ";"}))
    assert scored.labels == [(1, 2), (), ("4",)]
    with pytest.raises(DataError, match=r"the train labels: lists of labels \(row 0\) beside a single label "
                                        r"\(row 2\)"):
        labelled((texts[:3], [["a"], [], "b"]), None, config)
    with pytest.raises(DataError, match="the train labels are a 2-D array"):
        labelled((texts, np.zeros((10, 3))), None, config)
    frame = pd.DataFrame({"text": texts, "labels": ints})
    frame.loc[2, "labels"] = "x"
    with pytest.raises(DataError, match=r"the train DataFrame: column 'labels': lists of labels \(row 0\) beside"):
        labelled(frame, None, config)


def test_labelled_says_multi_checks_labels_and_reports_unseen_test_labels(tmp_path, caplog):
    train = _jsonl(tmp_path / "train.jsonl", ROWS * 2)
    test = _jsonl(tmp_path / "test.jsonl", [("new", ["fear", "joy"]), ("none", [])])
    config = make(FitConfig, {})
    with caplog.at_level(logging.INFO, logger="bertfeat"):
        a, b = labelled(train, test, config)
    assert a.labels == WANT * 2 and b.labels == [("fear", "joy"), ()]
    assert "task: multi-label (label cells are lists)" in caplog.text
    assert "test.jsonl: 1 row(s) have labels absent from the training data (fear)" in caplog.text
    # one label over every row is nothing to learn; a text twice with two label sets is a conflict
    with pytest.raises(BertfeatError, match=r"only one label \('joy'\) in the training labels"):
        check_labels(read_table(_jsonl(tmp_path / "one.jsonl", [("a", ["joy"]), ("b", [])])))
    twice = read_table(_jsonl(tmp_path / "twice.jsonl", [("a", ["joy"]), ("a", ["joy", "anger"]), ("b", [])]))
    assert check_labels(twice) == [f"{twice.source}: 1 text(s) appear more than once with different labels"]
    with pytest.raises(DataError, match="share no label"):
        check_labels(twice, read_table(_jsonl(tmp_path / "other.jsonl", [("x", ["fear"])])))
    single = tmp_path / "single.csv"
    single.write_text("text,label\na,joy\nb,anger\n")
    with pytest.raises(DataError, match=r"train.jsonl is multi-label .* but .*single.csv is single-label"):
        labelled(train, str(single), config)
    hot = tmp_path / "hot.csv"
    hot.write_text("text,emo_joy,emo_anger\n" + "".join(f"t{i},{i % 2},{i % 3 == 0:d}\n" for i in range(10)))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bertfeat"):
        a, b = labelled(str(hot), None, make(FitConfig, {"label_cols": "emo_*", "test_size": 0.3}))
    assert "task: multi-label (one-hot label columns label_cols='emo_*')" in caplog.text
    assert "multi-label split, stratified on each row's rarest label" in caplog.text
    assert (len(a.texts), len(b.texts)) == (7, 3) and sorted(a.rows + b.rows) == list(range(2, 12))


@pytest.mark.slow
def test_goemotions_reads_as_multi_label():
    table = read_table(os.path.join(SHARED, "goemotions", "train.jsonl"))
    assert len(table.texts) == 43_410 and is_multi(table.labels)
    assert len({lab for row in table.labels for lab in row}) == 28
    assert 0.14 < sum(len(row) > 1 for row in table.labels) / len(table.labels) < 0.18

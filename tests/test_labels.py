"""One rule for labels in every format: a label that is a number or a boolean reads the same whether the
file typed it (JSONL, Parquet) or wrote it as text (CSV, TSV); test labels that share nothing with the
training labels are an error, not a score of zero."""
import json

import pandas as pd
import pytest
from conftest import DEMO_TEST, DEMO_TRAIN, run_main

from bertfeat.errors import DataError
from bertfeat.extract import check_labels, read_table

NUMBERS = {"account": "1.0", "billing": "2.0", "delivery": "3.0", "returns": "4.0", "technical": "5.0"}


def _relabel(source, path, names):
    frame = pd.read_csv(source, dtype=str)
    frame["label"] = frame["label"].map(names)
    frame.to_csv(path, index=False)
    return str(path)


def test_csv_float_labels_score_the_same_against_a_parquet_copy(tmp_path, cache):
    """pandas reads the CSV's `1.0` as a float and the Parquet copy stores it typed: before the rule, the
    CSV's labels were "1.0" and the Parquet's "1", and accuracy was 0.0000 with exit 0."""
    train = _relabel(DEMO_TRAIN, tmp_path / "a.csv", NUMBERS)
    test_csv = _relabel(DEMO_TEST, tmp_path / "b.csv", NUMBERS)
    test_parquet = tmp_path / "b.parquet"
    pd.read_csv(test_csv).to_parquet(test_parquet)
    assert pd.read_parquet(test_parquet)["label"].dtype == "float64"
    accuracy = {}
    for kind, test in (("csv", test_csv), ("parquet", test_parquet)):
        out = tmp_path / f"out-{kind}"
        proc = run_main("fit", "--train", train, "--test", test, "--head", "logreg", "--out", out,
                        "--cache-dir", cache, "--json", "--quiet", check=0)  # the demo's texts, cached
        accuracy[kind] = json.loads(proc.stdout)["accuracy"]
        assert json.loads((out / "manifest.json").read_text())["labels"] == ["1", "2", "3", "4", "5"]
    assert accuracy["parquet"] == accuracy["csv"] > 0.5, accuracy


def test_every_format_reads_the_same_labels(tmp_path):
    frame = pd.DataFrame({"text": list("abcdef"), "label": [1.0, 2.5, 3.0, 1e-7, 1e20, -0.0],
                          "flag": [True, False, True, True, False, False]})
    want = {"label": ["1", "2.5", "3", "1e-07", "100000000000000000000", "0"],
            "flag": ["True", "False", "True", "True", "False", "False"]}
    frame.to_csv(tmp_path / "pandas.csv", index=False)  # 1.0, 1e-07, 1e+20, -0.0, True
    frame.to_csv(tmp_path / "pandas.tsv", sep="\t", index=False)
    frame.to_json(tmp_path / "pandas.jsonl", orient="records", lines=True)  # typed: 1.0, true
    frame.to_parquet(tmp_path / "typed.parquet")
    frame.astype(str).to_parquet(tmp_path / "strings.parquet")  # "1.0", "True" as text
    (tmp_path / "by-hand.csv").write_text("text,label,flag\na,1,true\nb,2.50,FALSE\nc, 3.00 ,True\n"
                                          "d,0.0000001,true\ne,1E+20,false\nf,-0,False\n")
    (tmp_path / "by-hand.jsonl").write_text("".join(
        json.dumps({"text": t, "label": y, "flag": f}) + "\n"
        for t, y, f in zip("abcdef", [1, "2.5", 3.0, "1e-7", 1e20, 0], [True, "false", "TRUE", 1 > 0, 0 > 1, False])))
    for path in sorted(tmp_path.iterdir()):
        for col in ("label", "flag"):
            assert read_table(str(path), label_col=col).labels == want[col], (path.name, col)
    # Only a number as JSON writes one is canonical: leading zeros (an ID), `+1`, `.5`, `1.`, `1_000`, `nan`,
    # `inf`, `0x10`, a number too large for a float stay as written, so distinct IDs are never merged.
    kept = ["007", "+1", ".5", "1.", "1_000", "nan", "inf", "0x10", "1e400", "yes", "1.0.0", "\u0661"]
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(len(kept))], "label": kept})
    frame.to_csv(tmp_path / "kept.csv", index=False)
    frame.to_parquet(tmp_path / "kept.parquet")
    for name in ("kept.csv", "kept.parquet"):
        assert read_table(str(tmp_path / name)).labels == kept


def test_test_labels_disjoint_from_training_are_one_line_error(tmp_path):
    other = {name: name.upper() for name in NUMBERS}
    test = _relabel(DEMO_TEST, tmp_path / "shouted.csv", other)
    proc = run_main("fit", "--train", DEMO_TRAIN, "--test", test, "--out", tmp_path / "out",
                    "--cache-dir", tmp_path / "cache")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert DEMO_TRAIN in lines[0] and test in lines[0] and "ACCOUNT" in lines[0] and "account" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    # the library raises it typed; a partial overlap stays a warning
    train, shouted = read_table(DEMO_TRAIN), read_table(test)
    with pytest.raises(DataError, match="share no label"):
        check_labels(train, shouted)
    shouted.labels[0] = "account"
    assert any(f"{len(shouted.labels) - 1} row(s) have labels absent" in w for w in check_labels(train, shouted))

"""Never lose work, never crash on bad input: kill/resume, concurrent writers, full disks, cache admin."""
import errno
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bertfeat.extract.data import is_blank

from conftest import DEMO_TRAIN, ROOT, cached_vectors, data_rows, generated_rows, main_json, run_cli, run_main
from bertfeat.errors import BertfeatError



def _slice(tmp_path, name, start, stop, source=None):
    if source is None:
        return generated_rows(tmp_path / name, start, stop)
    return data_rows(source, tmp_path / name, start, stop)


def _committed(cache):
    """Commit records of vector shards (model exports under models/ are not shards)."""
    return [os.path.join(root, n) for root, _, files in os.walk(cache) for n in files
            if n.endswith(".json") and n != "encoder.json" and not n.startswith(".tmp-")
            and "models" not in os.path.relpath(root, cache).split(os.sep)]


def _stored_vectors(data, cache):
    from bertfeat.extract import read_table

    return cached_vectors(cache, read_table(str(data), label_col=None).texts)


def test_resume_after_sigkill_gives_the_uninterrupted_vectors(tmp_path):
    data = _slice(tmp_path, "d.csv", 0, 600)  # 12 shards of 50
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTFEAT_CACHE": str(killed)}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "embed", "--data", str(data),
                             "--shard-size", "50", "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_committed(killed)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_committed(killed))
    assert 2 <= done_before < 12, "the run should have been killed part-way"
    resumed = main_json("embed", "--data", data, "--shard-size", "50", cache=killed)
    assert resumed["n_cached"] >= 100 and resumed["n_embedded"] > 0
    assert resumed["n_cached"] + resumed["n_embedded"] == resumed["n_unique"]
    main_json("embed", "--data", data, "--shard-size", "50", cache=clean)
    a, b = _stored_vectors(data, killed), _stored_vectors(data, clean)
    # Batches are cut the same way on resume, so the vectors are the very same bytes.
    assert a.tobytes() == b.tobytes()
    assert run_cli("cache", "verify", cache=killed).returncode == 0


def test_two_concurrent_runs_share_one_cache(tmp_path):
    first, second = _slice(tmp_path, "a.csv", 0, 350), _slice(tmp_path, "b.csv", 175, 525)
    union = _slice(tmp_path, "u.csv", 0, 525)
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTFEAT_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "embed", "--data", str(path),
                               "--shard-size", "64", "--json", "--quiet"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for path in (first, second)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert run_cli("cache", "verify", cache=cache).returncode == 0
    again = main_json("embed", "--data", union, cache=cache)
    assert again["n_embedded"] == 0 and again["n_cached"] == again["n_unique"]


def test_disk_full_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    from bertfeat.cache import VectorStore, text_keys
    from bertfeat.cache import store as store_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.np, "save", full)
    store = VectorStore(str(tmp_path), "fp")
    with pytest.raises(BertfeatError, match="cannot write .No space left on device.; free disk space"):
        store.put(text_keys(["a"]), np.ones((1, 3)))
    assert [n for n in os.listdir(tmp_path / "fp") if n not in ("encoder.json", ".lock")] == []


def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        proc = run_cli("embed", "--data", DEMO_TRAIN, "--cache-dir", mount, "--quiet")
        assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
        assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr
        # No array or record is left; the entry's settings, its lock file and the cache tag may be.
        left = {n for _, _, files in os.walk(mount) for n in files}
        assert left <= {"encoder.json", ".lock", "CACHEDIR.TAG"}, left
    finally:
        subprocess.run(["umount", str(mount)])


def test_huge_text_is_truncated_and_counted(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "word " * 200_000 + ",x\nshort text,y\n")
    out = main_json("embed", "--data", path, "--cache-dir", tmp_path / "c")
    assert out["n_truncated"] == 1 and out["n_embedded"] == 2


def test_tampered_model_folder_is_refused_by_predict(tmp_path, cache, demo_model):
    import shutil

    folder = shutil.copytree(demo_model["model_dir"], tmp_path / "m")
    assert main_json("predict", "--model-dir", folder, "--text", "hi", cache=cache)[0]["label"]  # intact: predicts
    with open(os.path.join(folder, "head.npz"), "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00")
    proc = run_main("predict", "--model-dir", folder, "--text", "hi", cache=cache)
    assert proc.returncode == 2 and "does not match the checksum" in proc.stderr


def test_cache_info_verify_prune(tmp_path):
    cache = tmp_path / "c"
    data = _slice(tmp_path, "d.csv", 0, 60, source=DEMO_TRAIN)
    main_json("embed", "--data", data, cache=cache)
    main_json("embed", "--data", data, "--pooling", "cls", cache=cache)
    info = main_json("cache", "info", cache=cache)
    assert len(info["entries"]) == 2 and {e["rows"] for e in info["entries"]} == {60}
    assert {e["pooling"] for e in info["entries"]} == {"mean", "cls"}
    assert run_main("cache", "verify", cache=cache).returncode == 0
    (vec,) = [os.path.join(r, n) for r, _, fs in os.walk(cache) for n in fs
              if n.endswith(".vectors.npy") and "cls" in open(os.path.join(r, "encoder.json")).read()]
    with open(vec, "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\xff" * 8)
    bad = run_main("cache", "verify", cache=cache)
    assert bad.returncode == 1 and os.path.basename(vec).split(".")[0] in bad.stderr
    assert run_main("cache", "prune", cache=cache).returncode == 2  # no selector: refuses to guess
    dry = main_json("cache", "prune", "--model", "all-MiniLM-L6-v2", "--dry-run", cache=cache)
    assert len(dry["removed"]) == 2 and len(main_json("cache", "info", cache=cache)["entries"]) == 2
    fp = next(e["fingerprint"] for e in info["entries"] if e["pooling"] == "cls")
    main_json("cache", "prune", "--fingerprint", fp[:10], cache=cache)
    assert [e["pooling"] for e in main_json("cache", "info", cache=cache)["entries"]] == ["mean"]
    assert run_main("cache", "verify", cache=cache).returncode == 0


# -- the loader under random tables --------------------------------------------------------------
# Texts with the characters files get wrong (quotes, separators, newlines, non-ASCII); None is a missing cell.
_chars = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(' ",\t\n\r')
_text = st.text(_chars, max_size=10)
LABELS = {"str": _text, "int": st.integers(-10**12, 10**12), "float": st.floats(-1e6, 1e6),
          "bool": st.booleans()}
NESTED = {"list": (["a", "b"], "list"), "struct": ({"a": 1}, "struct"), "binary": (b"\x00a", "binary")}


def _expected_cell(value):
    """What the loader must make of a written cell: its text, or None for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 2.0 in a typed column reads as the label "2", as a CSV writes it
    return str(value)


@st.composite
def tables(draw):
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl", "parquet", "parquet-nullable"]))
    kind = "str" if fmt in ("csv", "tsv") else draw(st.sampled_from(sorted(LABELS)))  # CSV/TSV are untyped
    rows = draw(st.lists(st.tuples(st.one_of(_text, st.none()), st.one_of(LABELS[kind], st.none())),
                         min_size=1, max_size=8))
    if fmt == "tsv":  # TSV has no quoting: a cell cannot hold a tab or a line break
        def clean(v):
            return v.translate({ord(c): None for c in "\t\n\r"}) if isinstance(v, str) else v
        rows = [(clean(t), clean(y)) for t, y in rows]
    nested = None
    if fmt != "csv" and fmt != "tsv" and fmt != "parquet-nullable":
        nested = draw(st.sampled_from([None, None, ("text", "list"), ("label", "list"), ("label", "struct"),
                                       ("text", "binary" if fmt == "parquet" else "struct")]))
    if kind == "float" and fmt == "parquet":
        rows = [(t, math.nan if y is None and draw(st.booleans()) else y) for t, y in rows]  # NaN is missing too
    return fmt, kind, rows, nested, draw(st.booleans())


def _write(path, fmt, kind, rows, nested):
    import csv
    import json

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    if nested:
        value = NESTED[nested[1]][0]
        if nested[0] == "text":
            texts = [value] * len(rows)
        else:
            labels = [value] * len(rows)
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("text", "label"), *[("" if v is None else v for v in r) for r in rows]])
    elif fmt == "tsv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            fh.writelines("\t".join("" if v is None else v for v in r) + "\n" for r in [("text", "label"), *rows])
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels))
    elif fmt == "parquet":
        types = {"str": pa.large_string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
        label_type = None if nested and nested[0] == "label" else types[kind]
        pq.write_table(pa.table({"text": pa.array(texts, None if nested and nested[0] == "text" else pa.string()),
                                 "label": pa.array(labels, label_type)}), path)
    else:  # pandas' nullable dtypes: missing cells come back as pd.NA
        dtypes = {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean"}
        pd.DataFrame({"text": pd.array(texts, dtype="string"),
                      "label": pd.array(labels, dtype=dtypes[kind])}).to_parquet(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tables())
def test_loader_reads_every_valid_table_exactly_and_rejects_only_invalid_ones(tmp_path, case):
    """An oracle for every table: the exact rows a valid one must give, the error an invalid one must give.

    Fails when a valid table is rejected, read wrongly (a missing cell read as "None"/"<NA>"/"nan",
    a quote swallowing rows), or an invalid one passes or fails with a traceback.
    """
    from bertfeat.extract.data import label_text, read_table

    fmt, kind, rows, nested, drop_empty = case
    path = tmp_path / f"r.{fmt.split('-')[0]}"
    _write(path, fmt, kind, rows, nested)
    texts = [_expected_cell(t) for t, _ in rows]
    labels = [_expected_cell(y) for _, y in rows]
    keep = [i for i, t in enumerate(texts) if not is_blank(t)]
    listed = nested == ("label", "list")  # a label column of lists is multi-label data (extract/labels.py)
    if nested and not listed:
        expected_error = f"column '{nested[0]}' has type {NESTED[nested[1]][1]}"
    elif len(keep) < len(rows) and not drop_empty:
        expected_error = "empty text(s) in column 'text'"
    elif not listed and any(is_blank(labels[i]) for i in keep):
        expected_error = "blank label(s) in column 'label'"
    elif not keep:
        expected_error = "no non-empty texts"
    else:
        expected_error = None
    try:
        table = read_table(str(path), drop_empty=drop_empty)
    except BertfeatError as exc:
        assert expected_error is not None, f"a valid table was rejected: {exc}"
        assert expected_error in str(exc) and str(path) in str(exc) and "\n" not in str(exc), str(exc)
        return
    assert expected_error is None, f"expected the error {expected_error!r}, read {table}"
    assert table.texts == [texts[i] for i in keep]
    if listed:  # every row holds the list ["a", "b"]: one label set a row
        assert table.labels == [("a", "b")] * len(keep)
    else:
        assert table.labels == [label_text(labels[i]) for i in keep]  # "0.0" reads "0" (test_labels)
    assert table.rows == [i + 2 for i in keep]


def test_cache_info_lists_model_exports_and_prune_all_removes_them(tmp_path, export_cache):
    import shutil

    cache = shutil.copytree(export_cache, tmp_path / "cache")  # a real int8 embed's cache, export included
    exports = main_json("cache", "info", cache=cache)["exports"]
    assert exports[0]["precision"] == "int8" and exports[0]["bytes"] > 1_000_000
    main_json("cache", "prune", "--all", cache=cache)
    assert main_json("cache", "info", cache=cache) == {"cache_dir": str(cache.resolve()), "entries": [], "exports": [],
                                                    "quarantined": []}


def _committed_rows(cache):
    import json

    def rows(path):
        with open(path) as fh:
            return json.load(fh)["rows"]

    return sum(map(rows, _committed(cache)))


def test_sigkill_in_a_later_window_keeps_the_earlier_windows_and_resumes_to_the_same_bytes(tmp_path):
    # 600 rows read and embedded 150 at a time (--window): killed in the second window or later, the
    # re-run embeds only what was not committed, and gives the bytes an uninterrupted run gives.
    data = _slice(tmp_path, "d.csv", 0, 600)
    flags = ["--window", "150", "--shard-size", "50"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTFEAT_CACHE": str(killed)}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "embed", "--data", str(data), *flags,
                             "--quiet"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while _committed_rows(killed) < 200 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _committed_rows(killed)
    assert 200 <= done_before < 600, proc.stderr.read()[-2000:]
    resumed = main_json("embed", "--data", data, *flags, cache=killed)
    assert resumed["n_cached"] >= done_before and resumed["n_embedded"] == 600 - resumed["n_cached"]
    assert resumed["n_unique"] == 600
    main_json("embed", "--data", data, *flags, cache=clean)
    assert _stored_vectors(data, killed).tobytes() == _stored_vectors(data, clean).tobytes()

"""Reading data files, pooling and the encoder, with the real default model and a tiny random BERT."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from bertfeat.errors import BertfeatError
from bertfeat.extract import BertEncoder, embed, read_table
from bertfeat.extract.data import check_labels
from bertfeat.extract.pooling import parse_layers

TEXTS = ["my card has not arrived yet", "how do I reset my password?", "the router keeps dropping wifi",
         "refund please", "I was charged twice for the same order and nobody answers my emails, this is a joke"]


def _vectors(encoder, texts, pairs=None):
    return embed([encoder], texts, pairs, progress=False).vectors[0]


# -- data files ----------------------------------------------------------------------------------
def test_all_formats_read_the_same_rows(tmp_path):
    frame = pd.DataFrame({"text": ["a, with comma", 'b "quoted"\nand a newline', "c"], "label": ["x", "y", "x"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for ext in ("csv", "jsonl", "parquet"):
        table = read_table(str(tmp_path / f"d.{ext}"))
        assert table.texts == frame.text.tolist(), ext
        assert table.labels == frame.label.tolist(), ext
    # TSV has no quoting (a field cannot hold a tab or a newline): quotes are plain characters.
    (tmp_path / "d.tsv").write_text('text\tlabel\n"starts with a quote\tx\nb, "mid"\ty\nends"\tx\n"both"\ty\n')
    table = read_table(str(tmp_path / "d.tsv"))
    assert table.texts == ['"starts with a quote', 'b, "mid"', 'ends"', '"both"'] and table.rows == [2, 3, 4, 5]
    assert table.labels == ["x", "y", "x", "y"]


def test_typed_columns_read_as_text_and_every_missing_kind_is_blank(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"text": pa.array(["a", "b", None, "d"], pa.large_string()),
                             "int": pa.array([1, 2, None, 9007199254740993]),
                             "float": pa.array([1.0, 2.5, None, -3.0]),
                             "bool": pa.array([True, False, None, True])}), typed)
    with pytest.raises(BertfeatError, match="1 empty text.s. in column 'text' at row.s. 4"):
        read_table(str(typed), label_col="int")
    labels = {col: read_table(str(typed), label_col=col, drop_empty=True).labels for col in ("int", "float", "bool")}
    # exact ints (not via float), 1.0 reads as "1" as a CSV would write it, booleans as True/False
    assert labels == {"int": ["1", "2", "9007199254740993"], "float": ["1", "2.5", "-3"],
                      "bool": ["True", "False", "True"]}
    # pandas nullable dtypes (pd.NA) and NaT are blanks, not the text "<NA>" / "NaT"
    nullable = tmp_path / "nullable.parquet"
    pd.DataFrame({"text": pd.array(["a", pd.NA, "c"], dtype="string"),
                  "label": pd.array([1, 2, pd.NA], dtype="Int64")}).to_parquet(nullable)
    with pytest.raises(BertfeatError, match="1 empty text.s. in column 'text' at row.s. 3"):
        read_table(str(nullable))
    with pytest.raises(BertfeatError, match="1 blank label.s. in column 'label' at row.s. 4"):
        read_table(str(nullable), drop_empty=True)
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": pd.array([True, False, pd.NA], dtype="boolean")})
    frame.to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    with pytest.raises(BertfeatError, match="1 blank label.s. in column 'label' at row.s. 4"):
        read_table(str(tmp_path / "b.jsonl"))
    (tmp_path / "n.jsonl").write_text('{"text": "a", "label": 1}\n{"text": null, "label": 2}\n'
                                      '{"text": "c", "label": 2.0}\n{"text": "d", "label": true}\n')
    table = read_table(str(tmp_path / "n.jsonl"), drop_empty=True)
    assert (table.texts, table.labels, table.rows) == (["a", "c", "d"], ["1", "2", "True"], [2, 4, 5])


@pytest.mark.parametrize("column, kind", [
    ("tags", "list<element: string>"), ("raw", "binary"), ("meta", "struct<a: int64>"),
])
def test_nested_and_binary_columns_are_refused_naming_file_column_and_type(tmp_path, column, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", "y"], "tags": pa.array([["t"] * 2000, None]),
                             "raw": pa.array([b"\x00", None]), "meta": pa.array([{"a": 1}, None])}), path)
    assert read_table(str(path)).texts == ["a", "b"]  # unused typed columns are fine
    # a list column is a multi-label column when it holds the labels (tests/test_multilabel_data.py)
    for flags in ({"text_col": column},) + (({"label_col": column},) if column != "tags" else ()):
        with pytest.raises(BertfeatError) as err:
            read_table(str(path), **flags)
        assert str(err.value).startswith(f"{path}: column '{column}' has type {kind};")
    (tmp_path / "nested.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": ["b", "c"], "label": "y"}\n')
    with pytest.raises(BertfeatError, match="column 'text' has type list .row 3."):
        read_table(str(tmp_path / "nested.jsonl"))


@pytest.mark.parametrize("content, ext, message", [
    (None, ".csv", "file not found"),
    ("text,label\na,b\n", ".xlsx", "unknown file type '.xlsx'"),
    ("", ".csv", "file is empty"),
    ("text,label\n", ".csv", "no data rows"),
    ("words,label\na,b\n", ".csv", "no column 'text' (columns: words, label)"),
    ("text,label\na,x\n  ,y\nc,x\n", ".csv", "1 empty text(s) in column 'text' at row(s) 3"),
    ("text,label\na,x\nb,\n", ".csv", "blank label(s) in column 'label' at row(s) 3"),
])
def test_bad_files_name_the_problem(tmp_path, content, ext, message):
    path = tmp_path / f"data{ext}"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BertfeatError) as err:
        read_table(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_drop_empty_skips_blank_texts(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,x\n,y\nc,x\n")
    table = read_table(str(path), drop_empty=True)
    assert table.texts == ["a", "c"] and table.rows == [2, 4]


def test_non_utf8_bytes_name_the_line_and_encoding_flag_reads_them(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,x\ncaf\xe9 au lait,y\n")
    with pytest.raises(BertfeatError) as err:
        read_table(str(path))
    assert "line 3" in str(err.value) and "encoding=" in str(err.value)
    assert read_table(str(path), encoding="latin-1").texts[1] == "café au lait"


def test_single_class_and_unseen_test_labels(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(BertfeatError, match="only one class"):
        check_labels(read_table(str(one)))
    train, test = tmp_path / "tr.csv", tmp_path / "te.csv"
    train.write_text("text,label\na,x\nb,y\na,y\n")
    test.write_text("text,label\nc,z\nd,x\n")  # a partial overlap: test labels that share none are an error
    warnings = check_labels(read_table(str(train)), read_table(str(test)))
    assert any("1 text(s) appear more than once with different labels" in w for w in warnings)
    assert any("absent from the training data (z)" in w for w in warnings)


# -- pooling and layers --------------------------------------------------------------------------
def test_layer_specs():
    assert parse_layers("-1") == (-1,)
    assert parse_layers("-4:") == (-4, -3, -2, -1)
    assert parse_layers("-4,-1") == (-4, -1)
    for bad in ("1", "last", "0:", ""):
        with pytest.raises(BertfeatError, match="layers="):
            parse_layers(bad)


def test_unknown_pooling_lists_the_options():
    with pytest.raises(BertfeatError, match="unknown pooling 'avg'; expected one of: cls, max, mean"):
        BertEncoder(pooling="avg").fit()


# -- the default model ---------------------------------------------------------------------------
def test_default_model_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from bertfeat.extract.model import resolve_model_dir

    ours = _vectors(BertEncoder(), TEXTS)
    ref = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu").encode(TEXTS)
    assert ours.shape == (len(TEXTS), 384)
    cosine = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() > 0.9999


def test_order_survives_length_sorting_and_padding_changes_nothing():
    encoder = BertEncoder(batch_size=2)  # several batches, each padded to its own longest text
    together = _vectors(encoder, TEXTS)
    reversed_ = _vectors(encoder, TEXTS[::-1])[::-1]
    alone = np.vstack([_vectors(encoder, [t]) for t in TEXTS])
    np.testing.assert_allclose(together, reversed_, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_pair_input_uses_segments_and_differs_from_single_text():
    encoder = BertEncoder()
    single = _vectors(encoder, ["is it raining?"])
    paired = _vectors(encoder, ["is it raining?"], ["no, it is sunny"])
    swapped = _vectors(encoder, ["no, it is sunny"], ["is it raining?"])
    assert not np.allclose(single, paired, atol=1e-3)
    assert not np.allclose(paired, swapped, atol=1e-3)
    assert list(BertEncoder().transform([("is it raining?", "no, it is sunny")])[0]) == list(paired[0])


def test_truncation_is_counted():
    result = embed([BertEncoder(max_length=8)], ["word " * 50, "short"], progress=False)
    assert result.n_truncated == 1


def test_encoder_in_a_sklearn_pipeline(demo):
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, test = demo
    pipe = make_pipeline(BertEncoder(), LogisticRegression(C=10, max_iter=1000))
    pipe.fit(train.texts[:120], train.labels[:120])
    assert (pipe.predict(test.texts) == np.array(test.labels)).mean() > 0.6
    copy = clone(pipe)
    assert copy.get_params()["bertencoder__pooling"] == "mean"


# -- any Hugging Face model: a tiny random BERT in a temp folder -------------------------------------
def test_tiny_bert_views_from_one_forward_pass(tiny_bert):
    views = [BertEncoder(model=tiny_bert, pooling=p, normalize=False) for p in ("mean", "cls", "max")]
    views.append(BertEncoder(model=tiny_bert, layers="-3:", normalize=False))
    result = embed(views, TEXTS, progress=False)
    mean, cls, mx, concat = result.vectors
    assert mean.shape == (5, 32) and concat.shape == (5, 96)
    assert not np.allclose(mean, cls) and not np.allclose(mean, mx)
    assert (mx >= mean - 1e-6).all()  # a max over tokens is never below their mean
    np.testing.assert_allclose(concat[:, -32:], mean, atol=1e-5)  # the last block is the last layer
    single = _vectors(BertEncoder(model=tiny_bert, pooling="cls", normalize=False), TEXTS)
    np.testing.assert_allclose(single, cls, atol=1e-5)


def test_fingerprint_covers_what_changes_numbers(tiny_bert, tmp_path):
    base = BertEncoder(model=tiny_bert)
    assert base.fingerprint() == BertEncoder(model=tiny_bert, batch_size=7, device="cpu").fingerprint()
    for change in ({"pooling": "cls"}, {"max_length": 64}, {"layers": "-2"}, {"normalize": False}):
        assert BertEncoder(model=tiny_bert, **change).fingerprint() != base.fingerprint(), change
    # Same name, different weights: a copy of the folder with one weight changed.
    import shutil

    from safetensors.numpy import load_file, save_file

    other = tmp_path / "tiny-copy"
    shutil.copytree(tiny_bert, other)
    weights = load_file(str(other / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    assert BertEncoder(model=str(other)).fingerprint() != base.fingerprint()
    assert json.loads(json.dumps(base.cache_settings()))["model_sha256"]


@pytest.mark.parametrize("edit", ["tokenizer_config", "vocab", "config"])
def test_fingerprint_covers_tokenizer_and_config_files(tiny_bert, tmp_path, edit):
    """Same weights, another tokenizer or config: new fingerprint, and the old cache is not served."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    if edit == "vocab":  # a folder whose tokenizer is built from vocab.txt (no tokenizer.json), as old BERTs ship
        from bertfeat.extract.model import resolve_model_dir

        shutil.copy(os.path.join(resolve_model_dir("all-MiniLM-L6-v2"), "vocab.txt"), model / "vocab.txt")
        (model / "tokenizer.json").unlink()
    enc = BertEncoder(model=str(model), device="cpu", precision="fp32")
    texts = ["Hello World", "MY CARD HAS NOT ARRIVED"]
    before, cache = enc.fingerprint(), str(tmp_path / "cache")
    old = embed([enc], texts, cache_dir=cache, progress=False).vectors[0]
    if edit == "tokenizer_config":
        settings = json.loads((model / "tokenizer_config.json").read_text())
        settings["do_lower_case"] = not settings.get("do_lower_case", True)
        (model / "tokenizer_config.json").write_text(json.dumps(settings))
    elif edit == "vocab":  # two tokens trade ids: "hello" and "world" now mean other rows of the embedding
        vocab = (model / "vocab.txt").read_text(encoding="utf-8").splitlines()
        a, b = vocab.index("hello"), vocab.index("world")
        vocab[a], vocab[b] = vocab[b], vocab[a]
        (model / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    else:
        config = json.loads((model / "config.json").read_text())
        config["layer_norm_eps"] = 0.5
        (model / "config.json").write_text(json.dumps(config))
    assert BertEncoder(model=str(model)).fingerprint() != before
    again = embed([enc], texts, cache_dir=cache, progress=False)
    assert again.n_embedded == len(texts)  # nothing served from the cache filled before the edit
    assert not np.allclose(again.vectors[0], old, atol=1e-4)  # and the edit did change the numbers


def test_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(BertfeatError, match="no config.json"):
        BertEncoder(model=str(tmp_path)).fingerprint()


# -- corpora larger than memory: batched reading, windowed embedding -------------------------------
@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_iter_tables_reads_in_batches_with_the_file_row_numbers(tmp_path, ext):
    from bertfeat.extract.data import iter_tables

    frame = pd.DataFrame({"text": [f"text {i}" if i != 7 else "" for i in range(10)], "label": ["a", "b"] * 5})
    path = str(tmp_path / f"d.{ext}")
    {"csv": lambda: frame.to_csv(path, index=False), "tsv": lambda: frame.to_csv(path, sep="\t", index=False),
     "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(path)}[ext]()
    parts = list(iter_tables(path, rows=3, drop_empty=True))
    assert [len(p.rows) for p in parts] == [3, 3, 2, 1]  # row 9 (the empty text) skipped in the third batch
    whole = read_table(path, drop_empty=True)
    assert [t for p in parts for t in p.texts] == whole.texts and [r for p in parts for r in p.rows] == whole.rows
    assert whole.rows == [2, 3, 4, 5, 6, 7, 8, 10, 11]
    with pytest.raises(BertfeatError, match=r"1 empty text.s. in column 'text' at row.s. 9;"):
        list(iter_tables(path, rows=3))


def test_embedder_tokenizes_one_window_at_a_time_and_commits_it_before_the_next(tmp_path, monkeypatch):
    from bertfeat.extract import batching
    from bertfeat.extract.pipeline import Embedder

    from conftest import DEMO_TRAIN

    texts = list(dict.fromkeys(read_table(DEMO_TRAIN).texts))[:250]
    cache = tmp_path / "cache"

    def committed_rows():
        return sum(json.loads(p.read_text())["rows"] for p in cache.glob("*/*.json") if p.name != "encoder.json")

    sizes, tokenize = [], batching.tokenize
    monkeypatch.setattr(batching, "tokenize", lambda backend, t, *a, **k: (sizes.append((len(t), committed_rows())),
                                                                          tokenize(backend, t, *a, **k))[1])
    encoder = BertEncoder(precision="fp32")  # bf16 vectors move by ~1e-3 with their batch
    windowed = Embedder([encoder], str(cache), window=100)(texts, progress=False)
    # 250 unique texts in windows of 100 by key: each window's vectors are stored before the next is tokenized
    assert sizes == [(100, 0), (100, 100), (50, 200)]
    whole = Embedder([encoder], None)(texts, progress=False)
    np.testing.assert_allclose(windowed.vectors[0], whole.vectors[0], atol=1e-5)  # other batches, same vectors
    again = Embedder([encoder], str(cache), window=100)(texts, progress=False)
    assert (windowed.n_embedded, again.n_cached) == (250, 250)
    assert again.vectors[0].tobytes() == windowed.vectors[0].tobytes()


def test_embed_command_reads_and_embeds_one_window_of_rows_at_a_time(tmp_path, monkeypatch, capsys):
    from conftest import generated_rows
    from bertfeat.cli import main
    from bertfeat.extract.pipeline import Embedder

    data = generated_rows(tmp_path / "d.csv", 0, 250)
    sizes, embed_part = [], Embedder._embed
    monkeypatch.setattr(Embedder, "_embed", lambda self, texts, *a: (sizes.append(len(texts)),
                                                                     embed_part(self, texts, *a))[1])
    assert main(["embed", "--data", data, "--window", "100", "--cache-dir",
                 str(tmp_path / "cache"), "--json", "--quiet"]) == 0
    assert sizes == [100, 100, 50]  # the whole file is never in memory at once
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n_texts"], summary["n_unique"], summary["n_embedded"]) == (250, 250, 250)

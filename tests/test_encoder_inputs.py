"""What BertEncoder.transform accepts (and refuses), and models whose weights are PyTorch .bin files."""
import fnmatch
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from bertfeat.errors import BertfeatError

TEXTS = ["where is my card?", "reset my pin please", "my parcel never came"]
PAIRS = ["it was sent last week", "I forgot it", "tracking says delivered"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from bertfeat.extract import BertEncoder

    return BertEncoder(cache_dir=str(tmp_path_factory.mktemp("inputs-cache")))


def test_transform_takes_lists_series_and_pair_rows_alike(encoder):
    singles = encoder.transform(TEXTS)
    pairs = encoder.transform(list(zip(TEXTS, PAIRS)))
    assert singles.shape == pairs.shape == (3, 384)
    assert (np.abs(singles - pairs).max(1) > 1e-3).all()  # the pair reaches the model
    np.testing.assert_array_equal(encoder.transform(pd.Series(TEXTS, index=[7, 3, 5])), singles)
    np.testing.assert_array_equal(encoder.transform(np.array(TEXTS)), singles)
    np.testing.assert_array_equal(encoder.transform(pd.DataFrame({"t": TEXTS})), singles)
    for rows in (np.array(list(zip(TEXTS, PAIRS))), pd.DataFrame({"a": TEXTS, "b": PAIRS}),
                 [list(p) for p in zip(TEXTS, PAIRS)]):
        np.testing.assert_array_equal(encoder.transform(rows), pairs)


@pytest.mark.parametrize("bad, fragment", [
    ("one text", "got str (wrap a single text in a list)"),
    ({"a": 1}, "got dict"),
    (np.array([["a", "b", "c"]]), "shape (1, 3)"),
    (pd.DataFrame({"a": ["x"], "b": ["y"], "c": ["z"]}), "shape (1, 3)"),
    ([("a", "b", "c")], "row 0 has 3 items"),
    (["fine", 3], "row 1 is int 3, not a text"),
    (pd.Series(["fine", None]), "row 1 is"),
    ([("a", float("nan"))], "pair of row 0 is float nan"),
])
def test_transform_refuses_anything_else_naming_it(encoder, bad, fragment):
    with pytest.raises(BertfeatError, match="expected texts") as err:
        encoder.transform(bad)
    assert fragment in str(err.value)


@pytest.fixture(scope="module")
def bin_model(tiny_bert, tmp_path_factory):
    """The tiny BERT's weights as pytorch_model.bin only (what older Hub repos ship)."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("tiny-bin")
    for name in os.listdir(tiny_bert):
        if not name.endswith(".safetensors"):
            shutil.copy(os.path.join(tiny_bert, name), folder / name)
    torch.save(load_file(os.path.join(tiny_bert, "model.safetensors")), folder / "pytorch_model.bin")
    return str(folder)


def test_a_model_folder_with_only_pytorch_model_bin_gives_the_same_vectors(tiny_bert, bin_model):
    from bertfeat.extract import BertEncoder, embed

    assert not [n for n in os.listdir(bin_model) if n.endswith(".safetensors")]
    a = embed([BertEncoder(model=tiny_bert, precision="fp32")], TEXTS, progress=False).vectors[0]
    b = embed([BertEncoder(model=bin_model, precision="fp32")], TEXTS, progress=False).vectors[0]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_hub_repo_with_only_bin_weights_downloads_them(bin_model, tmp_path, monkeypatch):
    """snapshot_download replaced by a local 'repo' that honours allow_patterns (no network in tests)."""
    import huggingface_hub

    from bertfeat.extract import model as model_io

    calls = []

    def snapshot_download(repo_id, allow_patterns):
        calls.append(allow_patterns)
        out = tmp_path / f"snapshot{len(calls)}"
        out.mkdir()
        for name in os.listdir(bin_model) + ["training_args.bin", "README.md"]:
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                src = os.path.join(bin_model, name)
                shutil.copy(src, out / name) if os.path.exists(src) else (out / name).write_bytes(b"x")
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    folder = model_io.resolve_model_dir("someone/tiny-bert-bin")
    assert "pytorch_model.bin" in os.listdir(folder) and "training_args.bin" not in os.listdir(folder)
    assert model_io.model_id(folder) == model_io.model_id(bin_model)
    assert len(calls) == 2 and "*.safetensors" in calls[0]  # safetensors asked for first

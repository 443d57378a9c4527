"""The vector store: hits return the stored bytes, only missing texts are embedded, damage is never served."""
import os

import numpy as np

from bertfeat.cache import VectorStore, text_keys
from bertfeat.extract import BertEncoder, embed


def test_put_get_round_trip_returns_the_same_bytes(tmp_path):
    store = VectorStore(str(tmp_path), "fp", {"x": 1})
    keys = text_keys(["a", "b", "c"])
    vecs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    store.put(keys, vecs)
    found, got = VectorStore(str(tmp_path), "fp").get(text_keys(["c", "zz", "a"]))
    assert found.tolist() == [True, False, True]
    assert got.tobytes() == vecs[[2, 0]].tobytes()
    assert os.path.exists(tmp_path / "fp" / "encoder.json")


def test_keys_tell_pairs_from_texts():
    assert len(set(text_keys(["a b", "a"], None).tolist() + text_keys(["a"], ["b"]).tolist())) == 3


def test_uncommitted_shard_is_ignored(tmp_path):
    store = VectorStore(str(tmp_path), "fp")
    shard = store.put(text_keys(["a"]), np.ones((1, 2)))
    os.unlink(tmp_path / "fp" / f"{shard}.json")  # as if killed before the commit record was written
    found, _ = VectorStore(str(tmp_path), "fp").get(text_keys(["a"]))
    assert not found.any()


def test_second_run_embeds_nothing_and_new_rows_only_are_embedded(tmp_path, demo):
    train, _ = demo
    enc = [BertEncoder()]
    first = embed(enc, train.texts[:40], cache_dir=str(tmp_path), progress=False)
    again = embed(enc, train.texts[:40], cache_dir=str(tmp_path), progress=False)
    more = embed(enc, train.texts[:50], cache_dir=str(tmp_path), progress=False)
    assert (first.n_embedded, again.n_embedded, again.n_cached, more.n_embedded) == (40, 0, 40, 10)
    assert again.vectors[0].tobytes() == first.vectors[0].tobytes()
    np.testing.assert_array_equal(more.vectors[0][:40], first.vectors[0])


def test_corrupt_shard_is_detected_and_its_rows_embedded_again(tmp_path, demo, caplog):
    train, _ = demo
    enc = [BertEncoder()]
    first = embed(enc, train.texts[:20], cache_dir=str(tmp_path), progress=False)
    (vec_file,) = [p for p in (tmp_path / enc[0].fingerprint()).iterdir() if p.name.endswith(".vectors.npy")]
    data = bytearray(vec_file.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # flip the last float to +inf
    vec_file.write_bytes(bytes(data))
    again = embed(enc, train.texts[:20], cache_dir=str(tmp_path), progress=False)
    assert again.n_embedded == 20
    assert vec_file.name in caplog.text and "checksum" in caplog.text
    np.testing.assert_allclose(again.vectors[0], first.vectors[0], atol=1e-6)


def test_pair_keys_are_unambiguous():
    # A separator inside a text must not let (text, pair) pass for another split of the same characters.
    assert text_keys(["a\x00b"], ["c"]) != text_keys(["a"], ["b\x00c"])
    assert text_keys(["a\x00"], [""]) != text_keys(["a"], ["\x00"])
    assert text_keys(["p\x00a"]) != text_keys(["a"], [""])  # no text keys like a pair either


def test_cache_version_is_in_the_key_and_old_entries_are_not_served(tiny_bert, tmp_path, monkeypatch):
    from bertfeat.extract import encoder as encoder_module

    current = encoder_module.CACHE_VERSION
    assert current >= 2  # pooling moved to numpy and the text keys changed: version 1 entries mean other numbers
    enc = BertEncoder(model=tiny_bert, device="cpu")
    assert enc.cache_settings()["cache_version"] == current
    texts = ["old entry", "another old entry"]
    with monkeypatch.context() as patch:  # a cache written by a version-1 build
        patch.setattr(encoder_module, "CACHE_VERSION", 1)
        old_fingerprint = enc.fingerprint()
        assert embed([enc], texts, cache_dir=str(tmp_path), progress=False).n_embedded == 2
    assert enc.fingerprint() != old_fingerprint
    assert embed([enc], texts, cache_dir=str(tmp_path), progress=False).n_embedded == 2  # not served

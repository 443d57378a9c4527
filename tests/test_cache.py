"""The vector store: hits return the stored bytes, only missing texts are embedded, damage is never served."""
import os
import shutil

import numpy as np
import pytest

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


def test_a_record_killed_before_its_rename_is_not_a_shard(tmp_path):
    # SIGKILL between writing the record's temp file and renaming it leaves ``.tmp-<random>-<shard>.json``
    # with a whole record in it: not served, not quarantined as damage, and the rows are embedded again.
    store = VectorStore(str(tmp_path), "fp")
    shard = store.put(text_keys(["a"]), np.ones((1, 2)))
    folder = tmp_path / "fp"
    os.rename(folder / f"{shard}.json", folder / f".tmp-0123456789ab-{shard}.json")
    found, _ = VectorStore(str(tmp_path), "fp").get(text_keys(["a"]))
    assert not found.any() and not (tmp_path / "quarantine").exists()


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


# -- ONNX exports under <root>/models: checked against their manifest, rebuilt when damaged --------------
def _damage_export(folder, kind):
    import json

    if kind == "meta_value":  # one value, same size (only the checksum can tell): the old code filed wrong vectors
        text = (folder / "meta.json").read_text()
        limit = json.loads(text)["position_limit"]
        edited = text.replace(f'"position_limit": {limit}', f'"position_limit": {4:<{len(str(limit))}}')
        assert edited != text and len(edited) == len(text) and json.loads(edited)["position_limit"] == 4
        (folder / "meta.json").write_text(edited)
    elif kind == "truncated_onnx":
        data = (folder / "model.onnx").read_bytes()
        (folder / "model.onnx").write_bytes(data[:len(data) // 2])
    elif kind == "missing_meta":  # as a killed or half-copied export leaves it
        (folder / "meta.json").unlink()
    else:
        (folder / "manifest.json").unlink()


@pytest.mark.parametrize("kind", ["meta_value", "truncated_onnx", "missing_meta", "missing_manifest"])
def test_damaged_export_is_set_aside_and_rebuilt(tiny_bert, tmp_path, monkeypatch, caplog, kind):
    from bertfeat.cache.exports import verify_exports
    from bertfeat.extract import onnx_backend

    root = tmp_path / "exports"
    monkeypatch.setenv("BERTFEAT_MODELS", str(root))
    enc = BertEncoder(model=tiny_bert, precision="int8", device="cpu")
    texts = ["my card has not arrived yet", "how do I reset my password?", "refund please " * 3]
    clean = embed([enc], texts, progress=False).vectors[0]
    (folder,) = (root / "models").iterdir()
    assert verify_exports(str(root)) == {"exports": 1, "damaged": []}
    _damage_export(folder, kind)
    damaged = verify_exports(str(root))["damaged"]
    assert [d["key"] for d in damaged] == [folder.name] and damaged[0]["problem"]

    onnx_backend.load_engine.cache_clear()  # as a new process would: only the copy on disk is left
    again = embed([enc], texts, progress=False).vectors[0]
    np.testing.assert_allclose(again, clean, atol=1e-6)  # from a fresh export, as good as the first
    assert f"model export {folder}" in caplog.text and "exported again" in caplog.text
    (aside,) = (root / "quarantine" / "models").iterdir()  # moved aside, not deleted
    assert aside.name.startswith(folder.name) and (aside / "why.json").exists()
    assert verify_exports(str(root)) == {"exports": 1, "damaged": []}


def test_cache_verify_reports_a_damaged_export(export_cache, tmp_path):
    from conftest import run_cli, run_main

    cache = shutil.copytree(export_cache, tmp_path / "cache")  # an int8 export under the cache root
    (folder,) = (cache / "models").iterdir()
    run_main("cache", "verify", cache=cache, check=0)
    _damage_export(folder, "meta_value")
    proc = run_cli("cache", "verify", cache=cache, check=1)  # a real process: the exit code, no traceback
    assert f"model export {folder}: meta.json does not match its checksum" in proc.stderr
    assert "Traceback" not in proc.stderr


"""The streaming head trains from cache shards with memory bounded by a shard, not by the training set."""
import tracemalloc

import numpy as np

from bertfeat.cache import VectorStore, text_keys
from bertfeat.classify import make_head
from bertfeat.classify.stream import fit_streaming, predict_streaming


def test_sgd_trains_from_shards_without_loading_every_vector(tmp_path):
    rng = np.random.default_rng(0)
    n, dim, shard_rows = 51_200, 384, 1024  # 79 MB of vectors in 50 shards
    truth = rng.standard_normal((dim, 4)).astype(np.float32)
    keys = text_keys([f"text {i}" for i in range(n)])
    labels = np.empty(n, dtype=object)
    writer = VectorStore(str(tmp_path), "synthetic")
    for start in range(0, n, shard_rows):
        X = rng.standard_normal((min(shard_rows, n - start), dim), dtype=np.float32)
        writer.put(keys[start:start + len(X)], X)
        labels[start:start + len(X)] = (X @ truth).argmax(1).astype(str)  # a linear rule the head can learn
    vector_bytes = n * dim * 4

    store = VectorStore(str(tmp_path), "synthetic")
    assert store.found(keys).all()  # the key index is built before measuring: keys only, no vectors
    n_train = 46_000
    tracemalloc.start()
    head = fit_streaming(make_head("sgd"), store, keys[:n_train], labels[:n_train], epochs=2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # What one shard costs (its rows, a shuffled copy, SGD's float64 copy: ~6 MiB here), far from all of them.
    assert peak < vector_bytes / 5, f"peak {peak / 2**20:.0f} MiB for {vector_bytes / 2**20:.0f} MiB of vectors"

    pred = predict_streaming(head, store, keys[n_train:])
    assert (pred == labels[n_train:]).mean() > 0.8, (pred == labels[n_train:]).mean()


def test_fit_sgd_streams_from_the_cache_through_the_cli(tmp_path):
    from conftest import DEMO_TEST, DEMO_TRAIN, main_json as run_json, run_main as run_cli  # in-process

    args = ("fit", "--train", DEMO_TRAIN, "--test", DEMO_TEST, "--head", "sgd", "--cache-dir", tmp_path / "cache")
    first = run_json(*args, "--out", tmp_path / "m1")
    again = run_json(*args, "--out", tmp_path / "m2")
    assert first["embedding"]["n_embedded"] == 400 and again["embedding"]["n_embedded"] == 0
    assert again["embedding"]["dim"] == [384]
    assert first["accuracy"] == again["accuracy"] > 0.7  # same seed, same shard order, same model
    rows = run_json("predict", "--model-dir", tmp_path / "m2", "--data", DEMO_TEST, "--cache-dir", tmp_path / "cache")
    assert sum(r["label"] == r["true_label"] for r in rows) / len(rows) == again["accuracy"]

    proc = run_cli(*args, "--features", "mean+max", check=2)
    assert "--head sgd streams one feature view" in proc.stderr

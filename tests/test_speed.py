"""The fast paths: precisions (bf16 on OpenVINO, int8 on ONNX Runtime), the export cache, auto, long texts.

Real default model on a few dozen texts; no timing assertions (benchmarks/embed_speed.py measures speed).
"""
import os

import numpy as np
import pytest

from bertfeat.errors import BertfeatError
from bertfeat.extract import BertEncoder, embed, onnx_backend
from bertfeat.extract import model as model_io
from bertfeat.extract.forward import WINDOW_OVERLAP

TEXTS = ["my card has not arrived yet", "how do I reset my password?", "the router keeps dropping wifi",
         "refund please", "I was charged twice for the same order and nobody answers my emails, this is a joke"]
# How close each precision's vectors are to fp32's (cosine per text). int8 measured on 1,500 SST-2 texts:
# min 0.96, mean 0.990; on Banking77 (13k texts, benchmarks/precision_accuracy.py): min 0.981, mean 0.993,
# with the same accuracy.
MIN_COSINE = {"bf16": 0.9999, "int8": 0.95}
MEAN_COSINE = {"bf16": 0.9999, "int8": 0.98}


def _vectors(encoder, texts, pairs=None):
    return embed([encoder], texts, pairs, progress=False).vectors[0]


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def demo_texts(demo):
    train, _ = demo
    return train.texts[:48] + TEXTS


@pytest.fixture(scope="module")
def fp32_vectors(demo_texts):
    return _vectors(BertEncoder(precision="fp32", device="cpu"), demo_texts)


# -- batching -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_batching_keeps_input_order(precision, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # two streams on ONNX Runtime and OpenVINO, whatever the suite's share
    encoder = BertEncoder(precision=precision, device="cpu", batch_size=2)  # several batches, run by streams
    forward = _vectors(encoder, TEXTS)
    backward = _vectors(encoder, TEXTS[::-1])[::-1]
    # Texts of distinct lengths land in the same batches whatever the input order: identical numbers.
    np.testing.assert_array_equal(forward, backward)
    assert _cosine(forward[:-1], forward[1:]).max() < 0.9  # rows really are different texts


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-5), ("bf16", 2e-3)])
def test_padding_does_not_change_a_vector(precision, atol):
    encoder = BertEncoder(precision=precision, device="cpu")
    together = _vectors(encoder, TEXTS)  # one batch, padded to the longest text
    alone = np.vstack([_vectors(encoder, [t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=atol)


def test_int8_vectors_depend_only_slightly_on_their_batch():
    # Dynamic quantization scales activations per batch, so a vector moves a little with its batch
    # companions; it stays far closer to itself than to any other text.
    encoder = BertEncoder(precision="int8", device="cpu")
    together = _vectors(encoder, TEXTS)
    alone = np.vstack([_vectors(encoder, [t]) for t in TEXTS])
    similarity = together @ alone.T
    assert similarity.diagonal().min() > 0.95  # measured: 0.977 for "refund please", 0.986 on 20 SST-2 texts
    assert (similarity.argmax(1) == np.arange(len(TEXTS))).all()


# -- precisions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_each_precision_is_within_its_tolerance_of_fp32(precision, demo_texts, fp32_vectors):
    got = _vectors(BertEncoder(precision=precision, device="cpu"), demo_texts)
    cosine = _cosine(got, fp32_vectors)
    assert cosine.min() >= MIN_COSINE[precision], cosine.min()
    assert cosine.mean() >= MEAN_COSINE[precision], cosine.mean()


def test_fp32_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    ours = _vectors(BertEncoder(precision="fp32", device="cpu"), TEXTS)
    ref = SentenceTransformer(str(model_io.resolve_model_dir("all-MiniLM-L6-v2")), device="cpu").encode(TEXTS)
    assert _cosine(ours, ref).min() > 0.9999


def test_auto_resolves_and_the_cache_key_holds_the_resolved_precision(monkeypatch):
    # BERTFEAT_CPU_BF16 simulates each kind of CPU: `auto` must give bf16 on one with native bf16, fp32 without.
    encoder = BertEncoder(precision="auto", device="cpu")
    for native, expected in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv("BERTFEAT_CPU_BF16", native)
        assert encoder.cache_settings()["precision"] == expected
        assert encoder.fingerprint() == BertEncoder(precision=expected, device="cpu").fingerprint()
        assert embed([encoder], TEXTS[:1], progress=False).precision == expected
        assert encoder.get_params()["precision"] == "auto"  # never written back


def test_the_same_precision_on_another_engine_is_another_cache_key(monkeypatch):
    # bf16 on OpenVINO and bf16 on torch give slightly different numbers: one must never serve the other.
    encoder = BertEncoder(precision="bf16", device="cpu")
    on_openvino = encoder.cache_settings()
    assert (on_openvino["precision"], on_openvino["runtime"]) == ("bf16", "openvino")
    fingerprint = encoder.fingerprint()
    monkeypatch.setattr(model_io, "_has_openvino", lambda: False)  # a machine without OpenVINO
    on_torch = encoder.cache_settings()
    assert (on_torch["precision"], on_torch["runtime"]) == ("bf16", "torch")
    assert encoder.fingerprint() != fingerprint


def test_bad_precision_and_int8_off_the_cpu_are_user_errors():
    with pytest.raises(BertfeatError, match="unknown precision 'int4'; expected one of: auto, bf16, fp16, fp32, int8"):
        BertEncoder(precision="int4").fit()
    with pytest.raises(BertfeatError, match="unknown long-text mode 'split'; expected one of: chunk, truncate"):
        BertEncoder(long="split").fit()
    with pytest.raises(BertfeatError, match="precision 'int8' runs on the CPU only"):
        model_io.runtime_for("int8", "cuda")


# -- the export cache ---------------------------------------------------------------------------------
def test_onnx_export_is_cached_on_disk_and_reused(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.delenv("BERTFEAT_MODELS")  # exports then live under the vector cache root
    encoder = BertEncoder(model=tiny_bert, precision="int8", device="cpu", normalize=False)
    first = embed([encoder], TEXTS, cache_dir=str(tmp_path), progress=False).vectors[0]
    exports = [d for d in os.listdir(tmp_path / "models") if not d.startswith(".")]
    assert len(exports) == 1 and not [d for d in os.listdir(tmp_path / "models") if d.startswith(".tmp-")]
    model_file = tmp_path / "models" / exports[0] / "model.onnx"
    stamp = model_file.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_backend, "_export", no_export)
    onnx_backend.load_engine.cache_clear()  # as in a new process: only the copy on disk is left
    again = embed([encoder], ["a text not embedded before", "nor this one"], cache_dir=str(tmp_path), progress=False)
    assert again.n_embedded == 2 and again.precision == "int8"
    assert model_file.stat().st_mtime_ns == stamp
    assert first.shape == (len(TEXTS), 32)


# -- long texts -----------------------------------------------------------------------------------------
WORDS = "apple house river mountain table chair window door garden street city water".split()  # one token each


def test_chunk_averages_overlapping_windows():
    max_length = 8
    content = max_length - 2  # [CLS] ... [SEP]
    step = content - int(max_length * WINDOW_OVERLAP)
    long_text, short_text = " ".join(WORDS), "refund please"
    windows = [" ".join(WORDS[i:i + content]) for i in range(0, len(WORDS) - content + step, step)]
    assert " ".join(windows[-1].split()[-1:]) == WORDS[-1]
    views = [BertEncoder(precision="fp32", device="cpu", max_length=max_length, long="chunk", normalize=n)
             for n in (True, False)]
    chunked = embed(views, [long_text, short_text], progress=False)
    assert chunked.n_windowed == 1 and chunked.n_truncated == 0
    plain = [BertEncoder(precision="fp32", device="cpu", max_length=max_length, normalize=n) for n in (True, False)]
    window_result = embed(plain, windows, progress=False)
    truncated = embed(plain, [long_text, short_text], progress=False)
    assert truncated.n_truncated == 1
    normed, raw = chunked.vectors
    mean = window_result.vectors[0].mean(0)
    np.testing.assert_allclose(normed[0], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(raw[0], window_result.vectors[1].mean(0), atol=1e-4)
    assert _cosine(normed[:1], truncated.vectors[0][:1])[0] < 0.99  # the windows past the cut count
    np.testing.assert_allclose(normed[1], truncated.vectors[0][1], atol=1e-6)  # short texts: unchanged
    other = BertEncoder(precision="fp32", device="cpu", max_length=max_length)
    assert views[0].fingerprint() != other.fingerprint()

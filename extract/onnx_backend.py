"""Run an encoder from an ONNX export on the CPU: int8 on ONNX Runtime, bf16 on OpenVINO.

The export (for int8, its quantized copy) is made once and kept under the cache root::

    <cache root>/models/<key>/model.onnx       the graph: every hidden state, or only the last one
    <cache root>/models/<key>/tokenizer.json   the Rust tokenizer, so a cache hit needs no transformers import
    <cache root>/models/<key>/meta.json        the export settings, pad id, inputs, position limit
    <cache root>/models/<key>/manifest.json    size and sha256 of the three files above; written last

``<key>`` hashes the model's identity, the precision and the export settings. The folder is built under
a temp name and renamed into place, and every load checks it against its manifest (``cache.exports``):
a killed, truncated or edited export is moved aside to the quarantine and exported again, never run.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import threading
import warnings

import numpy as np

from bertfeat.cache import exports
from bertfeat.cache.files import create_temp_dir
from bertfeat.cache.store import storage_error
from bertfeat.errors import BertfeatError
from bertfeat.extract import model as model_io

log = logging.getLogger("bertfeat")

# Bump when the export recipe changes what a graph computes; it is part of every export key.
EXPORT_VERSION = 1
OPSET = 17
# int8: dynamic quantization with one scale per output channel of each weight. One scale per tensor
# (torch's default dynamic quantization) costs ~0.6 points of Banking77 accuracy on MiniLM; per channel
# costs none.
QUANTIZE = {"per_channel": True, "weight_type": "QInt8"}


def export_settings(model_dir: str, precision: str, all_hidden: bool) -> dict:
    """Everything that makes one export differ from another."""
    return {"model_sha256": model_io.model_id(model_dir), "precision": precision,
            "outputs": "all" if all_hidden else "last", "opset": OPSET, "export_version": EXPORT_VERSION,
            "quantize": QUANTIZE if precision == "int8" else None}


def export_folder(model_dir: str, precision: str, all_hidden: bool, cache_root: str) -> str:
    """The folder holding this model's export for ``precision``, checked against its manifest; exports
    (seconds for small models) on a miss, and again in place of a damaged one."""
    settings = export_settings(model_dir, precision, all_hidden)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
    models = os.path.join(cache_root, exports.MODELS)
    folder = os.path.join(models, key)
    exports.hold(folder)  # before the check: a prune now leaves it (or has removed it, and we export again)
    if os.path.lexists(folder):
        problem = _problem(folder, settings)
        if problem is None:
            return folder
        _set_aside(cache_root, folder, problem)
    log.info("exporting %s to ONNX (%s), once: %s", model_dir, precision, folder)
    try:
        os.makedirs(models, exist_ok=True)
        _remove_stale_temps(models)
        tmp = create_temp_dir(models)  # the umask's mode, as every cache folder (mkdtemp's is 0700)
    except OSError as exc:
        raise storage_error(cache_root, exc, "write the model export") from None
    try:
        meta = _export(str(model_dir), precision, all_hidden, tmp)
        with open(os.path.join(tmp, "meta.json"), "w") as fh:
            json.dump({**settings, **meta, "model_dir": str(model_dir)}, fh, indent=2, sort_keys=True)
        for name in os.listdir(tmp):  # on disk before the manifest vouches for them
            with open(os.path.join(tmp, name), "rb") as fh:
                os.fsync(fh.fileno())
        exports.write_manifest(tmp)  # last: without it the export is never used
        for _ in range(2):
            try:
                exports.publish(tmp, folder)  # renamed into place, held by this process
                break
            except OSError:
                if not os.path.lexists(folder):
                    raise
            # Another process put an export there first: use it if it checks out, else set it aside.
            exports.hold(folder)
            problem = _problem(folder, settings)
            if problem is None:
                break
            _set_aside(cache_root, folder, problem)
        else:
            raise BertfeatError(f"model export {folder}: exported twice and damaged each time by another "
                                "process; check what else writes under this folder")
    except OSError as exc:
        raise storage_error(cache_root, exc, "write the model export") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temp folder (gone after the rename)
    return folder


def _problem(folder: str, settings: dict) -> str | None:
    """What is wrong with the export in ``folder`` for ``settings``, or None: its files must match the
    manifest, and its meta.json must hold the settings its key was made from."""
    problem = exports.check_export(folder)
    if problem is None:
        try:
            with open(os.path.join(folder, "meta.json"), encoding="utf-8") as fh:
                meta = json.load(fh)
        except ValueError:
            return "meta.json is not valid JSON"
        wrong = sorted(k for k in settings if not isinstance(meta, dict) or meta.get(k) != settings[k])
        if wrong:
            problem = f"meta.json holds other settings ({', '.join(wrong)}) than its folder name says"
    return problem


def _set_aside(cache_root: str, folder: str, problem: str) -> None:
    try:
        moved = exports.set_aside(cache_root, folder, problem)
    except OSError as exc:
        raise storage_error(cache_root, exc, f"move the damaged model export {folder} aside") from None
    if moved:
        log.warning("model export %s: %s; moved to %s and exported again", folder, problem, moved)


def _remove_stale_temps(models: str, min_age_seconds: float = 3600) -> None:
    """Temp folders of exports that were killed; a younger one may belong to an export still running."""
    import time

    for name in os.listdir(models):
        path = os.path.join(models, name)
        if name.startswith(".tmp-") and time.time() - os.path.getmtime(path) >= min_age_seconds:
            shutil.rmtree(path, ignore_errors=True)


def _graph(net, all_hidden: bool, use_types: bool):
    """The model as a module whose inputs and outputs are plain tensors, as the ONNX tracer needs."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if use_types else {}
            out = self.net(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=all_hidden, **extra)
            return tuple(out.hidden_states) if all_hidden else out.last_hidden_state

    return Graph().eval()


def _export(model_dir: str, precision: str, all_hidden: bool, folder: str) -> dict:
    import torch

    tokenizer = model_io.load_tokenizer(model_dir)
    # Eager attention traces to plain MatMul/Softmax nodes that both runtimes know how to optimise (an
    # SDPA export measured no faster); a model without an eager implementation exports its default one.
    try:
        net = model_io.load_encoder(model_dir, dtype=torch.float32, attn_implementation="eager")
    except (ValueError, TypeError):
        net = model_io.load_encoder(model_dir, dtype=torch.float32)
    net.eval().requires_grad_(False)
    use_types = "token_type_ids" in tokenizer.model_input_names
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if use_types else [])
    n_out = net.config.num_hidden_layers + 1 if all_hidden else 1
    outputs = [f"hidden_{i}" for i in range(n_out)] if all_hidden else ["last_hidden_state"]
    graph = _graph(net, all_hidden, use_types)
    # The example must contain padding, or the tracer may record the "no padding" shortcut of the mask code.
    example = _example(2, 8, tokenizer)
    path = os.path.join(folder, "model.onnx")
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the check below is what counts
        torch.onnx.export(graph, tuple(example[n] for n in names), path, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=outputs, do_constant_folding=True,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names + outputs})
    _check_export(graph, path, names, _example(3, 11, tokenizer), model_dir)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = os.path.join(folder, "model.int8.onnx")
        with _quiet_root_logger():  # the quantizer warns through the root logger about optional pre-processing
            quantize_dynamic(path, quantized, per_channel=QUANTIZE["per_channel"],
                             weight_type=getattr(QuantType, QUANTIZE["weight_type"]))
        os.replace(quantized, path)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as fh:
        fh.write(tokenizer.backend_tokenizer.to_str())
    # "output_names", not "outputs": meta.json holds the export settings at its top level too (their
    # "outputs" is "all" or "last"), and the folder's key must be computable from them.
    return {"inputs": names, "output_names": outputs, "pad_id": tokenizer.pad_token_id or 0,
            "position_limit": model_io.position_limit(tokenizer, net.config), "hidden_size": net.config.hidden_size}


def _example(rows: int, tokens: int, tokenizer) -> dict:
    import torch

    gen = torch.Generator().manual_seed(0)
    high = min(tokenizer.vocab_size, 20000)
    ids = torch.randint(min(1000, high // 2), high, (rows, tokens), generator=gen)  # past most special tokens
    mask = torch.ones_like(ids)
    for r in range(1, rows):
        mask[r, tokens - 2 * r:] = 0  # every row but the first is padded, each by a different amount
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _check_export(graph, path: str, names: list[str], example: dict, model_dir: str) -> None:
    """Run the fresh fp32 graph on another shape than the traced one; it must match torch."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {n: example[n].numpy() for n in names})
    with torch.inference_mode():
        want = graph(*(example[n] for n in names))
    want = want if isinstance(want, tuple) else (want,)
    keep = example["attention_mask"].bool().numpy()
    worst = max(float(np.abs(g - w.numpy())[keep].max() / max(1.0, np.abs(w.numpy()).max()))
                for g, w in zip(got, want))
    if worst > 1e-3:
        raise BertfeatError(f"model {model_dir}: the ONNX export does not reproduce the model (relative "
                            f"difference {worst:.2g}); use precision='fp32'")


@contextlib.contextmanager
def _quiet_root_logger():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class OnnxEngine:
    """One exported model on ``runtime`` ("onnxruntime" or "openvino"), run by ``streams`` threads of one
    inference thread each: one single-thread stream per core beats one multi-thread stream on the small
    batches a CPU runs (3-15 % measured: less synchronisation, no idle threads at batch edges)."""

    def __init__(self, folder: str, runtime: str, precision: str, streams: int):
        with open(os.path.join(folder, "meta.json")) as fh:
            self.meta = json.load(fh)
        self.folder = folder
        self.streams = streams
        path = os.path.join(folder, "model.onnx")
        if runtime == "onnxruntime":
            self._run = _ort_runner(path)
        elif runtime == "openvino":
            self._run = _openvino_runner(path, precision, streams)
        else:
            raise BertfeatError(f"unknown runtime '{runtime}'; expected one of: onnxruntime, openvino")
        # One call on this thread before any stream thread runs: the first calls into a pybind11 binding
        # initialise its numpy bridge, and two threads doing that at once deadlocked OpenVINO 2026.4.
        tiny = np.ones((1, 2), dtype=np.int64)
        self.run({"input_ids": tiny, "attention_mask": tiny, "token_type_ids": np.zeros_like(tiny)})

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Inputs by name (int64 numpy) -> the graph's outputs, float32, in meta["output_names"] order."""
        return self._run({name: feed[name] for name in self.meta["inputs"]})


def _ort_runner(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread per stream (OnnxEngine)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings are about optional graph rewrites, not results
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)  # run() is thread-safe and releases the GIL


def _openvino_runner(path: str, precision: str, streams: int):
    import openvino as ov

    core = ov.Core()
    # On a CPU without native bf16, OpenVINO ignores the hint and computes in fp32.
    # OpenVINO pins its stream threads to cores, counting from the first: two processes that each use
    # fewer threads than there are cores (Ray actors, parallel jobs) were pinned to the same core and
    # ran at half speed. Pin only a process that has every core to itself.
    pin = streams >= model_io.cpu_threads(all_cores=True)
    compiled = core.compile_model(core.read_model(path), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams, "INFERENCE_NUM_THREADS": streams,
        "ENABLE_CPU_PINNING": pin})
    local = threading.local()  # one infer request per calling thread; requests are not thread-safe

    def run(feed):
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        result = request.infer(feed)  # copies the outputs, so the next call cannot overwrite them
        return [result[out] for out in compiled.outputs]

    return run


@functools.lru_cache(maxsize=4)
def load_engine(model_dir: str, identity: str, precision: str, runtime: str, all_hidden: bool, cache_root: str,
                streams: int) -> OnnxEngine:
    """Export if needed, then load once per process and model version (``identity``: ``model.model_id``),
    as ``model.load_model`` does for torch."""
    folder = export_folder(model_dir, precision, all_hidden, cache_root)
    return OnnxEngine(folder, runtime, precision, streams)

"""The forward pass: one loaded model (torch, or an ONNX export on a CPU) serving several encoders' views."""
from __future__ import annotations

import collections
import logging
import os

import numpy as np

from bertfeat.errors import BertfeatError
from bertfeat.extract import batching, model as model_io
from bertfeat.extract.pooling import parse_layers, pool_layers

log = logging.getLogger("bertfeat")

# Encoders that agree on these can share one forward pass and differ only in pooling / layers / normalize.
FORWARD_PARAMS = ("long", "max_length", "model", "precision")
# Overlap between the windows of a long text (long="chunk"), as a share of max_length: each window
# boundary then falls well inside another window.
WINDOW_OVERLAP = 0.25


class Forward:
    """One loaded model serving several encoders (views) that share FORWARD_PARAMS.

    ``model_cache``: the cache root that keeps ONNX exports (int8 and bf16 on a CPU run from one).
    """

    def __init__(self, encoders: list, model_cache: str | None = None):
        first = encoders[0]
        for enc in encoders:
            enc.validate()
            if any(getattr(enc, p) != getattr(first, p) for p in FORWARD_PARAMS):
                raise BertfeatError(f"encoders share one forward pass only if {', '.join(FORWARD_PARAMS)} agree")
        check_layers(encoders, model_io.resolve_model_dir(first.model))  # before the model (or an export) loads
        self.device = model_io.resolve_device(first.device)
        self.precision, self.runtime = first.resolve_precision(self.device)
        log.info("encoder %s on %s, %s via %s", first.model, self.device, self.precision, self.runtime)
        self.views = [(enc.pooling, parse_layers(enc.layers), enc.normalize) for enc in encoders]
        self.all_hidden = any(layers != (-1,) for _, layers, _ in self.views)
        model_dir = str(model_io.resolve_model_dir(first.model))
        identity = model_io.model_id(model_dir)  # loaded models are kept per version of the folder's files
        if self.runtime == "torch":
            import torch

            self._torch = torch
            tokenizer, self.net = model_io.load_model(model_dir, identity, self.device, self.precision)
            self.engine = None
            tokenizer_json = tokenizer.backend_tokenizer.to_str()
            limit = model_io.position_limit(tokenizer, self.net.config)
            self.inputs = ["input_ids", "attention_mask"] + \
                (["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else [])
            self.pad_id = tokenizer.pad_token_id or 0
            self.streams = 1  # torch already spreads one batch over every core
        else:
            from bertfeat.cache import default_cache_dir
            from bertfeat.extract import onnx_backend

            self.engine = onnx_backend.load_engine(model_dir, identity, self.precision, self.runtime,
                                                   self.all_hidden, model_cache or default_cache_dir(),
                                                   model_io.cpu_threads())
            meta = self.engine.meta
            with open(os.path.join(self.engine.folder, "tokenizer.json"), encoding="utf-8") as fh:
                tokenizer_json = fh.read()
            limit, self.inputs, self.pad_id = meta["position_limit"], meta["inputs"], meta["pad_id"]
            self.streams = self.engine.streams
        self.max_length = min(first.max_length, limit)
        self.windows = first.long == "chunk"
        stride = int(self.max_length * WINDOW_OVERLAP) if self.windows else 0
        self.backend = batching.backend_for(tokenizer_json, self.max_length, stride)
        # Padded tokens per batch: large batches keep a GPU busy; on a CPU they only add padding work
        # and fall out of cache (2,048 ran 10-25% faster than 8,192 on the ONNX runtimes).
        self.max_tokens = 65536 if self.device != "cpu" else 2048
        self.max_texts = first.batch_size

    def run(self, batch_ids: list[np.ndarray], batch_types: list[np.ndarray]) -> list[np.ndarray]:
        """Forward one batch; returns one float32 array per view, rows in batch order."""
        ids, mask = batching.pad(batch_ids, self.pad_id)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = batching.pad(batch_types, 0)[0]
        if self.engine is not None:
            hidden = self.engine.run(feed)
            return [pool_layers(hidden, mask, pooling, layers, normalize, np)
                    for pooling, layers, normalize in self.views]
        torch = self._torch
        with torch.inference_mode():
            hidden, mask_t = self._torch_forward(feed)
            return [pool_layers(hidden, mask_t, pooling, layers, normalize, torch).cpu().numpy()
                    for pooling, layers, normalize in self.views]

    def _torch_forward(self, feed: dict[str, np.ndarray]):
        torch = self._torch
        non_blocking = self.device.startswith("cuda")
        inputs = {k: (t.pin_memory() if non_blocking else t).to(self.device, non_blocking=non_blocking)
                  for k, t in ((k, torch.from_numpy(v)) for k, v in feed.items())}
        out = self.net(**inputs, output_hidden_states=self.all_hidden)
        hidden = out.hidden_states if self.all_hidden else (out.last_hidden_state,)
        return hidden, inputs["attention_mask"]

    def map(self, tok: batching.Tokenized, batches: list[np.ndarray]):
        """Yield ``(batch, outputs)`` for each batch, in order; with several streams, batches overlap."""
        def one(batch):
            return batch, self.run([tok.ids[k] for k in batch], [tok.types[k] for k in batch])

        if self.streams == 1:
            yield from map(one, batches)
            return
        from concurrent.futures import ThreadPoolExecutor

        # A bounded look-ahead: results come back in order and memory stays flat on any input size.
        with ThreadPoolExecutor(self.streams, thread_name_prefix="bertfeat-stream") as pool:
            ahead = collections.deque()
            for batch in batches:
                ahead.append(pool.submit(one, batch))
                if len(ahead) > 2 * self.streams:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()


def check_layers(encoders: list, model_dir: str) -> None:
    """Refuse a --layers index the model does not have, naming the range it does have.

    The model has its layers plus the embedding output: ``num_hidden_layers + 1`` hidden states.
    A config without a layer count (not BERT-like) is left to the forward pass.
    """
    import json

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    n_layers = next((config[k] for k in ("num_hidden_layers", "n_layers", "n_layer", "num_layers")
                     if isinstance(config.get(k), int)), None)
    if n_layers is None:
        return
    for enc in encoders:
        deepest = min(parse_layers(enc.layers))
        if -deepest > n_layers + 1:
            raise BertfeatError(
                f"bad layers='{enc.layers}': {enc.model} has {n_layers} layers ({n_layers + 1} hidden states "
                f"with the embeddings); pass indexes from -1 (last) to -{n_layers + 1}, e.g. -{n_layers}:"
            )

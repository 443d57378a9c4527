"""The torch side of a fine-tune: tokenized data, the network (body + mean pooling + optional layer), AdamW with
warm-up and linear decay, bf16 autocast, gradient accumulation, validation. Driven by ``extract/finetune.py``."""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys

import numpy as np

from bertfeat.errors import BertfeatError
from bertfeat.extract import checkpoint, model as model_io
from bertfeat.extract.tuning_data import length_bucketed, micro_batches, pad, sample_pairs, split_validation

log = logging.getLogger("bertfeat")

# The layer starts from scratch while the body only adjusts: at the body's rate it would need many epochs.
HEAD_LR_SCALE = 10.0
WARMUP = 0.1  # share of all steps spent warming the learning rate up from 0
WEIGHT_DECAY = 0.01  # AdamW's, not on biases and LayerNorm weights (BERT's recipe)
# Padded tokens per micro-batch: on a CPU larger batches only add padding work; a GPU wants more.
MAX_TOKENS = {"cpu": 8192, "cuda": 131072, "mps": 16384}


def autocast_dtype(device: str) -> str:
    """bf16 where the hardware computes it natively (emulated bf16 is slower than fp32), else fp32."""
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device == "cpu" and model_io.cpu_has_bf16() else "fp32"


class Trainer:
    """The torch side of one fine-tune: tokenized data, the network, the optimizer."""

    def __init__(self, s, base_dir: str, texts, y, n_classes: int, progress: bool):
        import torch

        self.torch, self.s, self.y, self.progress = torch, s, y, progress
        self.device = model_io.resolve_device(s.device)
        self.autocast = autocast_dtype(self.device)
        self.max_tokens = MAX_TOKENS.get(self.device.split(":")[0], 8192)
        self.tokenizer = model_io.load_tokenizer(base_dir)
        torch.manual_seed(s.seed)
        body = model_io.load_encoder(base_dir)
        limit = model_io.position_limit(self.tokenizer, body.config)
        self.ids = self.tokenizer(list(texts), truncation=True, max_length=min(s.max_length, limit))["input_ids"]
        self.lengths = np.asarray([len(x) for x in self.ids])
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.train_rows, self.val_rows = split_validation(y, s.val_size, s.seed)
        self.net = _net_class()(body, n_classes if s.method == "full" else 0).to(self.device)
        self.n_pairs = len(self._pairs(0)) if s.method == "setfit" else 0
        items = self.n_pairs if s.method == "setfit" else len(self.train_rows)
        self.steps_per_epoch = max(1, math.ceil(items / s.batch_size))
        self.total_steps = self.steps_per_epoch * s.epochs
        decay, no_decay = [], []
        for name, p in self.net.body.named_parameters():
            (no_decay if p.ndim < 2 else decay).append(p)  # biases and LayerNorm weights are vectors
        groups = [{"params": decay, "weight_decay": WEIGHT_DECAY, "lr": s.lr},
                  {"params": no_decay, "weight_decay": 0.0, "lr": s.lr}]
        if self.net.head is not None:
            groups.append({"params": list(self.net.head.parameters()), "weight_decay": 0.0,
                           "lr": s.lr * HEAD_LR_SCALE})
        self.optimizer = torch.optim.AdamW(groups)
        self.base_lrs = [g["lr"] for g in groups]

    # -- state ------------------------------------------------------------------------------------
    def optimizer_state(self) -> dict:
        out = {"optimizer": self.optimizer.state_dict(), "rng": self.torch.get_rng_state()}
        if self.device.startswith("cuda"):
            out["cuda_rng"] = self.torch.cuda.get_rng_state()
        return out

    def restore(self, state: dict) -> None:
        from safetensors.torch import load_model

        load_model(self.net, os.path.join(state["path"], checkpoint.WEIGHTS), device=self.device)
        saved = checkpoint.load_optimizer_state(state)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.torch.set_rng_state(saved["rng"])
        if "cuda_rng" in saved and self.device.startswith("cuda"):
            self.torch.cuda.set_rng_state(saved["cuda_rng"])

    def save_encoder(self, folder: str, best_weights: str) -> str:
        """The best epoch's body as a model folder (safetensors, config, tokenizer), renamed into place."""
        from safetensors.torch import load_model

        if os.path.isfile(os.path.join(folder, "config.json")):  # saved before a kill in the final steps
            load_model(self.net, best_weights, device=self.device)
            return folder
        load_model(self.net, best_weights, device=self.device)
        tmp = folder + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.net.body.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        mask = os.umask(0)
        os.umask(mask)
        for name in os.listdir(tmp):  # the weights come out 0600 (written via a temp file); share like the rest
            os.chmod(os.path.join(tmp, name), 0o666 & ~mask)
        os.replace(tmp, folder)
        return folder

    # -- training ---------------------------------------------------------------------------------
    def _pairs(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.s.seed, epoch])  # fresh pairs each epoch, the same on resume
        rows = self.train_rows
        pairs = sample_pairs(self.y[rows], self.s.pairs_per_text, self.s.max_pairs, rng)
        return np.stack([rows[pairs[:, 0]], rows[pairs[:, 1]], pairs[:, 2]], 1)

    def _lr_factor(self, step: int) -> float:
        warm = max(1, int(WARMUP * self.total_steps))
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warm))

    def _autocast(self):
        import contextlib

        if self.autocast == "fp32":
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.split(":")[0], dtype=self.torch.bfloat16)

    def _tensors(self, rows):
        ids, mask = pad([self.ids[r] for r in rows], self.pad_id)
        return (self.torch.from_numpy(ids).to(self.device), self.torch.from_numpy(mask).to(self.device))

    def _loss(self, groups: list[list[int]], targets):
        """Summed loss of one micro-batch (the caller divides by the batch size)."""
        torch, F = self.torch, self.torch.nn.functional
        rows = [r for g in groups for r in g]
        with self._autocast():
            pooled = self.net.embed(*self._tensors(rows))
        if self.net.head is not None:
            logits = self.net.head(self.net.dropout(pooled))
            return F.cross_entropy(logits.float(), torch.as_tensor(targets, device=self.device), reduction="sum")
        cos = F.cosine_similarity(pooled[0::2], pooled[1::2])
        return F.mse_loss(cos, torch.as_tensor(targets, dtype=torch.float32, device=self.device), reduction="sum")

    def train_epoch(self, epoch: int, step: int) -> float:
        """One pass over the training rows (full) or the epoch's pairs (setfit); returns the mean loss."""
        from tqdm.auto import tqdm

        self.net.train()
        rng = np.random.default_rng([self.s.seed, epoch])
        if self.s.method == "full":
            rows = self.train_rows[length_bucketed(self.lengths[self.train_rows], self.s.batch_size, rng)]
            items = [([int(r)], int(self.y[r])) for r in rows]
        else:  # a pair's padded length is its longer text's
            pairs = self._pairs(epoch)
            longer = np.maximum(self.lengths[pairs[:, 0]], self.lengths[pairs[:, 1]])
            pairs = pairs[length_bucketed(longer, self.s.batch_size, rng)]
            items = [([int(a), int(b)], float(t)) for a, b, t in pairs]
        total = 0.0
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.s.epochs}", unit="step",
                   file=sys.stderr, disable=not self.progress, dynamic_ncols=True, mininterval=0.5)
        for start in range(0, len(items), self.s.batch_size):
            batch = items[start:start + self.s.batch_size]
            for group, lr in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = lr * self._lr_factor(step)
            total += self._step(batch)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / min(start + len(batch), len(items)):.4f}", refresh=False)
        bar.close()
        return total / max(len(items), 1)

    def _step(self, batch) -> float:
        """One optimizer step over ``batch``, accumulated over micro-batches; on a GPU out of memory, the
        token budget halves and the step starts again. Returns the batch's summed loss."""
        torch = self.torch
        while True:
            self.optimizer.zero_grad(set_to_none=True)
            summed = 0.0
            try:
                for micro in micro_batches([g for g, _ in batch], self.lengths, self.max_tokens):
                    loss = self._loss([batch[i][0] for i in micro], [batch[i][1] for i in micro])
                    (loss / len(batch)).backward()  # the mean over the whole batch, however it is cut
                    summed += float(loss.detach())
            except torch.OutOfMemoryError:
                if self.max_tokens <= 256:
                    raise BertfeatError("out of GPU memory even at 256 tokens per micro-batch; lower "
                                        "max_length= or use device='cpu'") from None
                self.max_tokens //= 2
                torch.cuda.empty_cache()
                log.warning("out of GPU memory: micro-batches of %d tokens from now on", self.max_tokens)
                continue
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.optimizer.step()
            return summed

    def evaluate(self) -> dict:
        """Validation scores of the current weights: loss and accuracy of the layer (full), or accuracy of a
        logistic regression fit on the training rows' tuned vectors (setfit). Empty without a validation split."""
        if not len(self.val_rows):
            return {}
        if self.s.method == "full":
            logits = self._pooled(self.val_rows, head=True)
            y = self.y[self.val_rows]
            shifted = logits - logits.max(1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
            return {"val_loss": float(-log_p[np.arange(len(y)), y].mean()),
                    "val_accuracy": float((logits.argmax(1) == y).mean())}
        from sklearn.linear_model import LogisticRegression

        vecs = self._pooled(np.concatenate([self.train_rows, self.val_rows]), head=False)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        n = len(self.train_rows)
        clf = LogisticRegression(max_iter=1000).fit(vecs[:n], self.y[self.train_rows])
        return {"val_accuracy": float((clf.predict(vecs[n:]) == self.y[self.val_rows]).mean())}

    def _pooled(self, rows: np.ndarray, head: bool) -> np.ndarray:
        """Mean-pooled vectors (or the layer's logits) of ``rows``, in eval mode, length-sorted batches."""
        torch = self.torch
        self.net.eval()
        out = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: self.lengths[rows[i]])
        with torch.inference_mode():
            for micro in micro_batches([[int(rows[i])] for i in order], self.lengths, self.max_tokens):
                picked = [order[i] for i in micro]
                with self._autocast():
                    pooled = self.net.embed(*self._tensors([int(rows[i]) for i in picked]))
                    values = self.net.head(pooled) if head else pooled
                for i, v in zip(picked, values.float().cpu().numpy()):
                    out[i] = v
        return np.stack(out)

    def log_epoch(self, entry: dict, best: bool) -> None:
        parts = [f"epoch {entry.get('epoch', 0)}/{self.s.epochs}"]
        if "train_loss" in entry:
            parts.append(f"train loss {entry['train_loss']:.4f}")
        if entry.get("val_loss") is not None:
            parts.append(f"val loss {entry['val_loss']:.4f}")
        if entry.get("val_accuracy") is not None:
            parts.append(f"val acc {entry['val_accuracy']:.4f}" + (" (best)" if best else ""))
        log.info("%s", ", ".join(parts) if len(parts) > 1 else parts[0] + ": no validation split")


def _net_class():
    import torch

    class Net(torch.nn.Module):
        """The body, masked mean pooling in float32, and (full) dropout + a linear layer."""

        def __init__(self, body, n_classes: int):
            super().__init__()
            self.body = body
            self.dropout = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(body.config.hidden_size, n_classes) if n_classes else None

        def embed(self, ids, mask):
            hidden = self.body(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            keep = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    return Net

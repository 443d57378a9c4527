"""Turn a forward pass's hidden states into one vector per text: pick layers, pool tokens, concatenate."""
from __future__ import annotations

from bertfeat.errors import BertfeatError

POOLINGS = ("cls", "max", "mean")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise BertfeatError(f"unknown pooling '{pooling}'; expected one of: {', '.join(POOLINGS)}")
    return pooling


def parse_layers(spec: str | int) -> tuple[int, ...]:
    """Layer spec -> negative layer indexes into ``hidden_states``.

    ``-1`` is the last layer, ``-2`` the one before, ``-4:`` the last four (concatenated, as in the
    BERT paper's feature-based recipe), ``-4,-1`` a list.
    """
    text = str(spec).strip()
    try:
        if text.endswith(":"):
            start = int(text[:-1])
            if start >= 0:
                raise ValueError
            return tuple(range(start, 0))
        layers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BertfeatError(
            f"bad layers='{spec}'; expected a negative layer index (-1 = last), a list (-4,-1) or a tail (-4:)"
        ) from None
    if not layers or any(layer >= 0 for layer in layers):
        raise BertfeatError(f"bad layers='{spec}'; use negative indexes: -1 is the last layer")
    return layers


def pool(hidden, mask, pooling: str, xp):
    """Pool (batch, tokens, dim) states with a (batch, tokens) attention mask, ignoring padding.

    ``xp`` is the array namespace, numpy or torch: ONNX outputs pool on the host without importing torch,
    torch outputs pool where they are (a GPU), so only the pooled vectors cross to the host.
    """
    if pooling == "cls":
        return hidden[:, 0]
    keep = mask[:, :, None] != 0
    if pooling == "max":  # finite, so a row without tokens stays finite instead of -inf (NaN once normalized)
        return xp.amax(xp.where(keep, hidden, xp.finfo(hidden.dtype).min), 1)
    counts = xp.asarray(xp.clip(xp.sum(keep, 1), 1, None), dtype=hidden.dtype)
    return xp.sum(xp.where(keep, hidden, 0), 1) / counts


def pool_layers(hidden_states, mask, pooling: str, layers: tuple[int, ...], normalize: bool, xp):
    """Pool each chosen layer in float32 (only those: on a GPU all layers in float32 would cost
    gigabytes), concatenate, optionally L2-normalize."""
    parts = [pool(xp.asarray(hidden_states[layer], dtype=xp.float32), mask, pooling, xp) for layer in layers]
    vec = parts[0] if len(parts) == 1 else xp.concatenate(parts, -1)
    if normalize:
        vec = vec / xp.clip(xp.linalg.norm(vec, axis=-1, keepdims=True), 1e-12, None)
    return vec

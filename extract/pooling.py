"""Turn a forward pass's hidden states into one vector per text: pick layers, pool tokens, concatenate."""
from __future__ import annotations

import torch

from errors import BertfeatError

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
            f"bad --layers '{spec}'; expected a negative layer index (-1 = last), a list (-4,-1) or a tail (-4:)"
        ) from None
    if not layers or any(layer >= 0 for layer in layers):
        raise BertfeatError(f"bad --layers '{spec}'; use negative indexes: -1 is the last layer")
    return layers


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (batch, tokens, dim) states with a (batch, tokens) attention mask, ignoring padding."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def pool_layers(hidden_states, mask: torch.Tensor, pooling: str, layers: tuple[int, ...]) -> torch.Tensor:
    """Pool each chosen layer and concatenate, in float32."""
    parts = [pool(hidden_states[layer].float(), mask, pooling) for layer in layers]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

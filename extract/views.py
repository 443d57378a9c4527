"""Feature views: ``mean``, ``mean+max``, ``cls@-2``: which encoders (pooling x layers) make one feature vector."""
from __future__ import annotations

from sklearn.base import clone

from bertfeat.errors import BertfeatError
from bertfeat.extract.encoder import BertEncoder


def feature_encoders(spec: str, base: BertEncoder) -> list[BertEncoder]:
    """A feature view -> its encoders: ``mean``, ``mean+max`` (concatenated), ``cls@-2``, ``mean@-4:``.

    Each ``+`` part is a pooling with optional ``@layers``; the rest of the settings come from ``base``.
    """
    encoders = []
    for part in str(spec).split("+"):
        pooling, _, layers = part.strip().partition("@")
        encoder = clone(base).set_params(pooling=pooling, **({"layers": layers} if layers else {}))
        try:
            encoder.validate()
        except BertfeatError as exc:
            raise BertfeatError(f"feature view '{spec}': {exc}") from None
        encoders.append(encoder)
    return encoders

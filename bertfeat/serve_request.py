"""A ``bertfeat serve`` predict request: its body's schema, and the one-sentence reason a body or a request
is refused (400 for a body that is not JSON, 422 for one the model cannot take)."""
from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from bertfeat.batcher import Served
from bertfeat.extract.cells import is_blank


class PredictRequest(BaseModel):
    """Texts to label, in order; ``pairs``: the second text of each, for a model fit with ``--pair-col``."""
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["my parcel is late"]}]})
    texts: list[StrictStr] = Field(description="texts to label (at most --max-texts)")
    pairs: list[StrictStr] | None = Field(None, description="one second text per text, for a pair model")


# The body is parsed by hand (any content type, our own error messages); the docs still show its schema.
BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": PredictRequest.model_json_schema()}}}}


def parse_body(raw: bytes) -> PredictRequest | tuple[int, str]:
    """The request, or (status, message) naming what is wrong with the body."""
    if not raw.strip():
        return 400, "the body is empty; send {\"texts\": [\"...\"]} as JSON"
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        return 400, f"the body is not valid JSON ({exc}); send {{\"texts\": [\"...\"]}}"
    try:
        return PredictRequest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        parts = [f"{''.join(f'[{x}]' if isinstance(x, int) else f'.{x}' for x in e['loc']).lstrip('.') or 'body'}: "
                 f"{e['msg']}" for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return 422, "; ".join(parts) + more + "; send {\"texts\": [\"...\"]}, a list of strings"


def request_problem(body: PredictRequest, model: Served, max_texts: int, max_text_chars: int) -> str | None:
    """What makes ``body`` unfit for ``model``, in one sentence; None when it is fine."""
    texts, pairs, pair_col = body.texts, body.pairs, model.clf.pair_col
    if not texts:
        return "texts is an empty list; give at least one text"
    if len(texts) > max_texts:
        return f"{len(texts)} texts, more than --max-texts {max_texts}; send them in several requests"
    if pair_col and pairs is None:
        return (f"model '{model.name}' was trained on text pairs (pair column '{pair_col}'): give \"pairs\", "
                "one per text")
    if not pair_col and pairs is not None:
        return f"model '{model.name}' was trained on single texts, not pairs: leave out \"pairs\""
    if pairs is not None and len(pairs) != len(texts):
        return f"{len(texts)} texts but {len(pairs)} pairs; give one pair per text"
    for field, values in (("texts", texts), ("pairs", pairs or ())):
        for i, text in enumerate(values):
            if len(text) > max_text_chars:
                return (f"{field}[{i}] has {len(text)} characters, more than --max-text-chars "
                        f"{max_text_chars}; shorten it (the model reads its first tokens only)")
            if is_blank(text):
                return f"{field}[{i}] is empty (only spaces or invisible characters); give a text"
    return None

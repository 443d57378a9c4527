"""How many cross-validation folds a training set allows (bench and fit select by CV: classify/selection.py)."""
from __future__ import annotations

import logging

import numpy as np

from bertfeat.errors import BertfeatError

log = logging.getLogger("bertfeat")


def fold_count(y, cv: int, source: str = "training set") -> int:
    """The folds a stratified ``cv``-fold split of ``y`` can have: at most the smallest class's row count
    (with a warning when that is fewer than asked); a class of a single row is an error naming it."""
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    smallest = int(counts.min())
    if smallest < 2:
        rare = ", ".join(repr(str(lab)) for lab in labels[counts < 2][:5])
        raise BertfeatError(f"{source}: class(es) {rare} have a single row; cross-validation needs at least 2 "
                            "training rows of every class: add rows, or remove those classes")
    if smallest < cv:
        log.warning("cv=%d: the smallest class in %s has %d rows, so %d folds are used", cv, source,
                    smallest, smallest)
    return min(cv, smallest)

"""A head's small hyper-parameter grid (``Head.grid``), searched by successive halving with cross-validation.

Grids stay small on purpose: bench answers "which head, on which features" in minutes, not hours.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the class)
from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, StratifiedKFold

from bertfeat.errors import BertfeatError

log = logging.getLogger("bertfeat")
FACTOR = 3  # halving: each round keeps a third of the candidates and gives them three times the rows


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
        log.warning("--cv %d: the smallest class in %s has %d rows, so %d folds are used", cv, source,
                    smallest, smallest)
    return min(cv, smallest)


def tune(head, grid: dict, X, y, cv: int, seed: int):
    """Search ``grid`` with ``cv``-fold halving search; returns (refit best head, params, cv score).

    An empty grid cross-validates the head's defaults on every row, then refits them. A training set too
    small for halving rounds (fewer than 2 x folds x classes rows in the first round) is searched whole.
    """
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    n_classes = len(np.unique(np.asarray(y)))
    if len(y) >= 2 * cv * n_classes * FACTOR:
        # 'exhaust': the last round always uses every training row, so best_score_ is a full CV score.
        search = HalvingGridSearchCV(head, grid, cv=folds, factor=FACTOR, scoring="accuracy", refit=True,
                                     random_state=seed, n_jobs=1, error_score="raise", min_resources="exhaust")
    else:
        search = GridSearchCV(head, grid, cv=folds, scoring="accuracy", refit=True, n_jobs=1, error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small halving rounds warn about rare classes; the final round is full
        search.fit(X, y)
    return search.best_estimator_, search.best_params_, float(search.best_score_)

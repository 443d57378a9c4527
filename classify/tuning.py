"""A head's small hyper-parameter grid (``Head.grid``), searched by successive halving with cross-validation.

Grids stay small on purpose: bench answers "which head, on which features" in minutes, not hours.
"""
from __future__ import annotations

import warnings

from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the class)
from sklearn.model_selection import HalvingGridSearchCV, StratifiedKFold

def tune(head, grid: dict, X, y, cv: int, seed: int):
    """Search ``grid`` with ``cv``-fold halving search; returns (refit best head, params, cv score).

    An empty grid cross-validates the head's defaults on every row, then refits them.
    """
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    # 'exhaust': the last round always uses every training row, so best_score_ is a full CV score.
    search = HalvingGridSearchCV(head, grid, cv=folds, factor=3, scoring="accuracy", refit=True,
                                 random_state=seed, n_jobs=1, error_score="raise", min_resources="exhaust")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small halving rounds warn about rare classes; the final round is full
        search.fit(X, y)
    return search.best_estimator_, search.best_params_, float(search.best_score_)


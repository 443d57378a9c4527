"""Small hyper-parameter grids per head, searched by successive halving with cross-validation.

Grids stay small on purpose: bench answers "which head, on which features" in minutes, not hours.
Parameter names are those of the registry's estimator (``step__param`` for a Pipeline).
"""
from __future__ import annotations

import warnings

from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the class)
from sklearn.model_selection import HalvingGridSearchCV, StratifiedKFold

# Three candidates halve well (a third of the rows, then all of them for the winner); two would
# both need the full cross-validation, so the heads that early-stop on a validation split of their
# own (mlp, torch) or whose members are already tuned (vote) keep their defaults, and so does lgbm,
# whose single fit costs most.
GRIDS = {
    "knn": {"n_neighbors": [5, 10, 25]},
    "lgbm": {},
    "logreg": {"C": [1.0, 10.0, 100.0]},
    "mlp": {},
    "svm": {"softmaxsvc__C": [1.0, 3.0, 10.0]},
    "torch": {},
    "vote": {},
}


def tune(head, name: str, X, y, cv: int, seed: int):
    """Search ``GRIDS[name]`` with ``cv``-fold halving search; returns (refit best head, params, cv score)."""
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    grid = GRIDS.get(name, {})
    # 'exhaust': the last round always uses every training row, so best_score_ is a full CV score.
    search = HalvingGridSearchCV(head, grid, cv=folds, factor=3, scoring="accuracy", refit=True,
                                 random_state=seed, n_jobs=1, error_score="raise", min_resources="exhaust")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small halving rounds warn about rare classes; the final round is full
        search.fit(X, y)
    return search.best_estimator_, search.best_params_, float(search.best_score_)


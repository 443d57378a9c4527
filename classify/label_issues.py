"""Training rows whose given label looks wrong, from out-of-fold probabilities (confident learning).

Northcutt et al.'s confident learning, as cleanlab's ``find_label_issues`` does it by default: class j's
threshold is the mean probability of j over the rows labelled j (its mean self-confidence); a row is
*confidently* of class j when p(j) reaches j's threshold, and of the likeliest such class when several do.
A row confidently of a class other than its given one is an issue. Issues are ranked by self-confidence,
p(given label), lowest first. The probabilities must be out-of-fold: a head that saw a row's label
agrees with it.
"""
from __future__ import annotations

import numpy as np


def find_issues(proba: np.ndarray, y_idx: np.ndarray):
    """Rows flagged as label issues, most likely first.

    Parameters
    ----------
    proba : array of shape (n_rows, n_classes)
        Out-of-fold probabilities; columns in class order.
    y_idx : array of shape (n_rows,)
        The given label of each row, as a column index of ``proba``.

    Returns
    -------
    rows, suggested, score : arrays
        The flagged rows' indexes, the class index each looks like, and ``1 - p(given label)``
        (higher: more likely wrong), sorted by score, highest first (ties by row).
    """
    proba, y_idx = np.asarray(proba, dtype=float), np.asarray(y_idx)
    n, k = proba.shape
    self_conf = proba[np.arange(n), y_idx]
    counts = np.bincount(y_idx, minlength=k)
    # a class no row is labelled with has no self-confidence: no row can be confidently of it
    thresholds = np.where(counts > 0, np.bincount(y_idx, weights=self_conf, minlength=k) / np.maximum(counts, 1),
                          np.inf)
    above = proba >= thresholds - 1e-12  # rounding must not drop the rows exactly at a threshold
    confident = np.where(above, proba, -1.0).argmax(1)
    flagged = above.any(1) & (confident != y_idx)
    rows = np.flatnonzero(flagged)
    score = 1.0 - self_conf[rows]
    order = np.lexsort((rows, -score))
    return rows[order], confident[rows][order], score[order]


COLUMNS = ["row", "text", "given", "suggested", "score"]


def issue_frame(proba, labels, classes, texts, rows):
    """``find_issues`` as a DataFrame with ``COLUMNS``: ``row`` from ``rows`` (each training row's 0-based
    data row in its file), the text, the given and the suggested label, the score; most likely first."""
    import pandas as pd

    from bertfeat.classify.calibration import label_index

    classes = np.asarray(classes)
    found, suggested, score = find_issues(proba, label_index(classes, np.asarray(labels)))
    plain = lambda v: v.item() if hasattr(v, "item") else v  # noqa: E731
    return pd.DataFrame({"row": [rows[i] for i in found], "text": [texts[i] for i in found],
                         "given": [plain(labels[i]) for i in found],
                         "suggested": [plain(classes[s]) for s in suggested],
                         "score": np.round(score, 4)}, columns=COLUMNS)


__all__ = ["COLUMNS", "find_issues", "issue_frame"]

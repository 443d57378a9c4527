"""Exact and near duplicates within the training set and between training and test sets.

A test row that repeats a training row (leakage) makes test scores optimistic; training rows that repeat
each other, with different labels, are label noise. Near: cosine >= ``threshold`` on the vectors bench
already has, not the same text. Similarities are computed a block of rows at a time, so memory stays
at about ``BLOCK_FLOATS`` floats whatever the number of rows (Banking77: 10,003 x 3,080; SST-2: 67,349).
"""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.98
BLOCK_FLOATS = 2**25  # 128 MiB of float32 similarities per block
LISTED = 100  # pairs kept of each kind, for the report
# Near duplicates within the training set cost rows^2 x dim: 28 s at SST-2's 67,349 rows on 2 cores. Past this
# many rows they would outgrow the bench itself (whose heads grow about linearly), so only exact ones are counted.
MAX_NEAR_ROWS = 100_000


def find_duplicates(X_train, X_test, train_keys: list, test_keys: list, y_train=None,
                    threshold: float = THRESHOLD) -> dict:
    """Counts and example pairs of duplicates.

    Parameters
    ----------
    X_train, X_test : arrays of shape (n, dim)
        Vectors of the rows (normalized here: cosine = dot product).
    train_keys, test_keys : list
        What makes two rows the same exactly (the text, or (text, pair)).

    Returns
    -------
    dict
        ``train_exact``/``train_near``: training rows that repeat an earlier training row (exactly, or at
        cosine >= threshold; near ones only up to ``MAX_NEAR_ROWS`` training rows: ``train_near_checked``);
        ``train_conflicting``/``train_near_conflicting``: those whose label differs
        from the earlier row's; ``test_exact``/``test_near``:
        test rows that repeat a training row; ``pairs``: up to ``LISTED`` of each kind, as
        ``{"kind", "train_row", "other_row", "cosine"}`` (0-based positions in the sets as given).
    """
    A, B = _unit(X_train), _unit(X_test)
    first = {}
    train_exact = {}
    for i, key in enumerate(train_keys):
        j = first.setdefault(key, i)
        if j != i:
            train_exact[i] = j
    test_exact = {i: first[key] for i, key in enumerate(test_keys) if key in first}
    near_checked = len(A) <= MAX_NEAR_ROWS
    train_near = _near(A, A, threshold, train_exact, earlier=True) if near_checked else {}
    test_near = _near(B, A, threshold, test_exact, earlier=False)
    conflicting = {name: 0 if y_train is None else sum(1 for i, j in found.items() if y_train[i] != y_train[j])
                   for name, found in (("train_conflicting", train_exact), ("train_near_conflicting", train_near))}
    pairs = []
    for kind, found in (("train_exact", train_exact), ("train_near", train_near), ("test_exact", test_exact),
                        ("test_near", test_near)):
        other = A if kind.startswith("train") else B
        for i, j in list(found.items())[:LISTED]:
            pairs.append({"kind": kind, "train_row": int(j), "other_row": int(i),
                          "cosine": round(float(other[i] @ A[j]), 4)})
    return {"threshold": threshold, "train_near_checked": near_checked, "train_exact": len(train_exact),
            "train_near": len(train_near),
            **conflicting, "test_exact": len(test_exact), "test_near": len(test_near),
            "pairs": pairs}


def _unit(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def _near(Q, A, threshold: float, exact: dict, earlier: bool) -> dict:
    """Row of ``Q`` -> the most similar row of ``A`` (an earlier one, if ``earlier``: Q is A) at cosine >=
    ``threshold``, for the rows not already exact duplicates."""
    found = {}
    block = max(1, BLOCK_FLOATS // max(len(A), 1))
    for start in range(0, len(Q), block):
        stop = min(start + block, len(Q))
        # within one set, only the rows before each one: a pair counts once, on its later row
        S = Q[start:stop] @ (A[:stop] if earlier else A).T
        if earlier:
            S[np.arange(stop - start)[:, None] <= np.arange(stop)[None, :] - start] = -1.0
        best = S.argmax(1)
        for r in np.flatnonzero(S[np.arange(stop - start), best] >= threshold):
            if start + r not in exact:
                found[int(start + r)] = int(best[r])
    return found


__all__ = ["find_duplicates", "THRESHOLD"]

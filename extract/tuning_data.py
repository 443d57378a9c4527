"""What a fine-tune feeds the model: the validation split, SetFit's sentence pairs, padded micro-batches."""
from __future__ import annotations

import numpy as np


def split_validation(y: np.ndarray, val_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of the *training* data; stratified when every class allows it.

    ``val_size`` 0 gives no validation rows. Small data where a stratified split cannot give every class a
    row falls back to a plain random split (the validation score is then noisier, not wrong).
    """
    n = len(y)
    rows = np.arange(n)
    if val_size <= 0:
        return rows, rows[:0]
    from sklearn.model_selection import train_test_split

    n_val = max(1, int(round(val_size * n)))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_val >= np.count_nonzero(counts) else None
    train, val = train_test_split(rows, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def sample_pairs(y: np.ndarray, per_text: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """SetFit's pairs: for each text, ``per_text`` rounds of one same-label and one other-label partner.

    Returns an int array (n_pairs, 3): first row, second row, 1 (same label) or 0. SetFit's default
    builds every pair (n² for n texts), which does not scale; this draws 2 x ``per_text`` x n of them
    (SetFit's ``num_iterations`` recipe) and then at most ``cap``, a uniform subsample that keeps the
    positive/negative balance in expectation.
    """
    n = len(y)
    rounds = min(per_text, -(-cap // (2 * n)))  # rounds past the cap would only be thrown away
    rows = np.arange(n)
    groups = [np.flatnonzero(y == label) for label in np.unique(y)]
    out = []
    for _ in range(rounds):
        pos = rows.copy()  # a one-text class pairs with itself
        for g in groups:
            if len(g) > 1:  # a random *other* member: shift each row's place in its group by 1..len-1
                pos[g] = g[(np.arange(len(g)) + rng.integers(1, len(g), len(g))) % len(g)]
        neg = rng.integers(0, n, n)
        for _ in range(100):  # redraw partners with the same label; few rounds unless one class dominates
            clash = y[neg] == y
            if not clash.any():
                break
            neg[clash] = rng.integers(0, n, int(clash.sum()))
        ok = y[neg] != y  # only a one-class data set (or extreme luck) leaves clashes: drop them
        out += [np.stack([rows, pos, np.ones(n, np.int64)], 1), np.stack([rows, neg, np.zeros(n, np.int64)], 1)[ok]]
    pairs = np.concatenate(out)
    if len(pairs) > cap:
        pairs = pairs[np.sort(rng.choice(len(pairs), cap, replace=False))]
    return pairs[rng.permutation(len(pairs))]


def length_bucketed(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A random order of ``len(lengths)`` items whose batches hold items of similar length (less padding to
    compute): a shuffle, sorted by length within windows of 50 batches, then the batches shuffled."""
    order = rng.permutation(len(lengths))
    windows = np.array_split(order, max(1, -(-len(order) // (50 * batch_size))))
    order = np.concatenate([w[np.argsort(lengths[w], kind="stable")] for w in windows])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def micro_batches(groups: list[list[int]], lengths: np.ndarray, max_tokens: int) -> list[list[int]]:
    """Cut one optimizer batch into micro-batches whose padded size (texts x longest) fits ``max_tokens``.

    ``groups`` are the batch's items, each a list of text rows that must share a micro-batch (a SetFit
    pair's two texts); returns lists of item positions. Gradients of the micro-batches are summed, so the
    update is the batch's whatever the cut: the gradient accumulation that keeps memory bounded.
    """
    out, current, longest, texts = [], [], 0, 0
    for i, group in enumerate(groups):
        g_long = int(max(lengths[r] for r in group))
        if current and max(longest, g_long) * (texts + len(group)) > max_tokens:
            out.append(current)
            current, longest, texts = [], 0, 0
        current.append(i)
        longest, texts = max(longest, g_long), texts + len(group)
    if current:
        out.append(current)
    return out


def pad(ids: list[list[int]], pad_id: int):
    """Right-padded (input_ids, attention_mask) int64 arrays."""
    width = max(len(x) for x in ids)
    out = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        out[row, :len(x)] = x
        mask[row, :len(x)] = 1
    return out, mask

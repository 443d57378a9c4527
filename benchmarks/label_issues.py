"""How many deliberately flipped training labels does ``bertfeat labels`` find?

Flips a share of the training labels (seeded, each to another class at random), runs
``bertfeat.find_label_issues`` on the noisy file and prints the share of flipped rows among the top k
flagged rows, k = the number flipped (recall at k; issue 22 asks >= 70 % on Banking77 at 3 %).

    HF_HUB_OFFLINE=1 python benchmarks/label_issues.py --train ../shared/datasets/banking77/train.csv
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import bertfeat  # noqa: E402


def flip(labels: pd.Series, share: float, seed: int) -> tuple[pd.Series, np.ndarray]:
    """``labels`` with ``share`` of them changed to another class at random; returns (noisy, rows flipped)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    rows = np.sort(rng.choice(len(labels), size=round(share * len(labels)), replace=False))
    noisy = labels.copy()
    for i in rows:
        noisy.iloc[i] = rng.choice(classes[classes != labels.iloc[i]])
    return noisy, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="../shared/datasets/banking77/train.csv")
    ap.add_argument("--share", type=float, default=0.03, help="share of labels flipped (default: 0.03)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the flips (default: 0)")
    ap.add_argument("--cv", type=int, default=5, help="folds of the out-of-fold probabilities (default: 5)")
    args = ap.parse_args()
    df = pd.read_csv(args.train, keep_default_na=False, dtype=str)
    df["label"], flipped = flip(df["label"], args.share, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "noisy.csv")
        df.to_csv(path, index=False)
        t0 = time.perf_counter()
        issues = bertfeat.find_label_issues(path, cv=args.cv, progress=False)
        seconds = time.perf_counter() - t0
    k = len(flipped)
    found = np.isin(issues["row"].to_numpy()[:k], flipped).sum()
    print(f"{args.train}: {k} of {len(df)} labels flipped ({100 * args.share:g} %, seed {args.seed}); "
          f"{len(issues)} rows flagged in {seconds:.1f} s; top {k} flagged hold {found} flipped rows: "
          f"recall at k {100 * found / k:.1f} %; all flagged hold {np.isin(flipped, issues['row']).sum()}")


if __name__ == "__main__":
    main()

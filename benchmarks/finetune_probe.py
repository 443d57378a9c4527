"""The fine-tune probe alone (bertfeat/probe.py) on one shared data set, at given probe sizes and rate.

Embeds only the probe's sampled training rows (mean view; the test set is never read), runs the probe with a
budget of 900 s (so that it is not skipped on a loaded machine) and prints its record. ``--headroom`` also
prints the frozen logistic regression's training-set fit and 3-fold CV accuracy on up to 6,000 rows.

Examples::

    python benchmarks/finetune_probe.py sst2                          # 512 + 512 rows, lr 1e-4, seed 0
    python benchmarks/finetune_probe.py trec --train-rows 1024 --lr 5e-5 --headroom
"""
from __future__ import annotations

import argparse
import os

import numpy as np

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")


def main() -> None:
    import pandas as pd

    import bertfeat
    from bertfeat import options, probe
    from bertfeat.extract.data import Table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="a folder of ../shared/datasets: banking77, trec, sst2")
    ap.add_argument("--train-rows", type=int, default=probe.PROBE_TRAIN)
    ap.add_argument("--val-rows", type=int, default=probe.PROBE_VAL)
    ap.add_argument("--lr", type=float, default=probe.PROBE_LR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--headroom", action="store_true")
    a = ap.parse_args()
    probe.PROBE_TRAIN, probe.PROBE_VAL, probe.PROBE_LR = a.train_rows, a.val_rows, a.lr
    df = pd.read_csv(os.path.join(DATA, a.dataset, "train.csv"), keep_default_na=False)
    texts, labels = df.text.astype(str).tolist(), df.label.astype(str).tolist()
    config = options.BenchConfig(seed=a.seed, progress=False, probe_seconds=900.0, cache_dir=a.cache_dir)
    _, y = np.unique(labels, return_inverse=True)
    rows = probe._stratified(y, min(len(y), a.train_rows + a.val_rows), a.seed)
    X = np.zeros((len(texts), 384), dtype=np.float32)  # only the probe's rows are read
    X[rows] = bertfeat.embed([texts[i] for i in rows], cache_dir=a.cache_dir, progress=False)
    print(a.dataset, probe.run_probe(config, Table(texts, None, labels, a.dataset, list(range(len(texts)))), X,
                                     0.0, 1e9))
    if a.headroom:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score

        rows = probe._stratified(y, min(len(y), 6000), a.seed)
        X = bertfeat.embed([texts[i] for i in rows], cache_dir=a.cache_dir, progress=False)
        fit = (LogisticRegression(C=10.0, max_iter=2000).fit(X, y[rows]).predict(X) == y[rows]).mean()
        cv = cross_val_score(LogisticRegression(C=10.0, max_iter=2000), X, y[rows], cv=3).mean()
        print(f"{a.dataset}: frozen logreg on {len(rows)} rows: training fit {fit:.4f}, 3-fold CV {cv:.4f}")


if __name__ == "__main__":
    main()

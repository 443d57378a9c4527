"""The default multi-label bench on GoEmotions (28 emotions), against the plain way, in one run.

1. Fill the cache with every default view (not timed: "warm cache").
2. The plain way, by hand: scikit-learn's one-vs-rest ``LogisticRegression(C=1)`` on the mean vectors,
   labels at probability >= 0.5, and again with the best single threshold *picked on the test set* (an
   optimistic baseline: it reads the answers).
3. ``python cli.py bench --train T --test S --json`` with no other flag, timed end to end in a
   subprocess; its thresholds are chosen on out-of-fold training probabilities only.

Prints every metric of both and the ratios of macro- and micro-F1.

    python benchmarks/multilabel.py --cache-dir /tmp/goecache
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "goemotions")
KEYS = ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "jaccard", "roc_auc")


def by_hand(train, test, cache: str) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from bertfeat.classify.multilabel import indicator
    from bertfeat.classify.thresholds import GRID, evaluate_multi, score
    from bertfeat.extract import BertEncoder, embed

    X = embed([BertEncoder()], train.texts + test.texts, cache_dir=cache, progress=False).vectors[0]
    Y, classes = indicator(train.labels)
    Y_test, _ = indicator(test.labels, classes)
    t0 = time.perf_counter()
    clf = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=1000), n_jobs=-1).fit(X[:len(Y)], Y)
    seconds = time.perf_counter() - t0
    P = clf.predict_proba(X[len(Y):])
    at_half = evaluate_multi(Y_test, P >= 0.5, P, classes, np.full(len(classes), 0.5))
    best = {m: max(GRID, key=lambda t: score(Y_test, P >= t, m)) for m in ("macro_f1", "micro_f1")}
    peeked = {m: evaluate_multi(Y_test, P >= t, P, classes, np.full(len(classes), t))[m] for m, t in best.items()}
    return {"at_0.5": {k: at_half[k] for k in KEYS}, "test_picked": peeked, "test_picked_threshold": best,
            "fit_seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", default=os.environ.get("BERTFEAT_CACHE"))
    ap.add_argument("--train", default=os.path.join(DATA, "train.jsonl"))
    ap.add_argument("--test", default=os.path.join(DATA, "test.jsonl"))
    args = ap.parse_args()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="bf-goe-")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from default_bench import warm

    from bertfeat.extract import read_table

    train, test = read_table(args.train), read_table(args.test)
    warm(train, test, cache)
    plain = by_hand(train, test, cache)
    out = tempfile.mkdtemp(prefix="bf-goe-run-")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "bench", "--train", args.train, "--test",
                           args.test, "--json", "--quiet", "--cache-dir", cache, "--out", os.path.join(out, "b")],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    best = json.loads(proc.stdout)["best"]
    print(f"GoEmotions: {len(train.texts)} train, {len(test.texts)} test texts, 28 labels; cache {cache}")
    print(f"{'':26}{'by hand t=0.5':>15}{'by hand t on test':>19}{'bertfeat bench':>16}")
    for k in KEYS:
        peek = plain["test_picked"].get(k)
        print(f"{k:<26}{plain['at_0.5'][k]:>15.4f}{'' if peek is None else f'{peek:.4f}':>19}{best[k]:>16.4f}")
    print(f"bench: {best['head']} on {best['features']}, rule {best['rule']}, at least one label: "
          f"{best['at_least_one']}; {wall:.1f} s wall (warm cache, subprocess)")
    for k in ("macro_f1", "micro_f1"):
        print(f"{k}: bench / by-hand-at-0.5 = {best[k] / plain['at_0.5'][k]:.2f}x, bench / by-hand-picked-on-test "
              f"= {best[k] / plain['test_picked'][k]:.2f}x")


if __name__ == "__main__":
    main()

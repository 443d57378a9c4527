"""The cross-validation evidence behind the default bench's views, heads and vote (training sets only).

For each ``head:view`` candidate: out-of-fold accuracy on the training set (``--folds``-fold stratified),
seconds on one thread, log loss and ECE of the OOF probabilities before / after temperature scaling. Then
the greedy soft vote over the top 3, the top 6 and all candidates, with its nested CV accuracy, chosen by
log loss or by accuracy (ties by log loss). The test split is never read.

Examples::

    python benchmarks/default_evidence.py --dataset trec --folds 5
    python benchmarks/default_evidence.py --dataset banking77 --folds 3 \\
        --candidates logreg:mean,logreg:mean+max,svm:mean,knn:mean
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets")
VIEWS = ("mean", "mean+max", "mean+mean@-2", "mean+mean@-2+mean@-3", "mean+max+mean@-2+mean@-3",
         "mean+mean@-2+mean@-3+mean@-4")
CANDIDATES = ([f"logreg:{v}" for v in VIEWS] + [f"svm:{v}" for v in VIEWS] + ["knn:mean", "knn:mean+mean@-2"]
              + [f"lda:{v}" for v in VIEWS[-2:]])


def parse_head(text: str) -> tuple[str, dict]:
    """``svm[softmaxsvc__C=10/topcomponents__n_components=256]`` -> ("svm", {...}); values are numbers or None."""
    import ast

    name, _, rest = text.partition("[")
    params = dict(p.split("=", 1) for p in rest.rstrip("]").split("/") if p)
    return name, {k: ast.literal_eval(v) for k, v in params.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="trec")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help="head:view,... at the registry defaults, or head[param=value/...]:view")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()

    import numpy as np
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    from bertfeat.cache import default_cache_dir
    from bertfeat.classify.calibration import ece, fit_temperature, label_index, log_loss, scale
    from bertfeat.classify.ensemble import greedy_weights, nested_predictions, union_view, view_parts
    from bertfeat.classify.heads import make_head
    from bertfeat.extract import BertEncoder, embed, feature_encoders, read_table

    train = read_table(os.path.join(DATA, args.dataset, "train.csv"))  # the test split is never read
    cands = args.candidates.split(",")
    parts = view_parts(union_view([c.split(":")[1] for c in cands]))
    encoders = [feature_encoders(p, BertEncoder())[0] for p in parts]
    vectors = dict(zip(parts, embed(encoders, train.texts, cache_dir=args.cache_dir or default_cache_dir(),
                                    progress=False).vectors))
    y = np.asarray(train.labels)
    classes = np.unique(y)
    y_idx = label_index(classes, y)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(y, y))
    oofs = {}
    print(f"{args.dataset}: {len(y)} training rows, {len(classes)} classes, {args.folds}-fold CV\n")
    print(f"{'candidate':<34}{'oof acc':>9}{'s (1 thread)':>14}{'log loss raw/cal':>20}{'ECE raw/cal':>16}")
    for cand in cands:
        head_name, view = cand.split(":")
        head_name, params = parse_head(head_name)
        X = np.hstack([vectors[p] for p in view_parts(view)])
        oof = np.zeros((len(y), len(classes)))
        t0 = time.perf_counter()
        with threadpool_limits(limits=1):
            for tr, te in folds:
                head = make_head(head_name).set_params(**params).fit(X[tr], y[tr])
                oof[np.ix_(te, label_index(classes, head.classes_))] = head.predict_proba(X[te])
        seconds = time.perf_counter() - t0
        t = fit_temperature(oof, y_idx)
        oofs[cand] = scale(oof, t)
        print(f"{cand:<34}{np.mean(oof.argmax(1) == y_idx):>9.4f}{seconds:>14.1f}"
              f"{log_loss(oof, y_idx):>10.3f}/{log_loss(oofs[cand], y_idx):.3f}"
              f"{ece(oof, y_idx):>10.3f}/{ece(oofs[cand], y_idx):.3f}")
    order = sorted(cands, key=lambda c: -np.mean(oofs[c].argmax(1) == y_idx))
    best = np.mean(oofs[order[0]].argmax(1) == y_idx)
    outer = list(StratifiedKFold(args.folds, shuffle=True, random_state=1).split(y, y))
    print(f"\nbest single: {order[0]} {best:.4f}")
    for top in sorted({min(3, len(order)), min(6, len(order)), len(order)}):
        probas = [oofs[c] for c in order[:top]]
        for metric, label in (("log_loss", "log loss"), ("accuracy", "accuracy")):
            if metric == "log_loss":  # the log-loss-only objective, for comparison
                from bertfeat.classify import ensemble

                saved = ensemble._objective
                ensemble._objective = lambda p, yy, m: -log_loss(p, yy)
            pred, _ = nested_predictions(probas, y_idx, outer)
            w = greedy_weights(probas, y_idx)
            if metric == "log_loss":
                ensemble._objective = saved
            members = ", ".join(f"{c} {x:.2f}" for c, x in zip(order[:top], w) if x)
            print(f"vote of top {top:>2} by {label:<8}: nested {np.mean(pred == y_idx):.4f}  [{members}]")


if __name__ == "__main__":
    main()

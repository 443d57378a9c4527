"""Does a faster precision cost accuracy? Banking77 logistic regression on each precision's vectors vs fp32.

The default feature view (mean-pooled, L2-normalized, last layer), LogisticRegression(C=10, max_iter=2000)
trained on Banking77 train and scored on its test split. Also reports how close each precision's vectors
are to fp32's (cosine per text).

Examples::

    python benchmarks/precision_accuracy.py                       # fp32, auto, bf16, int8
    python benchmarks/precision_accuracy.py --precision int8 --cache-dir ~/.cache/bertfeat --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "banking77")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=os.path.join(DATA, "train.csv"))
    parser.add_argument("--test", default=os.path.join(DATA, "test.csv"))
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--precision", nargs="+", default=["auto", "bf16", "int8"],
                        help="precisions to compare with fp32 (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=None, help="vector cache (default: a temp folder, removed after)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from bertfeat.extract import BertEncoder, embed, read_table

    train, test = read_table(args.train), read_table(args.test)
    texts = train.texts + test.texts
    cache = args.cache_dir or tempfile.mkdtemp(prefix="bertfeat-acc-")
    rows, reference = [], None
    for precision in ["fp32"] + [p for p in args.precision if p != "fp32"]:
        encoder = BertEncoder(model=args.model, precision=precision, device=args.device)
        start = time.perf_counter()
        vectors = embed([encoder], texts, cache_dir=cache, progress=False).vectors[0]
        seconds = time.perf_counter() - start
        head = LogisticRegression(C=10, max_iter=2000).fit(vectors[:len(train.texts)], train.labels)
        accuracy = float((head.predict(vectors[len(train.texts):]) == np.asarray(test.labels)).mean())
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        base = rows[0]["accuracy"] if rows else 100 * accuracy
        rows.append({"precision": precision, "runs_as": "/".join(encoder.resolve_precision()),
                     "accuracy": round(100 * accuracy, 2), "delta_points": round(100 * accuracy - base, 2),
                     "min_cosine": round(float(cosine.min()), 5), "mean_cosine": round(float(cosine.mean()), 5),
                     "embed_seconds": round(seconds, 1)})
        print(f"done {precision}", file=sys.stderr, flush=True)
    if not args.cache_dir:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
    report = {"train": args.train, "test": args.test, "model": args.model, "n_train": len(train.texts),
              "n_test": len(test.texts), "results": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"Banking77: {len(train.texts)} train / {len(test.texts)} test, {args.model}, LogisticRegression(C=10)")
    print(f"{'precision':10} {'runs as':18} {'accuracy':>9} {'vs fp32':>8} {'min cos':>8} {'mean cos':>9}")
    for r in rows:
        print(f"{r['precision']:10} {r['runs_as']:18} {r['accuracy']:8.2f}% {r['delta_points']:+7.2f} "
              f"{r['min_cosine']:8.5f} {r['mean_cosine']:9.5f}")


if __name__ == "__main__":
    main()

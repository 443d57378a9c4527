"""The default bench (no --heads, no --features) on Banking77, TREC and SST-2, against the plain way.

For each data set: fill the cache with every candidate view (not timed: "warm cache"), then time
``python cli.py bench --train T --test S --json`` end to end in a subprocess (start-up, imports, cache
reads, the selection, the report) and print its best test accuracy, the ECE of the chosen head before
and after temperature scaling, and what the budget skipped. In the same run, the plain
sentence-transformers + scikit-learn way: ``LogisticRegression()`` (C=1) and ``LogisticRegression(C=10)``
on the mean-pooled vectors (the cached ones, which match ``SentenceTransformer.encode`` to cosine
>= 0.9999; ``--baseline encode`` calls ``encode`` itself, minutes on SST-2), with the accuracy ratio.

Examples::

    python benchmarks/default_bench.py                                  # all three, cache $BERTFEAT_CACHE
    python benchmarks/default_bench.py --datasets banking77 --cache-dir /tmp/bf-cache --json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets")


def warm(train, test, cache: str) -> None:
    """Every part of every default view in the cache (one forward pass for texts it lacks)."""
    from bertfeat.classify.ensemble import union_view, view_parts
    from bertfeat.classify.selection import DEFAULT_VIEWS
    from bertfeat.extract import BertEncoder, embed, feature_encoders

    parts = view_parts(union_view(list(DEFAULT_VIEWS)))
    encoders = [feature_encoders(p, BertEncoder())[0] for p in parts]
    embed(encoders, train.texts + test.texts, cache_dir=cache, progress=False)


def baseline(train, test, cache: str, how: str) -> list[dict]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    texts = train.texts + test.texts
    if how == "encode":
        from sentence_transformers import SentenceTransformer

        from bertfeat.extract.model import resolve_model_dir

        vectors = SentenceTransformer(resolve_model_dir("all-MiniLM-L6-v2"), device="cpu").encode(
            texts, batch_size=32, normalize_embeddings=True)
    else:
        from bertfeat.extract import BertEncoder, embed

        vectors = embed([BertEncoder()], texts, cache_dir=cache, progress=False).vectors[0]
    n = len(train.texts)
    rows = []
    for C in (1.0, 10.0):
        t0 = time.perf_counter()
        head = LogisticRegression(C=C, max_iter=2000).fit(vectors[:n], train.labels)
        seconds = time.perf_counter() - t0
        acc = float((head.predict(vectors[n:]) == np.asarray(test.labels)).mean())
        rows.append({"C": C, "accuracy": acc, "fit_seconds": round(seconds, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="banking77,trec,sst2")
    parser.add_argument("--cache-dir", default=None,
                        help="vector cache (default: $BERTFEAT_CACHE or ~/.cache/bertfeat)")
    parser.add_argument("--baseline", default="cached", choices=["cached", "encode"],
                        help="plain baseline vectors: the cached mean view, or SentenceTransformer.encode")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bertfeat.cache import default_cache_dir
    from bertfeat.extract import read_table

    cache = args.cache_dir or default_cache_dir()
    out = []
    for name in args.datasets.split(","):
        train_path, test_path = (os.path.join(DATA, name, f"{s}.csv") for s in ("train", "test"))
        train, test = read_table(train_path), read_table(test_path)
        warm(train, test, cache)
        env = {**os.environ, "BERTFEAT_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        folder = tempfile.mkdtemp(prefix=f"default-bench-{name}-")
        cmd = [sys.executable, os.path.join(ROOT, "cli.py"), "bench", "--train", train_path, "--test", test_path,
               "--json", "--quiet", "--out", os.path.join(folder, "out")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"{name}: bench failed\n{proc.stderr}")
        result = json.loads(proc.stdout)
        best = result["best"]
        plain = baseline(train, test, cache, args.baseline)
        top_plain = max(p["accuracy"] for p in plain)
        out.append({"dataset": name, "n_train": len(train.texts), "wall_seconds": round(wall, 1),
                    "best_head": best["head"], "best_features": best["features"], "best_params": best["params"],
                    "cv_score": round(best["cv_score"], 4), "accuracy": round(best["accuracy"], 4),
                    "macro_f1": round(best["macro_f1"], 4), "ece_raw": round(best["ece_raw"], 4),
                    "ece": round(best["ece"], 4), "skipped": len(result["selection"]["skipped"]),
                    "baseline": plain, "accuracy_ratio": round(best["accuracy"] / top_plain, 4),
                    "command": " ".join(["python", "cli.py", "bench", "--train", train_path, "--test", test_path])})
    if args.json:
        print(json.dumps(out))
        return
    print("| data | train rows | wall s | best (by CV) | cv | test acc | ECE raw -> cal | plain C=1 | plain C=10 "
          "| acc ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['dataset']} | {r['n_train']} | {r['wall_seconds']} | {r['best_head']} on {r['best_features']} "
              f"| {r['cv_score']:.4f} | {r['accuracy']:.4f} | {r['ece_raw']:.4f} -> {r['ece']:.4f} "
              f"| {r['baseline'][0]['accuracy']:.4f} | {r['baseline'][1]['accuracy']:.4f} "
              f"| {r['accuracy_ratio']:.3f}x |")


if __name__ == "__main__":
    main()

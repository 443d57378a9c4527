"""bertfeat's heads against the plain scikit-learn / LightGBM defaults, on the same vectors, in one run.

The vectors come the plain way (sentence-transformers ``encode``), so only the heads differ. Prints
accuracy and fit seconds for each pair and the fit-time ratio.

    python benchmarks/heads_vs_baseline.py --dataset banking77            # needs ../shared/datasets
    python benchmarks/heads_vs_baseline.py --dataset trec --heads logreg,svm
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def plain(name: str):
    from lightgbm import LGBMClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return {"logreg": LogisticRegression(max_iter=1000), "lgbm": LGBMClassifier(verbose=-1),
            "mlp": MLPClassifier(random_state=0), "svm": SVC(), "knn": None, "torch": None, "vote": None}[name]


def timed_fit(model, X, y, X_test, y_test):
    t0 = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - t0
    return float((model.predict(X_test) == y_test).mean()), seconds


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from bertfeat.classify import make_head
    from bertfeat.extract import read_table
    from bertfeat.extract.model import resolve_model_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "datasets"))
    parser.add_argument("--heads", default="logreg,lgbm,mlp")
    args = parser.parse_args()
    train = read_table(os.path.join(args.data_dir, args.dataset, "train.csv"))
    test = read_table(os.path.join(args.data_dir, args.dataset, "test.csv"))
    st = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu")
    t0 = time.perf_counter()
    X_train, X_test = st.encode(train.texts, batch_size=32), st.encode(test.texts, batch_size=32)
    print(f"{args.dataset}: {len(train.texts)} train / {len(test.texts)} test; encode {time.perf_counter() - t0:.1f} s")
    y_train, y_test = np.asarray(train.labels), np.asarray(test.labels)
    print(f"{'head':<8}{'plain acc':>10}{'plain fit s':>12}{'bertfeat acc':>13}{'bertfeat fit s':>15}{'speed-up':>10}")
    for name in args.heads.split(","):
        base = plain(name)
        p_acc, p_s = timed_fit(base, X_train, y_train, X_test, y_test) if base is not None else (float("nan"),) * 2
        b_acc, b_s = timed_fit(make_head(name), X_train, y_train, X_test, y_test)
        print(f"{name:<8}{p_acc:>10.4f}{p_s:>12.1f}{b_acc:>13.4f}{b_s:>15.1f}{p_s / b_s:>9.1f}x", flush=True)


if __name__ == "__main__":
    main()

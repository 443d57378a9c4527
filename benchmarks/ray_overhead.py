"""Ray's overhead on one machine: `embed` on the local engine against `--engine ray`, same texts, same run.

Every measurement is one fresh process with an empty cache, timed from start to exit, as a user runs
it: model loading, and for Ray starting and stopping the local cluster, are included. The plain
sentence-transformers ``encode`` (fp32, batch 32) runs too, as the common reference.

    python benchmarks/ray_overhead.py                       # 10,000 SST-2 texts, 2 Ray workers
    python benchmarks/ray_overhead.py --n 20000 --workers 1 2
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
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "sst2", "train.csv")

ST_CODE = """
import sys, pandas as pd
sys.path.insert(0, {root!r})
from sentence_transformers import SentenceTransformer
from bertfeat.extract.model import resolve_model_dir
texts = pd.read_csv({data!r})["text"].astype(str).tolist()
SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu").encode(texts, batch_size=32)
"""


def timed(cmd: list[str], env: dict) -> tuple[float, dict | None]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    out = proc.stdout.strip().splitlines()
    return seconds, json.loads(out[-1]) if out and out[-1].startswith("{") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="CSV with a 'text' column (default: SST-2 train)")
    parser.add_argument("--n", type=int, default=10_000, help="first N texts (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="Ray actor counts to time")
    parser.add_argument("--precision", default="auto", help="bertfeat --precision (default: %(default)s)")
    args = parser.parse_args()

    import pandas as pd

    work = tempfile.mkdtemp(prefix="bertfeat-ray-bench-")
    data = os.path.join(work, "texts.csv")
    pd.read_csv(args.data, usecols=["text"], nrows=args.n).to_csv(data, index=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BERTFEAT_MODELS": os.path.join(work, "models")}
    embed = [sys.executable, "cli.py", "embed", "--data", data, "--precision", args.precision, "--json", "--quiet"]
    timed(embed + ["--cache-dir", os.path.join(work, "warm")], env)  # one-time ONNX export, untimed

    runs = [("sentence-transformers encode fp32 b32", [sys.executable, "-c", ST_CODE.format(root=ROOT, data=data)]),
            ("bertfeat embed, local engine", embed + ["--cache-dir", os.path.join(work, "local")])]
    runs += [(f"bertfeat embed, --engine ray, {w} worker(s)",
              embed + ["--engine", "ray", "--num-workers", str(w), "--cache-dir", os.path.join(work, f"ray{w}")])
             for w in args.workers]
    results = []
    for name, cmd in runs:
        seconds, summary = timed(cmd, env)
        results.append((name, seconds, summary))
    base = results[0][1]
    local = results[1][1]
    print(f"{args.n} texts ({os.path.basename(args.data)}), precision {args.precision}, {os.cpu_count()} CPUs")
    print(f"{'run':44} {'wall s':>7} {'texts/s':>8} {'vs encode':>9} {'vs local':>9} {'worker s':>9}")
    for name, seconds, summary in results:
        busy = summary.get("worker_seconds") if summary else None
        print(f"{name:44} {seconds:7.1f} {args.n / seconds:8.0f} {base / seconds:8.2f}x {local / seconds:8.2f}x "
              f"{busy if busy is not None else '':>9}")
    for name, seconds, summary in results[2:]:
        print(f"Ray overhead, {name.split(', ')[-1]}: {seconds - local:+.1f} s wall against the local engine")


if __name__ == "__main__":
    main()

"""Peak memory of ``embed`` against corpus size, and its throughput against another checkout of bertfeat.

Builds corpora from SST-2 by cheap combination (text i joins two random SST-2 phrases, so every text is
distinct; a smaller corpus is a prefix of a larger one), writes each as a CSV in a temporary folder, and
embeds it with ``cli.py embed`` in a fresh process into a fresh cache. A run's peak RSS is the kernel's
``ru_maxrss`` for that child alone (``os.wait4``); texts/s is texts over the ``seconds`` embed reports
(reading the file, cache lookups, tokenizing, the forward pass and the commits; not the model load).

Examples::

    python benchmarks/embed_memory.py                                      # 40,000 vs 400,000 texts
    python benchmarks/embed_memory.py --n 4000 40000 --window 5000 --precision int8   # a tenth of the scale
    git worktree add /tmp/bf-before <commit>                               # the code to compare with, then:
    python benchmarks/embed_memory.py --n 40000 400000 --precision int8 --before /tmp/bf-before --repeat 2

``--before`` runs the older checkout on every size as well (its peak grows with the corpus where this one's
should not) and alternates the extra runs on the smallest corpus, so a drift in machine load hits both.
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
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "sst2", "train.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[40_000, 400_000],
                        help="corpus sizes in texts; the peak ratio compares the largest with the smallest "
                             "(default: %(default)s)")
    parser.add_argument("--precision", default="auto", help="embed --precision (default: %(default)s)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="a CSV with a 'text' column (default: SST-2 train)")
    parser.add_argument("--before", metavar="CHECKOUT",
                        help="another bertfeat checkout (e.g. a git worktree of an older commit): measure it too, "
                             "and compare throughput on the smallest corpus")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per checkout on the smallest corpus, alternating; the fastest counts for texts/s")
    parser.add_argument("--window", type=int, default=None,
                        help="embed --window for this checkout (texts tokenized together; default: embed's "
                             "50,000): scale it with --n to run the same comparison smaller")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bertfeat-memory-")
    sizes = sorted(set(args.n))
    corpus = combined_texts(args.data, sizes[-1], args.seed)
    files = {n: write_csv(os.path.join(work, f"corpus-{n}.csv"), corpus[:n]) for n in sizes}
    # ONNX exports (int8; bf16 on some CPUs) are made once, untimed, and shared by every run: a real user
    # pays them once per model, and an export would otherwise dominate the smaller run's peak.
    env = {**os.environ, "BERTFEAT_MODELS": os.path.join(work, "models"), "HF_HUB_OFFLINE": "1"}
    warm = write_csv(os.path.join(work, "warm.csv"), corpus[:8])
    checkouts = {"this": ROOT, **({"before": os.path.abspath(args.before)} if args.before else {})}
    for root in checkouts.values():
        embed(root, warm, fresh(work), args.precision, env)
    flags = {"this": ["--window", str(args.window)] if args.window else [], "before": []}

    def run(name: str, n: int) -> dict:
        return {"checkout": name, "n": n, **embed(checkouts[name], files[n], fresh(work), args.precision, env,
                                                  flags[name])}

    runs = [run(name, n) for name in checkouts for n in sizes]  # memory: every checkout on every size
    for rep in range(1, args.repeat if args.before else 1):  # more throughput samples, alternating the order
        runs += [run(name, sizes[0]) for name in (("before", "this") if rep % 2 else ("this", "before"))]
    report(args, runs, sizes, list(checkouts))


def combined_texts(path: str, n: int, seed: int) -> list[str]:
    """``n`` distinct texts, each two random SST-2 phrases joined by a space, in a seeded order."""
    import numpy as np

    with open(path, encoding="utf-8", newline="") as fh:
        phrases = list(dict.fromkeys(row["text"].strip() for row in csv.DictReader(fh) if row["text"].strip()))
    rng = np.random.default_rng(seed)
    texts: dict[str, None] = {}
    while len(texts) < n:
        pairs = rng.integers(0, len(phrases), size=(n - len(texts), 2))
        texts.update((f"{phrases[a]} {phrases[b]}", None) for a, b in pairs.tolist())
    return list(texts)[:n]


def write_csv(path: str, texts: list[str]) -> str:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    return path


def fresh(work: str) -> str:
    return tempfile.mkdtemp(prefix="cache-", dir=work)


def embed(root: str, data: str, cache: str, precision: str, env: dict, flags: list[str] = ()) -> dict:
    """One ``cli.py embed`` of ``root`` in its own process: its summary, wall time and peak RSS."""
    cmd = [sys.executable, os.path.join(root, "cli.py"), "embed", "--data", data, "--cache-dir", cache,
           "--precision", precision, "--json", "--quiet", *flags]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone, not of every child so far
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode()[-3000:]}")
        summary = json.loads(out.read())
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall, "embed_s": summary["seconds"],
            "texts_per_s": summary["n_texts"] / summary["seconds"], "n_embedded": summary["n_embedded"],
            "precision": summary["precision"]}


def report(args, runs: list[dict], sizes: list[int], checkouts: list[str]) -> None:
    def of(name, n):
        return [r for r in runs if r["checkout"] == name and r["n"] == n]

    result = {"runs": runs, "sizes": [sizes[0], sizes[-1]], "window": args.window}
    if len(sizes) > 1:  # the first run of each size (the memory runs)
        result["peak_ratio"] = {name: of(name, sizes[-1])[0]["peak_rss_mib"] / of(name, sizes[0])[0]["peak_rss_mib"]
                                for name in checkouts}
    if "before" in checkouts:
        fastest = {name: max(r["texts_per_s"] for r in of(name, sizes[0])) for name in checkouts}
        result["throughput_vs_before"] = fastest["this"] / fastest["before"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'checkout':<9}{'texts':>9}{'precision':>11}{'peak RSS MiB':>14}{'wall s':>9}{'embed s':>9}{'texts/s':>9}")
    for r in runs:
        print(f"{r['checkout']:<9}{r['n']:>9}{r['precision'] or '-':>11}{r['peak_rss_mib']:>14.0f}"
              f"{r['wall_s']:>9.1f}{r['embed_s']:>9.1f}{r['texts_per_s']:>9.0f}")
    for name, ratio in result.get("peak_ratio", {}).items():
        print(f"peak RSS {sizes[-1]:,} / {sizes[0]:,} texts, {name}: {ratio:.3f}"
              + (" (target <= 1.25)" if name == "this" else ""))
    if "before" in checkouts:
        print(f"throughput this / before on {sizes[0]:,} texts (fastest of each): "
              f"{result['throughput_vs_before']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()

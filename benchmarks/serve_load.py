"""``bertfeat serve`` under load: batched against unbatched (``--max-batch 1``), and against in-process predict.

Starts ``cli.py serve`` on 127.0.0.1 (free ports, loopback only) twice, with batching on and with
``--max-batch 1``, and drives them in turn, scenario by scenario (a change in the machine's load hits both),
with a bounded number of concurrent keep-alive clients (asyncio, one connection each) sending a fixed count of
requests of 1 and of 16 texts. Every text is distinct (a demo text and its number), so nothing is deduplicated.
Reports throughput, p50/p95/p99 latency, errors, texts per forward pass, each server's peak RSS and its RSS at
its 1,000th and its last request (after an uncounted warm-up at the largest batches, so that ratio shows leaks,
not the allocator meeting bigger shapes); and ``bertfeat.load(dir).predict`` on the 16-text runs' texts in this
process, before and after those runs (servers idle; the faster counts), and the ratios the issue asks for.

Examples::

    python benchmarks/serve_load.py                       # fits a demo model into a temp folder first
    python benchmarks/serve_load.py --model-dir runs/demo-logreg --clients 1 8 32 64 --requests 1000 100
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = [os.path.join(ROOT, "data", "demo", name) for name in ("train.csv", "test.csv")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=None, help="model folder to serve (default: fit one on the demo data)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64],
                        help="concurrent clients, one run each (default: %(default)s)")
    parser.add_argument("--texts", type=int, nargs="+", default=[1, 16],
                        help="texts per request (default: %(default)s)")
    parser.add_argument("--requests", type=int, nargs="+", default=[1000, 100],
                        help="requests per run, one count per --texts (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=128, help="the batched server's --max-batch (default: 128)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="its --max-wait-ms (default: 10)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        model_dir = args.model_dir or fit_demo(tmp, env)
        corpus = demo_texts()
        rows, rss = [], {}
        # Both servers up at once, each scenario run on one then the other: a change in the machine's load
        # (other jobs) hits both alike. An idle server costs no CPU.
        servers = {"batched": start(model_dir, ["--max-batch", str(args.max_batch), "--max-wait-ms",
                                                str(args.max_wait_ms)], env)}
        try:
            servers["unbatched"] = start(model_dir, ["--max-batch", "1"], env)
            for server in servers.values():  # the largest batches first: RSS then measures leaks, not shapes
                asyncio.run(drive(server.port, max(args.clients), max(args.texts), max(args.clients), corpus,
                                  RssProbe(None)))
            probes = {label: RssProbe(server.pid) for label, server in servers.items()}
            inproc = []
            for n_texts, n_requests in zip(args.texts, args.requests):
                if n_texts == 16:  # in-process predict on the same texts, before and after: load drifts
                    inproc.append(in_process(model_dir, request_texts(corpus, 16, n_requests)))
                for clients in args.clients:
                    for label, server in servers.items():
                        before = passes(server.port)
                        row = asyncio.run(drive(server.port, clients, n_texts, n_requests, corpus, probes[label]))
                        after = passes(server.port)
                        row["texts_per_pass"] = (after[1] - before[1]) / max(after[0] - before[0], 1)
                        rows.append({"server": label, **row})
                        print(format_row(rows[-1]), flush=True)
            if inproc:
                inproc.append(in_process(model_dir, request_texts(corpus, 16, n_requests_16(args))))
            rss = {label: probe.summary() for label, probe in probes.items()}
        finally:
            for server in servers.values():
                server.stop()
    report(rows, rss, max(inproc, key=lambda r: r["texts_s"]) if inproc else None, inproc, args)


def n_requests_16(args) -> int:
    return dict(zip(args.texts, args.requests))[16]


def fit_demo(tmp: str, env: dict) -> str:
    out = os.path.join(tmp, "model")
    subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "fit", "--train", DEMO[0], "--test", DEMO[1],
                    "--out", out, "--cache-dir", os.path.join(tmp, "cache"), "--quiet"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return out


def demo_texts() -> list[str]:
    texts = []
    for path in DEMO:
        with open(path, encoding="utf-8", newline="") as fh:
            texts += [row["text"] for row in csv.DictReader(fh)]
    return texts


def request_texts(corpus: list[str], n_texts: int, n_requests: int) -> list[str]:
    """The texts of a run, all distinct: demo text i mod N, numbered."""
    return [f"{corpus[i % len(corpus)]} #{i}" for i in range(n_texts * n_requests)]


class Server:
    def __init__(self, proc, port):
        self.proc, self.port, self.pid = proc, port, proc.pid

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(timeout=120)
        if code != 0:
            print(f"warning: server exited {code} after SIGTERM", file=sys.stderr)


def start(model_dir: str, flags: list[str], env: dict) -> Server:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "serve", "--model-dir", model_dir,
                             "--host", "127.0.0.1", "--port", str(port), "--quiet", *flags], env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return Server(proc, port)
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server not ready in 300 s")


def passes(port: int) -> tuple[float, float]:
    """(forward passes, texts in them) so far, from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        lines = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines() if not line.startswith("#"))
    return float(lines["bertfeat_batch_texts_count"]), float(lines["bertfeat_batch_texts_sum"])


class RssProbe:
    """The server's RSS at its 1,000th request and at its last, and its peak (VmHWM)."""

    def __init__(self, pid: int):
        self.pid, self.done, self.first, self.last = pid, 0, None, None

    def status(self, key: str) -> float:
        with open(f"/proc/{self.pid}/status") as fh:
            line = next(line for line in fh if line.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    def count(self) -> None:
        if self.pid is None:  # warm-up traffic: not counted
            return
        self.done += 1
        if self.done == 1000:
            self.first = self.status("VmRSS")

    def summary(self) -> dict:
        self.last = self.status("VmRSS")
        return {"requests": self.done, "rss_at_1000": self.first, "rss_at_end": self.last,
                "peak": self.status("VmHWM")}


async def drive(port: int, clients: int, n_texts: int, n_requests: int, corpus: list[str], probe) -> dict:
    texts = request_texts(corpus, n_texts, n_requests)
    bodies = [json.dumps({"texts": texts[i * n_texts:(i + 1) * n_texts]}).encode() for i in range(n_requests)]
    latencies, errors, queue = [], [0], list(range(n_requests))

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                body = bodies[queue.pop()]
                started = time.perf_counter()
                writer.write(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                probe.count()
                if status != 200 or len(json.loads(answer)["labels"]) != n_texts:
                    errors[0] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    p = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return {"clients": clients, "texts_per_request": n_texts, "requests": n_requests, "seconds": seconds,
            "requests_s": n_requests / seconds, "texts_s": n_requests * n_texts / seconds,
            "p50_ms": p[0], "p95_ms": p[1], "p99_ms": p[2], "errors": errors[0]}


_LOADED = {}


def in_process(model_dir: str, texts: list[str]) -> dict:
    import bertfeat

    if model_dir not in _LOADED:
        _LOADED[model_dir] = bertfeat.load(model_dir)
        _LOADED[model_dir].predict(texts[:16])  # the model load, as the server's warm-up
    clf = _LOADED[model_dir]
    started = time.perf_counter()
    clf.predict(texts)
    seconds = time.perf_counter() - started
    return {"texts": len(texts), "seconds": seconds, "texts_s": len(texts) / seconds}


def format_row(r: dict) -> str:
    return (f"{r['server']:<10} {r['clients']:>7} {r['texts_per_request']:>9} {r['requests']:>8} "
            f"{r['requests_s']:>8.1f} {r['texts_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['errors']:>6} {r['texts_per_pass']:>11.1f}")


def report(rows: list[dict], rss: dict, inproc: dict | None, runs: list[dict], args) -> None:
    print("\nserver     clients texts/req requests   req/s  texts/s  p50 ms  p95 ms  p99 ms errors texts/pass")
    for r in rows:
        print(format_row(r))
    for label, m in rss.items():
        first = f"{m['rss_at_1000']:.0f}" if m["rss_at_1000"] else "n/a"
        print(f"{label} server: {m['requests']} requests, RSS at request 1000 {first} MiB, at the end "
              f"{m['rss_at_end']:.0f} MiB, peak {m['peak']:.0f} MiB")
    for run in runs:
        print(f"in-process bertfeat.load(dir).predict: {run['texts']} texts in {run['seconds']:.1f} s = "
              f"{run['texts_s']:.1f} texts/s" + ("  (the faster: the ratios use it)" if run is inproc else ""))

    def pick(server, clients, n):
        return next((r for r in rows if (r["server"], r["clients"], r["texts_per_request"]) == (server, clients, n)),
                    None)

    if 32 in args.clients and 1 in args.texts:
        b, u = pick("batched", 32, 1), pick("unbatched", 32, 1)
        print(f"32 clients x 1 text: batched / unbatched throughput {b['texts_s'] / u['texts_s']:.2f} "
              f"(target >= 2); p99 {b['p99_ms']:.0f} ms batched, {u['p99_ms']:.0f} ms unbatched")
    if inproc:
        for clients in args.clients:
            b = pick("batched", clients, 16)
            print(f"{clients} clients x 16 texts: server / in-process texts/s {b['texts_s'] / inproc['texts_s']:.2f} "
                  "(target >= 0.70)")
    print(f"errors: {sum(r['errors'] for r in rows)} over {sum(r['requests'] for r in rows)} requests")
    for label, m in rss.items():
        if m["rss_at_1000"]:
            print(f"{label}: RSS at the end / at request 1000: {m['rss_at_end'] / m['rss_at_1000']:.3f} "
                  "(target within 10 %)")


if __name__ == "__main__":
    main()

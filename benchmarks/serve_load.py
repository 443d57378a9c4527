"""``bertfeat serve`` under load: batched against unbatched (``--max-batch 1``), and against in-process predict.

Starts ``cli.py serve`` on 127.0.0.1 (free ports, loopback only) twice, with batching on and with
``--max-batch 1``, and drives them in turn, scenario by scenario (a change in the machine's load hits both),
with a bounded number of concurrent keep-alive clients sending a fixed count of requests of 1 and of 16 texts.
Every text is distinct (a demo text and its number), so nothing is deduplicated. The clients are light on
purpose, since the issue measures the server and they share its cores: bodies encoded before the clock
starts, one asyncio stream per client writing raw HTTP/1.1 (the report prints their CPU time, 1-2 % of
the server's). Reports throughput, p50/p95/p99 latency, errors, texts per forward pass, the server's texts
per CPU-second, how busy it kept the cores and how much of the time a forward pass was running, each
server's peak RSS and its RSS at its 1,000th and its last request (after an uncounted warm-up at the
largest batches, so that ratio shows leaks, not the allocator meeting bigger shapes).

The 16-text runs are compared with in-process ``bertfeat.load(dir).predict`` on the same texts, one warm
call, in this process while the servers idle: run before the first such run, between runs and after the
last, and each run is set against the mean of the in-process runs on either side (other jobs on a shared
machine drift). In-process predict runs both with ``load``'s default batch size and with the server's (its
``/info``; the server cuts its passes finer on CPU runtimes), and the faster counts. The ratio per
CPU-second (server against in-process) does not move with other jobs on the machine; the wall-clock one does.

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
            sizes = list(dict.fromkeys([None, served_batch_size(servers["batched"].port)]))
            points = []  # in-process predict on the 16-text runs' texts, before, between and after them
            for n_texts, n_requests in zip(args.texts, args.requests):
                same = request_texts(corpus, 16, n_requests) if n_texts == 16 else None
                for clients in args.clients:
                    if same:
                        points.append([in_process(model_dir, same, size) for size in sizes])
                    for label, server in servers.items():
                        rows.append({"server": label, **measure(server, clients, n_texts, n_requests, corpus,
                                                                 probes[label])})
                        if same and label == "batched":  # compared with the in-process runs on either side
                            rows[-1]["point"] = len(points) - 1
                        print(format_row(rows[-1]), flush=True)
                if same:
                    points.append([in_process(model_dir, same, size) for size in sizes])
            rss = {label: probe.summary() for label, probe in probes.items()}
        finally:
            for server in servers.values():
                server.stop()
    report(rows, rss, points)


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


def measure(server: Server, clients: int, n_texts: int, n_requests: int, corpus: list[str], probe) -> dict:
    """One run against ``server``, with its texts per forward pass and the CPU seconds it and the load
    generator (this process) spent."""
    before, server_cpu, own_cpu = passes(server.port), cpu_seconds(server.pid), time.process_time()
    row = asyncio.run(drive(server.port, clients, n_texts, n_requests, corpus, probe))
    n_passes, n_texts_in, in_pass = passes(server.port) - before
    return {**row, "texts_per_pass": n_texts_in / max(n_passes, 1), "in_pass": in_pass / row["seconds"],
            "server_cpu_s": cpu_seconds(server.pid) - server_cpu, "client_cpu_s": time.process_time() - own_cpu}


def cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid`` has used, all its threads."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def passes(port: int) -> np.ndarray:
    """(forward passes, texts in them, seconds in them) so far, from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        lines = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines() if not line.startswith("#"))
    return np.array([float(lines[k]) for k in ("bertfeat_batch_texts_count", "bertfeat_batch_texts_sum",
                                                "bertfeat_forward_seconds_sum")])


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


def served_batch_size(port: int) -> int | None:
    """The sub-batch size of the server's forward passes (its /info) if it is not ``bertfeat.load``'s default,
    so that in-process predict can run alike too; else None."""
    import inspect

    import bertfeat

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=30) as r:
        size = next(iter(json.load(r)["models"].values()))["serving"].get("batch_size")
    return None if size == inspect.signature(bertfeat.load).parameters["batch_size"].default else size


_LOADED = {}


def in_process(model_dir: str, texts: list[str], batch_size: int | None) -> dict:
    """``bertfeat.load(model_dir).predict(texts)``, one call, warm; ``batch_size``: load's (None: its default)."""
    import bertfeat

    key = model_dir, batch_size
    if key not in _LOADED:
        _LOADED[key] = bertfeat.load(model_dir, **({"batch_size": batch_size} if batch_size else {}))
        _LOADED[key].predict(texts[:16])  # the model load, as the server's warm-up
    clf = _LOADED[key]
    started, cpu = time.perf_counter(), time.process_time()
    clf.predict(texts)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"texts": len(texts), "seconds": seconds, "texts_s": len(texts) / seconds, "texts_cpu_s": len(texts) / cpu,
            "call": f"load(dir{f', batch_size={batch_size}' if batch_size else ''}).predict"}


HEADER = ("server     clients texts/req requests   req/s  texts/s  p50 ms  p95 ms  p99 ms errors texts/pass "
          "texts/cpu-s  busy in-pass")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def format_row(r: dict) -> str:
    return (f"{r['server']:<10} {r['clients']:>7} {r['texts_per_request']:>9} {r['requests']:>8} "
            f"{r['requests_s']:>8.1f} {r['texts_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['errors']:>6} {r['texts_per_pass']:>11.1f} "
            f"{texts_per_cpu_s(r):>11.1f} "
            f"{r['server_cpu_s'] / (r['seconds'] * CORES):>5.2f} {r['in_pass']:>7.2f}")


def texts_per_cpu_s(r: dict) -> float:
    """Texts per CPU-second of the server process in run ``r``."""
    return r["requests"] * r["texts_per_request"] / r["server_cpu_s"]


def report(rows: list[dict], rss: dict, points: list[list[dict]]) -> None:
    print("\n" + HEADER)
    for r in rows:
        print(format_row(r))
    print(f"texts/cpu-s: texts per CPU-second of the server process; busy: its CPU-seconds / ({CORES} cores x wall); "
          "in-pass: share of the wall time a forward pass was running")
    for label, m in rss.items():
        first = f"{m['rss_at_1000']:.0f}" if m["rss_at_1000"] else "n/a"
        print(f"{label} server: {m['requests']} requests, RSS at request 1000 {first} MiB, at the end "
              f"{m['rss_at_end']:.0f} MiB, peak {m['peak']:.0f} MiB")
    client, server = sum(r["client_cpu_s"] for r in rows), sum(r["server_cpu_s"] for r in rows)
    print(f"load generator: {client:.1f} CPU-s over all runs, {client / server:.1%} of the servers' {server:.0f}")
    for i, point in enumerate(points):
        for run in point:
            print(f"in-process bertfeat.{run['call']} #{i}: {run['texts']} texts in {run['seconds']:.1f} s = "
                  f"{run['texts_s']:.1f} texts/s, {run['texts_cpu_s']:.1f} texts/cpu-s")

    def pick(server, clients, n):
        return next((r for r in rows if (r["server"], r["clients"], r["texts_per_request"]) == (server, clients, n)),
                    None)

    b, u = pick("batched", 32, 1), pick("unbatched", 32, 1)
    if b and u:
        print(f"32 clients x 1 text: batched / unbatched throughput {b['texts_s'] / u['texts_s']:.2f} "
              f"(target >= 2); p99 {b['p99_ms']:.0f} ms batched, {u['p99_ms']:.0f} ms unbatched")
    for r in rows:
        if "point" in r:
            # the other jobs on the machine drift: each call's mean over the runs just before and after
            around = points[r["point"]:r["point"] + 2]
            base = max(({k: (a[k] + z[k]) / 2 for k in ("texts_s", "texts_cpu_s")} | {"call": a["call"]}
                        for a, z in zip(*around)), key=lambda m: m["texts_s"])
            ratio, cpu_ratio = r["texts_s"] / base["texts_s"], texts_per_cpu_s(r) / base["texts_cpu_s"]
            print(f"{r['clients']} clients x 16 texts: server / in-process texts/s {ratio:.2f} (target >= 0.70; "
                  f"in-process {base['call']}: {base['texts_s']:.0f} texts/s, the faster call, mean of runs "
                  f"#{r['point']} and #{r['point'] + 1}); per CPU-second {cpu_ratio:.2f}")
    print(f"errors: {sum(r['errors'] for r in rows)} over {sum(r['requests'] for r in rows)} requests")
    for label, m in rss.items():
        if m["rss_at_1000"]:
            print(f"{label}: RSS at the end / at request 1000: {m['rss_at_end'] / m['rss_at_1000']:.3f} "
                  "(target within 10 %)")


if __name__ == "__main__":
    main()

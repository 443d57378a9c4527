"""Embed on a Ray cluster: Ray Data reads the input files and streams blocks of texts to a pool of
encoder actors; each actor loads the model once and writes its vectors to the cache as shards, exactly
as the local engine does, so ``fit``, ``bench`` and ``predict`` find them unchanged.

Only counts come back to the driver: the cache is the result. A shard is committed after its files are
durable, so a worker that dies mid-block loses at most that block's uncommitted part; Ray restarts the
actor and retries the block, whose committed texts are then served from the cache. A re-run after a
crash skips every committed text the same way.

The driver verifies the cache once before any actor starts (damaged shards are quarantined, as a local run
does), so actors trust the checksums. Retries are bounded: a block whose worker dies twice (a text that
runs the node out of memory, a crash in a runtime) is not run a third time but ends the job with one line
naming its file and rows; Ray Data's defaults would restart and retry it forever.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

import numpy as np

from bertfeat.errors import BertfeatError, ConfigError
from bertfeat.extract.data import iter_tables
from sklearn.base import clone

from bertfeat.extract.encoder import BertEncoder
from bertfeat.extract.model import CPU_ONLY_PRECISIONS
from bertfeat.extract.pipeline import SHARD_TEXTS, Embedder

# Texts per actor call: big enough that the per-call overhead (a Ray task, a cache lookup: ~10 ms) is
# small next to the forward pass, small enough that every worker gets work and a retried block costs
# little. A GPU embeds ~20x faster than a CPU core, so its blocks are larger.
BLOCK_TEXTS = {"cpu": 1024, "gpu": 16384}
COUNTS = ("n_texts", "n_unique", "n_cached", "n_embedded", "n_truncated", "n_windowed")
# Rows a reader task holds at once: a file of any size streams out in blocks of this many rows.
READ_ROWS = 10_000
# Runs of one block whose worker died; the next run refuses it with a one-line error (a task runs at most
# BLOCK_RUNS + 1 times). And restarts of one actor: a killed or preempted worker comes back, a crashing one
# does not forever.
BLOCK_RUNS = 2
ACTOR_RESTARTS = 4


def _read_file(batch: dict, text_col: str, pair_col: str | None, encoding: str, drop_empty: bool):
    """A Ray Data task: one input file -> its texts, block by block, checked by the same reader as the local
    engine. A generator, so Ray Data streams each block on to the encoders as it is read: the reader holds
    READ_ROWS rows, never the whole file (reading outpaces embedding by far, so one reader per file is
    enough)."""
    for table in iter_tables(str(batch["path"][0]), text_col, None, pair_col, encoding, drop_empty,
                             rows=READ_ROWS):
        if table.texts:
            out = {"text": np.array(table.texts, dtype=object)}
            if pair_col:
                out["pair"] = np.array(table.pairs, dtype=object)
            # Where each text came from, so a block that fails can be named by file and rows.
            out["path"] = np.full(len(table.texts), str(batch["path"][0]), dtype=object)
            out["row"] = np.array(table.rows, dtype=np.int64)
            yield out


def _where(batch: dict) -> str:
    """The files and row ranges of a block of texts: 'a.csv rows 2-1025'."""
    paths, rows = batch["path"], batch["row"]
    parts = []
    for path in dict.fromkeys(paths.tolist()):
        mine = rows[paths == path]
        parts.append(f"{path} rows {mine.min()}-{mine.max()}")
    return ", ".join(parts)


class BlockRuns:
    """A Ray actor that counts how often each block was started and not finished: the only way to know a
    block is being retried because its worker died, since the dead worker can no longer say."""

    def __init__(self):
        self.started: dict[str, int] = {}

    def start(self, where: str) -> int:
        self.started[where] = self.started.get(where, 0) + 1
        return self.started[where]

    def finish(self, where: str) -> None:
        self.started.pop(where, None)  # a block retried with its task after it finished starts over

    def failing(self) -> list[str]:
        return [where for where, runs in self.started.items() if runs >= BLOCK_RUNS]


class EncoderWorker:
    """A Ray actor: the model and the cache index are loaded once, then every block reuses them."""

    def __init__(self, params: list[dict], cache_dir: str, shard_size: int, threads: int | None, runs=None):
        self.runs = runs  # a BlockRuns actor
        if threads:  # before any runtime starts its pool: one per core otherwise, in every actor (oversubscribed)
            os.environ["OMP_NUM_THREADS"] = str(threads)
        # The driver verified the cache before starting the actors (_verify_cache), and actors only check
        # which texts are stored (load=False): hashing every shard again in every actor would buy nothing.
        self.embedder = Embedder([BertEncoder(**p) for p in params], cache_dir, shard_size, verify=False)

    def __call__(self, batch: dict) -> dict:
        import ray

        where = _where(batch)
        runs = ray.get(self.runs.start.remote(where)) if self.runs is not None else 1
        if runs > BLOCK_RUNS:  # an error, not a death: Ray Data does not retry it, the job ends here
            raise BertfeatError(_died(where, runs - 1))
        pairs = [str(p) for p in batch["pair"]] if "pair" in batch else None
        try:
            done = self.embedder([str(t) for t in batch["text"]], pairs, progress=False, load=False)
        except BertfeatError:
            raise
        except Exception as exc:  # a bug or a runtime's error on these texts: the same on every retry
            first = (str(exc).strip().splitlines() or [""])[0]
            raise BertfeatError(f"{where}: embedding failed ({type(exc).__name__}: {first})") from None
        if self.runs is not None:
            ray.get(self.runs.finish.remote(where))
        out = {name: np.array([getattr(done, name)]) for name in COUNTS}
        out["seconds"] = np.array([done.seconds])
        out["device"] = np.array([done.device or ""], dtype=object)
        out["precision"] = np.array([done.precision or ""], dtype=object)
        return out


def embed_on_ray(encoders: list[BertEncoder], files: list[str], cache_dir: str, *, text_col: str = "text",
                 pair_col: str | None = None, encoding: str = "utf-8", drop_empty: bool = False,
                 address: str | None = None, num_workers: int | None = None, gpus_per_worker: float | None = None,
                 block_texts: int | None = None, shard_size: int = SHARD_TEXTS, progress: bool = True) -> dict:
    """Embed every text of ``files`` into ``cache_dir`` (which every worker must reach) on Ray.

    ``address``: an existing cluster ("auto", "ray://host:10001"); None starts Ray on this machine.
    ``num_workers``: encoder actors (default: one per GPU, or one per CPU core when there is no GPU).
    ``gpus_per_worker``: default 1 when the cluster has GPUs, else 0 (CPU actors then split the cores).
    ``block_texts``: texts per actor call (default: BLOCK_TEXTS for the worker kind).
    """
    for enc in encoders:
        enc.validate()
    check_pool(num_workers, gpus_per_worker, block_texts)
    # Ray reports worker deaths and worker output on stdout, some of it only as it shuts down (its log
    # de-duplicator flushes then): --json needs stdout for its one object, so the whole session goes to stderr.
    with contextlib.redirect_stdout(sys.stderr), _session(address) as ray:
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [1])
        cpu_only = encoders[0].device == "cpu" or encoders[0].precision in CPU_ONLY_PRECISIONS
        gpus_per_worker = (1 if gpus and not cpu_only else 0) if gpus_per_worker is None else gpus_per_worker
        if gpus_per_worker and gpus_per_worker > gpus:
            raise BertfeatError(f"--gpus-per-worker {gpus_per_worker}: the Ray cluster has {gpus:g} GPU(s); "
                                "pass --gpus-per-worker 0 to run on CPUs")
        if num_workers is None:
            num_workers = int(gpus // gpus_per_worker) if gpus_per_worker else cpus
        block_texts = block_texts or BLOCK_TEXTS["gpu" if gpus_per_worker else "cpu"]
        # CPU actors share the cluster's cores evenly (on one machine: 2 actors x 1 thread on 2 cores);
        # a GPU actor takes one core for tokenizing and leaves the forward to the GPU.
        threads = None if gpus_per_worker else max(1, min(node_cpus, cpus // max(num_workers, 1)))
        if not gpus_per_worker:  # an actor without a GPU share must not pick up a node's GPU through auto
            encoders = [clone(enc).set_params(device="cpu") for enc in encoders]
        _verify_cache(encoders, cache_dir)
        context = ray.data.DataContext.get_current()
        # An error a block raises ends the job at once (Ray Data's defaults, relied on here): it would recur.
        context.actor_task_retry_on_errors = False
        context.max_errored_blocks = 0
        context.enable_progress_bars = progress
        context.print_on_execution_start = progress
        if not progress:
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        # A failed task's traceback is logged there before it is raised here; we report it once, below.
        for name in ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # Blocks are cut by bytes, and an actor takes whole blocks: blocks of ~1-2k short texts let even a
        # single file spread over every worker (``block_texts`` then bundles them into calls).
        context.target_max_block_size = 128 << 10
        # Readers take no CPU slot: otherwise encoder actors holding every slot would starve them.
        files_ds = ray.data.from_items([{"path": os.path.abspath(f)} for f in files])
        texts_ds = files_ds.map_batches(_read_file, batch_size=1, num_cpus=0, fn_kwargs={
            "text_col": text_col, "pair_col": pair_col, "encoding": encoding, "drop_empty": drop_empty})
        # Ray Data restarts an actor that dies (killed, preempted, out of memory) and retries its block:
        # the committed shards stay, so the retry embeds only what was not yet stored. Both are bounded
        # (its defaults are unbounded: a block that kills its worker every time would loop forever).
        runs = ray.remote(num_cpus=0)(BlockRuns).remote()
        counts_ds = texts_ds.map_batches(
            EncoderWorker, batch_size=block_texts, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=threads or 1,
            num_gpus=gpus_per_worker or None, max_restarts=ACTOR_RESTARTS, max_task_retries=BLOCK_RUNS,
            fn_constructor_kwargs={"params": [enc.get_params() for enc in encoders], "threads": threads,
                                   "cache_dir": os.path.abspath(cache_dir), "shard_size": shard_size,
                                   "runs": runs})
        totals = dict.fromkeys(COUNTS, 0)
        devices, precisions, busy = set(), set(), 0.0
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")  # counts files
                rows = list(counts_ds.iter_rows())
            for row in rows:
                for name in COUNTS:
                    totals[name] += int(row[name])
                busy += float(row["seconds"])
                devices.add(row["device"])
                precisions.add(row["precision"])
        except Exception as exc:  # Ray wraps what a task raised; a BertfeatError is shown as our one line
            error = _unwrap(exc)
            if not isinstance(error, BertfeatError):  # a worker died until Ray gave up: name the block if known
                failing = _ask(ray, runs.failing.remote())
                if failing:
                    error = BertfeatError(_died(failing[0], BLOCK_RUNS))
            raise error from None
        devices.discard("")
        precisions.discard("")
        return {**totals, "engine": "ray", "num_workers": num_workers, "gpus_per_worker": gpus_per_worker,
                "files": len(files), "worker_seconds": round(busy, 3), "device": ",".join(sorted(devices)) or None,
                "precision": ",".join(sorted(precisions)) or None}


def check_pool(num_workers: int | None, gpus_per_worker: float | None, block_texts: int | None) -> None:
    """The pool's sizes, checked before Ray starts (None: the default, chosen from the cluster)."""
    if num_workers is not None and num_workers < 1:
        raise ConfigError(f"bad --num-workers {num_workers}; expected 1 or more encoder actors")
    gpus = gpus_per_worker
    if gpus is not None and not (gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):  # Ray's rule, NaN out
        raise ConfigError(f"bad --gpus-per-worker {gpus:g}; expected 0 (CPU actors), a share of one "
                          "GPU such as 0.5 (actors share a GPU), or a whole number of GPUs per actor")
    if block_texts is not None and block_texts < 1:
        raise ConfigError(f"bad --block-size {block_texts}; expected 1 or more texts per actor call")


def _died(where: str, times: int) -> str:
    return (f"{where}: the Ray worker embedding these rows died {times} times (out of memory, or a crash in "
            "the model's runtime); embed them with --engine local to see the error, or lower --block-size")


def _ask(ray, ref, timeout: float = 10.0):
    try:
        return ray.get(ref, timeout=timeout)
    except Exception:  # noqa: BLE001 - only a better message was at stake
        return None


def _verify_cache(encoders: list[BertEncoder], cache_dir: str) -> None:
    """Verify, here and once, every cache entry the actors may read (they trust its checksums): the entries
    of these encoders' settings at any precision, since the driver may resolve ``auto`` otherwise than a
    GPU actor. Damaged shards are quarantined and re-embedded, exactly as a local run does."""
    from bertfeat.cache import VectorStore, text_keys
    from bertfeat.cache.layout import entry_settings

    def same(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k not in ("precision", "runtime")}

    # Settings as the driver computes them (device cpu: it needs no GPU); precision and runtime are ignored.
    wanted = [same(clone(enc).set_params(device="cpu").cache_settings()) for enc in encoders]
    names = sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []
    for name in names:
        settings = entry_settings(cache_dir, name)
        if settings is not None and same(settings) in wanted:
            store = VectorStore(cache_dir, name, verify=True)
            store.found(text_keys([]))  # loads the index: every shard checked, damaged ones quarantined
            store.close()


@contextlib.contextmanager
def _session(address: str | None):
    """Ray, joined at ``address`` or started on this machine (and then shut down when done)."""
    try:
        import ray
    except ImportError:
        raise BertfeatError("--engine ray needs Ray: pip install 'ray[data]'") from None
    started = not ray.is_initialized()
    if started:
        _join(ray, address)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


# How long to wait for a Ray cluster at --address to answer: ray.init itself retries for many minutes.
CONNECT_SECONDS = float(os.environ.get("BERTFEAT_RAY_CONNECT_SECONDS", "30"))


def _join(ray, address: str | None) -> None:
    """ray.init, bounded: an --address where no cluster answers is a one-line error within CONNECT_SECONDS."""
    import socket
    import threading

    def init():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, configure_logging=False)

    if not address:  # a new local Ray: nothing to wait for
        return init()
    hint = ("check the address (ray://HEAD:10001, HEAD:6379 or auto on a cluster node) and that the cluster is up "
            "(`ray status` on its head node), or leave out --address to start Ray on this machine")
    host, _, port = address.split("://")[-1].rpartition(":")
    if host and port.isdigit():  # nothing listening is known at once; ray.init would keep retrying
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
        except OSError as exc:
            raise BertfeatError(f"--address {address}: nothing answers there ({exc.strerror or exc}); {hint}") from None
    outcome = {}
    # Joining from a helper thread, ray.init warns that it cannot set its SIGTERM handler; the CLI ends on
    # SIGTERM anyway, and the line would stand beside the one error line a failed join prints.
    logging.getLogger("ray._private.worker").addFilter(lambda record: "SIGTERM handler" not in record.getMessage())

    def attempt():
        try:
            init()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            outcome["error"] = exc

    # A daemon thread: if the cluster never answers, the process can still exit with our error.
    thread = threading.Thread(target=attempt, name="bertfeat-ray-join", daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS)
    if thread.is_alive():
        raise BertfeatError(f"--address {address}: no Ray cluster answered within {CONNECT_SECONDS:g} s; {hint}")
    if "error" in outcome:
        exc = outcome["error"]
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BertfeatError(f"--address {address}: cannot join a Ray cluster ({first}); {hint}")


def _unwrap(exc: BaseException) -> BaseException:
    """The BertfeatError a Ray task raised, if any, as our one-line error; else ``exc`` itself.

    Across processes Ray keeps the error's text, not always the object, so the text is searched too.
    """
    seen, inner = set(), exc
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, BertfeatError) and not isinstance(inner, ray_exceptions()):
            return BertfeatError(str(inner))
        inner = getattr(inner, "cause", None) or inner.__cause__
    marker = "BertfeatError: "
    lines = [line for line in str(exc).splitlines() if marker in line]
    return BertfeatError(lines[-1].split(marker, 1)[1].strip()) if lines else exc


def ray_exceptions() -> tuple:
    import ray.exceptions

    return (ray.exceptions.RayError,)

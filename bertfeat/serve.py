"""``bertfeat serve``: model folders behind HTTP (FastAPI on uvicorn), micro-batched, measured, safe against
bad requests.

Routes: ``POST /predict`` (one model served) and ``POST /models/{name}/predict``; ``GET /health`` (200 once
every model is loaded and has run one forward pass, 503 before), ``/info``, ``/metrics`` (Prometheus text
format) and the OpenAPI docs at ``/docs``. Every error is JSON ``{"error": "..."}`` naming the problem: 400
for a body that is not JSON, 413 for one over ``max_body`` bytes, 422 for a request the model cannot take,
503 while the queue is full. Requests go through ``bertfeat.batcher``: concurrent ones share a forward pass.
SIGTERM (or Ctrl-C) stops taking connections, answers every request already accepted, then exits 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import time
from dataclasses import dataclass

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from bertfeat import __version__
from bertfeat.batcher import Batcher, QueueFull, Served
from bertfeat.errors import BertfeatError, ConfigError
from bertfeat.serve_request import BODY, parse_body, request_problem

log = logging.getLogger("bertfeat")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Texts per sub-batch of a forward pass on the CPU runtimes that run one single-thread stream per core
# (OpenVINO, onnxruntime). A server's pass holds only the texts in flight (128 at most by default), not a
# whole file: cut into sub-batches of up to 128 (2,048 tokens), its length-sorted texts were padded by 30 %,
# and a CPU pays for padding as for text; in sub-batches of 16 the padding is 8 % and every core has several
# to run (16-text requests: 0.78 -> 0.91 of in-process predict's texts per CPU-second, benchmarks/serve_load.py).
# A torch forward spreads one sub-batch over every core instead, and ran slower on 16.
STREAM_BATCH = 16


@dataclass(frozen=True)
class ServeOptions:
    """How ``bertfeat serve`` listens, batches and bounds requests (the CLI flags of the same names)."""
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 128  # texts per forward pass; 1 turns batching off
    max_wait_ms: float = 10.0  # how long a batch may wait for company
    max_texts: int = 256  # per request
    max_text_chars: int = 10_000
    max_body: int = 2 * 2**20  # bytes
    max_queue: int = 1024  # requests waiting for a forward pass
    precision: str | None = None
    device: str = "auto"
    trust_pickle: bool = False

    def check(self) -> None:
        for name in ("max_batch", "max_texts", "max_text_chars", "max_body", "max_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bad {name}={getattr(self, name)}; give a whole number of 1 or more")
        if self.max_wait_ms < 0:
            raise ConfigError(f"bad max_wait_ms={self.max_wait_ms}; give 0 or more milliseconds")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"bad port={self.port}; give a TCP port from 0 (any free one) to 65535")


def model_dirs(values: list[str]) -> dict[str, str]:
    """``--model-dir`` values (``DIR`` or ``NAME=DIR``) -> {name: folder}; a bare folder is named after itself."""
    dirs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or os.path.isdir(value):
            name, path = os.path.basename(os.path.normpath(value)), value
        if not _NAME.fullmatch(name):
            raise ConfigError(f"bad model_dir={value!r}: name '{name}' may hold letters, digits, '.', '_' and '-'; "
                              "pass NAME=DIR")
        if name in dirs:
            raise ConfigError(f"two models named '{name}' ({dirs[name]} and {path}); name them: "
                              f"--model-dir a={dirs[name]} --model-dir b={path}")
        dirs[name] = path
    return dirs


def load_models(dirs: dict[str, str], options: ServeOptions) -> dict[str, Served]:
    """Load each model folder (a damaged one fails here, before the server listens). Models whose encoders
    are the same settings on the same weights share one encoder, so they share its forward passes."""
    from bertfeat.model_folder import load

    served, shared = {}, {}
    for name, path in dirs.items():
        clf = load(path, trust_pickle=options.trust_pickle, precision=options.precision, device=options.device,
                   cache_dir=False)
        if clf.encoder.resolve_precision()[1] != "torch":
            clf.encoder.set_params(batch_size=STREAM_BATCH)
        key = (tuple(e.fingerprint() for e in clf.encoders()), clf.encoder.precision, clf.encoder.device)
        served[name] = Served(name, clf, key, shared.setdefault(key, clf))
    return served


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("bertfeat_requests", "predict requests answered, by model and HTTP status",
                                ["model", "status"], registry=r)
        self.texts = Counter("bertfeat_texts", "texts labelled, by model", ["model"], registry=r)
        self.errors = Counter("bertfeat_errors", "error responses of every route, by HTTP status", ["status"],
                              registry=r)
        self.latency = Histogram("bertfeat_request_seconds", "predict latency, request parsed to answer",
                                 ["model"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("bertfeat_batch_texts", "texts per forward pass", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.forward = Histogram("bertfeat_forward_seconds", "seconds per forward pass (all heads included)",
                                 registry=r, buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.queue = Gauge("bertfeat_queue_requests", "requests waiting for a forward pass", registry=r)
        self.disconnects = Counter("bertfeat_disconnects", "requests dropped because their client left", registry=r)

    def on_batch(self, n_texts: int, seconds: float) -> None:
        self.batch.observe(n_texts)
        self.forward.observe(seconds)

    def error(self, status: int, message: str) -> JSONResponse:
        self.errors.labels(str(status)).inc()
        return JSONResponse({"error": message}, status_code=status)


def model_info(model: Served) -> dict:
    from bertfeat.extract import model as model_io

    manifest, encoder = model.clf.manifest_, model.clf.encoder
    device = model_io.resolve_device(encoder.device)
    precision, runtime = encoder.resolve_precision(device)
    return {"dir": model.clf.folder_, "classes": _classes(model), "head": manifest["head"],
            "features": manifest["features"], "encoders": manifest["encoders"], "model_id": manifest["model_id"],
            "pair_col": manifest.get("pair_col"), "trained_with": manifest["trained_with"],
            "task": manifest.get("task", "single-label"), "thresholds": manifest.get("thresholds"),
            "serving": {"precision": precision, "runtime": runtime, "device": device,
                        "batch_size": encoder.batch_size}}


def _classes(model: Served) -> list:
    return [c.item() if hasattr(c, "item") else c for c in model.clf.classes_]


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the request's body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _warm_up(models: dict[str, Served]) -> None:
    """One forward pass per shared encoder: loads (or exports) each model before /health says ready."""
    for clf in {id(m.shared): m.shared for m in models.values()}.values():
        clf.transform_texts(["warm up"], ["warm up"] if clf.pair_col else None)


def make_app(models: dict[str, Served], options: ServeOptions, on_fail=None) -> FastAPI:
    """The ASGI app serving ``models``; ``on_fail(message)`` if a model cannot compute vectors at start."""
    metrics = Metrics()
    state = {"ready": False, "batcher": None}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = Batcher(options.max_batch, options.max_wait_ms / 1000, options.max_queue, metrics.on_batch)
        state["batcher"] = batcher
        metrics.queue.set_function(lambda: batcher.depth)
        warm = asyncio.ensure_future(batcher.run_in_thread(_warm_up, models))
        warm.add_done_callback(lambda f: _warmed(f, state, on_fail))
        batcher.start(warm)
        yield
        if batcher.depth:
            log.info("stopping: answering the %d queued requests first", batcher.depth)
        await batcher.stop()

    app = FastAPI(title="bertfeat serve", version=__version__, lifespan=lifespan,
                  description="Labels texts with bertfeat model folders; concurrent requests share forward passes.")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return metrics.error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    async def predict(model: Served, request: Request) -> Response:
        started = time.perf_counter()
        body = parse_body(await request.body())
        if isinstance(body, tuple):
            return metrics.error(*body)
        problem = request_problem(body, model, options.max_texts, options.max_text_chars)
        if problem:
            return metrics.error(422, problem)
        try:
            future = state["batcher"].submit(model, body.texts, body.pairs)
        except QueueFull as exc:
            return metrics.error(503, f"busy: {exc}; retry later")
        watch = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({future, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not future.done():  # the client left: drop its texts from the queue
            future.cancel()
            metrics.disconnects.inc()
            return Response(status_code=499)
        try:
            proba = future.result()
        except BertfeatError as exc:
            answer = metrics.error(422, str(exc))
        except Exception as exc:  # noqa: BLE001 - this request fails, the server goes on
            log.exception("model %s failed on a batch", model.name)
            answer = metrics.error(500, f"model '{model.name}' failed on this batch: {type(exc).__name__}: {exc}")
        else:
            classes = _classes(model)
            # one label a text, or (multi-label) the list of those that reach their thresholds
            labels = (model.clf.labels_of(proba) if model.clf.multi_label else [classes[i] for i in proba.argmax(1)])
            answer = JSONResponse({"model": model.name, "classes": classes, "labels": labels,
                                   "probabilities": np.round(proba.astype(float), 6).tolist()})
            metrics.texts.labels(model.name).inc(len(body.texts))
        metrics.requests.labels(model.name, str(answer.status_code)).inc()
        metrics.latency.labels(model.name).observe(time.perf_counter() - started)
        return answer

    @app.post("/predict", summary="label texts with the one model served", openapi_extra=BODY)
    async def predict_default(request: Request):
        if len(models) != 1:
            return metrics.error(404, f"{len(models)} models are served ({', '.join(models)}): "
                                      "POST /models/NAME/predict")
        return await predict(next(iter(models.values())), request)

    @app.post("/models/{name}/predict", summary="label texts with the model NAME", openapi_extra=BODY)
    async def predict_named(name: str, request: Request):
        if name not in models:
            return metrics.error(404, f"no model '{name}'; served: {', '.join(models)}")
        return await predict(models[name], request)

    @app.get("/health", summary="200 once every model has loaded and run a forward pass, 503 before")
    async def health():
        if state["ready"]:
            return {"status": "ready", "models": list(models)}
        return JSONResponse({"status": "loading", "models": list(models)}, status_code=503)

    @app.get("/info", summary="each model's classes, encoders, model_id and precision")
    async def info():
        return {"models": {name: model_info(m) for name, m in models.items()},
                "limits": {k: getattr(options, k) for k in ("max_batch", "max_wait_ms", "max_texts",
                                                            "max_text_chars", "max_body", "max_queue")}}

    @app.get("/metrics", summary="Prometheus text format: requests, errors, latency, batch sizes, queue depth")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return BodyLimit(app, options.max_body, metrics)


def _warmed(future, state, on_fail) -> None:
    if future.cancelled():
        return
    if future.exception() is None:
        state["ready"] = True
        log.info("ready")
    elif on_fail is not None:
        exc = future.exception()
        on_fail(str(exc) if isinstance(exc, BertfeatError) else f"a model failed its first forward pass: "
                f"{type(exc).__name__}: {exc}")


class BodyLimit:
    """ASGI wrapper: reads a request's body up to ``max_body`` bytes before the app sees it, and answers 413
    past that (Content-Length or bytes actually sent), so a huge body costs the server nothing."""

    def __init__(self, app, max_body: int, metrics: Metrics):
        self.app, self.max_body, self.metrics = app, max_body, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        body, more, too_big = b"", True, not length.isdigit() or int(length) > self.max_body
        while more and not too_big:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            body += message.get("body", b"")
            more, too_big = message.get("more_body", False), len(body) > self.max_body
        if too_big:
            answer = self.metrics.error(413, f"the body is over --max-body {self.max_body} bytes; send fewer "
                                             "or shorter texts per request")
            answer.headers["connection"] = "close"  # what is left of the body is never read
            return await answer(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn re-raises the signal after its graceful shutdown (exit 143 on SIGTERM); a server that
        # answered every request it accepted exits 0. A second Ctrl-C still forces the exit.
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so a taken port is one error line, not a uvicorn traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and without it every
    # keep-alive response waits 40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --port or --host") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(models: dict[str, Served], options: ServeOptions, quiet: bool = False, sock=None) -> int:
    """Serve ``models`` until SIGTERM or Ctrl-C (on ``sock``, from ``listen``, if given); returns 0 after a
    graceful stop."""
    sock = sock or listen(options.host, options.port)
    failures = []
    holder = {}

    def fail(message):
        failures.append(message)
        holder["server"].should_exit = True

    app = make_app(models, options, on_fail=fail)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=5,
                            log_config=None if quiet else uvicorn.config.LOGGING_CONFIG)
    server = holder["server"] = _Server(config)
    host, port = sock.getsockname()[:2]
    log.info("serving %s on http://%s:%d (docs: /docs); /health says ready once the models are warm",
             ", ".join(f"{n} ({m.clf.folder_})" for n, m in models.items()), host, port)
    server.run(sockets=[sock])
    if failures:
        raise BertfeatError(failures[0])
    log.info("stopped")
    return 0


__all__ = ["ServeOptions", "load_models", "make_app", "model_dirs", "run"]

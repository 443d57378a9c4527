"""Dynamic micro-batching for ``bertfeat serve``: concurrent requests share one forward pass.

Requests wait in one queue. A single worker task takes the first one, then more until it holds as many texts
as the clients have kept busy (the last batch's texts and those that queued during its forward pass; at most
``max_batch``), or ``max_wait`` seconds have passed since it started gathering, runs the forward pass in a thread
(the event loop keeps accepting and answering meanwhile) and resolves each request's future. A request is
never split: one of more than ``max_batch`` texts is a batch of its own, so ``max_batch=1`` is one request
per forward pass, batching off. Requests whose models share an encoder (same fingerprints, precision and
device) share its forward pass; each model's head then reads its own rows of the vectors. Expecting the last
load again means a lone client never waits for company that is not coming, and 32 clients are not cut into
halves by the few milliseconds their answers and next requests take to cross the event loop.
A request whose client left before its batch started is dropped (its future cancelled), freeing its place.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
from dataclasses import dataclass

import numpy as np


@dataclass
class Served:
    """A loaded model behind the server: ``clf`` predicts; ``shared`` computes the vectors of every model
    with the same ``key`` (the first such model), so one encoder serves them all."""
    name: str
    clf: object
    key: tuple
    shared: object


@dataclass
class Job:
    model: Served
    texts: list
    pairs: list | None
    future: asyncio.Future


class QueueFull(Exception):
    """More requests wait than the server holds (``max_queue``)."""


class Batcher:
    """Gathers ``submit``ted requests into forward passes; ``on_batch(n_texts, seconds)`` after each one."""

    def __init__(self, max_batch: int, max_wait: float, max_queue: int, on_batch=None):
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._jobs = collections.deque()
        self._arrived = asyncio.Event()
        self._closing = False
        # one forward pass at a time: it already uses every core
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bertfeat-forward")
        self._task = None
        self._failed = None
        self._expect = max_batch  # texts the next batch waits for (within max_wait)

    @property
    def depth(self) -> int:
        """Requests waiting for a forward pass."""
        return len(self._jobs)

    def start(self, ready: asyncio.Future | None = None) -> None:
        """Start the worker; with ``ready``, it waits for that (the warm-up) before the first batch."""
        self._task = asyncio.get_running_loop().create_task(self._work(ready))

    def submit(self, model: Served, texts: list, pairs: list | None) -> asyncio.Future:
        """Queue one request; its future gets the class probabilities (a row per text) or the error."""
        if self._closing:
            raise QueueFull("the server is shutting down")
        if len(self._jobs) >= self.max_queue:
            raise QueueFull(f"{len(self._jobs)} requests are waiting (--max-queue {self.max_queue})")
        job = Job(model, texts, pairs, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._arrived.set()
        return job.future

    async def run_in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._pool.shutdown(wait=True)

    async def _work(self, ready) -> None:
        if ready is not None:
            try:
                await ready
            except Exception as exc:  # noqa: BLE001 - the warm-up failed: every request gets its error
                self._failed = exc
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            if not jobs:
                return
            started = loop.time()
            try:
                if self._failed is not None:
                    raise self._failed
                results = await self.run_in_thread(forward, jobs)
            except Exception as exc:  # noqa: BLE001 - every waiting client gets the error, the server goes on
                results = [exc] * len(jobs)
            n_texts = sum(len(j.texts) for j in jobs)
            self._expect = min(self.max_batch, n_texts + sum(len(j.texts) for j in self._jobs))
            if self.on_batch is not None:
                self.on_batch(n_texts, loop.time() - started)
            for job, result in zip(jobs, results):
                if job.future.done():  # its client left during the forward pass
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def _gather(self) -> list:
        """The next batch: [] once closing and nothing is left."""
        loop = asyncio.get_running_loop()
        jobs, n, deadline = [], 0, None
        while True:
            while self._jobs and (not jobs or n + len(self._jobs[0].texts) <= self.max_batch):
                job = self._jobs.popleft()
                if job.future.done():  # cancelled: the client disconnected
                    continue
                jobs.append(job)
                n += len(job.texts)
                deadline = deadline or loop.time() + self.max_wait
            if n >= self._expect or (jobs and self._jobs) or (self._closing and (jobs or not self._jobs)):
                return jobs
            self._arrived.clear()
            timeout = None if not jobs else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                return jobs
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return jobs


def forward(jobs: list) -> list:
    """Class probabilities for each job: one encoder pass per (encoder, pairs or not) group of jobs, and one
    head call per model in it."""
    groups = collections.defaultdict(list)
    for job in jobs:
        groups[job.model.key, job.pairs is not None].append(job)
    results = {}
    for group in groups.values():
        group.sort(key=lambda job: job.model.name)  # stable: each model's rows side by side, in order
        texts = [t for job in group for t in job.texts]
        pairs = [p for job in group for p in job.pairs] if group[0].pairs is not None else None
        try:
            vectors = group[0].model.shared.transform_texts(texts, pairs)
        except Exception as exc:  # noqa: BLE001 - this group's clients get the error
            results.update((id(job), exc) for job in group)
            continue
        start = 0
        for _, same in itertools.groupby(group, key=lambda job: job.model.name):
            same = list(same)
            n = sum(len(job.texts) for job in same)
            proba = np.asarray(same[0].model.clf.head_.predict_proba(vectors[start:start + n]))
            start += n
            for job, end in zip(same, np.cumsum([len(job.texts) for job in same])):
                results[id(job)] = proba[end - len(job.texts):end]
    return [results[id(job)] for job in jobs]

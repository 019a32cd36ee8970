"""Requests that arrive together share one backend call (dynamic batching, as Triton's scheduler does).

Each request hands in its crops and awaits their scores. The batcher takes whole requests, oldest
first, up to `max_batch` crops (a request with more goes alone), and runs them in the backend's own
thread while the event loop keeps reading the next requests: so 32 clients cost about what one batch
costs. Once the queue holds a full batch it is handed to that thread behind the running call, so the
backend goes from one call to the next without waiting for the event loop. The first request of a
batch waits at most `max_delay` seconds for others to join it; while the backend is busy, requests
simply queue, so under load batches fill without any delay. A queue above `max_queue` crops is
refused with 503 at once rather than answered late.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from runtime.serve.protocol import RequestRefused


@dataclass
class Waiting:
    crops: np.ndarray
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What one backend call held and cost (for the metrics)."""

    requests: int
    crops: int
    seconds: float


class DynamicBatcher:
    """One per served model; `run` is the backend's (N, H, W, 3) uint8 -> (N, S) float32."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_delay: float, max_queue: int,
                 on_batch: Callable[[BatchStats], None] | None = None, name: str = "model"):
        self.run, self.max_batch, self.max_delay, self.max_queue = run, max_batch, max_delay, max_queue
        self.on_batch = on_batch or (lambda stats: None)
        self.waiting: deque[Waiting] = deque()
        self.queued_crops = 0
        self.calls = 0
        self.closing = False
        self.arrived: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        # One inference at a time per model: two sessions' runs at once would only fight for the cores.
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"gamma-serve-{name}")

    def start(self) -> None:
        """In the server's event loop, before the first request."""
        self.arrived = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def infer(self, crops: np.ndarray) -> np.ndarray:
        """The (N, S) scores of these crops, from a backend call they may share with other requests."""
        if self.closing or self.task is None:
            raise RequestRefused(503, "the server is stopping; send the request to another replica or retry")
        if self.waiting and self.queued_crops + len(crops) > self.max_queue:
            raise RequestRefused(503, f"the server is overloaded ({self.queued_crops} crops wait for the backend, "
                                      f"the limit is {self.max_queue}); retry later")
        waiting = Waiting(crops, asyncio.get_running_loop().create_future())
        self.waiting.append(waiting)
        self.queued_crops += len(crops)
        self.arrived.set()
        return await waiting.future

    @property
    def queue_depth(self) -> tuple[int, int]:
        """(requests, crops) waiting for the backend."""
        return len(self.waiting), self.queued_crops

    async def close(self) -> None:
        """Score what is queued, then stop (graceful stop: every accepted request is answered)."""
        self.closing = True
        if self.task is not None:
            self.arrived.set()
            await self.task
        self.pool.shutdown(wait=True)

    async def _loop(self) -> None:
        """Form batches and hand them to the backend's thread. While a call runs, the next batch is handed
        over too as soon as the queue holds a full one, so the backend's thread starts it the moment the
        call ends instead of idling while the event loop (busy reading bodies, or waiting for a core)
        gets round to it; a batch that is not full yet waits for the call to end, gathering requests."""
        running: deque[tuple[list[Waiting], asyncio.Future]] = deque()
        while True:
            while running and running[0][1].done():
                self._deliver(*running.popleft())
            if not running and not self.waiting:
                if self.closing:
                    return
            elif not running:
                await self._fill()
                self._submit(running, self._take())
                continue
            elif len(running) == 1 and self._full_batch_waits():
                self._submit(running, self._take())
                continue
            self.arrived.clear()                      # a new request or a finished call sets it again
            await self.arrived.wait()

    def _submit(self, running: deque, batch: list[Waiting]) -> None:
        if not batch:
            return
        # joined here, while the running call computes: joined in the backend's thread, 0.3 ms of copying
        # took about 2 ms between two calls under load (waiting for the GIL or a core), 4% of its time
        crops = batch[0].crops if len(batch) == 1 else np.concatenate([w.crops for w in batch])
        call = asyncio.get_running_loop().run_in_executor(self.pool, self._call, crops)
        call.add_done_callback(lambda _: self.arrived.set())
        running.append((batch, call))

    def _call(self, crops: np.ndarray) -> tuple[np.ndarray, float]:
        """In the backend's thread: the scores, and how long the backend took."""
        began = time.monotonic()
        return self.run(crops), time.monotonic() - began

    def _deliver(self, batch: list[Waiting], call: asyncio.Future) -> None:
        """Each request of a finished call gets its rows, or the call's exception."""
        exc = RequestRefused(503, "the server is stopping; retry") if call.cancelled() else call.exception()
        if exc is not None:                           # a failed call fails its requests, not the server
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        scores, seconds = call.result()
        self.calls += 1
        self.on_batch(BatchStats(len(batch), len(scores), seconds))
        start = 0
        for waiting in batch:
            count = len(waiting.crops)
            if not waiting.future.done():             # a client that went away was cancelled meanwhile
                waiting.future.set_result(scores[start:start + count])
            start += count

    async def _fill(self) -> None:
        """Let the oldest request wait up to max_delay for others to fill the batch."""
        deadline = self.waiting[0].arrived + self.max_delay
        while self.queued_crops < self.max_batch and not self.closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[Waiting]:
        """Whole requests, oldest first, up to max_batch crops (at least one request)."""
        batch, crops = [], 0
        while self.waiting:
            head = self.waiting[0]
            if head.future.done():                    # cancelled while it waited
                self.waiting.popleft()
                self.queued_crops -= len(head.crops)
                continue
            if batch and crops + len(head.crops) > self.max_batch:
                break
            self.waiting.popleft()
            self.queued_crops -= len(head.crops)
            batch.append(head)
            crops += len(head.crops)
        return batch

    def _full_batch_waits(self) -> bool:
        """Whether the queue already holds the batch _take would make after max_delay: max_batch crops,
        or as many whole requests as fit (the next one would not)."""
        crops = 0
        for waiting in self.waiting:
            if waiting.future.done():
                continue
            if crops and crops + len(waiting.crops) > self.max_batch:
                return True
            crops += len(waiting.crops)
            if crops >= self.max_batch:
                return True
        return False

"""Frames of many cameras scored in one backend call: the newest frame of each camera waits here,
and the oldest go first, whole images only, up to the scorer's batch in crops (an image with more
crops than the batch goes alone), the way a DeepStream muxer batches its sources. While the backend
scores one batch in its own thread (ONNX Runtime and OpenVINO release the GIL), the fleet's loop
gathers and crops the next."""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime.inference.scorer import mean_per_image
from runtime.live.frames import Frame


@dataclass
class Waiting:
    """A frame waiting for the backend, cropped when it arrived or (if it replaced an older one)
    when it is sent. `feed` is the camera's feed (runtime/fleet/feed.py)."""

    feed: object
    frame: Frame
    crops: np.ndarray | None


@dataclass
class Batch:
    """A finished backend call: each frame with its (S,) scores, and what the call cost."""

    scored: list[tuple[Waiting, np.ndarray]]
    crops: int
    seconds: float


class Batcher:
    def __init__(self, scorer, on_done: Callable[[], None]):
        self.scorer, self.on_done = scorer, on_done
        self.waiting: dict[str, Waiting] = {}
        self.inflight: tuple[Future, list[Waiting]] | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="gamma-fleet-infer")

    def offer(self, feed, frame: Frame) -> None:
        """A camera's newest frame to score. One the backend has not taken yet is replaced (counted as
        dropped): the newest wins, cropped only when sent, so a slow backend wastes no crops."""
        if feed.name in self.waiting:
            feed.replaced += 1
            self.waiting[feed.name] = Waiting(feed, frame, None)
        else:                               # cropped now, while the backend scores the batch before it
            self.waiting[feed.name] = Waiting(feed, frame, feed.preprocess(frame.image))

    @property
    def idle(self) -> bool:
        return self.inflight is None and not self.waiting

    def step(self) -> Batch | None:
        """The batch the backend finished, if any; then the next one is sent, if any waits."""
        finished = None
        if self.inflight is not None and self.inflight[0].done():
            finished = self._collect()
        if self.inflight is None and self.waiting:
            self._send()
        return finished

    def finish(self) -> Batch | None:
        """At the end: the batch in hand is finished and counted; frames never sent count as dropped."""
        finished = self._collect() if self.inflight is not None else None
        for waiting in self.waiting.values():
            waiting.feed.replaced += 1
        self.waiting.clear()
        self.pool.shutdown(wait=True)
        return finished

    def _send(self) -> None:
        batch, crops = [], 0
        for waiting in sorted(self.waiting.values(), key=lambda waiting: waiting.frame.captured):
            count = waiting.feed.preprocess.crops_per_image
            if batch and crops + count > self.scorer.batch:
                break
            batch.append(waiting)
            crops += count
        for waiting in batch:
            del self.waiting[waiting.feed.name]
        future = self.pool.submit(self._infer, batch)
        future.add_done_callback(lambda _: self.on_done())
        self.inflight = future, batch

    def _infer(self, batch: list[Waiting]) -> tuple[np.ndarray, float]:
        """In the inference thread: crop what was not cropped on arrival, then one backend call."""
        for waiting in batch:
            if waiting.crops is None:
                waiting.crops = waiting.feed.preprocess(waiting.frame.image)
        began = time.monotonic()
        scores = self.scorer.backend.run(np.concatenate([waiting.crops for waiting in batch]))
        return scores, time.monotonic() - began

    def _collect(self) -> Batch:
        future, batch = self.inflight
        self.inflight = None
        scores, seconds = future.result()
        means = mean_per_image(scores, [len(waiting.crops) for waiting in batch])
        return Batch(list(zip(batch, means)), len(scores), seconds)

"""Reader threads: frames and signals of one source, handed to the run.

Files are read in order, every frame, by a thread a couple of frames ahead (decoding overlaps
inference). Live sources (cameras, RTSP/HTTP streams) are read by a thread that keeps only the
newest frame, so latency stays bounded and nothing piles up; a dropped source is reopened with
backoff and reported as a Gap, then a Reconnect (docs/design.md sec. 5).
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

from runtime.inference.scorer import yield_to_inference
from runtime.live.frames import End, Frame, Gap, Reconnect, Signal
from runtime.live.selection import Selector
from runtime.live.source import Source, read_frame, release


@dataclass
class ReaderOptions:
    """How sources are read and reopened, and where the run's JSON lines go: the settings a run of
    one source and a fleet share."""

    jsonl: object | None = None      # a text stream for the JSON lines
    max_frames: int | None = None    # stop after this many frames read (per camera in a fleet)
    settle_frames: int = 5           # frames after a (re)connect that are never scored
    backoff: tuple[float, float] = (0.5, 10.0)   # first and longest wait between reconnect attempts
    open_timeout: float = 5.0        # seconds one open of a network stream may take
    read_timeout: float = 5.0        # seconds without a frame before a network stream counts as lost
    retries: int | None = None       # reopen attempts per outage of a live source; None: forever


class FileFrames:
    """Every frame of a video file, in order, decoded and cropped a little ahead by a thread.
    `read` counts the frames the runner took: frames decoded ahead when the run stops were
    never read as far as the run is concerned, so the summary's counts add up to it."""

    live = False

    def __init__(self, capture, source: Source, selector: Selector, preprocess, keep_all: bool,
                 stop: threading.Event, ahead: int = 2):
        self.capture, self.source, self.selector, self.preprocess = capture, source, selector, preprocess
        self.keep_all, self.stop = keep_all, stop
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.decoded = self.read = 0
        self.queue: queue.Queue = queue.Queue(maxsize=ahead)
        self.thread = threading.Thread(target=self._run, name="gamma-file-reader", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        yield_to_inference()
        try:
            index = 0
            while not self.stop.is_set():
                frame = self._next(index)
                if frame is None:
                    break
                self.decoded += 1
                if not self._put(frame):
                    return
                index += 1
            self._put(self._end())
        except BaseException as exc:  # handed to the runner, which re-raises it in the main thread
            self._put(exc)
        finally:
            release(self.capture)

    def _next(self, index: int) -> Frame | None:
        """Frame `index`, decoded only when it is scored or drawn; None at the end of the file."""
        try:
            grabbed = self.capture.grab()
        except cv2.error:
            grabbed = False
        if not grabbed:
            return None
        captured = time.monotonic()
        # Frame time from the index: deterministic, unlike container timestamps after a seek.
        t = index / self.fps if self.fps > 0 else self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        selected = self.selector(index, t)
        image = crops = None
        if selected or self.keep_all:
            ok, image = self.capture.retrieve()
            if not ok or image is None:
                return None
            if selected:
                crops = self.preprocess(image)
        return Frame(image, index, t, captured, selected, crops)

    def _end(self) -> End:
        if self.decoded == 0:
            return End("no frames", self.decoded, expected=self.expected)
        # A frame count in the header above what could be read means the file ends early (truncated).
        if self.expected > 0 and self.decoded < self.expected - 1:
            return End("ended early", self.decoded, expected=self.expected)
        return End("end of file", self.decoded)

    def __iter__(self) -> Iterator[Frame | Signal]:
        # A stop ends the run after the frame in hand, whatever is queued behind it.
        while not self.stop.is_set():
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Frame):
                self.read += 1
            yield item
            if isinstance(item, End):
                return

    def close(self, abort: threading.Event) -> None:
        self.stop.set()
        join_reader(self.thread, 5.0, abort)


@dataclass
class Outage:
    """A live source stopped delivering frames: since when, and how the reopening goes."""

    last_frame_at: float            # time.monotonic() of the last frame received before it
    delay: float                    # the next wait between reopen attempts (doubles up to the longest)
    attempts: int = 0


class LiveFrames:
    """The newest frame of a live source. A reader thread reads as fast as the source
    delivers; a frame the runner has not taken when the next arrives is dropped. A source
    that stops delivering (a failed or timed-out read) is reopened with backoff, up to
    `options.retries` attempts per outage (None: forever). `on_newest`, when given, is called
    (in the reader thread) each time a frame becomes the newest: a fleet wakes its loop with it."""

    live = True

    def __init__(self, capture, source: Source, open_source: Callable, stop: threading.Event, started: float,
                 options: ReaderOptions, on_newest: Callable[[], None] | None = None):
        self.capture, self.source, self.open_source = capture, source, open_source
        self.stop, self.started, self.options, self.on_newest = stop, started, options, on_newest
        self.read = self.dropped = self.settling = self.reconnects = 0
        self.signals: queue.Queue = queue.Queue()
        self.outage: Outage | None = None
        self._newest: Frame | None = None
        self._closed = False             # set by close(): counts are final, later frames are not counted
        self._ready = threading.Condition()
        self.error: BaseException | None = None
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.thread = threading.Thread(target=self._run, name="gamma-live-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            settle = self.options.settle_frames  # the first frames of a (re)connect: key-frame wait, exposure
            last_frame_at = time.monotonic()     # the open: a source that never delivers is lost from here
            while not self.stop.is_set():
                ok, image = read_frame(self.capture)
                now = time.monotonic()
                if not ok:
                    if not self._reopen(last_frame_at, now):
                        return
                    settle = self.options.settle_frames
                    continue
                last_frame_at = now
                if self.outage is not None:
                    self._reconnected(image, now)
                if not self._keep(image, now, settling=settle > 0):
                    return
                settle = max(0, settle - 1)
                if self.options.max_frames and self.read >= self.options.max_frames:
                    self.signals.put(End("max frames reached", self.read, frame=self.read))
                    return
        except BaseException as exc:  # handed to the runner, which re-raises it in the main thread
            self.error = exc
        finally:
            if self.capture is not None:
                release(self.capture)

    def _keep(self, image: np.ndarray, now: float, settling: bool) -> bool:
        """Count a frame read and make it the newest; False once the run has closed."""
        with self._ready:
            if self._closed:
                return False
            self.read += 1
            if settling:
                self.settling += 1
                return True
            if self._newest is not None:
                self.dropped += 1
            self._newest = Frame(image, self.read, now - self.started, now)
            self._ready.notify()
        if self.on_newest is not None:
            self.on_newest()
        return True

    def _reopen(self, last_frame_at: float, failed_at: float) -> bool:
        """Reopen the source after a failed read; False when the run stops or the retries run out.
        A reopened source that fails before its first frame brings the reader back here: the
        same outage goes on, with its attempts and backoff."""
        if self.outage is None:
            self._lost(last_frame_at, failed_at)
        release(self.capture)
        self.capture = None
        outage, retries = self.outage, self.options.retries
        while not self.stop.is_set():
            if retries is not None and outage.attempts >= retries:
                self.signals.put(End("source lost", self.read, frame=self.read, attempts=outage.attempts,
                                     since_s=round(time.monotonic() - outage.last_frame_at, 3)))
                return False
            if outage.attempts and self.stop.wait(outage.delay):
                return False
            if outage.attempts:
                outage.delay = min(outage.delay * 2, self.options.backoff[1])
            outage.attempts += 1
            capture = self.open_source(self.source)
            if capture is not None and capture.isOpened():
                self.capture = capture
                return True
            if capture is not None:
                release(capture)
        return False

    def _lost(self, last_frame_at: float, failed_at: float) -> None:
        """An outage begins: a frame read before the loss is stale now, and the gap is reported."""
        self.outage = Outage(last_frame_at, delay=self.options.backoff[0])
        with self._ready:
            if self._newest is not None:
                self.dropped += 1
                self._newest = None
        self.signals.put(Gap(self.read, round(failed_at - self.started, 3), "source stopped delivering frames",
                             last_frame_t=round(last_frame_at - self.started, 3)))

    def _reconnected(self, image: np.ndarray, now: float) -> None:
        """The first frame after an outage: the gap runs from the last frame before it to this one."""
        self.reconnects += 1
        self.signals.put(Reconnect(self.read, round(now - self.started, 3), self.outage.attempts,
                                   round(now - self.outage.last_frame_at, 3),
                                   (int(image.shape[1]), int(image.shape[0]))))
        self.outage = None

    def close(self, abort: threading.Event) -> None:
        """Stop reading; a frame still waiting to be taken counts as dropped."""
        with self._ready:
            self._closed = True
            self.stop.set()
            if self._newest is not None:
                self.dropped += 1
                self._newest = None
        # the reader may sit in an open or a read: each ends within its timeout
        join_reader(self.thread, self.options.open_timeout + self.options.read_timeout + 1.0, abort)

    def take(self, timeout: float) -> Frame | None:
        with self._ready:
            if self._newest is None and timeout > 0:
                self._ready.wait(timeout)
            frame, self._newest = self._newest, None
            return frame

    def drain_signals(self) -> list[Signal]:
        signals = []
        while not self.signals.empty():
            signals.append(self.signals.get_nowait())
        return signals

    def gather(self) -> list[Frame | Signal]:
        """What is ready now, in the order it happened: the signals, and the newest frame among them
        (a signal carries the count of frames read when it occurred). Raises what the reader raised."""
        if self.error is not None:
            raise self.error
        frame = self.take(timeout=0)
        return _in_order(frame, self.drain_signals())

    def __iter__(self) -> Iterator[Frame | Signal]:
        """Frames and signals in the order they happened. Ends when the run stops, or when the
        reader has ended (source lost, --max-frames) and all it left is out."""
        pending: list[Signal] = []
        while not self.stop.is_set():
            if self.error is not None:
                raise self.error
            reader_done = not self.thread.is_alive()
            frame = self.take(timeout=0.1)
            pending += self.drain_signals()
            limit = frame.index if frame is not None else math.inf
            while pending and pending[0].frame < limit:
                yield pending.pop(0)
            if frame is not None:
                yield frame
            elif reader_done:
                break
        if self.error is not None:
            raise self.error
        yield from pending + self.drain_signals()


def _in_order(frame: Frame | None, signals: list[Signal]) -> list[Frame | Signal]:
    if frame is None:
        return list(signals)
    return ([s for s in signals if s.frame < frame.index] + [frame] +
            [s for s in signals if s.frame >= frame.index])


def join_reader(thread: threading.Thread, seconds: float, abort: threading.Event) -> None:
    """Wait for a reader thread to end, at most `seconds`, and no longer once `abort` is set
    (a second Ctrl-C or SIGTERM): the reader is a daemon thread and goes with the process."""
    deadline = time.monotonic() + seconds
    while thread.is_alive() and not abort.is_set() and time.monotonic() < deadline:
        thread.join(0.1)

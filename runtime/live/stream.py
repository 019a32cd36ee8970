"""Score a camera, a video file or a network stream as it plays.

Files are read in order, every frame, by a reader thread a couple of frames ahead
(decoding overlaps inference). Live sources (cameras, RTSP/HTTP streams) are read by
a thread that keeps only the newest frame, so latency stays bounded and nothing piles
up; a dropped source is reopened with backoff. A frame that is not the scene (the
first frames after a (re)connect, a uniform filler frame) is never scored: the gap is
reported instead, so a dropout cannot raise a false low-quality alarm.
"""
from __future__ import annotations

import json
import math
import os
import queue
import signal
import tempfile
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from contract.errors import UserError
from contract.manifest import scene_index
from contract.video import VIDEO_CODECS     # the one codec table (contract/video.py)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "mms")


@dataclass(frozen=True)
class Source:
    """What SOURCE names: a camera (index or device path), a video file or a network stream."""

    text: str
    kind: str                       # "camera" | "file" | "network"
    target: int | str

    @property
    def live(self) -> bool:
        return self.kind != "file"


def parse_source(text: str) -> Source:
    text = str(text).strip()
    if text == "camera":
        return Source(text, "camera", 0)
    if text.isdigit():
        return Source(text, "camera", int(text))
    if text.startswith("camera:") and text[7:].isdigit():
        return Source(text, "camera", int(text[7:]))
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in NETWORK_SCHEMES:
            return Source(text, "network", text)
        if scheme == "file":
            text = text[7:]
        else:
            raise UserError(
                f"stream '{text}' uses the scheme '{scheme}', which is not supported; "
                f"use one of {', '.join(NETWORK_SCHEMES)}")
    if text.startswith("/dev/video"):
        return Source(text, "camera", text)
    path = Path(text).expanduser()
    if path.is_file():
        return Source(text, "file", str(path))
    raise UserError(
        f"source '{text}' is neither a camera index ('0', 'camera'), an existing video file nor a "
        f"stream URL (rtsp://, http://, ...); check the path or address")


@dataclass(frozen=True)
class Ending:
    """One way a run can end: the word the summary's `ended` field and the final line use,
    the exit status of `gamma-edge run`, and what it means (the table in docs/runtime.md)."""

    word: str
    exit_status: int
    meaning: str


ENDINGS = {ending.word: ending for ending in (
    Ending("finished", 0, "a file was read to its end, or --max-frames frames were read"),
    Ending("stopped", 0, "Ctrl-C, SIGTERM, or q / Esc in the --show window"),
    Ending("source never opened", 1, "the source could not be opened at the start"),
    Ending("source lost", 3, "a live source stopped delivering frames and --retries reopen attempts failed"),
    Ending("file truncated", 4, "a video file ended before the frame count in its header"),
    Ending("no frames", 5, "a video file opened but not one frame could be read from it"),
)}
# The `reason` of an `end` event (kept from the readers' own words) -> the run's ending.
END_REASONS = {"end of file": "finished", "max frames reached": "finished", "ended early": "file truncated",
               "no frames": "no frames", "source lost": "source lost"}

# Native libraries' own logs: set by the user, they are left alone (see quiet_native_logs).
NATIVE_LOG_VARIABLES = ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG")


def quiet_native_logs() -> None:
    """Keep OpenCV's and FFmpeg's own warnings ("[http @ 0x..] Stream ends prematurely",
    "[ WARN:0@..] ... can't be used to capture by name") off stderr: they repeat, in words
    meant for developers, what the run's own gap / reconnect / error lines say. OpenCV reads
    OPENCV_FFMPEG_LOGLEVEL once, when it first loads FFmpeg, so call this before any capture
    or writer opens. A user who set any of NATIVE_LOG_VARIABLES gets exactly what they set."""
    if any(name in os.environ for name in NATIVE_LOG_VARIABLES):
        return
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"         # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def open_capture(source: Source, open_timeout: float = 5.0, read_timeout: float = 5.0):
    """The default capture factory: cv2.VideoCapture set up for the kind of source."""
    if source.kind == "camera":
        capture = cv2.VideoCapture(source.target)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)          # honoured by V4L2 only; the reader thread does the rest
        return capture
    if source.kind == "network":
        if str(source.target).lower().startswith("rtsp") and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"   # UDP loses packets -> smeared frames
        # Without timeouts a dead stream blocks open() / read() for 30 s or forever.
        return cv2.VideoCapture(source.target, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(read_timeout * 1000)])
    return cv2.VideoCapture(source.target)


def _read(capture) -> tuple[bool, np.ndarray | None]:
    try:
        ok, image = capture.read()
    except cv2.error:
        return False, None
    return (ok and image is not None and image.size > 0), image


def _release(capture) -> None:
    try:
        capture.release()
    except Exception:  # a broken capture may fail to release; it is dropped either way
        pass


@dataclass
class Frame:
    image: np.ndarray | None
    index: int                      # frame number in the file, or frames read from a live source
    t: float                        # video time (files) or seconds since the run started (live)
    captured: float                 # time.monotonic() when the frame was read
    selected: bool | None = None    # files: decided by the reader; live: decided by the runner
    crops: np.ndarray | None = None


class Selector:
    """Score every N-th frame and at most F frames per second (of video time for files)."""

    def __init__(self, every: int = 1, max_fps: float | None = None):
        self.every, self.max_fps = every, max_fps
        self.last_index: int | None = None
        self.last_t: float | None = None

    def __call__(self, index: int, t: float) -> bool:
        if self.last_index is not None and index - self.last_index < self.every:
            return False
        if self.max_fps and self.last_t is not None and t - self.last_t < 1.0 / self.max_fps - 1e-4:
            return False
        self.last_index, self.last_t = index, t
        return True


class FileFrames:
    """Every frame of a video file, in order, decoded and cropped a little ahead by a thread.
    `read` counts the frames the runner took: frames decoded ahead when the run stops were
    never read as far as the run is concerned, so the summary's counts add up to it."""

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
        from runtime.inference.scorer import yield_to_inference

        yield_to_inference()
        try:
            index = 0
            while not self.stop.is_set():
                try:
                    grabbed = self.capture.grab()
                except cv2.error:
                    grabbed = False
                if not grabbed:
                    break
                captured = time.monotonic()
                # Frame time from the index: deterministic, unlike container timestamps after a seek.
                t = index / self.fps if self.fps > 0 else self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                selected = self.selector(index, t)
                image = crops = None
                if selected or self.keep_all:
                    ok, image = self.capture.retrieve()
                    if not ok or image is None:
                        break
                    if selected:
                        crops = self.preprocess(image)
                self.decoded += 1
                if not self._put(Frame(image, index, t, captured, selected, crops)):
                    return
                index += 1
            self._put(self._end_event())
        except BaseException as exc:  # handed to the runner, which re-raises it in the main thread
            self._put(exc)
        finally:
            _release(self.capture)

    def _end_event(self) -> dict:
        event = {"event": "end", "frames": self.decoded}
        if self.decoded == 0:
            event.update(reason="no frames", expected=self.expected)
        # A frame count in the header above what could be read means the file ends early (truncated).
        elif self.expected > 0 and self.decoded < self.expected - 1:
            event.update(reason="ended early", expected=self.expected)
        else:
            event.update(reason="end of file")
        return event

    def __iter__(self) -> Iterator:
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
            if isinstance(item, dict) and item.get("event") == "end":
                return

    def close(self, abort: threading.Event) -> None:
        self.stop.set()
        _join(self.thread, 5.0, abort)


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
    `options.retries` attempts per outage (None: forever)."""

    def __init__(self, capture, source: Source, open_source: Callable, stop: threading.Event, started: float,
                 options: "RunOptions"):
        self.capture, self.source, self.open_source = capture, source, open_source
        self.stop, self.started, self.options = stop, started, options
        self.read = self.dropped = self.settling = self.reconnects = 0
        self.events: queue.Queue = queue.Queue()
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
                ok, image = _read(self.capture)
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
                    self.events.put({"event": "end", "frame": self.read, "frames": self.read,
                                     "reason": "max frames reached"})
                    return
        except BaseException as exc:  # handed to the runner, which re-raises it in the main thread
            self.error = exc
        finally:
            if self.capture is not None:
                _release(self.capture)

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
            return True

    def _reopen(self, last_frame_at: float, failed_at: float) -> bool:
        """Reopen the source after a failed read; False when the run stops or the retries run out.
        A reopened source that fails before its first frame brings the reader back here: the
        same outage goes on, with its attempts and backoff."""
        if self.outage is None:
            self.outage = Outage(last_frame_at, delay=self.options.backoff[0])
            with self._ready:
                if self._newest is not None:     # a frame read before the loss is stale now
                    self.dropped += 1
                    self._newest = None
            self.events.put({"event": "gap", "frame": self.read, "t": round(failed_at - self.started, 3),
                             "last_frame_t": round(last_frame_at - self.started, 3),
                             "reason": "source stopped delivering frames"})
        _release(self.capture)
        self.capture = None
        outage, retries = self.outage, self.options.retries
        while not self.stop.is_set():
            if retries is not None and outage.attempts >= retries:
                self.events.put({"event": "end", "frame": self.read, "frames": self.read, "reason": "source lost",
                                 "attempts": outage.attempts,
                                 "since_s": round(time.monotonic() - outage.last_frame_at, 3)})
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
                _release(capture)
        return False

    def _reconnected(self, image: np.ndarray, now: float) -> None:
        """The first frame after an outage: the gap runs from the last frame before it to this one."""
        self.reconnects += 1
        self.events.put({"event": "reconnect", "frame": self.read, "t": round(now - self.started, 3),
                         "attempts": self.outage.attempts, "gap_s": round(now - self.outage.last_frame_at, 3),
                         "size": [int(image.shape[1]), int(image.shape[0])]})
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
        _join(self.thread, self.options.open_timeout + self.options.read_timeout + 1.0, abort)

    def take(self, timeout: float) -> Frame | None:
        with self._ready:
            if self._newest is None:
                self._ready.wait(timeout)
            frame, self._newest = self._newest, None
            return frame

    def drain_events(self) -> list[dict]:
        events = []
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return events

    def __iter__(self) -> Iterator:
        """Frames and events in the order they happened: an event carries the count of frames
        read when it occurred, so it comes before any frame read after it. Ends when the run
        stops, or when the reader has ended (source lost, --max-frames) and all it left is out."""
        pending: list[dict] = []
        while not self.stop.is_set():
            if self.error is not None:
                raise self.error
            reader_done = not self.thread.is_alive()
            frame = self.take(timeout=0.1)
            pending += self.drain_events()
            limit = frame.index if frame is not None else math.inf
            while pending and pending[0]["frame"] < limit:
                yield pending.pop(0)
            if frame is not None:
                yield frame
            elif reader_done:
                break
        if self.error is not None:
            raise self.error
        yield from pending + self.drain_events()


def _join(thread: threading.Thread, seconds: float, abort: threading.Event) -> None:
    """Wait for a reader thread to end, at most `seconds`, and no longer once `abort` is set
    (a second Ctrl-C or SIGTERM): the reader is a daemon thread and goes with the process."""
    deadline = time.monotonic() + seconds
    while thread.is_alive() and not abort.is_set() and time.monotonic() < deadline:
        thread.join(0.1)


class SourceNeverOpened(UserError):
    """The source could not be opened at the start. The run's summary (ended: 'source never
    opened') was written to the JSON lines already and travels with the error for the CLI."""

    def __init__(self, message: str, summary: "Summary | None" = None):
        super().__init__(message)
        self.summary = summary


def _never_opened(source: Source, waited: float, open_timeout: float) -> str:
    """Say what happened: a stream that answered nothing for the whole timeout differs from one
    that refused or answered with an error at once (a 404, nothing listening)."""
    if source.kind == "camera":
        return (f"camera {source.target} could not be opened; check that it is connected and not in use, "
                f"or pass another index")
    if source.kind == "network":
        if waited >= 0.9 * open_timeout:
            return (f"stream '{source.text}' did not answer within {open_timeout:g} s (--open-timeout); "
                    f"check the address and network, or allow longer with --open-timeout")
        return (f"stream '{source.text}' could not be opened: it refused the connection or answered with an "
                f"error after {waited:.1f} s (nothing listening, a wrong path or credentials, or not a video); "
                f"check the address and credentials")
    return (f"'{source.text}' is not a video OpenCV can open (corrupt, truncated or an unsupported "
            f"codec); check the file")


def is_blank(image: np.ndarray) -> bool:
    """A uniform frame (black / grey filler of a dropped stream) is not a scene."""
    sample = image[::8, ::8]
    return int(sample.max()) - int(sample.min()) <= 2


@dataclass
class RunOptions:
    scene: str | None = None
    every: int = 1
    max_fps: float | None = None
    smooth: int = 1
    threshold: float | None = None
    jsonl: object | None = None      # a text stream for per-frame JSON lines
    save: str | None = None
    show: bool = False
    max_frames: int | None = None    # stop after this many frames read
    settle_frames: int = 5
    backoff: tuple[float, float] = (0.5, 10.0)   # first and longest wait between reconnect attempts
    open_timeout: float = 5.0        # seconds one open of a network stream may take
    read_timeout: float = 5.0        # seconds without a frame before a network stream counts as lost
    retries: int | None = None       # reopen attempts per outage of a live source; None: forever


@dataclass
class Summary:
    source: str
    engine: str = ""                 # the backend's own description: engine, device, precision read back
    precision: str = ""
    frames_read: int = 0
    scored: int = 0
    skipped: int = 0
    dropped: int = 0
    blank: int = 0
    settling: int = 0
    reconnects: int = 0
    low: int = 0
    elapsed_s: float = 0.0
    scores: list = field(default_factory=list, repr=False)
    latencies_ms: list = field(default_factory=list, repr=False)
    ended: str = ""                  # a key of ENDINGS
    detail: str = ""                 # the final line: what ended the run, in one sentence

    @property
    def exit_status(self) -> int | None:
        """None while the run has not ended."""
        return ENDINGS[self.ended].exit_status if self.ended in ENDINGS else None

    def as_dict(self) -> dict:
        scores = np.asarray(self.scores, dtype=np.float64)
        latencies = np.asarray(self.latencies_ms, dtype=np.float64)
        return {
            "event": "summary", "source": self.source, "engine": self.engine, "precision": self.precision,
            "frames_read": self.frames_read,
            "scored": self.scored, "skipped": self.skipped, "dropped": self.dropped, "blank": self.blank,
            "settling": self.settling, "reconnects": self.reconnects, "low": self.low,
            "mean_score": round(float(scores.mean()), 6) if scores.size else None,
            "min_score": round(float(scores.min()), 6) if scores.size else None,
            "scored_per_s": round(self.scored / self.elapsed_s, 3) if self.elapsed_s > 0 else None,
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 3) if latencies.size else None,
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 3) if latencies.size else None,
            "elapsed_s": round(self.elapsed_s, 3), "ended": self.ended, "detail": self.detail,
            "exit_status": self.exit_status,
        }

    def text(self) -> str:
        d = self.as_dict()
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        return (f"{d['source']}: {d['frames_read']} frames read, {d['scored']} scored, {d['skipped']} skipped, "
                f"{d['dropped']} dropped, {d['blank'] + d['settling']} not scored (blank or settling), "
                f"{d['reconnects']} reconnects; score mean {fmt(d['mean_score'], '.4f')}, "
                f"min {fmt(d['min_score'], '.4f')}; {fmt(d['scored_per_s'], '.2f')} scored/s, latency p50 "
                f"{fmt(d['latency_ms_p50'], '.1f')} ms, p95 {fmt(d['latency_ms_p95'], '.1f')} ms ({d['ended']})")

    def final_line(self) -> str:
        """The last line on stderr: the ending and why; `Error: ...` for an ending that is a failure."""
        if self.exit_status:
            return f"Error: {self.detail}"
        return f"{self.ended}: {self.detail}"


STOPPED = "stopped on request (Ctrl-C, SIGTERM, or q / Esc in the window)"


class StopSignals:
    """Ctrl-C and SIGTERM are one request: both set `stop`, the run ends after the frame in hand
    with its summary, and both count the same. A second signal of either kind sets `abort`: the
    run stops waiting for its reader thread (a stalled open or read). Without `abort` (Python
    callers), a second Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, stop: threading.Event, abort: threading.Event | None = None):
        self.stop, self.abort, self.previous = stop, abort, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.stop.is_set() and self.abort is not None:
            self.abort.set()
        elif self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def annotate(image: np.ndarray, score: float | None, smoothed: float | None, low: bool) -> np.ndarray:
    text = "no score yet" if score is None else f"score {score:.3f}  smoothed {smoothed:.3f}"
    if low:
        text += "  LOW"
    color = (0, 0, 255) if low else (0, 200, 0)
    scale = max(0.5, image.shape[1] / 1000)
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.rectangle(image, (0, 0), (width + 16, height + base + 16), (0, 0, 0), thickness=-1)
    cv2.putText(image, text, (8, height + 8), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 2, cv2.LINE_AA)
    return image


class AnnotatedVideo:
    """--save: the frames with their score drawn on, at the source's frame rate and size.
    Checked when made (before any thread starts): the extension, the folder, and a trial
    writer in that folder, so a folder that takes no files and a codec this OpenCV lacks are
    each named before a stream is waited for."""

    def __init__(self, path: str, fps: float = 25.0):
        self.path = Path(path)
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise UserError(
                f"--save '{path}' has an unsupported extension; use .mp4 (mp4v) or .avi (MJPG)")
        if not self.path.parent.exists():
            raise UserError(f"--save '{path}': the folder '{self.path.parent}' does not exist; create it first")
        self.codec, self.fps = codec, fps
        self.writer = None
        self.size: tuple[int, int] | None = None
        self._try_writer()

    def _try_writer(self) -> None:
        try:
            handle, trial = tempfile.mkstemp(prefix=".gamma-edge-", suffix=self.path.suffix, dir=self.path.parent)
        except OSError:
            raise UserError(f"--save '{self.path}': the folder '{self.path.parent}' is not writable; "
                                   f"choose a folder you can write to") from None
        os.close(handle)
        try:
            writer = cv2.VideoWriter(trial, cv2.VideoWriter_fourcc(*self.codec), 25.0, (64, 64))
            opened = writer.isOpened()
            writer.release()
        finally:
            os.unlink(trial)
        if not opened:
            raise UserError(self._codec_missing())

    def _codec_missing(self) -> str:
        return (f"--save '{self.path}': this OpenCV build cannot write {self.path.suffix} video with the "
                f"{self.codec} codec; use .mp4 (mp4v) or .avi (MJPG)")

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.codec), self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(self._codec_missing())
        if (image.shape[1], image.shape[0]) != self.size:     # a reconnect may change the frame size
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class Window:
    """--show: the frame and its score in a window; q or Esc stops."""

    NAME = "gamma-edge"

    def __init__(self):
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UserError("--show needs a display, and none is set (DISPLAY); drop --show or use --save")
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UserError(
                "--show needs an OpenCV build with windows (opencv-python, not opencv-python-headless); "
                "install it or use --save instead") from None

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.NAME, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.NAME)


@dataclass
class Smoothing:
    """The score shown and flagged: the mean of the last N scores, restarted after a gap."""

    size: int
    threshold: float | None
    recent: deque = field(init=False)
    score: float | None = None
    smoothed: float | None = None
    low: bool = False

    def __post_init__(self):
        self.recent = deque(maxlen=self.size)

    def add(self, score: float) -> None:
        self.recent.append(score)
        self.score, self.smoothed = score, float(np.mean(self.recent))
        self.low = self.threshold is not None and self.smoothed < self.threshold


class StreamRunner:
    """Score a source frame by frame and write per-frame JSON lines, video and window."""

    def __init__(self, scorer, source: Source, options: RunOptions, open_source: Callable | None = None,
                 stop: threading.Event | None = None, log: Callable[[str], None] | None = None):
        self.scorer, self.source, self.options = scorer, source, options
        self.open_source = open_source or (
            lambda src: open_capture(src, options.open_timeout, options.read_timeout))
        self.stop = stop or threading.Event()
        self.abort = threading.Event()       # a second stop request: do not wait for the reader
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        scene = options.scene or scorer.scene
        self.scene_index = scene_index(scorer.scenes, scene)
        _check_options(options)

    def signals(self) -> StopSignals:
        """Ctrl-C and SIGTERM handling for this run (enter it in the main thread around run())."""
        return StopSignals(self.stop, self.abort)

    def emit(self, record: dict) -> None:
        if self.options.jsonl is not None:
            self.options.jsonl.write(json.dumps(record) + "\n")
            self.options.jsonl.flush()

    def run(self) -> Summary:
        """Open the source, score what it delivers until it ends or the run is stopped, and
        write the summary (JSON lines) for every ending, 'source never opened' included."""
        options = self.options
        summary = Summary(self.source.text, engine=self.scorer.backend.describe(),
                          precision=self.scorer.backend.precision, ended="stopped", detail=STOPPED)
        selector = Selector(options.every, options.max_fps)
        video = AnnotatedVideo(options.save) if options.save else None   # checked before any thread starts
        window = Window() if options.show else None
        started = time.monotonic()
        try:
            frames = self._start(selector, started, keep_all=bool(video or window))
        except SourceNeverOpened as exc:
            if window:
                window.close()
            exc.summary = self._end_never_opened(summary, str(exc), started)
            raise
        if video:
            video.fps = frames.fps if frames.fps > 0 else 25.0
        try:
            self._score_all(frames, selector, summary, video, window)
        except KeyboardInterrupt:           # Ctrl-C without StopSignals (Python callers)
            summary.ended, summary.detail = "stopped", STOPPED
        finally:
            self._close(frames, summary, started, video, window)
        self.emit(summary.as_dict())
        return summary

    def _start(self, selector: Selector, started: float, keep_all: bool):
        """Open the source (one attempt: a wrong address should not pass for a flaky camera) and
        start its reader."""
        capture = self.open_source(self.source)
        if capture is None or not capture.isOpened():
            if capture is not None:
                _release(capture)
            raise SourceNeverOpened(_never_opened(self.source, time.monotonic() - started, self.options.open_timeout))
        if self.source.live:
            return LiveFrames(capture, self.source, self.open_source, self.stop, started, self.options)
        return FileFrames(capture, self.source, selector, self.scorer.preprocess, keep_all=keep_all, stop=self.stop)

    def _end_never_opened(self, summary: Summary, sentence: str, started: float) -> Summary:
        summary.ended, summary.detail = "source never opened", sentence
        summary.elapsed_s = time.monotonic() - started
        self.emit(summary.as_dict())
        return summary

    def _score_all(self, frames, selector: Selector, summary: Summary, video, window) -> None:
        smoothing = Smoothing(self.options.smooth, self.options.threshold)
        was_blank = False
        for item in frames:
            if isinstance(item, dict):
                self._on_event(item, summary, smoothing)
                continue
            frame: Frame = item
            selected = frame.selected if frame.selected is not None else selector(frame.index, frame.t)
            if selected and is_blank(frame.image if frame.image is not None else frame.crops[0]):
                summary.blank += 1
                if not was_blank:
                    self.emit({"event": "gap", "frame": frame.index, "t": round(frame.t, 3),
                               "reason": "blank frame (filler), not scored"})
                was_blank = True
            elif selected:
                was_blank = False
                self._score(frame, summary, smoothing)
            else:
                summary.skipped += 1
            if frame.image is not None and (video or window):
                self._draw(frame, smoothing, video, window)
            if not self.source.live and self.options.max_frames and frame.index + 1 >= self.options.max_frames:
                summary.ended, summary.detail = "finished", f"{self.options.max_frames} frames read (--max-frames)"
                self.stop.set()

    def _on_event(self, event: dict, summary: Summary, smoothing: Smoothing) -> None:
        self.emit(event)
        if event["event"] == "end":
            summary.ended = END_REASONS[event["reason"]]
            summary.detail = self._end_detail(event)
        elif event["event"] == "gap":
            self.log(f"gap in {self.source.text}: {event['reason']}; reconnecting")
            smoothing.recent.clear()          # smoothing never spans a gap: the scene may differ after it
        elif event["event"] == "reconnect":
            self.log(f"reconnected to {self.source.text} after {event['gap_s']} s without frames "
                     f"({event['attempts']} attempt(s))")

    def _end_detail(self, event: dict) -> str:
        name, reason = self.source.text, event["reason"]
        if reason == "end of file":
            return f"'{name}' was read to its end"
        if reason == "max frames reached":
            return f"{self.options.max_frames} frames read (--max-frames)"
        if reason == "ended early":
            return (f"'{name}' ends after {event['frames']} of the {event['expected']} frames its header announces "
                    f"(truncated); the frames before the cut were scored")
        if reason == "no frames":
            return f"'{name}' opened but holds no frame OpenCV can read (empty or corrupt); check the file"
        retries = "--retries" if self.options.retries is None else f"--retries {self.options.retries}"
        return (f"stream '{name}' delivered no frame for {event['since_s']:.1f} s and {event['attempts']} reopen "
                f"attempt(s) failed ({retries}); check the source, or allow more with --retries")

    def _score(self, frame: Frame, summary: Summary, smoothing: Smoothing) -> None:
        crops = frame.crops if frame.crops is not None else self.scorer.preprocess(frame.image)
        score = float(self.scorer.score_crops(crops)[self.scene_index])
        latency_ms = (time.monotonic() - frame.captured) * 1000.0
        smoothing.add(score)
        summary.scored += 1
        summary.low += smoothing.low
        summary.scores.append(score)
        summary.latencies_ms.append(latency_ms)
        self.emit({"frame": frame.index, "t": round(frame.t, 3), "score": round(score, 6),
                   "smoothed": round(smoothing.smoothed, 6), "low": smoothing.low,
                   "latency_ms": round(latency_ms, 2)})

    def _draw(self, frame: Frame, smoothing: Smoothing, video, window) -> None:
        picture = annotate(frame.image.copy(), smoothing.score, smoothing.smoothed, smoothing.low)
        if video:
            video.write(picture)
        if window and not window.show(picture):
            self.stop.set()

    def _close(self, frames, summary: Summary, started: float, video, window) -> None:
        self.stop.set()
        frames.close(self.abort)
        if video:
            video.close()
        if window:
            window.close()
        summary.elapsed_s = time.monotonic() - started
        summary.frames_read = frames.read
        if self.source.live:
            summary.dropped = frames.dropped
            summary.settling = frames.settling
            summary.reconnects = frames.reconnects


def _check_options(options: RunOptions) -> None:
    """Option values no run can use, in the CLI's words."""
    for name, value, least in (("--every", options.every, 1), ("--smooth", options.smooth, 1)):
        if value < least:
            raise UserError(f"{name} must be at least {least}, not {value}")
    for name, value in (("--fps", options.max_fps), ("--open-timeout", options.open_timeout),
                        ("--read-timeout", options.read_timeout), ("--backoff", options.backoff[0])):
        if value is not None and value <= 0:
            raise UserError(f"{name} must be above 0, not {value}")
    if options.backoff[1] < options.backoff[0]:
        raise UserError(f"--backoff-max ({options.backoff[1]}) must be at least --backoff ({options.backoff[0]})")
    if options.retries is not None and options.retries < 0:
        raise UserError(f"--retries must be 0 or more, or 'forever', not {options.retries}")

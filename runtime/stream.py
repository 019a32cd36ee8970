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
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import RuntimeUserError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "mms")
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


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
            raise RuntimeUserError(
                f"stream '{text}' uses the scheme '{scheme}', which is not supported; "
                f"use one of {', '.join(NETWORK_SCHEMES)}")
    if text.startswith("/dev/video"):
        return Source(text, "camera", text)
    path = Path(text).expanduser()
    if path.is_file():
        return Source(text, "file", str(path))
    raise RuntimeUserError(
        f"source '{text}' is neither a camera index ('0', 'camera'), an existing video file nor a "
        f"stream URL (rtsp://, http://, ...); check the path or address")


def open_capture(source: Source):
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
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])
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
    """Every frame of a video file, in order, decoded and cropped a little ahead by a thread."""

    def __init__(self, capture, source: Source, selector: Selector, preprocess, keep_all: bool,
                 stop: threading.Event, ahead: int = 2):
        self.capture, self.source, self.selector, self.preprocess = capture, source, selector, preprocess
        self.keep_all, self.stop = keep_all, stop
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.read = 0
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
        from .scorer import yield_to_inference

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
                self.read += 1
                if not self._put(Frame(image, index, t, captured, selected, crops)):
                    return
                index += 1
            self._put(self._end_event())
        except BaseException as exc:  # handed to the runner, which re-raises it in the main thread
            self._put(exc)
        finally:
            _release(self.capture)

    def _end_event(self) -> dict:
        event = {"event": "end", "frames": self.read}
        # A frame count in the header above what could be read means the file ends early (truncated).
        if self.expected > 0 and self.read < self.expected - 1:
            event.update(reason="ended early", expected=self.expected)
        else:
            event.update(reason="end of file")
        return event

    def __iter__(self) -> Iterator:
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, dict) and item.get("event") == "end":
                return


class LiveFrames:
    """The newest frame of a live source. A reader thread reads as fast as the source
    delivers; a frame the runner has not taken when the next arrives is dropped."""

    def __init__(self, source: Source, open_source: Callable, stop: threading.Event, started: float,
                 settle_frames: int = 5, backoff: tuple[float, float] = (0.5, 10.0)):
        self.source, self.open_source, self.stop, self.started = source, open_source, stop, started
        self.settle_frames, self.backoff = settle_frames, backoff
        self.read = self.dropped = self.settling = self.reconnects = 0
        self.events: queue.Queue = queue.Queue()
        self._newest: Frame | None = None
        self._ready = threading.Condition()
        self.error: BaseException | None = None
        self.capture = open_source(source)
        if self.capture is None or not self.capture.isOpened():
            raise RuntimeUserError(_unreachable(source))
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.thread = threading.Thread(target=self._run, name="gamma-live-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            settle = self.settle_frames      # the first frames of a (re)connect: key-frame wait, exposure
            while not self.stop.is_set():
                ok, image = _read(self.capture)
                now = time.monotonic()
                if not ok:
                    self._reconnect(now)
                    settle = self.settle_frames
                    continue
                self.read += 1
                if settle > 0:
                    settle -= 1
                    self.settling += 1
                    continue
                with self._ready:
                    if self._newest is not None:
                        self.dropped += 1
                    self._newest = Frame(image, self.read, now - self.started, now)
                    self._ready.notify()
        except BaseException as exc:  # handed to the runner, which re-raises it in the main thread
            self.error = exc
        finally:
            if self.capture is not None:
                _release(self.capture)

    def _reconnect(self, lost_at: float) -> None:
        with self._ready:
            if self._newest is not None:     # a frame read before the loss is stale now
                self.dropped += 1
                self._newest = None
        self.events.put({"event": "gap", "frame": self.read, "t": round(lost_at - self.started, 3),
                         "reason": "source stopped delivering frames"})
        _release(self.capture)
        self.capture = None
        delay, attempts = self.backoff[0], 0
        while not self.stop.is_set():
            attempts += 1
            capture = self.open_source(self.source)
            if capture is not None and capture.isOpened():
                self.capture = capture
                self.reconnects += 1
                now = time.monotonic()
                width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
                height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
                self.events.put({"event": "reconnect", "frame": self.read, "t": round(now - self.started, 3),
                                 "attempts": attempts, "gap_s": round(now - lost_at, 3),
                                 "size": [width, height]})
                return
            if capture is not None:
                _release(capture)
            self.stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])

    def close(self) -> None:
        """Stop reading; a frame still waiting to be taken counts as dropped."""
        self.stop.set()
        self.thread.join(timeout=2 * READ_TIMEOUT_MS / 1000)
        with self._ready:
            if self._newest is not None:
                self.dropped += 1
                self._newest = None

    def take(self, timeout: float) -> Frame | None:
        with self._ready:
            if self._newest is None:
                self._ready.wait(timeout)
            frame, self._newest = self._newest, None
            return frame

    def _drain_events(self) -> list[dict]:
        events = []
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return events

    def __iter__(self) -> Iterator:
        """Frames and events in the order they happened: an event carries the count of frames
        read when it occurred, so it comes before any frame read after it."""
        pending: list[dict] = []
        while not self.stop.is_set():
            if self.error is not None:
                raise self.error
            frame = self.take(timeout=0.1)
            pending += self._drain_events()
            limit = frame.index if frame is not None else math.inf
            while pending and pending[0]["frame"] < limit:
                yield pending.pop(0)
            if frame is not None:
                yield frame
        self.thread.join(timeout=2 * READ_TIMEOUT_MS / 1000)
        yield from pending + self._drain_events()


def _unreachable(source: Source) -> str:
    if source.kind == "camera":
        return (f"camera {source.target} could not be opened; check that it is connected and not in use, "
                f"or pass another index")
    if source.kind == "network":
        return (f"stream '{source.text}' could not be opened within {OPEN_TIMEOUT_MS // 1000} s; "
                f"check the address, credentials and network")
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
    ended: str = ""

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
            "elapsed_s": round(self.elapsed_s, 3), "ended": self.ended,
        }

    def text(self) -> str:
        d = self.as_dict()
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        return (f"{d['source']}: {d['frames_read']} frames read, {d['scored']} scored, {d['skipped']} skipped, "
                f"{d['dropped']} dropped, {d['blank'] + d['settling']} not scored (blank or settling), "
                f"{d['reconnects']} reconnects; score mean {fmt(d['mean_score'], '.4f')}, "
                f"min {fmt(d['min_score'], '.4f')}; {fmt(d['scored_per_s'], '.2f')} scored/s, latency p50 "
                f"{fmt(d['latency_ms_p50'], '.1f')} ms, p95 {fmt(d['latency_ms_p95'], '.1f')} ms ({d['ended']})")


class StopSignals:
    """Ctrl-C and SIGTERM both set `stop` so the run ends with a summary; a second Ctrl-C aborts."""

    def __init__(self, stop: threading.Event):
        self.stop, self.previous = stop, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.stop.is_set() and signum == signal.SIGINT:
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
    """--save: the frames with their score drawn on, at the source's frame rate and size."""

    def __init__(self, path: str, fps: float = 25.0):
        self.path = Path(path)
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise RuntimeUserError(
                f"--save '{path}' has an unsupported extension; use .mp4 (mp4v) or .avi (MJPG)")
        if not self.path.parent.exists():
            raise RuntimeUserError(f"--save '{path}': the folder '{self.path.parent}' does not exist; create it first")
        self.codec, self.fps = codec, fps
        self.writer = None
        self.size: tuple[int, int] | None = None

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.codec), self.fps, self.size)
            if not self.writer.isOpened():
                raise RuntimeUserError(f"OpenCV cannot write the video '{self.path}'; use .mp4 or .avi")
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
            raise RuntimeUserError("--show needs a display, and none is set (DISPLAY); drop --show or use --save")
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise RuntimeUserError(
                "--show needs an OpenCV build with windows (opencv-python, not opencv-python-headless); "
                "install it or use --save instead") from None

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.NAME, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.NAME)


class StreamRunner:
    """Score a source frame by frame and write per-frame JSON lines, video and window."""

    def __init__(self, scorer, source: Source, options: RunOptions, open_source: Callable = open_capture,
                 stop: threading.Event | None = None, log: Callable[[str], None] | None = None):
        self.scorer, self.source, self.options = scorer, source, options
        self.open_source = open_source
        self.stop = stop or threading.Event()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        scene = options.scene or scorer.scene
        if scene not in scorer.scenes:
            raise RuntimeUserError(f"scene {scene!r} is not in this model; it scores {', '.join(scorer.scenes)}")
        self.scene_index = scorer.scenes.index(scene)
        for name, value, least in (("--every", options.every, 1), ("--smooth", options.smooth, 1)):
            if value < least:
                raise RuntimeUserError(f"{name} must be at least {least}, not {value}")
        if options.max_fps is not None and options.max_fps <= 0:
            raise RuntimeUserError(f"--fps must be above 0, not {options.max_fps}")

    def emit(self, record: dict) -> None:
        if self.options.jsonl is not None:
            self.options.jsonl.write(json.dumps(record) + "\n")
            self.options.jsonl.flush()

    def run(self) -> Summary:
        options = self.options
        summary = Summary(self.source.text, engine=self.scorer.backend.describe(),
                          precision=self.scorer.backend.precision)
        selector = Selector(options.every, options.max_fps)
        window = Window() if options.show else None
        video = AnnotatedVideo(options.save) if options.save else None   # checked before any thread starts
        started = time.monotonic()
        if self.source.live:
            frames = LiveFrames(self.source, self.open_source, self.stop, started, options.settle_frames,
                                options.backoff)
        else:
            capture = self.open_source(self.source)
            if capture is None or not capture.isOpened():
                raise RuntimeUserError(_unreachable(self.source))
            frames = FileFrames(capture, self.source, selector, self.scorer.preprocess,
                                keep_all=bool(options.save or options.show), stop=self.stop)
        if video:
            video.fps = frames.fps if frames.fps > 0 else 25.0
        recent: deque = deque(maxlen=options.smooth)
        score = smoothed = None
        low = was_blank = False
        summary.ended = "stopped"
        try:
            for item in frames:
                if isinstance(item, dict):
                    self.emit(item)
                    if item["event"] == "end":
                        summary.ended = item["reason"]
                    elif item["event"] == "gap":
                        self.log(f"gap in {self.source.text}: {item['reason']}; reconnecting")
                        recent.clear()          # smoothing never spans a gap: the scene may differ after it
                    elif item["event"] == "reconnect":
                        self.log(f"reconnected to {self.source.text} after {item['gap_s']} s")
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
                    crops = frame.crops if frame.crops is not None else self.scorer.preprocess(frame.image)
                    score = float(self.scorer.score_crops(crops)[self.scene_index])
                    latency_ms = (time.monotonic() - frame.captured) * 1000.0
                    recent.append(score)
                    smoothed = float(np.mean(recent))
                    low = options.threshold is not None and smoothed < options.threshold
                    summary.scored += 1
                    summary.low += low
                    summary.scores.append(score)
                    summary.latencies_ms.append(latency_ms)
                    self.emit({"frame": frame.index, "t": round(frame.t, 3), "score": round(score, 6),
                               "smoothed": round(smoothed, 6), "low": low, "latency_ms": round(latency_ms, 2)})
                else:
                    summary.skipped += 1
                if frame.image is not None and (video or window):
                    picture = annotate(frame.image.copy(), score, smoothed, low)
                    if video:
                        video.write(picture)
                    if window and not window.show(picture):
                        self.stop.set()
                seen = frames.read if self.source.live else frame.index + 1
                if options.max_frames and seen >= options.max_frames:
                    summary.ended = f"max frames ({options.max_frames}) reached"
                    self.stop.set()
        except KeyboardInterrupt:
            summary.ended = "interrupted"
        finally:
            self.stop.set()
            if self.source.live:
                frames.close()
            else:
                frames.thread.join(timeout=5)
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
        self.emit(summary.as_dict())
        return summary

"""Score one camera, video file or network stream as it plays (`gamma-edge run SOURCE`).

A frame that is not the scene (the first frames after a (re)connect, a uniform filler frame) is
never scored: the gap is reported instead, so a dropout cannot raise a false low-quality alarm.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from contract.errors import UserError
from contract.manifest import manifest_id, scene_index
from runtime.live.display import AnnotatedVideo, Window, annotate
from runtime.live.frames import End, Frame, Gap, Reconnect, Signal
from runtime.live.readers import FileFrames, LiveFrames, ReaderOptions
from runtime.live.selection import BlankRun, Selector
from runtime.watch.camera import CameraWatch, WatchRules
from runtime.outputs.base import Outputs
from runtime.outputs.log import EventLog
from runtime.watch.smoothing import Smoothing
from runtime.watch.state_file import StateFile

SAVE_S = 30.0       # a live source's normal and conditions are saved this often (and at the end)
from runtime.live.session import LiveSession
from runtime.live.source import Source, SourceNeverOpened, never_opened, release
from runtime.live.summary import STOPPED, Summary, max_frames_detail


@dataclass(kw_only=True)
class RunOptions(ReaderOptions, WatchRules):
    """How one source is read, scored, watched (WatchRules) and shown."""

    scene: str | None = None
    every: int = 1
    fps: float | None = None         # score at most this many frames per second
    smooth: int = 1                  # one source: each frame's own score unless asked
    save: str | None = None
    show: bool = False
    baseline_file: str | None = None  # the source's normal and conditions, kept across restarts


class StreamRunner(LiveSession):
    """Score a source frame by frame and write per-frame JSON lines, video and window."""

    def __init__(self, scorer, source: Source, options: RunOptions, open_source: Callable | None = None,
                 stop=None, log: Callable[[str], None] | None = None):
        super().__init__(scorer, options, open_source, stop, log)
        self.source = source
        self.watch: CameraWatch | None = None
        self.outputs = Outputs([self.jsonl, EventLog(self.log)])
        self.state_file = (StateFile(options.baseline_file, manifest_id(scorer.manifest.raw), self.log)
                           if options.baseline_file else None)
        self.scene_index = scene_index(scorer.scenes, options.scene or scorer.scene)
        check_options(options)

    def run(self) -> Summary:
        """Open the source, score what it delivers until it ends or the run is stopped, and
        write the summary (JSON lines) for every ending, 'source never opened' included."""
        options = self.options
        summary = self.new_summary(self.source.text)
        selector = Selector(options.every, options.fps)
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
            summary.end("stopped", STOPPED)
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
                release(capture)
            raise SourceNeverOpened(never_opened(self.source, time.monotonic() - started, self.options.open_timeout))
        if self.source.live:
            return LiveFrames(capture, self.source, self.open_source, self.stop, started, self.options)
        return FileFrames(capture, self.source, selector, self.scorer.preprocess, keep_all=keep_all, stop=self.stop)

    def _end_never_opened(self, summary: Summary, sentence: str, started: float) -> Summary:
        summary.end("source never opened", sentence)
        summary.elapsed_s = time.monotonic() - started
        self.emit(summary.as_dict())
        return summary

    def _score_all(self, frames, selector: Selector, summary: Summary, video, window) -> None:
        watch = self.watch = self._watch()
        blank_run = BlankRun()
        saved = time.monotonic()
        for item in frames:
            if not isinstance(item, Frame):
                self._on_signal(item, summary, watch)
                continue
            selected = item.selected if item.selected is not None else selector(item.index, item.t)
            if selected:
                self._take(item, summary, watch, blank_run)
            else:
                summary.skipped += 1
            if item.image is not None and (video or window):
                self._draw(item, watch.smoothing, video, window)
            if not self.source.live and self.options.max_frames and item.index + 1 >= self.options.max_frames:
                summary.end("finished", max_frames_detail(self.options.max_frames))
                self.stop.set()
            if self.state_file is not None and time.monotonic() - saved >= SAVE_S:
                self.state_file.save({self.source.text: watch.as_dict()})
                saved = time.monotonic()

    def _watch(self) -> CameraWatch:
        """The source's conditions and normal, as a previous run with this baseline file left them."""
        watch = CameraWatch(self.options, started=0.0, name=self.source.text)
        if self.state_file is not None:
            # kept under the shown address (no password); a file written before that keyed it by the
            # address as given: read it once, and the next save drops that key
            cameras = self.state_file.load()
            saved = cameras.get(self.source.text) or cameras.get(str(self.source.target))
            if saved:
                watch.restore(saved)
        return watch

    def _publish(self, events: list[dict], image=None) -> None:
        for event in events:
            self.outputs.publish_event(event, image)

    def _on_signal(self, signal: Signal, summary: Summary, watch: CameraWatch) -> None:
        """One source reports its outages as its gap and reconnect records: the watch hears of them
        (its counts restart, its state is lost) but its source_lost / source_back say nothing more."""
        self.emit(signal.record())
        if isinstance(signal, End):
            summary.end(signal.ending, self._end_detail(signal))
        elif isinstance(signal, Gap):
            self.log(f"gap in {self.source.text}: {signal.reason}; reconnecting")
            watch.on_gap(signal.t, signal.reason)
        elif isinstance(signal, Reconnect):
            self.log(f"reconnected to {self.source.text} after {signal.gap_s} s without frames "
                     f"({signal.attempts} attempt(s))")
            watch.on_reconnect(signal.t, signal.gap_s)

    def _end_detail(self, end: End) -> str:
        name, reason = self.source.text, end.reason
        if reason == "end of file":
            return f"'{name}' was read to its end"
        if reason == "max frames reached":
            return max_frames_detail(self.options.max_frames)
        if reason == "ended early":
            return (f"'{name}' ends after {end.frames} of the {end.expected} frames its header announces "
                    f"(truncated); the frames before the cut were scored")
        if reason == "no frames":
            return f"'{name}' opened but holds no frame OpenCV can read (empty or corrupt); check the file"
        retries = "--retries" if self.options.retries is None else f"--retries {self.options.retries}"
        return (f"stream '{name}' delivered no frame for {end.since_s:.1f} s and {end.attempts} reopen "
                f"attempt(s) failed ({retries}); check the source, or allow more with --retries")

    def _take(self, frame: Frame, summary: Summary, watch: CameraWatch, blank_run: BlankRun) -> None:
        """A selected frame: watched (covered? frozen?) and scored, unless it is a uniform filler
        (counted, and its run reported once)."""
        image = frame.image if frame.image is not None else frame.crops[0]
        blank, gap = blank_run.check(frame, image)
        if blank:
            summary.blank += 1
            if gap is not None:
                self.emit(gap.record())
            return
        if frame.image is not None:
            self._publish(watch.on_picture(frame.t, frame.image), frame.image)
        self._score(frame, summary, watch)

    def _score(self, frame: Frame, summary: Summary, watch: CameraWatch) -> None:
        crops = frame.crops if frame.crops is not None else self.scorer.preprocess(frame.image)
        score = float(self.scorer.score_crops(crops)[self.scene_index])
        latency_ms = (time.monotonic() - frame.captured) * 1000.0
        events = watch.on_score(frame.t, score)
        smoothing = watch.smoothing
        summary.add_score(score, latency_ms, smoothing.low)
        self.emit({"frame": frame.index, "t": round(frame.t, 3), "score": round(score, 6),
                   "smoothed": round(smoothing.smoothed, 6), "low": smoothing.low, "state": watch.state,
                   "latency_ms": round(latency_ms, 2)})
        self._publish(events, frame.image)

    def _draw(self, frame: Frame, smoothing: Smoothing, video, window) -> None:
        picture = annotate(frame.image.copy(), smoothing.score, smoothing.smoothed, smoothing.low)
        if video:
            video.write(picture)
        if window and not window.show(picture):
            self.stop.set()

    def _close(self, frames, summary: Summary, started: float, video, window) -> None:
        self.stop.set()
        frames.close(self.abort)
        if self.state_file is not None and self.watch is not None:
            self.state_file.save({self.source.text: self.watch.as_dict()})
        if video:
            video.close()
        if window:
            window.close()
        summary.elapsed_s = time.monotonic() - started
        summary.take_reader_counts(frames)


def check_options(options: RunOptions) -> None:
    """Option values no run can use, in the CLI's words."""
    for name, value, least in (("--every", options.every, 1), ("--smooth", options.smooth, 1)):
        if value < least:
            raise UserError(f"{name} must be at least {least}, not {value}")
    for name, value in (("--fps", options.fps), ("--open-timeout", options.open_timeout),
                        ("--read-timeout", options.read_timeout), ("--backoff", options.backoff[0])):
        if value is not None and value <= 0:
            raise UserError(f"{name} must be above 0, not {value}")
    if options.backoff[1] < options.backoff[0]:
        raise UserError(f"--backoff-max ({options.backoff[1]}) must be at least --backoff ({options.backoff[0]})")
    if options.retries is not None and options.retries < 0:
        raise UserError(f"--retries must be 0 or more, or 'forever', not {options.retries}")

"""One camera of a fleet: what its reader delivered, turned into records, quality events and a
state for the outputs, and the frames it hands to the batcher (docs/fleet.md).

The route of a frame, one way: reader -> feed (selected? blank? covered or frozen?) -> batcher
(one backend call for many cameras) -> feed (the score: degraded or recovered?) -> outputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from contract.errors import UserError
from contract.manifest import scene_index
from contract.preprocess import Preprocess
from runtime.fleet.config import Camera
from runtime.watch.camera import CameraWatch
from runtime.live.frames import End, Frame, Gap, Reconnect, Signal
from runtime.live.readers import LiveFrames
from runtime.live.selection import BlankRun, Selector
from runtime.live.summary import Summary, max_frames_detail
from runtime.live.source import Source, parse_source


@dataclass
class Notice:
    """What a feed hands to the outputs, in order: a JSON line (`kind` "record"), a quality event
    (with the frame it was seen in, and a line for stderr), or the camera's new state."""

    kind: str                        # "record" | "event" | "state"
    payload: dict
    image: np.ndarray | None = None
    line: str | None = None          # for stderr (gaps and reconnects)


class Feed:
    """One camera's reader, watch, counts and summary."""

    def __init__(self, camera: Camera, source: Source, preprocess: Preprocess, scene_index: int,
                 summary: Summary, started: float):
        self.camera, self.source, self.preprocess, self.scene_index = camera, source, preprocess, scene_index
        self.summary, self.started = summary, started
        self.watch = CameraWatch(camera, started)
        self.selector = Selector(1, camera.fps)
        self.blank_run = BlankRun()
        self.reader: LiveFrames | None = None
        self.last_frame_at: float | None = None
        self.last_image: np.ndarray | None = None   # the newest picture, for a page (never copied here)
        self.replaced = 0                 # frames cropped, then replaced by a newer one before the backend took them
        self.shared_state: str | None = None   # the state last handed to the outputs
        self.done = False

    @property
    def name(self) -> str:
        return self.camera.name

    # -- reader -> feed ---------------------------------------------------------------------------
    def gather(self) -> tuple[list[Notice], Frame | None]:
        """What the reader delivered since the last call, in order: notices for the outputs, and the
        newest frame when it is to be scored."""
        alive = self.reader.thread.is_alive()
        items = self.reader.gather()
        notices, to_score = [], None
        for item in items:
            if isinstance(item, Frame):
                scored, frame_notices = self._on_frame(item)
                notices += frame_notices
                to_score = item if scored else None
            else:
                notices += self._on_signal(item)
        if not alive and not items:
            self.done = True
        return notices, to_score

    def _on_frame(self, frame: Frame) -> tuple[bool, list[Notice]]:
        self.last_frame_at, self.last_image = frame.captured, frame.image
        if not self.selector(frame.index, frame.t):
            self.summary.skipped += 1
            return False, []
        notices = self._quality(self.watch.on_picture(frame.captured, frame.image), frame.image)
        blank, gap = self.blank_run.check(frame, frame.image)
        if blank:
            self.summary.blank += 1
            if gap is not None:
                notices.append(self._record(gap.record()))
        return not blank, notices

    def _on_signal(self, signal: Signal) -> list[Notice]:
        notice, now = self._record(signal.record()), time.monotonic()
        if isinstance(signal, Gap):
            notice.line = f"{self.name}: gap in {self.source.text}: {signal.reason}; reconnecting"
            return [notice, *self._quality(self.watch.on_gap(now, signal.reason), None)]
        if isinstance(signal, Reconnect):
            notice.line = (f"{self.name}: reconnected after {signal.gap_s} s without frames "
                           f"({signal.attempts} attempt(s))")
            return [notice, *self._quality(self.watch.on_reconnect(now, signal.gap_s), None)]
        if isinstance(signal, End):
            self.done = True
            self.summary.end(signal.ending, self._end_detail(signal))
        return [notice]

    def _end_detail(self, end: End) -> str:
        if end.reason == "max frames reached":
            return max_frames_detail(end.frames)
        return (f"'{self.source.text}' delivered no frame for {end.since_s:.1f} s and "
                f"{end.attempts} reopen attempt(s) failed")

    # -- batcher -> feed --------------------------------------------------------------------------
    def on_score(self, frame: Frame, scores: np.ndarray) -> list[Notice]:
        """A frame's scores (every scene) are back: its record, and the events its score raised."""
        score = float(scores[self.scene_index])
        latency_ms = (time.monotonic() - frame.captured) * 1000.0
        events = self.watch.on_score(frame.captured, score)
        smoothing = self.watch.smoothing
        self.summary.add_score(score, latency_ms, smoothing.low)
        record = self._record({"frame": frame.index, "t": round(frame.t, 3), "score": round(score, 6),
                               "smoothed": round(smoothing.smoothed, 6), "state": self.watch.state,
                               "latency_ms": round(latency_ms, 2)})
        return [record, *self._quality(events, frame.image)]

    # -- feed -> outputs ---------------------------------------------------------------------------
    def _record(self, record: dict) -> Notice:
        return Notice("record", {"camera": self.name, **record})

    def _quality(self, events: list[dict], image: np.ndarray | None) -> list[Notice]:
        """Quality events, then the camera's state if it changed (those without an event too:
        starting -> ok)."""
        notices = [Notice("event", event, image) for event in events]
        if self.watch.state != self.shared_state:
            self.shared_state = self.watch.state
            notices.append(Notice("state", self.watch.state_record()))
        return notices

    # -- counts ------------------------------------------------------------------------------------
    def restore(self, saved: dict) -> None:
        """A previous run's conditions and normal; its state counts as already published."""
        self.watch.restore(saved)
        self.shared_state = self.watch.state

    def counts(self) -> dict:
        reader = self.reader
        read, dropped, settling, reconnects = ((reader.read, reader.dropped, reader.settling, reader.reconnects)
                                               if reader else (0, 0, 0, 0))
        return {"read": read, "scored": self.summary.scored, "dropped": dropped + self.replaced,
                "skipped": self.summary.skipped, "not_scored": self.summary.blank + settling,
                "reconnects": reconnects}

    def seconds_since_frame(self, now: float) -> float:
        return now - (self.last_frame_at if self.last_frame_at is not None else self.started)

    def close(self, elapsed: float) -> None:
        """Final counts, once the reader has closed."""
        self.summary.elapsed_s = elapsed
        if self.reader is not None:
            self.summary.take_reader_counts(self.reader, self.replaced)
        else:
            self.summary.dropped = self.replaced


# -- checks made before anything starts: every mistake is named before a thread or socket opens ----
def live_source(camera: Camera) -> Source:
    try:
        source = parse_source(camera.source)
    except UserError as exc:
        raise UserError(f"camera '{camera.name}': {exc}") from None
    if not source.live:
        raise UserError(f"camera '{camera.name}': '{source.text}' is a video file; a fleet watches "
                        f"cameras and streams, so score a file on its own with 'gamma-edge run FILE'")
    return source


def camera_preprocess(scorer, camera: Camera) -> Preprocess:
    if camera.crops is None or camera.crops == scorer.preprocess.crops:
        return scorer.preprocess
    return Preprocess.from_manifest(scorer.manifest, camera.crops, scorer.preprocess.seed)


def camera_scene_index(scorer, camera: Camera) -> int:
    return scene_index(scorer.scenes, camera.scene or scorer.scene, f"camera '{camera.name}': ")

"""Media for `gamma-edge demo`: a clip that degrades and recovers, and a plot of its scores.

numpy + OpenCV only, so the demo runs on the torch-free base install.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from contract.degradations import distort

FPS = 30


@dataclass(frozen=True)
class Segment:
    """A stretch of the clip: `kind` ramps from `start_level` to `end_level` over `seconds`."""

    seconds: float
    kind: str | None
    start_level: float
    end_level: float


def timeline(kinds: list[str]) -> tuple[Segment, ...]:
    """Clean; the first kind creeps in, holds and clears; clean; bursts of the other kinds."""
    first, *others = kinds
    segments = [Segment(2.0, None, 0, 0), Segment(2.5, first, 0, 5), Segment(1.0, first, 5, 5),
                Segment(1.5, first, 5, 0), Segment(1.5, None, 0, 0)]
    for kind in others[:2]:
        segments += [Segment(1.5, kind, 4, 4), Segment(1.5, None, 0, 0)]
    return tuple(segments)


def severity_at(frame: int, segments) -> tuple[str | None, float]:
    """The distortion kind and (fractional) level of a frame of the clip."""
    t = frame / FPS
    for segment in segments:
        if t < segment.seconds:
            level = segment.start_level + (segment.end_level - segment.start_level) * t / segment.seconds
            return segment.kind, level
        t -= segment.seconds
    return None, 0.0


def clip_frames(segments) -> int:
    return int(round(sum(s.seconds for s in segments) * FPS))


def write_degrading_clip(photo: np.ndarray, path: Path, kinds: list[str],
                         size=(480, 320)) -> list[tuple[str | None, float]]:
    """A slow pan across `photo` (BGR) with `timeline(kinds)`; returns each frame's severity."""
    segments = timeline(kinds)
    width, height = size
    scale = max((width + 80) / photo.shape[1], (height + 40) / photo.shape[0])
    canvas = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    from contract.video import open_video_writer

    writer = open_video_writer(path, FPS, (width, height))
    severities = []
    frames = clip_frames(segments)
    try:
        for i in range(frames):
            x = int(round((canvas.shape[1] - width) * i / max(1, frames - 1)))
            y = (canvas.shape[0] - height) // 2
            frame = np.ascontiguousarray(canvas[y:y + height, x:x + width])
            kind, level = severity_at(i, segments)
            if kind is not None and level > 0.05:
                frame = distort(frame[..., ::-1], kind, level, seed=i)[..., ::-1]  # distortions are RGB
            writer.write(frame)
            severities.append((kind, level))
    finally:
        writer.release()
    return severities


def plot_scores(rows: list[dict], severities: list[tuple[str | None, float]], path: Path,
                threshold: float | None = None, size=(1000, 420), alerts: list[dict] = ()) -> None:
    """A PNG of score (and smoothed score) over time, with the clip's distortions shaded and the
    watch's degraded / recovered events marked."""
    width, height = size
    left, right, top, bottom = 70, 20, 40, 60
    img = np.full((height, width, 3), 255, np.uint8)
    duration = len(severities) / FPS
    scores = [r["score"] for r in rows if r.get("score") is not None]
    lo = min(scores + ([threshold] if threshold else [])) if scores else 0.0
    hi = max(scores + ([threshold] if threshold else [])) if scores else 1.0
    pad = max(0.02, 0.1 * (hi - lo))
    lo, hi = lo - pad, hi + pad

    def px(t, s):
        return (int(left + (width - left - right) * t / duration),
                int(top + (height - top - bottom) * (1 - (s - lo) / (hi - lo))))

    palette = [((230, 200, 160), "blue"), ((170, 210, 240), "orange"), ((200, 230, 190), "green")]
    kinds = list(dict.fromkeys(k for k, _ in severities if k is not None))
    colours = {kind: palette[i % len(palette)][0] for i, kind in enumerate(kinds)}
    for i, (kind, level) in enumerate(severities):
        if kind is not None and level > 0.05:
            x0, _ = px(i / FPS, lo)
            x1, _ = px((i + 1) / FPS, lo)
            bar_top = int(top + (height - top - bottom) * (1 - level / 5.0))
            cv2.rectangle(img, (x0, bar_top), (x1, height - bottom), colours.get(kind, (220, 220, 220)), -1)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for k in range(6):
        s = lo + (hi - lo) * k / 5
        _, y = px(0, s)
        cv2.line(img, (left - 4, y), (left, y), (0, 0, 0), 1)
        cv2.putText(img, f"{s:.2f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for second in range(int(duration) + 1):
        x, _ = px(second, lo)
        cv2.line(img, (x, height - bottom), (x, height - bottom + 4), (0, 0, 0), 1)
        cv2.putText(img, str(second), (x - 4, height - bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    if threshold is not None:
        _, y = px(0, threshold)
        for x in range(left, width - right, 12):
            cv2.line(img, (x, y), (min(x + 6, width - right), y), (0, 0, 220), 1)
    for key, colour, thickness in (("score", (200, 120, 40), 1), ("smoothed", (90, 40, 10), 2)):
        points = [px(r["t"], r[key]) for r in rows if r.get(key) is not None and r.get("t") is not None]
        if len(points) > 1:
            cv2.polylines(img, [np.array(points, np.int32)], False, colour, thickness, cv2.LINE_AA)
    _mark_alerts(img, alerts, px, lo, top, height - bottom)
    cv2.putText(img, "Gamma demo: score per frame (thin), smoothed (thick); shading = distortion strength",
                (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    legend = "   ".join(f"{palette[i % len(palette)][1]} shade: {kind.replace('_', ' ')}"
                         for i, kind in enumerate(kinds)) + "   red dashes: threshold   lines: watch events"
    cv2.putText(img, legend, (left, height - 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, "time (s)", (width - right - 70, height - bottom + 34), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise RuntimeError(f"could not write {path}")


def _mark_alerts(img: np.ndarray, alerts, px, lo: float, top: int, bottom: int) -> None:
    """The watch's events as vertical lines: red for degraded (with the first cause its reason names),
    green for recovered."""
    for alert in alerts:
        x, _ = px(alert["t"], lo)
        colour = (0, 0, 200) if alert["event"] == "degraded" else (0, 150, 0)
        cv2.line(img, (x, top), (x, bottom), colour, 2)
        cv2.putText(img, alert["event"], (x + 4, top + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        if alert.get("reason") and alert["event"] == "degraded":
            cause = alert["reason"].split(", ")[0]
            cv2.putText(img, cause, (x + 4, top + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)

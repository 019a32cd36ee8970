"""What a person sees of one source: the score drawn on the frame, in a saved video (--save) or
a window (--show)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from contract.errors import UserError
from contract.video import codec_for, try_video_writer


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
        self.codec = codec_for(self.path, label=f"--save '{path}'")
        if not self.path.parent.exists():
            raise UserError(f"--save '{path}': the folder '{self.path.parent}' does not exist; create it first")
        self.fps = fps
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
            writer = try_video_writer(trial, 25.0, (64, 64), self.codec)
            if writer is not None:
                writer.release()
        finally:
            os.unlink(trial)
        if writer is None:
            raise UserError(self._codec_missing())

    def _codec_missing(self) -> str:
        return (f"--save '{self.path}': this OpenCV build cannot write {self.path.suffix} video with the "
                f"{self.codec} codec; use .mp4 (mp4v) or .avi (MJPG)")

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = try_video_writer(self.path, self.fps, self.size, self.codec)
            if self.writer is None:
                raise UserError(self._codec_missing())
        if (image.shape[1], image.shape[0]) != self.size:     # a reconnect may change the frame size
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


# The base install is opencv-python-headless (pyproject.toml); the gui extra adds opencv-python, whose
# cv2 files then lie over the headless ones (docs/runtime.md, "The window").
NO_WINDOWS = ("--show needs OpenCV's build with windows, and this one is headless (gamma-edge's default); "
              "install it with pip install 'gamma-edge[gui]', or use --save instead")


def has_windows() -> bool:
    """Whether this OpenCV was built with a GUI backend: its build information says `GUI: NONE` when not."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() != "NONE"
    return True          # an unknown layout: let namedWindow decide


class Window:
    """--show: the frame and its score in a window; q or Esc stops."""

    NAME = "gamma-edge"

    def __init__(self):
        if not has_windows():
            raise UserError(NO_WINDOWS)
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UserError("--show needs a display, and none is set (DISPLAY); drop --show or use --save")
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise UserError(NO_WINDOWS) from None

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.NAME, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.NAME)

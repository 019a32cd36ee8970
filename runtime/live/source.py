"""What a SOURCE argument names (camera, video file, network stream), and opening it with OpenCV.

Network streams are opened with open and read timeouts (without them a dead stream blocks
open() / read() for 30 s or forever) and RTSP over TCP (UDP loses packets, which smears
frames); docs/design.md sec. 5.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from contract.errors import UserError
from contract.secrets import fill, hide

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "mms")
# Native libraries' own logs: set by the user, they are left alone (see quiet_native_logs).
NATIVE_LOG_VARIABLES = ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG")


@dataclass(frozen=True)
class Source:
    """What SOURCE names: a camera (index or device path), a video file or a network stream.
    `text` is what is shown (credentials hidden, placeholders as written: contract/secrets.py);
    `target` is what is opened (placeholders filled, credentials kept)."""

    text: str
    kind: str                       # "camera" | "file" | "network"
    target: int | str = field(repr=False)

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
            shown = hide(text)
            return Source(shown, "network", fill(text, f"stream '{shown}'"))
        if scheme == "file":
            text = text[7:]
        else:
            raise UserError(
                f"stream '{hide(text)}' uses the scheme '{scheme}', which is not supported; "
                f"use one of {', '.join(NETWORK_SCHEMES)}")
    if text.startswith("/dev/video"):
        return Source(text, "camera", text)
    path = Path(text).expanduser()
    if path.is_file():
        return Source(text, "file", str(path))
    raise UserError(
        f"source '{text}' is neither a camera index ('0', 'camera'), an existing video file nor a "
        f"stream URL (rtsp://, http://, ...); check the path or address")


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
        return cv2.VideoCapture(source.target, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(read_timeout * 1000)])
    return cv2.VideoCapture(source.target)


def read_frame(capture) -> tuple[bool, np.ndarray | None]:
    try:
        ok, image = capture.read()
    except cv2.error:
        return False, None
    return (ok and image is not None and image.size > 0), image


def release(capture) -> None:
    try:
        capture.release()
    except Exception:  # a broken capture may fail to release; it is dropped either way
        pass


class ClosedCapture:
    """Stands in for a source that did not open at the start: its reader treats the first read
    as an outage and reopens with backoff, so the camera joins when it comes up."""

    def isOpened(self):  # noqa: N802 - cv2's name
        return False

    def read(self):
        return False, None

    def get(self, prop):
        return 0.0

    def release(self):
        pass


class SourceNeverOpened(UserError):
    """The source could not be opened at the start. The run's summary (ended: 'source never
    opened') was written to the JSON lines already and travels with the error for the CLI."""

    def __init__(self, message: str, summary=None):
        super().__init__(message)
        self.summary = summary


def never_opened(source: Source, waited: float, open_timeout: float) -> str:
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

"""Writing video: which codec each file extension gets, and a writer that is open or says why.

Every video this project writes (annotated streams, the demo clip, test and benchmark clips)
is opened here. pip's OpenCV writes mp4v into .mp4 and MJPG into .avi, not H.264 (docs/design.md sec. 5.2).
"""
from __future__ import annotations

from pathlib import Path

import cv2

from contract.errors import UserError

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def codec_for(path: str | Path) -> str:
    codec = VIDEO_CODECS.get(Path(path).suffix.lower())
    if codec is None:
        raise UserError(f"'{path}' has an unsupported video extension; use .mp4 (mp4v) or .avi (MJPG)")
    return codec


def open_video_writer(path: str | Path, fps: float, size: tuple[int, int], codec: str | None = None):
    """An opened cv2.VideoWriter for `path` (width, height = size), or one sentence saying why not."""
    codec = codec or codec_for(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise UserError(f"cannot write '{path}' with the {codec} codec (this OpenCV build lacks it, or "
                               f"the folder is not writable)")
    return writer

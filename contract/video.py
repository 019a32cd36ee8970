"""Writing video: which codec each file extension gets, and a writer that is open or says why.

Every video this project writes (annotated streams, the demo clip, test and benchmark clips)
is opened here. pip's OpenCV writes mp4v into .mp4 and MJPG into .avi, not H.264 (docs/design.md sec. 5.2).
"""
from __future__ import annotations

from pathlib import Path

import cv2

from contract.errors import UserError

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def codec_for(path: str | Path, label: str | None = None) -> str:
    """The codec for `path`'s extension, or one sentence (`label` names the file, e.g. the option)."""
    codec = VIDEO_CODECS.get(Path(path).suffix.lower())
    if codec is None:
        raise UserError(f"{label or repr(str(path))} has an unsupported extension; use .mp4 (mp4v) or .avi (MJPG)")
    return codec


def try_video_writer(path: str | Path, fps: float, size: tuple[int, int], codec: str):
    """An opened cv2.VideoWriter, or None when this OpenCV build or the folder cannot write it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    return writer if writer.isOpened() else None


def open_video_writer(path: str | Path, fps: float, size: tuple[int, int], codec: str | None = None):
    """An opened cv2.VideoWriter for `path` (width, height = size), or one sentence saying why not."""
    codec = codec or codec_for(path)
    writer = try_video_writer(path, fps, size, codec)
    if writer is None:
        raise UserError(f"cannot write '{path}' with the {codec} codec (this OpenCV build lacks it, or "
                        f"the folder is not writable)")
    return writer

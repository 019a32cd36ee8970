"""Writing a file so that it is either the old one or the whole new one, never half of it.

Every file a killed process must not leave half-written (checkpoints, training state,
manifests, graphs with their embedded manifest, result tables) goes through here: written
under a temporary name in the same folder, then renamed into place (atomic on one filesystem).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call write(temporary_path), then rename it to `path`; the temporary file never outlives a failure."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    return write_atomically(path, lambda temporary: temporary.write_bytes(data))

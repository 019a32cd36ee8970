"""Writing a file so that it is either the old one or the whole new one, never half of it.

Every file a killed process must not leave half-written (checkpoints, training state,
manifests, graphs with their embedded manifest, result tables) goes through here: written
under a temporary name in the same folder, then renamed into place (atomic on one filesystem).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from contract.errors import UserError


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


def check_writable(path: str | Path, label: str, create_folder: bool = False) -> Path:
    """Say now, in one sentence, if the file `path` cannot be written later (a missing or read-only
    folder, a folder where the file should be): a run checks its output files before it loads a
    model and opens its sources, not an hour in. `create_folder` makes a missing folder (ours, not
    the user's: a typo in a user's path should be named, not created)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{label} '{path}' is a folder; give a file name")
    check_writable_folder(path.parent, label, create_folder, shown=path)
    return path


def check_writable_folder(folder: str | Path, label: str, create: bool = False, shown: Path | None = None) -> Path:
    """The folder exists (or is made, with `create`) and takes a new file: one is made and removed."""
    folder = Path(folder).expanduser()
    shown = shown or folder
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise UserError(f"{label} '{shown}': the folder '{folder}' does not exist; create it first")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{label} '{shown}' cannot be written ({exc.strerror or exc}); check the folder and "
                        f"its permissions") from None
    return folder

"""A watch's memory across restarts: each camera's conditions and learned normal, written
atomically to one JSON file (--baseline-file) and read back at the start, so a restart or a crash
neither re-learns nor alarms nor publishes a covered camera as ok (docs/fleet.md, "Baselines").

The file names the model it was learned with: a normal of another model's scores means nothing,
so such a file is set aside (renamed, never deleted) and the cameras learn afresh; so is a file
that cannot be read. A reset asked for while a run holds the file (`gamma-edge baseline reset`)
is written into it and taken up by the run at its next save.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from contract.atomic import write_atomically
from contract.errors import UserError

FORMAT = "gamma-edge.watch-state"
FORMAT_VERSION = 1


class StateFile:
    def __init__(self, path: str | Path, model_id: str, log: Callable[[str], None]):
        self.path, self.model_id, self.log = Path(path).expanduser(), model_id, log
        self._written: tuple[float, int] | None = None      # (mtime, size) of our own last write
        self._warned = False

    # -- read --------------------------------------------------------------------------------------
    def load(self) -> dict[str, dict]:
        """Each camera's saved watch (name -> CameraWatch.as_dict()); {} to learn afresh."""
        if not self.path.exists():
            return {}
        document = self._read()
        if document is None:
            return {}
        if document.get("model") != self.model_id:
            self._set_aside(f"was learned with another model (id {document.get('model')}, this one is "
                            f"{self.model_id})", f"model-{document.get('model')}")
            return {}
        return dict(document.get("cameras") or {})

    def _read(self) -> dict | None:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._set_aside(f"cannot be read ({exc.__class__.__name__})", "corrupt")
            return None
        if not isinstance(document, dict) or document.get("format") != FORMAT \
                or document.get("format_version") != FORMAT_VERSION or not isinstance(document.get("cameras"), dict):
            self._set_aside("is not a gamma-edge baseline file of this version", "corrupt")
            return None
        return document

    def _set_aside(self, why: str, suffix: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.{suffix}")
        try:
            os.replace(self.path, aside)
            kept = f"kept as '{aside}'"
        except OSError:
            kept = "left where it is"
        self.log(f"warning: baseline file '{self.path}' {why}; the cameras learn their normal afresh ({kept})")

    def resets(self) -> set[str]:
        """Cameras whose reset was written into the file by someone else since our last write."""
        try:
            stat = self.path.stat()
        except OSError:
            return set()
        if self._written == (stat.st_mtime, stat.st_size):
            return set()
        try:
            cameras = json.loads(self.path.read_text(encoding="utf-8")).get("cameras", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            return set()
        return {name for name, saved in cameras.items() if isinstance(saved, dict) and saved.get("reset")}

    # -- write -------------------------------------------------------------------------------------
    def save(self, cameras: dict[str, dict]) -> None:
        """Write every camera's watch; a folder that takes no file is said once, and the run goes on."""
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model_id, "cameras": cameras}
        text = json.dumps(document, indent=1)
        try:
            write_atomically(self.path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
            stat = self.path.stat()
        except OSError as exc:
            if not self._warned:
                self.log(f"warning: baseline file '{self.path}' cannot be written ({exc.strerror or exc}); the "
                         f"cameras' normals are not kept across restarts until it can be")
            self._warned = True
            return
        self._written, self._warned = (stat.st_mtime, stat.st_size), False


def request_reset(path: str | Path, names: list[str]) -> list[str]:
    """`gamma-edge baseline reset`: mark cameras to learn afresh; a run holding the file takes it up at
    its next save, a run started later finds no normal. Returns the names marked."""
    path = Path(path).expanduser()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        cameras = document["cameras"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"'{path}' is not a readable gamma-edge baseline file; check the path") from None
    unknown = [name for name in names if name not in cameras]
    if unknown:
        raise UserError(f"'{path}' has no camera {', '.join(unknown)}; it has {', '.join(cameras) or 'none'}")
    for name in names:
        cameras[name] = {"reset": True}
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(document, indent=1), encoding="utf-8"))
    return names

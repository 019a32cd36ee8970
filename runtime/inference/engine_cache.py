"""What the engines build at load time, kept on disk so that the next process starts in a moment.

ONNX Runtime optimizes the graph (fusions, constant folding, layout) every time a session is made,
and OpenVINO compiles its model for the CPU: on ViT-B/16 that is most of a one-shot `gamma-edge
score` (docs/hardware.md, start-up). Both results can be saved: ONNX Runtime's optimized graph file
(loaded later with its optimizations off, as they are already applied) and OpenVINO's exported
compiled model (imported later instead of compiled).

An entry is a folder `ROOT/ENGINE/KEY/` holding the engine's files and `entry.json`. KEY hashes all
that the saved result depends on: the engine and its version, the model's hash from its manifest
and the size and modification time of its files (a replaced file is a new model, without hashing
hundreds of megabytes at every start), the CPU and the settings that shape the result. An entry is
never trusted blindly:

- it is built in a private folder and renamed into place whole, so two processes starting at once
  never see half of one (the second rename fails, and that process keeps the first one's entry);
- `entry.json`, written last, records each file's size and CRC-32, checked before use: a truncated
  or damaged file, or an entry whose key does not match, is moved aside and rebuilt;
- if the engine still refuses what it loads, the entry is discarded and rebuilt from the model.

ROOT is `$GAMMA_EDGE_CACHE_DIR`, else `$XDG_CACHE_HOME/gamma-edge/engines` (`~/.cache/...`);
`GAMMA_EDGE_CACHE_DIR=off` turns the cache off. A folder that cannot be written just means no cache.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from contract.atomic import write_atomically

ENTRY_FILE = "entry.json"
ENTRY_FORMAT = 1
OFF = ("off", "0", "none", "no")
T = TypeVar("T")


def cache_root() -> Path | None:
    """Where entries live, or None when the user turned the cache off."""
    given = os.environ.get("GAMMA_EDGE_CACHE_DIR")
    if given is not None:
        return None if given.strip().lower() in OFF or not given.strip() else Path(given).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gamma-edge" / "engines"


def file_identity(*paths: Path) -> list:
    """(name, size, modification time) of the model's files: cheap, and changed by any replacement."""
    identity = []
    for path in paths:
        stat = path.stat()
        identity.append([path.name, stat.st_size, stat.st_mtime_ns])
    return identity


def _crc32(path: Path) -> int:
    """CRC-32 of a file through a memory map: no copy into Python (0.04 s for 175 MB, against 0.13 s
    read in chunks), and the pages it touches are the ones the engine reads next."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return zlib.crc32(b"")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return zlib.crc32(data)


@dataclass
class Loaded:
    """An engine object and how the cache served it: hit, built, rebuilt (a bad entry replaced), off."""

    value: object
    status: str
    folder: Path | None = None

    def describe(self) -> str:
        return {"hit": "start-up cache: hit", "built": "start-up cache: built",
                "rebuilt": "start-up cache: rebuilt (the kept entry was stale or damaged)",
                "off": "start-up cache: off"}[self.status]


class EngineCache:
    """Entries of one engine under ROOT/ENGINE; see the module docstring for the rules."""

    def __init__(self, engine: str, root: Path | None = None):
        self.engine = engine
        root = cache_root() if root is None else root
        self.folder = None if root is None else root / engine

    def key(self, parts: dict) -> str:
        text = json.dumps({"engine": self.engine, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self, parts: dict, build: Callable[[Path | None], T], use: Callable[[Path], T]) -> Loaded:
        """use(entry folder) when a sound entry exists for `parts`; else build(private folder), which
        returns the engine object and leaves its files in the folder, kept as the new entry.
        build(None) means: no cache (off, or the folder cannot be written)."""
        if self.folder is None:
            return Loaded(build(None), "off")
        key = self.key(parts)
        entry = self.folder / key
        status = "built"
        if entry.is_dir():
            if self._sound(entry, key):
                try:
                    return Loaded(use(entry), "hit", entry)
                except Exception:   # noqa: BLE001 - the engine refused the kept files: rebuild from the model
                    pass
            self._discard(entry)
            status = "rebuilt"
        private = self._private_folder(key)
        if private is None:
            return Loaded(build(None), "off")
        try:
            value = build(private)
            self._seal(private, key, parts)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        return Loaded(value, status, self._publish(private, entry))

    # -- the entry's life ---------------------------------------------------------------------
    def _private_folder(self, key: str) -> Path | None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            private = self.folder / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            private.mkdir()
            return private
        except OSError:
            return None

    def _seal(self, private: Path, key: str, parts: dict) -> None:
        """entry.json, last: each file's size and CRC-32, and what the key was made of."""
        files = {p.name: {"bytes": p.stat().st_size, "crc32": _crc32(p)}
                 for p in sorted(private.iterdir()) if p.is_file()}
        record = {"format": ENTRY_FORMAT, "engine": self.engine, "key": key, "parts": parts, "files": files}
        text = json.dumps(record, indent=1, sort_keys=True, default=str)
        write_atomically(private / ENTRY_FILE, lambda tmp: tmp.write_text(text))

    def _publish(self, private: Path, entry: Path) -> Path:
        """Rename the private folder into place; if another process got there first, keep theirs."""
        try:
            os.rename(private, entry)
            return entry
        except OSError:
            shutil.rmtree(private, ignore_errors=True)
            return entry

    def _sound(self, entry: Path, key: str) -> bool:
        try:
            record = json.loads((entry / ENTRY_FILE).read_text())
            if record.get("format") != ENTRY_FORMAT or record.get("key") != key:
                return False
            files = record["files"]
            present = {p.name for p in entry.iterdir() if p.name != ENTRY_FILE}
            if present != set(files):
                return False
            return all((entry / name).stat().st_size == info["bytes"] and _crc32(entry / name) == info["crc32"]
                       for name, info in files.items())
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _discard(self, entry: Path) -> None:
        """Move a bad entry aside (atomic: of two processes doing this, one succeeds) and delete it."""
        aside = self.folder / f".{entry.name}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(entry, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

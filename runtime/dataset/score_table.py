"""The Parquet table `gamma-edge score --engine ray` writes, and how a run resumes.

The images are cut into blocks of a fixed size in input order (block k holds rows k*B .. k*B+B-1).
Each finished block is written as its own part file, atomically (a temporary file, then a rename),
in `<out>.parts/`, beside `run.json` which holds the run's key: a hash of everything that decides
the table (the input paths, the model's manifest, crops, seed, block size). Started again with the
same output, a run reads which parts exist and scores only the other blocks; at the end the parts
are concatenated in block order into `<out>` (rows in input order) and the folder is removed. So a
run killed at any point and resumed gives the same table as one run that was never stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from contract.atomic import write_atomically, write_bytes_atomically
from contract.errors import UserError

PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
RUN_FILE = "run.json"
RUN_KEY_METADATA = b"gamma_edge.run_key"


@dataclass(frozen=True)
class Run:
    """What decides the output table; two runs with equal keys write equal tables."""

    key: str
    images: int
    block_size: int
    scenes: tuple[str, ...]
    crops: str
    model_sha256: str | None
    manifest_id: str

    @property
    def blocks(self) -> int:
        return math.ceil(self.images / self.block_size)


def make_run(paths: list[str], block_size: int, scenes, crops: str, seed: int, max_pixels,
             model_sha256: str | None, manifest: str) -> Run:
    digest = hashlib.sha256()
    settings = {"block_size": block_size, "crops": crops, "seed": seed, "max_pixels": max_pixels,
                "manifest_id": manifest, "images": len(paths)}
    digest.update(json.dumps(settings, sort_keys=True).encode("utf-8"))
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\n")
    return Run(digest.hexdigest()[:32], len(paths), block_size, tuple(scenes), crops, model_sha256, manifest)


def schema(scenes):
    """The output columns: path, one score per scene, the crops, the error, and which model scored."""
    import pyarrow as pa

    return pa.schema([("path", pa.string())] + [(scene, pa.float64()) for scene in scenes] + [
        ("crops", pa.string()), ("crop_count", pa.int32()), ("error", pa.string()), ("warning", pa.string()),
        ("model_sha256", pa.string()), ("manifest_id", pa.string())])


class Parts:
    """The part files of one output; `out` is the final Parquet file."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.folder = self.out.with_name(self.out.name + ".parts")

    def start(self, run: Run) -> None:
        """Begin or resume `run`; an unfinished run of other inputs or settings is refused (a resumed
        run takes its block size from recorded_block_size, so that alone never differs)."""
        recorded = self._recorded_run()
        if recorded is not None and recorded.key != run.key:
            raise UserError(
                f"'{self.folder}' holds an unfinished run of other images or another model or crop "
                f"setting; resume it with the same arguments, or delete it or choose another --out")
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".*.tmp*"):    # a part the killed run was writing (contract.atomic)
            leftover.unlink()
        if recorded is None:
            write_bytes_atomically(self.folder / RUN_FILE, json.dumps(asdict(run), indent=2).encode("utf-8"))

    def recorded_block_size(self) -> int | None:
        recorded = self._recorded_run()
        return None if recorded is None else recorded.block_size

    def _recorded_run(self) -> Run | None:
        try:
            document = json.loads((self.folder / RUN_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise UserError(f"'{self.folder / RUN_FILE}' is unreadable; delete '{self.folder}' "
                                   f"to start this run again from nothing") from None
        document["scenes"] = tuple(document["scenes"])
        return Run(**document)

    def done_blocks(self) -> set[int]:
        if not self.folder.is_dir():
            return set()
        return {int(path.name[len(PART_PREFIX):-len(PART_SUFFIX)])
                for path in self.folder.glob(f"{PART_PREFIX}*{PART_SUFFIX}")}

    def write(self, block: int, table) -> None:
        """One finished block, all or nothing (a rename is atomic on one filesystem)."""
        import pyarrow.parquet as pq

        target = self.folder / f"{PART_PREFIX}{block:08d}{PART_SUFFIX}"
        write_atomically(target, lambda temporary: pq.write_table(table, temporary))

    def compact(self, run: Run) -> int:
        """Concatenate the parts in block order into `out` (atomically), then remove the parts.
        Memory: one part at a time."""
        import pyarrow.parquet as pq

        missing = sorted(set(range(run.blocks)) - self.done_blocks())
        if missing:
            raise AssertionError(f"compacting with blocks {missing[:5]} missing")   # a bug of ours
        target_schema = schema(run.scenes).with_metadata({RUN_KEY_METADATA: run.key.encode()})
        rows = 0

        def concatenate(temporary: Path) -> None:
            nonlocal rows
            with pq.ParquetWriter(temporary, target_schema) as writer:
                for block in range(run.blocks):
                    table = pq.read_table(self.folder / f"{PART_PREFIX}{block:08d}{PART_SUFFIX}")
                    writer.write_table(table.select(target_schema.names).cast(target_schema))
                    rows += table.num_rows
            if rows != run.images:
                raise AssertionError(f"compacted {rows} rows for {run.images} images")     # a bug of ours

        write_atomically(self.out, concatenate)
        shutil.rmtree(self.folder)
        return rows


def finished_key(out: Path) -> str | None:
    """The run key stored in a finished output table, or None if `out` is not one."""
    import pyarrow.parquet as pq

    if not Path(out).is_file():
        return None
    try:
        metadata = pq.read_schema(out).metadata or {}
    except Exception:  # not Parquet: whatever it is, it is not our finished table
        return ""
    return metadata.get(RUN_KEY_METADATA, b"").decode() or ""


def select_keep(table, scene: str, above: float | None, top: float | None) -> list[str]:
    """The paths to keep, in table order: scored images with `scene` >= above, and/or within the top
    fraction `top` of scored images (ties broken by table order, so the list is deterministic)."""
    import numpy as np

    scores = table.column(scene).to_numpy(zero_copy_only=False).astype(np.float64)
    keep = ~np.isnan(scores)          # nulls (failed images) come out as NaN
    if above is not None:
        keep &= scores >= above
    if top is not None:
        scored = np.flatnonzero(~np.isnan(scores))
        count = math.ceil(top * len(scored))
        order = scored[np.argsort(-scores[scored], kind="stable")][:count]
        in_top = np.zeros(len(scores), dtype=bool)
        in_top[order] = True
        keep &= in_top
    paths = table.column("path").to_pylist()
    return [path for path, kept in zip(paths, keep) if kept]


def write_keep_list(out: Path, keep_file: Path, scene: str, above: float | None, top: float | None) -> int:
    """Write the keep-list (one path a line, the format `score --engine ray` reads back)."""
    import pyarrow.parquet as pq

    kept = select_keep(pq.read_table(out, columns=["path", scene]), scene, above, top)
    try:
        write_bytes_atomically(Path(keep_file), "".join(f"{path}\n" for path in kept).encode("utf-8"))
    except OSError as exc:
        raise UserError(f"the keep-list '{keep_file}' cannot be written ({exc.strerror}); "
                               f"check the folder") from None
    return len(kept)

"""What `gamma-edge score --engine ray` scores: the inputs as one table of images, listed on the driver.

Each argument is a folder or glob of images (as the local engine reads them), a text file of
paths (`.txt`, one a line), a Parquet file with a path column, or a WebDataset tar shard (`.tar`,
globs allowed). A shard is listed once here, member by member, so a task later reads a member's
bytes with one seek instead of walking the tar again; a member's path is `shard.tar::member`.

The table (index, path, shard, offset, size) is in argument order, so the same arguments always
give the same table: resuming relies on it. A bad input (a Parquet without the path column, an
unreadable shard) is one sentence in `problems` and the other inputs are still listed.
"""
from __future__ import annotations

import glob
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RuntimeUserError
from .images import IMAGE_SUFFIXES

LIST_SUFFIXES = (".txt", ".lst")
PARQUET_SUFFIXES = (".parquet", ".pq")
SHARD_SUFFIXES = (".tar",)
MEMBER_SEPARATOR = "::"


@dataclass
class Inputs:
    """The images to score, in a fixed order, and the inputs that could not be listed."""

    paths: list[str] = field(default_factory=list)
    shards: list[str | None] = field(default_factory=list)     # the tar holding the image, or None
    offsets: list[int | None] = field(default_factory=list)    # where its bytes start in the tar
    sizes: list[int | None] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, path: str, shard: str | None = None, offset: int | None = None, size: int | None = None):
        self.paths.append(path)
        self.shards.append(shard)
        self.offsets.append(offset)
        self.sizes.append(size)

    def __len__(self) -> int:
        return len(self.paths)

    def table(self):
        """As a pyarrow table with an `index` column: the row's place in the final output."""
        import pyarrow as pa

        return pa.table({"index": pa.array(range(len(self.paths)), pa.int64()),
                         "path": pa.array(self.paths, pa.string()),
                         "shard": pa.array(self.shards, pa.string()),
                         "offset": pa.array(self.offsets, pa.int64()),
                         "size": pa.array(self.sizes, pa.int64())})


def list_inputs(arguments, path_column: str = "path") -> Inputs:
    """Every image the arguments name, in order; RuntimeUserError only when none is left."""
    from .cli import expand_paths

    inputs = Inputs()
    for argument in arguments:
        for item in _expand_argument(argument):
            suffix = Path(item).suffix.lower()
            try:
                if suffix in LIST_SUFFIXES and Path(item).is_file():
                    for path in read_path_list(item):
                        inputs.add(path)
                elif suffix in PARQUET_SUFFIXES and Path(item).is_file():
                    for path in read_parquet_paths(item, path_column):
                        inputs.add(path)
                elif suffix in SHARD_SUFFIXES and Path(item).is_file():
                    list_shard(item, inputs)
                else:
                    for path in expand_paths([item]):
                        inputs.add(path)
            except RuntimeUserError as exc:
                inputs.problems.append(str(exc))
    if not inputs.paths:
        raise RuntimeUserError(_nothing_to_score(arguments, inputs.problems))
    return inputs


def _nothing_to_score(arguments, problems) -> str:
    if problems:
        return "; ".join(problems)
    return f"no images found in {', '.join(arguments)}; check the paths"


def _expand_argument(argument: str) -> list[str]:
    """A glob naming lists, Parquet files or shards is expanded here (expand_paths would take them
    for images); anything else goes to expand_paths as it is."""
    if glob.has_magic(argument):
        matches = sorted(glob.glob(os.path.expanduser(argument), recursive=True))
        if matches and all(Path(m).suffix.lower() in LIST_SUFFIXES + PARQUET_SUFFIXES + SHARD_SUFFIXES
                           for m in matches):
            return matches
    return [argument]


def _relative_to(list_file: str, path: str) -> str:
    """A relative path in a list means relative to the list's folder, so a list travels with its data."""
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(list_file), path)


def read_path_list(list_file: str) -> list[str]:
    """A text file of image paths, one a line; blank lines and lines starting with # are skipped."""
    try:
        with open(list_file, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeUserError(f"the path list '{list_file}' cannot be read "
                               f"({getattr(exc, 'strerror', None) or exc.__class__.__name__}); "
                               f"check it is a UTF-8 text file") from None
    return [_relative_to(list_file, line) for line in lines if line and not line.startswith("#")]


def read_parquet_paths(parquet_file: str, path_column: str) -> list[str]:
    """The path column of a Parquet file (null paths skipped)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(parquet_file)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for a file that is not Parquet
        raise RuntimeUserError(f"'{parquet_file}' is not a readable Parquet file ({exc.__class__.__name__}); "
                               f"check the file") from None
    if path_column not in schema.names:
        raise RuntimeUserError(f"the Parquet file '{parquet_file}' has no '{path_column}' column (it has "
                               f"{', '.join(schema.names) or 'none'}); name its path column with --path-column")
    column = pq.read_table(parquet_file, columns=[path_column]).column(path_column)
    return [_relative_to(parquet_file, str(path)) for path in column.to_pylist() if path is not None]


def list_shard(shard: str, inputs: Inputs) -> None:
    """Add the image members of a WebDataset tar shard (regular files with an image suffix)."""
    listed = 0
    try:
        with tarfile.open(shard, mode="r:") as archive:
            for member in archive:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    inputs.add(f"{shard}{MEMBER_SEPARATOR}{member.name}", shard, member.offset_data, member.size)
                    listed += 1
    except (tarfile.TarError, OSError) as exc:
        where = f"after {listed} image(s), which are scored" if listed else "and none of its images are scored"
        raise RuntimeUserError(f"the shard '{shard}' is not a readable tar file ({_reason(exc)}) {where}; "
                               f"re-create or remove it") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__


def read_member(shard: str, offset: int, size: int) -> bytes:
    """The bytes of one tar member, listed by list_shard."""
    with open(shard, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)

"""What `gamma-edge score` scores, on either engine: the arguments listed as images, in a fixed order.

Each argument is a folder, glob or image file (folders walked recursively for image suffixes), a
text file of paths (`.txt`, `.lst`: one a line), a Parquet file with a path column, or a WebDataset
tar shard (`.tar`, globs allowed). A shard is listed once here, member by member, so its members
are later read with one seek each instead of walking the tar again; a member is a `Member`: a string,
its path `shard.tar::member`, that also knows where its bytes lie.

The list is in argument order, so the same arguments always give the same list (the Ray engine's
resuming relies on it). A bad input (a pattern matching nothing, a Parquet without the path column,
an unreadable shard, an unreadable list) is one sentence in `problems` and the other inputs are
still listed; a mistake in the command itself (a pattern matching nothing, a folder without images)
stops the run before anything is scored, as it always did on the local engine.

Neither Ray nor pyarrow is imported here unless a Parquet file is given (pyarrow reads it) or the
Ray engine asks for `Inputs.table()`: the local engine stays light.
"""
from __future__ import annotations

import glob
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from contract.errors import UserError
from contract.images import IMAGE_SUFFIXES
from runtime.inference.scorer import Scorer

LIST_SUFFIXES = (".txt", ".lst")
PARQUET_SUFFIXES = (".parquet", ".pq")
SHARD_SUFFIXES = (".tar",)
MEMBER_SEPARATOR = "::"


class Member(str):
    """An image inside a WebDataset shard. As a string it is the path rows and error sentences name,
    `shard.tar::member`; `shard`, `offset` and `size` say where its bytes lie in the tar."""

    shard: str
    offset: int
    size: int

    def __new__(cls, shard: str, name: str, offset: int, size: int) -> "Member":
        member = super().__new__(cls, f"{shard}{MEMBER_SEPARATOR}{name}")
        member.shard, member.offset, member.size = shard, offset, size
        return member

    def __reduce__(self):           # pickled to Ray workers with its place in the shard
        return Member._from_path, (str(self), self.shard, self.offset, self.size)

    @classmethod
    def _from_path(cls, path: str, shard: str, offset: int, size: int) -> "Member":
        return cls(shard, path[len(shard) + len(MEMBER_SEPARATOR):], offset, size)

    def read(self) -> bytes:
        """The member's bytes (one seek), or the sentence saying its shard cannot be read."""
        try:
            with open(self.shard, "rb") as handle:
                handle.seek(self.offset)
                return handle.read(self.size)
        except OSError as exc:
            raise UserError(f"the shard '{self.shard}' cannot be read ({_reason(exc)}); check it") from None


class SourceScorer(Scorer):
    """The Scorer, taking shard members as images too: a member's bytes are read where the Scorer
    decodes (its decode threads), so reading overlaps inference as decoding does."""

    def prepare(self, image, name: str | None = None):
        if isinstance(image, Member):
            return super().prepare(image.read(), str(image))
        return super().prepare(image, name)


@dataclass
class Inputs:
    """The images to score, in a fixed order (file paths and shard Members), and the inputs that
    could not be listed."""

    sources: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def paths(self) -> list[str]:
        return [str(source) for source in self.sources]

    def table(self):
        """As a pyarrow table (index, path, shard, offset, size); `index` is the row's place in the
        output, and a row without a shard is a file path. The Ray engine's input."""
        import pyarrow as pa

        members = [source if isinstance(source, Member) else None for source in self.sources]
        return pa.table({"index": pa.array(range(len(self.sources)), pa.int64()),
                         "path": pa.array(self.paths, pa.string()),
                         "shard": pa.array([m and m.shard for m in members], pa.string()),
                         "offset": pa.array([m and m.offset for m in members], pa.int64()),
                         "size": pa.array([m and m.size for m in members], pa.int64())})


def source_of(row: dict):
    """A row of Inputs.table() back as the source it was listed from."""
    if row["shard"] is None:
        return row["path"]
    return Member._from_path(row["path"], row["shard"], row["offset"], row["size"])


def list_inputs(arguments, path_column: str = "path") -> Inputs:
    """Every image the arguments name, in order; UserError only when none is left."""
    inputs = Inputs()
    for argument in arguments:
        for item in _expand_argument(argument):
            kind = _data_file_kind(item)
            if kind is None:
                inputs.sources += expand_paths([item])        # a mistake here stops the run
                continue
            try:
                inputs.sources += _read_data_file(item, kind, path_column)
            except UserError as exc:
                inputs.problems.append(str(exc))
            except _PartialShard as partial:
                inputs.sources += partial.members
                inputs.problems.append(partial.sentence)
    if not inputs.sources:
        raise UserError(_nothing_to_score(arguments, inputs.problems))
    return inputs


def _data_file_kind(item: str) -> str | None:
    """'list', 'parquet' or 'shard' for an existing file of that suffix, else None (images)."""
    suffix = Path(item).suffix.lower()
    for kind, suffixes in (("list", LIST_SUFFIXES), ("parquet", PARQUET_SUFFIXES), ("shard", SHARD_SUFFIXES)):
        if suffix in suffixes and Path(item).is_file():
            return kind
    return None


def _read_data_file(item: str, kind: str, path_column: str) -> list:
    if kind == "list":
        return read_path_list(item)
    if kind == "parquet":
        return read_parquet_paths(item, path_column)
    return list_shard(item)


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


def expand_paths(paths) -> list[str]:
    """Files as given, folders walked recursively for image files, globs expanded; sorted
    within each argument. A path that matches nothing is kept so its row says so."""
    found: list[str] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            # os.walk skips folders that vanish or cannot be read mid-walk (a temporary folder, a mount)
            found += sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                            for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(str(path))
        elif glob.has_magic(text):
            matches = sorted(p for p in glob.glob(os.path.expanduser(text), recursive=True) if Path(p).is_file())
            if not matches:
                raise UserError(f"the pattern '{text}' matches no files; check it (quote it to let gamma-edge expand it)")
            found += matches
        else:
            found.append(str(path))
    if not found:
        raise UserError(f"no image files found in {', '.join(paths)}; "
                               f"gamma-edge reads {', '.join(sorted(IMAGE_SUFFIXES))}")
    return found


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
        raise UserError(f"the path list '{list_file}' cannot be read "
                               f"({getattr(exc, 'strerror', None) or exc.__class__.__name__}); "
                               f"check it is a UTF-8 text file") from None
    return [_relative_to(list_file, line) for line in lines if line and not line.startswith("#")]


def read_parquet_paths(parquet_file: str, path_column: str) -> list[str]:
    """The path column of a Parquet file (null paths skipped)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading the Parquet file '{parquet_file}' needs pyarrow, which is not "
                               f"installed; pip install -e '.[ray]'") from None
    try:
        schema = pq.read_schema(parquet_file)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for a file that is not Parquet
        raise UserError(f"'{parquet_file}' is not a readable Parquet file ({exc.__class__.__name__}); "
                               f"check the file") from None
    if path_column not in schema.names:
        raise UserError(f"the Parquet file '{parquet_file}' has no '{path_column}' column (it has "
                               f"{', '.join(schema.names) or 'none'}); name its path column with --path-column")
    column = pq.read_table(parquet_file, columns=[path_column]).column(path_column)
    return [_relative_to(parquet_file, str(path)) for path in column.to_pylist() if path is not None]


class _PartialShard(Exception):
    """A shard that breaks after some members: those are scored, the sentence says the rest are not."""

    def __init__(self, members: list, sentence: str):
        super().__init__(sentence)
        self.members, self.sentence = members, sentence


def list_shard(shard: str) -> list[Member]:
    """The image members of a WebDataset tar shard (regular files with an image suffix), in tar order."""
    members: list[Member] = []
    try:
        with tarfile.open(shard, mode="r:") as archive:
            for entry in archive:
                if entry.isfile() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    members.append(Member(shard, entry.name, entry.offset_data, entry.size))
    except (tarfile.TarError, OSError) as exc:
        where = (f"after {len(members)} image(s), which are scored" if members
                 else "and none of its images are scored")
        sentence = f"the shard '{shard}' is not a readable tar file ({_reason(exc)}) {where}; re-create or remove it"
        if members:
            raise _PartialShard(members, sentence) from None
        raise UserError(sentence) from None
    return members


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__

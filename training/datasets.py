"""Datasets: the registry of the paper's 12 datasets, IQA-PyTorch meta-info files and splits.

A dataset is a config entry (configs/datasets.json, or a user's file passed with
--datasets-file), never code. An entry names its scene, MOS range, whether lower
is better, the meta-info CSV (image name, MOS, optional more columns; the
full-reference layout ref_name, dist_name, mos with "layout": "fr"), the image
folder and an optional split file: a pickle or JSON object
{split_index: {"train": [row indices], "val": [...], "test": [...]}}. Without a
split file, a seeded 8:2 split of the rows is made.

MOS are normalised per dataset to [0, 1] from the declared range and flipped where
lower is better (paper Sec. 4.1, the authors' `mos_normalize`), so every target
is higher-is-better.

Data problems are told, not hidden: a missing dataset root or meta-info file,
a MOS outside the declared range, a split index past the end of the meta-info
file, or many missing images stop with one sentence naming the dataset, file and
line; a few missing images and unreadable images are skipped and reported.

This module says which images, with which targets; training/loading.py reads them.
"""
from __future__ import annotations

import csv
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from contract.errors import UserError, read_user_json

CONFIG_DIR = Path(__file__).parent / "configs"
REGISTRY_FILE = CONFIG_DIR / "datasets.json"
PARTS = ("train", "val", "test")
# Above this fraction of missing images the root or image_dir is probably wrong: stop.
MAX_MISSING_FRACTION = 0.05

SPEC_KEYS = {"name", "title", "scene", "mos_range", "lower_better", "folder", "root", "meta_info",
             "image_dir", "split_file", "split_index", "layout", "image_column", "mos_column",
             "skip_first_rows", "eval_split", "resize_short_side", "resize_long_side", "split_seed",
             "max_missing_fraction", "group_column", "notes"}


@dataclass
class DatasetSpec:
    """One dataset as configured: everything needed to read it, no code."""

    name: str
    scene: str
    mos_range: tuple[float, float]
    lower_better: bool
    meta_info: str
    image_dir: str = ""
    root: str | None = None
    folder: str | None = None            # the root's folder name under --data-root
    title: str = ""
    split_file: str | None = None
    split_index: int | str = 1
    layout: str = "nr"                   # "nr": image, mos, ...; "fr": ref, image, mos, ...
    image_column: int | str | None = None
    mos_column: int | str | None = None
    group_column: int | str | None = None   # the source photo of each row (default: "fr" layout's ref column)
    skip_first_rows: int = 0
    eval_split: str | None = None        # default: "test" if the split has one, else "val"
    resize_short_side: int | None = None
    resize_long_side: int | None = None
    split_seed: int = 123
    max_missing_fraction: float = MAX_MISSING_FRACTION
    notes: str = ""

    @classmethod
    def from_entry(cls, name: str, entry: dict, source: str) -> "DatasetSpec":
        if not isinstance(entry, dict):
            raise UserError(f"dataset '{name}' in {source} must be a JSON object")
        unknown = sorted(set(entry) - SPEC_KEYS)
        if unknown:
            raise UserError(f"dataset '{name}' in {source} has unknown keys {', '.join(unknown)}; "
                                 f"known keys: {', '.join(sorted(SPEC_KEYS))}")
        for key in ("scene", "mos_range", "lower_better", "meta_info"):
            if key not in entry:
                raise UserError(f"dataset '{name}' in {source} needs '{key}'")
        mos_range = entry["mos_range"]
        if not (isinstance(mos_range, list) and len(mos_range) == 2
                and all(isinstance(v, (int, float)) for v in mos_range) and mos_range[0] < mos_range[1]):
            raise UserError(f"dataset '{name}' in {source}: mos_range must be [low, high] with low < high")
        if entry.get("layout", "nr") not in ("nr", "fr"):
            raise UserError(f"dataset '{name}' in {source}: layout must be 'nr' or 'fr'")
        if entry.get("eval_split") not in (None, *PARTS):
            raise UserError(f"dataset '{name}' in {source}: eval_split must be one of {', '.join(PARTS)}")
        values = {k: v for k, v in entry.items() if k != "name"}
        values["mos_range"] = (float(mos_range[0]), float(mos_range[1]))
        values["lower_better"] = bool(entry["lower_better"])
        return cls(name=name, **values)

    def normalise(self, mos: float) -> float:
        lo, hi = self.mos_range
        value = (mos - lo) / (hi - lo)
        return 1.0 - value if self.lower_better else value

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


# ---------------------------------------------------------------- registry

def load_registry(extra_files: Sequence[str | Path] = ()) -> dict[str, dict]:
    """Dataset entries: the shipped ones, then each --datasets-file (same name replaces)."""
    entries = _read_registry_file(REGISTRY_FILE)
    for path in extra_files:
        entries.update(_read_registry_file(Path(path)))
    return entries


def _read_registry_file(path: Path) -> dict[str, dict]:
    data = read_user_json(path, "datasets file")
    entries = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise UserError(f"datasets file {path} needs a 'datasets' object mapping names to entries; "
                             f"see {REGISTRY_FILE}")
    for name, entry in entries.items():
        DatasetSpec.from_entry(name, entry, str(path))   # validate early, name the file
    return {name: dict(entry, _source=str(path)) for name, entry in entries.items()}


def resolve_datasets(selection: Sequence[str], registry: dict[str, dict], data_root: str | None = None,
                     meta_info_dir: str | None = None) -> list[DatasetSpec]:
    """Specs for `name` or `name:root` selections; a root comes from the selection,
    the entry's own 'root', or --data-root/<folder>."""
    specs = []
    for item in selection:
        name, _, root = str(item).partition(":")
        if name not in registry:
            raise UserError(f"unknown dataset '{name}'; known: {', '.join(sorted(registry))} "
                                 "(add one with --datasets-file)")
        entry = {k: v for k, v in registry[name].items() if k != "_source"}
        spec = DatasetSpec.from_entry(name, entry, registry[name].get("_source", "the registry"))
        if root:
            spec.root = root
        elif not spec.root and data_root:
            spec.root = str(Path(data_root) / (spec.folder or name))
        if not spec.root:
            raise UserError(f"dataset '{name}' has no root folder; pass --datasets {name}:/path/to/{spec.folder or name} "
                                 "or --data-root DIR")
        spec.root = str(Path(spec.root).expanduser())
        if meta_info_dir:
            spec.meta_info = _look_in(meta_info_dir, spec.meta_info)
            if spec.split_file:
                spec.split_file = _look_in(meta_info_dir, spec.split_file)
        specs.append(spec)
    if len({s.name for s in specs}) != len(specs):
        raise UserError("a dataset is selected twice in --datasets")
    return specs


def _look_in(folder: str, name: str) -> str:
    candidate = Path(folder) / name
    return str(candidate) if not Path(name).is_absolute() and candidate.is_file() else name


# ---------------------------------------------------------------- split files

class _PlainDataUnpickler(pickle.Unpickler):
    """Reads only what pickle builds without importing anything: dicts, lists, tuples,
    sets, ints, floats, strings, bools and None. Any class or function reference
    (numpy scalars included, or a malicious payload) is refused before it runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")


def read_split_file(path: str | Path, dataset: str = "") -> dict:
    """{split_index: {"train": [...], "val": [...], "test": [...]}} from a .pkl or .json file."""
    path = Path(path)
    label = f"dataset '{dataset}': split file {path}" if dataset else f"split file {path}"
    if not path.is_file():
        raise UserError(f"{label} does not exist")
    raw = path.read_bytes()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{label} is not valid JSON ({exc})") from None
    else:
        try:
            data = _PlainDataUnpickler(io.BytesIO(raw)).load()
        except pickle.UnpicklingError as exc:
            raise UserError(f"{label} holds Python objects ({exc}), not plain lists, dicts, ints and "
                                 "strings; gamma-edge refuses to load them (re-save the indices as plain "
                                 "ints, or as JSON)") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise UserError(f"{label} is not a readable pickle ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{label} must map split indices to {{'train': [...], 'val': [...], 'test': [...]}}")
    splits = {}
    for key, parts in data.items():
        if not isinstance(parts, dict) or not set(parts) <= set(PARTS):
            raise UserError(f"{label}: split {key!r} must be an object with 'train', 'val' and/or 'test' lists")
        for part, indices in parts.items():
            if not isinstance(indices, (list, tuple)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
                raise UserError(f"{label}: split {key!r} part '{part}' must be a list of row indices (ints >= 0)")
        splits[str(key)] = {part: list(parts.get(part, [])) for part in PARTS}
    return splits


# ---------------------------------------------------------------- meta-info and samples

@dataclass(frozen=True)
class Sample:
    path: str
    target: float                 # normalised MOS, [0, 1], higher is better
    scene: str
    dataset: str
    row: int                      # row index in the meta-info file (0 = first data row)
    resize_short_side: int | None = None
    resize_long_side: int | None = None
    group: str = ""               # "dataset/source photo": rows of one group are versions of one photo


@dataclass
class DatasetPart:
    """The samples of one part (train or eval) of a dataset, and what was skipped."""

    spec: DatasetSpec
    part: str
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)


def load_dataset(spec: DatasetSpec, part: str) -> DatasetPart:
    """Read `spec`'s meta-info file and return the samples of `part`: "train", "val",
    "test", "eval" (the part the dataset is evaluated on) or "all"."""
    root = Path(spec.root or "")
    if not spec.root or not root.is_dir():
        raise UserError(f"dataset '{spec.name}': root folder {root} does not exist; "
                             f"pass --datasets {spec.name}:/path/to/{spec.folder or spec.name} or fix --data-root")
    meta_path = _under(root, spec.meta_info)
    if not meta_path.is_file():
        raise UserError(f"dataset '{spec.name}': meta-info file {meta_path} does not exist")
    rows = _read_meta_info(spec, meta_path)

    if part == "all":
        chosen = list(range(len(rows)))
    else:
        chosen = _split_rows(spec, root, len(rows), part)

    image_root = root / spec.image_dir if spec.image_dir else root
    samples, missing = [], []
    for index in chosen:
        line, name, mos, group = rows[index]
        path = image_root / name
        if not path.is_file():
            missing.append((index, line, str(path)))
            continue
        samples.append(Sample(str(path), spec.normalise(mos), spec.scene, spec.name, index,
                              spec.resize_short_side, spec.resize_long_side, f"{spec.name}/{group}" if group else ""))
    if missing and (len(missing) > spec.max_missing_fraction * len(chosen) or not samples):
        _, line, path = missing[0]
        raise UserError(f"dataset '{spec.name}': {len(missing)} of {len(chosen)} images listed in {meta_path} "
                             f"are missing (first: line {line}, {path}); check the root and image_dir")
    skipped = [(path, f"missing (line {line} of {meta_path})") for _, line, path in missing]
    return DatasetPart(spec, part, samples, skipped)


def _under(root: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else root / path


def _read_meta_info(spec: DatasetSpec, meta_path: Path) -> list[tuple[int, str, float, str]]:
    """(line number, image name, MOS, group) per data row, after skip_first_rows; the group (the
    source photo) is "" where the dataset names none."""
    try:
        text = meta_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"dataset '{spec.name}': meta-info file {meta_path} is not a UTF-8 CSV file") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise UserError(f"dataset '{spec.name}': meta-info file {meta_path} is empty")
    header = [h.strip() for h in header]
    image_col = _column(spec, meta_path, header, spec.image_column, 1 if spec.layout == "fr" else 0, "image")
    mos_col = _column(spec, meta_path, header, spec.mos_column, 2 if spec.layout == "fr" else 1, "MOS")
    group_col = _column(spec, meta_path, header, spec.group_column, 0 if spec.layout == "fr" else None, "group")
    lo, hi = spec.mos_range
    tolerance = 1e-9 * (hi - lo)
    rows = []
    for line_index, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        needed = max(image_col, mos_col, -1 if group_col is None else group_col) + 1
        if len(row) < needed:
            raise UserError(f"dataset '{spec.name}': line {line_index} of {meta_path} has {len(row)} columns, "
                                 f"expected at least {needed}")
        name, text_mos = row[image_col].strip(), row[mos_col].strip()
        try:
            mos = float(text_mos)
        except ValueError:
            raise UserError(f"dataset '{spec.name}': line {line_index} of {meta_path} has MOS '{text_mos}', "
                                 "not a number") from None
        if not (lo - tolerance <= mos <= hi + tolerance):
            raise UserError(f"dataset '{spec.name}': line {line_index} of {meta_path} ({name}) has MOS {mos:g} "
                                 f"outside the declared range [{lo:g}, {hi:g}]; fix the data or the dataset's mos_range")
        rows.append((line_index, name, mos, "" if group_col is None else row[group_col].strip()))
    rows = rows[spec.skip_first_rows:]
    if not rows:
        raise UserError(f"dataset '{spec.name}': meta-info file {meta_path} has no data rows")
    return rows


def _column(spec, meta_path, header, wanted, default, what) -> int | None:
    if wanted is None:
        wanted = default
    if wanted is None:
        return None
    if isinstance(wanted, int):
        if wanted >= len(header):
            raise UserError(f"dataset '{spec.name}': meta-info file {meta_path} has {len(header)} columns; "
                                 f"the {what} column {wanted} does not exist")
        return wanted
    if wanted not in header:
        raise UserError(f"dataset '{spec.name}': meta-info file {meta_path} has no {what} column '{wanted}' "
                             f"(columns: {', '.join(header)})")
    return header.index(wanted)


def _split_rows(spec: DatasetSpec, root: Path, n_rows: int, part: str) -> list[int]:
    if spec.split_file:
        split_path = _under(root, spec.split_file)
        splits = read_split_file(split_path, spec.name)
        key = str(spec.split_index)
        if key not in splits:
            raise UserError(f"dataset '{spec.name}': split file {split_path} has no split index {key} "
                                 f"(it has {', '.join(sorted(splits))})")
        parts = splits[key]
        source = f"split file {split_path}"
    else:
        # No split file: a seeded 8:2 train/test split of the rows.
        order = np.random.default_rng(spec.split_seed).permutation(n_rows).tolist()
        cut = int(round(0.8 * n_rows))
        parts = {"train": sorted(order[:cut]), "val": [], "test": sorted(order[cut:])}
        source = "the seeded 8:2 split"
    if part == "eval":
        part = spec.eval_split or ("test" if parts["test"] else "val")
    if part not in PARTS:
        raise ValueError(f"unknown part {part}")
    indices = parts[part]
    beyond = [i for i in indices if i >= n_rows]
    if beyond:
        raise UserError(f"dataset '{spec.name}': {source} refers to row {beyond[0]} but the meta-info file has "
                             f"{n_rows} data rows (after skip_first_rows={spec.skip_first_rows}); "
                             "the split does not belong to this meta-info file")
    return list(indices)

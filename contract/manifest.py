"""Read and check the manifest of an exported model (docs/manifest.md, format version 1).

The manifest is the whole contract between export and runtime: the runtime learns
the graph's file, input layout, scenes and preprocessing from it and guesses nothing.
"""
from __future__ import annotations

import hashlib
import json
import mmap
from dataclasses import dataclass, field
from pathlib import Path

from contract.errors import UserError

FORMAT = "gamma-edge.manifest"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ONNX_METADATA_KEY = "gamma_edge.manifest"
OPENVINO_RT_INFO_KEY = "gamma_edge_manifest"
MODEL_KINDS = ("onnx", "openvino")
CROP_PROTOCOLS = ("center", "five", "grid", "random10")


@dataclass(frozen=True)
class Manifest:
    """What the runtime needs from manifest.json, checked; `raw` keeps the whole document."""

    folder: Path
    model_kind: str
    model_file: Path
    precision: str
    input_name: str
    output_name: str
    crop_size: int
    batch: int | None          # None: dynamic batch
    scenes: tuple[str, ...]
    levels: tuple[float, ...]
    max_long_side: int | None
    min_short_side: int | None
    default_crops: str
    raw: dict = field(repr=False, compare=False)


def scene_index(scenes: tuple[str, ...], scene: str, who: str = "") -> int:
    """The column of `scene` in a model's output, or one sentence naming the scenes it scores."""
    if scene not in scenes:
        raise UserError(f"{who}scene {scene!r} is not in this model; it scores {', '.join(scenes)}")
    return scenes.index(scene)


def load_manifest(path: str | Path) -> Manifest:
    """Load the manifest of a model folder, of a model file with a sidecar manifest.json,
    or of a lone .onnx / OpenVINO .xml file that carries it in its metadata."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(
            f"model '{path}' does not exist; pass --model with an exported model folder "
            f"(the one holding {MANIFEST_NAME})")
    if path.is_dir():
        sidecar = path / MANIFEST_NAME
        if not sidecar.is_file():
            raise UserError(
                f"'{path}' has no {MANIFEST_NAME}, so it is not a complete exported model "
                f"(an interrupted export leaves none); export the model again")
        return _parse(_read_json(sidecar), path, str(sidecar))
    if path.name == MANIFEST_NAME:
        return _parse(_read_json(path), path.parent, str(path))
    sidecar = path.parent / MANIFEST_NAME
    if sidecar.is_file():
        document = _read_json(sidecar)
        if (document.get("model") or {}).get("file") == path.name:
            return _parse(document, path.parent, str(sidecar))
    if path.suffix == ".onnx":
        text = onnx_metadata(path).get(ONNX_METADATA_KEY)
    elif path.suffix == ".xml":
        text = openvino_rt_info(path, OPENVINO_RT_INFO_KEY)
    else:
        text = None
    if text is None:
        raise UserError(
            f"'{path}' carries no gamma-edge manifest and has no {MANIFEST_NAME} beside it; "
            f"pass the exported model folder instead")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(
            f"the manifest embedded in '{path}' is not valid JSON; export the model again") from None
    document = dict(document)
    document["model"] = dict(document.get("model") or {}, file=path.name)
    return _parse(document, path.parent, f"the metadata of {path}")


def graph_choices(manifest: Manifest) -> list[Manifest]:
    """The folder's graphs: the manifest's own, then each of its `alternatives` (an export with
    `--format both`), each as a checked Manifest of its own."""
    graphs = [manifest]
    for alternative in manifest.raw.get("alternatives") or []:
        if not isinstance(alternative, dict):
            raise UserError(f"{manifest.folder / MANIFEST_NAME} has a malformed 'alternatives' entry; export again")
        document = {key: value for key, value in manifest.raw.items() if key != "alternatives"}
        document.update({key: alternative.get(key) for key in ("model", "quantization", "parity")})
        where = f"the alternative graph in {manifest.folder / MANIFEST_NAME}"
        graphs.append(_parse(document, manifest.folder, where))
    return graphs


def choose_graph(manifest: Manifest, engine_format: str | None, cpu_kind: str, fallback_format: str) -> Manifest:
    """The graph to run from a folder that holds several: the one in `engine_format` when the user named
    an engine, else the one the manifest's `prefer` table names for this kind of CPU (`fallback_format`,
    the runtime's own table, for a kind the manifest does not name); the manifest's own graph otherwise."""
    graphs = graph_choices(manifest)
    if len(graphs) == 1:
        return manifest
    if engine_format is None:
        table = {row.get("cpu_kind"): row.get("format") for row in manifest.raw.get("prefer") or []
                 if isinstance(row, dict)}
        engine_format = table.get(cpu_kind, fallback_format)
    return next((graph for graph in graphs if graph.model_kind == engine_format), manifest)


def _read_json(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"'{path}' is not a readable JSON manifest ({exc.__class__.__name__}); "
            f"export the model again") from None
    if not isinstance(document, dict):
        raise UserError(f"'{path}' is not a JSON object; export the model again")
    return document


def _parse(doc: dict, folder: Path, where: str) -> Manifest:
    """The checked Manifest of a manifest document; `where` names it in the one-sentence errors,
    which come in the order the checks run: format, model, input, scenes, preprocessing."""
    _check_format(doc, where)
    kind, model_file = _model_file(doc, folder, where)
    crop_size, batch = _input_shape(doc, where)
    scenes = _scene_names(doc, where)
    preprocess = _need(doc, where, "preprocess")
    resize = preprocess.get("resize") or {}
    default_crops = preprocess.get("default_crops", "center")
    if default_crops not in CROP_PROTOCOLS:
        raise UserError(
            f"{where} names default crops {default_crops!r}; this runtime knows {', '.join(CROP_PROTOCOLS)}")
    return Manifest(
        folder=folder,
        model_kind=kind,
        model_file=model_file,
        precision=str(doc["model"].get("precision", "fp32")),
        input_name=str(_need(doc, where, "input", "name")),
        output_name=str(_need(doc, where, "output", "name")),
        crop_size=crop_size,
        batch=None if batch == "dynamic" else batch,
        scenes=scenes,
        levels=tuple(doc.get("levels") or ()),
        max_long_side=resize.get("max_long_side"),
        min_short_side=resize.get("min_short_side"),
        default_crops=default_crops,
        raw=doc,
    )


def _need(doc: dict, where: str, section: str, key: str | None = None):
    """doc[section] (or doc[section][key]), or one sentence naming what the manifest lacks."""
    value = doc.get(section)
    if key is not None:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        name = section if key is None else f"{section}.{key}"
        raise UserError(f"{where} lacks '{name}'; export the model again")
    return value


def _check_format(doc: dict, where: str) -> None:
    found = (doc.get("format"), doc.get("format_version"))
    if found != (FORMAT, FORMAT_VERSION):
        raise UserError(
            f"{where} is format {found[0]!r} version {found[1]!r}, but this runtime understands only "
            f"{FORMAT!r} version {FORMAT_VERSION}; upgrade gamma-edge or export with a matching version")


def _model_file(doc: dict, folder: Path, where: str) -> tuple[str, Path]:
    """The model's kind and its graph file, which must be beside the manifest."""
    kind = _need(doc, where, "model", "kind")
    if kind not in MODEL_KINDS:
        raise UserError(
            f"{where} names model kind {kind!r}; this runtime runs only {', '.join(MODEL_KINDS)}")
    model_file = folder / _need(doc, where, "model", "file")
    if not model_file.is_file():
        raise UserError(
            f"the model file '{model_file}' named in {where} is missing; copy the whole exported folder")
    return kind, model_file


def _input_shape(doc: dict, where: str) -> tuple[int, int | str]:
    """(crop size, batch) of the graph's input, whose layout must be the one the runtime feeds."""
    layout = (_need(doc, where, "input", "layout"), _need(doc, where, "input", "dtype"),
              _need(doc, where, "input", "channel_order"))
    if layout != ("NHWC", "uint8", "BGR"):
        raise UserError(
            f"{where} asks for {'/'.join(map(str, layout))} input, but this runtime feeds only "
            f"NHWC/uint8/BGR crops; export with the default input contract")
    height, width = _need(doc, where, "input", "height"), _need(doc, where, "input", "width")
    crop_size = int(_need(doc, where, "preprocess").get("crop_size", height))
    if not (height == width == crop_size):
        raise UserError(
            f"{where} has input {height}x{width} but crop_size {crop_size}; export the model again")
    batch = doc["input"].get("batch", "dynamic")
    if batch != "dynamic" and not (isinstance(batch, int) and batch > 0):
        raise UserError(f"{where} has input batch {batch!r}; expected 'dynamic' or a positive integer")
    return crop_size, batch


def _scene_names(doc: dict, where: str) -> tuple[str, ...]:
    scenes = _need(doc, where, "scenes")
    if not isinstance(scenes, list) or not scenes or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str) for s in scenes):
        raise UserError(f"{where} lists no scenes (each needs a 'name'); export the model again")
    return tuple(s["name"] for s in scenes)


def onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an .onnx file, read from the protobuf wire format without
    the onnx package and without reading the weights (ModelProto field 14 holds
    StringStringEntryProto messages: key = field 1, value = field 2)."""
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for number, value in _fields(data, 0, len(data)):
                if number == 14 and isinstance(value, tuple):
                    entry = dict(_fields(data, *value))
                    key, text = entry.get(1), entry.get(2)
                    if isinstance(key, tuple) and isinstance(text, tuple):
                        props[bytes(data[key[0]:key[1]]).decode("utf-8", "replace")] = \
                            bytes(data[text[0]:text[1]]).decode("utf-8", "replace")
    except (OSError, ValueError):
        return {}
    return props


def _fields(data, start: int, end: int):
    """Top-level protobuf fields in data[start:end]: (number, int) for varints,
    (number, (begin, end)) for length-delimited fields."""
    position = start
    while position < end:
        tag, position = _varint(data, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(data, position)
            yield number, value
        elif wire == 2:
            length, position = _varint(data, position)
            if position + length > end:
                raise ValueError("truncated protobuf")
            yield number, (position, position + length)
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            raise ValueError("not a protobuf")


def _varint(data, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def openvino_rt_info(path: Path, key: str) -> str | None:
    """One rt_info entry of an OpenVINO IR .xml (<rt_info><key value="..."/></rt_info>),
    read as XML so that OpenVINO need not be imported to learn what the model is."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    for rt_info in root.findall("rt_info"):
        entry = rt_info.find(key)
        if entry is not None:
            return entry.get("value")
    return None


def manifest_id(raw_manifest: dict) -> str:
    """A short stable id of a model's whole manifest (scenes, prompts, levels, preprocessing...)."""
    text = json.dumps(raw_manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

"""The manifest (docs/manifest.md, format version 1): written beside every exported graph and
embedded in it (ONNX metadata_props / OpenVINO rt_info), so a lone file still says what it is.
Its format, version, file name and embedding keys are the contract's (contract/manifest.py),
which the runtime reads by.

The embedded copy has no "model.sha256": a file cannot hold its own hash. The
manifest.json beside it has it.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from contract.atomic import write_atomically, write_bytes_atomically
from contract.manifest import FORMAT, FORMAT_VERSION, MANIFEST_NAME, ONNX_METADATA_KEY
from contract.preprocess import preprocess_block


def build_manifest(*, kind: str, file: str, precision: str, scenes: list[dict], levels: list[float],
                   crop_size: int, checkpoint: dict, tools: dict, parity: dict | None = None,
                   weights_file: str | None = None, quantization: dict | None = None,
                   graph: dict | None = None, prefer: list | None = None) -> dict:
    model = {"kind": kind, "file": file, "precision": precision}
    if weights_file:
        model["weights_file"] = weights_file
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "input": {"name": "crops", "layout": "NHWC", "dtype": "uint8", "channel_order": "BGR",
                  "height": crop_size, "width": crop_size, "batch": "dynamic"},
        "output": {"name": "scores", "dtype": "float32", "shape": ["N", "S"]},
        "scenes": scenes,
        "levels": [float(v) for v in levels],
        "preprocess": preprocess_block(crop_size),
        "checkpoint": checkpoint,
        "tools": tools,
        "parity": parity,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if graph:
        manifest["graph"] = graph
    if quantization:
        manifest["quantization"] = quantization
    if prefer:
        manifest["prefer"] = prefer       # which INT8 graph to run on which CPU kind (export/choice.py)
    return manifest


def tool_versions(*names: str) -> dict:
    """Versions of gamma_edge and the given distributions that are installed."""
    from importlib import metadata

    import gamma_edge

    versions = {"gamma_edge": gamma_edge.__version__}
    for name in names:
        dist = {"onnxruntime": ("onnxruntime-gpu", "onnxruntime"), "open_clip": ("open_clip_torch",)}.get(name, (name,))
        for d in dist:
            try:
                versions[name] = metadata.version(d)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def embedded_copy(manifest: dict) -> str:
    """The manifest as stored inside the graph file (without the file's own hash)."""
    copy = json.loads(json.dumps(manifest))
    copy["model"].pop("sha256", None)
    copy["model"].pop("weights_sha256", None)
    return json.dumps(copy, sort_keys=False)


def embed_in_onnx(path: Path, manifest: dict) -> None:
    """Store the manifest in the ONNX file's metadata_props (rewritten through a temporary name)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props[ONNX_METADATA_KEY] = embedded_copy(manifest)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    write_atomically(path, lambda temporary: onnx.save(model, str(temporary)))


def read_onnx_manifest(path: str | Path) -> dict | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for p in model.metadata_props:
        if p.key == ONNX_METADATA_KEY:
            return json.loads(p.value)
    return None


def write_manifest(folder: Path, manifest: dict) -> Path:
    """manifest.json, through a temporary name and an atomic rename: the folder's completion mark."""
    path = folder / MANIFEST_NAME
    write_bytes_atomically(path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return path

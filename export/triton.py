"""`gamma-edge export --format triton`: a Triton Inference Server model repository, one model per scene.

    REPO/
      natural/
        config.pbtxt          # platform onnxruntime_onnx, max_batch_size, dynamic_batching, instance_group
        1/
          model.onnx          # the per-scene graph export writes for --format onnx, validated the same way
          manifest.json       # beside it: how to decode and crop images exactly as the runtime does

Each scene is exported by export.pipeline.export_model (so each graph has its own parity report and,
for INT8, its own fidelity gate), then moved into the repository. The repository is built in a
hidden sibling folder and renamed into place when every scene is done, as export_model does for one
folder. The graph's batch axis is dynamic, so Triton's batch dimension is the crop axis: a request
carries an image's crops, [K, 224, 224, 3] uint8 BGR, and the image's score is their mean.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from contract.errors import UserError

DEVICES = ("cpu", "gpu")
# ONNX element types (onnx.TensorProto) -> Triton's config data types
TRITON_TYPES = {2: "TYPE_UINT8", 1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64"}


@dataclass(frozen=True)
class TritonOptions:
    max_batch_size: int = 32           # crops per batch Triton may form
    device: str | None = None          # instance_group kind; None: gpu for fp16 graphs, else cpu
    instances: int = 1                 # model instances (each its own session)
    max_queue_delay_us: int = 2000     # how long Triton may hold a request to fill a batch

    def kind(self, precision: str) -> str:
        device = self.device or ("gpu" if precision == "fp16" else "cpu")
        if device not in DEVICES:
            raise UserError(f"Triton device must be one of {', '.join(DEVICES)}, not '{device}'")
        return "KIND_GPU" if device == "gpu" else "KIND_CPU"


def config_pbtxt(name: str, graph: Path, scenes: list[str], precision: str, options: TritonOptions) -> str:
    """The model's config.pbtxt (Triton's ModelConfig in protobuf text format), with the input and
    output names, types and dims read from the graph itself."""
    (input_name, input_type, input_dims), (output_name, output_type, output_dims) = _graph_io(graph)
    # the exporter leaves the scene axis symbolic; it is one column per scene, and Triton checks it
    output_dims = [len(scenes) if d == -1 else d for d in output_dims]
    if options.max_batch_size < 1:
        raise UserError(f"the Triton max batch size must be at least 1, not {options.max_batch_size}")
    return f"""# Written by gamma-edge export --format triton: scene(s) {', '.join(scenes)}, {precision} ONNX graph.
# Input: uint8 BGR crops as OpenCV gives them, cut as 1/manifest.json says (docs/serve.md shows the
# client-side call); an image's score is the mean of its crops' scores.
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {options.max_batch_size}
input [
  {{
    name: "{input_name}"
    data_type: {input_type}
    dims: [ {', '.join(map(str, input_dims))} ]
  }}
]
output [
  {{
    name: "{output_name}"
    data_type: {output_type}
    dims: [ {', '.join(map(str, output_dims))} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {options.max_queue_delay_us}
}}
instance_group [
  {{
    count: {options.instances}
    kind: {options.kind(precision)}
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


def _graph_io(graph: Path):
    """((name, triton type, dims without the batch axis) of the input, the same of the output)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    found = []
    for value in (model.graph.input[0], model.graph.output[0]):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if not dims or dims[0] != -1:
            raise RuntimeError(f"'{value.name}' in {graph} has no dynamic batch axis; Triton batching needs one")
        found.append((value.name, TRITON_TYPES[tensor.elem_type], dims[1:]))
    return found


def export_triton_repository(checkpoint, out_dir, scene="natural", precision: str = "fp32",
                             options: TritonOptions = TritonOptions(), overwrite: bool = False,
                             progress: bool = True, **export_args) -> list:
    """One validated per-scene ONNX export per scene, laid out as a Triton model repository.
    `export_args` go to export_model (force, preset, int8_method, calib_dir, calib_count).
    Returns the ExportResult of each scene."""
    from export.pipeline import export_model, load_model, resolve_scenes

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UserError(f"output {out_dir} already exists; choose another --out or pass --overwrite")
    options.kind(precision)                                     # a wrong device before any slow step
    scenes = resolve_scenes(load_model(checkpoint)[0], scene)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    results = []
    try:
        for number, name in enumerate(scenes, 1):
            if progress:
                print(f"[triton] exporting scene {name} ({number} of {len(scenes)})", file=sys.stderr, flush=True)
            version = partial / name / "1"
            # progress=False: export_model's report would name the hidden folder; it is printed below instead
            result = export_model(checkpoint, version, scene=name, precision=precision, fmt="onnx",
                                  progress=False, **export_args)
            (partial / name / "config.pbtxt").write_text(
                config_pbtxt(name, version / "model.onnx", [name], precision, options))
            results.append(result)
        _replace(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for result in results:
        final = out_dir / result.out_dir.relative_to(partial)
        result.report = result.report.replace(str(result.out_dir), str(final))
        result.out_dir = final
        if progress:
            print(result.report, flush=True)
    if progress:
        print(repository_report(out_dir, scenes), flush=True)
    return results


def _replace(partial: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out_dir)


def repository_report(out_dir: Path, scenes: list[str]) -> str:
    models = ", ".join(f"{name} ({name}/config.pbtxt, {name}/1/model.onnx, {name}/1/manifest.json)" for name in scenes)
    return (f"Triton model repository {out_dir}: {models}\n"
            f"  serve it:  tritonserver --model-repository {out_dir.resolve()}\n"
            f"  or here:   gamma-edge serve --model {out_dir / scenes[0] / '1'}\n"
            f"  clients cut crops by the manifest beside each model.onnx (docs/serve.md, \"Triton\")")

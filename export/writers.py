"""One writer per graph format and precision: each turns the export's plain ONNX graph (the Job that
export/pipeline.py prepares) into the files of its format in the export folder and says how to run them
for validation. Adding a format or precision is adding a writer and its row in WRITERS."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from contract.manifest import OPENVINO_RT_INFO_KEY


class Progress(Protocol):
    """How a step says what it does (export/pipeline.py's _Progress: stderr lines and a bar)."""

    def step(self, text: str) -> None: ...

    def bar(self, total: int, desc: str): ...


@dataclass(frozen=True)
class Int8Target:
    """What an INT8 export is built for: the resolved preset and ONNX Runtime method, whether each was
    chosen by 'auto', and the CPU the export runs on (contract.hardware)."""

    preset: str
    method: str
    preset_auto: bool
    method_auto: bool
    cpu: object

    def manifest_fields(self) -> dict:
        """What the manifest's quantization block records about the target."""
        from contract.hardware import PRESETS

        return {"preset": self.preset, "target": PRESETS[self.preset].target,
                "chosen": "auto" if self.preset_auto else "given", "built_on": self.cpu.describe()}


@dataclass
class Job:
    """What one export works on, handed to each step."""

    model: object
    scenes: list
    precision: str
    calib: np.ndarray | None
    folder: Path
    scratch: Path
    plain: Path                    # the exported plain ONNX graph every format starts from
    crops: np.ndarray              # held-out validation crops
    reference: np.ndarray          # PyTorch FP32 scores of them
    target: Int8Target
    show: Progress
    graph_info: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)


@dataclass
class Written:
    """What a format's writer leaves in the folder, and how to run it for validation."""

    model_file: str
    weights_file: str | None
    files: list
    run: object
    providers: list
    quantization: dict | None = None


def onnx_written(job: Job, graph_file: Path, quantization: dict | None = None) -> Written:
    from export import onnx_export, validate

    job.graph_info["operators"] = onnx_export.fusion_counts(graph_file)
    job.show.step("validating the exported graph on ONNX Runtime")
    run, providers = validate.onnxruntime_runner(graph_file)
    return Written(graph_file.name, None, [graph_file], run, providers, quantization)


def write_onnx_fp32(job: Job) -> Written:
    """The plain graph, or ONNX Runtime's fused one (SkipLayerNormalization, QuickGelu) when it
    scores the same (within 1e-5); the optimizer is best-effort, the plain graph is exact."""
    from export import onnx_export, validate

    graph_file, chosen = job.folder / "model.onnx", job.plain
    job.show.step("ONNX Runtime transformer fusions")
    fused = job.scratch / "fused.onnx"
    visual = job.model.clip.visual
    try:
        onnx_export.optimize_for_onnxruntime(job.plain, fused, visual.transformer.resblocks[0].attn.num_heads,
                                             visual.transformer.width)
        run, _ = validate.onnxruntime_runner(fused)
        diff = onnx_export.max_abs_diff(validate.run_in_batches(run, job.crops), job.reference)
        if diff <= 1e-5:
            chosen = fused
            job.graph_info["onnxruntime_fusions"] = "SkipLayerNormalization, QuickGelu (com.microsoft ops)"
        else:
            job.show.step(f"fused graph drifts by {diff:.2g}; keeping the plain graph")
    except Exception as exc:   # noqa: BLE001 - any optimizer failure leaves the exact plain graph
        job.show.step(f"ONNX Runtime fusions unavailable ({type(exc).__name__}); keeping the plain graph")
    shutil.copyfile(chosen, graph_file)
    return onnx_written(job, graph_file)


def write_onnx_fp16(job: Job) -> Written:
    from export import onnx_export

    graph_file = job.folder / "model.onnx"
    job.show.step("converting to FP16")
    onnx_export.to_fp16(job.plain, graph_file)
    return onnx_written(job, graph_file)


def write_onnx_int8(job: Job) -> Written:
    """ONNX Runtime INT8, static QDQ (calibrated) or dynamic, with the preset for the target CPU."""
    from export import quantize

    graph_file, target = job.folder / "model.onnx", job.target
    chosen_by = f"auto for {target.cpu.kind.name}" if target.preset_auto else "given"
    if target.method == "static":
        job.show.step(f"static INT8 (preset {target.preset}, {chosen_by}): calibrating on {len(job.calib)} crops")
        with job.show.bar(len(job.calib), "calibrating") as bar:
            quantization = quantize.quantize_static_int8(job.plain, graph_file, job.calib, target.preset,
                                                         progress=bar.update)
    else:
        job.show.step(f"dynamic INT8 (preset {target.preset}, {chosen_by})")
        quantization = quantize.quantize_dynamic_int8(job.plain, graph_file, target.preset)
    quantization.update(target.manifest_fields())
    return onnx_written(job, graph_file, quantization)


def write_openvino(job: Job) -> Written:
    """OpenVINO IR (model.xml + model.bin) from the plain graph; INT8 through NNCF."""
    from export import openvino_export, validate
    from export.manifest import tool_versions

    job.tools.update(tool_versions("openvino"))
    job.show.step("converting to OpenVINO IR")
    ov_model = openvino_export.convert_to_openvino(job.plain)
    quantization = None
    if job.precision == "int8":
        job.tools.update(tool_versions("nncf"))
        job.show.step(f"NNCF INT8 (TRANSFORMER preset): calibrating on {len(job.calib)} crops")
        with job.show.bar(len(job.calib), "calibrating (NNCF)") as bar:
            ov_model, quantization = openvino_export.quantize_openvino_int8(ov_model, job.calib, progress=bar.update)
        quantization["built_on"] = job.target.cpu.describe()
    graph_file = job.folder / "model.xml"
    save_ov(ov_model, graph_file, None, job.precision)
    job.show.step("validating the exported graph on OpenVINO")
    run, providers = validate.openvino_runner(graph_file)
    return Written(graph_file.name, "model.bin", [graph_file, job.folder / "model.bin"], run, providers, quantization)


# (format, precision) -> its writer: adding a format or precision is adding rows here.
WRITERS = {
    ("onnx", "fp32"): write_onnx_fp32,
    ("onnx", "fp16"): write_onnx_fp16,
    ("onnx", "int8"): write_onnx_int8,
    ("openvino", "fp32"): write_openvino,
    ("openvino", "fp16"): write_openvino,
    ("openvino", "int8"): write_openvino,
}


def save_ov(ov_model, target: Path, manifest_json, precision, rewrite: bool = False) -> None:
    """Save the IR; on a rewrite (to embed the manifest) go through a temporary pair of files."""
    import openvino as ov

    if manifest_json is not None:
        ov_model.set_rt_info(manifest_json, OPENVINO_RT_INFO_KEY)
    if not rewrite:
        ov.save_model(ov_model, str(target), compress_to_fp16=(precision == "fp16"))
        return
    tmp = target.with_name("rewrite.xml")
    ov.save_model(ov_model, str(tmp), compress_to_fp16=(precision == "fp16"))
    del ov_model
    os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(tmp, target)

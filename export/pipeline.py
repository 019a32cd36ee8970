"""export_model: checkpoint -> graph -> (optimize | FP16 | INT8) -> validate -> manifest, atomically.

The output folder is built as a hidden sibling (`.NAME.partial-PID`) and renamed
into place only when the graph, its validation and the manifest (written last)
are all done; any failure removes the partial folder, so a folder holding a
manifest.json is always complete (docs/manifest.md).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from contract.errors import UserError
from contract.manifest import MANIFEST_NAME
from export import choice, writers
from export.writers import Int8Target, Job

PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "openvino")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "gamma_edge" / "assets" / "demo" / "demo.safetensors"
# An FP32 graph is a rewrite of the PyTorch model: anything beyond this is a bug of ours, not rounding.
FP32_MAX_ABS_DIFF = 1e-3


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    report: str = ""
    files: list = field(default_factory=list)


class _Progress:
    """Step lines on stderr and a tqdm bar for the slow loops; silent when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.perf_counter()

    def step(self, text: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="crop", disable=not self.enabled, file=sys.stderr, leave=False)


def resolve_scenes(model, scene: str | Sequence[str]) -> list[str]:
    """'all' -> every scene of the model; a name or a list of names -> checked against the model."""
    if isinstance(scene, str):
        names = list(model.scenes) if scene == "all" else [s.strip() for s in scene.split(",") if s.strip()]
    else:
        names = list(scene)
    if not names:
        raise UserError("no scene given; pass a scene name, several separated by commas, or 'all'")
    for name in names:
        model.prompts(name)                   # UserError naming the known scenes
    if len(set(names)) != len(names):
        raise UserError(f"scene list {', '.join(names)} names a scene twice")
    return names


def load_model(checkpoint_or_model):
    """(Gamma in eval mode, checkpoint description for the manifest)."""
    from gamma_edge.model import Gamma

    if isinstance(checkpoint_or_model, Gamma):
        model = checkpoint_or_model
        info = {"sha256": None, "name": None}
    else:
        from gamma_edge.checkpoint import file_sha256
        from gamma_edge.factory import create_model

        path = Path(checkpoint_or_model) if checkpoint_or_model is not None else DEFAULT_CHECKPOINT
        if checkpoint_or_model is None and not path.is_file():
            raise UserError("no checkpoint given and the demo model is not installed; "
                                 "pass --checkpoint PATH (a gamma-edge .safetensors checkpoint)")
        model = create_model(checkpoint=path)
        info = {"sha256": file_sha256(path), "name": path.name}
    info.update({"backbone": model.config.backbone_name, "prompts": model.config.prompts,
                 "config": model.config.to_dict()})
    return model.float().eval(), info


class Int8GateMissed(UserError):
    """An INT8 graph below its fidelity gate (validate.INT8_MIN_SRCC)."""


def export_model(checkpoint_or_model=None, out_dir: str | Path = "gamma-export", scene: str | Sequence[str] = "natural",
                 precision: str = "fp32", fmt: str = "auto", calib_dir: str | Path | None = None,
                 overwrite: bool = False, force: bool = False, progress: bool = True, preset: str = "auto",
                 int8_method: str = "auto", calib_count: int = 300, cpu=None) -> ExportResult:
    """Export a Gamma (checkpoint path or model) to a validated graph folder with a manifest.

    scene: a name, a comma-separated list, a list of names, or "all" (one graph, one column per scene).
    precision: "fp32" | "fp16" (for GPUs) | "int8" (ONNX Runtime static QDQ or dynamic; NNCF for OpenVINO).
    fmt: "onnx" | "openvino" | "auto" (INT8: the fastest faithful format on `cpu`; else ONNX) | "both"
    (INT8: both graphs, the manifest naming which to run on which CPU); export/choice.py.
    preset / int8_method: "auto" picks them for `cpu` (default: this machine's, contract.hardware); with
    int8_method "auto", a dynamic graph that misses the fidelity gate is replaced by a static one.
    An INT8 export whose SRCC against PyTorch FP32 on the held-out crops falls below
    validate.INT8_MIN_SRCC raises UserError unless force=True.
    """
    from contract import hardware
    _check_arguments(precision, fmt, preset, int8_method)
    out_dir = _check_output(Path(out_dir), overwrite)
    cpu = cpu or hardware.detect_cpu()
    target = Int8Target(hardware.resolve_preset(preset, cpu).name, hardware.resolve_int8_method(int8_method, cpu),
                        preset == "auto", int8_method == "auto", cpu)
    show = _Progress(progress)
    calib = _calibration_crops(precision, calib_dir, calib_count, show)   # the user's images before any slow step
    show.step("loading the model")
    model, checkpoint_info = load_model(checkpoint_or_model)
    scenes = resolve_scenes(model, scene)
    plans = choice.format_plans(fmt, precision, cpu, onnx_options=(preset, int8_method) != ("auto", "auto"))
    request = ExportRequest(model, checkpoint_info, scenes, precision, plans, calib)
    manifest, report = _export_atomically(request, force, target, show, out_dir, overwrite)
    if progress:
        print(report, flush=True)
    return ExportResult(out_dir=out_dir, manifest=manifest, report=report,
                        files=sorted(p.name for p in out_dir.iterdir()))


def _check_arguments(precision: str, fmt: str, preset: str, int8_method: str) -> None:
    from contract import hardware
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    if fmt not in FORMATS + choice.CHOICES:
        raise UserError(f"format must be one of {', '.join(choice.CHOICES + FORMATS)}, not '{fmt}'")
    if preset not in hardware.PRESET_CHOICES:
        raise UserError(f"unknown INT8 preset '{preset}'; choose one of {', '.join(hardware.PRESET_CHOICES)}")
    if int8_method not in hardware.INT8_METHODS:
        raise UserError(f"INT8 method must be one of {', '.join(hardware.INT8_METHODS)}, not '{int8_method}'")


def _check_output(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and not overwrite:
        raise UserError(f"output {out_dir} already exists; choose another --out or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output {out_dir} exists and is not a folder; choose another --out")
    return out_dir


def _calibration_crops(precision: str, calib_dir, calib_count: int, show: _Progress) -> np.ndarray | None:
    from export import calibration

    if precision != "int8":
        if calib_dir is not None:
            raise UserError("--calib is only used with --int8")
        return None
    show.step("reading calibration images" + (f" from {calib_dir}" if calib_dir else " (skimage.data photos)"))
    return (calibration.calibration_set_from_folder(calib_dir, calib_count) if calib_dir is not None
            else calibration.default_calibration_set(calib_count))


def _export_atomically(request: "ExportRequest", force: bool, target: "Int8Target", show: _Progress, out_dir: Path,
                       overwrite: bool) -> tuple[dict, str]:
    """Export into a hidden sibling folder and rename it into place only when complete; with
    int8_method auto, a dynamic graph that misses the gate is replaced by a static one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix="gamma-export-") as scratch:
            for number, formats in enumerate(request.plans):
                steps = (*request.fields(formats), partial, Path(scratch), force)
                try:
                    manifest, report = _export_plan(steps, target, show, out_dir, partial)
                    break
                except Int8GateMissed as missed:
                    if number + 1 == len(request.plans):
                        raise
                    show.step(f"{'+'.join(formats)} INT8 missed the fidelity gate ({missed}); "
                              f"trying {'+'.join(request.plans[number + 1])}")
                    _empty(partial)
        _move_into_place(partial, out_dir, overwrite)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"could not write the export to {out_dir} ({exc.strerror or exc}); "
                             "nothing was left behind") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest, report


def _export_plan(steps: tuple, target: "Int8Target", show: _Progress, out_dir: Path, partial: Path):
    """One folder's formats; with int8_method auto, a dynamic ONNX Runtime graph that misses the gate is
    replaced by a static one."""
    try:
        return _export_into(*steps, target, show, out_dir)
    except Int8GateMissed as missed:
        if not ("onnx" in steps[4] and target.method_auto and target.method == "dynamic"):
            raise
        show.step(f"dynamic INT8 missed the fidelity gate ({missed}); trying static INT8")
        _empty(partial)
        return _export_into(*steps, dataclasses.replace(target, method="static", method_auto=False), show, out_dir)


def _empty(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked to export: the model and where it came from, scenes, precision, the folders
    worth trying (export/choice.py's plans: the formats each holds) and calibration crops."""

    model: object
    checkpoint_info: dict
    scenes: list
    precision: str
    plans: list
    calib: np.ndarray | None

    def fields(self, formats: tuple[str, ...]) -> tuple:
        """_export_into's leading arguments for the folder of `formats`."""
        return self.model, self.checkpoint_info, self.scenes, self.precision, formats, self.calib


def _export_into(model, checkpoint_info, scenes, precision, formats, calib, folder: Path, scratch: Path, force,
                 target: Int8Target, show: _Progress, out_dir: Path):
    """The steps of one export into `folder`: plain graph, reference scores, then per format its writer,
    validation and gates, and its manifest (embedded); the folder's manifest last. Returns (manifest, report)."""
    from export import manifest as mf, validate

    job = _prepare(model, scenes, precision, calib, folder, scratch, target, show)
    manifests, graph_info = [], dict(job.graph_info)
    for fmt in formats:
        job.graph_info = dict(graph_info)          # each graph's own operator counts and fusions
        job.target = dataclasses.replace(target, preset=choice.onnx_preset(formats, target.preset, target.preset_auto,
                                                                            target.cpu))
        written = writers.WRITERS[(fmt, precision)](job)
        parity = _validate(job, written)
        _check_gates(parity, precision, force, len(job.crops))
        manifest = mf.build_manifest(
            kind=fmt, file=written.model_file, precision=precision, weights_file=written.weights_file,
            scenes=[{"name": s, "prompts": model.prompts(s)} for s in scenes],
            levels=[float(f"{v:.7g}") for v in model.head.levels.tolist()], crop_size=model.config.image_size,
            checkpoint=checkpoint_info, tools=dict(job.tools), parity=parity, quantization=written.quantization,
            graph=job.graph_info, prefer=choice.prefer_block(precision))
        _write_manifest(job, fmt, written, manifest)
        manifests.append(manifest)
    manifest = choice.combine(manifests)
    mf.write_manifest(job.folder, manifest)
    head, next_lines, rest = validate.format_report(manifest, out_dir).partition("\nnext:")
    return manifest, (head + choice.alternatives_report(manifests) + next_lines + rest
                      + "\n" + choice.recommendation(target.cpu, manifest))


def _prepare(model, scenes, precision, calib, folder, scratch, target, show) -> Job:
    """The plain ONNX graph (text folded into constants, fused MoAE) and the PyTorch reference."""
    from export import calibration, onnx_export, validate
    from export.manifest import tool_versions
    from export.graph import build_graph

    show.step(f"building the graph for scene(s) {', '.join(scenes)} (text features -> constants, fused MoAE)")
    graph = build_graph(model, scenes)
    plain = scratch / "plain.onnx"
    show.step("exporting ONNX")
    onnx_export.export_onnx(graph, plain)
    del graph
    crops, _ = calibration.validation_set()
    show.step(f"PyTorch FP32 reference scores on {len(crops)} held-out crops")
    reference = validate.reference_scores(model, crops, scenes)
    graph_info = {"moae": "fused (one wide first product, one wide second product)",
                  "input_folding": "uint8 BGR -> float, channel flip, /255, CLIP mean/std folded into the patch conv",
                  "text": "constant (D, S*5), pre-normalised, exp(logit_scale) folded in",
                  "last_block": "class token only (keys/values for all tokens; query, MLP/MoAE for the class token)"}
    return Job(model, scenes, precision, calib, folder, scratch, plain, crops, reference, target, show,
               graph_info, tool_versions("torch", "open_clip", "onnx", "onnxruntime"))


# -- validation, gates and the manifest ---------------------------------------------------------

def _validate(job: Job, written: writers.Written) -> dict:
    """The parity report of the written graph against PyTorch FP32 on the held-out crops."""
    from export import validate

    size = sum(p.stat().st_size for p in written.files)
    try:
        return validate.parity_report(written.run, job.model, job.scenes, job.crops, None, size,
                                      reference=job.reference, providers=written.providers)
    except Exception as exc:  # noqa: BLE001
        if job.precision != "fp16":
            raise
        # FP16 targets GPUs; a CPU provider may lack FP16 kernels for some operators.
        return {"reference": "pytorch-fp32", "images": len(job.crops), "file_bytes": size,
                "not_measured": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    finally:
        written.run = None


def _check_gates(parity: dict, precision: str, force: bool, images: int) -> None:
    """FP32 must match PyTorch (else a bug of ours); INT8 must keep the ranking (else the user decides)."""
    from export import validate

    if precision == "fp32" and parity["max_abs_diff"] > FP32_MAX_ABS_DIFF:
        raise RuntimeError(f"exported FP32 graph differs from PyTorch by {parity['max_abs_diff']:.3g}: a bug in export")
    if precision != "int8":
        return
    parity["gate"] = {"srcc_min": validate.INT8_MIN_SRCC, "passed": bool(parity["srcc"] >= validate.INT8_MIN_SRCC)}
    if not parity["gate"]["passed"] and not force:
        raise Int8GateMissed(
            f"INT8 graph misses its fidelity gate: SRCC {parity['srcc']:.4f} against PyTorch FP32 on "
            f"{images} held-out crops, below {validate.INT8_MIN_SRCC}; calibrate on more representative "
            f"images with --calib DIR, export FP32 instead, or pass --force to write it anyway")


def _write_manifest(job: Job, fmt: str, written: writers.Written, manifest: dict) -> None:
    """The manifest inside the graph file, and the file's hash in it (manifest.json, the folder's
    completion mark, is written last by _export_into)."""
    from export import manifest as mf
    from gamma_edge.checkpoint import file_sha256

    job.show.step(f"embedding the manifest and writing {MANIFEST_NAME}")
    graph_file = job.folder / written.model_file
    if fmt == "onnx":
        mf.embed_in_onnx(graph_file, manifest)
    else:
        import openvino as ov

        writers.save_ov(ov.Core().read_model(str(graph_file)), graph_file, mf.embedded_copy(manifest), job.precision,
                 rewrite=True)
        manifest["model"]["weights_sha256"] = file_sha256(job.folder / written.weights_file)
    manifest["model"]["sha256"] = file_sha256(graph_file)


def _move_into_place(partial: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not overwrite:
            raise UserError(f"output {out_dir} already exists; choose another --out or pass --overwrite")
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out_dir)

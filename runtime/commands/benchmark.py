"""`gamma-edge benchmark`: what each backend and precision costs and how faithful it is, here.

For every exported model given (default: the embedded demo models) and every
engine that can run it on this machine (ONNX Runtime on CPU / CUDA / TensorRT,
OpenVINO on CPU / GPU), it measures file size, load time, latency p50/p95 at
batch 1 and at one image's crop batch, images/s, and fidelity against the FP32
reference (max |diff|, SRCC) and, when labels are given, against them. Timing
rounds interleave the configurations (A B A B ...) because a shared machine's
speed drifts; figures are medians.
"""
from __future__ import annotations

import csv
import json
import statistics
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import click
import numpy as np

from contract import hardware
from runtime.inference.backends import cuda_driver_present, tensorrt_present, load_backend
from contract.preprocess import Preprocess
from contract.errors import UserError
from contract.images import IMAGE_SUFFIXES, read_image
from contract.manifest import CROP_PROTOCOLS, load_manifest
from contract.correlation import plcc, srcc
from runtime.shipped import MODELS_DIR, SAMPLES_DIR



@dataclass
class Row:
    model: str
    precision: str
    engine: str
    describe: str = ""
    size_mb: float = 0.0
    load_s: float = 0.0
    batch1_p50_ms: float | None = None
    batch1_p95_ms: float | None = None
    crop_batch: int = 0
    crops_p50_ms: float | None = None
    crops_p95_ms: float | None = None
    images_per_s: float | None = None
    max_abs_diff: float | None = None
    srcc_vs_fp32: float | None = None
    srcc_vs_labels: float | None = None
    plcc_vs_labels: float | None = None
    error: str | None = None
    _backend: object = field(default=None, repr=False)
    _b1: list = field(default_factory=list, repr=False)
    _bk: list = field(default_factory=list, repr=False)


def default_models() -> list[Path]:
    return sorted(p.parent for p in MODELS_DIR.glob("*/manifest.json"))


def load_images(images: str | None, labels: str | None) -> tuple[list[tuple[str, np.ndarray]], list[float] | None]:
    """Evaluation images (and their MOS when a meta-info CSV is given)."""
    if labels:
        path = Path(labels)
        if not path.is_file():
            raise UserError(f"labels file {path} does not exist")
        root = Path(images) if images else path.parent
        rows = list(csv.reader(path.open(newline="")))
        if rows and not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
            rows = rows[1:]  # header
        loaded, mos = [], []
        for row in rows:
            if len(row) < 2 or not _is_number(row[1]):
                raise UserError(f"{path}: row {row!r} is not 'image name, MOS'")
            loaded.append((row[0], read_image(root / row[0])))
            mos.append(float(row[1]))
        return loaded, mos
    folder = Path(images) if images else SAMPLES_DIR
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist; pass --images DIR or --labels CSV")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder} holds no images; pass --images DIR with .jpg/.png files")
    label_file = folder / "labels.csv"
    if images is None and label_file.is_file():
        return load_images(str(folder), str(label_file))
    return [(str(p.relative_to(folder)), read_image(p)) for p in files], None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def engines_for(kind: str, precision: str = "fp32", cpu: hardware.CpuInfo | None = None) -> list[tuple[str, str, str]]:
    """(backend, device, precision asked) worth trying for a model on this machine: every engine in the
    model's own precision, and OpenVINO in bf16 too where the CPU computes bf16 natively."""
    cpu = cpu or hardware.detect_cpu()
    pairs = []
    if kind == "onnx":
        pairs.append(("onnxruntime", "cpu"))
        try:
            import onnxruntime as ort
            available = ort.get_available_providers()
        except ImportError:
            available = []
        gpu = cuda_driver_present()  # onnxruntime-gpu lists CUDA even where no GPU exists
        if gpu and "CUDAExecutionProvider" in available:
            pairs.append(("onnxruntime", "cuda"))
        if gpu and "TensorrtExecutionProvider" in available and tensorrt_present():
            pairs.append(("onnxruntime", "tensorrt"))
    pairs.append(("openvino", "cpu"))
    try:
        import openvino as ov
        if any(d.startswith("GPU") for d in ov.Core().available_devices):
            pairs.append(("openvino", "gpu"))
    except ImportError:
        pass
    triples = [(backend, device, "auto") for backend, device in pairs]
    if cpu.native_bf16 and precision in ("fp32", "int8"):
        triples.insert(triples.index(("openvino", "cpu", "auto")) + 1, ("openvino", "cpu", "bf16"))
    return triples


def measure(models: list[Path], images, labels, crops: str | None, threads: int | None, runs: int,
            progress: bool = True, cpu: hardware.CpuInfo | None = None) -> tuple[list[Row], dict]:
    cpu = cpu or hardware.detect_cpu()
    manifests = [load_manifest(m) for m in models]
    preprocess = Preprocess.from_manifest(manifests[0], crops)
    per_image = [preprocess(image) for _, image in images]
    crop_batch = per_image[0].shape[0]
    rows: list[Row] = []
    for manifest in manifests:
        size = sum(f.stat().st_size for f in manifest.folder.iterdir() if f.is_file() and f.suffix != ".json")
        for backend, device, asked in engines_for(manifest.model_kind, manifest.precision, cpu):
            row = Row(model=manifest.folder.name, precision=manifest.precision, engine=f"{backend}/{device}",
                      size_mb=size / 1e6, crop_batch=crop_batch)
            t0 = time.perf_counter()
            try:
                row._backend = load_backend(manifest, backend, device, threads, asked, cpu=cpu)
                row._backend.run(per_image[0][:1])  # first inference builds kernels; part of loading
                row.describe = row._backend.describe()
                row.precision = row._backend.precision       # what runs, read back, not the manifest's word
            except UserError as exc:
                row.error = str(exc)
            row.load_s = time.perf_counter() - t0
            rows.append(row)
    live = [r for r in rows if r._backend is not None]
    if not live:
        raise UserError("no backend could load any of the models; see the errors above")
    one = per_image[0][:1]
    batch = per_image[0]
    bar = _progress(runs * len(live), progress, "timing")
    for _ in range(runs):  # interleaved: drift hits every configuration alike
        for row in live:
            row._b1.append(_time(row._backend.run, one))
            row._bk.append(_time(row._backend.run, batch))
            bar.update(1)
    bar.close()
    scene_column = 0
    reference_row = next((r for r in live if r.precision == "fp32" and r.engine == "onnxruntime/cpu"),
                         next((r for r in live if r.precision == "fp32"), live[0]))
    scores = {}
    for row in live:
        scores[id(row)] = np.array([row._backend.run(c)[:, scene_column].mean() for c in per_image])
    reference = scores[id(reference_row)]
    for row in live:
        s = scores[id(row)]
        row.batch1_p50_ms, row.batch1_p95_ms = _p50_p95(row._b1)
        row.crops_p50_ms, row.crops_p95_ms = _p50_p95(row._bk)
        row.images_per_s = 1000.0 / row.crops_p50_ms
        row.max_abs_diff = float(np.abs(s - reference).max())
        row.srcc_vs_fp32 = srcc(s, reference) if len(s) > 2 else None
        if labels is not None:
            row.srcc_vs_labels = srcc(s, labels)
            row.plcc_vs_labels = plcc(s, labels)
    context = {"images": len(images), "crops_per_image": crop_batch, "crop_protocol": preprocess.crops,
               "reference": f"{reference_row.model} on {reference_row.engine}", "runs": runs,
               "threads": threads, "gemm_gflops": gemm_probe(), "labels": labels is not None,
               "cpu": cpu.describe(), "cpu_kind": cpu.kind.name,
               "recommended": f"gamma-edge export {cpu.kind.recommended}", "why": cpu.kind.why}
    return rows, context


def gemm_probe(n: int = 2048, repeats: int = 3) -> float:
    """The machine's float32 matrix-multiply speed right now (GFLOP/s, numpy, median of `repeats` after
    a warm-up), for reading speed tables as a fraction of the machine's peak. The torch-free probe;
    benchmarks that have torch use torch_gemm_gflops in benchmarks/interleaved.py."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = [_time(lambda: a @ b) for _ in range(repeats)]
    return 2 * n ** 3 / (statistics.median(times) / 1000.0) / 1e9


def _time(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000.0


def _p50_p95(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def format_table(rows: list[Row], context: dict) -> str:
    header = (f"{'model':16s} {'prec':5s} {'engine':20s} {'MB':>6s} {'load s':>6s} {'b1 p50':>7s} {'b1 p95':>7s} "
              f"{'b' + str(context['crops_per_image']) + ' p50':>8s} {'p95':>7s} {'img/s':>7s} "
              f"{'max|d|':>8s} {'SRCC32':>7s}")
    if context["labels"]:
        header += f" {'SRCC lab':>8s} {'PLCC lab':>8s}"
    lines = [header, "-" * len(header)]
    for r in rows:
        if r.error:
            lines.append(f"{r.model:16s} {r.precision:5s} {r.engine:20s} unavailable: {r.error}")
            continue
        line = (f"{r.model:16s} {r.precision:5s} {r.engine:20s} {r.size_mb:6.1f} {r.load_s:6.2f} "
                f"{r.batch1_p50_ms:7.1f} {r.batch1_p95_ms:7.1f} {r.crops_p50_ms:8.1f} {r.crops_p95_ms:7.1f} "
                f"{r.images_per_s:7.1f} {r.max_abs_diff:8.2e} {_fmt(r.srcc_vs_fp32)}")
        if context["labels"]:
            line += f" {_fmt(r.srcc_vs_labels, 8)} {_fmt(r.plcc_vs_labels, 8)}"
        lines.append(line)
    lines.append("")
    lines.append(f"{context['images']} images x {context['crops_per_image']} crops ({context['crop_protocol']}); "
                 f"latency in ms, medians of {context['runs']} interleaved rounds; fidelity vs {context['reference']}; "
                 f"GEMM probe {context['gemm_gflops']:.0f} GFLOP/s (numpy float32, same run)")
    lines.append(f"CPU: {context['cpu']}. Precision is what each engine reports having compiled.")
    lines.append(f"For this CPU ({context['cpu_kind']}) the fastest faithful INT8 path is "
                 f"'{context['recommended']}': {context['why']}.")
    return "\n".join(lines)


def _fmt(value, width: int = 7) -> str:
    return f"{value:{width}.4f}" if value is not None else f"{'-':>{width}s}"


@click.command("benchmark")
@click.option("--model", "models", multiple=True, type=click.Path(),
              help="An exported model folder; repeat to compare several (default: the embedded demo models).")
@click.option("--images", type=click.Path(), default=None,
              help="Folder of images to measure fidelity on (default: the samples shipped with the runtime).")
@click.option("--labels", type=click.Path(), default=None,
              help="Meta-info CSV (image name, MOS) to also report SRCC/PLCC against labels.")
@click.option("--crops", type=click.Choice(CROP_PROTOCOLS), default=None,
              help="Crop protocol, which sets the crop batch (default: the manifest's).")
@click.option("--threads", type=int, default=None, help="Inference threads (default: all cores).")
@click.option("--runs", type=int, default=20, show_default=True, help="Timing rounds per configuration.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the table as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark_command(models, images, labels, crops, threads, runs, json_out, quiet):
    """Measure every backend and precision this machine can run.

    \b
    Examples:
      gamma-edge benchmark                                  # the embedded demo models
      gamma-edge benchmark --model exports/natural --model exports/natural-int8 --threads 2
      gamma-edge benchmark --model exports/natural --labels koniq/meta_info.csv --json bench.json
    """
    try:
        if runs < 1:
            raise UserError(f"--runs must be at least 1, not {runs}")
        model_dirs = [Path(m) for m in models] or default_models()
        if not model_dirs:
            raise UserError("no model was given and no embedded demo model is installed; pass --model DIR")
        for folder in model_dirs:
            load_manifest(folder)  # a wrong --model is named before any image is read
        loaded, mos = load_images(images, labels)
        rows, context = measure(model_dirs, loaded, mos, crops, threads, runs, progress=not quiet)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_table(rows, context))
    if json_out:
        doc = {"context": context,
               "rows": [{f.name: getattr(r, f.name) for f in fields(r) if not f.name.startswith("_")} for r in rows]}
        Path(json_out).write_text(json.dumps(doc, indent=2))
        click.echo(f"wrote {json_out}")

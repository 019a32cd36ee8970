"""Parity of an exported graph against the PyTorch model, and the report printed after export.

`reference_scores` is the one place that says what the exported graph must
compute: PyTorch FP32 Gamma fed the RGB float image that the uint8 BGR crop
stands for. Tests of export/ and of runtime/ use it as ground truth.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from contract.correlation import srcc

# The INT8 fidelity gate: Spearman of INT8 scores vs the FP32 graph's on the held-out validation crops.
INT8_MIN_SRCC = 0.99


def crops_to_images(crops: np.ndarray):
    """uint8 BGR NHWC crops -> the RGB float NCHW [0, 1] tensor Gamma takes."""
    import torch

    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be uint8 (N, H, W, 3) BGR, got {crops.dtype} {crops.shape}")
    return torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).permute(0, 3, 1, 2).float() / 255.0


def reference_scores(model, crops: np.ndarray, scenes: Sequence[str], batch: int = 8) -> np.ndarray:
    """(N, S) PyTorch FP32 scores of `model` (a Gamma) for uint8 BGR crops: the exported graph's target."""
    import torch

    model = model.float().eval()
    out = []
    with torch.no_grad():
        text = torch.stack([model.text_features(s) for s in scenes])
        for i in range(0, len(crops), batch):
            images = crops_to_images(crops[i:i + batch])
            out.append(model.head(model.image_features(images), text, model.clip.logit_scale).numpy())
    return np.concatenate(out).astype(np.float32)


def compare(reference: np.ndarray, scores: np.ndarray) -> dict:
    """max/mean |diff| over all scores and the worst per-scene Spearman."""
    reference, scores = np.asarray(reference, np.float64), np.asarray(scores, np.float64)
    if reference.shape != scores.shape:
        raise AssertionError(f"exported graph returned {scores.shape}, PyTorch {reference.shape}")
    diff = np.abs(reference - scores)
    worst = min(srcc(reference[:, s], scores[:, s]) for s in range(reference.shape[1]))
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "srcc": round(worst, 6)}


def latency_ms(run: Callable[[np.ndarray], np.ndarray], crop: np.ndarray, repeats: int = 5) -> float:
    """Median wall time of `run` on one crop (batch 1), after one warm-up run."""
    run(crop)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(crop)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000.0, 3)


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([run(crops[i:i + batch]) for i in range(0, len(crops), batch)]).astype(np.float32)


def onnxruntime_runner(path: str | Path, threads: int | None = None) -> tuple[Callable, list[str]]:
    """A function crops -> scores on ONNX Runtime's CPU provider, and the providers the session got."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return (lambda crops: session.run(None, {input_name: crops})[0]), session.get_providers()


def openvino_runner(xml: str | Path, threads: int | None = None, precision: str = "fp32") -> tuple[Callable, list[str]]:
    """A function crops -> scores on OpenVINO's CPU plugin in `precision` (fp32 unless bf16 is asked: the
    plugin would pick bf16 by itself on AVX512_BF16 / AMX CPUs), and what it runs on, precision read back."""
    import openvino as ov

    from runtime.inference.backends import compile_openvino, openvino_precision

    compiled = compile_openvino(ov.Core(), str(xml), "CPU", precision, threads)
    request = compiled.create_infer_request()

    def run(crops):
        request.infer({0: crops})
        return request.get_output_tensor(0).data.copy()

    return run, [f"openvino:CPU:{openvino_precision(compiled)}"]


def parity_report(run: Callable, model, scenes: Sequence[str], crops: np.ndarray, labels: Sequence[str],
                  file_bytes: int, reference: np.ndarray | None = None, fp32_scores: np.ndarray | None = None,
                  providers: Sequence[str] = ()) -> dict:
    """The manifest's "parity" object: the exported graph vs PyTorch FP32 on held-out crops."""
    if reference is None:
        reference = reference_scores(model, crops, scenes)
    scores = run_in_batches(run, crops)
    report = {"reference": "pytorch-fp32", "images": int(len(crops)),
              "image_set": "skimage.data held-out distortion ladder (export/calibration.py)",
              **compare(reference, scores),
              "latency_ms_batch1": latency_ms(run, crops[:1]), "file_bytes": int(file_bytes),
              "providers": list(providers)}
    if fp32_scores is not None:
        report["srcc_vs_fp32_graph"] = round(min(srcc(fp32_scores[:, s], scores[:, s])
                                                 for s in range(scores.shape[1])), 6)
    return report


def format_report(manifest: dict, out_dir: Path) -> str:
    """The lines printed after every export."""
    p = manifest["parity"]
    m = manifest["model"]
    scenes = ", ".join(s["name"] for s in manifest["scenes"])
    lines = [
        f"exported {m['kind']} {m['precision']} graph for scene(s) {scenes} -> {out_dir}",
        f"  parity vs PyTorch FP32 on {p['images']} held-out crops: max |diff| {p['max_abs_diff']:.3g}, "
        f"mean |diff| {p['mean_abs_diff']:.3g}, SRCC {p['srcc']:.4f}"
        + (f" (vs FP32 graph {p['srcc_vs_fp32_graph']:.4f}, gate >= {INT8_MIN_SRCC})"
           if "srcc_vs_fp32_graph" in p else ""),
        f"  size {p['file_bytes'] / 1e6:.1f} MB, latency {p['latency_ms_batch1']:.1f} ms per crop at batch 1 "
        f"({', '.join(p.get('providers', [])) or 'cpu'})",
        "next:",
        f"  gamma-edge score photos/ --model {out_dir}",
        f"  gamma-edge run video.mp4 --model {out_dir}",
        f"  gamma-edge benchmark --model {out_dir}",
    ]
    return "\n".join(lines)

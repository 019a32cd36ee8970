"""INT8 for ONNX Runtime: static QDQ with per-channel weights, calibrated on real photographs.

What stays in float, and why (measured, docs/export.md): only the weight matrix
products (Q/K/V and output projections, the fused MoAE's two wide products, the
patch convolution) are quantized; LayerNorm, QuickGELU, Softmax, the residual
Adds, the activation-by-activation attention products, the MoAE gate (it routes
every token) and the small head stay float. Fully-INT8 ViTs collapse (docs/design.md
sec. 5).

Calibration ranges are collected here, streaming (running min/max per tensor
over batches of crops), instead of by ONNX Runtime's calibrator, which keeps
every intermediate output of every calibration image in memory (tens of GB for
ViT-B/16 at a few hundred crops) and whose chunking option drops data in
recent releases (docs/design.md sec. 5.2). The ranges go to quantize_static through its
calibration cache.
"""
from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from contract.hardware import PRESETS   # the preset table is shared with the runtime's fit check


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs "consider pre-processing" warnings on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantizable_nodes(model) -> tuple[list[str], list[str]]:
    """(nodes to quantize, nodes kept float): weight products (MatMul/Gemm/Conv with a constant
    weight) are quantized, except the patch convolution, the MoAE gate, its expert-bias mix, the last
    block and the head; the activation-by-activation products of attention have no constant weight
    and stay float."""
    from onnx import numpy_helper

    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            weights[n.output[0]] = tuple(numpy_helper.to_array(n.attribute[0].t).shape)
    # The last block runs its MLP/MoAE for the class token only (graph rewrite 5): it costs ~1% of
    # the graph and its output is the image feature itself, so it stays float for fidelity.
    blocks = [int(m.group(1)) for n in model.graph.node if (m := re.search(r"/blocks\.(\d+)/", n.name))]
    last_block = f"/blocks.{max(blocks)}/" if blocks else None
    quantize, keep = [], []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        shape = weights.get(node.input[1]) if len(node.input) > 1 else None
        # Products with a tiny inner dimension (the MoAE's gate-weighted expert biases, K = N) gain
        # nothing from INT8 and would quantize the softmax gate weights themselves.
        tiny = shape is not None and node.op_type == "MatMul" and shape[0] < 16
        # The patch convolution stays float (0.4% of ViT-B/16's FLOPs): OpenVINO reading the static QDQ
        # graph mis-scores a quantized convolution fed by the uint8 input's Cast (max |diff| 0.31 against
        # ONNX Runtime on the demo model; 0.004 with the convolution float).
        in_float = ("/gate/" in node.name or "/head/" in node.name or shape is None or tiny
                    or node.op_type == "Conv" or (last_block is not None and last_block in node.name))
        (keep if in_float else quantize).append(node.name)
    return quantize, keep


def collect_ranges(model_path: Path, tensor_names: list[str], batches: list[np.ndarray],
                   progress: Callable[[int], None] | None = None) -> dict[str, tuple[np.float32, np.float32]]:
    """Running min/max of each named tensor over the calibration batches (memory: one batch)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    existing = {o.name for o in model.graph.output}
    for name in tensor_names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep tensor names
    with tempfile.TemporaryDirectory(prefix="gamma-calib-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        onnx.save(model, str(augmented))
        del model
        session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    lo = {n: np.float32(np.inf) for n in tensor_names}
    hi = {n: np.float32(-np.inf) for n in tensor_names}
    for batch in batches:
        values = session.run(tensor_names, {input_name: batch})
        for name, value in zip(tensor_names, values):
            lo[name] = min(lo[name], np.float32(value.min()))
            hi[name] = max(hi[name], np.float32(value.max()))
        if progress:
            progress(len(batch))
    return {n: (np.float32(lo[n]), np.float32(hi[n])) for n in tensor_names}


def quantize_static_int8(src: Path, dst: Path, calibration: np.ndarray, preset: str,
                         batch: int = 8, progress: Callable[[int], None] | None = None) -> dict:
    """Static QDQ INT8 of the graph at `src` into `dst`; returns the settings used (for the manifest)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    settings = PRESETS[preset]
    model = onnx.load(str(src), load_external_data=False)
    quantize, keep = quantizable_nodes(model)
    nodes = {n.name: n for n in model.graph.node}
    activations = sorted({nodes[name].input[0] for name in quantize} | {nodes[name].output[0] for name in quantize})
    del model
    batches = [calibration[i:i + batch] for i in range(0, len(calibration), batch)]
    ranges = collect_ranges(src, activations, batches, progress)
    with tempfile.TemporaryDirectory(prefix="gamma-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)
        with _quiet_root_logger():
            quantize_static(
                str(src), str(dst), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"], nodes_to_quantize=quantize,
                per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                activation_type=getattr(QuantType, settings.activation_type),
                weight_type=getattr(QuantType, settings.weight_type),
                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                extra_options={"ActivationSymmetric": settings.symmetric_activations, "WeightSymmetric": True},
            )
    return {"method": "static-qdq", "preset": preset, **{k: v for k, v in asdict(settings).items() if k != "name"},
            "calibration_crops": int(len(calibration)), "calibration_method": "minmax",
            "quantized_nodes": len(quantize), "float_nodes": len(keep),
            "float_ops": "patch convolution, LayerNorm, QuickGELU, Softmax, residual Add, attention QK^T and AV, MoAE gate, "
                         "the class-token-only last block, head"}


def quantize_dynamic_int8(src: Path, dst: Path, preset: str) -> dict:
    """Dynamic INT8 (weights int8 offline, activations quantized per batch at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = PRESETS[preset]
    quantize, keep = quantizable_nodes(onnx.load(str(src), load_external_data=False))
    with _quiet_root_logger():
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], nodes_to_quantize=quantize,
                         per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                         weight_type=getattr(QuantType, settings.weight_type))
    return {"method": "dynamic", "preset": preset, "target": settings.target, "weight_type": settings.weight_type,
            "reduce_range": settings.reduce_range, "per_channel": settings.per_channel,
            "quantized_nodes": len(quantize)}

"""OpenVINO IR (model.xml + model.bin): FP32, and INT8 through NNCF.

The IR is converted from the plain exported ONNX graph (not the ONNX Runtime
optimized one, whose com.microsoft operators OpenVINO does not read). Weights
are kept in FP32 (`compress_to_fp16=False`): parity first; the CPU plugin picks
its own inference precision.

INT8 uses NNCF post-training quantization with `model_type=TRANSFORMER` (keeps
LayerNorm, GELU, Softmax and residual Adds in float; docs/design.md sec. 5.2 found it
far more faithful than the default), the MIXED preset and NNCF's SmoothQuant
(migrates activation outliers of CLIP's MLP inputs into the weights); the
measurements behind these choices are in docs/export.md. The MoAE gate and the head stay float like in the ONNX Runtime path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def convert_to_openvino(onnx_path: Path):
    """An ov.Model from the plain ONNX graph."""
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def quantize_openvino_int8(model, calibration: np.ndarray, batch: int = 8, fast_bias_correction: bool = True,
                           progress: Callable[[int], None] | None = None):
    """NNCF INT8 of an ov.Model, calibrated on uint8 BGR crops; returns (model, settings)."""
    import nncf

    batches = [calibration[i:i + batch] for i in range(0, len(calibration), batch)]

    def transform(crops):
        if progress:
            progress(len(crops))
        return crops

    quantized = nncf.quantize(
        model, nncf.Dataset(batches, transform), model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED, subset_size=len(batches), fast_bias_correction=fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=_ignored_operations(model), validate=False))
    settings = {"method": "nncf-ptq", "model_type": "TRANSFORMER", "nncf_preset": "MIXED",
                "fast_bias_correction": fast_bias_correction, "smooth_quant": True,
                "calibration_crops": int(len(calibration)),
                "float_ops": "per NNCF TRANSFORMER (LayerNorm, GELU, Softmax, residual Add); MoAE gate and head"}
    return quantized, settings


def _ignored_operations(model) -> list[str]:
    """MatMuls of the MoAE gate, its expert-bias mix (g @ B) and the head: kept in float."""
    names = []
    for op in model.get_ops():
        name = op.get_friendly_name()
        if op.get_type_name() == "MatMul" and ("/gate/" in name or "/head/" in name or name.endswith("/mlp/MatMul")):
            names.append(name)
    return names

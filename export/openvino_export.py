"""OpenVINO IR (model.xml + model.bin): FP32, and INT8 through NNCF.

The IR is converted from the plain exported ONNX graph (not the ONNX Runtime
optimized one, whose com.microsoft operators OpenVINO does not read). Weights
are kept in FP32 (`compress_to_fp16=False`): parity first; the CPU plugin picks
its own inference precision.

INT8 uses NNCF post-training quantization with `model_type=TRANSFORMER` (keeps
LayerNorm, GELU, Softmax and residual Adds in float; DESIGN.md sec. 5 found it
far more faithful than the default), the MIXED preset, full bias correction,
and SmoothQuant (migrates activation outliers of CLIP's MLP inputs into the
weights). The MoAE gate and the head stay float like in the ONNX Runtime path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def convert_to_openvino(onnx_path: Path):
    """An ov.Model from the plain ONNX graph."""
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def quantize_openvino_int8(model, calibration: np.ndarray, batch: int = 8, smooth_quant_alpha: float | None = 0.15,
                           progress: Callable[[int], None] | None = None):
    """NNCF INT8 of an ov.Model, calibrated on uint8 BGR crops; returns (model, settings)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    batches = [calibration[i:i + batch] for i in range(0, len(calibration), batch)]

    def transform(crops):
        if progress:
            progress(len(crops))
        return crops

    ignored = _ignored_operations(model)
    advanced = AdvancedQuantizationParameters()
    if smooth_quant_alpha is not None:
        advanced = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=smooth_quant_alpha))
    else:
        advanced = AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))
    quantized = nncf.quantize(
        model, nncf.Dataset(batches, transform), model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED, subset_size=len(batches), fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False), advanced_parameters=advanced)
    settings = {"method": "nncf-ptq", "model_type": "TRANSFORMER", "preset": "MIXED",
                "fast_bias_correction": False, "smooth_quant_alpha": smooth_quant_alpha,
                "calibration_crops": int(len(calibration)), "float_ops": "per NNCF TRANSFORMER; MoAE gate and head"}
    return quantized, settings


def _ignored_operations(model) -> list[str]:
    """MatMuls of the MoAE gate and the head: kept in float."""
    names = []
    for op in model.get_ops():
        name = op.get_friendly_name()
        if op.get_type_name() == "MatMul" and ("/gate/" in name or "/head/" in name):
            names.append(name)
    return names

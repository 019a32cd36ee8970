"""gamma-edge export: a trained Gamma -> per-scene ONNX / OpenVINO graphs with a manifest.

Owns the deployable graph (graph.py), ONNX export (onnx_export.py), INT8 for ONNX Runtime
(quantize.py) and OpenVINO/NNCF (openvino_export.py), calibration and validation images
(calibration.py), parity against PyTorch (validate.py), the manifest writer (manifest.py)
and the pipeline with its table of writers, one per format and precision (pipeline.py).

    from export import export_model
    result = export_model("gamma.safetensors", "natural-int8", scene="natural", precision="int8")
    result.manifest["parity"]

Importing this package is cheap; torch, ONNX and OpenVINO load inside export_model.
"""
from __future__ import annotations

__all__ = ["export_model", "ExportResult"]


def __getattr__(name):
    if name in __all__:
        from export import pipeline
        return getattr(pipeline, name)
    raise AttributeError(name)

"""gamma-edge export: a trained Gamma -> per-scene ONNX / OpenVINO graphs with a manifest.

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

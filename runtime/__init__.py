"""gamma-edge runtime: torch-free scoring of images and streams with an exported Gamma model.

Imports only numpy and OpenCV here; onnxruntime / openvino load with the backend that
needs them. Never imports torch, open_clip or the gamma_edge / export / training packages.
"""
from .errors import RuntimeUserError
from .manifest import Manifest, load_manifest
from .scorer import ImageScore, Scorer

__all__ = ["ImageScore", "Manifest", "RuntimeUserError", "Scorer", "load_manifest"]

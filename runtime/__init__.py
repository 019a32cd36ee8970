"""gamma-edge runtime: torch-free scoring of images and streams with an exported Gamma model.

It owns what every stage shares and the bottom layer of the project, so export, training and
the benchmarks import these rules from here: image decoding (images), the preprocessing
contract (crops), the manifest reader (manifest), the CPU and every choice that depends on it
(hardware), the correlation metrics (metrics) and atomic file writes (atomic). Beside them:
the backends (ONNX Runtime, OpenVINO), the Scorer, the stream runner and the CLI commands
score, run, benchmark and info.

Imports only numpy and OpenCV here; onnxruntime / openvino load with the backend that
needs them. Never imports torch, open_clip or the gamma_edge / export / training packages.
"""
from contract.errors import UserError
from contract.manifest import Manifest, load_manifest
from runtime.inference.scorer import ImageScore, Scorer

__all__ = ["ImageScore", "Manifest", "UserError", "Scorer", "load_manifest"]

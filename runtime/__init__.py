"""gamma-edge runtime: torch-free scoring of images and streams with an exported Gamma model.

Its wings, each a package (docs/design.md sec. 2): inference (the Backend interface with its ONNX
Runtime and OpenVINO implementations, and the Scorer), dataset (listing what `gamma-edge score`
scores, and the resumable Ray engine with its Parquet table), live (one camera, video file or
stream scored as it plays), watch (one camera's conditions against its own normal), fleet (many
cameras, one model, one frame route), outputs (JSON lines, stderr, snapshots, MQTT, webhook and
Prometheus behind one interface), demo (`gamma-edge demo`'s tour and held-out evaluation) and commands
(the click commands score, run, benchmark, info and demo, which no library module imports);
shipped.py says where the files shipped inside the package are (the embedded demo models, the
sample images, the demo's card and photos). What every stage shares (errors, manifest,
preprocessing, images, hardware, correlation, atomic writes, video, degradations) is the contract
package, which the runtime imports and which imports nothing of it.

Importing `runtime` loads numpy and OpenCV only; onnxruntime / openvino load with the backend that
needs them. Never imports torch, open_clip or the gamma_edge / export / training packages.
"""
from contract.errors import UserError
from contract.manifest import Manifest, load_manifest
from runtime.inference.scorer import ImageScore, Scorer

__all__ = ["ImageScore", "Manifest", "UserError", "Scorer", "load_manifest"]

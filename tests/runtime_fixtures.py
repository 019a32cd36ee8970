"""Tiny contract-conforming models and small data for the runtime tests (torch-free).

The fake graph keeps the manifest's input/output contract and computes, per crop,

    scores[n, s] = sum_c mean_hw(crop[n, h, w, c] * ramp[h, w]) * weights[c, s] / 255

so a score depends on which pixels a crop holds and where, and `reference_scores`
reproduces it exactly in numpy.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

SIZE = 224
SCENE_WEIGHTS = {"natural": (0.2, 0.5, 0.3), "aigc": (0.6, 0.1, 0.3), "aesthetics": (0.1, 0.1, 0.8)}


def ramp(size: int = SIZE) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return (0.5 + (ys + 2 * xs) / (3 * size)).astype(np.float32)[:, :, None]


def weights(scenes) -> np.ndarray:
    return np.array([SCENE_WEIGHTS[s] for s in scenes], dtype=np.float32).T   # (3, S)


def reference_scores(crops: np.ndarray, scenes=("natural",)) -> np.ndarray:
    """numpy twin of the fake graph: (N, 224, 224, 3) uint8 -> (N, S) float64."""
    weighted = crops.astype(np.float64) * ramp(crops.shape[1]).astype(np.float64)
    return weighted.mean(axis=(1, 2)) @ weights(scenes).astype(np.float64) / 255.0


def build_graph(scenes=("natural",), batch="dynamic", size: int = SIZE, input_name="crops", output_name="scores"):
    from onnx import TensorProto, helper, numpy_helper

    dim0 = "N" if batch == "dynamic" else int(batch)
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "ramp"], ["xr"]),
        helper.make_node("ReduceMean", ["xr", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["raw"]),
        helper.make_node("Mul", ["raw", "inv255"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "fake_gamma",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, [dim0, size, size, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [dim0, len(scenes)])],
        initializer=[numpy_helper.from_array(ramp(size), "ramp"),
                     numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
                     numpy_helper.from_array(weights(scenes), "w"),
                     numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "inv255")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="runtime-tests")
    model.ir_version = 9
    return model


def manifest_for(scenes, kind="onnx", file="model.onnx", batch="dynamic", default_crops="five",
                 max_long_side=512, min_short_side=224, precision="fp32") -> dict:
    return {
        "format": "gamma-edge.manifest",
        "format_version": 1,
        "model": {"kind": kind, "file": file, "precision": precision, "sha256": "0" * 64},
        "input": {"name": "crops", "layout": "NHWC", "dtype": "uint8", "channel_order": "BGR",
                  "height": SIZE, "width": SIZE, "batch": batch},
        "output": {"name": "scores", "dtype": "float32", "shape": ["N", "S"]},
        "scenes": [{"name": s, "prompts": [f"{s} {lv} image" for lv in ("bad", "poor", "fair", "good", "perfect")]}
                   for s in scenes],
        "levels": [0.2, 0.4, 0.6, 0.8, 1.0],
        "preprocess": {"resize": {"max_long_side": max_long_side, "min_short_side": min_short_side},
                       "crop_size": SIZE, "default_crops": default_crops},
        "checkpoint": {"sha256": "0" * 64, "name": "fake.safetensors", "backbone": "fake", "prompts": "sdp"},
        "tools": {"gamma_edge": "test"},
        "parity": {},
        "created": "2026-01-01T00:00:00Z",
    }


def make_model(folder, scenes=("natural",), kind="onnx", batch="dynamic", default_crops="five",
               embed=True, **manifest_options) -> Path:
    """Write a fake exported model folder (graph + manifest.json) and return it."""
    import onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    file = "model.onnx" if kind == "onnx" else "model.xml"
    manifest = manifest_for(list(scenes), kind, file, batch, default_crops, **manifest_options)
    graph = build_graph(scenes, batch)
    if embed:
        onnx.helper.set_model_props(graph, {"gamma_edge.manifest": json.dumps(manifest)})
    if kind == "onnx":
        onnx.save(graph, folder / "model.onnx")
    else:
        import openvino as ov

        onnx.save(graph, folder / "tmp.onnx")
        converted = ov.convert_model(str(folder / "tmp.onnx"))
        (folder / "tmp.onnx").unlink()
        if embed:
            converted.set_rt_info(json.dumps(manifest), "gamma_edge_manifest")
        ov.save_model(converted, str(folder / "model.xml"), compress_to_fp16=False)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR photo stand-in with structure at every scale, so crops differ from each other."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-20, 21, (height, width, 3))
    return np.clip(image.astype(np.int32) + noise, 0, 255).astype(np.uint8)


def write_video(path, frames: int = 30, fps: float = 30.0, size=(320, 240), seed: int = 0, fourcc=None) -> Path:
    """A short video whose frames differ (a moving textured image), written with OpenCV."""
    path = Path(path)
    from contract.video import open_video_writer

    writer = open_video_writer(path, fps, size, codec=fourcc)
    width, height = size
    base = textured_image(height, width * 2, seed)
    for i in range(frames):
        shift = (i * 4) % width
        writer.write(np.ascontiguousarray(base[:, shift:shift + width]))
    writer.release()
    return path


class FakeCapture:
    """A cv2.VideoCapture double: serves the given frames, then read() fails like a dropped stream.
    `on_read(count)` runs before each read (a test hook, e.g. to send a signal)."""

    def __init__(self, frames, fps: float = 30.0, delay: float = 0.0, on_read=None, opened: bool = True):
        self.frames, self.fps, self.delay, self.on_read = list(frames), fps, delay, on_read
        self.opened, self.served = opened, 0

    def isOpened(self):  # noqa: N802 - cv2's name
        return self.opened

    def read(self):
        if self.on_read is not None:
            self.on_read(self.served)
        if self.delay:
            import time
            time.sleep(self.delay)
        if not self.opened or self.served >= len(self.frames):
            return False, None
        frame = self.frames[self.served]
        self.served += 1
        return True, frame

    def get(self, prop):
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT) and self.frames:
            height, width = self.frames[0].shape[:2]
            return float(width if prop == cv2.CAP_PROP_FRAME_WIDTH else height)
        return 0.0

    def set(self, prop, value):
        return False

    def release(self):
        self.opened = False


class CaptureSequence:
    """A capture factory handing out the given captures in turn (None: the source is unreachable);
    once they run out it calls `when_exhausted` (e.g. stop.set) and reports the source unreachable."""

    def __init__(self, captures, when_exhausted=None):
        self.captures, self.when_exhausted, self.calls = list(captures), when_exhausted, 0

    def __call__(self, source):
        self.calls += 1
        if self.captures:
            return self.captures.pop(0)
        if self.when_exhausted is not None:
            self.when_exhausted()
        return None

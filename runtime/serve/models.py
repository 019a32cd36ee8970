"""A model as the server offers it: its protocol metadata, inference on crop tensors or on encoded
images, and the plain scoring of uploaded images.

Encoded images are decoded and cropped exactly as `gamma-edge score` does (contract.images.read_image,
then the manifest's resize and crops), in a pool of decode threads so the event loop never decodes.
Their crops then go to the model's engine: the local server's DynamicBatcher, or the Ray Serve
deployment's @serve.batch method; both take (N, H, W, 3) uint8 crops and give back (N, S) scores.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from contract.errors import UserError
from contract.images import read_image
from contract.preprocess import crop_offsets, cut_crops, resize_for_crops
from runtime.inference.scorer import Scorer, mean_per_image, upscale_warning
from runtime.serve.protocol import InferRequest, RequestRefused

VERSION = "1"
PLATFORMS = {"onnx": "onnxruntime_onnx", "openvino": "openvino"}
Engine = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclass
class Prepared:
    """An image decoded and cut as the model sees it, and what the client is told about that."""

    crops: np.ndarray
    warning: str | None
    resized: tuple[int, int]                    # (width, height) the crops were cut from
    boxes: list[list[int]]                      # [x, y, width, height] per crop, in the resized image


@dataclass
class ImageResult:
    name: str
    scores: dict[str, float] | None = None
    prepared: Prepared | None = None
    error: str | None = None

    def as_json(self, scene: str) -> dict:
        record = {"name": self.name}
        if self.error is not None:
            record["error"] = self.error
            return record
        prepared = self.prepared
        record.update(score=self.scores[scene], scores=self.scores,
                      crops={"count": len(prepared.boxes), "resized": list(prepared.resized),
                             "boxes": prepared.boxes},
                      warning=prepared.warning)
        return record


def model_name(path: Path | None, given: str | None) -> str:
    """The name clients use: --name, else the model's folder (for a Triton repository's version
    folder `repo/natural/1`, the model folder's name)."""
    if given:
        return given
    if path is None:
        return "demo"
    path = Path(path).resolve()
    folder = path if path.is_dir() else path.parent
    if folder.name.isdigit() and (folder.parent / "config.pbtxt").is_file():
        folder = folder.parent
    return folder.name


class ServedModel:
    """One exported model behind the protocol. `engine` scores crops; `decoder` decodes images."""

    def __init__(self, name: str, scorer: Scorer, engine: Engine, decoder: Executor):
        self.name, self.scorer, self.engine, self.decoder = name, scorer, engine, decoder
        manifest = scorer.manifest
        self.input_name, self.output_name = manifest.input_name, manifest.output_name
        self.size = manifest.crop_size
        self.preprocess = scorer.preprocess

    def metadata(self) -> dict:
        """GET /v2/models/{name}: the graph's own input and output. Encoded images go to the same
        input as BYTES [N] (as OpenVINO Model Server takes them); `parameters` says how they are cut."""
        manifest = self.scorer.manifest
        return {"name": self.name, "versions": [VERSION], "platform": PLATFORMS[manifest.model_kind],
                "inputs": [{"name": self.input_name, "datatype": "UINT8", "shape": [-1, self.size, self.size, 3]}],
                "outputs": [{"name": self.output_name, "datatype": "FP32", "shape": [-1, len(self.scorer.scenes)]}],
                "parameters": {"scenes": ",".join(self.scorer.scenes), "crops": self.preprocess.crops,
                               "crops_per_image": self.preprocess.crops_per_image,
                               "encoded_images": f"BYTES [N] on input '{self.input_name}': one score row per image",
                               "precision": manifest.precision}}

    async def infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict]:
        """The protocol's infer: uint8 crops -> one row per crop; BYTES images -> one row per image
        (the mean over its crops, as `gamma-edge score` gives). Returns (outputs, response parameters)."""
        tensor = self._only_input(request)
        if tensor.datatype == "BYTES":
            if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1) \
                    or not tensor.shape[0]:
                raise RequestRefused(400, f"encoded images on input '{self.input_name}' must have shape [N] or "
                                          f"[N, 1] with N >= 1, not {tensor.shape}")
            results = await self.score_images([(f"image {i}", data) for i, data in enumerate(tensor.data)])
            failed = next((result for result in results if result.error), None)
            if failed is not None:
                raise RequestRefused(400, f"{failed.name} of {len(results)}: {failed.error}")
            scores = np.array([[r.scores[s] for s in self.scorer.scenes] for r in results], dtype=np.float32)
            warnings = [f"{r.name}: {r.prepared.warning}" for r in results if r.prepared.warning]
            return {self.output_name: scores}, ({"warnings": "; ".join(warnings)} if warnings else {})
        expected = [self.size, self.size, 3]
        if tensor.datatype != "UINT8" or len(tensor.shape) != 4 or tensor.shape[1:] != expected \
                or not tensor.shape[0]:
            raise RequestRefused(400, f"input '{self.input_name}' takes UINT8 crops [N, {self.size}, {self.size}, 3] "
                                      f"(BGR, as OpenCV reads them) or BYTES [N] encoded images, "
                                      f"not {tensor.datatype} {tensor.shape}")
        crops = np.asarray(tensor.data).reshape(tensor.shape)
        step = max(1, self.scorer.batch)
        parts = await asyncio.gather(*(self.engine(crops[i:i + step]) for i in range(0, len(crops), step)))
        return {self.output_name: np.concatenate(parts).astype(np.float32, copy=False)}, {}

    def _only_input(self, request: InferRequest):
        if len(request.inputs) != 1 or request.inputs[0].name != self.input_name:
            names = [tensor.name for tensor in request.inputs]
            raise RequestRefused(400, f"model '{self.name}' takes one input, '{self.input_name}', not {names}")
        return request.inputs[0]

    async def score_images(self, images: list[tuple[str, bytes]]) -> list[ImageResult]:
        """Each (name, encoded bytes) decoded, cropped and scored; a bad image gets its error, the rest go on."""
        loop = asyncio.get_running_loop()

        async def one(name: str, data: bytes) -> ImageResult:
            try:
                prepared = await loop.run_in_executor(self.decoder, self.prepare, data, name)
            except UserError as exc:
                return ImageResult(name, error=str(exc))
            crop_scores = await self.engine(prepared.crops)
            means = mean_per_image(crop_scores, [len(prepared.crops)])[0]
            return ImageResult(name, {s: float(v) for s, v in zip(self.scorer.scenes, means)}, prepared)

        return list(await asyncio.gather(*(one(name, data) for name, data in images)))

    def prepare(self, data: bytes, name: str) -> Prepared:
        """What Scorer.prepare does (the same calls, in the same order), keeping where the crops were cut."""
        p = self.preprocess
        decoded = read_image(data, name, shrink_to=p.max_long_side, max_pixels=self.scorer.max_pixels)
        resized = resize_for_crops(decoded, p.max_long_side, p.min_short_side, p.crop_size)
        height, width = resized.shape[:2]
        boxes = [[x, y, p.crop_size, p.crop_size] for y, x in crop_offsets(height, width, p.crop_size, p.crops, p.seed)]
        return Prepared(cut_crops(resized, p.crops, p.crop_size, p.seed), upscale_warning(decoded.shape[:2], p),
                        (width, height), boxes)

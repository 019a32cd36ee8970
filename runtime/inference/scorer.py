"""Scorer: image(s) in, Gamma scores out, with no torch anywhere.

An image's score is the mean of its crops' scores (paper, evaluation protocol). While
the backend scores one batch, a small thread pool decodes and crops the next images
(OpenCV releases the GIL), so end-to-end speed stays close to the backend's own.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from runtime.inference.backends import Backend, load_backend
from contract.preprocess import Preprocess
from contract.errors import UserError
from runtime.shipped import DEMO_MODEL
from contract.images import DEFAULT_MAX_PIXELS, read_image
from contract.manifest import Manifest, load_manifest, scene_index

DEFAULT_BATCH = 16


def resolve_model(model: str | Path | None) -> Path:
    """The model to load: the one given, else the embedded demo model."""
    if model is not None:
        return Path(model)
    if (DEMO_MODEL / "manifest.json").is_file():
        return DEMO_MODEL
    raise UserError(
        f"no model was given and the embedded demo model is not installed ({DEMO_MODEL}); "
        f"pass --model with an exported model folder")


@dataclass
class ImageScore:
    """The outcome for one image: its scores per scene, or the error that stopped it."""

    source: str
    scene: str
    scores: dict[str, float] | None = None
    error: str | None = None
    crops: int = 0
    warning: str | None = None       # scored, but the score means little (e.g. a tiny image upscaled)
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def score(self) -> float | None:
        return None if self.scores is None else self.scores[self.scene]


class Scorer:
    """Score images with an exported Gamma model.

        scorer = Scorer("exported/natural", crops="five")
        scorer.score("photo.jpg")                  # -> 0.71
        scorer.scores_all_scenes(open("a.png", "rb").read())
        for row in scorer.score_many(paths): print(row.source, row.score, row.error)
    """

    def __init__(self, model: str | Path | None = None, *, backend: str = "auto", device: str = "auto",
                 crops: str | None = None, seed: int = 0, threads: int | None = None,
                 batch: int | None = None, precision: str = "auto", scene: str | None = None,
                 workers: int = 2, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.manifest: Manifest = load_manifest(resolve_model(model))
        self.scenes = self.manifest.scenes
        self.scene = self._check_scene(scene) if scene else self.scenes[0]
        self.preprocess = Preprocess.from_manifest(self.manifest, crops, seed)
        if batch is not None and batch < 1:
            raise UserError(f"--batch must be at least 1 crop, not {batch}")
        self.batch = batch or DEFAULT_BATCH
        if workers < 1:
            raise UserError(f"workers must be at least 1, not {workers}")
        self.workers = workers
        if max_pixels is not None and max_pixels < 1:
            raise UserError(f"--max-pixels must be at least 1, not {max_pixels}")
        self.max_pixels = max_pixels
        self.backend: Backend = load_backend(self.manifest, backend, device, threads, precision)

    @property
    def crops(self) -> str:
        return self.preprocess.crops

    def describe(self) -> str:
        return (f"{self.backend.describe()}; scenes {', '.join(self.scenes)}; "
                f"crops {self.crops} ({self.preprocess.crops_per_image} per image)")

    def _check_scene(self, scene: str) -> str:
        scene_index(self.scenes, scene)
        return scene

    # -- one image -------------------------------------------------------------------------
    def crops_of(self, image, name: str | None = None) -> np.ndarray:
        """Decode (path, bytes or BGR array) and cut the crops the model sees."""
        return self.prepare(image, name)[0]

    def prepare(self, image, name: str | None = None) -> tuple[np.ndarray, str | None]:
        """(crops, warning): the crops the model sees, and a sentence when their score means little."""
        decoded = read_image(image, name, shrink_to=self.preprocess.max_long_side, max_pixels=self.max_pixels)
        return self.preprocess(decoded), upscale_warning(decoded.shape[:2], self.preprocess)

    def score_crops(self, crops: np.ndarray) -> np.ndarray:
        """(K, H, W, 3) crops of ONE image -> its (S,) scores, the mean over crops (in float64,
        the same sum score_many makes, so both give identical numbers)."""
        return mean_per_image(self.backend.run(crops), [len(crops)])[0]

    def scores_all_scenes(self, image) -> dict[str, float]:
        """Every scene's score of one image (one vision pass serves them all)."""
        values = self.score_crops(self.crops_of(image))
        return {scene: float(value) for scene, value in zip(self.scenes, values)}

    def score(self, image, scene: str | None = None) -> float:
        """The score of one image for `scene` (default: the model's first scene)."""
        scene = self._check_scene(scene) if scene else self.scene
        return self.scores_all_scenes(image)[scene]

    # -- many images -----------------------------------------------------------------------
    def score_many(self, images: Iterable, scene: str | None = None) -> Iterator[ImageScore]:
        """Score images (paths, bytes or arrays) in order; crops of several images share one
        backend call (up to `batch` crops, never splitting an image); an image that fails
        yields its error and the rest go on."""
        scene = self._check_scene(scene) if scene else self.scene
        per_image = self.preprocess.crops_per_image
        ahead = max(4 * self.workers, 2 * max(1, self.batch // per_image))
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gamma-decode", initializer=yield_to_inference)
        inflight: deque = deque()
        pending: list[tuple[ImageScore, np.ndarray | None]] = []
        pending_crops = 0
        images = iter(enumerate(images))

        def prepare(index, image):
            name = _name_of(image, index)
            try:
                return name, *self.prepare(image, name), None
            except UserError as exc:
                return name, None, None, str(exc)

        def flush():
            nonlocal pending, pending_crops
            batches = [crops for _, crops in pending if crops is not None]
            scores = self.backend.run(np.concatenate(batches)) if batches else None
            means = iter(mean_per_image(scores, [len(crops) for crops in batches]) if batches else ())
            for row, crops in pending:
                if crops is not None:
                    row.scores = {name: float(v) for name, v in zip(self.scenes, next(means))}
                yield row
            pending, pending_crops = [], 0

        try:
            while True:
                while len(inflight) < ahead:
                    item = next(images, None)
                    if item is None:
                        break
                    inflight.append(pool.submit(prepare, *item))
                if not inflight:
                    break
                name, crops, warning, error = inflight.popleft().result()
                count = 0 if crops is None else len(crops)
                if pending_crops and pending_crops + count > self.batch:
                    yield from flush()
                pending.append((ImageScore(name, scene, error=error, crops=count, warning=warning), crops))
                pending_crops += count
            yield from flush()
        finally:
            for future in inflight:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def upscale_warning(shape: tuple[int, int], preprocess: Preprocess) -> str | None:
    """An image whose short side, at the scale the model sees it (long side fitted to max_long_side),
    is below the crop is enlarged to fill the crop: its score rates the enlargement's blur more than
    the picture, so the user is told."""
    height, width = shape
    fit = min(1.0, preprocess.max_long_side / max(height, width)) if preprocess.max_long_side else 1.0
    short_side = min(height, width) * fit
    if short_side >= preprocess.crop_size:
        return None
    return (f"{width}x{height} pixels: enlarged {preprocess.crop_size / short_side:.1f}x to fill the "
            f"{preprocess.crop_size}-pixel crop, so its score says little about the picture")


def mean_per_image(scores: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """A backend call's (N, S) crop scores -> each image's (S,) scores, `counts` crops each in order:
    the mean over its crops (the paper's protocol), summed in float64 wherever images are batched."""
    means, start = [], 0
    for count in counts:
        means.append(scores[start:start + count].mean(axis=0, dtype=np.float64))
        start += count
    return means


def yield_to_inference(niceness: int = 10) -> None:
    """Lower the calling thread's CPU priority by `niceness` below the process's (Linux: nice is per
    thread; relative, so a process already niced, e.g. a Ray worker at +15, keeps its decode threads
    that far below its inference threads). Decoding ahead must fill the gaps of inference, not preempt
    its threads: with as many inference threads as cores, one preempted thread stalls every parallel op
    at its barrier."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            base = os.getpriority(os.PRIO_PROCESS, os.getpid())
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, base + niceness))
        except OSError:
            pass


def _name_of(image, index: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"image {index}"

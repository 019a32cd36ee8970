"""What the network is fed: each sample decoded and resized as the runtime does
(contract.images, contract.preprocess), as a random training crop (TrainingImages) or as
the crops of every evaluation protocol (EvaluationImages), in an epoch order that is a pure
function of (seed, epoch) so that a resumed run draws exactly what an uninterrupted one would
(EpochOrder, grouped_permutation).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from contract.preprocess import CROPS_PER_IMAGE, cut_crops, resize_for_crops, scale_to_short_side
from training.datasets import Sample


def read_image(path: str, shrink_to: int | None = None) -> np.ndarray | None:
    """HxWx3 uint8 RGB decoded as the runtime decodes (contract.images: EXIF orientation, alpha on white,
    16-bit high byte), or None if the file cannot be decoded. `shrink_to`: the long side it will be
    shrunk to, which lets a large JPEG decode at reduced scale exactly as the runtime does."""
    from contract.errors import UserError
    from contract.images import read_image as decode

    try:
        image = decode(path, shrink_to=shrink_to)
    except UserError:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def prepare_for_crops(path: str, crop_size: int, long_side: int | None, short_side: int | None) -> np.ndarray | None:
    """Decode and resize one image as its dataset is configured (short side first, for the datasets the
    authors pre-resized), then by the runtime's rule (contract.preprocess); None if it cannot be decoded."""
    image = read_image(path, shrink_to=None if short_side else long_side)
    if image is None:
        return None
    if short_side:
        image = scale_to_short_side(image, short_side)
    return resize_for_crops(image, long_side, None, crop_size)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 (or KxHxWx3) uint8 -> float [0, 1], channels first."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    return tensor.movedim(-1, -3).float().div_(255)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The crop/flip seed of one sample in one epoch: a pure function, so a resumed
    run draws exactly the crops an uninterrupted run would have drawn."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class TrainingImages(torch.utils.data.Dataset):
    """Mixed training samples of several datasets (concatenated, paper Sec. 4.1).

    Indexed by (index, seed) pairs from `EpochOrder`: a random crop_size crop and a
    horizontal flip drawn from that seed. An image smaller than the crop is enlarged
    first. An unreadable image yields a zero image with valid=False, which the loss
    ignores and the training log reports.
    """

    def __init__(self, samples: Sequence[Sample], crop_size: int = 224, hflip: bool = True):
        self.samples = list(samples)
        self.crop_size = crop_size
        self.hflip = hflip

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key
        sample = self.samples[index]
        c = self.crop_size
        image = prepare_for_crops(sample.path, c, sample.resize_long_side, sample.resize_short_side)
        valid = image is not None
        if valid:
            rng = np.random.default_rng(seed)
            h, w = image.shape[:2]
            y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            image = image[y:y + c, x:x + c]
            if self.hflip and rng.random() < 0.5:
                image = image[:, ::-1]
            tensor = to_tensor(image)
        else:
            tensor = torch.zeros(3, c, c)
        return {"image": tensor, "target": torch.tensor(sample.target, dtype=torch.float32),
                "scene": sample.scene, "dataset": sample.dataset, "path": sample.path, "group": sample.group,
                "valid": torch.tensor(valid)}


class EpochOrder(torch.utils.data.Sampler):
    """The sample order of one epoch: a pure function of (seed, epoch) and this rank.

    Uses DistributedSampler's shuffle (seed + epoch, rank::world), so one process and
    N DDP processes draw from the same permutation; `start` skips the samples a killed
    run already trained on. Yields (index, per-sample seed) pairs for TrainingImages.

    With `groups` (one key per sample) and `group_size` >= 2 the permutation is made of runs of
    `group_size` samples of one group (versions of one photo, for the ranking loss), the runs
    shuffled; each process takes a contiguous slice of N // world samples.
    """

    def __init__(self, size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0,
                 groups: Sequence[str] | None = None, group_size: int = 0):
        from torch.utils.data.distributed import DistributedSampler

        self.seed, self.epoch, self.start = seed, epoch, start
        if groups is not None and group_size >= 2:
            if len(groups) != size:
                raise ValueError(f"{len(groups)} group keys for {size} samples")
            order = grouped_permutation(groups, group_size, seed, epoch)
            share = size // world
            self.indices = order[rank * share:(rank + 1) * share]
        else:
            sampler = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            self.indices = list(sampler)

    def __len__(self):
        return len(self.indices) - self.start

    def __iter__(self):
        for position, index in enumerate(self.indices):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, index)


def grouped_permutation(groups: Sequence[str], group_size: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(len(groups)) in runs of up to `group_size` indices of one group
    (a group's members shuffled, cut into runs, the runs shuffled); "" is a group of its own per
    sample. A pure function of (groups, group_size, seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 0x6770])
    members: dict[str, list[int]] = {}
    runs = []
    for index, group in enumerate(groups):
        if group:
            members.setdefault(group, []).append(index)
        else:
            runs.append([index])
    for group in sorted(members):
        shuffled = rng.permutation(members[group]).tolist()
        runs += [shuffled[k:k + group_size] for k in range(0, len(shuffled), group_size)]
    return [index for r in rng.permutation(len(runs)) for index in runs[r]]


class EvaluationImages(torch.utils.data.Dataset):
    """Each image as the crops of every requested protocol: {protocol: (K, 3, c, c)}."""

    def __init__(self, samples: Sequence[Sample], protocols: Sequence[str], crop_size: int = 224,
                 seed: int = 0, max_long_side: int | None = None):
        self.samples = list(samples)
        self.protocols = list(protocols)
        self.crop_size, self.seed, self.max_long_side = crop_size, seed, max_long_side

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        c = self.crop_size
        long_side = min(filter(None, (sample.resize_long_side, self.max_long_side)), default=None)
        image = prepare_for_crops(sample.path, c, long_side, sample.resize_short_side)
        out = {"index": index, "valid": torch.tensor(image is not None), "path": sample.path}
        for protocol in self.protocols:
            if image is None:
                out[protocol] = torch.zeros(CROPS_PER_IMAGE[protocol], 3, c, c)
            else:
                out[protocol] = to_tensor(cut_crops(image, protocol, c, self.seed))
        return out

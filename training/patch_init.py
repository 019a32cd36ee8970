"""A fixed patch embedding for backbones trained from scratch: colour means + luma DCT basis.

A random, trainable patch convolution learns exposure, contrast and blur from a few photos but
not noise: noise moves a random linear projection of a patch by a zero-mean amount, so the
first-order gradient that could discover a noise detector averages out. A bank of 2-D DCT
basis functions over the patch's luma (scaled so that pixel noise gives responses of order 1,
where the MLP's non-linearity can turn them into energy), frozen, gives the tower those
frequency channels from the start. Used by the embedded demo model (`patch_embedding: "dct"`,
docs/training.md); a pretrained CLIP keeps its own patch embedding.
"""
from __future__ import annotations

import math

import torch

from contract.errors import UserError

# Frequencies (cycles per 64 pixels, DCT-II index) for a 32-pixel patch; scaled to other patch sizes.
FREQUENCIES_32 = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 28, 31)
LUMA = (0.299, 0.587, 0.114)
CHROMA = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))     # BT.601 CB and CR axes
SCALE = 16.0        # luma DCT channels: pixel noise of a few grey levels gives responses of order 1
MEAN_SCALE = 4.0    # colour means: large enough that a contrast change shows next to the DCT energy


def dct_patch_bank(out_channels: int, kernel: int, seed: int = 0, chroma: int = 0) -> torch.Tensor:
    """(out_channels, 3, kernel, kernel) weights: 3 per-channel means (x MEAN_SCALE), then `chroma` DCT basis
    functions over the two colour-difference axes (CB, CR, alternating; grey gives them nothing), then luma
    DCT basis functions, at frequency pairs drawn (seeded) from a spread over low, mid and high frequencies.
    chroma 0 is the bank of `--patch-embedding dct`; `dct-chroma` gives colour noise channels of its own."""
    freqs = sorted({max(1, min(kernel - 1, round(f * kernel / 32))) for f in FREQUENCIES_32})
    pairs = [(u, v) for u in freqs for v in freqs]
    if out_channels - 3 - chroma > len(pairs) or chroma > len(pairs):
        raise UserError(f"patch_embedding 'dct' has {len(pairs)} frequency pairs for {kernel}-pixel patches, "
                             f"fewer than the tower's {out_channels - 3} non-colour channels; use 'random'")
    n = torch.arange(kernel, dtype=torch.float64)

    def basis(u: int) -> torch.Tensor:
        return torch.cos(math.pi * (n + 0.5) * u / kernel) * math.sqrt(2 / kernel)

    weight = torch.zeros(out_channels, 3, kernel, kernel, dtype=torch.float64)
    for c in range(3):
        weight[c, c] = MEAN_SCALE / kernel ** 2
    luma = torch.tensor(LUMA, dtype=torch.float64).view(3, 1, 1)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:out_channels - 3 - chroma]
    for o, index in enumerate(order.tolist(), start=3 + chroma):
        u, v = pairs[index]
        weight[o] = SCALE * luma * torch.outer(basis(u), basis(v))
    colour = [torch.tensor(axis, dtype=torch.float64).view(3, 1, 1) for axis in CHROMA]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed + 1))[:chroma]
    for o, index in enumerate(order.tolist()):
        u, v = pairs[index]
        weight[3 + o] = SCALE * colour[o % 2] * torch.outer(basis(u), basis(v))
    return weight.float()


# Channels of the `dct-chroma` bank given to colour differences (the rest stay luma).
CHROMA_CHANNELS = 16

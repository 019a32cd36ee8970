"""The paper's training recipe in pieces (Sec. 3.3, 4.1): the model as it trains, Adam over the
trainable parameters only with a cosine schedule per iteration, the loss (MSE, and the optional
pairwise ranking term), and model selection by mean SRCC."""
from __future__ import annotations

import hashlib
import math

import torch

from training.settings import TrainingSettings


def build_model(settings: TrainingSettings, seed: int):
    """A run's starting model: the factory's, with the backbone trainable and a fixed patch bank
    where the settings ask for them."""
    from gamma_edge.factory import create_model

    model = create_model(settings.model, prompts=settings.prompts, scene_files=settings.scenes_files,
                         init_backbone=settings.init_backbone, seed=seed)
    if settings.train_backbone:
        model.set_trainable(backbone=True)
    if settings.patch_embedding != "random":      # fixed frequency bank, frozen (training/patch_init.py)
        from training.patch_init import CHROMA_CHANNELS, dct_patch_bank
        conv = model.clip.visual.conv1
        chroma = CHROMA_CHANNELS if settings.patch_embedding == "dct-chroma" else 0
        with torch.no_grad():
            conv.weight.copy_(dct_patch_bank(conv.out_channels, conv.kernel_size[0], chroma=chroma))
        conv.requires_grad_(False)
    return model


def frozen_fingerprint(model) -> str:
    """sha256 of every frozen tensor: proves a resumed run rebuilt the same backbone."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def optimizer_and_schedule(parameters: list, settings: TrainingSettings, total_steps: int):
    """Adam over `parameters`, and its learning rate per step: cosine (after a linear warm-up) down to
    min_lr, or constant."""
    optimizer = torch.optim.Adam(parameters, lr=settings.lr, betas=tuple(settings.betas),
                                 weight_decay=settings.weight_decay, fused=fused_adam_applies(parameters))
    min_ratio = settings.min_lr / settings.lr if settings.lr else 0.0
    if settings.schedule == "cosine":
        schedule = lambda step: cosine_factor(step, total_steps, settings.warmup_steps, min_ratio)  # noqa: E731
    else:
        schedule = lambda step: 1.0  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def fused_adam_applies(parameters: list) -> bool:
    """Adam's fused kernel updates each tensor in one pass instead of the default loop's ten or so:
    for ViT-B/16's 123M trainable weights it took 2.6-7 s against 10-19 s per step on 2 CPU threads
    (docs/training.md), with the same parameters to float rounding. It exists for float tensors on
    CPU and CUDA; anything else keeps the default."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)


def cosine_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def rank_loss(predicted: torch.Tensor, target: torch.Tensor, groups: list[str], valid: torch.Tensor) -> torch.Tensor:
    """Pairwise order within a photo: over each pair of readable versions of one photo (same
    non-empty group) with target_i > target_j, relu((target_i - target_j) - (predicted_i - predicted_j)):
    the better version must score higher by at least the targets' gap. Mean over the batch's pairs
    (0 when it has none). MSE alone fits each photo's absolute level; this term asks for the order
    within a photo, which is what ranking a photo's versions (and the pristine-vs-degraded pairs) needs."""
    codes = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    group = torch.tensor([codes[g] if g else -1 - k for k, g in enumerate(groups)], device=predicted.device)
    same = (group[:, None] == group[None, :]) & valid[:, None] & valid[None, :]
    gap = target[:, None] - target[None, :]
    pairs = same & (gap > 1e-6)
    shortfall = torch.relu(gap - (predicted[:, None] - predicted[None, :]))
    return (shortfall * pairs).sum() / pairs.sum().clamp(min=1)


def key_metric(results: dict, protocol: str) -> float:
    """Model selection: mean SRCC over the evaluated datasets under the first protocol."""
    values = [by[protocol]["srcc"] for by in results.values() if by[protocol]["images"] > 0]
    return float(sum(values) / len(values)) if values else float("nan")

"""create_model: the one way a Gamma is made (training, conversion, export, benchmarks).

Apart from model.py as open_clip keeps its factory apart from its model: the factory
reads checkpoints, scene files and backbone weights, and those readers build models
themselves, so the model module stays free of them.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from gamma_edge.checkpoint import load_checkpoint, load_tensor_file
from gamma_edge.model import Gamma, GammaConfig
from gamma_edge.scenes import Scene, default_scenes, load_scene_file, merge_scenes


def create_model(config: "str | GammaConfig" = "gamma-vit-b-16", *, checkpoint: str | Path | None = None,
                 prompts: str | None = None, scenes: Sequence[Scene] | None = None,
                 scene_files: Sequence[str | Path] = (), init_backbone: str | Path | None = None,
                 seed: int | None = None) -> Gamma:
    """A Gamma, as open_clip's create_model makes a CLIP: from a stored checkpoint, or from a
    named config / GammaConfig with its scenes (the shipped ones plus `scene_files`), an
    OpenAI-format backbone to start from, and a seed for the random initialisation."""
    if checkpoint is not None:
        return load_checkpoint(checkpoint, scenes=list(scenes) if scenes else None)
    config = GammaConfig.from_name(config) if isinstance(config, str) else copy.deepcopy(config)
    if prompts is not None:
        config.prompts = prompts
    if scenes is None:
        scenes = _scenes_with_files(scene_files)
    backbone_state = load_tensor_file(init_backbone) if init_backbone else None
    if seed is not None:
        torch.manual_seed(seed)          # the random initialisation is part of a run's identity
    return Gamma(config, scenes=scenes, backbone_state=backbone_state)


def _scenes_with_files(scene_files: Sequence[str | Path]) -> list[Scene]:
    """The shipped scenes, then each scene file's (a same-named scene replaces the earlier one)."""
    scenes = default_scenes()
    for path in scene_files:
        scenes = merge_scenes(scenes, load_scene_file(path))
    return scenes

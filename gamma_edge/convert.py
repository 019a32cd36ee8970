"""Import the official Gamma release (zht8506/Gamma) into a gamma-edge checkpoint.

The release is a torch pickle {'params': {...}} of plain tensors:
  clip_model.*                                   OpenAI CLIP keys, with in MoAE blocks
    mlp.useful_experts.{c_fc,c_proj}             -> mlp.shared_expert.*
    mlp.experts.expert_{i}.{c_fc,c_proj}         -> mlp.adaptive_experts.{i}.*
    mlp.gating.layer1                            -> mlp.gate
    mlp.scale                                    -> mlp.scale
  adapter.fc.0.weight, adapter.fc.2.weight       -> head.adapter.{0,2}.weight
  score_level                                    -> head.levels
It is read with torch.load(weights_only=True): nothing in the file is executed.
The authors' weights are licensed CC BY-NC-SA 4.0 (non-commercial).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from contract.errors import UserError

_RENAMES = (
    (re.compile(r"\.mlp\.useful_experts\."), ".mlp.shared_expert."),
    (re.compile(r"\.mlp\.experts\.expert_(\d+)\."), r".mlp.adaptive_experts.\1."),
    (re.compile(r"\.mlp\.gating\.layer1\."), ".mlp.gate."),
)
_HEAD_KEYS = {"adapter.fc.0.weight": "head.adapter.0.weight",
              "adapter.fc.2.weight": "head.adapter.2.weight",
              "score_level": "head.levels"}


def official_key(key: str) -> str | None:
    """Our name for an official key, or None for keys that are not model parameters."""
    if key in _HEAD_KEYS:
        return _HEAD_KEYS[key]
    if key.startswith("clip_model."):
        name = "clip." + key[len("clip_model."):]
        if name.split(".", 1)[1] in ("input_resolution", "context_length", "vocab_size"):
            return None
        for pattern, replacement in _RENAMES:
            name = pattern.sub(replacement, name)
        return name
    return key  # left as is; check_state_fits names it as unexpected


def infer_config(state: dict, prompts: str):
    """The GammaConfig implied by the tensor shapes (heads follow OpenAI's width // 64)."""
    from gamma_edge.model import GammaConfig

    def need(key):
        if key not in state:
            raise UserError(f"the file has no '{key}'; it is not an official Gamma checkpoint")
        return state[key]

    conv = need("clip.visual.conv1.weight")
    positions = need("clip.visual.positional_embedding").shape[0]
    vision_blocks = _block_indices(state, "clip.visual.transformer.resblocks.")
    text_blocks = _block_indices(state, "clip.transformer.resblocks.")
    moae = sorted({int(m.group(1)) for k in state
                   if (m := re.match(r"clip\.visual\.transformer\.resblocks\.(\d+)\.mlp\.gate\.weight", k))})
    if not moae:
        raise UserError("the file has no MoAE gates (mlp.gating.layer1); it is a plain CLIP, not Gamma")
    k = len(moae)
    if moae != list(range(len(vision_blocks) - k, len(vision_blocks))):
        raise UserError(f"MoAE blocks {moae} are not the last {k} blocks; this layout is not supported")
    text_width = need("clip.ln_final.weight").shape[0]
    vision_width = conv.shape[0]
    backbone = {
        "embed_dim": int(need("clip.text_projection").shape[1]),
        "quick_gelu": True,
        "vision_cfg": {"image_size": int(conv.shape[-1] * round(math.sqrt(positions - 1))),
                       "layers": len(vision_blocks), "width": int(vision_width),
                       "patch_size": int(conv.shape[-1])},
        "text_cfg": {"context_length": int(need("clip.positional_embedding").shape[0]),
                     "vocab_size": int(need("clip.token_embedding.weight").shape[0]),
                     "width": int(text_width), "heads": max(1, int(text_width) // 64),
                     "layers": len(text_blocks)},
    }
    b16 = GammaConfig.from_name("gamma-vit-b-16").backbone
    return GammaConfig(
        backbone=backbone,
        backbone_name="ViT-B-16-quickgelu" if backbone == b16 else "custom",
        moae_blocks=k,
        num_experts=int(need(f"clip.visual.transformer.resblocks.{moae[0]}.mlp.gate.weight").shape[0]),
        adapter_hidden=int(need("head.adapter.0.weight").shape[0]),
        levels=[float(v) for v in need("head.levels").tolist()],
        prompts=prompts,
    )


def convert_official(path: str | Path, prompts: str = "sdp", config=None):
    """The Gamma stored in an official release file, as our model (eval mode)."""
    from gamma_edge.checkpoint import load_tensor_file
    from gamma_edge.factory import create_model
    from gamma_edge.state_dicts import check_state_fits

    data = load_tensor_file(path)
    params = data.get("params", data)
    if not isinstance(params, dict) or not any(str(k).startswith("clip_model.") for k in params):
        raise UserError(f"{path} has no 'params' with 'clip_model.*' keys; it is not an official Gamma "
                             "checkpoint (for a plain CLIP/UniQA backbone use training's --init-backbone)")
    state = {}
    for key, value in params.items():
        name = official_key(str(key))
        if name is not None:
            state[name] = value.float()
    if config is None:
        config = infer_config(state, prompts)
    else:
        config.prompts = prompts
    model = create_model(config)
    check_state_fits(model, state, str(path))
    model.load_state_dict(state)
    model.set_trainable()
    return model.eval()


def _block_indices(state: dict, prefix: str) -> list[int]:
    return sorted({int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)})

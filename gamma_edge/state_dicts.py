"""State dicts fitted into networks: whether one fits (one sentence naming what does not), the
wrappers training scripts put around one, and an OpenAI-format CLIP backbone loaded into
open_clip's CLIP.

Apart from the checkpoint format so that the model can start from a backbone without
importing checkpoint.py (which itself builds models).
"""
from __future__ import annotations

import torch

from contract.errors import UserError

# Entries of OpenAI's TorchScript CLIP archives that are not parameters.
NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


def check_state_fits(module: torch.nn.Module, state: dict, source: str) -> None:
    """One sentence naming missing, unexpected and misshapen keys, if any."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                 for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("misshapen keys", misshapen)):
        if keys:
            more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            problems.append(f"{label} {', '.join(keys[:4])}{more}")
    if problems:
        raise UserError(f"{source} does not fit this model: {'; '.join(problems)}")


def load_backbone_state(clip: torch.nn.Module, state: dict, source: str = "the backbone checkpoint") -> None:
    """Initialise an open_clip CLIP from an OpenAI-format state dict (OpenAI CLIP, UniQA)."""
    state = unwrap_state_dict(state)
    state = {k: v for k, v in state.items() if k not in NON_PARAMETER_KEYS}
    check_state_fits(clip, state, source)
    clip.load_state_dict({k: v.float() for k, v in state.items()})


def unwrap_state_dict(state: dict) -> dict:
    """Strip the wrappers training scripts add: {'state_dict': ...}, 'module.', 'clip_model.'."""
    for key in ("state_dict", "model", "params"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    for prefix in ("module.", "clip_model.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state

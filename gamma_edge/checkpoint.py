"""Checkpoints: our own pickle-free format, and safe reading of other people's files.

Format (`gamma-edge.checkpoint` v1): a safetensors file holding the full state
dict; its metadata holds the GammaConfig and the scene prompts as JSON, so a
checkpoint alone rebuilds the model. Writes are atomic (temporary file +
rename), so a killed process never leaves a half-written checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import torch

from contract.errors import UserError
from gamma_edge.model import Gamma, GammaConfig
from gamma_edge.scenes import Scene, parse_scenes
from gamma_edge.state_dicts import check_state_fits

FORMAT = "gamma-edge.checkpoint"
FORMAT_VERSION = "1"


def save_checkpoint(model, path: str | Path, extra: dict | None = None) -> Path:
    """Write `model` (a Gamma) to `path` atomically; `extra` is free-form JSON metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "scenes": json.dumps({"scenes": {s.name: {"prompts": list(s.prompts)} for s in model.scenes.values()}}),
        "extra": json.dumps(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    from contract.atomic import write_atomically

    return write_atomically(path, lambda temporary: save_file(state, str(temporary), metadata=metadata))


def read_checkpoint_header(path: str | Path) -> dict:
    """Config, scenes and extra metadata of a gamma-edge checkpoint, without reading tensors."""
    from safetensors import safe_open

    path = _existing_file(path, "checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:  # safetensors raises several types for a foreign file
        raise UserError(f"{path} is not a gamma-edge checkpoint (not a safetensors file); "
                             "import official Gamma weights with 'gamma-edge convert'") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path} is a safetensors file but not a gamma-edge checkpoint (no '{FORMAT}' metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format version {metadata.get('format_version')}; "
                             f"this gamma-edge reads version {FORMAT_VERSION}")
    return {
        "config": GammaConfig.from_dict(json.loads(metadata["config"])),
        "scenes": parse_scenes(json.loads(metadata["scenes"]), str(path)),
        "extra": json.loads(metadata.get("extra", "{}")),
    }


def load_checkpoint(path: str | Path, scenes: list[Scene] | None = None, device: str = "cpu"):
    """Rebuild the Gamma stored at `path`; `scenes` overrides the stored scene set."""
    from safetensors.torch import load_file

    header = read_checkpoint_header(path)
    model = Gamma(header["config"], scenes=scenes or header["scenes"])
    state = load_file(str(path), device="cpu")
    check_state_fits(model, state, str(path))
    model.load_state_dict(state)
    model.set_trainable()
    return model.to(device).eval()


def load_tensor_file(path: str | Path) -> dict:
    """A flat or nested dict of tensors from .safetensors, a TorchScript archive, or a torch
    pickle read with weights_only=True (a pickle holding anything but plain tensors and
    containers is refused, never executed)."""
    path = _existing_file(path, "weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path} is not a readable .safetensors file ({str(exc).splitlines()[0][:160]}); "
                                 "copy it again or pass the original .pth") from None
    problem = not_a_torch_file(path)
    if problem:
        raise UserError(f"{path} {problem}")
    if _is_torchscript(path):
        return {k: v for k, v in torch.jit.load(str(path), map_location="cpu").state_dict().items()}
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds pickled Python objects other than plain tensors; "
                             "gamma-edge refuses to execute them (save a state dict of tensors instead)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"{path} is not a readable PyTorch weights file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a {type(data).__name__}, not a dict of tensors")
    return data


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _existing_file(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file")
    return path


# First bytes of files people hand over by mistake, to say what the file is instead.
KNOWN_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
               (b"\x1f\x8b", "a gzip archive"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"%PDF", "a PDF document"),
               (b"\x08", "probably an ONNX graph (export output, not a checkpoint)"))


def not_a_torch_file(path: Path) -> str | None:
    """Why `path` cannot be a PyTorch weights file (zip archive with data.pkl, or a legacy pickle),
    said as the end of a sentence; None when it may be one."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
    if size == 0:
        return "is empty (0 bytes); copy the weights file again"
    if size < 64:
        return f"is only {size} byte(s), far too small to hold weights (truncated?); copy the weights file again"
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return (f"is a truncated or damaged zip archive ({size} bytes; PyTorch files are zip archives); "
                    "copy or download it again")
        with zipfile.ZipFile(path) as archive:
            if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist()):
                return "is a zip archive without data.pkl, so not a PyTorch weights file; unpack it or pass the .pth inside"
        return None
    if head[:1] == b"\x80":                         # a pickle (legacy torch.save format)
        return None
    what = next((name for magic, name in KNOWN_MAGIC if head.startswith(magic)), None)
    if what is None and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        what = "a text file"
    return (f"is {what or 'not a PyTorch weights file'}"
            + (", not a PyTorch weights file" if what else f" (it starts with bytes {head[:4].hex()}; "
               "expected a zip archive or a pickle)") + "; pass the .pth or .safetensors checkpoint")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name or name.startswith("code/") for name in z.namelist())

"""Gamma: CLIP + Mixture of Assessment Experts + scene prompts (Zhou et al., ACM MM 2025).

Reads top to bottom in the order data flows: config, the MoAE block that
replaces the MLP of the last K transformer blocks (vision AND text), the
quality head (residual adapter + level head), and Gamma itself.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from contract.errors import UserError
from gamma_edge.scenes import Scene, default_scenes, plain_prompts
from gamma_edge.state_dicts import load_backbone_state
from gamma_edge.towers import TextTower, encode_image, mlps

CONFIG_DIR = Path(__file__).parent / "model_configs"

# OpenAI CLIP's input normalisation (RGB, [0, 1] scale).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class GammaConfig:
    """Everything needed to rebuild the network; stored inside every checkpoint."""

    backbone: dict                       # open_clip CLIP config: embed_dim, quick_gelu, vision_cfg, text_cfg
    backbone_name: str = "ViT-B-16-quickgelu"
    moae_blocks: int = 6                 # K: the last K blocks of each tower get MoAE
    num_experts: int = 3                 # N adaptive experts per MoAE block
    adapter_hidden: int = 256            # residual adapter bottleneck (512 -> 256 -> 512)
    levels: list = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0])
    prompts: str = "sdp"                 # "sdp": per-scene prompts; "plain": "{level} image" for all

    @property
    def embed_dim(self) -> int:
        return int(self.backbone["embed_dim"])

    @property
    def image_size(self) -> int:
        return int(self.backbone["vision_cfg"]["image_size"])

    @staticmethod
    def path_of(name: str) -> Path:
        """The file a configuration name means: a shipped one by name, or the JSON file given."""
        path = Path(name)
        return path if path.suffix == ".json" else CONFIG_DIR / f"{name}.json"

    @classmethod
    def from_name(cls, name: str) -> "GammaConfig":
        """A shipped configuration ('gamma-vit-b-16', 'gamma-tiny', ...) or a JSON file path."""
        path = cls.path_of(name)
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
            raise UserError(f"unknown model configuration '{name}'; shipped ones: {known}, or give a .json file")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, data: dict) -> "GammaConfig":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserError(f"model config has unknown key(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(cls.__dataclass_fields__)}")
        config = cls(**data)
        if config.prompts not in ("sdp", "plain"):
            raise UserError(f"prompts must be 'sdp' or 'plain', not '{config.prompts}'")
        return config

    def to_dict(self) -> dict:
        return asdict(self)


class MixtureOfAssessmentExperts(nn.Module):
    """MoAE, paper Sec. 3.2: out(x) = shared(x) + scale * sum_i g_i(x) * expert_i(x), g = softmax(gate(x)).

    The shared expert is the pretrained MLP, frozen; each adaptive expert starts as
    a trainable copy of it; the gate routes every token softly; `scale` starts at 0
    so that at initialisation the block equals the pretrained backbone exactly.
    """

    def __init__(self, pretrained_mlp: nn.Module, width: int, num_experts: int):
        super().__init__()
        self.shared_expert = pretrained_mlp
        self.adaptive_experts = nn.ModuleList(copy.deepcopy(pretrained_mlp) for _ in range(num_experts))
        self.gate = nn.Linear(width, num_experts)
        self.scale = nn.Parameter(torch.zeros(()))

    @property
    def c_fc(self) -> nn.Linear:
        # open_clip reads blocks[0].mlp.c_fc to learn a tower's weight dtype (when K = all blocks)
        return self.shared_expert.c_fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate(x).softmax(dim=-1)                                           # (..., N)
        out, *adaptive = mlps([self.shared_expert, *self.adaptive_experts], x)     # gamma_edge/towers.py
        weights = g * self.scale
        # each expert added in place of a stacked (..., width, N) tensor: a stacked expert's gradient is
        # strided by N, which its backward matrix products would copy or read slowly
        for i, expert in enumerate(adaptive):
            out = torch.addcmul(out, expert, weights[..., i:i + 1])
        return out


class QualityHead(nn.Module):
    """Residual adapter and level head, paper Sec. 3.1.

    f = f + ReLU(W2 ReLU(W1 f)); p = softmax(exp(logit_scale) * <f/|f|, t_j/|t_j|>);
    score = sum_j p_j * level_j.
    """

    def __init__(self, embed_dim: int, hidden: int, levels: Sequence[float]):
        super().__init__()
        self.adapter = nn.Sequential(
            nn.Linear(embed_dim, hidden, bias=False), nn.ReLU(),
            nn.Linear(hidden, embed_dim, bias=False), nn.ReLU(),
        )
        self.levels = nn.Parameter(torch.tensor(list(levels), dtype=torch.float32))

    def forward(self, image_features, text_features, logit_scale):
        """(N, S) scores for S scenes shared by all images: text_features (S, L, D)."""
        return self._expected_level(torch.einsum("nd,sld->nsl", self._adapted(image_features),
                                                 F.normalize(text_features, dim=-1)), logit_scale)

    def per_image(self, image_features, text_features, logit_scale):
        """(N,) scores where image n is scored against its own prompt set: text_features (N, L, D)."""
        return self._expected_level(torch.einsum("nd,nld->nl", self._adapted(image_features),
                                                 F.normalize(text_features, dim=-1)), logit_scale)

    def _adapted(self, f):
        return F.normalize(f + self.adapter(f), dim=-1)

    def _expected_level(self, cosines, logit_scale):
        return ((logit_scale.exp() * cosines).softmax(dim=-1) * self.levels).sum(-1)


class Gamma(nn.Module):
    """The generic image assessment model: one vision pass, any number of scenes.

    Images are RGB float tensors in [0, 1], shape (N, 3, H, W) with H = W = image_size;
    CLIP's mean/std normalisation happens inside.
    """

    def __init__(self, config: GammaConfig, scenes: Sequence[Scene] | None = None,
                 backbone_state: dict | None = None):
        super().__init__()
        import open_clip  # heavy; imported only when a model is built

        self.config = config
        self.clip = open_clip.CLIP(**config.backbone)
        if backbone_state is not None:
            load_backbone_state(self.clip, backbone_state)
        self.clip.requires_grad_(False)
        self._install_moae(self.clip.visual.transformer, int(config.backbone["vision_cfg"]["width"]))
        self._install_moae(self.clip.transformer, int(config.backbone["text_cfg"]["width"]))
        self.head = QualityHead(config.embed_dim, config.adapter_hidden, config.levels)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.scenes = {s.name: s for s in (scenes if scenes is not None else default_scenes())}
        self._tokenizer = open_clip.tokenize
        self.context_length = int(config.backbone["text_cfg"].get("context_length", 77))
        self._text_tower = TextTower(self.clip, config.moae_blocks)   # prompt-length, frozen blocks kept
        self.set_trainable()

    def _install_moae(self, transformer: nn.Module, width: int) -> None:
        blocks = transformer.resblocks
        if not 0 <= self.config.moae_blocks <= len(blocks):
            raise UserError(f"moae_blocks={self.config.moae_blocks} but the tower has {len(blocks)} blocks")
        for block in list(blocks)[len(blocks) - self.config.moae_blocks:]:
            block.mlp = MixtureOfAssessmentExperts(block.mlp, width, self.config.num_experts)

    # ---- what trains (paper Sec. 3.3): adaptive experts, gates, scales, adapter, levels ----
    def set_trainable(self, backbone: bool = False) -> None:
        """The paper's trainable set; `backbone=True` also trains the vision tower, which only
        makes sense for a backbone with no pretrained weights (the embedded demo model)."""
        for name, p in self.named_parameters():
            p.requires_grad_(_is_trainable(name) or (backbone and name.startswith("clip.visual.")))

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    # ---- scenes and text ----
    def prompts(self, scene: str) -> list[str]:
        if scene not in self.scenes:
            known = ", ".join(self.scenes)
            raise UserError(f"unknown scene '{scene}'; this model knows: {known}")
        if self.config.prompts == "plain":
            return plain_prompts()
        return list(self.scenes[scene].prompts)

    def text_features(self, scene: str) -> torch.Tensor:
        """(5, D) unnormalised text features of a scene's five level prompts (open_clip's encode_text,
        run on the prompts' own length with the frozen blocks' output kept: gamma_edge/towers.py)."""
        tokens = self._tokenizer(self.prompts(scene), context_length=self.context_length)
        return self._text_tower(tokens.to(self.mean.device))

    # ---- images ----
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) features after the visual projection (before the adapter); open_clip's encode_image
        with the last block run for the class token alone (gamma_edge/towers.py)."""
        return encode_image(self.clip.visual, (images - self.mean) / self.std)

    def scores(self, images: torch.Tensor, scenes: Sequence[str] | None = None) -> torch.Tensor:
        """(N, S): every scene from one vision pass (the deployment property of docs/design.md sec. 1.8)."""
        names = list(scenes) if scenes is not None else list(self.scenes)
        text = torch.stack([self.text_features(s) for s in names])
        return self.head(self.image_features(images), text, self.clip.logit_scale)

    def score(self, images: torch.Tensor, scene: str | Sequence[str] = "natural") -> torch.Tensor:
        """(N,) scores. `scene` is one name for all images, or one name per image (mixed
        training batches); each distinct scene's text tower runs once per call."""
        if isinstance(scene, str):
            return self.scores(images, [scene])[:, 0]
        if len(scene) != images.shape[0]:
            raise ValueError(f"{len(scene)} scene names for {images.shape[0]} images")
        distinct = list(dict.fromkeys(scene))
        text = torch.stack([self.text_features(s) for s in distinct])
        index = torch.tensor([distinct.index(s) for s in scene], device=text.device)
        return self.head.per_image(self.image_features(images), text[index], self.clip.logit_scale)

    forward = score


def _is_trainable(name: str) -> bool:
    return (".adaptive_experts." in name or ".gate." in name or name.endswith(".scale")
            or name.startswith("head."))

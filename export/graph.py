"""The deployable graph: uint8 BGR NHWC crops in, (N, S) scene scores out.

Built from a trained Gamma by exact rewrites only (each one checked by a parity
test against the PyTorch model):

1. Input folding. The cast to float, BGR -> RGB, /255 and CLIP's mean/std are
   affine per channel, and the patch embedding is linear, so they fold into the
   patch convolution: W'[o, c] = W[o, 2 - c] / (255 std[2 - c]) and
   b'[o] = -sum_{c,k} W[o, c, k] mean[c] / std[c]. The runtime feeds OpenCV's
   crops as they are and does no float work per pixel (docs/design.md sec. 3).
2. Attention with a packed QKV projection and the 1/sqrt(d) scale folded into
   the query rows of that projection.
3. Fused MoAE (paper Sec. 3.2). The shared expert and the N adaptive experts read
   the same input, so their first layers run as ONE matrix product of width
   (N+1)*4w; the gate weights scale each expert's hidden slice and their second
   layers run as ONE product, with `scale` folded into the experts' weights:
       out = [h_0, g_1 h_1, ..., g_N h_N] @ [W_0 | s W_1 | ... | s W_N]^T + b_0 + g @ (s B)
   which is the paper's shared(x) + s * sum_i g_i expert_i(x), term for term.
4. Constant text. A scene's five text features do not depend on the image
   (docs/design.md sec. 1.8): they are computed once here, L2-normalised, multiplied by
   exp(logit_scale) and stored as one (D, S*5) constant, so the text tower is not
   in the graph and every scene costs one small matrix product.
5. Class token only in the last block. Only the class token leaves the tower
   (ln_post(x[:, 0]) @ proj), and after the last block's attention nothing mixes
   tokens again: LayerNorm, the MLP/MoAE and its gate act token by token. So the
   last block computes keys and values for every token but the query, attention
   output, residual and MLP/MoAE for the class token alone. For ViT-B/16 with MoAE
   that skips 196/197 of the last block's MLP/MoAE work: about 4 of 34 GMAC per crop.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gamma_edge.model import CLIP_MEAN, CLIP_STD, Gamma, MixtureOfAssessmentExperts

INPUT_NAME = "crops"
OUTPUT_NAME = "scores"


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _activation(mlp: nn.Module):
    """The MLP's activation as a function (QuickGELU for OpenAI CLIP, GELU otherwise)."""
    act = mlp.gelu
    if type(act).__name__ == "QuickGELU":
        return _quick_gelu
    if isinstance(act, nn.GELU):
        return lambda x: F.gelu(x, approximate=act.approximate)
    raise NotImplementedError(f"unsupported MLP activation {type(act).__name__}")


class FoldedPatchEmbedding(nn.Module):
    """uint8 BGR NHWC -> patch tokens, with cast, channel flip, /255 and mean/std folded in."""

    def __init__(self, conv1: nn.Conv2d):
        super().__init__()
        if conv1.bias is not None:
            raise NotImplementedError("patch convolution with a bias")
        w = conv1.weight.detach().double()                                   # (O, 3 RGB, k, k)
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=torch.float64).view(1, 3, 1, 1)
        folded = (w / (255.0 * std)).flip(1)                                 # RGB -> BGR input channels
        bias = -(w * mean / std).sum(dim=(1, 2, 3))
        self.conv = nn.Conv2d(3, w.shape[0], conv1.kernel_size, conv1.stride, bias=True)
        self.conv.weight.data = folded.float()
        self.conv.bias.data = bias.float()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float()                                # (N, 3, H, W), still 0..255 BGR
        x = self.conv(x)                                                     # (N, D, g, g)
        return x.flatten(2).transpose(1, 2)                                  # (N, g*g, D)


class PackedAttention(nn.Module):
    """Multi-head self-attention, packed QKV, query scale folded into the weights."""

    def __init__(self, attn: nn.MultiheadAttention, tokens: int, class_token_only: bool = False):
        super().__init__()
        width, heads = attn.embed_dim, attn.num_heads
        self.tokens, self.width = tokens, width             # constants: the graph has no shape arithmetic
        if not attn._qkv_same_embed_dim or attn.in_proj_bias is None:
            raise NotImplementedError("attention without a packed, biased in-projection")
        self.heads, self.head_dim = heads, width // heads
        weight = attn.in_proj_weight.detach().clone()
        bias = attn.in_proj_bias.detach().clone()
        q_scale = 1.0 / math.sqrt(self.head_dim)
        weight[:width] *= q_scale
        bias[:width] *= q_scale
        if class_token_only:                      # rewrite 5: query rows apart from key/value rows
            self.q, self.kv = nn.Linear(width, width), nn.Linear(width, 2 * width)
            self.q.weight.data, self.q.bias.data = weight[:width].clone(), bias[:width].clone()
            self.kv.weight.data, self.kv.bias.data = weight[width:].clone(), bias[width:].clone()
        else:
            self.qkv = nn.Linear(width, 3 * width)
            self.qkv.weight.data, self.qkv.bias.data = weight, bias
        self.out = nn.Linear(width, width)
        self.out.weight.data = attn.out_proj.weight.detach().clone()
        self.out.bias.data = attn.out_proj.bias.detach().clone()

    def class_token(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, W): the attention output at the class token only (rewrite 5); x is (N, L, W)."""
        tokens, width, heads, d = self.tokens, self.width, self.heads, self.head_dim
        q = self.q(x[:, :1])                                                             # (N, 1, W)
        kv = self.kv(x).reshape(-1, tokens, 2, heads, d).permute(2, 0, 3, 1, 4)          # (2, N, H, L, d)
        q = q.reshape(-1, 1, heads, d).transpose(1, 2)                                   # (N, H, 1, d)
        attn = (q @ kv[0].transpose(-1, -2)).softmax(dim=-1)                            # (N, H, 1, L)
        return self.out((attn @ kv[1]).transpose(1, 2).reshape(-1, 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, width = self.tokens, self.width
        qkv = self.qkv(x).reshape(-1, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                     # (N, H, L, d)
        attn = (q @ k.transpose(-1, -2)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(-1, tokens, width)
        return self.out(x)


class PlainMLP(nn.Module):
    """The transformer MLP of blocks without MoAE."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.c_fc = _clone_linear(mlp.c_fc)
        self.c_proj = _clone_linear(mlp.c_proj)
        self.act = _activation(mlp)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class FusedMoAE(nn.Module):
    """MoAE as two wide matrix products (module docstring, rewrite 3); exactly the paper's sum."""

    def __init__(self, moae: MixtureOfAssessmentExperts, tokens: int):
        super().__init__()
        self.tokens = tokens                      # 1 in a class-token-only last block (rewrite 5)
        experts = [moae.shared_expert, *moae.adaptive_experts]
        scale = moae.scale.detach().float()
        self.act = _activation(moae.shared_expert)
        self.num_experts = len(moae.adaptive_experts)
        self.hidden = moae.shared_expert.c_fc.out_features
        self.fc = nn.Linear(moae.shared_expert.c_fc.in_features, self.hidden * len(experts))
        self.fc.weight.data = torch.cat([e.c_fc.weight.detach() for e in experts], 0).clone()
        self.fc.bias.data = torch.cat([e.c_fc.bias.detach() for e in experts], 0).clone()
        self.gate = _clone_linear(moae.gate)
        proj = [moae.shared_expert.c_proj.weight.detach()] + [scale * e.c_proj.weight.detach()
                                                              for e in moae.adaptive_experts]
        self.proj = nn.Linear(self.hidden * len(experts), proj[0].shape[0])
        self.proj.weight.data = torch.cat(proj, 1).clone()
        self.proj.bias.data = moae.shared_expert.c_proj.bias.detach().clone()
        # scale * sum_i g_i b_i = g @ (scale * B): the experts' second biases as a (N, w) constant.
        self.register_buffer("expert_bias", scale * torch.stack([e.c_proj.bias.detach()
                                                                 for e in moae.adaptive_experts]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens
        g = self.gate(x).softmax(dim=-1)                                     # (N, L, E)
        weights = torch.cat([torch.ones_like(g[..., :1]), g], dim=-1)        # shared expert weighs 1
        h = self.act(self.fc(x)).reshape(-1, tokens, self.num_experts + 1, self.hidden)
        h = (h * weights.unsqueeze(-1)).reshape(-1, tokens, (self.num_experts + 1) * self.hidden)
        return self.proj(h) + g @ self.expert_bias


class UnfusedMoAE(nn.Module):
    """The paper's MoAE written out expert by expert (the reference the fused form is checked against)."""

    def __init__(self, moae: MixtureOfAssessmentExperts):
        super().__init__()
        self.shared_expert = PlainMLP(moae.shared_expert)
        self.adaptive_experts = nn.ModuleList(PlainMLP(e) for e in moae.adaptive_experts)
        self.gate = _clone_linear(moae.gate)
        self.register_buffer("scale", moae.scale.detach().float().clone())

    def forward(self, x):
        g = self.gate(x).softmax(dim=-1)
        out = self.shared_expert(x)
        mix = sum(g[..., i:i + 1] * expert(x) for i, expert in enumerate(self.adaptive_experts))
        return out + self.scale * mix


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1 x), then x + mlp(ln_2 x)."""

    def __init__(self, block: nn.Module, fuse_moae: bool, tokens: int, class_token_only: bool = False):
        super().__init__()
        self.class_token_only = class_token_only
        if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
            raise NotImplementedError("blocks with LayerScale")
        self.ln_1 = _clone_layer_norm(block.ln_1)
        self.attn = PackedAttention(block.attn, tokens, class_token_only)
        self.ln_2 = _clone_layer_norm(block.ln_2)
        if isinstance(block.mlp, MixtureOfAssessmentExperts):
            mlp_tokens = 1 if class_token_only else tokens
            self.mlp = FusedMoAE(block.mlp, mlp_tokens) if fuse_moae else UnfusedMoAE(block.mlp)
        else:
            self.mlp = PlainMLP(block.mlp)

    def forward(self, x):
        if self.class_token_only:                                            # rewrite 5: (N, L, W) -> (N, 1, W)
            x = x[:, :1] + self.attn.class_token(self.ln_1(x))
        else:
            x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class SceneHead(nn.Module):
    """Residual adapter + level head against constant, pre-normalised, pre-scaled text (rewrite 4)."""

    def __init__(self, model: Gamma, scenes: Sequence[str]):
        super().__init__()
        self.num_scenes = len(scenes)
        self.adapter_in = _clone_linear(model.head.adapter[0])
        self.adapter_out = _clone_linear(model.head.adapter[2])
        with torch.no_grad():
            text = torch.stack([model.text_features(s) for s in scenes]).float()     # (S, 5, D)
            text = F.normalize(text, dim=-1) * model.clip.logit_scale.exp()
        self.levels_count = text.shape[1]
        self.register_buffer("text", text.reshape(-1, text.shape[-1]).t().contiguous())  # (D, S*5)
        self.register_buffer("levels", model.head.levels.detach().clone().view(-1, 1))   # (5, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = features + F.relu(self.adapter_out(F.relu(self.adapter_in(features))))
        f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        p = (f @ self.text).reshape(-1, self.num_scenes, self.levels_count).softmax(dim=-1)
        return (p @ self.levels).reshape(-1, self.num_scenes)                           # (N, S)


class DeployableGamma(nn.Module):
    """crops (N, H, W, 3) uint8 BGR -> scores (N, S) float32, one column per scene."""

    def __init__(self, model: Gamma, scenes: Sequence[str], fuse_moae: bool = True,
                 class_token_only: bool = True):
        super().__init__()
        visual = model.clip.visual
        _check_supported(visual)
        self.scenes = list(scenes)
        self.image_size = model.config.image_size
        self.patch = FoldedPatchEmbedding(visual.conv1)
        self.register_buffer("class_embedding", visual.class_embedding.detach().clone().view(1, 1, -1))
        self.register_buffer("positional_embedding", visual.positional_embedding.detach().clone().unsqueeze(0))
        self.ln_pre = _clone_layer_norm(visual.ln_pre)
        tokens = visual.positional_embedding.shape[0]
        blocks = list(visual.transformer.resblocks)
        self.blocks = nn.ModuleList(Block(b, fuse_moae, tokens, class_token_only and i == len(blocks) - 1)
                                    for i, b in enumerate(blocks))
        self.ln_post = _clone_layer_norm(visual.ln_post)
        self.register_buffer("proj", visual.proj.detach().clone())
        self.head = SceneHead(model, self.scenes)
        self.eval().requires_grad_(False)

    def image_features(self, crops: torch.Tensor) -> torch.Tensor:
        x = self.patch(crops)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.image_features(crops))


def build_graph(model: Gamma, scenes: Sequence[str], fuse_moae: bool = True,
                class_token_only: bool = True) -> DeployableGamma:
    """The deployable module for `scenes` (names known to `model`), in eval mode, float32.
    `fuse_moae=False` / `class_token_only=False` build the graph without rewrite 3 / 5
    (the references their parity tests and the export benchmark compare against)."""
    for s in scenes:
        model.prompts(s)                                                     # unknown scene -> UserError
    model = model.float().eval()
    return DeployableGamma(model, scenes, fuse_moae, class_token_only)


def _check_supported(visual: nn.Module) -> None:
    """The rewrites above assume OpenAI CLIP's vision tower; refuse anything else loudly."""
    problems = []
    if getattr(visual, "attn_pool", None) is not None:
        problems.append("attention pooling")
    if getattr(visual, "pool_type", "tok") != "tok":
        problems.append(f"pool_type {visual.pool_type}")
    if getattr(visual, "final_ln_after_pool", False):
        problems.append("final LayerNorm after pooling")
    if not getattr(visual.transformer, "batch_first", True):
        problems.append("sequence-first transformer")
    if visual.proj is None:
        problems.append("no visual projection")
    if problems:
        raise NotImplementedError("graph export supports OpenAI-style CLIP vision towers; found " + ", ".join(problems))


def _clone_linear(linear: nn.Linear) -> nn.Linear:
    out = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    out.weight.data = linear.weight.detach().float().clone()
    if linear.bias is not None:
        out.bias.data = linear.bias.detach().float().clone()
    return out


def _clone_layer_norm(ln: nn.LayerNorm) -> nn.LayerNorm:
    out = nn.LayerNorm(ln.normalized_shape, eps=ln.eps)
    out.weight.data = ln.weight.detach().float().clone()
    out.bias.data = ln.bias.detach().float().clone()
    return out

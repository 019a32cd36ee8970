"""CLIP's two towers as Gamma runs them: open_clip's own computation, minus work whose result
is never used or never changes. Each shortcut is exact (the same features up to float rounding;
tests/test_training_step.py checks losses and gradients against open_clip's encode_text /
encode_image to 1e-5), and each falls back to open_clip where its premise does not hold.

Text tower (`TextTower`):
1. Prompt length, not context length. CLIP's text attention is causal and the feature is read
   at the end-of-text token, so positions after it never reach the feature: running the
   ~10 tokens a prompt has instead of the 77-token context gives the same features.
2. Frozen blocks once per prompt set. The first `layers - moae_blocks` blocks, the token and
   positional embeddings are frozen and a scene's prompts are fixed, so their output is a
   constant: computed once and kept, keyed by the prompts and by the frozen weights' identity
   and version (a load_state_dict or .to() changes them and the cache is rebuilt).

Vision tower (`encode_image`):
3. Class token only in the last block. Only the class token leaves the tower, and after the
   last block's attention nothing mixes tokens again, so that block needs keys and values of
   every token but query, attention output, residual and MLP/MoAE for the class token alone
   (export/graph.py's rewrite 5, here in training form: it saves that block's forward and
   backward, 1/6 of the MoAE work).
4. Attention's input projection as one matrix product. In training mode PyTorch's
   nn.MultiheadAttention transposes a batch-first input to (tokens, batch, width) and runs the
   projection as a batched product of one small (batch x width) product per token, at about 60%
   of a plain product's speed (the largest cost after the MLPs: ~11% of a ViT-B/16 step). The same
   projection on the (batch * tokens, width) rows, then the same scaled_dot_product_attention.
5. QuickGELU as SiLU (`mlp`). x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, so an MLP
   c_proj(QuickGELU(c_fc(x))) equals c_fc on 1.702 x with its bias times 1.702, SiLU, and c_proj
   with its weight over 1.702: the three elementwise passes forward (and five backward) over the
   (tokens x 3072) hidden become one fused SiLU kernel each way. Used by every vision MLP and every
   MoAE expert (gamma_edge/model.py); the 1.702 goes on the input, once for all of a MoAE's
   experts, and a frozen c_proj's divided weight is kept.
The MLPs' and attention's large products run on oneDNN rather than MKL (gamma_edge/products.py).
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from gamma_edge.products import linear


def _standard_vision_tower(visual: nn.Module) -> bool:
    """OpenAI CLIP's vision tower, where shortcut 3 is exact (else open_clip's forward runs)."""
    transformer = visual.transformer
    return (hasattr(visual, "_embeds") and getattr(visual, "attn_pool", None) is None
            and getattr(visual, "pool_type", "tok") == "tok" and not getattr(visual, "final_ln_after_pool", False)
            and getattr(transformer, "batch_first", True) and not getattr(transformer, "grad_checkpointing", False)
            and not getattr(visual, "output_tokens", False) and visual.proj is not None
            and len(transformer.resblocks) > 0 and not hasattr(transformer.resblocks[-1], "ln_1_kv"))


def encode_image(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's VisionTransformer.forward(x) with the last block on the class token (shortcut 3)
    and attention's input projection as one product (shortcut 4)."""
    if not _standard_vision_tower(visual):
        return visual(x)
    x = visual._embeds(x)
    *blocks, last = visual.transformer.resblocks
    for block in blocks:
        x = x + block.ls_1(_attention(block, block.ln_1(x)))
        x = x + block.ls_2(mlp(block.mlp, block.ln_2(x)))
    normed = last.ln_1(x)
    cls = x[:, :1] + last.ls_1(_attention(last, normed, queries=normed[:, :1]))
    cls = cls + last.ls_2(mlp(last.mlp, last.ln_2(cls)))
    return visual.ln_post(cls[:, 0]) @ visual.proj


QUICK_GELU = 1.702          # open_clip's QuickGELU: x * sigmoid(1.702 x)


def mlp(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x), for open_clip's QuickGELU MLP (c_fc, gelu, c_proj) as SiLU (shortcut 5); any other
    module (a MoAE, a GELU MLP) runs as it is."""
    return mlps([module], x)[0]


def mlps(modules: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """[module(x) for module in modules], QuickGELU MLPs with shortcut 5: the 1.702 multiplies the
    input once for all of them (a MoAE's experts share it) and c_fc's bias; c_proj's weight is
    divided by it (kept, for a frozen weight, until the weight changes)."""
    if not all(isinstance(m, nn.Sequential) and len(m) == 3 and type(getattr(m, "gelu", None)).__name__ == "QuickGELU"
               for m in modules):
        return [module(x) for module in modules]
    scaled = x * QUICK_GELU
    return [linear(F.silu(linear(scaled, m.c_fc.weight, _times(m.c_fc.bias, QUICK_GELU))),
                   _times(m.c_proj.weight, 1.0 / QUICK_GELU), m.c_proj.bias) for m in modules]


_SCALED: dict[int, tuple] = {}        # id(tensor) -> (weak reference, key, product)


def _times(tensor: torch.Tensor | None, factor: float) -> torch.Tensor | None:
    """tensor * factor; a frozen tensor's product is kept and made again when the tensor changes
    (its version counts in-place changes, its data pointer a replacement) or the mode does (a
    product made under inference_mode cannot enter autograd)."""
    if tensor is None or tensor.requires_grad:
        return None if tensor is None else tensor * factor
    key = (tensor.data_ptr(), tensor._version, tensor.dtype, factor, torch.is_inference_mode_enabled())
    kept = _SCALED.get(id(tensor))
    if kept is None or kept[0]() is not tensor or kept[1] != key:
        with torch.no_grad():
            kept = (weakref.ref(tensor, lambda _, i=id(tensor): _SCALED.pop(i, None)), key, tensor * factor)
        _SCALED[id(tensor)] = kept
    return kept[2]


def _plain_attention(block: nn.Module) -> bool:
    """A block whose attention shortcut 4 computes exactly as nn.MultiheadAttention would."""
    attn = getattr(block, "attn", None)
    return (isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn._qkv_same_embed_dim
            and attn.bias_k is None and attn.bias_v is None and not attn.add_zero_attn
            and (attn.dropout == 0.0 or not attn.training) and not hasattr(block, "ln_1_kv"))


def _attention(block: nn.Module, normed: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
    """block.attention(q_x=queries, k_x=normed, v_x=normed) (queries default: every token) for a
    batch-first (batch, tokens, width) input with no mask, the input projection on the rows."""
    if not _plain_attention(block):
        return block.attention(q_x=normed if queries is None else queries, k_x=normed, v_x=normed)
    attn = block.attn
    width, heads = normed.shape[-1], attn.num_heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if queries is None:
        q, k, v = linear(normed, weight, bias).chunk(3, dim=-1)
    else:
        q = linear(queries, weight[:width], None if bias is None else bias[:width])
        k, v = linear(normed, weight[width:], None if bias is None else bias[width:]).chunk(2, dim=-1)

    def by_head(y: torch.Tensor) -> torch.Tensor:          # (batch, heads, tokens, width / heads)
        return y.unflatten(-1, (heads, width // heads)).transpose(1, 2)
    out = F.scaled_dot_product_attention(by_head(q), by_head(k), by_head(v))
    return linear(out.transpose(1, 2).flatten(2), attn.out_proj.weight, attn.out_proj.bias)


class TextTower:
    """open_clip's CLIP.encode_text for fixed prompt sets, with shortcuts 1 and 2."""

    def __init__(self, clip: nn.Module, trained_blocks: int):
        self.clip = clip
        blocks = list(clip.transformer.resblocks)
        self.frozen_count = len(blocks) - trained_blocks
        self._cache: dict = {}

    def _exact(self) -> bool:
        """Shortcut 1 needs a causal mask and the feature read at the end-of-text (argmax) token."""
        clip = self.clip
        return (getattr(clip, "text_pool_type", "argmax") == "argmax" and clip.attn_mask is not None
                and getattr(clip.transformer, "batch_first", True)
                and not getattr(clip.transformer, "grad_checkpointing", False))

    def _frozen_parameters(self) -> list[torch.Tensor]:
        clip = self.clip
        blocks = list(clip.transformer.resblocks)[:self.frozen_count]
        return [clip.token_embedding.weight, clip.positional_embedding,
                *(p for block in blocks for p in block.parameters())]

    @staticmethod
    def _keys(tokens: torch.Tensor, frozen: list[torch.Tensor]) -> tuple[tuple, tuple]:
        """(what the cache is looked up by, what its entry must still match)."""
        device = tokens.device.type
        # tensors made under inference_mode cannot enter autograd later: such entries serve only that mode
        autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device),
                    torch.is_inference_mode_enabled())
        # A tensor's version counts its in-place changes (load_state_dict), its data pointer a
        # replacement (.to(), .float()): either makes the kept output stale.
        weights = tuple((p.data_ptr(), p._version) for p in frozen)
        return (tuple(map(tuple, tokens.tolist())), str(tokens.device), autocast), weights

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, D) features of P tokenized prompts ((P, context_length) from open_clip.tokenize)."""
        clip = self.clip
        if not self._exact():
            return clip.encode_text(tokens)
        length = int(tokens.argmax(dim=-1).max()) + 1        # the last end-of-text token, inclusive
        tokens = tokens[:, :length]
        mask = clip.attn_mask[:length, :length]
        x = self._frozen_output(tokens, mask)
        for block in list(clip.transformer.resblocks)[self.frozen_count:]:
            x = block(x, attn_mask=mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return x @ clip.text_projection if not isinstance(clip.text_projection, nn.Linear) \
            else clip.text_projection(x)

    def _frozen_output(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The embeddings and the frozen blocks' output: from the cache when nothing in them trains."""
        frozen = self._frozen_parameters()
        if any(p.requires_grad for p in frozen):
            return self._run_frozen(tokens, mask)
        key, weights = self._keys(tokens, frozen)
        kept = self._cache.get(key)
        if kept is None or kept[0] != weights:          # first use, or the frozen weights changed
            with torch.no_grad():
                kept = self._cache[key] = (weights, self._run_frozen(tokens, mask))
        return kept[1]

    def _run_frozen(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        cast_dtype = clip.transformer.get_cast_dtype()
        length = tokens.shape[1]
        x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
        for block in list(clip.transformer.resblocks)[:self.frozen_count]:
            x = block(x, attn_mask=mask)
        return x

    def clear(self) -> None:
        self._cache.clear()

"""The large float32 matrix products of a CPU training step on oneDNN rather than MKL.

PyTorch runs a float32 `F.linear` and its backward on the CPU through MKL's sgemm. The same
wheel carries oneDNN (torch.compile's CPU backend calls it; eager code reaches it as
`torch.ops.mkldnn._linear_pointwise`, which takes and returns ordinary tensors), whose float32
kernels ran a ViT-B/16 step's forward and input-gradient products 7-12% faster than MKL's on an
AMD EPYC Zen 4 and its weight-gradient products 3-10% slower (`python
benchmarks/bench_products.py` prints both for the step's shapes on the CPU it runs on). Both
compute the same float32 sums, rounded in another order (about 1e-6 relative). So `linear` runs
the forward and input-gradient products of 256 rows or more on oneDNN where this torch has it;
weight gradients stay on MKL (autograd's own product).

The choice is fixed, not timed per process: a run killed and resumed must compute bit for bit
what an uninterrupted one does (tests/test_training_loop.py), and timing on a shared machine can
pick differently from one start to the next. GAMMA_EDGE_CPU_MATMUL=mkl puts every product back on
MKL (for a CPU where bench_products.py shows MKL faster); `choices()` says what ran.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

ENVIRONMENT = "GAMMA_EDGE_CPU_MATMUL"
POLICIES = ("onednn", "mkl")
MIN_ROWS = 256          # smaller products (text prompts, one class token per image) stay on MKL

_choices: dict[tuple, str] = {}        # (rows, inner, outer, kind) -> "onednn"


def policy() -> str:
    """onednn (the default) or mkl, from GAMMA_EDGE_CPU_MATMUL."""
    value = os.environ.get(ENVIRONMENT, "onednn").strip().lower() or "onednn"
    if value not in POLICIES:
        from contract.errors import UserError
        raise UserError(f"{ENVIRONMENT}={value!r} is not one of {', '.join(POLICIES)}")
    return value


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def choices() -> dict[str, str]:
    """The shapes `linear` ran on oneDNN so far, e.g. {'forward 1576x768->3072': 'onednn'}."""
    return {f"{kind} {rows}x{inner}->{outer}": lib for (rows, inner, outer, kind), lib in _choices.items()}


def forget() -> None:
    """Forget what ran (tests)."""
    _choices.clear()


def _applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() \
            or torch.onnx.is_in_onnx_export():
        return False                  # a graph being recorded gets the plain F.linear
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.dim() == 2 and not torch.is_autocast_enabled("cpu")
            and x.numel() // max(x.shape[-1], 1) >= MIN_ROWS and policy() != "mkl" and onednn_available())


def _product(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kind: str) -> torch.Tensor:
    """rows @ weight.T + bias for 2-D rows, on oneDNN."""
    _choices.setdefault((rows.shape[0], rows.shape[1], weight.shape[0], kind), "onednn")
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


class _Linear(torch.autograd.Function):
    """F.linear whose forward and input-gradient products use `_product`; the weight's gradient is
    autograd's own (MKL) product, the bias's a sum."""

    @staticmethod
    def forward(ctx, rows, weight, bias):
        ctx.save_for_backward(rows if weight.requires_grad else None, weight)
        ctx.has_bias = bias is not None
        return _product(rows, weight, bias, "forward")

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_rows = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_rows = _product(grad, weight.t(), None, "input gradient")
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t().mm(rows)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_rows, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias): the same product, on oneDNN where it is a large float32 CPU product
    outside tracing, compiling and autocast (and GAMMA_EDGE_CPU_MATMUL is not mkl); F.linear elsewhere."""
    if not _applies(x, weight):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        out = _Linear.apply(rows, weight, bias)
    else:
        out = _product(rows, weight, bias, "forward")
    return out.reshape(*x.shape[:-1], weight.shape[0])

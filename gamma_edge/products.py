"""The large float32 matrix products of a CPU training step, on whichever of PyTorch's two CPU
libraries computes each one faster on this machine.

PyTorch runs a float32 `F.linear` and its backward on the CPU through MKL's sgemm. The same
wheel carries oneDNN (torch.compile's CPU backend calls it; eager code reaches it as
`torch.ops.mkldnn._linear_pointwise`, which takes and returns ordinary tensors), whose float32
kernels ran a ViT-B/16 step's forward and input-gradient products 8-12% faster than MKL's on an
AMD EPYC Zen 4, and its weight-gradient products 3-10% slower (`python
benchmarks/bench_products.py`). Both compute the same float32 sums, rounded in a different order
(about 1e-6 relative). Which library wins depends on the CPU and the shape, so `linear` times
both on the first call of each large shape, keeps the faster for the rest of the process, and
reports its picks in `choices()`. Weight gradients stay on MKL (autograd's own product).

GAMMA_EDGE_CPU_MATMUL=mkl (or onednn) fixes the library for every product instead of timing:
for a run that must repeat bit for bit on the same machine.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

ENVIRONMENT = "GAMMA_EDGE_CPU_MATMUL"
POLICIES = ("auto", "mkl", "onednn")
MIN_ROWS = 256          # smaller products (text prompts, one class token per image) stay on MKL
TRIALS = 3              # timed calls of each library per shape, interleaved, after one warm-up each

_choices: dict[tuple, str] = {}        # (rows, inner, outer, kind) -> "mkl" | "onednn"


def policy() -> str:
    """auto (time both per shape), mkl or onednn, from GAMMA_EDGE_CPU_MATMUL (default auto)."""
    value = os.environ.get(ENVIRONMENT, "auto").strip().lower() or "auto"
    if value not in POLICIES:
        from contract.errors import UserError
        raise UserError(f"{ENVIRONMENT}={value!r} is not one of {', '.join(POLICIES)}")
    return value


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def choices() -> dict[str, str]:
    """What `linear` picked so far, e.g. {'forward 1576x768->3072': 'onednn'}."""
    return {f"{kind} {rows}x{inner}->{outer}": lib for (rows, inner, outer, kind), lib in _choices.items()}


def forget() -> None:
    """Drop the picks (tests; a process whose load on the CPU changed may time again)."""
    _choices.clear()


def _applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() \
            or torch.onnx.is_in_onnx_export():
        return False                  # a graph being recorded gets the plain F.linear
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.dim() == 2 and not torch.is_autocast_enabled("cpu")
            and x.numel() // max(x.shape[-1], 1) >= MIN_ROWS and policy() != "mkl" and onednn_available())


def _mkl(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(rows, weight, bias)


def _onednn(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


def _product(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kind: str) -> torch.Tensor:
    """rows @ weight.T + bias for 2-D rows, on the library picked for this shape (timing both once)."""
    key = (rows.shape[0], rows.shape[1], weight.shape[0], kind)
    chosen = _choices.get(key)
    if chosen is None:
        if policy() == "onednn":
            chosen = _choices[key] = "onednn"
        else:
            return _time_both(key, rows, weight, bias)
    return (_onednn if chosen == "onednn" else _mkl)(rows, weight, bias)


def _time_both(key: tuple, rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    libraries = {"mkl": _mkl, "onednn": _onednn}
    seconds: dict[str, list[float]] = {name: [] for name in libraries}
    for trial in range(TRIALS + 1):                        # trial 0 warms each one up
        for name, run in libraries.items():
            start = time.perf_counter()
            out = run(rows, weight, bias)
            if trial:
                seconds[name].append(time.perf_counter() - start)
    _choices[key] = min(seconds, key=lambda name: sorted(seconds[name])[TRIALS // 2])
    return out if _choices[key] == "onednn" else _mkl(rows, weight, bias)


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
    """F.linear(x, weight, bias): the same product, on the faster library for its shape where it is
    a large float32 CPU product outside tracing, compiling and autocast; F.linear everywhere else."""
    if not _applies(x, weight):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        out = _Linear.apply(rows, weight, bias)
    else:
        out = _product(rows, weight, bias, "forward")
    return out.reshape(*x.shape[:-1], weight.shape[0])

"""The training step's large float32 products on MKL (PyTorch's F.linear) and on oneDNN
(gamma_edge/products.py), on this CPU: milliseconds per product, interleaved, medians.

    python benchmarks/bench_products.py [--rows 1576] [--rounds 10] [--threads 2]

Shapes are a ViT-B/16 step's (batch 8 x 197 tokens = 1576 rows): the MLP's two products, attention's
input and output projections, each forward, as an input gradient and as a weight gradient. The
training step runs forward and input-gradient products on oneDNN and weight gradients on MKL; where
this table shows MKL faster for the first two, GAMMA_EDGE_CPU_MATMUL=mkl puts them back on MKL.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [(768, 3072), (3072, 768), (768, 2304), (768, 768)]      # (inputs, outputs) of a ViT-B/16 block


def cases(rows: int) -> dict:
    onednn = torch.ops.mkldnn._linear_pointwise
    made = {}
    for inner, outer in SHAPES:
        x, weight, bias, grad = torch.randn(rows, inner), torch.randn(outer, inner), torch.randn(outer), torch.randn(rows, outer)
        made[f"forward {inner}->{outer}"] = (lambda x=x, w=weight, b=bias: F.linear(x, w, b),
                                             lambda x=x, w=weight, b=bias: onednn(x, w, b, "none", [], ""))
        made[f"input gradient {outer}->{inner}"] = (lambda g=grad, w=weight: g @ w,
                                                    lambda g=grad, w=weight: onednn(g, w.t(), None, "none", [], ""))
        made[f"weight gradient {outer}x{inner}"] = (lambda g=grad, x=x: g.t() @ x,
                                                    lambda g=grad, x=x: onednn(g.t(), x.t(), None, "none", [], ""))
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1576, help="rows of each product (default 1576 = 8 x 197)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds after two warm-up rounds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from contract.hardware import detect_cpu
    from gamma_edge.products import onednn_available

    if not onednn_available():
        print("This torch has no oneDNN linear (torch.ops.mkldnn._linear_pointwise): every product runs on MKL.")
        return
    torch.set_num_threads(args.threads)
    made = cases(args.rows)
    times = {name: ([], []) for name in made}
    for round_ in range(args.rounds + 2):
        for name, pair in made.items():
            for i, run in enumerate(pair):
                start = time.perf_counter()
                run()
                if round_ >= 2:
                    times[name][i].append(time.perf_counter() - start)
    print(f"CPU: {detect_cpu().describe()}; {args.threads} threads; torch {torch.__version__}; {args.rows} rows")
    print("| product | MKL ms | oneDNN ms | MKL / oneDNN |")
    print("|---|---:|---:|---:|")
    for name, (mkl, onednn) in times.items():
        a, b = statistics.median(mkl) * 1e3, statistics.median(onednn) * 1e3
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()

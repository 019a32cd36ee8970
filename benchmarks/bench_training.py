"""Training throughput of the full Gamma ViT-B/16: one step (forward + backward + Adam), images/s.

    python benchmarks/bench_training.py [--model gamma-vit-b-16] [--rounds 3] [--threads 2] [--device cpu|cuda]

Compares two implementations of the same step on the same mixed-scene batch of 8:
  A  "distinct scenes": what training.train does (Gamma.score with one scene per image):
     the text tower runs once per distinct scene in the batch (5 prompts each);
  B  "per sample": a plain implementation that runs the text tower for each sample's
     5 prompts (8 x 5 prompts per step).
Both are timed interleaved (A B A B ...) in one process, medians reported, because this
machine's speed drifts (docs/design.md sec. 5.2); a 4096^2 float32 matmul GEMM probe in the same
run says what fraction of the machine's peak the step reaches. On CUDA the step runs under
bf16 autocast, as training does. Random weights: throughput does not depend on them.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

# 8 images, 3 distinct scenes: a mixed batch of the unified recipe (natural datasets dominate).
SCENES = ["natural", "aesthetics", "natural", "aigc", "natural", "aesthetics", "natural", "aesthetics"]


def gemm_gflops(device, repeats=5) -> float:
    from interleaved import torch_gemm_gflops

    return torch_gemm_gflops(device, repeats=repeats)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_distinct(model, images, target, scenes):
    return ((model.score(images, scenes) - target) ** 2).mean()


def step_per_sample(model, images, target, scenes):
    text = torch.stack([model.text_features(scene) for scene in scenes])           # (N, 5, D): 8 text passes
    predicted = model.head.per_image(model.image_features(images), text, model.clip.logit_scale)
    return ((predicted - target) ** 2).mean()


def timed_step(fn, model, optimizer, images, target, scenes, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = fn(model, images, target, scenes)
    optimizer.zero_grad(set_to_none=True)
    loss.float().backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gamma-vit-b-16")
    parser.add_argument("--rounds", type=int, default=3, help="timed A B pairs after one warm-up pair")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from gamma_edge.factory import create_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = create_model(args.model, seed=0).to(device).train()
    trainable = model.trainable_parameters()
    optimizer = torch.optim.Adam(list(trainable.values()), lr=2e-5)
    batch = len(SCENES)
    images = torch.rand(batch, 3, 224, 224, device=device)
    target = torch.rand(batch, device=device)
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in trainable.values())

    gemm_before = gemm_gflops(device)
    implementations = {"A distinct scenes (training.train)": step_distinct,
                       "B per-sample text tower": step_per_sample}
    times = {name: [] for name in implementations}
    for round_ in range(args.rounds + 1):                 # round 0 is the warm-up
        for name, fn in implementations.items():
            seconds = timed_step(fn, model, optimizer, images, target, SCENES, device)
            if round_:
                times[name].append(seconds)
            print(f"  round {round_} {name}: {seconds:.3f} s", flush=True)
    gemm_after = gemm_gflops(device)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"\n{args.model}: {n_train / 1e6:.1f}M of {n_all / 1e6:.1f}M parameters train; batch {batch}, "
          f"{len(set(SCENES))} distinct scenes; {where}"
          f"{', bf16 autocast' if device.type == 'cuda' else ', fp32'}; torch {torch.__version__}")
    print(f"GEMM probe (4096^2 fp32 matmul): {gemm_before:.0f} GFLOP/s before, {gemm_after:.0f} GFLOP/s after")
    print(f"{'implementation':<38} {'text passes':>11} {'median s/step':>14} {'images/s':>9}")
    medians = {}
    for name in implementations:
        medians[name] = statistics.median(times[name])
        passes = len(set(SCENES)) if name.startswith("A") else batch
        print(f"{name:<38} {passes:>11} {medians[name]:>14.3f} {batch / medians[name]:>9.2f}")
    a, b = medians.values()
    names = list(implementations)
    paired = [tb / ta for ta, tb in zip(times[names[0]], times[names[1]])]
    print(f"speed-up of A over B: {b / a:.2f}x (ratio of medians of {args.rounds} interleaved rounds); "
          f"per round: {', '.join(f'{r:.2f}x' for r in paired)}")


if __name__ == "__main__":
    main()

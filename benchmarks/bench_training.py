"""Training throughput of the full Gamma ViT-B/16: one step (forward + backward + Adam), images/s.

    python benchmarks/bench_training.py [--scenes 1] [--rounds 3] [--threads 2] [--device cpu|cuda]
                                        [--skip authors]

Compares implementations of the same step on the same batch of 8 (`--scenes` distinct scenes in it):
  this step      what training.train runs: Gamma.score (text tower on the prompts' own length, its
                 frozen blocks kept per prompt set, last vision block on the class token alone;
                 gamma_edge/towers.py) and fused Adam (training/recipe.py);
  before         the step before issue 28: open_clip's encode_image, encode_text on the 77-token
                 context once per distinct scene, the MoAE blocks as they were (open_clip's
                 QuickGELU MLPs, experts stacked: `moae_forward_before`), Adam's default loop;
  authors        the authors' way: the text tower (77 tokens) once per sample, the MoAE blocks and
                 Adam as before.
All are timed interleaved (A B C A B C ...) in one process, medians reported, because this machine's
speed drifts (docs/design.md sec. 5.2); a 4096^2 float32 GEMM probe before and after says how loaded
it was. On CUDA the step runs under bf16 autocast, as training does. Random weights: throughput does
not depend on them. Each implementation has its own Adam state; all update the same weights.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import open_clip
import torch

# Mixed batches of the unified recipe: natural datasets dominate, then aesthetics.
SCENE_ORDER = ["natural", "aesthetics", "aigc", "face", "underwater"]


def batch_scenes(distinct: int, batch: int = 8) -> list[str]:
    names = SCENE_ORDER[:distinct]
    return [names[i % distinct] for i in range(batch)]


def gemm_gflops(device, repeats=5) -> float:
    from interleaved import torch_gemm_gflops

    return torch_gemm_gflops(device, repeats=repeats)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _open_clip_text(model, scene):
    tokens = open_clip.tokenize(model.prompts(scene), context_length=model.context_length)
    return model.clip.encode_text(tokens.to(model.mean.device))


def _open_clip_image(model, images):
    return model.clip.encode_image((images - model.mean) / model.std)


def moae_forward_before(self, x):
    """MixtureOfAssessmentExperts.forward as it was before issue 28 (open_clip's QuickGELU MLPs, the
    adaptive experts stacked on a last axis): the "before" and "authors" steps run it, since the
    MoAE module the three share has changed with this issue."""
    g = self.gate(x).softmax(dim=-1)
    experts = torch.stack([expert(x) for expert in self.adaptive_experts], -1)
    return self.shared_expert(x) + self.scale * (experts * g.unsqueeze(-2)).sum(-1)


@contextlib.contextmanager
def moae_as_before(active: bool = True):
    from gamma_edge.model import MixtureOfAssessmentExperts

    current = MixtureOfAssessmentExperts.forward
    if active:
        MixtureOfAssessmentExperts.forward = moae_forward_before
    try:
        yield
    finally:
        MixtureOfAssessmentExperts.forward = current


def loss_this_step(model, images, target, scenes):
    return ((model.score(images, scenes) - target) ** 2).mean()


def loss_before(model, images, target, scenes):
    distinct = list(dict.fromkeys(scenes))
    text = torch.stack([_open_clip_text(model, s) for s in distinct])
    index = torch.tensor([distinct.index(s) for s in scenes], device=text.device)
    predicted = model.head.per_image(_open_clip_image(model, images), text[index], model.clip.logit_scale)
    return ((predicted - target) ** 2).mean()


def loss_authors(model, images, target, scenes):
    text = torch.stack([_open_clip_text(model, s) for s in scenes])                 # one text pass per sample
    predicted = model.head.per_image(_open_clip_image(model, images), text, model.clip.logit_scale)
    return ((predicted - target) ** 2).mean()


# name -> (loss function, fused Adam?); all but this step run the MoAE blocks as before (timed_step)
IMPLEMENTATIONS = {
    "this step (training.train)": (loss_this_step, True),
    "before issue 28": (loss_before, False),
    "authors (text per sample)": (loss_authors, False),
}


def timed_step(loss_fn, model, optimizer, images, target, scenes, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"), \
            moae_as_before(loss_fn is not loss_this_step):
        loss = loss_fn(model, images, target, scenes)
    optimizer.zero_grad(set_to_none=True)
    loss.float().backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - t0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gamma-vit-b-16")
    parser.add_argument("--scenes", type=int, default=1, choices=range(1, len(SCENE_ORDER) + 1),
                        help="distinct scenes in the batch of 8 (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip", default="", help="comma-separated: 'authors' and/or 'before'")
    return parser.parse_args()


def measure(args, model, device, scenes):
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    chosen = {name: spec for name, spec in IMPLEMENTATIONS.items() if name.split()[0] not in skip}
    trainable = list(model.trainable_parameters().values())
    optimizers = {name: torch.optim.Adam(trainable, lr=2e-5, fused=fused) for name, (_, fused) in chosen.items()}
    images = torch.rand(len(scenes), 3, 224, 224, device=device)
    target = torch.rand(len(scenes), device=device)
    times = {name: [] for name in chosen}
    for round_ in range(args.rounds + 1):                 # round 0 is the warm-up
        for name, (loss_fn, _) in chosen.items():
            seconds = timed_step(loss_fn, model, optimizers[name], images, target, scenes, device)
            if round_:
                times[name].append(seconds)
            print(f"  round {round_} {name}: {seconds:.3f} s", flush=True)
    return times


def report(args, model, device, scenes, times, gemm):
    from contract.hardware import detect_cpu

    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.trainable_parameters().values())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"\n{args.model}: {n_train / 1e6:.1f}M of {n_all / 1e6:.1f}M parameters train; batch {len(scenes)}, "
          f"{len(set(scenes))} distinct scene(s); {where}"
          f"{', bf16 autocast' if device.type == 'cuda' else ', fp32'}; torch {torch.__version__}")
    print(f"CPU: {detect_cpu().describe()}")
    print(f"GEMM probe (4096^2 fp32 matmul): {gemm[0]:.0f} GFLOP/s before, {gemm[1]:.0f} GFLOP/s after")
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = "before issue 28" if "before issue 28" in medians else next(iter(medians))
    # min beside the median: on a shared machine the least-disturbed step is the best view of its own cost
    minima = {name: min(t) for name, t in times.items()}
    print(f"| implementation | median s/step | min s/step | images/s (median) | x {base} (median / min) | per round s |")
    print("|---|---:|---:|---:|---:|---|")
    for name, median in medians.items():
        rounds = ", ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {median:.2f} | {minima[name]:.2f} | {len(scenes) / median:.3f} | "
              f"{medians[base] / median:.2f} / {minima[base] / minima[name]:.2f} | {rounds} |")
    first = next(iter(times))
    if base != first:
        paired = [b / a for a, b in zip(times[first], times[base])]
        print(f"{first} against {base}, per round: {', '.join(f'{r:.2f}x' for r in paired)}")


def main():
    args = parse_args()
    from gamma_edge.factory import create_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = create_model(args.model, seed=0).to(device).train()
    scenes = batch_scenes(args.scenes)
    gemm_before = gemm_gflops(device)
    times = measure(args, model, device, scenes)
    report(args, model, device, scenes, times, (gemm_before, gemm_gflops(device)))


if __name__ == "__main__":
    main()

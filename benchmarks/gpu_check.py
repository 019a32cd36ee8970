"""The GPU check (run it through benchmarks/gpu_check.sh, which says so and exits on a CPU-only machine).

    python benchmarks/gpu_check.py [--work DIR] [--out TABLE.md] [--rounds 5] [--model gamma-vit-b-16]

On one NVIDIA GPU, for the full Gamma graph (random ViT-B/16 weights with MoAE switched on, as
bench_export.py), one table:
  inference, batch 10 crops: PyTorch eager FP32 and bf16 autocast on the GPU (the baseline), ONNX
  Runtime CUDA FP32 and FP16, TensorRT FP16 (from the FP32 graph) and TensorRT INT8 (the tensorrt
  preset's static QDQ graph), each through the runtime's own backends (runtime/inference/backends.py),
  with max |diff| and SRCC against PyTorch FP32 on the 24 held-out crops, interleaved rounds, medians;
  training: one bf16 step (batch 8, one scene) as training.train runs it and as it ran before issue 28
  (bench_training.py's implementations), seconds per step and images/s.
Speeds are read as ratios within the run; the header names the GPU, the CPU and the versions.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# row -> (export options, runtime backend options); exports are shared by name
EXPORTS = {"fp32": dict(precision="fp32", fmt="onnx"), "fp16": dict(precision="fp16", fmt="onnx"),
           "int8-tensorrt": dict(precision="int8", fmt="onnx", preset="tensorrt", int8_method="static")}
ENGINE_ROWS = {
    "ONNX Runtime CUDA FP32": ("fp32", dict(device="cuda")),
    "ONNX Runtime CUDA FP16": ("fp16", dict(device="cuda")),
    "TensorRT FP16": ("fp32", dict(device="tensorrt", precision="fp16")),
    "TensorRT INT8": ("int8-tensorrt", dict(device="tensorrt")),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gamma-vit-b-16")
    parser.add_argument("--work", help="folder for the exports (default: a temporary folder)")
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-rounds", type=int, default=5)
    parser.add_argument("--calib-count", type=int, default=64)
    return parser.parse_args()


def pytorch_runners(model):
    """PyTorch eager on the GPU, FP32 and bf16 autocast: crops (uint8 BGR NHWC) -> (N, 1) scores."""
    import torch

    from export.validate import crops_to_images

    model = model.cuda()
    with torch.no_grad():
        text = torch.stack([model.text_features("natural")])

    def run(crops, bf16=False):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            images = crops_to_images(crops).cuda()
            features = model.clip.encode_image((images - model.mean) / model.std)
            scores = model.head(features, text, model.clip.logit_scale).float()
        torch.cuda.synchronize()
        return scores.cpu().numpy()

    return {"PyTorch eager FP32 (GPU)": run, "PyTorch eager bf16 autocast (GPU)": lambda c: run(c, True)}


def engine_runners(model, args, work: Path) -> tuple[dict, dict]:
    from contract.manifest import load_manifest
    from export import export_model
    from runtime.inference.backends import load_backend

    folders, runners, described = {}, {}, {}
    for name, options in EXPORTS.items():
        folders[name] = work / name
        if not (folders[name] / "manifest.json").is_file():
            export_model(model.cpu(), folders[name], scene="natural", overwrite=True, force=True, progress=False,
                         calib_count=args.calib_count, **options)
    for row, (export, options) in ENGINE_ROWS.items():
        try:
            backend = load_backend(load_manifest(folders[export]), **options)
        except Exception as exc:  # noqa: BLE001 - a missing provider is a row of the table, not a stop
            described[row] = f"not run: {str(exc).splitlines()[0][:120]}"
            continue
        runners[row], described[row] = backend.run, backend.describe().split(", model ")[0]
    return runners, described


def time_inference(runners: dict, crops, rounds: int) -> dict:
    times = {name: [] for name in runners}
    for r in range(rounds):
        for name, run in runners.items():
            run(crops)                                   # warm-up (TensorRT builds its engine on the first)
            start = time.perf_counter()
            run(crops)
            times[name].append(time.perf_counter() - start)
        print(f"inference round {r + 1}/{rounds}", flush=True)
    return times


def training_rows(model_name: str, rounds: int) -> dict:
    """bf16 training steps on the GPU: this step and the step before issue 28 (bench_training.py)."""
    import torch

    import bench_training as bt
    from gamma_edge.factory import create_model

    device = torch.device("cuda")
    model = create_model(model_name, seed=0).to(device).train()
    trainable = list(model.trainable_parameters().values())
    scenes = bt.batch_scenes(1)
    images, target = torch.rand(len(scenes), 3, 224, 224, device=device), torch.rand(len(scenes), device=device)
    steps = {name: spec for name, spec in bt.IMPLEMENTATIONS.items() if not name.startswith("authors")}
    optimizers = {name: torch.optim.Adam(trainable, lr=2e-5, fused=fused) for name, (_, fused) in steps.items()}
    times = {name: [] for name in steps}
    for r in range(rounds + 1):
        for name, (loss_fn, _) in steps.items():
            seconds = bt.timed_step(loss_fn, model, optimizers[name], images, target, scenes, device)
            if r:
                times[name].append(seconds)
    return {name: (statistics.median(t), len(scenes) / statistics.median(t)) for name, t in times.items()}


def table(args, rows: list[str]) -> str:
    import onnxruntime as ort
    import torch

    from contract.hardware import detect_cpu

    gpu = torch.cuda.get_device_name(0)
    head = [f"GPU check: {gpu}, CUDA {torch.version.cuda}, torch {torch.__version__}, onnxruntime "
            f"{ort.__version__}; CPU {detect_cpu().describe()}; model {args.model} (random weights, MoAE on); "
            f"{args.rounds} interleaved rounds, medians", ""]
    return "\n".join(head + rows)


def main():
    args = parse_args()
    from contract.correlation import srcc
    from export.calibration import validation_set

    from bench_export import build_model

    model = build_model(None, args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="gamma-gpu-check-"))
    crops = validation_set()[0]
    runners, described = engine_runners(model, args, work)
    runners = {**pytorch_runners(model), **runners}
    reference = runners["PyTorch eager FP32 (GPU)"](crops)
    times = time_inference(runners, crops[:10], args.rounds)
    base = statistics.median(times["PyTorch eager FP32 (GPU)"])
    rows = ["| inference, batch 10 | engine | ms/crop | x PyTorch FP32 | max abs diff | SRCC vs PyTorch FP32 |",
            "|---|---|---:|---:|---:|---:|"]
    for name, run in runners.items():
        scores = np.concatenate([run(crops[i:i + 8]) for i in range(0, len(crops), 8)])
        median = statistics.median(times[name])
        rows.append(f"| {name} | {described.get(name, 'torch')} | {median * 100:.2f} | {base / median:.2f} | "
                    f"{np.abs(scores - reference).max():.2g} | {srcc(reference[:, 0], scores[:, 0]):.4f} |")
    rows += [f"| {name} | {why} | - | - | - | - |" for name, why in described.items() if name not in runners]
    rows += ["", "| training step, batch 8, bf16 autocast | s/step | images/s |", "|---|---:|---:|"]
    rows += [f"| {name} | {s:.3f} | {ips:.1f} |" for name, (s, ips) in training_rows(args.model, args.train_rounds).items()]
    text = table(args, rows)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

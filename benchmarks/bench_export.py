"""Speed and fidelity of the exported full Gamma graph (ViT-B/16 + MoAE) on this CPU.

    python benchmarks/bench_export.py [--checkpoint gamma.safetensors] [--threads 2] [--rounds 3]

Exports the graph through export_model (the product path: fused MoAE, folded
input, constant text) as ORT FP32, ORT INT8 static and dynamic for every preset
that runs faithfully on this CPU (contract.hardware.applicable_presets: avx2
everywhere on x86, avx512_vnni too where the CPU has VNNI), OpenVINO FP32 (and
bf16 where the CPU computes bf16 natively) and OpenVINO INT8 (NNCF), plus an ORT
FP32 graph with the MoAE left unfused and the last block computed for every
token (export rewrites 3 and 5 undone) to show what those rewrites buy, and times
them against PyTorch eager FP32 (and eager bf16 autocast, what a user on an AMX
machine tries first) at batch 1 and batch 10 crops. The header names the CPU. The configurations are interleaved
(A B C ... A B C ...) in one process with a 4096^2 float32 GEMM probe in every
round, because this machine's speed drifts by up to 2x (docs/design.md sec. 5.2);
medians are reported and each speed is also given as a fraction of the GEMM peak.

Without --checkpoint the model is random-initialised with MoAE switched on
(nonzero scales, perturbed experts and gates): speed is representative, fidelity
figures are not (random weights give scores that barely vary).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.manifest import MANIFEST_NAME  # noqa: E402


def graph_flops(config, class_token_only: bool = True) -> float:
    """Multiply-adds x 2 per 224 crop of the deployed vision graph (text tower is constant).
    With `class_token_only` (export rewrite 5) the last block's query, attention output
    and MLP/MoAE run for the class token alone."""
    v = config.backbone["vision_cfg"]
    w, layers, patch, size = v["width"], v["layers"], v["patch_size"], v["image_size"]
    tokens = (size // patch) ** 2 + 1

    def block(queries: int, moae: bool) -> float:
        attn = tokens * w * 2 * w * 2 + queries * w * w * 2 * 2 + 2 * queries * tokens * w * 2
        mlp = queries * w * 4 * w * 2 * 2
        extra = config.num_experts * mlp + queries * w * config.num_experts * 2 if moae else 0.0
        return attn + mlp + extra

    flops = sum(block(1 if class_token_only and i == layers - 1 else tokens, i >= layers - config.moae_blocks)
                for i in range(layers))
    return float(flops + (tokens - 1) * 3 * patch * patch * w * 2 + w * config.embed_dim * 2)


def gemm_gflops(threads: int) -> float:
    import torch

    from interleaved import torch_gemm_gflops

    torch.set_num_threads(threads)
    return torch_gemm_gflops("cpu", repeats=1)


def build_model(checkpoint: str | None, name: str = "gamma-vit-b-16"):
    """The checkpoint's model, else `name` with random weights and its MoAE live: a fresh model's
    expert scale is zero, which would make the adaptive experts no part of the scores compared."""
    import torch

    from gamma_edge.factory import create_model

    if checkpoint:
        return create_model(checkpoint=checkpoint)
    model = create_model(name, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.fill_(0.5)
            elif ".adaptive_experts." in name or ".gate." in name:
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    return model


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--work", help="folder for the exported models (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--skip", default="", help="comma-separated configurations to leave out, by the names the table "
                                                   "prints (PyTorch eager FP32 cannot be left out: it is the baseline)")
    parser.add_argument("--reuse", action="store_true",
                        help="time the exports already in --work (from an earlier run of this script on the same "
                             "model) instead of exporting again; fidelity figures come from their manifests")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from export.calibration import validation_set
    from export.validate import reference_scores
    from contract import hardware
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="gamma-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(args.checkpoint)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    val, _ = validation_set()
    t0 = time.perf_counter()
    reference = reference_scores(model, val, ["natural"])
    print(f"reference scores: {time.perf_counter() - t0:.0f}s, spread (std) {reference.std():.4g}", flush=True)
    cpu = hardware.detect_cpu()
    print(f"CPU: {cpu.describe()}; kind {cpu.kind.name}", flush=True)

    runners, meta = eager_runners(model, skip)
    export_runners(model, args, skip, cpu, work, runners, meta)
    default_runner(args, skip, cpu, work, runners, meta)
    unrewritten_runner(model, args, skip, work, runners, meta)
    measure_fidelity(runners, meta, val, reference)
    times, gemm = time_rounds(runners, val[:10], args.rounds, args.threads)
    rows = table_rows(model, runners, meta, times, gemm)
    print_table(model, cpu, args, rows, gemm)
    print_default_ratio(rows, cpu)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu.describe(), "flops_per_crop": graph_flops(model.config),
                                               "gemm_gflops": gemm, "rows": rows, "threads": args.threads,
                                               "rounds": args.rounds}, indent=2))


def eager_runners(model, skip: set) -> tuple[dict, dict]:
    """PyTorch eager FP32 (the baseline) and eager bf16 autocast (what an AMX user tries first)."""
    import torch

    from export.validate import crops_to_images

    with torch.no_grad():
        text = torch.stack([model.text_features("natural")])

    def features(crops):
        # open_clip's own encode_image: the eager baseline every table of this benchmark used
        # (Gamma.image_features runs the last block for the class token alone since issue 28)
        images = crops_to_images(crops)
        return model.clip.encode_image((images - model.mean) / model.std)

    def eager(crops):
        with torch.no_grad():
            return model.head(features(crops), text, model.clip.logit_scale).numpy()

    def eager_bf16(crops):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model.head(features(crops), text, model.clip.logit_scale).float().numpy()

    eager_bytes = sum(p.numel() * 4 for n, p in model.named_parameters()
                      if not n.startswith("clip.transformer") and "token_embedding" not in n)
    flops = graph_flops(model.config, class_token_only=False)        # eager has no rewrite 5
    runners, meta = {"PyTorch eager FP32": eager}, {"PyTorch eager FP32": {"bytes": eager_bytes, "flops": flops}}
    if "PyTorch eager bf16 autocast" not in skip:
        runners["PyTorch eager bf16 autocast"] = eager_bf16
        meta["PyTorch eager bf16 autocast"] = {"bytes": eager_bytes, "measure": True, "flops": flops}
    return runners, meta


def export_configurations(cpu) -> dict:
    """The product's exports worth timing on this CPU: every INT8 preset that runs faithfully here."""
    from contract import hardware
    exports = {"ORT FP32": dict(precision="fp32", fmt="onnx")}
    for preset in hardware.applicable_presets(cpu):
        for method in ("static", "dynamic"):
            exports[f"ORT INT8 {method} {preset}"] = dict(precision="int8", fmt="onnx", int8_method=method,
                                                         preset=preset)
    exports["OpenVINO FP32"] = dict(precision="fp32", fmt="openvino")
    exports["OpenVINO INT8"] = dict(precision="int8", fmt="openvino")
    return exports


def export_runners(model, args, skip: set, cpu, work: Path, runners: dict, meta: dict) -> None:
    """Export (or reuse) each configuration through export_model; OpenVINO bf16 where native."""
    from export import export_model
    from export.validate import onnxruntime_runner, openvino_runner

    for name, kw in export_configurations(cpu).items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        out = work / name.replace(" ", "-").lower()
        reused = args.reuse and (out / MANIFEST_NAME).is_file()
        if reused:
            manifest = json.loads((out / MANIFEST_NAME).read_text())
        else:
            manifest = export_model(model, out, scene="natural", overwrite=True, force=True, progress=False,
                                    calib_count=args.calib_count, **kw).manifest
        p = manifest["parity"]
        file = out / manifest["model"]["file"]
        runner = onnxruntime_runner if kw["fmt"] == "onnx" else openvino_runner
        runners[name] = runner(file, args.threads)[0]
        meta[name] = {"bytes": p["file_bytes"], "max_abs_diff": p["max_abs_diff"], "srcc": p["srcc"],
                      "export_s": round(time.perf_counter() - t0, 1)}
        print(f"{'reused' if reused else 'exported'} {name} in {meta[name]['export_s']}s: "
              f"max|diff| {p['max_abs_diff']:.3g} SRCC {p['srcc']}", flush=True)
        if name == "OpenVINO FP32" and cpu.native_bf16 and "OpenVINO bf16" not in skip:
            runners["OpenVINO bf16"] = openvino_runner(file, args.threads, precision="bf16")[0]
            meta["OpenVINO bf16"] = {"bytes": p["file_bytes"], "measure": True}


DEFAULT_ROW = "default export"


def default_runner(args, skip: set, cpu, work: Path, runners: dict, meta: dict) -> None:
    """What `gamma-edge export --int8` builds on this CPU with no other option (export/choice.py), run as
    `gamma-edge score` runs it: the manifest read by the runtime, the backend chosen by --backend auto.
    Its graph is the configuration the default resolves to (exported above, with --force as every row:
    the fidelity gate is judged on the embedded model, not on random weights)."""
    from contract import hardware
    from contract.manifest import load_manifest
    from export.choice import format_plans
    from runtime.inference.backends import load_backend

    if DEFAULT_ROW in skip:
        return
    fmt = format_plans("auto", "int8", cpu)[0][0]
    same = ("OpenVINO INT8" if fmt == "openvino"
            else f"ORT INT8 {hardware.resolve_int8_method('auto', cpu)} {hardware.resolve_preset('auto', cpu).name}")
    folder = work / same.replace(" ", "-").lower()
    if not (folder / MANIFEST_NAME).is_file():
        print(f"{DEFAULT_ROW}: {same} was not exported (skipped?); no default row", flush=True)
        return
    backend = load_backend(load_manifest(folder), threads=args.threads, cpu=cpu, cache=work / "engine-cache")
    name = f"{DEFAULT_ROW} ({same} here)"
    runners[name] = backend.run
    meta[name] = dict(meta.get(same, {}), engine=backend.describe().split(", model ")[0])
    print(f"{name}: {meta[name]['engine']}", flush=True)


def unrewritten_runner(model, args, skip: set, work: Path, runners: dict, meta: dict) -> None:
    """The ORT FP32 graph without the fused MoAE and the class-token-only last block: what they buy."""
    from export.graph import build_graph
    from export.onnx_export import export_onnx, optimize_for_onnxruntime
    from export.validate import onnxruntime_runner

    name = "ORT FP32 without rewrites 3 and 5"
    if name in skip:
        return
    plain, fused = work / "unrewritten-plain.onnx", work / "unrewritten.onnx"
    if not (args.reuse and fused.is_file()):
        export_onnx(build_graph(model, ["natural"], fuse_moae=False, class_token_only=False), plain)
        optimize_for_onnxruntime(plain, fused, model.clip.visual.transformer.resblocks[0].attn.num_heads,
                                 model.clip.visual.transformer.width)
    runners[name] = onnxruntime_runner(fused, args.threads)[0]
    meta[name] = {"bytes": fused.stat().st_size, "measure": True,
                  "flops": graph_flops(model.config, class_token_only=False)}


def measure_fidelity(runners: dict, meta: dict, val, reference) -> None:
    """Max |diff| and SRCC vs PyTorch for the rows without an export manifest of their own."""
    from contract.correlation import srcc

    for name in [n for n in runners if meta[n].get("measure")]:
        got = np.concatenate([runners[name](val[i:i + 8]) for i in range(0, len(val), 8)])
        meta[name].update(max_abs_diff=float(np.abs(got - reference).max()), srcc=srcc(reference[:, 0], got[:, 0]))


def time_rounds(runners: dict, crops, rounds: int, threads: int) -> tuple[dict, list]:
    """Interleaved rounds (every configuration once per round, batch 1 and 10) with a GEMM probe each."""
    times = {name: {1: [], 10: []} for name in runners}
    gemm = []
    for r in range(rounds):
        gemm.append(gemm_gflops(threads))
        for batch in (1, 10):
            for name, run in runners.items():
                run(crops[:batch])                             # warm-up for this shape
                start = time.perf_counter()
                run(crops[:batch])
                times[name][batch].append(time.perf_counter() - start)
        print(f"round {r + 1}/{rounds} done, GEMM {gemm[-1]:.0f} GFLOP/s", flush=True)
    return times, gemm


def table_rows(model, runners: dict, meta: dict, times: dict, gemm: list) -> list[dict]:
    flops, peak = graph_flops(model.config), float(np.median(gemm))
    base = {b: np.median(times["PyTorch eager FP32"][b]) / b for b in (1, 10)}
    rows = []
    for name in runners:
        row = {"config": name, "size_mb": meta[name]["bytes"] / 1e6,
               "max_abs_diff": meta[name].get("max_abs_diff"), "srcc": meta[name].get("srcc")}
        for b in (1, 10):
            per_crop = float(np.median(times[name][b])) / b
            row[f"ms_per_crop_b{b}"] = per_crop * 1000
            row[f"img_s_b{b}"] = 1 / per_crop
            row[f"speedup_b{b}"] = base[b] / per_crop
            row[f"peak_frac_b{b}"] = meta[name].get("flops", flops) / per_crop / 1e9 / peak
        rows.append(row)
    return rows


def print_default_ratio(rows: list[dict], cpu) -> None:
    """The default export against the issue's bar: 5x eager FP32 on VNNI CPUs, else the best INT8 row."""
    default = next((r for r in rows if r["config"].startswith(DEFAULT_ROW)), None)
    if default is None:
        return
    int8 = [r for r in rows if "INT8" in r["config"] and not r["config"].startswith(DEFAULT_ROW)]
    best = max(int8, key=lambda r: r["speedup_b10"]) if int8 else None
    bar = "5.00x (VNNI CPU)" if cpu.vnni else (f"{best['speedup_b10']:.2f}x, the best INT8 row ({best['config']})"
                                               if best else "-")
    print(f"\n{default['config']}: {default['speedup_b10']:.2f}x PyTorch eager FP32 at batch 10 (bar {bar}); "
          f"best INT8 row {best['config'] if best else '-'} {best['speedup_b10'] if best else float('nan'):.2f}x")


def print_table(model, cpu, args, rows: list[dict], gemm: list) -> None:
    flops, peak = graph_flops(model.config), float(np.median(gemm))
    print(f"\nCPU: {cpu.describe()}")
    print(f"Gamma {model.config.backbone_name} MoAE graph, {flops / 1e9:.1f} GFLOP per 224 crop as exported "
          f"({graph_flops(model.config, False) / 1e9:.1f} without rewrite 5), {args.threads} threads, "
          f"GEMM probe median {peak:.0f} GFLOP/s (range {min(gemm):.0f}-{max(gemm):.0f}), "
          f"{args.rounds} interleaved rounds, medians\n")
    print("| configuration | ms/crop b1 | img/s b1 | ms/crop b10 | img/s b10 | x eager b10 | "
          "of GEMM peak b10 | size MB | max abs diff | SRCC vs PyTorch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        diff = "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2g}"
        rho = "-" if row["srcc"] is None else f"{row['srcc']:.3f}"
        print(f"| {row['config']} | {row['ms_per_crop_b1']:.0f} | {row['img_s_b1']:.2f} | "
              f"{row['ms_per_crop_b10']:.0f} | {row['img_s_b10']:.2f} | {row['speedup_b10']:.2f} | "
              f"{row['peak_frac_b10']:.0%} | {row['size_mb']:.0f} | {diff} | {rho} |")


if __name__ == "__main__":
    main()

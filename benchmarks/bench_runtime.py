"""Runtime benchmark: backend-only vs end-to-end `score` speed, and `run` on a 30 fps video.

    python benchmarks/bench_runtime.py --model exported/natural [--photos DIR]

Without --model it builds a FAKE model of ViT-like cost (patchify + MLP blocks, random
weights; it says so in its output) so the pipeline can be measured before an export
exists. Without --photos it uses the photographs bundled inside scikit-image's data
folder (read as files: nothing is downloaded).

This machine's speed drifts up to 2x within half an hour, so configurations are
interleaved (A B A B ...) in one process, medians are reported, and a 4096^2 float32
GEMM probe is recorded at the start and the end to read figures against the machine's peak.
Torch is never imported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import Scorer  # noqa: E402
from runtime.commands.benchmark import gemm_probe  # noqa: E402
from contract.manifest import FORMAT, FORMAT_VERSION, MANIFEST_NAME  # noqa: E402
from contract.video import open_video_writer  # noqa: E402
from runtime.live.runner import RunOptions, StreamRunner  # noqa: E402
from runtime.live.source import parse_source  # noqa: E402


def gemm_gflops(size: int = 4096, repeats: int = 3) -> float:
    return gemm_probe(size, repeats)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fake_model(folder: Path, blocks: int = 3) -> tuple[Path, float]:
    """A graph honouring the manifest contract with roughly a ViT's cost per crop:
    196 16x16 patches -> linear 768 -> `blocks` MLP blocks (768 -> 3072 -> 768) -> mean -> sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def tensor(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32) if array.dtype.kind == "f" else array, name))
        return name

    nodes += [
        helper.make_node("Cast", ["crops"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", tensor("scale", np.array(1 / 255, np.float32))], ["xs"]),
        helper.make_node("Reshape", ["xs", tensor("s6", np.array([-1, 14, 16, 14, 16, 3], np.int64))], ["p6"]),
        helper.make_node("Transpose", ["p6"], ["t6"], perm=[0, 1, 3, 2, 4, 5]),
        helper.make_node("Reshape", ["t6", tensor("s3", np.array([-1, 196, 768], np.int64))], ["tokens"]),
        helper.make_node("MatMul", ["tokens", tensor("embed", rng.standard_normal((768, 768)) / 28)], ["h0"]),
    ]
    for i in range(blocks):
        nodes += [
            helper.make_node("MatMul", [f"h{i}", tensor(f"w1_{i}", rng.standard_normal((768, 3072)) / 28)], [f"u{i}"]),
            helper.make_node("Relu", [f"u{i}"], [f"r{i}"]),
            helper.make_node("MatMul", [f"r{i}", tensor(f"w2_{i}", rng.standard_normal((3072, 768)) / 55)], [f"d{i}"]),
            helper.make_node("Add", [f"h{i}", f"d{i}"], [f"h{i + 1}"]),
        ]
    nodes += [
        helper.make_node("ReduceMean", [f"h{blocks}", tensor("axes", np.array([1], np.int64))], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", tensor("head", rng.standard_normal((768, 1)) / 28)], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "fake_vit",
        [helper.make_tensor_value_info("crops", TensorProto.UINT8, ["N", 224, 224, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"kind": "onnx", "file": "model.onnx", "precision": "fp32"},
        "input": {"name": "crops", "layout": "NHWC", "dtype": "uint8", "channel_order": "BGR",
                  "height": 224, "width": 224, "batch": "dynamic"},
        "output": {"name": "scores", "dtype": "float32", "shape": ["N", "S"]},
        "scenes": [{"name": "natural", "prompts": []}], "levels": [0.2, 0.4, 0.6, 0.8, 1.0],
        "preprocess": {"resize": {"max_long_side": 512, "min_short_side": 224}, "crop_size": 224,
                       "default_crops": "five"},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    gflop = 2 * 196 * 768 * 768 + blocks * 2 * (2 * 196 * 768 * 3072)
    return folder, gflop / 1e9


def bundled_photos(folder: Path) -> list[Path]:
    """The photographs shipped inside scikit-image (plus blurred / JPEG-degraded copies),
    written as JPEG files. Read from the package folder: no fetcher, no download."""
    import skimage

    source = Path(skimage.__file__).resolve().parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file in sorted(source.glob("*")):
        if file.suffix.lower() not in (".png", ".jpg"):
            continue
        image = cv2.imdecode(np.fromfile(file, np.uint8), cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < 64:
            continue
        for variant, picture, quality in (("", image, 92), ("_blur", cv2.GaussianBlur(image, (0, 0), 3), 92),
                                          ("_jpeg10", image, 10)):
            path = folder / f"{file.stem}{variant}.jpg"
            cv2.imwrite(str(path), picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
            paths.append(path)
    return paths


def backend_only(scorer: Scorer, crops_per_image: list[np.ndarray]) -> float:
    """images/s of the backend alone, batched exactly as score_many batches (crops in memory)."""
    start = time.perf_counter()
    pending, count = [], 0
    for crops in crops_per_image:
        if count and count + len(crops) > scorer.batch:
            scorer.backend.run(np.concatenate(pending))
            pending, count = [], 0
        pending.append(crops)
        count += len(crops)
    if pending:
        scorer.backend.run(np.concatenate(pending))
    return len(crops_per_image) / (time.perf_counter() - start)


def end_to_end(scorer: Scorer, paths: list[Path]) -> float:
    start = time.perf_counter()
    rows = list(scorer.score_many(paths))
    elapsed = time.perf_counter() - start
    assert all(row.ok for row in rows), [row.error for row in rows if not row.ok]
    return len(paths) / elapsed


def write_video(path: Path, frames: int, size=(640, 480), fps: float = 30.0) -> Path:
    width, height = size
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (height // 8, width // 4, 3), dtype=np.uint8), (width * 2, height),
                      interpolation=cv2.INTER_CUBIC)
    writer = open_video_writer(path, fps, size)
    for i in range(frames):
        shift = (i * 3) % width
        writer.write(np.ascontiguousarray(base[:, shift:shift + width]))
    writer.release()
    return path


class MemoryProbe:
    """A --jsonl sink that samples resident memory as the run goes."""

    def __init__(self, every: int):
        self.every, self.samples = every, []

    def write(self, line: str) -> None:
        record = json.loads(line)
        frame = record.get("frame")
        if "score" in record and (frame is not None) and (not self.samples or frame // self.every > self.samples[-1][0] // self.every):
            self.samples.append((frame, rss_mib()))

    def flush(self) -> None:
        pass


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    gemm_start = gemm_gflops()
    model, paths = model_and_photos(args, work, gemm_start)
    scorers, results = measure_score(args, model, paths)
    memory, summary = measure_run(args, model, work)
    gemm_end = gemm_gflops()
    first = next(iter(scorers.values()))
    report_score(args, paths, first, scorers, results)
    report_run(args, summary, memory)
    print(f"GEMM probe: {gemm_start:.0f} GFLOP/s at start, {gemm_end:.0f} GFLOP/s at end")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="exported model folder (default: a fake ViT-cost model)")
    parser.add_argument("--photos", type=Path, help="folder of photos (default: scikit-image's bundled photos)")
    parser.add_argument("--max-photos", type=int, default=24)
    parser.add_argument("--crops", default=None, help="crop protocol for score (default: the manifest's)")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (A B A B ...)")
    parser.add_argument("--video-frames", type=int, default=5000)
    parser.add_argument("--video-every", type=int, default=10, help="score every N-th video frame")
    parser.add_argument("--video-crops", default="center")
    return parser.parse_args()


def model_and_photos(args, work: Path, gemm_start: float) -> tuple[Path, list[Path]]:
    """The model (the one given, or a fake one) and the photos to score, announced."""
    if args.model:
        model, note = args.model, f"model {args.model}"
    else:
        model, gflop = fake_model(work / "fake")
        note = f"FAKE model (no export given): ViT-like MLP stack, {gflop:.1f} GFLOP per crop, random weights"
    if args.photos:
        from runtime.dataset.inputs import expand_paths
        paths = [Path(p) for p in expand_paths([str(args.photos)])]
    else:
        paths = bundled_photos(work / "photos")
    paths = paths[::max(1, len(paths) // args.max_photos)][:args.max_photos]
    print(f"# {note}", flush=True)
    print(f"# {len(paths)} photos; GEMM probe (4096^2 fp32 matmul) at start: {gemm_start:.0f} GFLOP/s", flush=True)
    return model, paths


def measure_score(args, model: Path, paths: list[Path]) -> tuple[dict, dict[str, list[float]]]:
    """Each backend, backend-only and end to end, in interleaved rounds: (scorers, images/s per round)."""
    scorers = {name: Scorer(model, backend=name, crops=args.crops) for name in args.backends.split(",")}
    first = next(iter(scorers.values()))
    crops = [first.crops_of(p) for p in paths]
    for scorer in scorers.values():
        print(f"# {scorer.describe()}", flush=True)
        scorer.backend.run(crops[0])                      # warm-up
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for name, scorer in scorers.items():
            results.setdefault(f"{name} backend-only", []).append(backend_only(scorer, crops))
            results.setdefault(f"{name} end-to-end", []).append(end_to_end(scorer, paths))
        print(f"# round {round_ + 1}/{args.rounds} done", flush=True)
    return scorers, results


def measure_run(args, model: Path, work: Path) -> tuple[dict, dict]:
    """`run` on a synthetic 30 fps video, sampling resident memory: ({rss_start, rss_end, samples}, summary)."""
    video = write_video(work / "video.mp4", args.video_frames)
    runner_scorer = Scorer(model, crops=args.video_crops)
    probe = MemoryProbe(every=max(1, args.video_frames // 5))
    rss_start = rss_mib()
    summary = StreamRunner(runner_scorer, parse_source(str(video)),
                           RunOptions(every=args.video_every, jsonl=probe), log=lambda line: None).run().as_dict()
    rss_end = rss_mib()
    return {"rss_start": rss_start, "rss_end": rss_end, "samples": probe.samples}, summary


def report_score(args, paths: list[Path], first, scorers: dict, results: dict[str, list[float]]) -> None:
    print()
    print(f"score on {len(paths)} photos, crops {first.crops}, batch {first.batch} crops "
          f"(median of {args.rounds} interleaved rounds)")
    print(f"{'configuration':<28}{'images/s':>10}{'min':>8}{'max':>8}")
    for name, values in results.items():
        print(f"{name:<28}{statistics.median(values):>10.2f}{min(values):>8.2f}{max(values):>8.2f}")
    for name in scorers:
        ratio = statistics.median(results[f"{name} end-to-end"]) / statistics.median(results[f"{name} backend-only"])
        print(f"{name}: end-to-end = {ratio:.1%} of backend-only (target >= 90%)")


def report_run(args, summary: dict, memory: dict) -> None:
    print()
    print(f"run on a 30 fps 640x480 video, {summary['frames_read']} frames, every {args.video_every}th scored, "
          f"crops {args.video_crops} (onnxruntime)")
    print(f"{'frames scored/s':<34}{summary['scored_per_s']:>10.2f}")
    print(f"{'frames read/s':<34}{summary['frames_read'] / summary['elapsed_s']:>10.1f}")
    print(f"{'capture-to-score latency p50 ms':<34}{summary['latency_ms_p50']:>10.1f}")
    print(f"{'capture-to-score latency p95 ms':<34}{summary['latency_ms_p95']:>10.1f}")
    print(f"{'RSS at start MiB':<34}{memory['rss_start']:>10.1f}")
    for frame, rss in memory["samples"]:
        print(f"{'RSS at frame ' + str(frame) + ' MiB':<34}{rss:>10.1f}")
    print(f"{'RSS after ' + str(summary['frames_read']) + ' frames MiB':<34}{memory['rss_end']:>10.1f}")
    if len(memory["samples"]) >= 2:
        print(f"{'RSS growth after warm-up MiB':<34}{memory['rss_end'] - memory['samples'][0][1]:>10.1f}")


if __name__ == "__main__":
    main()

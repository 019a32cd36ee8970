"""End-to-end scoring with ONNX Runtime's intra-op threads spinning vs sleeping when idle.

    python benchmarks/bench_ort_spinning.py [--model runtime/models/demo] [--rounds 5]
    python benchmarks/bench_ort_spinning.py --graph WORK/ort-int8-dynamic/model.onnx [--batch 10]

runtime/inference/backends.py turns spinning off: on a 2-core machine spinning threads take the
cores the image decoder needs between batches. This measures that choice: two Scorers
on the same model (one with ONNX Runtime's default, spinning), scoring the same
photographs (the images scikit-image ships, full size), interleaved rounds, medians.
With --graph it times inference alone instead (no decoding): two sessions on an exported
.onnx (e.g. bench_export.py's ViT-B/16 graphs), spinning and sleeping, on random crops.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interleaved import interleaved_seconds, print_median_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the embedded demo model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--graph", help="an exported .onnx: time inference alone at --batch crops")
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    if args.graph:
        return inference_only(args)

    import onnxruntime as ort
    import skimage

    from runtime import Scorer
    from runtime.inference.scorer import DEMO_MODEL

    data = Path(skimage.__file__).resolve().parent / "data"
    paths = sorted(p for p in data.iterdir() if p.suffix in (".png", ".jpg"))[:args.photos]
    model = args.model or DEMO_MODEL
    original = ort.SessionOptions.add_session_config_entry

    def scorer(spinning: bool) -> Scorer:
        def entry(self, key, value):
            if not (spinning and key == "session.intra_op.allow_spinning"):
                original(self, key, value)
        ort.SessionOptions.add_session_config_entry = entry
        try:
            return Scorer(model, backend="onnxruntime", device="cpu", threads=args.threads)
        finally:
            ort.SessionOptions.add_session_config_entry = original

    scorers = {"spinning (ONNX Runtime default)": scorer(True), "sleeping (gamma-edge)": scorer(False)}
    for s in scorers.values():
        list(s.score_many(paths))                                        # warm-up
    seconds = interleaved_seconds({name: (lambda s=s: list(s.score_many(paths))) for name, s in scorers.items()},
                                  args.rounds)
    print(f"{len(paths)} photos, {args.threads} threads, {args.rounds} interleaved rounds; end-to-end images/s")
    print_median_table("idle intra-op threads", "images/s", {n: [len(paths) / t for t in v] for n, v in seconds.items()},
                       digits=1)


def inference_only(args) -> None:
    import numpy as np
    import onnxruntime as ort

    crops = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    runs = {}
    for name, spin in (("spinning (ONNX Runtime default)", "1"), ("sleeping (gamma-edge)", "0")):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        session = ort.InferenceSession(args.graph, options, providers=["CPUExecutionProvider"])
        session.run(None, {"crops": crops})                              # warm-up
        runs[name] = lambda session=session: session.run(None, {"crops": crops})
    seconds = interleaved_seconds(runs, args.rounds)
    print(f"{args.graph}: batch {args.batch}, {args.threads} threads, {args.rounds} interleaved rounds; inference only")
    print_median_table("idle intra-op threads", "ms per crop", {n: [t * 1000 / args.batch for t in v]
                                                                for n, v in seconds.items()})


if __name__ == "__main__":
    main()

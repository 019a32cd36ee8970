"""Weight-only INT8 / INT4 (ONNX Runtime MatMulNBits) against the FP32 graph it came from.

    python benchmarks/bench_matmulnbits.py --model /tmp/bench3/ort-fp32/model.onnx [--bits 4 --block 32]

Takes an FP32 graph exported by bench_export.py (or gamma-edge export), quantizes the
weights of its MatMuls to `bits` (accuracy level 4: int8 compute), leaving the last
block, the MoAE gates and the head in float like the INT8 export does, then times both
graphs at batch 10 crops, interleaved, and prints ms per crop and the largest score
difference. A measurement, not a product path (docs/export.md, "Tried, no gain").
"""
from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

from interleaved import interleaved_seconds, print_median_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an FP32 .onnx graph with a 'crops' input")
    parser.add_argument("--bits", type=int, default=8, choices=(4, 8))
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    model = onnx.load(args.model)
    blocks = [int(m.group(1)) for n in model.graph.node if (m := re.search(r"/blocks\.(\d+)/", n.name))]
    last = f"/blocks.{max(blocks)}/" if blocks else "\0"
    keep = [n.name for n in model.graph.node if "/head/" in n.name or "/gate/" in n.name or last in n.name]
    config = DefaultWeightOnlyQuantConfig(block_size=args.block, is_symmetric=True, accuracy_level=4, bits=args.bits)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=keep)
    quantizer.process()
    out = Path(tempfile.mkdtemp(prefix="gamma-nbits-")) / "model.onnx"
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {f"MatMulNBits {args.bits}-bit, block {args.block}": ort.InferenceSession(str(out), options),
                "FP32": ort.InferenceSession(args.model, options)}
    crops = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    outputs = {name: s.run(None, {"crops": crops})[0] for name, s in sessions.items()}
    seconds = interleaved_seconds({name: (lambda s=s: s.run(None, {"crops": crops})) for name, s in sessions.items()},
                                  args.rounds)
    first, second = outputs.values()
    print(f"max |diff| of the scores: {float(np.abs(first - second).max()):.2g}")
    print_median_table("graph", "ms per crop", {n: [t / args.batch * 1000 for t in v] for n, v in seconds.items()})


if __name__ == "__main__":
    main()

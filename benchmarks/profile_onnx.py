"""Where an exported graph spends its time: ONNX Runtime's profiler, summed per operator type.

    python benchmarks/profile_onnx.py --model /tmp/bench3/ort-fp32/model.onnx [--batch 10] [--by-node]

Runs the graph twice on random uint8 crops (2 threads, CPU) with profiling on and prints the
operators (or, with --by-node, the nodes with block numbers folded) that took the most kernel time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re

import numpy as np


KERNEL = "_kernel_time"


def read_profile(session) -> tuple[list[dict], list[dict]]:
    """End `session`'s profiling: (kernel events of its nodes, its model_run events). The JSON file
    ONNX Runtime writes into the working folder is removed. A node event's "name" is the node's
    name + "_kernel_time"; "args"]["op_name"] its operator; "ts" / "dur" are in microseconds."""
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.unlink(path)
    return ([e for e in events if e.get("cat") == "Node" and e["name"].endswith(KERNEL)],
            [e for e in events if e.get("name") == "model_run"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an exported .onnx graph with a 'crops' input")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--by-node", action="store_true", help="group by node name (blocks.N folded), not op type")
    args = parser.parse_args()

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    crops = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    runs = 2
    for _ in range(runs):
        session.run(None, {"crops": crops})
    total = collections.Counter()
    for event in read_profile(session)[0]:
        op = event["args"]["op_name"]
        key = op + " " + re.sub(r"/blocks\.\d+/", "/blocks.N/", event["name"][:-len(KERNEL)]) if args.by_node else op
        total[key] += event["dur"]
    overall = sum(total.values())
    print(f"batch {args.batch}, {args.threads} threads, kernel time per run (mean of {runs})")
    print("| operator | ms per run | share |")
    print("|---|---:|---:|")
    for key, microseconds in total.most_common(args.top):
        print(f"| {key} | {microseconds / runs / 1000:.1f} | {microseconds / overall:.1%} |")


if __name__ == "__main__":
    main()

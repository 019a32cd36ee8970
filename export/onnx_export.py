"""The deployable module -> one self-contained .onnx file with a dynamic batch.

torch's TorchScript exporter (`dynamo=False`) gives a single-file graph in under
a second for the tiny model and ~15 s for ViT-B/16; the dynamo exporter is the
fallback where the TorchScript one is gone. The example input has batch 2 and
the batch axis is declared dynamic (a batch-1 example silently fixes the batch,
docs/design.md sec. 5.2).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from export.graph import INPUT_NAME, OUTPUT_NAME, DeployableGamma

OPSET = 17


def export_onnx(graph: DeployableGamma, path: Path, exporter: str = "torchscript") -> Path:
    """Write `graph` to `path` (single file, weights inside, batch axis named N)."""
    example = torch.zeros(2, graph.image_size, graph.image_size, 3, dtype=torch.uint8)
    path = Path(path)
    if exporter == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")           # the TorchScript exporter's deprecation notice
                torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=OPSET,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
                                  do_constant_folding=True)
            return path
        except TypeError:                                 # a torch without the TorchScript exporter
            exporter = "dynamo"
    if exporter != "dynamo":
        raise ValueError(f"unknown exporter {exporter}")
    batch = torch.export.Dim("N", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=18, optimize=True,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path), external_data=False)
    return path


def optimize_for_onnxruntime(src: Path, dst: Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's offline transformer fusions (LayerNorm, QuickGelu, bias fusion, attention
    where its pattern matcher recognises it). The result uses com.microsoft operators: it is
    for ONNX Runtime only. The caller checks parity and keeps the plain graph if it fails."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("vit")
    model = optimize_model(str(src), model_type="vit", num_heads=num_heads, hidden_size=hidden_size,
                           optimization_options=options, opt_level=0, use_gpu=False)
    model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst


def fusion_counts(path: Path) -> dict:
    """How many of each operator the graph holds (for the manifest's graph description)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def to_fp16(src: Path, dst: Path) -> Path:
    """FP16 weights and activations for GPUs; uint8 input and float32 output are kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                     op_block_list=["LayerNormalization", "ReduceL2", "Softmax"])
    onnx.save(model, str(dst))
    return dst


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())

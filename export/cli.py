"""`gamma-edge export`: a checkpoint -> a validated graph folder with its manifest."""
from __future__ import annotations

import click

from contract.errors import user_errors
from contract.hardware import INT8_METHODS, PRESET_CHOICES


@click.command("export")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="A gamma-edge checkpoint (.safetensors). Default: the embedded demo model.")
@click.option("--scene", default="natural", show_default=True,
              help="Scene to score: a name, several separated by commas, or 'all' (one graph, one column per scene).")
@click.option("--int8", "precision", flag_value="int8", help="INT8 (static QDQ for ONNX Runtime, NNCF for OpenVINO).")
@click.option("--fp16", "precision", flag_value="fp16", help="FP16 weights and activations (for GPUs).")
@click.option("--fp32", "precision", flag_value="fp32", default=True, help="FP32 (the default).")
@click.option("--format", "fmt", type=click.Choice(["auto", "onnx", "openvino", "both", "triton"]), default="auto",
              show_default=True,
              help="auto: with --int8 the fastest faithful INT8 graph for this CPU (OpenVINO with VNNI/AMX, else "
                   "ONNX Runtime), else ONNX; both: an ONNX Runtime and an OpenVINO INT8 graph in one folder, "
                   "the runtime picking the one for the CPU it finds; triton: a Triton model repository, one ONNX "
                   "model per scene with its config.pbtxt and manifest.")
@click.option("--calib", "calib_dir", type=click.Path(),
              help="Folder of representative images for INT8 calibration. Default: photos made from skimage.data.")
@click.option("--calib-count", default=300, show_default=True, type=click.IntRange(8, 100000),
              help="Number of 224x224 calibration crops.")
@click.option("--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True,
              help="ONNX Runtime INT8 target: auto picks it for this machine's CPU (avx2 without VNNI, "
                   "avx512_vnni with AVX512-VNNI/AVX-VNNI/AMX, arm64); name one to build for another machine "
                   "(tensorrt for GPUs). See docs/hardware.md; 'gamma-edge info' shows this CPU.")
@click.option("--int8-method", type=click.Choice(INT8_METHODS), default="auto", show_default=True,
              help="ONNX Runtime INT8: static QDQ (calibrated) or dynamic (activations quantized at run time); "
                   "auto: the one measured fastest on this kind of CPU (dynamic on x86), falling back to static "
                   "if it misses the fidelity gate.")
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Output folder. Default: gamma-SCENE-PRECISION-FORMAT in the current folder.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--force", is_flag=True, help="Write an INT8 graph even if it misses its fidelity gate.")
@click.option("--quiet", is_flag=True, help="Print only the validation report.")
@click.option("--triton-max-batch", type=click.IntRange(min=1), default=None,
              help="[triton] max_batch_size: crops per batch Triton may form. Default: 32.")
@click.option("--triton-device", type=click.Choice(["cpu", "gpu"]), default=None,
              help="[triton] instance_group kind. Default: gpu for --fp16, else cpu.")
@click.option("--triton-instances", type=click.IntRange(min=1), default=None,
              help="[triton] Model instances per device. Default: 1.")
def export_command(checkpoint, scene, precision, fmt, calib_dir, calib_count, preset, int8_method, out_dir,
                   overwrite, force, quiet, **triton):
    """Export a checkpoint to a per-scene ONNX or OpenVINO graph, validated against PyTorch.

    \b
    The graph takes uint8 BGR crops (N, 224, 224, 3) as OpenCV gives them and
    returns scores (N, S). A manifest.json beside it (and inside it) tells the
    runtime everything; the validation report is printed and stored there.

    \b
    Examples:
      gamma-edge export --checkpoint gamma.safetensors --scene natural
      gamma-edge export --checkpoint gamma.safetensors --scene all --int8 --calib photos/
      gamma-edge export --checkpoint gamma.safetensors --int8 --format both   # any CPU: the runtime picks
      gamma-edge export --checkpoint gamma.safetensors --int8 --preset avx512_vnni --format onnx   # for a VNNI server
      gamma-edge export --checkpoint gamma.safetensors --scene aesthetics --format openvino --int8
      gamma-edge export --checkpoint gamma.safetensors --scene natural,aigc --format triton --out model_repository
    """
    from export.pipeline import export_model

    if out_dir is None:
        from contract.hardware import detect_cpu
        from export.choice import folder_name

        named = folder_name(fmt, precision, detect_cpu(), onnx_options=(preset, int8_method) != ("auto", "auto"))
        out_dir = f"gamma-{scene.replace(',', '+')}-{precision}-{named}"
    if fmt == "triton" or any(value is not None for value in triton.values()):
        _export_triton(checkpoint, out_dir, scene, precision, fmt, quiet, triton,
                       dict(calib_dir=calib_dir, calib_count=calib_count, preset=preset, int8_method=int8_method,
                            overwrite=overwrite, force=force))
        return
    with user_errors():
        result = export_model(checkpoint, out_dir, scene=scene, precision=precision, fmt=fmt, calib_dir=calib_dir,
                              overwrite=overwrite, force=force, progress=not quiet, preset=preset,
                              int8_method=int8_method, calib_count=calib_count)
    if quiet:
        click.echo(result.report)


def _export_triton(checkpoint, out_dir, scene, precision, fmt, quiet, triton: dict, export_args: dict) -> None:
    """--format triton: one model per scene in a Triton model repository (export/triton.py)."""
    from contract.errors import UserError
    from export.triton import TritonOptions, export_triton_repository

    with user_errors():
        if fmt != "triton":
            given = [f"--{name.replace('_', '-')}" for name, value in triton.items() if value is not None]
            raise UserError(f"the option(s) {', '.join(given)} need --format triton; add it or drop them")
        options = TritonOptions(**{name: value for name, value in (
            ("max_batch_size", triton["triton_max_batch"]), ("device", triton["triton_device"]),
            ("instances", triton["triton_instances"])) if value is not None})
        results = export_triton_repository(checkpoint, out_dir, scene=scene, precision=precision, options=options,
                                           progress=not quiet, **export_args)
    if quiet:
        click.echo("\n".join(result.report for result in results))

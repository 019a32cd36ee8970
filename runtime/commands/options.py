"""What the runtime's commands share: option groups that arrive as one settings object, the
model options of score and run, the scorer they build, and where their output goes."""
from __future__ import annotations

import dataclasses
import functools
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from contract.errors import UserError
from contract.hardware import PRECISIONS
from contract.manifest import CROP_PROTOCOLS


def option_group(settings_class, argument: str, options: list):
    """Decorate a command with `options`; their values reach it as one `settings_class` object
    named `argument` (a command with 30 options is a few settings objects, not 30 parameters)."""
    names = [field.name for field in dataclasses.fields(settings_class)]

    def decorate(function):
        @functools.wraps(function)
        def command(*args, **kwargs):
            kwargs[argument] = settings_class(**{name: kwargs.pop(name) for name in names})
            return function(*args, **kwargs)

        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """Which model scores, on which engine and device, and how images are cropped."""

    model: Path | None = None
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    batch: int | None = None
    precision: str = "auto"
    crops: str | None = None
    seed: int = 0
    scene: str | None = None
    quiet: bool = False


# The options after --model, shared with `gamma-edge serve` (which takes several --model).
ENGINE_OPTIONS = [
    click.option("--backend", type=click.Choice(("auto", "onnxruntime", "openvino")), default="auto",
                 show_default=True, help="Inference engine; auto follows the model's kind."),
    click.option("--device", type=click.Choice(("auto", "cpu", "cuda", "tensorrt", "gpu", "npu")),
                 default="auto", show_default=True,
                 help="auto: TensorRT or CUDA when a GPU is usable, else CPU. gpu/npu: OpenVINO devices."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="CPU inference threads. Default: all cores."),
    click.option("--batch", type=click.IntRange(min=1), default=None,
                 help="Crops per inference call (images are never split). Default: 16."),
    click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                 help="auto: the model's own (TensorRT: fp16 for an fp32 model). bf16: OpenVINO on a CPU with "
                      "AVX512_BF16 or AMX (faster, scores move by about 1e-3; see 'gamma-edge info')."),
    click.option("--crops", type=click.Choice(CROP_PROTOCOLS), default=None,
                 help="Crop protocol; default: the manifest's. random10 is the paper's."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random10 crops."),
    click.option("--scene", default=None, help="Scene to score (default: the model's first)."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar or backend line on stderr."),
]
model_options = option_group(ModelChoice, "choice", [
    click.option("--model", "-m", type=click.Path(path_type=Path), default=None,
                 help="Exported model folder (holding manifest.json), or its .onnx / .xml file. "
                      "Default: the embedded demo model."),
    *ENGINE_OPTIONS,
])


def make_scorer(choice: ModelChoice, scorer_class=None, **extra):
    """The Scorer the options ask for; says on stderr which backend runs, and any warning of it."""
    from runtime.inference.scorer import Scorer

    scorer = (scorer_class or Scorer)(choice.model, backend=choice.backend, device=choice.device, crops=choice.crops,
                                      seed=choice.seed, threads=choice.threads, batch=choice.batch,
                                      precision=choice.precision, scene=choice.scene, **extra)
    if not choice.quiet:
        click.echo(f"scoring with {scorer.describe()}", err=True)
    for note in scorer.backend.notes:
        click.echo(f"warning: {note}", err=True)
    return scorer


@contextmanager
def output_stream(out: Path | None, option: str):
    """Where a command writes its results: stdout for none or '-', else the file, or one sentence."""
    if out is None or str(out) == "-":
        yield sys.stdout
        return
    try:
        handle = open(out, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise UserError(f"{option} '{out}' cannot be written ({exc.strerror}); check the folder") from None
    with handle:
        yield handle

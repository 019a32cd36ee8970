"""The `gamma-edge` command line.

Every command lives in the package that owns the work (export/, runtime/, ...)
and is imported only when it is invoked, so `gamma-edge --help` never pays for
torch, onnxruntime or OpenVINO.
"""
from __future__ import annotations

import importlib
import sys

import click

# name -> (module:attribute, one-line help shown by `gamma-edge --help`)
COMMANDS = {
    "demo": ("runtime.commands.demo:demo_command",
             "Run the whole chain on the embedded demo model in about a minute."),
    "score": ("runtime.commands.score:score_command",
              "Score images, folders or globs with an exported model (torch-free)."),
    "run": ("runtime.commands.run:run_command",
            "Score a camera, video file or network stream live (torch-free)."),
    "baseline": ("runtime.commands.baseline:baseline_command",
                 "Show or reset the normal each watched camera has learned (torch-free)."),
    "serve": ("runtime.commands.serve:serve_command",
              "Serve models over HTTP to other programs (KServe v2 / Triton protocol, POST /score)."),
    "export": ("export.cli:export_command",
               "Export a checkpoint to per-scene ONNX / OpenVINO graphs (FP32, FP16, INT8)."),
    "convert": ("gamma_edge.commands.convert:convert_command",
                "Import the official Gamma weights (.pth) into a gamma-edge checkpoint."),
    "benchmark": ("runtime.commands.benchmark:benchmark_command",
                  "Measure size, load time, latency and fidelity of each backend and precision."),
    "info": ("runtime.commands.info:info_command",
             "Show the CPU, engines and native precisions here, and the INT8 path to export for it."),
    "scenes": ("gamma_edge.commands.scenes:scenes_command",
               "List the scenes (SDP prompt sets) a model can score."),
}
OWN_PACKAGES = {"contract", "gamma_edge", "export", "runtime", "training"}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            return _unavailable(name, missing)
        return getattr(module, attr)

    def invoke(self, ctx):
        # Commands import their heavy packages when they run, not when they load (so that --help
        # stays fast): a missing one surfaces here and gets the same sentence as a missing import above.
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if not missing or missing in OWN_PACKAGES:
                raise                                        # our own code is broken: show it
            raise click.ClickException(_missing_package(ctx.invoked_subcommand, missing)) from None

    def format_commands(self, ctx, formatter):
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, missing: str) -> click.Command:
    """A stand-in command that explains which install extra is missing."""

    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stand_in(args):
        raise click.ClickException(_missing_package(name, missing))

    return stand_in


def _missing_package(command: str, missing: str) -> str:
    return (f"'gamma-edge {command}' needs the package '{missing}', which is not installed; "
            f"install the full toolkit with: pip install 'gamma-edge[full]'")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gamma-edge")
def main():
    """gamma-edge: train, export and run Gamma image assessment from GPU to the edge.

    \b
    Start here:
      gamma-edge demo                       # the whole chain on the embedded demo model
      gamma-edge score photos/              # score a folder (demo model unless --model)
      gamma-edge run video.mp4 --jsonl -    # score a video / camera / stream live
      gamma-edge convert gamma_weight.pth --out gamma.safetensors
      gamma-edge export --checkpoint gamma.safetensors --scene natural --int8
    Training is a Python program: python -m training.train --help
    """


if __name__ == "__main__":
    sys.exit(main())

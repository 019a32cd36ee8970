"""The `--engine ray` branch of `gamma-edge score`: its options, checked; the run; its summary line."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from contract.errors import UserError, user_errors
from runtime.commands.options import ModelChoice, option_group


@dataclasses.dataclass(frozen=True)
class RayChoice:
    """score's options that only the Ray engine takes (None: not given)."""

    ray_address: str | None = None
    actors: int | None = None
    block_size: int | None = None
    keep_file: Path | None = None
    keep_above: float | None = None
    keep_top: float | None = None

    def given(self) -> list[str]:
        """The options given, as the user wrote them."""
        return [OPTION_NAMES[name] for name, value in dataclasses.asdict(self).items() if value is not None]


OPTION_NAMES = {"ray_address": "--ray-address", "actors": "--actors", "block_size": "--block-size",
                "keep_file": "--keep", "keep_above": "--keep-above", "keep_top": "--keep-top"}

ray_options = option_group(RayChoice, "ray", [
    click.option("--ray-address", default=None, help="[ray] The Ray cluster to join (HOST:PORT or auto); "
                                                     "default: start a local Ray."),
    click.option("--actors", type=click.IntRange(min=1), default=None,
                 help="[ray] Scoring actors, one backend each. Default: one per GPU, else one single-threaded "
                      "actor per CPU (--threads T: one per T CPUs)."),
    click.option("--block-size", type=click.IntRange(min=1), default=None,
                 help="[ray] Images per block: the unit of memory, of part files and of resuming. Default: 128."),
    click.option("--keep", "keep_file", type=click.Path(path_type=Path), default=None,
                 help="[ray] Write the keep-list (paths, one a line) chosen by --keep-above / --keep-top."),
    click.option("--keep-above", type=float, default=None, help="[ray] Keep images scoring at least this."),
    click.option("--keep-top", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                 help="[ray] Keep the best-scoring fraction of the scored images (e.g. 0.3)."),
])


def score_on_ray(engine: str, paths, out, fmt: str, ray: RayChoice, path_column: str, choice: ModelChoice,
                 max_pixels: int) -> None:
    """Score on Ray and exit 1 when an image or an input failed, as the local engine does."""
    with user_errors():
        if engine != "ray":
            raise UserError(f"{', '.join(ray.given())} work only with --engine ray; add --engine ray")
        if fmt != "table":
            raise UserError("--engine ray always writes Parquet (to --out); drop --format")
        from runtime.dataset.ray_engine import RayOptions, score_with_ray

        given = dict(address=ray.ray_address, actors=ray.actors, block_size=ray.block_size, keep=ray.keep_file,
                     keep_above=ray.keep_above, keep_top=ray.keep_top)
        options = RayOptions(path_column=path_column, **{name: value for name, value in given.items()
                                                         if value is not None})
        summary = score_with_ray(paths, out, options, quiet=choice.quiet, max_pixels=max_pixels,
                                 **{field.name: getattr(choice, field.name) for field in dataclasses.fields(choice)
                                    if field.name != "quiet"})
    click.echo(summary.text(out), err=True)
    if summary.failed or summary.problems:
        sys.exit(1)

"""The `--engine ray` branch of `gamma-edge score`: options checked, the run, its summary line."""
from __future__ import annotations

import sys

import click

from contract.errors import UserError, user_errors

RAY_OPTION_NAMES = {"address": "--ray-address", "actors": "--actors", "block_size": "--block-size",
                    "keep": "--keep", "keep_above": "--keep-above",
                    "keep_top": "--keep-top"}


def score_on_ray(engine: str, paths, out, fmt: str, ray_options: dict, *, quiet: bool, **scorer_options) -> None:
    """Score on Ray and exit 1 when an image or an input failed, as the local engine does."""
    with user_errors():
        given = [RAY_OPTION_NAMES[name] for name, value in ray_options.items()
                 if value is not None and name in RAY_OPTION_NAMES]
        if engine != "ray":
            raise UserError(f"{', '.join(given)} work only with --engine ray; add --engine ray")
        if fmt != "table":
            raise UserError("--engine ray always writes Parquet (to --out); drop --format")
        from runtime.dataset.ray_engine import RayOptions, score_with_ray

        options = RayOptions(**{name: value for name, value in ray_options.items() if value is not None})
        summary = score_with_ray(paths, out, options, quiet=quiet, **scorer_options)
    click.echo(summary.text(out), err=True)
    if summary.failed or summary.problems:
        sys.exit(1)

"""`gamma-edge demo`: the whole chain on the embedded demo model, torch-free, in about a minute.

The tour itself (held-out ranking, parity, a live clip, the card check) is runtime/demo/tour.py;
this module is only its command.
"""
from __future__ import annotations

from pathlib import Path

import click

from contract.errors import user_errors
from runtime.demo.tour import tour


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("gamma-edge-demo"),
              show_default=True, help="Folder for the annotated video, the JSON lines and the plot.")
@click.option("--threads", type=int, default=None, help="Inference threads (default: all cores).")
def demo_command(out: Path, threads):
    """Run the whole chain on the embedded demo model (10-40 s on a 2-core CPU).

    The demo model is small and rates only the degradations its model card claims
    (printed as "reliable"; the others are listed as not learned); it is not the
    paper's model. For that, convert the official weights with 'gamma-edge convert'
    and export them.
    """
    with user_errors():
        tour(out, threads, say=click.echo)

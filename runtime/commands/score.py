"""`gamma-edge score`: score images, folders, globs, lists, Parquet path columns and shards.

Results go to stdout (or --out FILE) and stay machine-readable; the progress bar, the line
saying which backend runs, and the closing count go to stderr.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from contract.errors import user_errors
from contract.images import DEFAULT_MAX_PIXELS
from runtime.commands.options import ModelChoice, make_scorer, model_options, output_stream
from runtime.commands.ray import RayChoice, ray_options, score_on_ray


class RowWriter:
    """table (aligned, written at the end), csv or jsonl (written row by row)."""

    def __init__(self, stream, fmt: str, scenes: list[str]):
        self.stream, self.fmt, self.scenes = stream, fmt, scenes
        self.columns = ["path"] + (["score"] if len(scenes) == 1 else scenes) + ["error"]
        self.rows: list[list[str]] = []
        if fmt == "csv":
            self.csv = csv.writer(stream, lineterminator="\n")
            self.csv.writerow(self.columns)

    def write(self, row) -> None:
        values = [None if row.scores is None else row.scores[s] for s in self.scenes]
        if self.fmt == "jsonl":
            record = {"path": row.source}
            record.update({("score" if len(self.scenes) == 1 else s): v for s, v in zip(self.scenes, values)})
            record["error"] = row.error
            if row.warning:
                record["warning"] = row.warning
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
            return
        cells = [row.source] + ["" if v is None else f"{v:.6f}" for v in values] + [row.error or ""]
        if self.fmt == "csv":
            self.csv.writerow(cells)
            self.stream.flush()
        else:
            self.rows.append(cells)

    def close(self) -> None:
        if self.fmt != "table":
            return
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        for cells in [self.columns] + self.rows:
            line = "  ".join(cell.ljust(width) for cell, width in zip(cells[:-1], widths[:-1]))
            self.stream.write((line + "  " + cells[-1]).rstrip() + "\n")
        self.stream.flush()


@click.command("score")
@click.argument("paths", nargs=-1, required=True)
@model_options
@click.option("--all-scenes", is_flag=True, help="One column per scene of the model.")
@click.option("--format", "fmt", type=click.Choice(("table", "csv", "jsonl")), default="table", show_default=True)
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="Write results here, not stdout.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images whose header declares more pixels (decompression bombs); "
                   "also set by GAMMA_EDGE_MAX_PIXELS.")
@click.option("--engine", type=click.Choice(("local", "ray")), default="local", show_default=True,
              help="ray: score on Ray Data (a local Ray, or --ray-address), resumably, into the Parquet "
                   "file --out (docs/ray.md).")
@click.option("--path-column", default="path", show_default=True,
              help="The column of image paths in input Parquet files.")
@ray_options
def score_command(paths, choice: ModelChoice, all_scenes, fmt, out, max_pixels, engine, path_column,
                  ray: RayChoice):
    """Score images: files, folders (recursive), globs, path lists (.txt, .lst: one path a
    line), Parquet files with a path column (--path-column) and WebDataset shards (.tar).

    A file that cannot be decoded is reported in its row and the rest are scored.
    The last line on stderr counts the images scored and failed. Exit status: 0 when
    every image was scored, 1 when any failed (or a mistake stopped the run), 2 for
    a wrong option.

    \b
      gamma-edge score photos/ --model exported/natural
      gamma-edge score 'shots/**/*.jpg' --format csv --out scores.csv
      gamma-edge score 'shards/*.tar' --engine ray --out scores.parquet --keep-top 0.3 --keep keep.txt
    """
    if engine == "ray" or ray.given():
        score_on_ray(engine, paths, out, fmt, ray, path_column, choice, max_pixels)
        return
    from tqdm import tqdm

    with user_errors():
        from contract.manifest import load_manifest
        from runtime.inference.scorer import resolve_model

        load_manifest(resolve_model(choice.model))  # a wrong --model is named before any folder is walked
        images = _list_images(paths, path_column)
        scorer = make_scorer(choice, max_pixels=max_pixels, scorer_class=_source_scorer())
        scenes = list(scorer.scenes) if all_scenes else [scorer.scene]
        failed = warned = 0
        with output_stream(out, "--out") as stream:
            writer = RowWriter(stream, fmt, scenes)
            bar = tqdm(total=len(images), unit="img", file=sys.stderr, dynamic_ncols=True,
                       disable=choice.quiet or not sys.stderr.isatty())
            try:
                for row in scorer.score_many(images.sources):
                    failed += not row.ok
                    warned += row.warning is not None
                    writer.write(row)
                    bar.update()
            finally:
                bar.close()
                writer.close()
    click.echo(score_status(len(images), failed, warned, images.problems), err=True)
    if failed or images.problems:
        sys.exit(1)


def _source_scorer():
    from runtime.dataset.inputs import SourceScorer        # the Scorer that also reads WebDataset shard members

    return SourceScorer


def _list_images(paths, path_column: str):
    """The images the arguments name (runtime.dataset.inputs: folders, globs, path lists, Parquet path
    columns, WebDataset shards); an input that cannot be listed is a warning and the rest go on."""
    from runtime.dataset.inputs import list_inputs

    images = list_inputs(paths, path_column)
    for problem in images.problems:
        click.echo(f"warning: {problem}", err=True)
    return images


def score_status(total: int, failed: int, warned: int, problems=()) -> str:
    """score's last line: what happened to every image (and to inputs that listed none)."""
    line = f"scored {total - failed} of {total} image(s)"
    if problems:
        line += f"; {len(problems)} input(s) could not be read (see the warnings above)"
    if failed:
        line += f"; {failed} could not be scored (see the error column)"
    if warned:
        line += (f"; {warned} smaller than the crop at the model's scale were enlarged, so their scores say "
                 "little (see the warning field of --format jsonl)")
    return line



"""`gamma-edge score` and `gamma-edge run`: the torch-free command line of the runtime.

Results go to stdout (or --out / --jsonl FILE) and stay machine-readable; the progress
bar, the line saying which backend runs, and the run summary go to stderr.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from contract.errors import UserError, user_errors
from contract.hardware import PRECISIONS
from contract.images import DEFAULT_MAX_PIXELS

from contract.manifest import CROP_PROTOCOLS as CROP_CHOICES


def _model_options(function):
    """Options shared by score and run: which model, backend, device and how to crop."""
    options = [
        click.option("--model", "-m", type=click.Path(path_type=Path), default=None,
                     help="Exported model folder (holding manifest.json), or its .onnx / .xml file. "
                          "Default: the embedded demo model."),
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
        click.option("--crops", type=click.Choice(CROP_CHOICES), default=None,
                     help="Crop protocol; default: the manifest's. random10 is the paper's."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random10 crops."),
        click.option("--scene", default=None, help="Scene to score (default: the model's first)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar or backend line on stderr."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _make_scorer(model, backend, device, threads, batch, precision, crops, seed, scene, quiet,
                 scorer_class=None, **extra):
    from runtime.inference.scorer import Scorer

    scorer = (scorer_class or Scorer)(model, backend=backend, device=device, crops=crops, seed=seed, threads=threads,
                    batch=batch, precision=precision, scene=scene, **extra)
    if not quiet:
        click.echo(f"scoring with {scorer.describe()}", err=True)
    for note in scorer.backend.notes:
        click.echo(f"warning: {note}", err=True)
    return scorer


def expand_paths(paths) -> list[str]:
    """Folders, globs and image files as a list of image paths (runtime.dataset.inputs.expand_paths; kept
    here for its callers, and imported late so `gamma-edge --help` stays fast)."""
    from runtime.dataset.inputs import expand_paths as expand

    return expand(paths)


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


@contextmanager
def _output(out: Path | None, description: str):
    if out is None or str(out) == "-":
        yield sys.stdout
        return
    try:
        handle = open(out, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise UserError(f"{description} '{out}' cannot be written ({exc.strerror}); check the folder") from None
    with handle:
        yield handle


@click.command("score")
@click.argument("paths", nargs=-1, required=True)
@_model_options
@click.option("--all-scenes", is_flag=True, help="One column per scene of the model.")
@click.option("--format", "fmt", type=click.Choice(("table", "csv", "jsonl")), default="table", show_default=True)
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="Write results here, not stdout.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images whose header declares more pixels (decompression bombs); "
                   "also set by GAMMA_EDGE_MAX_PIXELS.")
@click.option("--engine", type=click.Choice(("local", "ray")), default="local", show_default=True,
              help="ray: score on Ray Data (a local Ray, or --ray-address), resumably, into the Parquet "
                   "file --out (docs/ray.md).")
@click.option("--ray-address", default=None, help="[ray] The Ray cluster to join (HOST:PORT or auto); "
                                                  "default: start a local Ray.")
@click.option("--actors", type=click.IntRange(min=1), default=None,
              help="[ray] Scoring actors, one backend each. Default: one per GPU, else one single-threaded "
                   "actor per CPU (--threads T: one per T CPUs).")
@click.option("--block-size", type=click.IntRange(min=1), default=None,
              help="[ray] Images per block: the unit of memory, of part files and of resuming. Default: 128.")
@click.option("--path-column", default="path", show_default=True,
              help="The column of image paths in input Parquet files.")
@click.option("--keep", "keep_file", type=click.Path(path_type=Path), default=None,
              help="[ray] Write the keep-list (paths, one a line) chosen by --keep-above / --keep-top.")
@click.option("--keep-above", type=float, default=None, help="[ray] Keep images scoring at least this.")
@click.option("--keep-top", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="[ray] Keep the best-scoring fraction of the scored images (e.g. 0.3).")
def score_command(paths, model, backend, device, threads, batch, precision, crops, seed, scene, quiet,
                  all_scenes, fmt, out, max_pixels, engine, ray_address, actors, block_size, path_column,
                  keep_file, keep_above, keep_top):
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
    ray_options = dict(address=ray_address, actors=actors, block_size=block_size,
                       keep=keep_file, keep_above=keep_above, keep_top=keep_top)
    if engine == "ray" or any(value is not None for value in ray_options.values()):
        from runtime.commands.ray import score_on_ray

        score_on_ray(engine, paths, out, fmt, dict(ray_options, path_column=path_column), model=model, backend=backend, device=device,
                     threads=threads, batch=batch, precision=precision, crops=crops, seed=seed, scene=scene,
                     quiet=quiet, max_pixels=max_pixels)
        return
    from tqdm import tqdm

    with user_errors():
        from contract.manifest import load_manifest
        from runtime.inference.scorer import resolve_model

        load_manifest(resolve_model(model))  # a wrong --model is named before any folder is walked
        images = _list_images(paths, path_column)
        scorer = _make_scorer(model, backend, device, threads, batch, precision, crops, seed, scene, quiet,
                              max_pixels=max_pixels, scorer_class=_source_scorer())
        scenes = list(scorer.scenes) if all_scenes else [scorer.scene]
        failed = warned = 0
        with _output(out, "--out") as stream:
            writer = RowWriter(stream, fmt, scenes)
            bar = tqdm(total=len(images), unit="img", file=sys.stderr, dynamic_ncols=True,
                       disable=quiet or not sys.stderr.isatty())
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


class _Retries(click.ParamType):
    """--retries: a count (0 or more) or 'forever'."""

    name = "N|forever"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int) and value >= 0:
            return value
        text = str(value).strip().lower()
        if text == "forever":
            return None
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r} is neither a count (0 or more) nor 'forever'", param, ctx)


@click.command("run")
@click.argument("sources", nargs=-1, metavar="[SOURCE]...")
@_model_options
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Score every N-th frame.")
@click.option("--fps", "max_fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Score at most F frames per second (video time for files).")
@click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
              help="Smoothed score: mean of the last N scores.")
@click.option("--threshold", type=float, default=None, help="Flag frames whose smoothed score is below this.")
@click.option("--jsonl", type=click.Path(path_type=Path, allow_dash=True), default=None,
              help="Per-frame JSON lines to FILE ('-' for stdout).")
@click.option("--save", type=click.Path(path_type=Path), default=None,
              help="Write the annotated video here (.mp4 or .avi).")
@click.option("--show", is_flag=True, help="Show the frames with their score in a window (q quits).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames read.")
@click.option("--open-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="SECONDS", help="Network streams: how long one open (connect, first frame) may take.")
@click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="SECONDS", help="Network streams: how long without a frame before the stream counts as lost.")
@click.option("--retries", type=_Retries(), default="forever", show_default=True,
              help="Reopen attempts after a live source stops delivering frames, before the run ends "
                   "'source lost' (exit 3). Counted per outage; the first open is tried once.")
@click.option("--backoff", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              metavar="SECONDS", help="Wait before the second reopen attempt; it doubles after each failure ...")
@click.option("--backoff-max", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              metavar="SECONDS", help="... up to this.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also print OpenCV's and FFmpeg's own warnings (silenced by default).")
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="Fleet: cameras and their settings, MQTT and metrics from a YAML or TOML file (docs/fleet.md).")
@click.option("--mqtt", default=None, metavar="URL",
              help="Fleet: send quality events and states to this MQTT broker (mqtt://HOST:PORT).")
@click.option("--mqtt-prefix", default=None, help="Fleet: MQTT topic prefix. Default: gamma-edge.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Fleet: serve Prometheus metrics on this port (0: any free port).")
@click.option("--metrics-host", default=None, help="Fleet: address of the metrics endpoint. Default: 0.0.0.0.")
@click.option("--hold", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Fleet: a condition (degraded, frozen, covered) must hold this long before its event. Default: 10.")
@click.option("--margin", type=click.FloatRange(min=0), default=None,
              help="Fleet: recovered only once the smoothed score is at --threshold + margin. Default: 0.05.")
@click.option("--snapshots", type=click.Path(path_type=Path), default=None,
              help="Fleet: save a JPEG of the frame at each quality event in this folder.")
@click.option("--webhook", default=None, metavar="URL", help="Fleet: POST each quality event as JSON to this URL.")
def run_command(sources, model, backend, device, threads, batch, precision, crops, seed, scene, quiet,
                every, max_fps, smooth, threshold, jsonl, save, show, max_frames, open_timeout, read_timeout,
                retries, backoff, backoff_max, verbose, config, mqtt, mqtt_prefix, metrics_port, metrics_host,
                hold, margin, snapshots, webhook):
    """Score a camera, video file or network stream as it plays; or a fleet of cameras.

    SOURCE is a camera index or 'camera', a video file, or an rtsp:// / http:// stream.
    Live sources keep only the newest frame; files are read in order. Ctrl-C or SIGTERM
    ends the run with a summary (on stderr, and as the last JSON line); a second one
    stops waiting for a stalled source.

    Several live sources (NAME=SOURCE, or cam1, cam2, ... in order), a --config file,
    --mqtt or --metrics-port make a fleet: one model, frames of all cameras batched into
    one backend call, per-camera quality events (degraded, recovered, source_lost,
    source_back, frozen, covered ...) to the JSON lines and MQTT (docs/fleet.md).

    \b
    The last line on stderr says how the run ended, and the exit status follows it:
      0  finished (end of file, --max-frames) or stopped (Ctrl-C, SIGTERM, q)
      1  source never opened (or any other error, in one sentence)
      3  source lost: no frames, and --retries reopen attempts failed
      4  file truncated: it ends before its header's frame count
      5  no frames: the file holds no readable frame

    \b
      gamma-edge run clip.mp4 --jsonl - --every 5
      gamma-edge run rtsp://cam.local/stream --fps 2 --threshold 0.4 --jsonl alerts.jsonl
      gamma-edge run http://cam.local/video.mjpg --retries 10 --backoff 1 --backoff-max 30
      gamma-edge run 0 --show --smooth 10
      gamma-edge run gate=rtsp://10.0.0.11/s1 dock=rtsp://10.0.0.12/s1 --fps 2 --threshold 0.45 --mqtt broker.local
      gamma-edge run --config cameras.yaml --metrics-port 9108
    """
    from runtime.live.stream import RunOptions, SourceNeverOpened, StreamRunner, parse_source, quiet_native_logs

    if not sources and config is None:
        raise click.UsageError("give a SOURCE (or several), or --config FILE")
    if not verbose:
        quiet_native_logs()             # before any capture or writer loads FFmpeg
    if _is_fleet(sources, config, mqtt, metrics_port, webhook):
        fleet_settings = dict(model=model, backend=backend, device=device, threads=threads, batch=batch,
                              precision=precision, crops=crops, seed=seed, scene=scene, quiet=quiet)
        _run_fleet(sources, config, fleet_settings, every=every, max_fps=max_fps, smooth=smooth, threshold=threshold,
                   jsonl=jsonl, save=save, show=show, max_frames=max_frames, open_timeout=open_timeout,
                   read_timeout=read_timeout, retries=retries, backoff=(backoff, backoff_max), mqtt=mqtt,
                   mqtt_prefix=mqtt_prefix, metrics_port=metrics_port, metrics_host=metrics_host, hold=hold,
                   margin=margin, snapshots=snapshots, webhook=webhook)
        return
    source = sources[0]
    with user_errors():
        parsed = parse_source(source)
        scorer = _make_scorer(model, backend, device, threads, batch, precision, crops, seed, scene, quiet)
        with _output(jsonl, "--jsonl") as stream:
            options = RunOptions(scene=scene, every=every, max_fps=max_fps, smooth=smooth, threshold=threshold,
                                 jsonl=stream if jsonl is not None else None,
                                 save=str(save) if save else None, show=show, max_frames=max_frames,
                                 open_timeout=open_timeout, read_timeout=read_timeout, retries=retries,
                                 backoff=(backoff, backoff_max))
            runner = StreamRunner(scorer, parsed, options)
            try:
                with runner.signals():
                    summary = runner.run()
            except SourceNeverOpened as exc:
                click.echo(exc.summary.text(), err=True)      # the summary every ending writes
                raise
    click.echo(summary.text(), err=True)
    click.echo(summary.final_line(), err=True)
    sys.exit(summary.exit_status)


def _is_fleet(sources, config, mqtt, metrics_port, webhook) -> bool:
    """A fleet: several sources, a named one, a config file, or events / metrics asked for."""
    from runtime.fleet.config import split_name

    return (len(sources) > 1 or config is not None or mqtt is not None or metrics_port is not None
            or webhook is not None or any(split_name(text)[0] for text in sources))


# run's options that set a camera's rule in a fleet: (option's parameter, Camera field)
FLEET_CAMERA_OPTIONS = (("max_fps", "fps"), ("smooth", "smooth"), ("threshold", "threshold"), ("hold", "hold_s"),
                        ("margin", "margin"), ("crops", "crops"), ("scene", "scene"))


def _given_on_command_line(values: dict) -> dict:
    """Camera settings the user gave (not click's defaults): they override the config's defaults."""
    from click.core import ParameterSource

    context = click.get_current_context()
    given = {}
    for parameter, setting in FLEET_CAMERA_OPTIONS:
        source = context.get_parameter_source(parameter)
        if values.get(parameter) is not None and source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            given[setting] = values[parameter]
    return given


def _run_fleet(sources, config, model_settings: dict, **values) -> None:
    """`gamma-edge run` for a fleet of cameras (runtime/fleet/runner.py)."""
    from runtime.fleet.runner import FleetOptions, FleetRunner
    from runtime.fleet.config import DEFAULT_MQTT_PREFIX, cameras_from_sources, load_config

    with user_errors():
        _refuse_single_source_options(values)
        overrides = _given_on_command_line({**values, **model_settings})
        if config is not None and sources:
            raise UserError("give the cameras on the command line or in --config, not both")
        loaded = load_config(config, overrides) if config is not None else None
        cameras = loaded.cameras if loaded else cameras_from_sources(list(sources), overrides)
        mqtt_settings, metrics_settings = (loaded.mqtt, loaded.metrics) if loaded else ({}, {})
        webhook_settings = loaded.webhook if loaded else {}
        scorer = _make_scorer(**model_settings)
        with _output(values["jsonl"], "--jsonl") as stream:
            options = FleetOptions(
                jsonl=stream if values["jsonl"] is not None else None, open_timeout=values["open_timeout"],
                read_timeout=values["read_timeout"], retries=values["retries"], backoff=values["backoff"],
                max_frames=values["max_frames"], snapshots=str(values["snapshots"]) if values["snapshots"] else None,
                mqtt=values["mqtt"] or mqtt_settings.get("url"),
                mqtt_prefix=values["mqtt_prefix"] or mqtt_settings.get("prefix", DEFAULT_MQTT_PREFIX),
                mqtt_client_id=mqtt_settings.get("client_id"),
                webhook=values["webhook"] or webhook_settings.get("url"),
                metrics_port=values["metrics_port"] if values["metrics_port"] is not None else metrics_settings.get("port"),
                metrics_host=values["metrics_host"] or metrics_settings.get("host", "0.0.0.0"))
            runner = FleetRunner(scorer, cameras, options)
            with runner.signals():
                summary = runner.run()
    for line in summary.lines():
        click.echo(line, err=True)
    click.echo(summary.final_line(), err=True)
    sys.exit(summary.exit_status)


def _refuse_single_source_options(values: dict) -> None:
    if values["save"] or values["show"]:
        raise UserError("--save and --show take one source; a fleet reports per camera in --jsonl, "
                               "MQTT and --metrics-port")
    if values["every"] != 1:
        raise UserError("--every takes one source; in a fleet limit each camera with --fps (or 'fps' in --config)")

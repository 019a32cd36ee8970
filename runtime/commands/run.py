"""`gamma-edge run`: score a camera, a video file or a stream as it plays; or watch a fleet.

Per-frame JSON lines go to stdout or --jsonl FILE; the line saying which backend runs, gaps,
reconnects, events and the run summary go to stderr.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from contract.errors import UserError, user_errors
from runtime.commands.broker_options import BrokerChoice, broker_options, broker_settings
from runtime.commands.options import ModelChoice, make_scorer, model_options, option_group
from runtime.watch.baseline import MODES


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



@dataclasses.dataclass(frozen=True)
class LiveChoice:
    """How frames are read, chosen and scored, and where the results of one source go."""

    every: int = 1
    fps: float | None = None
    smooth: int = 1
    threshold: float | None = None
    jsonl: Path | None = None
    save: Path | None = None
    show: bool = False
    max_frames: int | None = None
    open_timeout: float = 5.0
    read_timeout: float = 5.0
    retries: int | None = None
    backoff: float = 0.5
    backoff_max: float = 10.0
    verbose: bool = False
    jsonl_max_mb: float = 64.0


@dataclasses.dataclass(frozen=True)
class WatchChoice:
    """How quality events are judged: against each camera's own normal, kept across restarts."""

    hold: float | None = None
    margin: float | None = None
    baseline_warmup: float | None = None
    baseline_file: Path | None = None
    evidence: str | None = None


@dataclasses.dataclass(frozen=True)
class FleetChoice:
    """A fleet's cameras (--config) and what it publishes: events, states, metrics, snapshots."""

    config: Path | None = None
    mqtt: str | None = None
    mqtt_prefix: str | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None
    snapshots: Path | None = None
    webhook: str | None = None

    def asks_for_fleet(self) -> bool:
        return any(value is not None for value in (self.config, self.mqtt, self.metrics_port, self.webhook))


@dataclasses.dataclass(frozen=True)
class WebChoice:
    """The fleet's live page: where it is served, and the token it asks for off this machine."""

    web: str | None = None
    web_token_file: Path | None = None


live_options = option_group(LiveChoice, "live", [
    click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Score every N-th frame."),
    click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Score at most F frames per second (video time for files)."),
    click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Smoothed score: mean of the last N scores."),
    click.option("--threshold", type=float, default=None, help="Flag frames whose smoothed score is below this."),
    click.option("--jsonl", type=click.Path(path_type=Path, allow_dash=True), default=None,
                 help="Per-frame JSON lines to FILE ('-' for stdout)."),
    click.option("--save", type=click.Path(path_type=Path), default=None,
                 help="Write the annotated video here (.mp4 or .avi)."),
    click.option("--show", is_flag=True, help="Show the frames with their score in a window (q quits)."),
    click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames read."),
    click.option("--open-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
                 metavar="SECONDS", help="Network streams: how long one open (connect, first frame) may take."),
    click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
                 metavar="SECONDS", help="Network streams: how long without a frame before the stream counts as lost."),
    click.option("--retries", type=_Retries(), default="forever", show_default=True,
                 help="Reopen attempts after a live source stops delivering frames, before the run ends "
                      "'source lost' (exit 3). Counted per outage; the first open is tried once."),
    click.option("--backoff", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
                 metavar="SECONDS", help="Wait before the second reopen attempt; it doubles after each failure ..."),
    click.option("--backoff-max", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
                 metavar="SECONDS", help="... up to this."),
    click.option("--verbose", "-v", is_flag=True,
                 help="Also print OpenCV's and FFmpeg's own warnings (silenced by default)."),
    click.option("--jsonl-max-mb", type=click.FloatRange(min=0.001), default=64.0, show_default=True,
                 metavar="MB", help="--jsonl FILE is appended to, never truncated, and rotated at this size "
                                    "(FILE.1 .. FILE.4); events of the oldest are kept in FILE's .events file."),
])

watch_options = option_group(WatchChoice, "watch", [
    click.option("--hold", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                 help="A condition (degraded, frozen, covered) must hold this long before its event. Default: 10."),
    click.option("--margin", type=click.FloatRange(min=0), default=None,
                 help="Recovered only once the smoothed score is at --threshold + margin. Default: 0.05."),
    click.option("--baseline-warmup", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                 help="Each camera learns its own normal score from this many seconds of its frames, then "
                      "raises 'degraded' when its smoothed score falls below it (no threshold needed). "
                      "Default: 600."),
    click.option("--baseline-file", type=click.Path(path_type=Path), default=None,
                 help="Keep each camera's normal and conditions here across restarts. Default: beside --jsonl "
                      "FILE, else in ~/.local/state/gamma-edge (live sources; a video file keeps none)."),
    click.option("--evidence", type=click.Choice(MODES), default=None,
                 help="What is judged against the normal: the model's score, the image signals, or both "
                      "(docs/fleet.md, \"Baselines\"). Default: signals, which caught the most at no false "
                      "alarm in benchmarks/bench_watch.py."),
])

fleet_options = option_group(FleetChoice, "fleet", [
    click.option("--config", type=click.Path(path_type=Path), default=None,
                 help="Fleet: cameras and their settings, MQTT and metrics from a YAML or TOML file (docs/fleet.md)."),
    click.option("--mqtt", default=None, metavar="URL",
                 help="Fleet: send quality events and states to this MQTT broker (mqtt://HOST:PORT, mqtts://HOST:PORT "
                      "for TLS; the password better in --mqtt-password-file: docs/secrets.md)."),
    click.option("--mqtt-prefix", default=None, help="Fleet: MQTT topic prefix. Default: gamma-edge."),
    click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                 help="Fleet: serve Prometheus metrics on this port (0: any free port)."),
    click.option("--metrics-host", default=None, help="Fleet: address of the metrics endpoint. Default: 0.0.0.0."),
    click.option("--snapshots", type=click.Path(path_type=Path), default=None,
                 help="Fleet: save a JPEG of the frame at each quality event in this folder."),
    click.option("--webhook", default=None, metavar="URL", help="Fleet: POST each quality event as JSON to this URL."),
])


web_options = option_group(WebChoice, "web", [
    click.option("--web", default=None, metavar="HOST:PORT",
                 help="Fleet: serve a live page of the cameras here (127.0.0.1:8080; another address needs "
                      "a token). Port 0: any free port."),
    click.option("--web-token-file", type=click.Path(path_type=Path), default=None,
                 help="Fleet: the page asks for the token in this file (else in $GAMMA_EDGE_WEB_TOKEN)."),
])


@click.command("run")
@click.argument("sources", nargs=-1, metavar="[SOURCE]...")
@model_options
@live_options
@watch_options
@fleet_options
@web_options
@broker_options
def run_command(sources, choice: ModelChoice, live: LiveChoice, watch: WatchChoice, fleet: FleetChoice,
                web: WebChoice, broker: BrokerChoice):
    """Score a camera, video file or network stream as it plays; or a fleet of cameras.

    SOURCE is a camera index or 'camera', a video file, or an rtsp:// / http:// stream.
    Live sources keep only the newest frame; files are read in order. Ctrl-C or SIGTERM
    ends the run with a summary (on stderr, and as the last JSON line); a second one
    stops waiting for a stalled source.

    Several live sources (NAME=SOURCE, or cam1, cam2, ... in order), a --config file,
    --mqtt, --metrics-port or --web make a fleet: one model, frames of all cameras batched into
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
      gamma-edge run --config cameras.yaml --metrics-port 9108 --web 127.0.0.1:8080
    """
    from runtime.live.source import quiet_native_logs

    if not sources and fleet.config is None:
        raise click.UsageError("give a SOURCE (or several), or --config FILE")
    if not live.verbose:
        quiet_native_logs()             # before any capture or writer loads FFmpeg
    if _is_fleet(sources, fleet) or web.web is not None or broker.given():
        _run_fleet(sources, choice, live, watch, fleet, web, broker)
    else:
        _run_one(sources[0], choice, live, watch)


@contextmanager
def jsonl_stream(live: LiveChoice):
    """--jsonl: stdout for '-', else the file, appended to and rotated by size (never truncated)."""
    if live.jsonl is None or str(live.jsonl) == "-":
        yield None if live.jsonl is None else sys.stdout
        return
    from runtime.outputs.jsonl import RotatingFile

    stream = RotatingFile(live.jsonl, max_bytes=round(live.jsonl_max_mb * (1 << 20)))
    try:
        yield stream
    finally:
        stream.close()


def _rules(live: LiveChoice, watch: WatchChoice) -> dict:
    """The watch rules given on the command line (the others keep WatchRules' defaults)."""
    given = dict(hold_s=watch.hold, margin=watch.margin, baseline_warmup=watch.baseline_warmup,
                 evidence=watch.evidence)
    return {name: value for name, value in given.items() if value is not None}


def _run_one(source: str, choice: ModelChoice, live: LiveChoice, watch: WatchChoice) -> None:
    """`gamma-edge run` for one camera, video file or stream (runtime/live)."""
    from runtime.live.runner import RunOptions, StreamRunner
    from runtime.live.source import SourceNeverOpened, parse_source

    with user_errors():
        parsed = parse_source(source)
        baseline_file = default_baseline_file(live, watch, [parsed.text]) if parsed.live else watch.baseline_file
        _check_outputs(None, baseline_file, watch)
        with jsonl_stream(live) as stream:        # every output path is checked before the model loads
            scorer = make_scorer(choice)
            options = RunOptions(scene=choice.scene, every=live.every, fps=live.fps, smooth=live.smooth,
                                 threshold=live.threshold, jsonl=stream, save=str(live.save) if live.save else None,
                                 show=live.show, max_frames=live.max_frames, open_timeout=live.open_timeout,
                                 read_timeout=live.read_timeout, retries=live.retries,
                                 backoff=(live.backoff, live.backoff_max),
                                 baseline_file=str(baseline_file) if baseline_file else None, **_rules(live, watch))
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


def default_baseline_file(live: LiveChoice, watch: WatchChoice, names: list[str]) -> Path:
    """--baseline-file, else beside --jsonl FILE (scores.jsonl -> scores.baselines.json), else in the
    user's state folder, one file per set of camera names."""
    if watch.baseline_file is not None:
        return watch.baseline_file
    if live.jsonl is not None and str(live.jsonl) != "-":
        return live.jsonl.with_name(live.jsonl.stem + ".baselines.json")
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "gamma-edge"
    key = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]
    return state / f"baselines-{key}.json"


def _check_outputs(snapshots: Path | None, baseline_file: Path | None, watch: WatchChoice) -> None:
    """The output paths are checked before the model loads (--jsonl when it is opened just after):
    a folder that takes no file is one sentence now, not after minutes of loading."""
    from contract.atomic import check_writable

    if snapshots is not None:
        from runtime.outputs.snapshots import Snapshots

        Snapshots(snapshots)
    if baseline_file is not None:       # the default one's folder is ours to make
        check_writable(baseline_file, "--baseline-file", create_folder=watch.baseline_file is None)


def _is_fleet(sources, fleet: FleetChoice) -> bool:
    """A fleet: several sources, a named one, a config file, or events / metrics asked for."""
    from runtime.fleet.config import split_name

    return len(sources) > 1 or fleet.asks_for_fleet() or any(split_name(text)[0] for text in sources)


# run's options that set a camera's rule in a fleet: (option's parameter, Camera field)
FLEET_CAMERA_OPTIONS = (("fps", "fps"), ("smooth", "smooth"), ("threshold", "threshold"), ("hold", "hold_s"),
                        ("margin", "margin"), ("crops", "crops"), ("scene", "scene"),
                        ("baseline_warmup", "baseline_warmup"), ("evidence", "evidence"))


def _given_on_command_line(*choices) -> dict:
    """Camera settings the user gave (not click's defaults): they override the config's defaults."""
    from click.core import ParameterSource

    values = {name: value for choice in choices for name, value in dataclasses.asdict(choice).items()}
    context = click.get_current_context()
    given = {}
    for parameter, setting in FLEET_CAMERA_OPTIONS:
        source = context.get_parameter_source(parameter)
        if values.get(parameter) is not None and source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            given[setting] = values[parameter]
    return given


def _run_fleet(sources, choice: ModelChoice, live: LiveChoice, watch: WatchChoice, fleet: FleetChoice,
               web: WebChoice = WebChoice(), broker: BrokerChoice = BrokerChoice()) -> None:
    """`gamma-edge run` for a fleet of cameras (runtime/fleet)."""
    from runtime.fleet.config import cameras_from_sources, load_config
    from runtime.fleet.runner import FleetRunner, live_source

    with user_errors():
        _refuse_single_source_options(live)
        overrides = _given_on_command_line(choice, live, watch)
        if fleet.config is not None and sources:
            raise UserError("give the cameras on the command line or in --config, not both")
        loaded = load_config(fleet.config, overrides) if fleet.config is not None else None
        cameras = loaded.cameras if loaded else cameras_from_sources(list(sources), overrides)
        if loaded and loaded.baseline.get("file") and watch.baseline_file is None:
            watch = dataclasses.replace(watch, baseline_file=Path(loaded.baseline["file"]))
        baseline_file = default_baseline_file(live, watch, [camera.name for camera in cameras])
        for camera in cameras:
            live_source(camera)                 # a missing secret or a video file is named before the model loads
        mqtt, homeassistant = broker_settings(fleet.mqtt, broker, loaded)    # files read before the model loads
        if fleet.webhook or (loaded and loaded.webhook.get("url")):
            from runtime.outputs.webhook import webhook_target

            webhook_target(fleet.webhook or loaded.webhook["url"])
        _check_outputs(fleet.snapshots, baseline_file, watch)
        with jsonl_stream(live) as stream:
            scorer = make_scorer(choice)
            options = _web_options(_fleet_options(live, fleet, loaded, stream, baseline_file, mqtt, homeassistant),
                                   web, loaded)
            runner = FleetRunner(scorer, cameras, options)
            with runner.signals():
                summary = runner.run()
    for line in summary.lines():
        click.echo(line, err=True)
    click.echo(summary.final_line(), err=True)
    sys.exit(summary.exit_status)


def _fleet_options(live: LiveChoice, fleet: FleetChoice, loaded, jsonl, baseline_file: Path, broker,
                   homeassistant: dict):
    """The fleet's settings: the command line's, else the config file's, else the defaults; the
    broker and Home Assistant's settings as broker_settings() merged them."""
    from runtime.fleet.config import DEFAULT_MQTT_PREFIX
    from runtime.fleet.runner import FleetOptions

    mqtt, metrics = (loaded.mqtt, loaded.metrics) if loaded else ({}, {})
    webhook = loaded.webhook if loaded else {}
    return FleetOptions(
        jsonl=jsonl, open_timeout=live.open_timeout, read_timeout=live.read_timeout, retries=live.retries,
        backoff=(live.backoff, live.backoff_max), max_frames=live.max_frames,
        snapshots=str(fleet.snapshots) if fleet.snapshots else None,
        mqtt=broker, ha_discovery=bool(homeassistant.get("discovery")),
        ha_prefix=homeassistant.get("prefix", "homeassistant"),
        mqtt_prefix=fleet.mqtt_prefix or mqtt.get("prefix", DEFAULT_MQTT_PREFIX),
        mqtt_client_id=mqtt.get("client_id"),
        webhook=fleet.webhook or webhook.get("url"),
        metrics_port=fleet.metrics_port if fleet.metrics_port is not None else metrics.get("port"),
        metrics_host=fleet.metrics_host or metrics.get("host", "0.0.0.0"),
        baseline_file=str(baseline_file))


def _web_options(options, web: WebChoice, loaded):
    """The page's address and token file: the command line's, else the config file's `web` table."""
    page = loaded.web if loaded else {}
    token_file = web.web_token_file or page.get("token_file")
    return dataclasses.replace(options, web=web.web or page.get("listen"),
                               web_token_file=str(token_file) if token_file else None)


def _refuse_single_source_options(live: LiveChoice) -> None:
    if live.save or live.show:
        raise UserError("--save and --show take one source; a fleet reports per camera in --jsonl, "
                        "MQTT and --metrics-port")
    if live.every != 1:
        raise UserError("--every takes one source; in a fleet limit each camera with --fps (or 'fps' in --config)")

"""`gamma-edge serve`: exported models over HTTP for other programs (runtime/serve, docs/serve.md)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from contract.errors import UserError, user_errors
from contract.images import DEFAULT_MAX_PIXELS
from runtime.commands.options import ENGINE_OPTIONS, ModelChoice, make_scorer, option_group

TOKEN_VARIABLE = "GAMMA_EDGE_SERVE_TOKEN"


@dataclasses.dataclass(frozen=True)
class ServedChoice:
    """The models to serve, their names, and the engine options every one of them runs with."""

    model: tuple = ()
    name: tuple = ()
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    batch: int | None = None
    precision: str = "auto"
    crops: str | None = None
    seed: int = 0
    scene: str | None = None
    quiet: bool = False

    def model_choices(self) -> list[tuple[str | None, ModelChoice]]:
        """(--name or None, the ModelChoice of one model) per --model (the demo model when none)."""
        if len(self.name) > max(1, len(self.model)):
            raise UserError(f"{len(self.name)} --name for {len(self.model)} --model; give at most one --name "
                            f"per --model, in the same order")
        engine = {field.name: getattr(self, field.name) for field in dataclasses.fields(ModelChoice)
                  if field.name != "model"}
        paths = self.model or (None,)
        names = list(self.name) + [None] * (len(paths) - len(self.name))
        return [(name, ModelChoice(model=path, **engine)) for path, name in zip(paths, names)]


served_options = option_group(ServedChoice, "served", [
    click.option("--model", "-m", type=click.Path(path_type=Path), multiple=True,
                 help="An exported model folder (or its .onnx / .xml); repeat to serve several. "
                      "Default: the embedded demo model."),
    click.option("--name", multiple=True,
                 help="The name clients use for the --model in the same position. Default: its folder's name."),
    *ENGINE_OPTIONS,
])


@dataclasses.dataclass(frozen=True)
class ListenChoice:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_delay_ms: float = 2.0
    max_queue: int = 2048
    max_body_mb: float = 32.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    decode_workers: int = 2
    graceful_timeout: float = 30.0


listen_options = option_group(ListenChoice, "listen", [
    click.option("--host", default="127.0.0.1", show_default=True,
                 help="Address to listen on. Only this machine can connect unless you name another (0.0.0.0: all)."),
    click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
                 help="Port to listen on (0: any free port, printed at start)."),
    click.option("--token", default=None, envvar=TOKEN_VARIABLE, show_envvar=True,
                 help="Require 'Authorization: Bearer TOKEN' on every request but the health probes."),
    click.option("--max-delay-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
                 help="How long the first request of a batch waits for others to join it."),
    click.option("--max-queue", type=click.IntRange(min=1), default=2048, show_default=True,
                 help="Crops that may wait for the backend; beyond it requests are refused with 503 at once."),
    click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=32.0, show_default=True,
                 help="Largest request body; a larger one is refused with 413 before it is read."),
    click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images whose header declares more pixels (decompression bombs)."),
    click.option("--body-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
                 help="Seconds a client may pause while sending a body (then 408)."),
    click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
                 help="Seconds a client may take to send its request headers (then the connection is closed)."),
    click.option("--decode-workers", type=click.IntRange(min=1), default=2, show_default=True,
                 help="Threads decoding and cropping uploaded images."),
    click.option("--graceful-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
                 help="On Ctrl-C / SIGTERM, how long requests in flight may take to be answered."),
])


@click.command("serve")
@served_options
@listen_options
def serve_command(served: ServedChoice, listen: ListenChoice):
    """Serve exported models over HTTP: the Open Inference Protocol (KServe v2, as Triton and
    OpenVINO Model Server speak it) and a plain POST /score.

    \b
    Routes (docs/serve.md):
      GET  /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready
      POST /v2/models/NAME/infer    uint8 crops [N,224,224,3], or encoded images as BYTES [N]
      POST /score[?model=NAME]      an image as the body, or multipart files -> JSON scores
      GET  /metrics                 Prometheus
    Requests that arrive together share one backend call (--batch crops, --max-delay-ms).
    Ctrl-C or SIGTERM answer the requests in flight, then stop.

    \b
      gamma-edge serve --model exports/natural
      gamma-edge serve -m exports/natural -m exports/aesthetics --host 0.0.0.0 --token "$TOKEN"
      curl -F image=@photo.jpg http://127.0.0.1:8000/score
    """
    with user_errors():
        from runtime.serve.models import model_name
        from runtime.serve.server import ModelServer, ServeOptions, bind, is_loopback

        sock = bind(listen.host, listen.port)           # a port in use is said before any model loads
        scorers = {}
        for name, choice in served.model_choices():
            key = model_name(choice.model, name)
            if key in scorers:
                raise UserError(f"two models are named '{key}'; give each --model its own --name")
            scorers[key] = make_scorer(choice, max_pixels=listen.max_pixels)
        given = dataclasses.asdict(listen)
        given.pop("max_pixels")
        server = ModelServer(scorers, ServeOptions(**given), sock)
    if not is_loopback(listen.host) and not listen.token:
        click.echo(f"warning: listening on {listen.host} without a token: anyone who reaches this port can use "
                   f"the models; pass --token or set {TOKEN_VARIABLE}", err=True)
    click.echo(f"serving {', '.join(scorers)} on {server.url} (Open Inference Protocol: /v2/models/NAME/infer; "
               f"POST /score; /metrics); Ctrl-C stops", err=True)
    server.run()
    click.echo(f"stopped: {server.answered} request(s) answered", err=True)

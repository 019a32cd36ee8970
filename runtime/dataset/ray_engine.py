"""`gamma-edge score --engine ray`: score a dataset of any size on Ray Data, resumably, into Parquet.

The pipeline (docs/ray.md):

    input table (driver: path, or shard + offset + size; ~100 bytes an image) cut into blocks
      -> ScoreActor pool: each actor holds one backend session and scores a whole block with the
         local engine's loop (read, decode and crop in low-priority threads beside inference)
      -> driver: a block's rows (a few numbers an image) written as its part file

Only paths go to the actors and only scores come back, so nothing image-sized crosses between
processes. Reading, decoding, cropping and scoring are the Scorer's own (`Scorer.score_many`, with
shard members read in its decode threads: inputs.SourceScorer), so an image gets exactly the score
`gamma-edge score` gives it. Ray is imported only here, lazily: the local engine never needs it.
Listing the inputs lives in inputs.py, resuming and the table's layout in score_table.py.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.errors import UserError
from contract.images import DEFAULT_MAX_PIXELS
from runtime.dataset.inputs import SourceScorer, list_inputs, source_of
from contract.manifest import manifest_id
from runtime.dataset.score_table import Parts, finished_key, make_run, write_keep_list
from runtime.inference.scorer import resolve_model

DEFAULT_BLOCK_SIZE = 128           # images per block: the unit of work of an actor, of a part file, of resuming
CONNECT_TIMEOUT_S = 5.0


@dataclass
class RayOptions:
    """The Ray engine's own options (the model options are the local engine's)."""

    address: str | None = None
    actors: int | None = None           # None: one per GPU, else one per CPU (plan_actors)
    block_size: int = DEFAULT_BLOCK_SIZE
    path_column: str = "path"
    keep: Path | None = None             # the keep-list file
    keep_above: float | None = None
    keep_top: float | None = None


@dataclass
class RaySummary:
    images: int
    scored_now: int = 0
    done_before: int = 0
    failed: int = 0
    kept: int | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def text(self, out: Path) -> str:
        parts = [f"{self.images} image(s) in '{out}'"]
        if self.scored_now:
            parts[0] += (f": {self.scored_now} scored now in {self.seconds:.1f} s "
                         f"({self.scored_now / self.seconds:.1f} images/s with Ray's start)")
        if self.done_before:
            parts.append(f"{self.done_before} done before")
        if self.failed:
            parts.append(f"{self.failed} could not be scored (see the error column)")
        if self.kept is not None:
            parts.append(f"{self.kept} kept")
        return "; ".join(parts)


def score_with_ray(arguments, out: Path, options: RayOptions, *, model=None, backend="auto", device="auto",
                   threads=None, batch=None, precision="auto", crops=None, seed=0, scene=None,
                   quiet=False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> RaySummary:
    """Score every image the arguments name into the Parquet file `out`, resuming an earlier run."""
    from contract.preprocess import Preprocess
    from contract.manifest import load_manifest, scene_index

    check_options(out, options)
    manifest = load_manifest(resolve_model(model))
    preprocess = Preprocess.from_manifest(manifest, crops, seed)
    scene = scene or manifest.scenes[0]
    scene_index(manifest.scenes, scene)
    inputs = list_inputs(arguments, options.path_column)
    for problem in inputs.problems:
        _say(f"warning: {problem}")
    parts = Parts(out)
    block_size = parts.recorded_block_size() or options.block_size
    if block_size != options.block_size:
        _say(f"note: resuming with the block size the run started with ({block_size})")
    run = make_run(inputs.paths, block_size, manifest.scenes, preprocess.crops, seed, max_pixels,
                   (manifest.raw.get("model") or {}).get("sha256"), manifest_id(manifest.raw))
    summary = RaySummary(len(inputs), problems=list(inputs.problems))
    finished = finished_key(out)
    if finished == run.key:
        summary.done_before = len(inputs)
        _say(f"'{out}' is already complete; nothing to score")
    elif finished is not None:
        raise UserError(f"'{out}' already exists and holds other results; choose another --out or delete it")
    else:
        scorer_options = dict(model=str(Path(manifest.folder if model is None else model).resolve()), backend=backend,
                              device=device, threads=threads, batch=batch, precision=precision,
                              crops=preprocess.crops, seed=seed, scene=scene, max_pixels=max_pixels)
        score_missing_blocks(inputs, run, parts, scorer_options, options, quiet, summary)
    summary.failed = count_failed(out)
    if options.keep is not None:
        summary.kept = write_keep_list(out, options.keep, scene, options.keep_above, options.keep_top)
    return summary


def score_missing_blocks(inputs, run, parts: Parts, scorer_options: dict, options: RayOptions,
                         quiet: bool, summary: RaySummary) -> None:
    """Score the blocks that have no part file yet, then compact all parts into the output."""
    parts.start(run)
    done = parts.done_blocks()
    summary.done_before = sum(block_length(run, block) for block in done)
    pending = [block for block in range(run.blocks) if block not in done]
    if pending:
        started = time.perf_counter()
        summary.scored_now = run_pipeline(inputs, run, pending, parts, scorer_options, options, quiet)
        summary.seconds = time.perf_counter() - started
    parts.compact(run)


def check_options(out: Path | None, options: RayOptions) -> None:
    if out is None or str(out) == "-":
        raise UserError("--engine ray writes a Parquet file; name it with --out (e.g. --out scores.parquet)")
    if options.block_size < 1:
        raise UserError(f"--block-size must be at least 1 image, not {options.block_size}")
    if options.actors is not None and options.actors < 1:
        raise UserError(f"--actors must be at least 1, not {options.actors}")
    if options.keep_top is not None and not 0 < options.keep_top <= 1:
        raise UserError(f"--keep-top is a fraction in (0, 1], not {options.keep_top}")
    if (options.keep_above is not None or options.keep_top is not None) and options.keep is None:
        raise UserError("--keep-above and --keep-top choose what goes into the keep-list; name it with --keep FILE")


def block_length(run, block: int) -> int:
    return min(run.block_size, run.images - block * run.block_size)


def count_failed(out: Path) -> int:
    import pyarrow.parquet as pq

    errors = pq.read_table(out, columns=["error"]).column("error")
    return len(errors) - errors.null_count


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the pipeline --------------------------------------------------------------------------------
def run_pipeline(inputs, run, pending: list[int], parts: Parts, scorer_options: dict,
                 options: RayOptions, quiet: bool) -> int:
    """Score the pending blocks and write each as a part file; returns the images scored."""
    # Ray's C++ core logs notices as errors on stderr (e.g. about the actors' restart policy that we
    # chose, or each retry of a refused connection); a real failure still reaches us as an exception.
    # Read when Ray is imported, so set first. RAY_BACKEND_LOG_LEVEL=info shows them.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import ray

    started_here = connect(options.address)
    quiet_ray_logs()
    try:
        layout = plan_actors(ray.cluster_resources(), len(ray.nodes()), options.actors,
                             scorer_options["device"], scorer_options["threads"])
        scorer_options = dict(scorer_options, threads=layout.threads, workers=layout.workers)
        if not quiet:
            _say(f"scoring {sum(block_length(run, b) for b in pending)} of {run.images} image(s) on Ray "
                 f"with {layout.describe()}; crops {run.crops}; parts in '{parts.folder}'")
        dataset = build_dataset(inputs, run, pending, scorer_options, layout)
        return collect_blocks(dataset, run, pending, parts, quiet)
    except Exception as exc:
        raise _user_error_inside(exc) or exc
    finally:
        if started_here:
            ray.shutdown()


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address`, or start a local Ray; True if this call started it.
    A driver that already called ray.init (a notebook, the tests) keeps its Ray."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        # Ray runs its workers 15 nice levels below the driver; here the actors ARE the work, and their
        # decode threads lower themselves to nice 10 as in the local engine, which ranks them too near
        # inference at nice 15 - 10 = 5: with two threads per session one preempted inference thread
        # stalls every operator (measured: 1 actor at 0.77 of the local engine's steady rate, at 1.05
        # with this). A cluster started by `ray start` keeps its own setting (docs/ray.md).
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        return True
    check_reachable(address)
    failure = None
    with _native_stderr_captured() as captured:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            failure = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    if failure is None:
        return True
    if "InvalidAuthToken" in captured.text or "Unauthenticated" in captured.text:
        raise UserError(f"the Ray cluster at '{address}' refused this driver's token; {_token_advice()}")
    raise UserError(f"cannot join the Ray cluster at '{address}' ({failure}); check --ray-address")


def _token_advice() -> str:
    """Ray (2.59 and later) starts clusters with token authentication, but a driver joining an explicit
    address sends a token only when RAY_AUTH_MODE=token says so (docs/ray.md)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return "put the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token ('ray get-auth-token' on the head node)"
    return ("set RAY_AUTH_MODE=token, with the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token "
            "('ray get-auth-token' on the head node)")


@contextmanager
def _native_stderr_captured():
    """File descriptor 2 into a temporary file for a while: Ray's C++ client writes a line there for
    every refused attempt to reach the cluster (about twenty), before any log level applies. The
    text is in `.text` afterwards."""
    import tempfile
    from types import SimpleNamespace

    captured = SimpleNamespace(text="")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            file.seek(0)
            captured.text = file.read().decode("utf-8", "replace")


def check_reachable(address: str) -> None:
    """ray.init waits minutes on an address nobody listens at; a plain connect tells at once."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except ValueError:
        raise UserError(f"--ray-address '{address}' is not HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'") from None
    except OSError as exc:
        raise UserError(f"the Ray cluster at '{address}' cannot be reached ({exc.strerror or exc}); "
                               f"start it with 'ray start --head' or fix --ray-address") from None


def quiet_ray_logs() -> None:
    """Our own progress line says what Ray Data's bars and start-up lines would."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray").setLevel(logging.ERROR)
    # A failure reaches the driver as an exception: a user's mistake is said in one sentence, a bug of
    # ours is raised with its traceback; Ray Data's own copy of either would only repeat it.
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def _user_error_inside(exc: BaseException) -> UserError | None:
    """A UserError raised in a task or actor reaches the driver wrapped by Ray; unwrap it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)          # ray.exceptions.RayTaskError keeps the original here
        if isinstance(cause, UserError):
            return cause
        if type(exc) is UserError:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass(frozen=True)
class ActorLayout:
    actors: int
    gpus_each: int
    threads: int | None     # a CPU actor's inference threads
    cpus_each: float        # the Ray CPUs an actor asks for
    workers: int            # an actor's decode threads

    def describe(self) -> str:
        device = "1 GPU" if self.gpus_each else f"{self.threads} thread(s)"
        return f"{self.actors} scoring actor(s) of {device} and {self.workers} decode thread(s) each"


def plan_actors(resources: dict, nodes: int, actors: int | None, device: str, threads: int | None) -> ActorLayout:
    """One actor per GPU, or without GPUs one single-threaded actor per CPU, unless --actors says.
    On CPUs, sessions of one inference thread side by side beat one session of many threads (measured
    on 2 cores, docs/ray.md: 2 actors x 1 thread 1.43x the steady rate of 1 x 2 threads on the demo
    model, 1.11x on ViT-B/16 INT8). Each actor reads and decodes its own images, so there are no other
    tasks to leave room for: a CPU actor asks Ray for the CPUs its inference threads use (asking for
    them also spreads the actors over the nodes) and decodes with two low-priority threads, as the
    local engine does; a GPU actor asks for one GPU and its share of the CPUs, all of them decode threads."""
    cpus = float(resources.get("CPU", 1))
    gpus = int(resources.get("GPU", 0))
    wants_gpu = device in ("cuda", "tensorrt") or (device == "auto" and gpus > 0)
    if device in ("cuda", "tensorrt") and gpus == 0:
        raise UserError(f"--device {device} asks for a GPU but the Ray cluster has none; "
                               f"use --device cpu or add GPU nodes")
    actors = actors or (gpus if wants_gpu else max(nodes, int(cpus) // (threads or 1)))
    if wants_gpu and actors > gpus:
        raise UserError(f"--actors {actors} asks for one GPU each but the Ray cluster has {gpus}")
    share = cpus / actors
    if wants_gpu:
        cpus_each = max(float(int(share)), min(1.0, share))
        return ActorLayout(actors, 1, threads, cpus_each, max(2, int(share)))
    threads = threads or max(1, int(share))
    return ActorLayout(actors, 0, threads, min(float(threads), share), 2)


def build_dataset(inputs, run, pending: list[int], scorer_options: dict, layout: ActorLayout):
    """The pending blocks of the input table (paths and shard offsets: about 100 bytes an image), mapped
    by the actor pool; an actor reads, decodes, crops and scores, so only small rows travel."""
    import ray

    table = inputs.table()
    blocks = [table.slice(block * run.block_size, block_length(run, block)) for block in pending]
    # from_blocks, not from_arrow: from_arrow reads each block's schema in a Ray task, which starts
    # worker processes (seconds) before the first image is scored; from_blocks reads it here.
    return ray.data.from_blocks(blocks).map_batches(
        ScoreActor, batch_size=None, batch_format="pyarrow",
        fn_constructor_kwargs={"scorer_options": scorer_options, "run": run, "folder": os.getcwd()},
        compute=ray.data.ActorPoolStrategy(size=layout.actors),
        num_cpus=layout.cpus_each, num_gpus=layout.gpus_each or None)


def collect_blocks(dataset, run, pending: list[int], parts: Parts, quiet: bool) -> int:
    """Gather the scored rows into their blocks; write each block the moment it is complete. An actor
    returns whole blocks, but a block retried after an actor died may come back as pieces."""
    import pyarrow as pa

    waiting: dict[int, list] = {}
    remaining = {block: block_length(run, block) for block in pending}
    progress = Progress(sum(remaining.values()), quiet)
    scored = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        blocks = batch.column("index").to_numpy() // run.block_size
        for block in np.unique(blocks):
            rows = batch if blocks[0] == blocks[-1] == block and (blocks == block).all() else \
                batch.filter(pa.array(blocks == block))
            waiting.setdefault(int(block), []).append(rows)
            remaining[int(block)] -= rows.num_rows
            if remaining[int(block)] == 0:
                parts.write(int(block), finished_block(waiting.pop(int(block))))
        scored += batch.num_rows
        progress.update(batch.num_rows)
    progress.close()
    if any(remaining.values()):
        raise AssertionError(f"blocks left incomplete: {[b for b, n in remaining.items() if n][:5]}")  # a bug
    return scored


def finished_block(pieces):
    import pyarrow as pa

    table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
    return table.sort_by("index").drop_columns(["index"])


# -- the actors ----------------------------------------------------------------------------------
class ScoreActor:
    """Ray actor holding ONE backend session (one per GPU, or a share of the cores). It scores a block
    with the local engine's own loop (Scorer.score_many: a small pool of low-priority threads reads,
    decodes and crops the next images while the backend scores), so a row's score is the local one."""

    def __init__(self, scorer_options: dict, run, folder: str):
        if os.path.isdir(folder):
            os.chdir(folder)        # relative paths mean here what they meant to the driver (a shared filesystem)
        self.run = run
        try:
            self.scorer, self.failure = SourceScorer(**scorer_options), None
        except UserError as exc:
            # Raised from here, Ray would report a dead actor (a traceback); raised from the first block,
            # it reaches the driver as the UserError it is, and its one sentence is said there.
            self.scorer, self.failure = None, exc

    def __call__(self, block: "pa.Table") -> "pa.Table":  # noqa: F821 - pyarrow is imported lazily
        import pyarrow as pa

        if self.failure is not None:
            raise self.failure
        rows = list(self.scorer.score_many(source_of(row) for row in block.to_pylist()))
        count = len(rows)
        columns = {"index": block.column("index"), "path": block.column("path")}
        for scene in self.run.scenes:
            columns[scene] = pa.array([None if row.scores is None else row.scores[scene] for row in rows],
                                      pa.float64())
        columns.update({
            "crops": pa.array([self.run.crops] * count, pa.string()),
            "crop_count": pa.array([row.crops if row.ok else 0 for row in rows], pa.int32()),
            "error": pa.array([row.error for row in rows], pa.string()),
            "warning": pa.array([row.warning for row in rows], pa.string()),
            "model_sha256": pa.array([self.run.model_sha256] * count, pa.string()),
            "manifest_id": pa.array([self.run.manifest_id] * count, pa.string()),
        })
        return pa.table(columns)


class Progress:
    """Scored images, rate and ETA on stderr: rewritten in place on a terminal, a line every 30 s in a log."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.done = total, quiet, 0
        self.tty = sys.stderr.isatty()
        self.started = self.shown = time.perf_counter()

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if not self.quiet and now - self.shown >= (1.0 if self.tty else 30.0):
            self.shown = now
            self._show(now, end="\r" if self.tty else "\n")

    def close(self) -> None:
        if not self.quiet and self.tty:
            self._show(time.perf_counter(), end="\n")

    def _show(self, now: float, end: str) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate else math.inf
        print(f"scored {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), "
              f"{rate:.1f} images/s, ETA {_duration(eta)}", end=end, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"

"""`gamma-edge score --engine ray` on a real local Ray (2 CPUs, started once for this module).

The reference everywhere is the single-process Scorer.score_many: same images, same model, and the
Ray engine must give exactly its scores and errors, in input order, whatever happened on the way
(a killed driver, a dead actor, a resumed run).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.dataset.inputs import expand_paths
from contract.errors import UserError
from contract.manifest import load_manifest
from runtime.dataset import ray_engine
from runtime.dataset.ray_engine import RayOptions, check_reachable, plan_actors, score_with_ray
from runtime.dataset.inputs import list_inputs
from contract.manifest import manifest_id
from runtime.dataset.score_table import Parts, make_run, select_keep
from runtime.inference.scorer import Scorer
from runtime_fixtures import make_model, textured_image

REPO = Path(__file__).resolve().parents[1]
SCENES = ("natural", "aigc")
IMAGES = 240
BLOCK = 16

# Ray Data warns about its own deprecated settings when it copies its context
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- fixtures: one Ray, one model, one set of images for the whole module ----------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def ray_address(work):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model(work):
    return make_model(work / "model", scenes=SCENES)


@pytest.fixture(scope="module")
def images(work):
    """IMAGES small photos (PNG and JPEG, 64-200 px, so most are enlarged to the crop) and four bad files."""
    folder = work / "images"
    folder.mkdir()
    rng = np.random.default_rng(7)
    files = [folder / f"img{i:04d}.{'png' if i % 3 else 'jpg'}" for i in range(IMAGES)]
    for i, file in enumerate(files):
        height, width = (int(v) for v in rng.integers(64, 201, 2))
        cv2.imwrite(str(file), textured_image(height, width, seed=i))
    files[50].write_bytes(files[50].read_bytes()[:100])                    # truncated
    files[99].write_bytes(b"not an image at all")
    files[152].write_bytes(b"")
    files[201].write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return folder


@pytest.fixture(scope="module")
def reference(model, images):
    """path -> (scores per scene, error) from the single-process scorer, in expand_paths order."""
    paths = expand_paths([str(images)])
    rows = Scorer(model).score_many(paths)
    return {row.source: (row.scores, row.error) for row in rows}


@pytest.fixture(scope="module")
def folder_run(ray_address, model, images, work):
    """The folder scored once, uninterrupted: the table every other run must reproduce."""
    out = work / "folder.parquet"
    summary = score_with_ray([str(images)], out, RayOptions(block_size=BLOCK), model=model, quiet=True)
    return out, summary


def assert_matches(table: pa.Table, reference: dict, names=None):
    """Every row has exactly the single-process scores and error of its image."""
    rows = table.to_pylist()
    names = names or [row["path"] for row in rows]
    assert len(rows) == len(names)
    for row, name in zip(rows, names):
        scores, error = reference[name]
        assert row["error"] == error, name
        if error is None:
            assert {scene: row[scene] for scene in SCENES} == scores, name   # exact, not approximate
            assert row["crop_count"] == 5
        else:
            assert all(row[scene] is None for scene in SCENES) and row["crop_count"] == 0


# -- parity with the single-process scorer -----------------------------------------------------------
def test_folder_gives_exactly_the_single_process_scores(folder_run, reference, model):
    out, summary = folder_run
    table = pq.read_table(out)
    assert table.column("path").to_pylist() == list(reference)          # input order, nothing lost or doubled
    assert_matches(table, reference)
    assert summary.failed == 4 and summary.scored_now == IMAGES and summary.done_before == 0
    manifest = load_manifest(model)
    assert set(table.column("model_sha256").to_pylist()) == {manifest.raw["model"]["sha256"]}
    assert set(table.column("manifest_id").to_pylist()) == {manifest_id(manifest.raw)}
    assert set(table.column("crops").to_pylist()) == {"five"}
    assert not Parts(out).folder.exists()                                 # compacted, parts removed


def test_path_list_and_parquet_match_and_a_parquet_without_paths_is_one_sentence(
        ray_address, model, images, reference, work, capsys):
    names = sorted(p.name for p in images.iterdir())
    (images / "first.txt").write_text("# the first half, relative to this list\n\n" +
                                      "\n".join(names[:100]) + "\n")
    pq.write_table(pa.table({"file": [str(images / n) for n in names[100:]]}), work / "second.parquet")
    pq.write_table(pa.table({"name": ["x.png"]}), work / "nopaths.parquet")
    out = work / "lists.parquet"
    summary = score_with_ray([str(images / "first.txt"), str(work / "nopaths.parquet"), str(work / "second.parquet")],
                             out, RayOptions(block_size=BLOCK, path_column="file"), model=model, quiet=True)
    assert summary.problems == [f"the Parquet file '{work / 'nopaths.parquet'}' has no 'file' column (it has "
                                f"name); name its path column with --path-column"]
    assert summary.problems[0] in capsys.readouterr().err
    table = pq.read_table(out)
    assert table.column("path").to_pylist() == [str(images / n) for n in names]
    assert_matches(table, reference)


def write_shards(images: Path, folder: Path, per_shard: int = 100) -> list[Path]:
    """WebDataset shards: members named <key>.<ext> (plus a .json per sample that is not an image)."""
    folder.mkdir()
    files = sorted(images.glob("img*"))
    shards = []
    for start in range(0, len(files), per_shard):
        shard = folder / f"shard-{start // per_shard:03d}.tar"
        with tarfile.open(shard, "w") as archive:
            for file in files[start:start + per_shard]:
                archive.add(file, arcname=file.name)
                meta = folder / "meta.json"
                meta.write_text('{"source": "test"}')
                archive.add(meta, arcname=f"{file.stem}.json")
        shards.append(shard)
    (folder / "meta.json").unlink()
    return shards


def test_webdataset_shards_match_and_a_broken_shard_is_one_sentence(
        ray_address, model, images, reference, work, capsys):
    shards = write_shards(images, work / "shards")
    (work / "shards" / "shard-999.tar").write_bytes(b"\x00garbage" * 100)    # sorts last, unreadable
    out = work / "shards.parquet"
    summary = score_with_ray([str(work / "shards" / "*.tar")], out, RayOptions(block_size=BLOCK),
                             model=model, quiet=True)
    assert len(summary.problems) == 1 and "shard-999.tar' is not a readable tar file" in summary.problems[0]
    assert summary.problems[0] in capsys.readouterr().err
    table = pq.read_table(out)
    members = [path.split("::")[1] for path in table.column("path").to_pylist()]
    assert members == [Path(p).name for p in reference]            # every image, in shard order
    assert table.column("path").to_pylist()[0] == f"{shards[0]}::img0000.jpg"
    by_name = {Path(path).name: value for path, value in reference.items()}
    for row, member in zip(table.to_pylist(), members):
        scores, error = by_name[member]
        assert (row["error"] is None) == (error is None), member
        if error is None:
            assert {scene: row[scene] for scene in SCENES} == scores, member
        else:
            assert row["path"] in row["error"]              # the sentence names the member


# -- resuming ----------------------------------------------------------------------------------------
KILLABLE_DRIVER = textwrap.dedent("""
    import sys, time
    from runtime.dataset import score_table
    from runtime.commands.score import score_command

    write = score_table.Parts.write
    def slow_write(self, block, table):         # widen the window in which the test kills us
        write(self, block, table)
        time.sleep(0.4)
    score_table.Parts.write = slow_write
    score_command(sys.argv[1:])
""")


def test_a_killed_driver_resumes_to_the_identical_table(ray_address, model, images, folder_run, work):
    out = work / "killed.parquet"
    arguments = [str(images), "--engine", "ray", "--ray-address", ray_address, "--model", str(model),
                 "--out", str(out), "--block-size", str(BLOCK), "-q"]
    driver = subprocess.Popen([sys.executable, "-c", KILLABLE_DRIVER, *arguments], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = Parts(out)
    deadline = time.monotonic() + 120
    while len(parts.done_blocks()) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read().decode()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    driver.stderr.close()
    done = len(parts.done_blocks())
    assert not out.exists() and 3 <= done < IMAGES // BLOCK

    summary = score_with_ray([str(images)], out, RayOptions(block_size=BLOCK), model=model, quiet=True)
    assert summary.done_before == done * BLOCK and summary.scored_now == IMAGES - done * BLOCK
    expected = pq.read_table(folder_run[0])
    resumed = pq.read_table(out)
    assert resumed.equals(expected) and resumed.schema.metadata == expected.schema.metadata


def test_a_run_of_other_inputs_is_not_mixed_into_unfinished_parts(model, images, work):
    out = work / "other.parquet"
    paths = [str(p) for p in sorted(images.glob("img*"))]
    parts = Parts(out)
    parts.start(make_run(paths[:10], BLOCK, SCENES, "five", 0, None, None, "id"))
    with pytest.raises(UserError, match="holds an unfinished run of other images"):
        score_with_ray([str(images)], out, RayOptions(block_size=BLOCK), model=model, quiet=True)


def test_a_finished_output_is_not_scored_again_and_gives_the_keep_list(folder_run, images, model, work):
    out, _ = folder_run
    before = out.stat().st_mtime_ns
    keep = work / "keep.txt"
    summary = score_with_ray([str(images)], out, RayOptions(block_size=BLOCK, keep=keep, keep_top=0.25),
                             model=model, quiet=True)       # no Ray needed: nothing left to score
    assert summary.scored_now == 0 and summary.done_before == IMAGES and out.stat().st_mtime_ns == before
    table = pq.read_table(out)
    scored = [(row["natural"], row["path"]) for row in table.to_pylist() if row["error"] is None]
    best = {path for _, path in sorted(scored, key=lambda item: -item[0])[:int(np.ceil(0.25 * len(scored)))]}
    kept = keep.read_text().splitlines()
    assert summary.kept == len(kept) == len(best) and set(kept) == best
    assert kept == [path for path in table.column("path").to_pylist() if path in best]    # table order


def test_other_results_at_the_output_are_refused(model, images, work):
    out = work / "taken.parquet"
    pq.write_table(pa.table({"x": [1]}), out)
    with pytest.raises(UserError, match="already exists and holds other results"):
        score_with_ray([str(images)], out, RayOptions(), model=model, quiet=True)


# -- a dead actor --------------------------------------------------------------------------------
@pytest.fixture
def actor_exit_trigger(monkeypatch, work):
    """While the trigger file exists, the first scoring actor to reach its second block removes it and
    dies (os._exit, as a crashed or preempted node would); only one actor wins the unlink, so only one
    dies. The engine's own ScoreActor is swapped for a subclass for this test only: the class is
    defined inside this fixture, so Ray pickles it by value and ships it to the actor processes, which
    need nothing of the tests on their path."""
    trigger = work / "exit-once"

    class ScoreActorThatDiesOnce(ray_engine.ScoreActor):
        def __call__(self, block):
            self.blocks_seen = getattr(self, "blocks_seen", 0) + 1
            if self.blocks_seen >= 2:
                try:
                    os.unlink(trigger)
                except FileNotFoundError:
                    pass
                else:
                    os._exit(1)
            return super().__call__(block)

    monkeypatch.setattr(ray_engine, "ScoreActor", ScoreActorThatDiesOnce)
    yield trigger
    trigger.unlink(missing_ok=True)


def test_a_dead_actor_is_replaced_and_no_image_is_lost_or_doubled(ray_address, model, images, folder_run, work,
                                                                  actor_exit_trigger):
    trigger = actor_exit_trigger
    trigger.touch()                     # the first actor to reach its second batch exits
    out = work / "actor.parquet"
    summary = score_with_ray([str(images)], out, RayOptions(block_size=BLOCK), model=model, quiet=True)
    assert not trigger.exists(), "no actor died, so this test tested nothing"
    assert summary.scored_now == IMAGES
    assert pq.read_table(out).equals(pq.read_table(folder_run[0]))


# -- one sentence for each mistake, and the parts without Ray -----------------------------------------
def test_an_unreachable_ray_address_is_one_sentence(images, model, tmp_path):
    done = subprocess.run([sys.executable, "-m", "gamma_edge.cli", "score", str(images), "--engine", "ray",
                           "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "x.parquet"),
                           "--model", str(model)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: the Ray cluster at '127.0.0.1:1' cannot be reached (Connection refused); "
        "start it with 'ray start --head' or fix --ray-address")
    assert "Traceback" not in done.stderr
    with pytest.raises(UserError, match="is not HOST:PORT"):
        check_reachable("localhost")


def test_a_cluster_refusing_the_token_is_one_sentence(ray_address, images, model, tmp_path):
    """Ray 2.59+ starts local clusters with token authentication (the test's Ray too); a driver that
    joins an explicit address without RAY_AUTH_MODE=token sends no token and is refused."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        pytest.skip("this Ray started without token authentication")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("RAY_AUTH")}
    done = subprocess.run([sys.executable, "-m", "gamma_edge.cli", "score", str(images), "--engine", "ray",
                           "--ray-address", ray_address, "--out", str(tmp_path / "x.parquet"), "--model", str(model)],
                          cwd=REPO, capture_output=True, text=True, timeout=180, env=environment)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: the Ray cluster at '{ray_address}' refused this driver's token; set RAY_AUTH_MODE=token, with "
        f"the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token ('ray get-auth-token' on the head node)"]


def test_ray_options_need_the_ray_engine_and_an_output(images, model):
    from click.testing import CliRunner

    from runtime.commands.score import score_command

    result = CliRunner().invoke(score_command, [str(images), "--keep-top", "0.5", "--model", str(model)])
    assert result.exit_code == 1 and "--keep-top work only with --engine ray" in result.output
    result = CliRunner().invoke(score_command, [str(images), "--engine", "ray", "--model", str(model)])
    assert result.exit_code == 1 and "name it with --out" in result.output


def test_actors_share_out_the_cpus_and_decode_themselves():
    default = plan_actors({"CPU": 2.0}, 1, None, "auto", None)    # one single-threaded actor per CPU
    assert (default.actors, default.threads, default.cpus_each, default.gpus_each, default.workers) == (2, 1, 1.0, 0, 2)
    one = plan_actors({"CPU": 2.0}, 1, 1, "auto", None)
    assert (one.actors, one.threads, one.cpus_each) == (1, 2, 2.0)
    nodes = plan_actors({"CPU": 64.0}, 4, None, "auto", None)
    assert (nodes.actors, nodes.threads, nodes.cpus_each) == (64, 1, 1.0)
    wide = plan_actors({"CPU": 64.0}, 4, None, "auto", 4)            # --threads 4: a quarter as many actors
    assert (wide.actors, wide.threads, wide.cpus_each) == (16, 4, 4.0)
    told = plan_actors({"CPU": 2.0}, 1, None, "cpu", 8)             # more threads than CPUs still schedules
    assert (told.actors, told.threads, told.cpus_each) == (1, 8, 2.0)
    gpus = plan_actors({"CPU": 32.0, "GPU": 4.0}, 2, None, "auto", None)
    assert (gpus.actors, gpus.gpus_each, gpus.cpus_each, gpus.workers) == (4, 1, 8.0, 8)
    with pytest.raises(UserError, match="has none"):
        plan_actors({"CPU": 2.0}, 1, None, "cuda", None)


def test_keep_rules():
    table = pa.table({"path": list("abcdef"), "natural": [0.5, None, 0.9, 0.5, 0.1, 0.7]})
    assert select_keep(table, "natural", 0.5, None) == ["a", "c", "d", "f"]
    assert select_keep(table, "natural", None, 0.4) == ["c", "f"]          # ceil(0.4 * 5 scored) = 2
    assert select_keep(table, "natural", None, 0.6) == ["a", "c", "f"]     # the tie goes to table order
    assert select_keep(table, "natural", 0.6, 0.6) == ["c", "f"]


def test_inputs_list_relative_paths_against_their_list(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.txt").write_text("a.png\n/abs/b.png\n")
    inputs = list_inputs([str(tmp_path / "sub" / "list.txt")])
    assert inputs.paths == [str(tmp_path / "sub" / "a.png"), "/abs/b.png"]


def test_the_local_engine_imports_neither_ray_nor_pyarrow(images, model):
    program = textwrap.dedent("""
        import sys
        from runtime.commands.score import score_command
        try:
            score_command(sys.argv[1:])
        except SystemExit:
            pass
        leaked = sorted({m.split(".")[0] for m in sys.modules} & {"ray", "pyarrow"})
        assert not leaked, leaked
    """)
    done = subprocess.run([sys.executable, "-c", program, str(images), "--model", str(model), "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "img0001.png" in done.stdout

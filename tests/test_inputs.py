"""The local engine reads what the Ray engine reads (runtime/dataset/inputs.py): path lists, Parquet path
columns and WebDataset shards give the folder's scores, without importing Ray (and pyarrow only
for a Parquet file)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import cv2
import pytest

from contract.errors import UserError
from runtime.dataset.inputs import Member, list_inputs, source_of
from runtime_fixtures import make_model, textured_image

REPO = Path(__file__).resolve().parents[1]

# Runs `gamma-edge score` (the local engine) with ray blocked, and says which of ray / pyarrow got imported.
LOCAL_SCORE = textwrap.dedent("""
    import json, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    BLOCKED = {"ray"} | set(sys.argv[1].split(",")) - {""}
    sys.meta_path.insert(0, Block())
    from runtime.commands.score import score_command
    try:
        score_command(sys.argv[2:])
    except SystemExit as exit:
        status = exit.code
    imported = sorted({m.split(".")[0] for m in sys.modules} & {"ray", "pyarrow"})
    print(json.dumps({"status": status, "imported": imported}), file=sys.stderr)
""")


def score_locally(arguments, blocked=""):
    """(rows of --format jsonl, exit status, modules imported, stderr) of a local `gamma-edge score`."""
    done = subprocess.run([sys.executable, "-c", LOCAL_SCORE, blocked, *arguments, "--format", "jsonl", "-q"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return rows, report["status"], report["imported"], done.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "m", scenes=("natural", "aigc"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """12 small photos and one corrupt file."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(12):
        cv2.imwrite(str(folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"), textured_image(180 + 9 * i, 260, seed=i))
    (folder / "img12.png").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def folder_rows(model, images):
    rows, status, imported, _ = score_locally([str(images), "--model", str(model), "--all-scenes"])
    assert status == 1 and imported == []          # the corrupt file fails; nothing of Ray's or pyarrow's
    assert len(rows) == 13 and rows[12]["error"] and rows[0]["error"] is None
    return rows


def scores(rows):
    return [(row["natural"], row["aigc"], row["error"] is None) for row in rows]


def test_a_path_list_scores_as_the_folder(model, images, folder_rows, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# every image, absolute\n" + "".join(f"{images / f'img{i:02d}'}.{'png' if i % 2 else 'jpg'}\n"
                                                            for i in range(12)) + f"\n{images / 'img12.png'}\n")
    rows, status, imported, _ = score_locally([str(listing), "--model", str(model), "--all-scenes"])
    assert (status, imported) == (1, [])
    assert [row["path"] for row in rows] == [row["path"] for row in folder_rows]
    assert scores(rows) == scores(folder_rows)                   # exact: the same scorer on the same pixels


def write_shards(images: Path, folder: Path) -> list[Path]:
    """Two WebDataset shards: each sample an image member and a .json member that is not an image."""
    folder.mkdir()
    files = sorted(images.iterdir())
    shards = []
    for number, chunk in enumerate((files[:7], files[7:])):
        shard = folder / f"shard-{number}.tar"
        with tarfile.open(shard, "w") as archive:
            for file in chunk:
                archive.add(file, arcname=file.name)
                meta = folder / f"{file.stem}.json"
                meta.write_text("{}")
                archive.add(meta, arcname=meta.name)
                meta.unlink()
        shards.append(shard)
    return shards


def test_shards_score_as_the_folder_and_a_broken_shard_is_one_warning(model, images, folder_rows, tmp_path):
    shards = write_shards(images, tmp_path / "shards")
    (tmp_path / "shards" / "shard-9.tar").write_bytes(b"\x00garbage" * 100)
    rows, status, imported, stderr = score_locally([str(tmp_path / "shards" / "*.tar"), "--model", str(model),
                                                    "--all-scenes"])
    assert (status, imported) == (1, [])
    assert f"warning: the shard '{tmp_path / 'shards' / 'shard-9.tar'}' is not a readable tar file" in stderr
    assert "Traceback" not in stderr
    assert [row["path"] for row in rows] == [f"{shards[i // 7]}::img{i:02d}.{'png' if i % 2 else 'jpg'}"
                                             for i in range(12)] + [f"{shards[1]}::img12.png"]
    assert scores(rows) == scores(folder_rows)
    assert rows[12]["path"] in rows[12]["error"]                     # the sentence names the member


def test_a_parquet_path_column_scores_as_the_folder(model, images, folder_rows, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"file": [Path(row["path"]).name for row in folder_rows]}), images / "paths.parquet")
    try:
        rows, status, imported, _ = score_locally([str(images / "paths.parquet"), "--path-column", "file",
                                                   "--model", str(model), "--all-scenes"])
    finally:
        (images / "paths.parquet").unlink()
    assert (status, imported) == (1, ["pyarrow"])                     # pyarrow, only because a Parquet was given
    assert [row["path"] for row in rows] == [row["path"] for row in folder_rows]    # relative to the Parquet's folder
    assert scores(rows) == scores(folder_rows)


def test_a_parquet_without_pyarrow_is_one_sentence(model, images, tmp_path):
    parquet = tmp_path / "paths.parquet"
    parquet.write_bytes(b"PAR1 not read")
    rows, status, _, stderr = score_locally([str(parquet), str(images / "img00.jpg"), "--model", str(model)],
                                            blocked="pyarrow")
    assert status == 1 and [Path(row["path"]).name for row in rows] == ["img00.jpg"]     # the rest is scored
    assert (f"warning: reading the Parquet file '{parquet}' needs pyarrow, which is not installed; "
            f"pip install -e '.[ray]'") in stderr
    assert "Traceback" not in stderr


def test_members_travel_with_their_place_in_the_shard(images, tmp_path):
    shard = write_shards(images, tmp_path / "shards")[0]
    (member, *_) = list_inputs([str(shard)]).sources
    assert isinstance(member, Member) and member == f"{shard}::img00.jpg"
    assert member.read() == (images / "img00.jpg").read_bytes()
    copy = pickle.loads(pickle.dumps(member))
    assert (copy, copy.shard, copy.offset, copy.size) == (member, member.shard, member.offset, member.size)
    row = list_inputs([str(shard)]).table().to_pylist()[0]
    rebuilt = source_of(row)
    assert (rebuilt, rebuilt.offset, rebuilt.size) == (member, member.offset, member.size)
    shard.unlink()
    with pytest.raises(UserError, match="cannot be read"):
        member.read()


def test_a_pattern_matching_nothing_stops_the_run(images):
    with pytest.raises(UserError, match="matches no files"):
        list_inputs([str(images), str(images / "nothing" / "*.jpg")])

"""Every mistake a user can make at the command line ends in one sentence and a non-zero exit
status, never a traceback: each command's failure modes, through `gamma-edge` as installed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime_fixtures import make_model

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "runtime" / "samples" / "coins_pristine.png"
DEMO = REPO / "runtime" / "models" / "demo"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    (root / "empty").mkdir()
    (root / "no-manifest").mkdir()
    (root / "notes.txt").write_text("These are notes, not weights and not an image; a user passed the wrong file.\n")
    (root / "tiny.pth").write_bytes(b"x")
    (root / "empty.pth").write_bytes(b"")
    (root / "random.pth").write_bytes(bytes(range(256)) * 8)
    import zipfile
    with zipfile.ZipFile(root / "other.zip.pth", "w") as archive:
        archive.writestr("readme.txt", "no data.pkl in here" * 10)
    whole = (root / "other.zip.pth").read_bytes()
    (root / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (root / "photo.pth").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    (root / "taken").mkdir()
    (root / "taken" / "keep.txt").write_text("x")
    make_model(root / "model")
    return root


CASES = {
    # command line (with {root} for the fixture folder)      -> words the one sentence must hold
    "score missing file": ("score {root}/nope.jpg -q", "row: does not exist"),
    "score missing model": ("score {sample} --model {root}/nope -q", "does not exist"),
    "score folder without manifest": ("score {sample} --model {root}/no-manifest -q", "has no manifest.json"),
    "score empty folder": ("score {root}/empty -q", "no image files found"),
    "score glob matching nothing": ("score '{root}/*.heic' -q", "matches no files"),
    "score output not writable": ("score {sample} --out /proc/nope/scores.csv -q", "cannot be written"),
    "score unknown scene": ("score {sample} --scene xray -q", "is not in this model"),
    "score bad crops": ("score {sample} --crops seven", "Invalid value for '--crops'"),
    "score bf16 on onnxruntime": ("score {sample} --backend onnxruntime --precision bf16 -q", "no bf16 mode"),
    "run missing video": ("run {root}/nope.mp4 -q", "neither a camera index"),
    "run jsonl not writable": ("run {root}/nope.mp4 --jsonl /proc/nope/x.jsonl -q", ""),
    "export missing checkpoint": ("export --checkpoint {root}/nope.safetensors --out {root}/e1", "does not exist"),
    "export text file as checkpoint": ("export --checkpoint {root}/notes.txt --out {root}/e2", "not a gamma-edge checkpoint"),
    "export unknown scene": ("export --scene xray --out {root}/e3 --quiet", "xray"),
    "export output exists": ("export --out {root}/taken --quiet", "already exists"),
    "export calib without int8": ("export --calib {root}/empty --out {root}/e4 --quiet", "only used with --int8"),
    "export calib folder missing": ("export --int8 --calib {root}/nope --out {root}/e5 --quiet", "nope"),
    "export unknown preset": ("export --int8 --preset avx9", "Invalid value for '--preset'"),
    "convert missing file": ("convert {root}/nope.pth --out {root}/c.safetensors", "does not exist"),
    "convert text file": ("convert {root}/notes.txt --out {root}/c.safetensors", "a text file"),
    "convert one-byte file": ("convert {root}/tiny.pth --out {root}/c.safetensors", "only 1 byte"),
    "convert empty file": ("convert {root}/empty.pth --out {root}/c.safetensors", "is empty (0 bytes)"),
    "convert random bytes": ("convert {root}/random.pth --out {root}/c.safetensors", "not a PyTorch weights file (it starts with bytes 00010203"),
    "convert zip without data.pkl": ("convert {root}/other.zip.pth --out {root}/c.safetensors", "zip archive without data.pkl"),
    "convert truncated zip": ("convert {root}/truncated.pth --out {root}/c.safetensors", "truncated or damaged zip"),
    "convert a JPEG": ("convert {root}/photo.pth --out {root}/c.safetensors", "is a JPEG image"),
    "benchmark missing model": ("benchmark --model {root}/nope", "does not exist"),
    "benchmark zero runs": ("benchmark --model {root}/model --runs 0", "--runs must be at least 1"),
    "scenes missing model": ("scenes --model {root}/nope", "does not exist"),
    "scenes text checkpoint": ("scenes --checkpoint {root}/notes.txt", "not a gamma-edge checkpoint"),
    "demo output not writable": ("demo --out /proc/nope", "cannot write the demo's outputs"),
    "unknown command": ("frobnicate", "No such command"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_sentence(name, files):
    import shlex

    from gamma_edge.cli import main

    line, words = CASES[name]
    args = shlex.split(line.format(root=files, sample=SAMPLE))
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), (name, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (name, repr(result.exception))
    assert "Traceback" not in result.output
    if words.startswith("row: "):          # score reports a bad image in its row, counts it on stderr, exits 1
        assert result.exit_code == 1 and words[5:] in result.output and "could not be scored" in result.output
        return
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, (name, result.output)
    assert words in errors[0] or words in result.output, (name, result.output)


def test_through_the_installed_entry_point(files):
    """The same, as a shell runs it: stderr holds one Error line and no traceback."""
    done = subprocess.run([sys.executable, "-m", "gamma_edge", "score", str(SAMPLE), "--model", str(files / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()][-1].startswith("Error: ")


def test_scenes_of_a_model_are_its_own(files):
    from gamma_edge.cli import main

    result = CliRunner().invoke(main, ["scenes", "--model", str(DEMO)])
    assert result.exit_code == 0 and result.output.startswith("Scenes of ")
    assert [line for line in result.output.splitlines() if not line.startswith((" ", "Scenes"))] == ["natural"]
    every = CliRunner().invoke(main, ["scenes"])
    assert "an exported model scores only its own" in every.output and "aesthetics" in every.output

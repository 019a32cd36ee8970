"""`gamma-edge score` and `gamma-edge run` through click, and through the real entry point."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from runtime import Scorer
from runtime.commands.run import run_command
from runtime.commands.score import score_command
from runtime_fixtures import make_model, textured_image, write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m"), scenes=("natural", "aigc"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    (root / "sub" / "deeper").mkdir(parents=True)
    paths = [root / "a.jpg", root / "b.png", root / "sub" / "c.jpg", root / "sub" / "deeper" / "d.webp"]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), textured_image(260 + 50 * i, 400, seed=i))
    (root / "corrupt.jpg").write_bytes(paths[0].read_bytes()[:20] + b"\x00" * 50)
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("a text file named .jpg")
    (root / "README.txt").write_text("not an image, and not named like one: skipped")
    return root


def invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_score_folder_reports_bad_files_in_their_rows(model, photos):
    result = invoke(score_command, [photos, "--model", model, "--format", "csv", "-q"])
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"a.jpg", "b.png", "c.jpg", "d.webp", "corrupt.jpg", "empty.jpg", "notes.jpg"}
    scorer = Scorer(model)
    for name in ("a.jpg", "b.png", "c.jpg", "d.webp"):
        assert by_name[name]["error"] == ""
        assert abs(float(by_name[name]["score"]) - scorer.score(by_name[name]["path"])) < 1e-6
    for name in ("corrupt.jpg", "empty.jpg", "notes.jpg"):
        assert by_name[name]["score"] == "" and by_name[name]["error"]
    assert "scored 4 of 7 image(s); 3 could not be scored" in result.stderr
    assert "Traceback" not in result.output


def test_score_formats_globs_all_scenes_and_out(model, photos, tmp_path):
    result = invoke(score_command, [photos / "**" / "*.jpg", "--model", model, "--format", "jsonl",
                                    "--all-scenes", "--crops", "center"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {Path(r["path"]).name for r in records} == {"a.jpg", "c.jpg", "corrupt.jpg", "empty.jpg", "notes.jpg"}
    good = [r for r in records if r["error"] is None]
    assert len(good) == 2 and all(set(r) == {"path", "natural", "aigc", "error"} for r in good)
    assert "ONNX Runtime on CPU (providers: CPUExecutionProvider" in result.stderr
    out = tmp_path / "scores.txt"
    result = invoke(score_command, [photos / "a.jpg", photos / "b.png", "--model", model, "--out", out,
                                    "--scene", "aigc", "--backend", "openvino"])
    assert result.exit_code == 0 and result.stdout == ""
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["path", "score", "error"] and len(lines) == 3
    assert abs(float(lines[1].split()[1]) - Scorer(model, scene="aigc").score(photos / "a.jpg")) < 1e-5


@pytest.mark.parametrize("args,message", [
    (["nothing/*.jpg"], "matches no files"),
    (["--scene", "face"], "scene 'face' is not in this model"),
    (["--model", "/nonexistent/model"], "does not exist"),
])
def test_score_user_mistakes_are_one_line(model, photos, args, message):
    result = invoke(score_command, [photos / "a.jpg", "--model", model] + args)
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_run_video_to_jsonl_file(model, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=20)
    out = tmp_path / "frames.jsonl"
    result = invoke(run_command, [video, "--model", model, "--jsonl", out, "--every", "5", "--threshold", "0.3"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records if "score" in r] == [0, 5, 10, 15]
    assert records[-2]["event"] == "end" and records[-1]["event"] == "summary"
    assert "20 frames read, 4 scored, 16 skipped" in result.stderr


def test_entry_point_has_no_traceback_for_user_errors(model, tmp_path):
    command = [sys.executable, "-m", "gamma_edge.cli"]
    missing = subprocess.run(command + ["run", str(tmp_path / "gone.mp4"), "--model", str(model)],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"Error: source '{tmp_path / 'gone.mp4'}' is neither a camera index ('0', 'camera'), an existing video "
        f"file nor a stream URL (rtsp://, http://, ...); check the path or address"]
    video = write_video(tmp_path / "clip.avi", frames=6)
    ok = subprocess.run(command + ["run", str(video), "--model", str(model), "--jsonl", "-", "-q"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert len([line for line in ok.stdout.splitlines() if '"score"' in line]) == 6


def test_run_unreachable_stream_is_one_line(model):
    result = invoke(run_command, ["rtsp://127.0.0.1:9/nothing", "--model", model, "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "stream 'rtsp://127.0.0.1:9/nothing' could not be opened: it refused the connection" in result.output


def test_bad_model_is_named_before_folders_are_walked_and_empty_folder_is_one_sentence(tmp_path):
    from click.testing import CliRunner

    from runtime.commands.score import score_command

    runner = CliRunner()
    bad_model = runner.invoke(score_command, [str(tmp_path), "--model", str(tmp_path / "nope")])
    assert bad_model.exit_code == 1 and "does not exist" in bad_model.output and "Traceback" not in bad_model.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(score_command, [str(tmp_path / "empty")])
    assert empty.exit_code == 1 and "no image files found" in empty.output

"""`gamma-edge run` against real HTTP/MJPEG streams on 127.0.0.1 (tests/stream_servers.py):
a stream that drops and comes back, one that refuses, stalls, answers 404 or starts slowly.
Each ends the way docs/runtime.md's table says: the same `ended` word in the JSONL summary
and on stderr, a summary in both places, a final line, and the documented exit status."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.commands.run import run_command
from runtime.live.source import NATIVE_LOG_VARIABLES
from runtime.live.summary import ENDINGS
from runtime_fixtures import make_model, write_video
from stream_servers import MjpegServer, NotFound, Serve, refused_url

REPO = Path(__file__).resolve().parents[1]
FAST = ["--backoff", "0.05", "--backoff-max", "0.1"]      # reconnects in tests need no real backoff


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m"))


@pytest.fixture(autouse=True)
def keep_native_log_settings(monkeypatch):
    # The CLI quiets OpenCV / FFmpeg by setting process-wide variables; keep them to each test.
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "-8")


def run(model, source, *args):
    result = CliRunner().invoke(run_command, [str(source), "--model", str(model), "-q", "--crops", "center",
                                              "--jsonl", "-", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return result, records, result.stderr.strip().splitlines()


def assert_ending(result, records, stderr, ended, final_line_start):
    """The documented ending: JSONL summary last, the same summary on stderr, then the final line."""
    summary = records[-1]
    assert summary["event"] == "summary" and summary["ended"] == ended
    assert result.exit_code == summary["exit_status"] == ENDINGS[ended].exit_status
    assert stderr[-2].startswith(f"{summary['source']}: {summary['frames_read']} frames read, "
                                 f"{summary['scored']} scored")
    assert stderr[-2].endswith(f"({ended})")
    assert stderr[-1].startswith(final_line_start), stderr[-1]
    assert summary["frames_read"] == (summary["scored"] + summary["skipped"] + summary["dropped"]
                                      + summary["blank"] + summary["settling"])
    return summary


def events(records, kind):
    return [r for r in records if r.get("event") == kind]


def test_drop_and_come_back_then_lost_after_the_retries(model):
    with MjpegServer([Serve(30), Serve(30)], after=NotFound()) as server:
        result, records, stderr = run(model, server.url, "--retries", "2", *FAST)
    summary = assert_ending(result, records, stderr, "source lost", "Error: stream ")
    assert "2 reopen attempt(s) failed (--retries 2)" in stderr[-1]
    assert server.connections == 1 + 1 + 2        # the first open, the reconnect, two failed attempts
    assert [e["event"] for e in records if "event" in e] == ["gap", "reconnect", "gap", "end", "summary"]
    assert events(records, "reconnect")[0]["attempts"] == 1
    assert events(records, "end")[0]["attempts"] == 2
    assert summary["frames_read"] == 60 and summary["reconnects"] == 1 and summary["settling"] == 10
    assert any("reconnected to" in line for line in stderr)


def test_refused_stream_never_opens_and_still_writes_its_summary(model):
    with refused_url() as url:
        result, records, stderr = run(model, url, *FAST)
    summary = assert_ending(result, records, stderr, "source never opened", "Error: stream ")
    assert "refused the connection or answered with an error after 0." in stderr[-1]
    assert "within" not in stderr[-1]                 # it gave up at once, not after a timeout
    assert summary["frames_read"] == 0 and records == [summary]


def test_404_never_opens_and_the_first_open_is_tried_once(model):
    with MjpegServer([], after=NotFound()) as server:
        result, records, stderr = run(model, server.url, *FAST)
    assert_ending(result, records, stderr, "source never opened", "Error: stream ")
    assert "refused the connection or answered with an error" in stderr[-1]
    assert server.connections == 1


def test_stall_gap_runs_from_the_last_frame_to_the_first_frame_after(model):
    with MjpegServer([Serve(15, then="stall"), Serve(15)], after=NotFound()) as server:
        result, records, stderr = run(model, server.url, "--read-timeout", "1", "--retries", "1", *FAST)
    assert_ending(result, records, stderr, "source lost", "Error: stream ")
    gap, reconnect = events(records, "gap")[0], events(records, "reconnect")[0]
    # a stall is noticed only when the read times out: the time without frames includes it
    assert reconnect["gap_s"] >= 1.0
    assert reconnect["gap_s"] == pytest.approx(reconnect["t"] - gap["last_frame_t"], abs=0.002)
    assert gap["t"] - gap["last_frame_t"] >= 1.0 - 0.002         # t's are rounded to ms
    assert f"after {reconnect['gap_s']} s without frames" in "\n".join(stderr)


def test_slow_start_is_waited_for_within_the_open_timeout(model):
    with MjpegServer([Serve(40, delay=1.0)]) as server:
        result, records, stderr = run(model, server.url, "--open-timeout", "4", "--max-frames", "20", *FAST)
    summary = assert_ending(result, records, stderr, "finished", "finished: 20 frames read (--max-frames)")
    assert summary["frames_read"] == 20 and summary["scored"] >= 1 and not events(records, "gap")


def test_start_slower_than_the_open_timeout_says_it_waited(model):
    with MjpegServer([Serve(5, delay=3.0)]) as server:
        result, records, stderr = run(model, server.url, "--open-timeout", "0.5", *FAST)
    assert_ending(result, records, stderr, "source never opened", "Error: stream ")
    assert "did not answer within 0.5 s (--open-timeout)" in stderr[-1]


def test_file_endings_truncated_and_without_frames(model, tmp_path):
    whole = write_video(tmp_path / "whole.avi", frames=40)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    result, records, stderr = run(model, cut)
    summary = assert_ending(result, records, stderr, "file truncated", "Error: ")
    assert f"ends after {summary['frames_read']} of the 40 frames" in stderr[-1]
    empty = write_video(tmp_path / "empty.avi", frames=0)
    result, records, stderr = run(model, empty)
    assert_ending(result, records, stderr, "no frames", "Error: ")
    assert "holds no frame OpenCV can read" in stderr[-1]
    result, records, stderr = run(model, whole, "--every", "10")
    assert_ending(result, records, stderr, "finished", f"finished: '{whole}' was read to its end")


def test_save_into_a_folder_that_takes_no_files_says_so(model, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=3)
    result = CliRunner().invoke(run_command, [str(video), "--model", str(model), "-q", "--save", "/proc/a.mp4"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == ("Error: --save '/proc/a.mp4': the folder '/proc' is not writable; "
                                     "choose a folder you can write to")


def test_retries_option_and_help():
    help_text = CliRunner().invoke(run_command, ["--help"]).output
    for option in ("--open-timeout", "--read-timeout", "--retries", "--backoff", "--backoff-max", "--verbose"):
        assert option in help_text
    assert "3  source lost" in help_text
    bad = CliRunner().invoke(run_command, ["0", "--retries", "sometimes"])
    assert bad.exit_code == 2 and "neither a count (0 or more) nor 'forever'" in bad.output


def cli_stderr(args):
    """The real entry point in a fresh process: OpenCV reads its FFmpeg log level once per process."""
    process = subprocess.run([sys.executable, "-m", "gamma_edge.cli", "run", *map(str, args)], cwd=REPO,
                             capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if k not in NATIVE_LOG_VARIABLES})
    return process.returncode, process.stderr.strip().splitlines()


def test_native_warnings_are_silenced_unless_verbose(model):
    with refused_url() as url:
        status, quiet = cli_stderr([url, "--model", model, "-q"])
        _, verbose = cli_stderr([url, "--model", model, "-q", "--verbose"])
    assert status == 1 and len(quiet) == 2 and quiet[-1].startswith("Error: stream ")
    assert any("Connection refused" in line for line in verbose)      # FFmpeg's own line, kept with --verbose
    assert verbose[-2:] == quiet

"""`run`: video files in order (also truncated ones), live sources that drop and come back."""
import io
import json
import signal
import threading

import cv2
import numpy as np
import pytest

from runtime import UserError, Scorer
from runtime.live.runner import RunOptions, StreamRunner
from runtime.live.selection import Selector
from runtime.live.source import Source, parse_source
from runtime_fixtures import CaptureSequence, FakeCapture, make_model, textured_image, write_video


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return Scorer(make_model(tmp_path_factory.mktemp("m"), scenes=("natural", "aigc")), crops="center")


def run(scorer, source, factory=None, **options):
    lines = io.StringIO()
    options.setdefault("backoff", (0.01, 0.05))
    runner = StreamRunner(scorer, source, RunOptions(jsonl=lines, **options),
                          **({"open_source": factory} if factory else {}), log=lambda line: None)
    summary = runner.run()
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    return summary, [r for r in records if "event" not in r], [r for r in records if "event" in r]


def frames_of(path):
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_parse_source(tmp_path):
    video = write_video(tmp_path / "a.avi", frames=2)
    assert parse_source("0") == Source("0", "camera", 0)
    assert parse_source("camera") == Source("camera", "camera", 0)
    assert parse_source("rtsp://cam/stream").kind == "network"
    assert parse_source("http://host:8080/video.mjpg").live
    assert parse_source(str(video)) == Source(str(video), "file", str(video))
    with pytest.raises(UserError, match="neither a camera index"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(UserError, match="scheme 'ftp'"):
        parse_source("ftp://host/a.mp4")


def test_file_every_frame_in_order_with_exact_scores(scorer, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=12)
    summary, scored, events = run(scorer, parse_source(str(video)))
    frames = frames_of(video)
    assert [r["frame"] for r in scored] == list(range(12))
    assert [r["t"] for r in scored] == [round(i / 30, 3) for i in range(12)]
    expected = [float(scorer.score_crops(scorer.preprocess(f))[0]) for f in frames]
    assert np.allclose([r["score"] for r in scored], expected, atol=1e-6)
    assert events[0] == {"event": "end", "frames": 12, "reason": "end of file"}
    assert events[-1]["event"] == "summary" and events[-1]["scored"] == 12
    assert summary.frames_read == 12 and summary.scored == 12 and summary.dropped == 0
    assert summary.as_dict()["min_score"] == round(min(expected), 6)


def test_every_fps_smoothing_and_threshold(scorer, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=30)
    _, scored, _ = run(scorer, parse_source(str(video)), every=4)
    assert [r["frame"] for r in scored] == [0, 4, 8, 12, 16, 20, 24, 28]
    _, scored, _ = run(scorer, parse_source(str(video)), fps=5)
    assert [r["frame"] for r in scored] == [0, 6, 12, 18, 24]
    summary, scored, _ = run(scorer, parse_source(str(video)), smooth=3, threshold=0.4862, scene="aigc")
    scores = [r["score"] for r in scored]
    for i, record in enumerate(scored):
        window = scores[max(0, i - 2):i + 1]
        assert abs(record["smoothed"] - np.mean(window)) < 1e-6
        assert record["low"] == (np.mean(window) < 0.4862)
    assert summary.low == sum(r["low"] for r in scored)
    assert 0 < summary.low < len(scored)      # the threshold splits this clip


def test_truncated_file_ends_early_and_says_so(scorer, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=40)
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) // 2])
    summary, scored, events = run(scorer, parse_source(str(cut)))
    end = events[0]
    assert end["event"] == "end" and end["reason"] == "ended early" and end["expected"] == 40
    assert 0 < end["frames"] < 40 and len(scored) == end["frames"] == summary.frames_read
    broken = tmp_path / "cut.mp4"
    broken.write_bytes(write_video(tmp_path / "whole.mp4", frames=20).read_bytes()[:5000])
    with pytest.raises(UserError, match="not a video OpenCV can open"):
        run(scorer, parse_source(str(broken)))


def test_save_writes_every_frame_annotated(scorer, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=10)
    out = tmp_path / "out.mp4"
    run(scorer, parse_source(str(video)), every=5, save=str(out))
    written = frames_of(out)
    assert len(written) == 10 and written[0].shape == (240, 320, 3)
    assert np.abs(written[3][5:20, 5:100].astype(int) - frames_of(video)[3][5:20, 5:100]).mean() > 20   # the overlay
    with pytest.raises(UserError, match="unsupported extension"):
        run(scorer, parse_source(str(video)), save=str(tmp_path / "out.gif"))


def live_frames(count, size, seed):
    return [textured_image(size[1], size[0], seed=seed + i) for i in range(count)]


def test_stream_that_drops_and_comes_back(scorer):
    first = live_frames(20, (320, 240), seed=0)
    second = live_frames(20, (640, 480), seed=100)
    second[10:16] = [np.zeros((480, 640, 3), np.uint8)] * 6           # filler frames of a flaky stream
    stop = threading.Event()
    # paced like a camera (20 ms a frame) so the scorer keeps up and sees the fillers
    factory = CaptureSequence([FakeCapture(first, delay=0.02), None, None,
                               FakeCapture(second, delay=0.02)], when_exhausted=stop.set)
    lines = io.StringIO()
    runner = StreamRunner(scorer, Source("rtsp://cam", "network", "rtsp://cam"),
                          RunOptions(jsonl=lines, backoff=(0.01, 0.05), smooth=4), open_source=factory, stop=stop,
                          log=lambda line: None)
    summary = runner.run()
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    events = [r for r in records if "event" in r]
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["gap", "reconnect"] and kinds[-1] == "summary"
    assert events[1]["attempts"] == 3 and events[1]["size"] == [640, 480]
    assert any(e.get("reason", "").startswith("blank frame") for e in events)
    scored = [r["frame"] for r in records if "score" in r]
    # frames 1..5 and 21..25 are (re)connect frames, 31..36 are fillers: never scored
    assert not set(scored) & (set(range(1, 6)) | set(range(21, 26)) | set(range(31, 37)))
    assert any(f <= 20 for f in scored) and any(f > 25 for f in scored)
    assert scored == sorted(scored)
    after = next(r for r in records if "score" in r and r["frame"] > 25)
    assert after["smoothed"] == after["score"]          # smoothing restarts after the gap
    assert summary.reconnects == 1 and summary.settling == 10 and summary.frames_read == 40
    assert summary.scored + summary.dropped + summary.blank + summary.settling + summary.skipped == 40
    assert summary.blank >= 1
    assert factory.calls == 5


def test_live_source_keeps_only_the_newest_frame(scorer):
    class SlowScorer:
        def __init__(self, inner):
            self.inner, self.scenes, self.scene, self.preprocess = inner, inner.scenes, inner.scene, inner.preprocess
            self.backend = inner.backend

        def score_crops(self, crops):
            threading.Event().wait(0.03)
            return self.inner.score_crops(crops)

    stop = threading.Event()
    factory = CaptureSequence([FakeCapture(live_frames(60, (320, 240), seed=0), delay=0.002)], when_exhausted=stop.set)
    lines = io.StringIO()
    summary = StreamRunner(SlowScorer(scorer), parse_source("0"), RunOptions(jsonl=lines, settle_frames=0),
                           open_source=factory, stop=stop, log=lambda line: None).run()
    assert summary.dropped > 0 and summary.scored < 60
    assert summary.scored + summary.dropped == summary.frames_read == 60


def test_unreachable_stream_is_one_sentence(scorer):
    # refused at once: said so, not "within 5 s" (issue 14, item 4)
    with pytest.raises(UserError, match="could not be opened: it refused the connection or answered with "
                                               "an error after 0.0 s"):
        run(scorer, Source("rtsp://nowhere", "network", "rtsp://nowhere"), factory=CaptureSequence([None]))
    with pytest.raises(UserError, match="camera 3 could not be opened"):
        run(scorer, parse_source("3"), factory=CaptureSequence([FakeCapture([], opened=False)]))


def test_sigterm_ends_the_run_with_a_summary(tmp_path):
    # A real SIGTERM from outside, to the real CLI (in a subprocess: a signal delivered to the
    # pytest process itself is unsafe once other tests have loaded torch and friends).
    import subprocess
    import sys
    from pathlib import Path

    model = make_model(tmp_path / "m")
    video = write_video(tmp_path / "long.avi", frames=900, size=(160, 120))
    process = subprocess.Popen(
        [sys.executable, "-m", "gamma_edge.cli", "run", str(video), "--model", str(model), "--jsonl", "-",
         "--crops", "grid", "-q"],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    assert '"score"' in first, process.stderr.read()
    process.send_signal(signal.SIGTERM)
    rest, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in stderr
    summary = json.loads(rest.splitlines()[-1])
    assert summary["event"] == "summary" and summary["ended"] == "stopped"
    assert 1 <= summary["scored"] and summary["frames_read"] < 900
    assert "frames read" in stderr and "scored/s" in stderr


def test_stop_signals_set_stop_and_restore_handlers():
    from runtime.live.summary import StopSignals

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    with StopSignals(stop):
        handler = signal.getsignal(signal.SIGTERM)
        assert handler not in previous
        handler(signal.SIGTERM, None)                    # what the interpreter does on SIGTERM
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):           # a second Ctrl-C aborts at once
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous


def test_selector():
    select = Selector(every=2, fps=10)
    assert [i for i in range(12) if select(i, i / 30)] == [0, 3, 6, 9]


def test_bad_run_options(scorer, tmp_path):
    video = parse_source(str(write_video(tmp_path / "a.avi", frames=2)))
    with pytest.raises(UserError, match="--every must be at least 1"):
        run(scorer, video, every=0)
    with pytest.raises(UserError, match="scene 'face'"):
        run(scorer, video, scene="face")
    with pytest.raises(UserError, match="--show needs"):
        run(scorer, video, show=True)


class StallingCapture(FakeCapture):
    """Its frames, then a read that waits `stall` seconds before failing: a read timeout."""

    def __init__(self, frames, stall: float, **kwargs):
        super().__init__(frames, **kwargs)
        self.stall = stall

    def read(self):
        if self.served >= len(self.frames):
            threading.Event().wait(self.stall)
        return super().read()


def test_reconnect_gap_runs_from_the_last_frame_to_the_first_frame_after(scorer):
    stop = threading.Event()
    factory = CaptureSequence([StallingCapture(live_frames(8, (320, 240), seed=0), stall=0.4), None,
                               FakeCapture(live_frames(8, (320, 240), seed=50))], when_exhausted=stop.set)
    lines = io.StringIO()
    StreamRunner(scorer, Source("rtsp://cam", "network", "rtsp://cam"),
                 RunOptions(jsonl=lines, backoff=(0.01, 0.05), settle_frames=0), open_source=factory, stop=stop,
                 log=lambda line: None).run()
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    gap = next(r for r in records if r.get("event") == "gap")
    reconnect = next(r for r in records if r.get("event") == "reconnect")
    # the failed read waited 0.4 s: time without frames, though the loss was noticed only at its end
    assert reconnect["gap_s"] >= 0.4 and gap["t"] - gap["last_frame_t"] >= 0.4 - 0.002    # t's are rounded to ms
    assert reconnect["gap_s"] == pytest.approx(reconnect["t"] - gap["last_frame_t"], abs=0.002)
    assert reconnect["attempts"] == 2


class SignallingScorer:
    """Delivers signals while the frame `at` is being scored, as the interpreter does when
    Ctrl-C or SIGTERM lands mid-frame: it calls the handler installed for each."""

    def __init__(self, inner, at: int, signals):
        self.inner, self.at, self.signals, self.calls = inner, at, signals, 0
        self.scenes, self.scene, self.preprocess, self.backend = inner.scenes, inner.scene, inner.preprocess, inner.backend

    def score_crops(self, crops):
        if self.calls == self.at:
            for sig in self.signals:
                signal.getsignal(sig)(sig, None)
        self.calls += 1
        return self.inner.score_crops(crops)


def test_ctrl_c_and_sigterm_end_the_run_alike(scorer, tmp_path):
    video = parse_source(str(write_video(tmp_path / "clip.avi", frames=30)))
    endings = {}
    for signals in ([signal.SIGTERM], [signal.SIGINT], [signal.SIGTERM] * 2, [signal.SIGINT] * 2):
        lines = io.StringIO()
        runner = StreamRunner(SignallingScorer(scorer, at=5, signals=signals), video, RunOptions(jsonl=lines),
                              log=lambda line: None)
        with runner.signals():
            summary = runner.run()
        scored_lines = [line for line in lines.getvalue().splitlines() if '"score"' in line]
        endings[tuple(s.name for s in signals)] = (summary.ended, summary.frames_read, summary.scored,
                                                   len(scored_lines))
    # the frame in hand is finished and counted; nothing read ahead is scored or counted after the stop
    assert set(endings.values()) == {("stopped", 6, 6, 6)}, endings


def test_save_names_a_codec_this_opencv_lacks(scorer, tmp_path, monkeypatch):
    import contract.video

    monkeypatch.setitem(contract.video.VIDEO_CODECS, ".mp4", "ZZZZ")
    video = parse_source(str(write_video(tmp_path / "clip.avi", frames=2)))
    with pytest.raises(UserError, match=r"cannot write \.mp4 video with the ZZZZ codec; use \.mp4"):
        run(scorer, video, save=str(tmp_path / "out.mp4"))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.avi"]       # the trial file is gone
    with pytest.raises(UserError, match="the folder '/proc' is not writable"):
        run(scorer, video, save="/proc/a.avi")

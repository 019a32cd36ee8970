"""The camera watch: each camera's own normal, the reasons it names, what it keeps across restarts,
and the JSON lines that never truncate. Real MJPEG cameras on 127.0.0.1 (tests/stream_servers.py)
and the embedded demo model, with no threshold anywhere."""
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtime
from contract.manifest import manifest_id
from contract.stats import RunningQuantiles, RunningStats
from runtime import Scorer
from runtime.demo import heldout
from runtime.fleet.config import Camera
from runtime.fleet.runner import FleetOptions, FleetRunner
from runtime.outputs.jsonl import JsonLines, RotatingFile
from runtime.watch.baseline import COLOUR_ABOVE, MONO_BELOW, SIGNAL_RULES, CameraBaseline
from runtime.watch.camera import CameraWatch, WatchRules
from runtime.watch.normal import CLIP, CLIP_SHARE, Normal
from runtime.watch.signals import blockiness, colourfulness, measure, sharpness
from runtime.watch.state_file import StateFile, request_reset
from stream_servers import MjpegServer, Serve, live_scene, scripted

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(runtime.__file__).resolve().parent / "samples"
INTERVAL = 0.05


def photo(name: str) -> np.ndarray:
    return cv2.resize(cv2.imread(str(PHOTOS / f"{name}_pristine.png")), (320, 240), interpolation=cv2.INTER_AREA)


def blurred(image: np.ndarray, level: int) -> np.ndarray:
    """The held-out gaussian blur (independent of training) at `level`, under the same sensor noise."""
    rgb = heldout.degrade(np.ascontiguousarray(image[..., ::-1]), "gaussian_blur", level, np.random.default_rng(7))
    return np.ascontiguousarray(rgb[..., ::-1])


# -- the parts ----------------------------------------------------------------------------------------
def test_a_normal_is_robust_to_an_outlier_and_follows_slow_change_only():
    normal = Normal(warmup_s=10.0, follow_s=100.0)
    rng = np.random.default_rng(0)
    for t in range(11):
        normal.add(float(t), 0.5 + 0.01 * rng.standard_normal() + (5.0 if t == 3 else 0.0))   # one wild sample
    assert normal.ready and abs(normal.level - 0.5) < 0.01 and normal.spread < 0.03
    for t in range(11, 1000):                          # a slow drift down to 0.4 over 1000 s
        normal.add(float(t), 0.5 - 0.1 * (t - 11) / 989)
    assert abs(normal.level - 0.4) < 0.02
    level, spread = normal.level, normal.spread
    normal.add(1000.0, 0.0)                            # one sample far away moves it by a clipped step only
    assert 0 < level - normal.level <= max(CLIP * spread, CLIP_SHARE * level) * (1 - np.exp(-1 / 100.0)) + 1e-9
    normal.restart()
    assert not normal.ready


def test_a_drop_below_the_normal_is_evidence_and_the_reason_names_sharpness():
    scene = photo("motorcycle")
    noise = [np.random.default_rng(i).normal(0, 2, scene.shape) for i in range(8)]
    baseline = CameraBaseline(warmup_s=5.0, mode="model+signals", smooth=3)
    for t in range(20):
        frame = np.clip(scene + noise[t % 8], 0, 255).astype(np.uint8)
        baseline.observe(measure(frame))
        baseline.learn(float(t), 0.6 + 0.005 * np.sin(t))
    assert baseline.ready and baseline.judge(0.6).evidence is False
    for t in range(3):
        baseline.observe(measure(blurred(scene, 2)))
    verdict = baseline.judge(0.6)
    assert verdict.evidence is True                    # the score held, the sharpness fell: the signals say so
    assert verdict.reason.startswith("sharpness") and "% of normal" in verdict.reason
    assert verdict.changes["sharpness"]["value"] < 0.5 * verdict.changes["sharpness"]["normal"]
    assert CameraBaseline(warmup_s=5.0, mode="model", smooth=3).judge(0.1).evidence is None   # no normal yet


def test_the_signals_tell_light_from_defects():
    scene = photo("motorcycle")
    rng = np.random.default_rng(3)
    # an infrared night: a gray picture under strong sensor noise of its own in each channel
    gray = np.repeat(cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2).astype(np.float32)
    night = np.clip(gray + rng.normal(0, 8, gray.shape), 0, 255).astype(np.uint8)
    assert colourfulness(night) < MONO_BELOW < COLOUR_ABOVE < colourfulness(scene)
    # sharpness is detail against the picture's own contrast: a darker exposure keeps it, a blur lowers it
    darker = (scene.astype(np.float32) * 0.4).astype(np.uint8)
    as_gray = lambda image: cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)     # noqa: E731
    assert abs(sharpness(as_gray(darker)) / sharpness(as_gray(scene)) - 1) < 0.15
    assert sharpness(as_gray(blurred(scene, 2))) < 0.6 * sharpness(as_gray(scene))
    # compression blocks: a starved encoder raises blockiness; one strong line on the 8-pixel grid does not
    lined = scene.copy()
    lined[:, 160] = 255
    ok, data = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, 8])
    assert blockiness(lined) < 1.15 < blockiness(cv2.imdecode(data, cv2.IMREAD_COLOR))


def test_a_signal_that_never_fired_does_not_hold_a_camera_degraded():
    scene = photo("motorcycle")
    noise = [np.random.default_rng(i).normal(0, 2, scene.shape) for i in range(8)]
    baseline = CameraBaseline(warmup_s=5.0, mode="signals", smooth=3)
    for t in range(20):
        baseline.observe(measure(np.clip(scene + noise[t % 8], 0, 255).astype(np.uint8)))
        baseline.learn(float(t), 0.6)
    for t in range(3):
        baseline.observe(measure(blurred(scene, 3)))
    assert baseline.judge(0.6).evidence is True
    # the blur gone, while dusk has made the picture darker: brightness between its limit and halfway back
    limit = next(rule.limit for rule in SIGNAL_RULES if rule.name == "brightness" and rule.direction < 0)
    dusk = np.clip((scene.astype(np.float32) + noise[0]) * (limit + 0.05), 0, 255).astype(np.uint8)
    for t in range(3):
        baseline.observe(measure(dusk))
    verdict = baseline.judge(0.6)
    assert limit < verdict.changes["brightness"]["value"] / verdict.changes["brightness"]["normal"] < limit ** 0.5
    assert verdict.evidence is False


def test_a_camera_degraded_at_dusk_learns_the_infrared_night_and_recovers():
    scene = photo("motorcycle")
    rng = np.random.default_rng(5)
    noisy = lambda image, sigma=2.0: np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)  # noqa: E731
    watch = CameraWatch(WatchRules(baseline_warmup=3.0, hold_s=1.0, smooth=3), 0.0, name="gate")
    raised, t = [], 0.0
    def feed(image, seconds, sigma=2.0):
        nonlocal t
        for _ in range(int(seconds / 0.5)):                  # live frames: each its own sensor noise
            raised.extend(watch.on_picture(t, image=noisy(image, sigma)) + watch.on_score(t, 0.5))
            t += 0.5
    feed(scene, 6.0)                                         # the day's normal
    feed(blurred(scene, 3), 4.0)                             # blurred: degraded
    assert [e["event"] for e in raised] == ["degraded"] and raised[0]["reason"].startswith("sharpness")
    gray = np.repeat(cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2).astype(np.float32)
    feed(gray * 0.8, 10.0, sigma=6.0)                        # night falls (infrared), the blur is gone
    assert watch.baseline.light == "mono" and [e["event"] for e in raised] == ["degraded", "recovered"]
    assert watch.state == "ok"


def test_running_statistics_agree_with_numpy():
    values = np.random.default_rng(1).lognormal(3.0, 0.6, 20000)
    stats, quantiles = RunningStats(), RunningQuantiles()
    for value in values:
        stats.add(value)
        quantiles.add(value)
    assert round(stats.mean, 6) == round(float(values.mean()), 6) and stats.minimum == values.min()
    for q in (50, 95):
        assert abs(quantiles.quantile(q) / np.percentile(values, q) - 1) < 0.006
    assert len(quantiles.bins) < 1000                  # bounded, whatever the count


def test_jsonl_is_appended_never_truncated_and_rotation_keeps_every_event(tmp_path):
    path = tmp_path / "watch.jsonl"
    path.write_text('{"event": "summary", "from": "the run before"}\n')
    stream = RotatingFile(path, max_bytes=2000, backups=2)
    lines = JsonLines(stream)
    for i in range(400):
        lines.write({"camera": "gate", "frame": i, "score": 0.5})
        if i % 50 == 0:
            lines.publish_event({"event": "degraded", "camera": "gate", "i": i})
    stream.close()
    kept = [path, path.with_name("watch.jsonl.1"), path.with_name("watch.jsonl.2")]
    assert not path.with_name("watch.jsonl.3").exists() and all(p.stat().st_size < 2200 for p in kept)
    records = [json.loads(line) for p in [*kept, tmp_path / "watch.events.jsonl"] for line in p.read_text().splitlines()]
    assert sorted(r["i"] for r in records if r.get("event") == "degraded") == list(range(0, 400, 50))
    assert {"event": "summary", "from": "the run before"} in records


def test_state_file_of_another_model_or_corrupt_or_unwritable_is_one_sentence_and_learns_afresh(tmp_path):
    said = []
    state = StateFile(tmp_path / "b.json", "model-a", said.append)
    state.save({"gate": {"conditions": ["covered"], "scored": True, "baseline": {}}})
    assert StateFile(tmp_path / "b.json", "model-a", said.append).load()["gate"]["conditions"] == ["covered"]
    assert StateFile(tmp_path / "b.json", "model-b", said.append).load() == {}
    assert "another model" in said[-1] and (tmp_path / "b.json.model-model-a").is_file()
    (tmp_path / "c.json").write_text('{"format": "gamma-edge.watch-state", "format_version": 1, "cam')
    assert StateFile(tmp_path / "c.json", "model-a", said.append).load() == {}
    assert "cannot be read" in said[-1] and (tmp_path / "c.json.corrupt").is_file()
    locked = StateFile(tmp_path / "no-such-folder" / "d.json", "model-a", said.append)
    for _ in range(3):
        locked.save({})
    assert sum("cannot be written" in line for line in said) == 1
    assert all("\n" not in line and "Traceback" not in line for line in said)



def test_coarse_sharpness_sees_a_blur_that_noise_hides_in_a_smooth_dark_scene():
    """A dark, foggy scene: a smooth gradient and one uneven tree line, under sensor noise. At 384
    pixels the noise is most of the fine detail, so the held-out blur at level 3 barely moves
    sharpness; on the coarse copy the noise has averaged away and the tree line's loss shows."""
    rng = np.random.default_rng(5)
    height, width = 360, 640
    scene = np.tile(np.linspace(20, 60, height, dtype=np.float32)[:, None], (1, width))
    for x, top in enumerate(np.repeat(rng.integers(150, 178, width // 8), 8)):
        scene[top:182, x] -= 18                           # the trees' silhouette
    scene = np.repeat(scene.astype(np.uint8)[..., None], 3, axis=2)
    soft_scene = heldout.degrade(scene, "gaussian_blur", 3, np.random.default_rng(7))

    def shot(picture):                                    # the sensor adds its noise after the optics
        return np.clip(picture + rng.normal(0, 4, picture.shape[:2])[..., None], 0, 255).astype(np.uint8)
    sharp = [measure(shot(scene)) for _ in range(4)]
    soft = [measure(shot(soft_scene)) for _ in range(4)]
    ratio = lambda name: np.mean([f[name] for f in soft]) / np.mean([f[name] for f in sharp])   # noqa: E731
    limit = {rule.name: rule.limit for rule in SIGNAL_RULES if rule.direction < 0}
    assert ratio("sharpness") > 0.9 > limit["sharpness"]            # invisible to the fine measure
    assert ratio("coarse_sharpness") < limit["coarse_sharpness"]    # caught by the coarse one


def test_a_baseline_file_older_than_a_signal_learns_that_signal_from_now_on():
    baseline = CameraBaseline(warmup_s=1.0, mode="signals", smooth=1)
    frame = measure(photo("motorcycle"))
    for step in range(10):
        baseline.observe(frame)
        baseline.learn(float(step), 0.5)
    saved = json.loads(json.dumps(baseline.as_dict()))
    for normals in saved["normals"].values():
        del normals["coarse_sharpness"]                    # a file written before coarse sharpness existed
    again = CameraBaseline(warmup_s=1.0, mode="signals", smooth=1)
    again.restore(saved)
    again.observe(frame)
    verdict = again.judge(0.5)
    assert verdict.evidence is False and "coarse_sharpness" not in verdict.changes   # judged, not yet known
    for step in range(10, 20):
        again.observe(frame)
        again.learn(float(step), 0.5)
    learned = again.judge(0.5)
    assert "coarse_sharpness" in learned.changes and learned.evidence is False


def test_watch_keeps_its_conditions_across_a_restart():
    rules = WatchRules(hold_s=0.0, baseline_warmup=1.0, smooth=1)
    first = CameraWatch(rules, 0.0, name="gate")
    cover = np.full((240, 320, 3), 60, np.uint8)
    first.on_picture(0.0, cover)
    first.on_picture(0.1, cover)
    assert first.state == "covered"
    again = CameraWatch(rules, 0.0, name="gate")
    again.restore(json.loads(json.dumps(first.as_dict())))
    assert again.state == "covered"                        # not published as ok, and not raised again
    assert again.on_picture(0.2, cover) == [] and again.state == "covered"


# -- real cameras, no threshold ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    return Scorer(crops="center", threads=2)


def cameras_and_servers(blur_from: int | None, frames: int = 600):
    """Three cameras of different scenes; `blurry` (when blur_from is given) blurs at level 2 from that
    frame for 100 frames, then clears."""
    servers = {}
    for name, picture_name, seed in (("street", "motorcycle", 1), ("office", "grace_hopper", 2),
                                     ("blurry", "rocket", 3)):
        scene = live_scene(photo(picture_name), seed=seed)
        if name == "blurry" and blur_from is not None:
            soft = live_scene(blurred(photo(picture_name), 2), seed=seed)
            scene = scripted(scene, [(blur_from, blur_from + 100, soft)])
        servers[name] = MjpegServer([Serve(frames, interval=INTERVAL, picture=scene)] * 3)
    return servers


def run_fleet(demo, servers, seconds: float, baseline_file: Path, stop_when=None):
    lines = io.StringIO()
    cameras = [Camera(name, server.url, hold_s=1.0, smooth=3, baseline_warmup=4.0, evidence="model+signals")
               for name, server in servers.items()]
    runner = FleetRunner(demo, cameras, FleetOptions(jsonl=lines, duration_s=seconds, baseline_file=str(baseline_file),
                                                     save_every_s=1.0, open_timeout=3.0, read_timeout=1.0),
                         log=lambda line: None)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds + 15
    while thread.is_alive() and time.monotonic() < deadline:
        if stop_when and stop_when(records(lines)):
            runner.stop.set()
        time.sleep(0.2)
    thread.join(20)
    return records(lines)


def records(lines: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in lines.getvalue().splitlines()]


def quality(records_, camera: str) -> list[dict]:
    return [r for r in records_ if r.get("camera") == camera and r.get("event") in ("degraded", "recovered",
                                                                                   "covered", "frozen")]


def test_a_camera_blurred_after_warm_up_raises_degraded_naming_sharpness_then_recovered(demo, tmp_path):
    servers = cameras_and_servers(blur_from=160)            # 8 s in: after the 4 s warm-up
    for server in servers.values():
        server.__enter__()
    try:
        seen = run_fleet(demo, servers, 25.0, tmp_path / "b.json",
                         stop_when=lambda r: [e["event"] for e in quality(r, "blurry")] == ["degraded", "recovered"])
    finally:
        for server in servers.values():
            server.stop()
    assert quality(seen, "street") == [] and quality(seen, "office") == []
    events = quality(seen, "blurry")
    assert [e["event"] for e in events] == ["degraded", "recovered"], events
    assert events[0]["reason"].startswith("sharpness"), events[0]["reason"]
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["model"] == manifest_id(demo.manifest.raw) and set(saved["cameras"]) == {"street", "office", "blurry"}


KILLABLE = textwrap.dedent("""
    import io, sys, time
    sys.path.insert(0, sys.argv[1] + "/tests")
    from runtime import Scorer
    from runtime.fleet.config import Camera
    from runtime.fleet.runner import FleetOptions, FleetRunner
    cameras = [Camera(name, url, hold_s=1.0, smooth=3, baseline_warmup=4.0, evidence="model+signals")
               for name, url in zip(("street", "office", "blurry"), sys.argv[3:])]
    out = open(sys.argv[2] + ".jsonl", "a")
    FleetRunner(Scorer(crops="center", threads=1), cameras, FleetOptions(jsonl=out, baseline_file=sys.argv[2],
                save_every_s=0.5, open_timeout=3.0, read_timeout=1.0), log=lambda line: None).run()
""")


def test_after_kill_9_a_restart_keeps_the_normals_and_raises_nothing_new_and_a_reset_relearns(demo, tmp_path):
    servers = cameras_and_servers(blur_from=None, frames=10 ** 6)
    for server in servers.values():
        server.__enter__()
    state = tmp_path / "b.json"
    try:
        child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(REPO), str(state),
                                  *[s.url for s in servers.values()]], cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not learned(state, 3):
            time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert learned(state, 3), "the normals were never saved"
        before = json.loads(state.read_text())["cameras"]
        seen = run_fleet(demo, servers, 6.0, state)          # shorter than a warm-up: it must not need one
        after = json.loads(state.read_text())["cameras"]
        assert [r for r in seen if r.get("event") in ("degraded", "recovered", "covered", "frozen")] == []
        for name in before:                                  # the normal went on from where it was
            level = before[name]["baseline"]["normals"]["colour"]["score"]["level"]
            assert abs(after[name]["baseline"]["normals"]["colour"]["score"]["level"] - level) < 0.05
        assert request_reset(state, ["office"]) == ["office"]
        run_fleet(demo, servers, 2.0, state)
        reset = json.loads(state.read_text())["cameras"]
        assert not reset["office"]["baseline"]["normals"]["colour"]["score"]["level"] and learned(state, 2)
    finally:
        for server in servers.values():
            server.stop()


def learned(state: Path, count: int) -> bool:
    try:
        cameras = json.loads(state.read_text())["cameras"]
    except (OSError, ValueError, KeyError):
        return False
    return sum(bool(c.get("baseline", {}).get("normals", {}).get("colour", {}).get("score", {}).get("level"))
               for c in cameras.values()) >= count


def test_baseline_command_shows_and_resets_and_says_one_sentence_for_a_wrong_file(tmp_path):
    from click.testing import CliRunner

    from runtime.commands.baseline import baseline_command

    watch = CameraWatch(WatchRules(baseline_warmup=1.0, smooth=1), 0.0, name="gate")
    scene = live_scene(cv2.resize(cv2.imread(str(PHOTOS / "coins_pristine.png")), (320, 240)))
    for t in range(12):
        watch.on_picture(float(t), scene(t))
        watch.on_score(float(t), 0.5)
    StateFile(tmp_path / "b.json", "m", print).save({"gate": watch.as_dict()})
    shown = CliRunner().invoke(baseline_command, ["show", str(tmp_path / "b.json")])
    assert shown.exit_code == 0 and shown.output.startswith("gate: ok; normal score: ") and " 0.500 +- " in shown.output
    reset = CliRunner().invoke(baseline_command, ["reset", str(tmp_path / "b.json"), "gate"])
    assert reset.exit_code == 0 and "reset asked for" in CliRunner().invoke(
        baseline_command, ["show", str(tmp_path / "b.json")]).output
    wrong = CliRunner().invoke(baseline_command, ["reset", str(tmp_path / "b.json"), "dock"])
    assert wrong.exit_code == 1 and wrong.output.strip().startswith("Error: ") and "dock" in wrong.output
    missing = CliRunner().invoke(baseline_command, ["show", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "not a readable gamma-edge baseline file" in missing.output

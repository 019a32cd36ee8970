"""benchmarks/bench_watch.py end to end on two small cameras: it runs, prints its tables, keeps its
frames for a second judgement, and refuses settings it cannot honour in one sentence."""
import shutil
import subprocess
import sys
from pathlib import Path

import runtime

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(runtime.__file__).resolve().parent / "samples"
SHORT = ["--hours", "1.6", "--kinds", "jpeg", "--duration", "120", "--interval", "30", "--warmup", "300"]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_watch.py"), *args],
                          capture_output=True, text=True, timeout=600)


def test_bench_watch_runs_keeps_its_frames_and_judges_held_out_cameras(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coins", "grace_hopper"):
        shutil.copy(SAMPLES / f"{name}_pristine.png", photos / f"{name}.png")
    frames = tmp_path / "frames.npz"
    first = bench("--photos", str(photos), "--held-out", "coins", "--frames", str(frames), *SHORT)
    assert first.returncode == 0, first.stderr
    for title in ("### tuning cameras: grace_hopper", "### held-out cameras: coins", "### all cameras"):
        assert title in first.stdout
    assert "| **levels 3-5** |" in first.stdout and "| jpeg/5 |" in first.stdout and frames.exists()
    # every camera held out: the threshold must come from elsewhere, said before any work
    refused = bench("--photos", str(photos), "--held-out", "coins,grace_hopper", "--frames", str(frames), *SHORT)
    assert refused.returncode != 0 and "give --best-threshold" in refused.stderr and "Traceback" not in refused.stderr
    again = bench("--photos", str(photos), "--held-out", "coins,grace_hopper", "--best-threshold", "0.28",
                  "--frames", str(frames), *SHORT)
    assert again.returncode == 0, again.stderr
    assert "### held-out cameras: coins, grace_hopper (best single threshold given by --best-threshold)" in again.stdout
    assert "### all cameras" not in again.stdout and "threshold=0.28" in again.stdout
    # the kept frames belong to these settings: others are refused, not silently mixed
    other = bench("--photos", str(photos), "--frames", str(frames), "--seed", "1", *SHORT)
    assert other.returncode != 0 and "recorded with other settings" in other.stderr


def test_bench_sharpness_scales_prints_both_measures_for_each_camera_and_time(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLES / "coins_pristine.png", photos / "coins.png")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_sharpness_scales.py"), "--photos",
                           str(photos), "--mono", "coins", "--frames", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| coins |")]
    assert [row.split(" | ")[1] for row in rows] == ["noon", "1 am"]
    level5 = float(rows[0].split(" | ")[4].split("/")[0].strip(" %"))      # gaussian blur 5, fine scale, noon
    assert level5 < 65                                   # a textured photo loses its fine detail to a blur
    empty = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_sharpness_scales.py"), "--photos",
                            str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert empty.returncode != 0 and "no photo" in empty.stderr and "Traceback" not in empty.stderr

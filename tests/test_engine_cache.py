"""The engines' start-up cache (runtime/inference/engine_cache.py): a hit gives the same scores,
two processes at once leave one sound entry, and a stale or damaged entry is rebuilt, never used."""
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from contract.manifest import load_manifest
from runtime.inference.backends import COMPILED_BLOB, OPTIMIZED_ONNX, load_backend
from runtime.inference.engine_cache import ENTRY_FILE, EngineCache, cache_root
from runtime_fixtures import make_model, reference_scores, textured_image

ENGINE_FILE = {"onnx": ("onnxruntime", OPTIMIZED_ONNX), "openvino": ("openvino", COMPILED_BLOB)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-models")
    return {kind: make_model(root / kind, scenes=("natural", "aigc"), kind=kind) for kind in ("onnx", "openvino")}


@pytest.fixture(scope="module")
def crops():
    image = textured_image(224, 224 * 3, seed=5)
    return np.stack([image[:, x:x + 224] for x in (0, 150, 300, 448)])


def _entries(root: Path, engine: str) -> list[Path]:
    return sorted((root / engine).iterdir()) if (root / engine).is_dir() else []


# ---------------------------------------------------------------- the real engines

@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_a_warm_start_gives_the_same_scores_as_a_cold_one(models, crops, tmp_path, kind):
    engine, name = ENGINE_FILE[kind]
    manifest = load_manifest(models[kind])
    cold = load_backend(manifest, cache=tmp_path)
    assert cold.cache.status == "built"
    [entry] = _entries(tmp_path, engine)                 # one entry, no private folder left behind
    assert (entry / name).is_file() and (entry / ENTRY_FILE).is_file()
    warm = load_backend(manifest, cache=tmp_path)
    assert warm.cache.status == "hit"
    np.testing.assert_array_equal(warm.run(crops), cold.run(crops))
    np.testing.assert_allclose(warm.run(crops), reference_scores(crops, ("natural", "aigc")), atol=1e-5)


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_a_damaged_entry_is_rebuilt_not_used(models, crops, tmp_path, kind):
    engine, name = ENGINE_FILE[kind]
    manifest = load_manifest(models[kind])
    expected = load_backend(manifest, cache=tmp_path).run(crops)
    [entry] = _entries(tmp_path, engine)
    data = bytearray((entry / name).read_bytes())
    data[len(data) // 2] ^= 0xFF                          # one flipped byte in the middle of the file
    (entry / name).write_bytes(bytes(data))
    again = load_backend(manifest, cache=tmp_path)
    assert again.cache.status == "rebuilt"
    np.testing.assert_array_equal(again.run(crops), expected)
    (entry / name).write_bytes(b"")                       # a truncated file: rebuilt as well
    assert load_backend(manifest, cache=tmp_path).cache.status == "rebuilt"
    assert load_backend(manifest, cache=tmp_path).cache.status == "hit"


def test_a_replaced_model_gets_a_new_entry(models, crops, tmp_path):
    folder = tmp_path / "model"
    make_model(folder, scenes=("natural",))
    first = load_backend(load_manifest(folder), cache=tmp_path / "cache")
    assert first.cache.status == "built"
    make_model(folder, scenes=("aigc",))                  # same paths, another graph
    second = load_backend(load_manifest(folder), cache=tmp_path / "cache")
    assert second.cache.status == "built"
    np.testing.assert_allclose(second.run(crops), reference_scores(crops, ("aigc",)), atol=1e-5)


def test_the_cache_folder_comes_from_the_environment_and_can_be_off(monkeypatch, tmp_path):
    monkeypatch.setenv("GAMMA_EDGE_CACHE_DIR", str(tmp_path / "here"))
    assert cache_root() == tmp_path / "here"
    monkeypatch.setenv("GAMMA_EDGE_CACHE_DIR", "off")
    assert cache_root() is None
    monkeypatch.delenv("GAMMA_EDGE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "gamma-edge" / "engines"


# ---------------------------------------------------------------- the rules, on a stand-in engine

def _build_writing(value, log=None):
    def build(folder):
        if log is not None:
            log.append("build")
        if folder is not None:
            (folder / "engine.bin").write_bytes(value)
        return value
    return build


def _use(folder):
    return (folder / "engine.bin").read_bytes()


def test_stale_and_half_written_entries_are_rebuilt(tmp_path):
    cache = EngineCache("stand-in", tmp_path)
    parts = {"model": "a"}
    assert cache.load(parts, _build_writing(b"one"), _use).status == "built"
    entry = tmp_path / "stand-in" / cache.key(parts)
    record = json.loads((entry / ENTRY_FILE).read_text())
    record["key"] = "another"                             # an entry that does not say it is this key
    (entry / ENTRY_FILE).write_text(json.dumps(record))
    log = []
    assert cache.load(parts, _build_writing(b"one", log), _use).status == "rebuilt" and log == ["build"]
    (entry / ENTRY_FILE).unlink()                         # a folder without its seal
    assert cache.load(parts, _build_writing(b"one"), _use).status == "rebuilt"
    (entry / "extra.bin").write_bytes(b"?")               # a file nobody sealed
    assert cache.load(parts, _build_writing(b"one"), _use).status == "rebuilt"
    assert cache.load({"model": "b"}, _build_writing(b"two"), _use).value == b"two"   # other key, other entry
    assert len(_entries(tmp_path, "stand-in")) == 2


def test_an_entry_the_engine_refuses_is_rebuilt(tmp_path):
    cache = EngineCache("stand-in", tmp_path)
    cache.load({"m": 1}, _build_writing(b"x"), _use)

    def refuse(folder):
        raise RuntimeError("the engine cannot read this")

    loaded = cache.load({"m": 1}, _build_writing(b"x"), refuse)
    assert (loaded.status, loaded.value) == ("rebuilt", b"x")


def test_an_unwritable_cache_folder_means_no_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    loaded = EngineCache("stand-in", blocker / "below").load({"m": 1}, _build_writing(b"x"), _use)
    assert (loaded.status, loaded.value) == ("off", b"x")


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def fail(folder):
        (folder / "engine.bin").write_bytes(b"half")
        raise ValueError("compile failed")

    with pytest.raises(ValueError):
        EngineCache("stand-in", tmp_path).load({"m": 1}, fail, _use)
    assert _entries(tmp_path, "stand-in") == []


def _race(root, barrier, results):
    """One of two processes starting at the same moment with an empty cache."""
    import time

    def slow_build(folder):
        barrier.wait()                                    # both are building at the same time
        time.sleep(0.2)
        (folder / "engine.bin").write_bytes(b"model" * 1000)
        return b"model" * 1000

    loaded = EngineCache("stand-in", Path(root)).load({"m": 1}, slow_build, _use)
    results.put((os.getpid(), loaded.status, loaded.value == b"model" * 1000))


def test_two_processes_at_once_leave_one_sound_entry(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = [results.get(timeout=5) for _ in workers]
    assert all(worker.exitcode == 0 for worker in workers)
    assert [status for _, status, ok in outcomes if ok] == ["built", "built"]
    [entry] = _entries(tmp_path, "stand-in")              # one entry, neither private folder left
    assert not entry.name.startswith(".")
    loaded = EngineCache("stand-in", tmp_path).load({"m": 1}, _build_writing(b"never"), _use)
    assert (loaded.status, loaded.value) == ("hit", b"model" * 1000)

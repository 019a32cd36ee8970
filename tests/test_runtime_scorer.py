"""Scorer and backends: runtime scores equal the graph's own scores on the same crops."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from runtime import UserError, Scorer
from runtime.inference.backends import cuda_driver_present
from contract.preprocess import Preprocess, crop_offsets
from runtime_fixtures import make_model, reference_scores, textured_image

SCENES = ("natural", "aigc", "aesthetics")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "onnx": make_model(root / "onnx", scenes=SCENES),
        "openvino": make_model(root / "openvino", scenes=SCENES, kind="openvino"),
        "fixed": make_model(root / "fixed", scenes=SCENES, batch=4),
        "one": make_model(root / "one", scenes=("aigc",), default_crops="center"),
    }


@pytest.fixture(scope="module")
def photo():
    return textured_image(360, 500, seed=11)


def expected_scores(image, protocol, seed=0, scenes=SCENES):
    """An independent path: resize and cut by hand, score with the numpy twin of the graph."""
    height, width = image.shape[:2]
    if max(height, width) > 512:
        scale = 512 / max(height, width)
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    crops = np.stack([image[y:y + 224, x:x + 224]
                      for y, x in crop_offsets(image.shape[0], image.shape[1], 224, protocol, seed)])
    return reference_scores(crops, scenes).mean(axis=0), crops


@pytest.mark.parametrize("protocol", ["center", "five", "grid", "random10"])
@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_scores_match_the_graph_for_every_protocol(models, photo, kind, protocol):
    scorer = Scorer(models[kind], crops=protocol, seed=3)
    expected, crops = expected_scores(photo, protocol, seed=3)
    got = scorer.scores_all_scenes(photo)
    assert list(got) == list(SCENES)
    assert np.abs(np.array(list(got.values())) - expected).max() < 1e-5
    assert scorer.score(photo) == got["natural"]
    assert scorer.score(photo, scene="aesthetics") == got["aesthetics"]
    if kind == "onnx":   # the exported graph run directly on the same crops
        session = ort.InferenceSession(str(models["onnx"] / "model.onnx"), providers=["CPUExecutionProvider"])
        direct = session.run(["scores"], {"crops": crops})[0].mean(axis=0)
        assert np.abs(np.array(list(got.values())) - direct).max() < 1e-6


def test_protocols_and_seeds_change_scores(models, photo):
    scores = {p: Scorer(models["onnx"], crops=p).score(photo) for p in ("center", "five", "grid", "random10")}
    assert len(set(scores.values())) == 4
    assert Scorer(models["onnx"], crops="random10", seed=1).score(photo) != scores["random10"]


def test_default_crops_and_scene_come_from_the_manifest(models, photo):
    scorer = Scorer(models["one"])
    assert scorer.crops == "center" and scorer.scene == "aigc"
    assert abs(scorer.score(photo) - expected_scores(photo, "center", scenes=("aigc",))[0][0]) < 1e-5


def test_openvino_backend_reads_onnx_too(models, photo):
    scorer = Scorer(models["onnx"], backend="openvino")
    assert scorer.describe().startswith("OpenVINO on CPU")
    assert abs(scorer.score(photo) - Scorer(models["onnx"]).score(photo)) < 1e-5
    with pytest.raises(UserError, match="ONNX Runtime cannot run"):
        Scorer(models["openvino"], backend="onnxruntime")


def test_describe_says_what_actually_runs(models):
    line = Scorer(models["onnx"], threads=1).describe()
    assert "CPUExecutionProvider" in line and "1 threads" in line and "crops five" in line


@pytest.mark.skipif(cuda_driver_present(), reason="this machine has a GPU")
def test_asking_for_a_gpu_on_a_cpu_machine_is_one_sentence(models):
    with pytest.raises(UserError, match="--device cuda was asked for"):
        Scorer(models["onnx"], device="cuda")
    with pytest.raises(UserError, match="OpenVINO sees no GPU"):
        Scorer(models["onnx"], device="gpu")


def test_bad_options_are_one_sentence(models):
    for kwargs, message in [({"scene": "underwater"}, "scene 'underwater' is not in this model"),
                            ({"crops": "six"}, "crop protocol 'six'"),
                            ({"batch": 0}, "--batch must be at least 1"),
                            ({"threads": 0}, "--threads must be at least 1"),
                            ({"precision": "fp16"}, "exported as fp32"),
                            ({"backend": "tflite"}, "backend 'tflite'")]:
        with pytest.raises(UserError, match=message):
            Scorer(models["onnx"], **kwargs)


def test_score_many_keeps_order_reports_failures_and_batches(models, tmp_path):
    images = [textured_image(250 + 40 * i, 300 + 30 * i, seed=i) for i in range(7)]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a photo")
    inputs = paths[:2] + [tmp_path / "empty.jpg"] + paths[2:5] + [tmp_path / "text.jpg", tmp_path / "gone.jpg"] \
        + [paths[5].read_bytes(), images[6]]
    single = Scorer(models["onnx"], batch=1)
    calls = []
    for batch in (1, 7, 64):
        scorer = Scorer(models["onnx"], batch=batch, workers=3)
        run = scorer.backend.run
        scorer.backend.run = lambda crops, run=run: calls.append((batch, len(crops))) or run(crops)
        rows = list(scorer.score_many(inputs))
        assert [r.source for r in rows] == [str(p) for p in inputs[:8]] + ["image 8", "image 9"]
        assert [r.ok for r in rows] == [True, True, False, True, True, True, False, False, True, True]
        assert "empty" in rows[2].error and "not an image" in rows[6].error and "does not exist" in rows[7].error
        good = [r.score for r in rows if r.ok]
        assert np.allclose(good, [single.score(image) for image in images], atol=1e-6)
    # images are never split; batch 7 puts one image (5 crops) per call, 64 puts them all in one
    assert {n for b, n in calls if b == 7} == {5} and [n for b, n in calls if b == 64] == [35]


def test_fixed_batch_graph_is_split_and_padded(models, photo):
    fixed = Scorer(models["fixed"], crops="grid")          # 9 crops through a batch-4 graph
    dynamic = Scorer(models["onnx"], crops="grid")
    assert abs(fixed.score(photo) - dynamic.score(photo)) < 1e-6


def test_wrong_output_width_is_reported(models, tmp_path, photo):
    import shutil, json
    folder = tmp_path / "m"
    shutil.copytree(models["onnx"], folder)
    document = json.loads((folder / "manifest.json").read_text())
    document["scenes"] = document["scenes"][:2]
    (folder / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="does not belong to this graph"):
        Scorer(folder).score(photo)


def test_no_model_and_no_demo_model(tmp_path, monkeypatch):
    import runtime.inference.scorer

    monkeypatch.setattr(runtime.inference.scorer, "DEMO_MODEL", tmp_path / "not-installed")
    with pytest.raises(UserError, match="embedded demo model is not installed.*--model"):
        Scorer()


def test_no_model_means_the_embedded_demo_model():
    scorer = Scorer()
    assert scorer.manifest.folder.name == "demo" and scorer.scenes == ("natural",)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice is Linux's")
def test_decode_threads_yield_relative_to_the_process_priority():
    """A process already niced (a Ray worker runs at +15 by default) keeps its decode threads 10 below
    its inference threads, not at an absolute 10 that would rank them near or above inference."""
    code = ("import os, threading; from runtime.inference.scorer import yield_to_inference\n"
            "seen = []\n"
            "def work():\n"
            "    yield_to_inference()\n"
            "    seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))\n"
            "t = threading.Thread(target=work); t.start(); t.join()\n"
            "print(os.getpriority(os.PRIO_PROCESS, os.getpid()), seen[0])")
    out = subprocess.run(["nice", "-n", "5", sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    base, decode = int(out[0]), int(out[1])
    assert decode == min(19, base + 10) and base >= 5

"""The runtime on real exports: its scores equal the exported graph's as export's own
validation computes them (same crops, 1e-5), and PyTorch's within export's bar (1e-4).

Tiny Gamma with random weights (MoAE switched on), exported to ONNX and OpenVINO."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("export")

from runtime import Scorer  # noqa: E402
from runtime_fixtures import textured_image  # noqa: E402

SCENES = ["natural", "aigc"]


@pytest.fixture(scope="module")
def model():
    from conftest import activate_moae
    from gamma_edge.model import Gamma, GammaConfig

    torch.manual_seed(0)
    gamma = activate_moae(Gamma(GammaConfig.from_name("gamma-tiny")), strength=0.2).eval()
    with torch.no_grad():
        gamma.clip.logit_scale.fill_(np.log(60.0))      # a sharp head spreads the scores
    return gamma


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    from export import export_model

    root = tmp_path_factory.mktemp("exports")
    return {fmt: export_model(model, root / fmt, scene=SCENES, fmt=fmt, progress=False).out_dir
            for fmt in ("onnx", "openvino")}


@pytest.fixture(scope="module")
def photo():
    return textured_image(420, 560, seed=21)


@pytest.mark.parametrize("protocol", ["center", "five", "grid", "random10"])
def test_onnx_runtime_scores_equal_export_validation(model, exported, photo, protocol):
    from export import validate

    scorer = Scorer(exported["onnx"], crops=protocol)
    assert scorer.scenes == tuple(SCENES)
    crops = scorer.crops_of(photo)
    run, _ = validate.onnxruntime_runner(scorer.manifest.model_file)
    graph = validate.run_in_batches(run, crops)
    assert np.abs(scorer.backend.run(crops) - graph).max() < 1e-5
    got = scorer.scores_all_scenes(photo)
    assert np.abs(np.array([got[s] for s in SCENES]) - graph.mean(axis=0)).max() < 1e-5
    reference = validate.reference_scores(model, crops, SCENES).mean(axis=0)
    assert np.abs(np.array([got[s] for s in SCENES]) - reference).max() < 1e-4
    assert np.ptp(graph[:, 0]) > 1e-4 or len(crops) == 1     # the crops really score differently


def test_openvino_runtime_scores_equal_export_validation(model, exported, photo):
    from export import validate

    scorer = Scorer(exported["openvino"], crops="five")
    assert scorer.describe().startswith("OpenVINO on CPU")
    crops = scorer.crops_of(photo)
    run, _ = validate.openvino_runner(scorer.manifest.model_file)
    graph = validate.run_in_batches(run, crops)
    assert np.abs(scorer.backend.run(crops) - graph).max() < 1e-5
    onnx_scores = Scorer(exported["onnx"], crops="five").scores_all_scenes(photo)
    ov_scores = scorer.scores_all_scenes(photo)
    assert max(abs(onnx_scores[s] - ov_scores[s]) for s in SCENES) < 1e-4


def test_cli_scores_a_real_export(exported, photo, tmp_path):
    import json

    import cv2
    from click.testing import CliRunner

    from runtime.commands.score import score_command

    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), photo)
    result = CliRunner().invoke(score_command, [str(path), "--model", str(exported["onnx"]),
                                                "--all-scenes", "--format", "jsonl", "-q"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    expected = Scorer(exported["onnx"]).scores_all_scenes(path)
    assert all(abs(row[s] - expected[s]) < 1e-9 for s in SCENES)

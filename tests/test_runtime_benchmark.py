"""`gamma-edge benchmark`: every engine that can run a model, timed and checked for fidelity."""
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import pearsonr, spearmanr

from runtime.commands.benchmark import benchmark_command
from contract.correlation import rank, srcc as spearman
from runtime_fixtures import make_model, textured_image


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert rank(np.array([3.0, 1.0, 3.0])).tolist() == [1.5, 0.0, 1.5]


def test_benchmark_table_and_json(tmp_path, monkeypatch):
    from contract import hardware
    from test_hardware import EPYC_AVX2

    monkeypatch.setattr(hardware, "detect_cpu", lambda: EPYC_AVX2)      # no bf16 rows, on any host
    onnx_model = make_model(tmp_path / "m-onnx")
    ov_model = make_model(tmp_path / "m-ov", kind="openvino")
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(5):
        cv2.imwrite(str(images / f"{i}.png"), textured_image(260 + 10 * i, 300, seed=i))
    labels = tmp_path / "labels.csv"
    labels.write_text("image_name,mos\n" + "".join(f"{i}.png,{0.1 * i}\n" for i in range(5)))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(benchmark_command, [
        "--model", str(onnx_model), "--model", str(ov_model), "--images", str(images),
        "--labels", str(labels), "--runs", "2", "--crops", "center", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    engines = [(r["model"], r["engine"]) for r in doc["rows"]]
    assert engines == [("m-onnx", "onnxruntime/cpu"), ("m-onnx", "openvino/cpu"), ("m-ov", "openvino/cpu")]
    reference = doc["rows"][0]
    assert reference["max_abs_diff"] == 0.0 and reference["srcc_vs_fp32"] == pytest.approx(1.0)
    for row in doc["rows"]:
        assert row["error"] is None and row["crop_batch"] == 1
        assert row["max_abs_diff"] < 1e-4  # the same graph on two engines
        assert row["images_per_s"] == pytest.approx(1000.0 / row["crops_p50_ms"])
    assert doc["context"]["images"] == 5 and doc["context"]["labels"] is True
    assert "SRCC lab" in result.output and "GEMM probe" in result.output
    assert "fastest faithful INT8 path" in result.output and doc["context"]["cpu"]


def test_bf16_rows_where_the_cpu_has_bf16(tmp_path):
    """On a CPU with native bf16 (injected) OpenVINO gets a bf16 row beside its fp32 one; each row's
    precision is what the engine says it compiled (on a host without bf16, OpenVINO reads back fp32)."""
    from runtime.commands.benchmark import engines_for, measure
    from contract.images import read_image
    from test_hardware import EPYC_AVX2, EPYC_ZEN4

    assert ("openvino", "cpu", "bf16") not in engines_for("onnx", "fp32", EPYC_AVX2)
    assert engines_for("onnx", "fp32", EPYC_ZEN4)[:3] == [
        ("onnxruntime", "cpu", "auto"), ("openvino", "cpu", "auto"), ("openvino", "cpu", "bf16")]
    model = make_model(tmp_path / "m")
    cv2.imwrite(str(tmp_path / "a.png"), textured_image(260, 300, seed=0))
    rows, context = measure([model], [("a.png", read_image(tmp_path / "a.png"))], None, "center", 1, 1,
                            progress=False, cpu=EPYC_ZEN4)
    assert [r.engine for r in rows][:3] == ["onnxruntime/cpu", "openvino/cpu", "openvino/cpu"]
    assert [r.precision for r in rows][:2] == ["fp32", "fp32"]
    assert rows[2].precision == rows[2]._backend.precision in ("bf16", "fp32")
    assert context["cpu_kind"] == "x86 with AVX-512 VNNI"


def test_labels_are_compared_with_the_scores(tmp_path):
    """SRCC/PLCC against labels equal scipy's on the scores the fake graph gives."""
    from runtime import Scorer
    model = make_model(tmp_path / "m")
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(6):
        cv2.imwrite(str(images / f"{i}.png"), textured_image(240, 320, seed=10 + i))
    mos = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2]
    (tmp_path / "l.csv").write_text("".join(f"{i}.png,{m}\n" for i, m in enumerate(mos)))  # no header
    out = tmp_path / "b.json"
    result = CliRunner().invoke(benchmark_command, ["--model", str(model), "--labels", str(tmp_path / "l.csv"),
                                                    "--images", str(images), "--runs", "1", "--crops", "five",
                                                    "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    scorer = Scorer(model, crops="five")
    scores = [scorer.score(str(images / f"{i}.png")) for i in range(6)]
    row = json.loads(out.read_text())["rows"][0]
    assert row["srcc_vs_labels"] == pytest.approx(spearmanr(scores, mos).statistic, abs=1e-6)
    assert row["plcc_vs_labels"] == pytest.approx(pearsonr(scores, mos).statistic, abs=1e-6)


def test_bad_inputs_are_one_sentence(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(benchmark_command, ["--model", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "does not exist" in missing.output and "Traceback" not in missing.output
    model = make_model(tmp_path / "m")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = runner.invoke(benchmark_command, ["--model", str(model), "--images", str(empty)])
    assert no_images.exit_code == 1 and "holds no images" in no_images.output
    runs = runner.invoke(benchmark_command, ["--model", str(model), "--runs", "0"])
    assert runs.exit_code == 1 and "--runs must be at least 1" in runs.output

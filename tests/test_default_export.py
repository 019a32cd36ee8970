"""The default export is the fastest faithful one for the CPU it runs on, and a folder of two graphs
runs the one preferred on the CPU it finds (export/choice.py, contract.manifest.choose_graph). The
CPUs are injected (tests/test_hardware.py), so these tests mean the same on any host."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import activate_moae
from contract.errors import UserError
from contract.manifest import load_manifest, choose_graph
from export.choice import format_plans, folder_name
from runtime.inference.backends import OnnxRuntimeBackend, OpenVINOBackend, load_backend
from runtime_fixtures import make_model, reference_scores, textured_image
from test_hardware import ALDER_LAKE, EPYC_AVX2, EPYC_ZEN4, GRAVITON, XEON_AMX


# ---------------------------------------------------------------- which formats, per CPU kind

@pytest.mark.parametrize("cpu, first", [(EPYC_ZEN4, "openvino"), (XEON_AMX, "openvino"), (ALDER_LAKE, "openvino"),
                                        (EPYC_AVX2, "onnx"), (GRAVITON, "onnx")])
def test_int8_by_default_is_the_cpu_kinds_fastest_format_then_the_other(cpu, first):
    other = {"onnx": "openvino", "openvino": "onnx"}[first]
    assert format_plans("auto", "int8", cpu) == [(first,), (other,)]
    assert format_plans("both", "int8", cpu) == [(first, other)]
    assert folder_name("auto", "int8", cpu) == first and folder_name("both", "int8", cpu) == f"{first}+{other}"


def test_a_named_format_or_onnx_option_is_what_the_user_gets():
    assert format_plans("onnx", "int8", EPYC_ZEN4) == [("onnx",)]
    assert format_plans("openvino", "int8", EPYC_AVX2) == [("openvino",)]
    assert format_plans("auto", "int8", EPYC_ZEN4, onnx_options=True) == [("onnx",)]   # --preset / --int8-method
    assert format_plans("auto", "fp32", EPYC_ZEN4) == [("onnx",)] == format_plans("auto", "fp16", XEON_AMX)
    with pytest.raises(UserError, match="--format both .* --int8"):
        format_plans("both", "fp32", EPYC_ZEN4)


# ---------------------------------------------------------------- the exports themselves

@pytest.fixture(scope="module")
def model():
    from gamma_edge.model import Gamma, GammaConfig

    torch.manual_seed(0)
    m = activate_moae(Gamma(GammaConfig.from_name("gamma-tiny")), strength=0.2).eval()
    with torch.no_grad():
        m.clip.logit_scale.fill_(np.log(60.0))
    return m


@pytest.fixture(scope="module")
def crops():
    from export.calibration import validation_set

    return validation_set()[0][:8]


def _export(model, out, cpu, **options):
    from export import export_model

    return export_model(model, out, precision="int8", progress=False, calib_count=32, force=True, cpu=cpu, **options)


@pytest.mark.parametrize("cpu, kind, file", [(EPYC_ZEN4, "openvino", "model.xml"), (EPYC_AVX2, "onnx", "model.onnx")])
def test_export_int8_builds_the_fastest_faithful_graph_for_the_cpu(model, tmp_path, cpu, kind, file):
    result = _export(model, tmp_path / "default", cpu)
    manifest = result.manifest
    assert (manifest["model"]["kind"], manifest["model"]["file"]) == (kind, file)
    assert "alternatives" not in manifest
    assert {row["cpu_kind"]: row["format"] for row in manifest["prefer"]}[cpu.kind.name] == kind
    assert "this export is the fastest faithful INT8 path" in result.report
    if kind == "onnx":
        assert (manifest["quantization"]["preset"], manifest["quantization"]["method"]) == ("avx2", "dynamic")


def test_a_default_graph_below_the_gate_gives_way_to_the_other_format(model, tmp_path, monkeypatch):
    from export import validate

    real = validate.parity_report
    measured = []

    def first_misses(*args, **kwargs):
        report = real(*args, **kwargs)
        measured.append(report["srcc"])
        return dict(report, srcc=0.5) if len(measured) == 1 else report

    monkeypatch.setattr(validate, "parity_report", first_misses)
    monkeypatch.setattr(validate, "INT8_MIN_SRCC", 0.5 + 1e-9)
    from export import export_model

    result = export_model(model, tmp_path / "fallback", precision="int8", progress=False, calib_count=32,
                          cpu=EPYC_ZEN4)
    assert result.manifest["model"]["kind"] == "onnx" and result.manifest["parity"]["gate"]["passed"]
    assert not (tmp_path / "fallback" / "model.xml").exists()
    assert not list(tmp_path.glob(".*"))


def test_both_graphs_in_one_folder_and_the_runtime_runs_the_one_for_its_cpu(model, crops, tmp_path):
    from export.manifest import read_onnx_manifest

    result = _export(model, tmp_path / "both", EPYC_ZEN4, fmt="both")
    folder = result.out_dir
    assert {"model.xml", "model.bin", "model.onnx", "manifest.json"} <= set(result.files)
    manifest = result.manifest
    assert manifest["model"]["kind"] == "openvino"
    [alternative] = manifest["alternatives"]
    assert alternative["model"]["kind"] == "onnx" and len(alternative["model"]["sha256"]) == 64
    # the ONNX graph serves the CPUs without VNNI, so it has the preset that is faithful there
    assert alternative["quantization"]["preset"] == "avx2" and "gate" in alternative["parity"]
    assert read_onnx_manifest(folder / "model.onnx")["model"]["kind"] == "onnx"   # a lone file says what it is
    loaded = load_manifest(folder)
    expected = {EPYC_ZEN4: OpenVINOBackend, XEON_AMX: OpenVINOBackend, EPYC_AVX2: OnnxRuntimeBackend}
    scores = {}
    for cpu, engine in expected.items():
        backend = load_backend(loaded, cpu=cpu)
        assert isinstance(backend, engine), cpu.model
        scores[cpu.model] = backend.run(crops)
    assert isinstance(load_backend(loaded, backend="onnxruntime", cpu=EPYC_ZEN4), OnnxRuntimeBackend)
    assert isinstance(load_backend(loaded, backend="openvino", cpu=EPYC_AVX2), OpenVINOBackend)
    assert np.abs(scores[EPYC_ZEN4.model] - scores[EPYC_AVX2.model]).max() < 0.05


# ---------------------------------------------------------------- the runtime's choice, torch-free

@pytest.fixture
def two_graph_folder(tmp_path):
    folder = make_model(tmp_path / "both", kind="openvino")
    shutil.copy(make_model(tmp_path / "onnx", kind="onnx") / "model.onnx", folder / "model.onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["alternatives"] = [{"model": {"kind": "onnx", "file": "model.onnx", "precision": "fp32"},
                                 "quantization": None, "parity": {}}]
    manifest["prefer"] = [{"cpu_kind": "x86 with AVX-512 VNNI", "format": "openvino"},
                          {"cpu_kind": "x86 with AVX2", "format": "onnx"}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_choose_graph_follows_the_manifests_table_then_the_runtimes(two_graph_folder):
    manifest = load_manifest(two_graph_folder)
    assert choose_graph(manifest, None, "x86 with AVX-512 VNNI", "onnx").model_kind == "openvino"
    assert choose_graph(manifest, None, "x86 with AVX2", "openvino").model_kind == "onnx"
    assert choose_graph(manifest, None, "ARM64", "onnx").model_kind == "onnx"        # not in the table
    assert choose_graph(manifest, "openvino", "x86 with AVX2", "onnx").model_kind == "openvino"


def test_the_chosen_graph_scores_like_the_other(two_graph_folder):
    image = textured_image(224, 224, seed=3)[None]
    manifest = load_manifest(two_graph_folder)
    on_zen4, on_avx2 = load_backend(manifest, cpu=EPYC_ZEN4), load_backend(manifest, cpu=EPYC_AVX2)
    assert (type(on_zen4), type(on_avx2)) == (OpenVINOBackend, OnnxRuntimeBackend)
    np.testing.assert_allclose(on_zen4.run(image), reference_scores(image), atol=1e-5)
    np.testing.assert_allclose(on_avx2.run(image), reference_scores(image), atol=1e-5)


def test_a_missing_alternative_graph_is_one_sentence(two_graph_folder):
    (two_graph_folder / "model.onnx").unlink()
    with pytest.raises(UserError, match="model.onnx.*missing"):
        load_backend(load_manifest(two_graph_folder), cpu=EPYC_AVX2)

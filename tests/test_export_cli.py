"""`gamma-edge export`: the command, and every way a user can get it wrong."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import activate_moae


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gamma_edge.checkpoint import save_checkpoint
    from gamma_edge.model import Gamma, GammaConfig

    torch.manual_seed(0)
    model = activate_moae(Gamma(GammaConfig.from_name("gamma-tiny"))).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def invoke(*args):
    from gamma_edge.cli import main

    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_cli_exports_validates_and_prints_next_commands(checkpoint, tmp_path):
    from gamma_edge.checkpoint import file_sha256

    out = tmp_path / "model"
    result = invoke("--checkpoint", checkpoint, "--scene", "natural,aesthetics", "--out", out)
    assert result.exit_code == 0, result.output
    assert "parity vs PyTorch FP32 on 24 held-out crops" in result.output
    assert f"gamma-edge score photos/ --model {out}" in result.output
    assert f"gamma-edge benchmark --model {out}" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["scenes"]] == ["natural", "aesthetics"]
    assert manifest["checkpoint"]["sha256"] == file_sha256(checkpoint)
    assert manifest["checkpoint"]["name"] == "tiny.safetensors"
    # existing output: refused, then replaced with --overwrite
    again = invoke("--checkpoint", checkpoint, "--out", out)
    assert again.exit_code != 0 and "already exists" in again.output and "--overwrite" in again.output
    replaced = invoke("--checkpoint", checkpoint, "--out", out, "--overwrite", "--quiet")
    assert replaced.exit_code == 0, replaced.output
    assert [s["name"] for s in json.loads((out / "manifest.json").read_text())["scenes"]] == ["natural"]


@pytest.mark.parametrize("args, message", [
    (["--scene", "xray"], "unknown scene 'xray'"),
    (["--int8", "--calib", "{empty}"], "holds no images"),
    (["--int8", "--calib", "{unreadable}"], "could be read"),
    (["--int8", "--calib", "{missing}"], "does not exist"),
])
def test_cli_bad_input_is_one_sentence(checkpoint, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "photo.jpg").write_bytes(b"\x00garbage")
    args = [a.format(empty=tmp_path / "empty", unreadable=tmp_path / "unreadable", missing=tmp_path / "nope")
            for a in args]
    result = invoke("--checkpoint", checkpoint, "--out", tmp_path / "out", *args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_file_that_is_not_a_gamma_checkpoint(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "weights.bin").write_bytes(b"\x00" * 64)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    for path, message in ((tmp_path / "weights.bin", "not a gamma-edge checkpoint"),
                          (tmp_path / "other.safetensors", "not a gamma-edge checkpoint"),
                          (tmp_path / "missing.safetensors", "does not exist")):
        result = invoke("--checkpoint", path, "--out", tmp_path / "out")
        assert result.exit_code != 0 and message in result.output, result.output


def test_cli_without_checkpoint_names_the_option(tmp_path, monkeypatch):
    from export import pipeline

    monkeypatch.setattr(pipeline, "DEFAULT_CHECKPOINT", tmp_path / "absent" / "demo.safetensors")
    result = invoke("--out", tmp_path / "out")
    assert result.exit_code != 0 and "pass --checkpoint" in result.output


@pytest.mark.parametrize("stage", ["graph", "manifest"])
def test_a_write_failing_midway_leaves_nothing_that_looks_complete(checkpoint, tmp_path, monkeypatch, stage):
    from export import manifest, onnx_export

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_export if stage == "graph" else manifest,
                        "export_onnx" if stage == "graph" else "write_manifest", fail)
    result = invoke("--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert result.exit_code != 0
    assert "could not write" in result.output and "No space left on device" in result.output
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []                 # no partial folder either


def test_failed_overwrite_keeps_the_previous_export(checkpoint, tmp_path, monkeypatch):
    from export import manifest

    out = tmp_path / "out"
    assert invoke("--checkpoint", checkpoint, "--out", out, "--quiet").exit_code == 0
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(manifest, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "I/O error")))
    result = invoke("--checkpoint", checkpoint, "--out", out, "--overwrite", "--scene", "face")
    assert result.exit_code != 0 and "I/O error" in result.output
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_python_api_scores_match_the_cli_graph(checkpoint, tmp_path):
    import onnxruntime as ort

    from export import export_model
    from export.calibration import validation_set
    from export.validate import reference_scores
    from gamma_edge.checkpoint import load_checkpoint

    result = export_model(checkpoint, tmp_path / "api", scene=["face"], progress=False)
    crops = validation_set()[0][:4]
    got = ort.InferenceSession(str(result.out_dir / "model.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"crops": crops})[0]
    np.testing.assert_allclose(got, reference_scores(load_checkpoint(checkpoint), crops, ["face"]), atol=1e-4)

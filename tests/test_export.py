"""export/: the deployable graph's exact rewrites, FP32 ONNX / OpenVINO parity, the manifest.

Tiny model, random weights with MoAE switched on (conftest.activate_moae), CPU.
Tolerances: rewrites 1e-5 (float32 reassociation), exported graphs 1e-4 (the issue's bar).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import activate_moae


@pytest.fixture(scope="module")
def model():
    from gamma_edge.model import Gamma, GammaConfig

    torch.manual_seed(0)
    m = activate_moae(Gamma(GammaConfig.from_name("gamma-tiny")), strength=0.2).eval()
    with torch.no_grad():
        m.clip.logit_scale.fill_(np.log(60.0))          # sharper head: scores spread, parity means something
    return m


@pytest.fixture(scope="module")
def crops():
    from export.calibration import validation_set

    return validation_set()[0][:10]


@pytest.fixture(scope="module")
def onnx_export_dir(model, tmp_path_factory):
    from export import export_model

    out = tmp_path_factory.mktemp("onnx") / "natural-fp32"
    return export_model(model, out, scene="natural", progress=False)


# ---------------------------------------------------------------- rewrites, in PyTorch

def test_fused_moae_equals_the_papers_sum(model):
    from export.graph import FusedMoAE, UnfusedMoAE
    from gamma_edge.model import MixtureOfAssessmentExperts

    blocks = [b.mlp for b in model.clip.visual.transformer.resblocks if isinstance(b.mlp, MixtureOfAssessmentExperts)]
    assert len(blocks) == model.config.moae_blocks
    x = torch.randn(3, 50, blocks[0].gate.in_features)
    for moae in blocks:
        assert float(moae.scale.detach()) != 0.0                 # MoAE contributes
        fused, unfused = FusedMoAE(moae, tokens=50), UnfusedMoAE(moae)
        hidden = moae.shared_expert.c_fc.out_features
        # one first product of width (N+1)*4w and one second product reading all of it
        assert fused.fc.out_features == (model.config.num_experts + 1) * hidden
        assert fused.proj.in_features == (model.config.num_experts + 1) * hidden
        with torch.no_grad():
            expected = moae(x)
            torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(unfused(x), expected, atol=1e-5, rtol=0)
            assert (expected - moae.shared_expert(x)).abs().max() > 1e-3   # the experts do change the output


def test_folded_uint8_bgr_input_matches_pytorch_on_rgb_float(model, crops):
    from export.graph import build_graph
    from export.validate import crops_to_images

    graph = build_graph(model, ["natural"])
    with torch.no_grad():
        expected = model.scores(crops_to_images(crops), ["natural"])
        got = graph(torch.from_numpy(crops))
        # the patch embedding alone: uint8 BGR through the folded conv == conv1 on the normalised RGB image
        rgb = crops_to_images(crops[:2])
        conv = model.clip.visual.conv1((rgb - model.mean) / model.std).flatten(2).transpose(1, 2)
        torch.testing.assert_close(graph.patch(torch.from_numpy(crops[:2])), conv, atol=1e-4, rtol=1e-5)
    assert graph.patch.conv.in_channels == 3 and graph.patch.conv.bias is not None
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert float(expected.std()) > 1e-3                   # scores vary, so parity is not vacuous


def test_fused_graph_matches_unfused_graph(model, crops):
    from export.graph import build_graph

    with torch.no_grad():
        fused = build_graph(model, ["natural", "face"], fuse_moae=True)(torch.from_numpy(crops))
        unfused = build_graph(model, ["natural", "face"], fuse_moae=False)(torch.from_numpy(crops))
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=0)


def test_class_token_only_last_block_matches_the_full_last_block(model, crops):
    from export.graph import FusedMoAE, build_graph

    short = build_graph(model, ["natural", "face"])                        # rewrite 5 is the default
    full = build_graph(model, ["natural", "face"], class_token_only=False)
    last = short.blocks[-1]
    assert last.class_token_only and isinstance(last.mlp, FusedMoAE) and last.mlp.tokens == 1
    assert not any(b.class_token_only for b in short.blocks[:-1]) and not full.blocks[-1].class_token_only
    x = torch.from_numpy(crops)
    with torch.no_grad():
        torch.testing.assert_close(short.image_features(x), full.image_features(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(short(x), full(x), atol=1e-5, rtol=0)
        # the last block's attention and MoAE matter to the score, so the check is not vacuous
        before = short(x)
        last.mlp.proj.weight.zero_()
        assert float((short(x) - before).abs().max()) > 1e-4


# ---------------------------------------------------------------- exported graphs

def test_onnx_fp32_matches_pytorch_with_dynamic_batch(model, crops, onnx_export_dir):
    import onnxruntime as ort

    from export.validate import reference_scores

    path = onnx_export_dir.out_dir / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("crops", "tensor(uint8)", [224, 224, 3])
    assert out.name == "scores"
    expected = reference_scores(model, crops, ["natural"])
    for batch in (1, 3, 10):                               # crops of several images in one batch
        got = session.run(None, {"crops": crops[:batch]})[0]
        assert got.shape == (batch, 1)
        np.testing.assert_allclose(got, expected[:batch], atol=1e-4, rtol=0)


def test_manifest_beside_and_inside_the_onnx_file(model, onnx_export_dir):
    from export.manifest import read_onnx_manifest
    from gamma_edge.checkpoint import file_sha256

    folder = onnx_export_dir.out_dir
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == onnx_export_dir.manifest
    assert (manifest["format"], manifest["format_version"]) == ("gamma-edge.manifest", 1)
    assert manifest["model"] == {"kind": "onnx", "file": "model.onnx", "precision": "fp32",
                                 "sha256": file_sha256(folder / "model.onnx")}
    assert manifest["input"] == {"name": "crops", "layout": "NHWC", "dtype": "uint8", "channel_order": "BGR",
                                 "height": 224, "width": 224, "batch": "dynamic"}
    assert manifest["output"] == {"name": "scores", "dtype": "float32", "shape": ["N", "S"]}
    assert manifest["scenes"] == [{"name": "natural", "prompts": model.prompts("natural")}]
    assert manifest["levels"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    parity = manifest["parity"]
    assert parity["reference"] == "pytorch-fp32" and parity["images"] == 24
    assert parity["max_abs_diff"] < 1e-4 and parity["srcc"] > 0.999
    assert parity["file_bytes"] > 0 and parity["latency_ms_batch1"] > 0
    assert "torch" in manifest["tools"] and "onnxruntime" in manifest["tools"]
    embedded = read_onnx_manifest(folder / "model.onnx")
    assert embedded["scenes"] == manifest["scenes"] and embedded["parity"] == parity
    assert "sha256" not in embedded["model"]                # a file cannot carry its own hash
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx"]
    assert not list(folder.parent.glob(".*partial*"))


def test_runtime_reads_the_exported_manifest(onnx_export_dir):
    runtime_manifest = pytest.importorskip("contract.manifest")
    loaded = runtime_manifest.load_manifest(onnx_export_dir.out_dir)
    assert loaded.scenes == ("natural",) and loaded.input_name == "crops"


def test_all_scenes_graph_matches_each_per_scene_graph(model, crops, tmp_path):
    import onnxruntime as ort

    from export import export_model
    from export.graph import build_graph
    from export.onnx_export import export_onnx

    result = export_model(model, tmp_path / "all", scene="all", progress=False)
    names = [s["name"] for s in result.manifest["scenes"]]
    assert names == list(model.scenes) and len(names) == 5
    session = ort.InferenceSession(str(tmp_path / "all" / "model.onnx"), providers=["CPUExecutionProvider"])
    every = session.run(None, {"crops": crops})[0]
    assert every.shape == (len(crops), 5)
    for i, name in enumerate(names):
        path = export_onnx(build_graph(model, [name]), tmp_path / f"{name}.onnx")
        single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"crops": crops})[0]
        np.testing.assert_allclose(every[:, i:i + 1], single, atol=1e-5, rtol=0)
    assert np.abs(every[:, 0] - every[:, 4]).max() > 1e-4   # scenes differ: columns are not copies


def test_openvino_fp32_matches_pytorch(model, crops, tmp_path):
    import openvino as ov

    from export import export_model
    from contract.manifest import OPENVINO_RT_INFO_KEY
    from export.validate import reference_scores
    from runtime.inference.backends import compile_openvino, openvino_precision

    result = export_model(model, tmp_path / "ov", scene="natural,face", fmt="openvino", progress=False)
    folder = result.out_dir
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    assert result.manifest["model"]["kind"] == "openvino" and result.manifest["model"]["weights_file"] == "model.bin"
    core = ov.Core()
    ir = core.read_model(str(folder / "model.xml"))
    embedded = json.loads(str(ir.get_rt_info([OPENVINO_RT_INFO_KEY]).astype(str)))
    assert [s["name"] for s in embedded["scenes"]] == ["natural", "face"]
    compiled = compile_openvino(core, ir)
    expected = reference_scores(model, crops, ["natural", "face"])
    for batch in (1, 4):
        got = compiled({0: crops[:batch]})[0]
        np.testing.assert_allclose(got, expected[:batch], atol=1e-4, rtol=0)
    assert openvino_precision(compiled) == "fp32"           # said, not left to the plugin (bf16 on AMX CPUs)
    assert result.manifest["parity"]["max_abs_diff"] < 1e-4
    assert result.manifest["parity"]["providers"] == ["openvino:CPU:fp32"]


def test_fp16_graph_has_half_weights_and_stays_close(model, crops, tmp_path):
    import onnx
    import onnxruntime as ort

    from export import export_model
    from export.validate import reference_scores

    result = export_model(model, tmp_path / "fp16", scene="natural", precision="fp16", progress=False)
    graph = onnx.load(str(result.out_dir / "model.onnx"))
    half = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(half) > 10
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = ort.InferenceSession(str(result.out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"crops": crops})[0]
    np.testing.assert_allclose(got, reference_scores(model, crops, ["natural"]), atol=2e-2, rtol=0)


def test_dynamo_exporter_gives_the_same_graph(model, crops, tmp_path):
    import onnxruntime as ort

    from export.graph import build_graph
    from export.onnx_export import export_onnx

    graph = build_graph(model, ["natural"])
    path = export_onnx(graph, tmp_path / "dynamo.onnx", exporter="dynamo")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = graph(torch.from_numpy(crops)).numpy()
    for batch in (1, 3):
        np.testing.assert_allclose(session.run(None, {"crops": crops[:batch]})[0], expected[:batch], atol=1e-5)

"""`gamma-edge export --format triton`: a model repository that Triton's own model-config parser reads
(tritonclient's model_config_pb2 + protobuf text format), whose names, types and dims are the graph's,
with the manifest beside each graph; and the same scores through the protocol as from the graph.
(Triton server itself is not installed here: where it is, docs/serve.md says how to check it.)"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import activate_moae
from runtime_fixtures import textured_image

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    from gamma_edge.checkpoint import save_checkpoint
    from gamma_edge.cli import main
    from gamma_edge.model import Gamma, GammaConfig

    torch.manual_seed(0)
    model = activate_moae(Gamma(GammaConfig.from_name("gamma-tiny"))).eval()
    root = tmp_path_factory.mktemp("triton")
    checkpoint = save_checkpoint(model, root / "tiny.safetensors")
    out = root / "repo"
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--scene", "natural,aesthetics",
                                       "--format", "triton", "--triton-max-batch", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"tritonserver --model-repository {out.resolve()}" in result.output
    assert f"gamma-edge score photos/ --model {out / 'natural' / '1'}" in result.output
    return out


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_layout_and_config_parse_with_tritons_parser(repository):
    import onnx

    assert sorted(p.name for p in repository.iterdir()) == ["aesthetics", "natural"]
    for scene in ("natural", "aesthetics"):
        assert sorted(p.name for p in (repository / scene / "1").iterdir()) == ["manifest.json", "model.onnx"]
        config = parse(repository / scene / "config.pbtxt")
        manifest = json.loads((repository / scene / "1" / "manifest.json").read_text())
        graph = onnx.load(str(repository / scene / "1" / "model.onnx"), load_external_data=False).graph
        assert config.name == scene and config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
        [given], [taken] = config.input, config.output
        assert given.name == graph.input[0].name == manifest["input"]["name"] == "crops"
        assert given.data_type == model_config_pb2.TYPE_UINT8 and list(given.dims) == [224, 224, 3]
        assert taken.name == graph.output[0].name == manifest["output"]["name"] == "scores"
        assert taken.data_type == model_config_pb2.TYPE_FP32 and list(taken.dims) == [1]
        assert [s["name"] for s in manifest["scenes"]] == [scene]
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        [group] = config.instance_group
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == 1
        assert config.version_policy.latest.num_versions == 1


def test_gpu_instances_and_options_only_with_triton(repository, tmp_path):
    from export.triton import TritonOptions, config_pbtxt
    from gamma_edge.cli import main

    graph = repository / "natural" / "1" / "model.onnx"
    text = config_pbtxt("natural", graph, ["natural"], "fp16", TritonOptions(instances=2))
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.instance_group[0].count == 2
    result = CliRunner().invoke(main, ["export", "--triton-device", "gpu", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "the option(s) --triton-device need --format triton" in result.output
    result = CliRunner().invoke(main, ["export", "--format", "triton", "--out", str(repository)])
    assert result.exit_code == 1 and "already exists" in result.output


def test_repository_model_answers_what_its_graph_answers(repository, tmp_path):
    """The protocol a Triton server would speak, here from gamma-edge serve on the repository's version
    folder (named after its model folder): crop tensors give the graph's own scores, and the client-side
    preprocessing docs/serve.md shows gives gamma-edge score's score."""
    pytest.importorskip("starlette")
    import onnxruntime as ort
    import tritonclient.http as httpclient

    from runtime import Scorer
    from runtime.serve.models import model_name
    from runtime.serve.server import ModelServer, ServeOptions

    version = repository / "natural" / "1"
    assert model_name(version, None) == "natural"
    crops = np.random.default_rng(0).integers(0, 256, (7, 224, 224, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["scores"], {"crops": crops})[0]
    server = ModelServer({"natural": Scorer(version)}, ServeOptions(port=0, metrics=False)).start()
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = httpclient.InferInput("crops", list(crops.shape), "UINT8")
        tensor.set_data_from_numpy(crops)
        scores = client.infer("natural", [tensor]).as_numpy("scores")
        photo = tmp_path / "photo.jpg"
        cv2.imwrite(str(photo), textured_image(480, 640, seed=2))
        score = client_side_score(client, version, photo)
    finally:
        server.stop()
    assert np.abs(scores - expected).max() <= 1e-6
    assert abs(score - Scorer(version).score(str(photo))) <= 1e-6


def client_side_score(client, version, photo) -> float:
    """docs/serve.md, "Triton": the client cuts the crops by the manifest and averages their scores."""
    import tritonclient.http as httpclient

    from contract.images import read_image
    from contract.manifest import load_manifest
    from contract.preprocess import Preprocess

    preprocess = Preprocess.from_manifest(load_manifest(version))          # the manifest's crops (five)
    crops = preprocess(read_image(str(photo), shrink_to=preprocess.max_long_side))
    tensor = httpclient.InferInput("crops", list(crops.shape), "UINT8")
    tensor.set_data_from_numpy(crops)
    scores = client.infer("natural", [tensor]).as_numpy("scores")          # (5, 1): one row per crop
    return float(scores.mean(axis=0, dtype=np.float64)[0])

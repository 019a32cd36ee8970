"""The manifest contract: loaded from a folder, a sidecar or a lone graph; anything else refused in one sentence."""
import json

import pytest

from contract.errors import UserError
from contract.manifest import load_manifest, onnx_metadata
from runtime_fixtures import make_model


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("onnx"), scenes=("natural", "aigc"), default_crops="grid")


def edit(folder, change):
    document = json.loads((folder / "manifest.json").read_text())
    change(document)
    (folder / "manifest.json").write_text(json.dumps(document))


def test_folder_and_file_give_the_same_manifest(onnx_dir):
    manifest = load_manifest(onnx_dir)
    assert manifest.scenes == ("natural", "aigc")
    assert manifest.model_file == onnx_dir / "model.onnx" and manifest.model_kind == "onnx"
    assert (manifest.crop_size, manifest.batch, manifest.default_crops) == (224, None, "grid")
    assert (manifest.max_long_side, manifest.min_short_side) == (512, 224)
    assert load_manifest(onnx_dir / "model.onnx") == manifest
    assert load_manifest(onnx_dir / "manifest.json") == manifest


def test_lone_graph_files_carry_their_manifest(tmp_path):
    folder = make_model(tmp_path / "o", scenes=("aesthetics",))
    (folder / "manifest.json").unlink()
    assert "gamma_edge.manifest" in onnx_metadata(folder / "model.onnx")
    assert load_manifest(folder / "model.onnx").scenes == ("aesthetics",)
    folder = make_model(tmp_path / "v", scenes=("aigc",), kind="openvino")
    (folder / "manifest.json").unlink()
    manifest = load_manifest(folder / "model.xml")
    assert manifest.scenes == ("aigc",) and manifest.model_kind == "openvino"
    with pytest.raises(UserError, match="not a complete exported model"):
        load_manifest(folder)


def test_lone_graph_without_metadata_is_refused(tmp_path):
    folder = make_model(tmp_path, embed=False)
    (folder / "manifest.json").unlink()
    with pytest.raises(UserError, match="carries no gamma-edge manifest"):
        load_manifest(folder / "model.onnx")


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(format_version=2), "version 2, but this runtime understands only 'gamma-edge.manifest' version 1"),
    (lambda d: d.update(format="something.else"), "format 'something.else'"),
    (lambda d: d["model"].update(kind="tflite"), "model kind 'tflite'"),
    (lambda d: d["model"].update(file="gone.onnx"), "gone.onnx' named in"),
    (lambda d: d["input"].update(layout="NCHW"), "NCHW/uint8/BGR input"),
    (lambda d: d["input"].update(batch=0), "input batch 0"),
    (lambda d: d.update(scenes=[]), "lists no scenes"),
    (lambda d: d["preprocess"].update(default_crops="six"), "default crops 'six'"),
    (lambda d: d.pop("output"), "lacks 'output.name'"),
])
def test_bad_manifests_are_refused_in_one_sentence(tmp_path, change, message):
    folder = make_model(tmp_path)
    edit(folder, change)
    with pytest.raises(UserError) as caught:
        load_manifest(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_missing_and_broken(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON manifest"):
        load_manifest(tmp_path)

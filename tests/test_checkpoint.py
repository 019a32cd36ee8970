"""Checkpoints: our format, backbone initialisation, the official import, and refusing bad files."""
import os
import pickle

import open_clip
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import activate_moae
from gamma_edge.checkpoint import load_checkpoint, load_tensor_file, read_checkpoint_header, save_checkpoint
from gamma_edge.commands.convert import convert_command
from gamma_edge.convert import convert_official
from contract.errors import UserError
from gamma_edge.model import Gamma, GammaConfig, MixtureOfAssessmentExperts
from gamma_edge.state_dicts import check_state_fits


def test_save_load_round_trip_gives_identical_scores(tiny_gamma, tmp_path):
    path = save_checkpoint(tiny_gamma, tmp_path / "m.safetensors", extra={"note": "x"})
    loaded = load_checkpoint(path)
    images = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.scores(images), tiny_gamma.scores(images))
    header = read_checkpoint_header(path)
    assert header["config"] == tiny_gamma.config and header["extra"] == {"note": "x"}
    assert [s.name for s in header["scenes"]] == list(tiny_gamma.scenes)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left behind


def test_checkpoint_carries_user_scenes(tmp_path):
    from gamma_edge.scenes import Scene, default_scenes

    scenes = default_scenes() + [Scene("xray", tuple(f"x-ray {w}" for w in "abcde"))]
    model = Gamma(GammaConfig.from_name("gamma-tiny"), scenes=scenes)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m.safetensors"))
    assert loaded.prompts("xray") == [f"x-ray {w}" for w in "abcde"]


def test_misshapen_and_missing_keys_are_named(tiny_gamma):
    state = dict(tiny_gamma.state_dict())
    del state["head.levels"]
    state["head.adapter.0.weight"] = torch.zeros(3, 3)
    state["bogus.weight"] = torch.zeros(1)
    with pytest.raises(UserError) as info:
        check_state_fits(tiny_gamma, state, "f.safetensors")
    message = str(info.value)
    assert "missing keys head.levels" in message
    assert "unexpected keys bogus.weight" in message
    assert "head.adapter.0.weight (file (3, 3), model (16, 32))" in message


def test_missing_file_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a gamma-edge checkpoint"):
        load_checkpoint(junk)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UserError, match="no 'gamma-edge.checkpoint' metadata"):
        load_checkpoint(foreign)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, ("/tmp/gamma_edge_pwned_by_pickle",))


def test_pickle_with_code_is_refused_not_executed(tmp_path):
    marker = "/tmp/gamma_edge_pwned_by_pickle"
    if os.path.exists(marker):
        os.rmdir(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": {"w": _Exploit()}}, f)
    with pytest.raises(UserError, match="refuses to execute"):
        load_tensor_file(path)
    assert not os.path.exists(marker)
    # the same refusal through the CLI: one sentence, no traceback
    result = CliRunner().invoke(convert_command, [str(path), "--out", str(tmp_path / "o.safetensors")])
    assert result.exit_code == 1 and "refuses to execute" in result.output and "Traceback" not in result.output
    assert not os.path.exists(marker)


# ---- backbone initialisation from an OpenAI-format CLIP checkpoint ----

def _openai_state(config, seed=1):
    torch.manual_seed(seed)
    return open_clip.CLIP(**config.backbone).state_dict()


def test_backbone_from_openai_state_dict_file(tmp_path):
    config = GammaConfig.from_name("gamma-tiny")
    state = _openai_state(config)
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = Gamma(config, backbone_state=load_tensor_file(path))
    assert torch.equal(model.clip.visual.conv1.weight, state["visual.conv1.weight"])
    moae = model.clip.visual.transformer.resblocks[-1].mlp
    assert torch.equal(moae.adaptive_experts[2].c_fc.weight, state["visual.transformer.resblocks.3.mlp.c_fc.weight"])


class _Holder(torch.nn.Module):
    """Parameters at given dotted names, as a TorchScript archive of OpenAI's CLIP holds them."""

    def __init__(self, state, extras):
        super().__init__()
        tree = {}
        for key, value in state.items():
            node = tree
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        self._fill(self, tree)
        for name, value in extras.items():
            self.register_buffer(name, value)

    @staticmethod
    def _fill(module, tree):
        for name, value in tree.items():
            if isinstance(value, dict):
                child = torch.nn.Module()
                _Holder._fill(child, value)
                module.add_module(name, child)
            else:
                module.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_backbone_from_torchscript_archive(tmp_path):
    config = GammaConfig.from_name("gamma-tiny")
    state = {k: v for k, v in _openai_state(config, seed=2).items()}
    extras = {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
              "vocab_size": torch.tensor(49408)}
    archive = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.script(_Holder(state, extras)), str(archive))
    model = Gamma(config, backbone_state=load_tensor_file(archive))
    assert torch.equal(model.clip.token_embedding.weight, state["token_embedding.weight"])


def test_backbone_of_the_wrong_size_is_named(tmp_path):
    state = _openai_state(GammaConfig.from_name("gamma-tiny"))
    state["visual.proj"] = torch.zeros(64, 7)
    with pytest.raises(UserError, match=r"visual.proj \(file \(64, 7\), model \(64, 32\)\)"):
        Gamma(GammaConfig.from_name("gamma-tiny"), backbone_state=state)


# ---- the official release layout ----

OFFICIAL_TINY = {  # widths follow OpenAI's heads = width // 64, as the official weights do
    "embed_dim": 32, "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 3, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 3},
}


def _official_layout(model):
    """The authors' key names for our model's tensors, wrapped as they save them."""
    params = {}
    for name, value in model.state_dict().items():
        if name.startswith("head."):
            key = {"head.adapter.0.weight": "adapter.fc.0.weight", "head.adapter.2.weight": "adapter.fc.2.weight",
                   "head.levels": "score_level"}[name]
        else:
            key = "clip_model." + name[len("clip."):]
            key = key.replace(".mlp.shared_expert.", ".mlp.useful_experts.").replace(".mlp.gate.", ".mlp.gating.layer1.")
            for i in range(model.config.num_experts):
                key = key.replace(f".mlp.adaptive_experts.{i}.", f".mlp.experts.expert_{i}.")
        params[key] = value.clone()
    return {"params": params}


def _score_by_hand(params, images, prompts):
    """docs/design.md sec. 1 written out on the official tensors: open_clip supplies the plain CLIP
    (attention, LayerNorm); MoAE, adapter and level head are computed here from the formulas."""
    clip_state = {}
    for key, value in params.items():
        if key.startswith("clip_model."):
            name = key[len("clip_model."):].replace(".mlp.useful_experts.", ".mlp.")
            if ".mlp.experts." not in name and ".mlp.gating." not in name and not name.endswith(".mlp.scale"):
                clip_state[name] = value
    clip = open_clip.CLIP(**OFFICIAL_TINY)
    clip.load_state_dict(clip_state)
    clip.eval()

    def quick_gelu(x):
        return x * torch.sigmoid(1.702 * x)

    def moae_hook(prefix):
        def hook(module, inputs, output):
            x = inputs[0]
            g = F.softmax(x @ params[f"{prefix}.gating.layer1.weight"].T + params[f"{prefix}.gating.layer1.bias"], -1)
            total = 0
            for i in range(3):
                e = f"{prefix}.experts.expert_{i}"
                h = quick_gelu(x @ params[f"{e}.c_fc.weight"].T + params[f"{e}.c_fc.bias"])
                total = total + g[..., i:i + 1] * (h @ params[f"{e}.c_proj.weight"].T + params[f"{e}.c_proj.bias"])
            return output + params[f"{prefix}.scale"] * total
        return hook

    for tower, key in ((clip.visual.transformer, "clip_model.visual.transformer"),
                       (clip.transformer, "clip_model.transformer")):
        for i in (1, 2):
            tower.resblocks[i].mlp.register_forward_hook(moae_hook(f"{key}.resblocks.{i}.mlp"))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    f = clip.encode_image((images - mean) / std)
    t = clip.encode_text(open_clip.tokenize(prompts))
    w1, w2 = params["adapter.fc.0.weight"], params["adapter.fc.2.weight"]
    f = f + torch.relu(torch.relu(f @ w1.T) @ w2.T)
    f, t = f / f.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    p = F.softmax(params["clip_model.logit_scale"].exp() * f @ t.T, dim=-1)
    return (p * params["score_level"]).sum(-1)


@pytest.mark.parametrize("prompts, scene, expected_prompts", [
    ("sdp", "underwater", [f"underwater {w}-quality image" for w in ("bad", "poor", "fair", "good", "perfect")]),
    ("plain", "underwater", [f"{w} image" for w in ("bad", "poor", "fair", "good", "perfect")]),
])
def test_official_layout_converts_and_scores_as_the_formulas(tmp_path, prompts, scene, expected_prompts):
    torch.manual_seed(3)
    source = activate_moae(Gamma(GammaConfig(backbone=OFFICIAL_TINY, moae_blocks=2, adapter_hidden=16)), seed=3)
    with torch.no_grad():
        source.head.levels.copy_(torch.tensor([0.1, 0.3, 0.55, 0.7, 0.95]))
        source.head.adapter[0].weight.normal_(0, 0.3)
    official = _official_layout(source)
    path = tmp_path / "gamma_weight.pth"
    torch.save(official, path)

    model = convert_official(path, prompts=prompts)
    assert model.config.moae_blocks == 2 and model.config.num_experts == 3 and model.config.prompts == prompts
    assert model.prompts(scene) == expected_prompts
    images = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        ours = model.score(images, scene)
        by_hand = _score_by_hand(official["params"], images, expected_prompts)
    torch.testing.assert_close(ours, by_hand, atol=1e-5, rtol=0)
    assert ours.max() - ours.min() > 1e-4  # the scores vary, so agreement means something

    out = tmp_path / "gamma.safetensors"
    result = CliRunner().invoke(convert_command, [str(path), "--out", str(out), "--prompts", prompts])
    assert result.exit_code == 0, result.output
    assert "CC BY-NC-SA 4.0" in result.output and "gamma-edge export" in result.output
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(out).score(images, scene), ours, atol=0, rtol=0)
    again = CliRunner().invoke(convert_command, [str(path), "--out", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_official_file_with_missing_expert_is_named(tmp_path):
    torch.manual_seed(4)
    official = _official_layout(Gamma(GammaConfig(backbone=OFFICIAL_TINY, moae_blocks=2, adapter_hidden=16)))
    del official["params"]["clip_model.visual.transformer.resblocks.2.mlp.experts.expert_1.c_fc.weight"]
    path = tmp_path / "broken.pth"
    torch.save(official, path)
    result = CliRunner().invoke(convert_command, [str(path), "--out", str(tmp_path / "o.safetensors")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "missing keys clip.visual.transformer.resblocks.2.mlp.adaptive_experts.1.c_fc.weight" in result.output


def test_plain_clip_is_not_mistaken_for_gamma(tmp_path):
    torch.manual_seed(5)
    state = {f"clip_model.{k}": v for k, v in open_clip.CLIP(**OFFICIAL_TINY).state_dict().items()}
    path = tmp_path / "clip_only.pth"
    torch.save({"params": state}, path)
    result = CliRunner().invoke(convert_command, [str(path), "--out", str(tmp_path / "o.safetensors")])
    assert result.exit_code == 1 and "plain CLIP, not Gamma" in result.output


def test_convert_missing_file_is_one_sentence(tmp_path):
    result = CliRunner().invoke(convert_command, [str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: weights file {tmp_path / 'nope.pth'} does not exist"
    assert isinstance(MixtureOfAssessmentExperts, type)

"""The Gamma network: initialisation, what trains, scenes, and the all-scenes property."""
import open_clip
import pytest
import torch
import torch.nn.functional as F

from contract.errors import UserError
from gamma_edge.model import Gamma, GammaConfig, MixtureOfAssessmentExperts
from gamma_edge.scenes import Scene, default_scenes, load_scene_file, merge_scenes


def _plain_backbone_and_gamma(seed=0):
    config = GammaConfig.from_name("gamma-tiny")
    torch.manual_seed(seed)
    plain = open_clip.CLIP(**config.backbone).eval()
    gamma = Gamma(config, backbone_state=plain.state_dict()).eval()
    return plain, gamma


def test_at_initialisation_features_equal_the_plain_backbone():
    plain, gamma = _plain_backbone_and_gamma()
    images = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        expected_image = plain.encode_image((images - gamma.mean) / gamma.std)
        tokens = open_clip.tokenize(gamma.prompts("aigc"))
        expected_text = plain.encode_text(tokens)
        # rtol: Gamma runs the towers' exact shortcuts (gamma_edge/towers.py), equal to a few float ulps
        torch.testing.assert_close(gamma.image_features(images), expected_image, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(gamma.text_features("aigc"), expected_text, atol=1e-6, rtol=1e-6)

        # The same comparison fails once MoAE contributes: the check above is not vacuous.
        for module in gamma.modules():
            if isinstance(module, MixtureOfAssessmentExperts):
                module.scale.fill_(1.0)
                module.adaptive_experts[0].c_fc.weight.mul_(1.5)
        assert (gamma.image_features(images) - expected_image).abs().max() > 1e-3


def test_adaptive_experts_start_as_copies_of_the_shared_expert():
    _, gamma = _plain_backbone_and_gamma()
    blocks = [m for m in gamma.modules() if isinstance(m, MixtureOfAssessmentExperts)]
    assert len(blocks) == 2 * gamma.config.moae_blocks  # vision and text towers
    for block in blocks:
        assert len(block.adaptive_experts) == gamma.config.num_experts
        assert block.scale.item() == 0.0
        shared = block.shared_expert.state_dict()
        for expert in block.adaptive_experts:
            for key, value in expert.state_dict().items():
                assert torch.equal(value, shared[key])
                assert value.data_ptr() != shared[key].data_ptr()  # copies, not aliases


def test_moae_sits_in_the_last_k_blocks_of_both_towers():
    _, gamma = _plain_backbone_and_gamma()
    k = gamma.config.moae_blocks
    for blocks in (gamma.clip.visual.transformer.resblocks, gamma.clip.transformer.resblocks):
        kinds = [isinstance(b.mlp, MixtureOfAssessmentExperts) for b in blocks]
        assert kinds == [False] * (len(blocks) - k) + [True] * k


def test_trainable_set_is_exactly_experts_gates_scales_adapter_levels():
    _, gamma = _plain_backbone_and_gamma()
    trainable = {n for n, p in gamma.named_parameters() if p.requires_grad}
    assert trainable == set(gamma.trainable_parameters())
    expected = set()
    for tower in ("clip.visual.transformer", "clip.transformer"):
        blocks = gamma.get_submodule(tower).resblocks
        for i in range(len(blocks) - gamma.config.moae_blocks, len(blocks)):
            prefix = f"{tower}.resblocks.{i}.mlp"
            for e in range(gamma.config.num_experts):
                for layer in ("c_fc", "c_proj"):
                    expected |= {f"{prefix}.adaptive_experts.{e}.{layer}.weight",
                                 f"{prefix}.adaptive_experts.{e}.{layer}.bias"}
            expected |= {f"{prefix}.gate.weight", f"{prefix}.gate.bias", f"{prefix}.scale"}
    expected |= {"head.adapter.0.weight", "head.adapter.2.weight", "head.levels"}
    assert trainable == expected


def test_head_levels_start_at_the_paper_values():
    _, gamma = _plain_backbone_and_gamma()
    assert gamma.head.levels.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_all_scenes_output_equals_per_scene_outputs(tiny_gamma):
    images = torch.rand(4, 3, 224, 224)
    with torch.no_grad():
        all_scenes = tiny_gamma.scores(images)
        assert all_scenes.shape == (4, len(tiny_gamma.scenes))
        for j, scene in enumerate(tiny_gamma.scenes):
            torch.testing.assert_close(all_scenes[:, j], tiny_gamma.score(images, scene), atol=1e-6, rtol=0)
        # scenes differ, so a wrong column order would be caught
        assert (all_scenes[:, 0] - all_scenes[:, 1]).abs().max() > 1e-5


def test_mixed_scene_batch_scores_each_image_with_its_own_scene(tiny_gamma):
    images = torch.rand(4, 3, 224, 224)
    scenes = ["natural", "face", "natural", "aesthetics"]
    with torch.no_grad():
        mixed = tiny_gamma.score(images, scenes)
        for i, scene in enumerate(scenes):
            torch.testing.assert_close(mixed[i], tiny_gamma.score(images[i:i + 1], scene)[0], atol=1e-6, rtol=0)


def test_text_tower_runs_once_per_distinct_scene(tiny_gamma, monkeypatch):
    calls = []
    original = tiny_gamma.text_features
    monkeypatch.setattr(tiny_gamma, "text_features", lambda s: calls.append(s) or original(s))
    with torch.no_grad():
        tiny_gamma.score(torch.rand(6, 3, 224, 224), ["natural", "aigc", "natural", "aigc", "natural", "face"])
    assert sorted(calls) == ["aigc", "face", "natural"]


def test_score_is_the_level_expectation_and_lies_between_the_levels(tiny_gamma):
    with torch.no_grad():
        scores = tiny_gamma.scores(torch.rand(5, 3, 224, 224))
    assert scores.min() >= 0.2 - 1e-6 and scores.max() <= 1.0 + 1e-6


def test_sdp_prompts_follow_the_paper_and_plain_uses_level_image():
    scenes = {s.name: s for s in default_scenes()}
    assert list(scenes) == ["natural", "aigc", "underwater", "face", "aesthetics"]
    assert scenes["natural"].prompts[0] == "natural bad-quality image"
    assert scenes["aigc"].prompts[4] == "AI-generated perfect-quality image"
    assert scenes["aesthetics"].prompts[2] == "natural fair-aesthetics image"
    config = GammaConfig.from_name("gamma-tiny")
    config.prompts = "plain"
    plain = Gamma(config)
    assert plain.prompts("face") == ["bad image", "poor image", "fair image", "good image", "perfect image"]


def test_unknown_scene_names_the_known_ones(tiny_gamma):
    with pytest.raises(UserError, match="unknown scene 'xray'.*natural, aigc, underwater, face, aesthetics"):
        tiny_gamma.score(torch.rand(1, 3, 224, 224), "xray")


def test_user_scene_file_adds_a_scene_without_code(tmp_path):
    path = tmp_path / "scenes.json"
    path.write_text('{"scenes": {"xray": {"template": "x-ray {level}-quality image"},'
                    ' "food": {"prompts": ["a","b","c","d","e"]}}}')
    scenes = merge_scenes(default_scenes(), load_scene_file(path))
    assert [s.name for s in scenes][-2:] == ["xray", "food"]
    model = Gamma(GammaConfig.from_name("gamma-tiny"), scenes=scenes).eval()
    assert model.prompts("xray")[3] == "x-ray good-quality image"
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        every = model.scores(images)
        assert every.shape == (2, 7)
        torch.testing.assert_close(every[:, 5], model.score(images, "xray"), atol=1e-6, rtol=0)
        assert (every[:, 5] - every[:, 0]).abs().max() > 1e-6       # its own prompts, not natural's


@pytest.mark.parametrize("text, message", [
    ('{"scenes": {"xray": {"prompts": ["a", "b"]}}}', "exactly 5"),
    ('{"scenes": {"xray": {"template": "no placeholder"}}}', "template"),
    ('{"nothing": 1}', "no 'scenes'"),
    ("{not json", "not valid JSON"),
])
def test_bad_scene_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_scene_file(path)


def test_head_matches_the_paper_formula(tiny_gamma):
    images = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        f = tiny_gamma.image_features(images)
        t = tiny_gamma.text_features("face")
        w1, w2 = tiny_gamma.head.adapter[0].weight, tiny_gamma.head.adapter[2].weight
        f = f + torch.relu(torch.relu(f @ w1.T) @ w2.T)
        f = f / f.norm(dim=-1, keepdim=True)
        t = t / t.norm(dim=-1, keepdim=True)
        p = F.softmax(tiny_gamma.clip.logit_scale.exp() * f @ t.T, dim=-1)
        expected = p @ tiny_gamma.head.levels
        torch.testing.assert_close(tiny_gamma.score(images, "face"), expected, atol=1e-6, rtol=0)


def test_unknown_config_name_lists_shipped_configs():
    with pytest.raises(UserError, match="gamma-tiny"):
        GammaConfig.from_name("gamma-huge")


def test_full_configuration_has_the_paper_size():
    config = GammaConfig.from_name("gamma-vit-b-16")
    assert config.backbone["vision_cfg"] == {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16}
    assert (config.moae_blocks, config.num_experts, config.embed_dim) == (6, 3, 512)
    assert isinstance(Scene("x", ("a",) * 5), Scene)


def test_moae_in_every_block_works():
    """K equal to the number of blocks (open_clip inspects the first block's MLP)."""
    config = GammaConfig.from_name("gamma-tiny")
    config.moae_blocks = 4
    model = Gamma(config).eval()
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        before = model.scores(images)
        # scale starts at 0: whatever the experts and gates hold, every block is its shared expert alone
        for name, p in model.named_parameters():
            if ".adaptive_experts." in name or ".gate." in name:
                p.add_(0.2 * torch.randn_like(p))
        torch.testing.assert_close(model.scores(images), before, atol=1e-6, rtol=0)
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.fill_(0.5)
        assert (model.scores(images) - before).abs().max() > 1e-6
    assert "clip.transformer.resblocks.0.mlp.c_fc.weight" not in model.state_dict()


def test_train_backbone_adds_the_vision_tower_only():
    model = Gamma(GammaConfig.from_name("gamma-tiny"))
    paper = set(model.trainable_parameters())
    model.set_trainable(backbone=True)
    extended = set(model.trainable_parameters())
    assert paper < extended
    assert all(name.startswith("clip.visual.") for name in extended - paper)
    assert "clip.visual.conv1.weight" in extended and "clip.token_embedding.weight" not in extended
    model.set_trainable()
    assert set(model.trainable_parameters()) == paper

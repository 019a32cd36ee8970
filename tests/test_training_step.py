"""The cheaper training step (gamma_edge/towers.py) computes what open_clip's towers compute:
the same loss and the same gradient for every trainable parameter, to 1e-5, on the same batch."""
import open_clip
import pytest
import torch

from gamma_edge.model import Gamma, GammaConfig
from tests.conftest import activate_moae

SCENES = ["natural", "aigc", "natural", "face", "aesthetics", "natural"]


def _model(moae_blocks=None, seed=0):
    config = GammaConfig.from_name("gamma-tiny")
    if moae_blocks is not None:
        config.moae_blocks = moae_blocks
    torch.manual_seed(seed)
    return activate_moae(Gamma(config), seed=seed, strength=0.2).train()


def _batch(count=len(SCENES), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, 224, 224, generator=g), torch.rand(count, generator=g)


def reference_loss(model, images, target, scenes):
    """The step as it was: open_clip's encode_image, and encode_text on the full 77-token context
    once per distinct scene."""
    distinct = list(dict.fromkeys(scenes))
    text = torch.stack([model.clip.encode_text(open_clip.tokenize(model.prompts(s), context_length=77))
                        for s in distinct])
    index = torch.tensor([distinct.index(s) for s in scenes])
    features = model.clip.encode_image((images - model.mean) / model.std)
    predicted = model.head.per_image(features, text[index], model.clip.logit_scale)
    return ((predicted - target) ** 2).mean()


def fast_loss(model, images, target, scenes):
    return ((model.score(images, scenes) - target) ** 2).mean()


def _loss_and_grads(model, loss_fn, images, target, scenes):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, images, target, scenes)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.trainable_parameters().items()}
    return float(loss.detach()), grads


def _assert_same(model, images, target, scenes=SCENES):
    loss_ref, grads_ref = _loss_and_grads(model, reference_loss, images, target, scenes)
    loss_new, grads_new = _loss_and_grads(model, fast_loss, images, target, scenes)
    assert loss_new == pytest.approx(loss_ref, abs=1e-5)
    assert grads_new.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_new[name], grads_ref[name], atol=1e-5, rtol=1e-5, msg=name)
    # every trainable parameter of both towers gets a gradient, and not a vacuous one
    assert any(".visual." in n and grads_ref[n].abs().max() > 1e-4 for n in grads_ref)
    assert any("clip.transformer." in n and grads_ref[n].abs().max() > 1e-4 for n in grads_ref)


def test_loss_and_gradients_equal_the_open_clip_step():
    model = _model()
    images, target = _batch()
    _assert_same(model, images, target)


def test_equal_again_from_the_kept_frozen_blocks_after_an_optimizer_step():
    """The second step reads the text tower's frozen blocks from the cache; trained weights moved."""
    model = _model()
    images, target = _batch()
    optimizer = torch.optim.Adam(list(model.trainable_parameters().values()), lr=1e-2)
    fast_loss(model, images, target, SCENES).backward()
    optimizer.step()
    assert model._text_tower._cache                     # the frozen blocks' output was kept
    _assert_same(model, *_batch(seed=2))


def test_one_scene_batch_and_moae_in_every_block():
    """K = all blocks: no frozen text block to keep; one scene per batch (the common case)."""
    model = _model(moae_blocks=4)
    images, target = _batch(4)
    _assert_same(model, images, target, ["natural"] * 4)


def test_trainable_text_blocks_are_not_cached():
    model = _model()
    for p in model.clip.transformer.resblocks[0].parameters():
        p.requires_grad_(True)
    images, target = _batch()
    _assert_same(model, images, target)
    assert not model._text_tower._cache


def test_changed_frozen_weights_rebuild_the_kept_blocks():
    """load_state_dict changes the frozen text blocks in place: the kept output must not be reused."""
    model = _model()
    with torch.no_grad():
        before = model.text_features("natural")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["clip.transformer.resblocks.0.mlp.c_fc.weight"].mul_(1.5)
        model.load_state_dict(state)
        after = model.text_features("natural")
        expected = model.clip.encode_text(open_clip.tokenize(model.prompts("natural")))
    assert (after - before).abs().max() > 1e-4
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_changed_frozen_vision_weights_are_not_read_from_the_kept_products():
    """A frozen c_proj's weight over 1.702 is kept (towers.py shortcut 5): load_state_dict changes it
    in place, and the features must follow."""
    model = _model()
    images = torch.rand(2, 3, 224, 224)
    plain = "clip.visual.transformer.resblocks.0.mlp.c_proj.weight"           # a frozen block's MLP
    shared = "clip.visual.transformer.resblocks.3.mlp.shared_expert.c_proj.weight"   # a MoAE's frozen expert
    with torch.no_grad():
        before = model.image_features(images)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state[plain].mul_(1.5)
        state[shared].mul_(0.5)
        model.load_state_dict(state)
        after = model.image_features(images)
        expected = model.clip.encode_image((images - model.mean) / model.std)
    assert (after - before).abs().max() > 1e-4
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_features_in_eval_mode_match_open_clip(tiny_gamma):
    images = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(tiny_gamma.image_features(images),
                                   tiny_gamma.clip.encode_image((images - tiny_gamma.mean) / tiny_gamma.std),
                                   atol=1e-5, rtol=1e-5)
        for scene in ("natural", "underwater"):
            tokens = open_clip.tokenize(tiny_gamma.prompts(scene))
            torch.testing.assert_close(tiny_gamma.text_features(scene), tiny_gamma.clip.encode_text(tokens),
                                       atol=1e-5, rtol=1e-5)


def test_text_features_made_under_inference_mode_do_not_break_the_next_training_step():
    model = _model()
    images, target = _batch(2)
    with torch.inference_mode():
        model.text_features("natural")                   # e.g. an evaluation between epochs
        model.image_features(images)                     # (frozen weights' products made in this mode)
    fast_loss(model, images, target, ["natural"] * 2).backward()


def test_fused_adam_updates_as_the_default_loop_does():
    from training.recipe import fused_adam_applies

    g = torch.Generator().manual_seed(0)
    start = [torch.randn(64, 32, generator=g), torch.randn(32, generator=g)]
    grads = [[torch.randn(p.shape, generator=g) * 1e-3 for p in start] for _ in range(5)]
    results = []
    for fused in (False, True):
        params = [p.clone().requires_grad_(True) for p in start]
        assert fused_adam_applies(params)
        optimizer = torch.optim.Adam(params, lr=1e-2, betas=(0.9, 0.999), fused=fused)
        for step in grads:
            for p, grad in zip(params, step):
                p.grad = grad.clone()
            optimizer.step()
        results.append(params)
    for loop, fused in zip(*results):
        torch.testing.assert_close(fused, loop, atol=1e-6, rtol=1e-6)

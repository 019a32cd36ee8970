import torch
import pytest


def activate_moae(model, seed: int = 0, strength: float = 0.05):
    """Move a freshly built Gamma away from its initialisation so MoAE and the head matter:
    nonzero scales, perturbed experts and gates (at init, MoAE equals the backbone)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.fill_(0.5)
            elif ".adaptive_experts." in name or ".gate." in name:
                p.add_(strength * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture
def tiny_gamma():
    from gamma_edge.model import Gamma, GammaConfig

    torch.manual_seed(0)
    return activate_moae(Gamma(GammaConfig.from_name("gamma-tiny"))).eval()


@pytest.fixture(autouse=True)
def state_folder(tmp_path_factory, monkeypatch):
    """Live runs keep their cameras' normals in the user's state folder by default: a test's own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    # and the engines' start-up cache (runtime/inference/engine_cache.py) in a test's own folder too
    monkeypatch.setenv("GAMMA_EDGE_CACHE_DIR", str(tmp_path_factory.mktemp("engine-cache")))

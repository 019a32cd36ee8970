"""gamma_edge/products.py: the training step's large CPU products on oneDNN (the default) or MKL give
F.linear's output and gradients, and the training step stays equal to open_clip's on either."""
import pytest
import torch
import torch.nn.functional as F

from contract.errors import UserError
from gamma_edge import products

pytestmark = pytest.mark.skipif(not products.onednn_available(), reason="this torch has no oneDNN linear")


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    monkeypatch.delenv(products.ENVIRONMENT, raising=False)
    products.forget()
    yield
    products.forget()


def _tensors(rows=products.MIN_ROWS + 44, inner=48, outer=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, rows // 2, inner, generator=g, requires_grad=True)
    weight = torch.randn(outer, inner, generator=g, requires_grad=True)
    bias = torch.randn(outer, generator=g, requires_grad=True)
    return x, weight, bias


def _output_and_grads(fn, x, weight, bias):
    for t in (x, weight, bias):
        t.grad = None
    out = fn(x, weight, bias)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return out.detach(), [t.grad.clone() for t in (x, weight, bias)]


@pytest.mark.parametrize("policy", ["", "mkl", "onednn"])
def test_linear_gives_f_linear_output_and_gradients(monkeypatch, policy):
    if policy:
        monkeypatch.setenv(products.ENVIRONMENT, policy)
    x, weight, bias = _tensors()
    out_ref, grads_ref = _output_and_grads(F.linear, x, weight, bias)
    out, grads = _output_and_grads(products.linear, x, weight, bias)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    for got, want, name in zip(grads, grads_ref, ("input", "weight", "bias")):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)
    picked = products.choices()
    if policy == "mkl":
        assert picked == {}                          # F.linear itself ran
    else:
        rows = x.shape[0] * x.shape[1]
        assert set(picked) == {f"forward {rows}x48->80", f"input gradient {rows}x80->48"}


def test_a_frozen_weight_gets_no_gradient_and_the_input_still_does():
    x, weight, bias = _tensors()
    weight.requires_grad_(False)
    bias.requires_grad_(False)
    out = products.linear(x, weight, bias)
    out.sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand_as(x), atol=1e-5, rtol=1e-5)
    assert weight.grad is None and bias.grad is None


def test_small_products_and_no_grad_products_need_no_autograd_node(monkeypatch):
    monkeypatch.setenv(products.ENVIRONMENT, "onednn")
    x, weight, bias = _tensors(rows=products.MIN_ROWS - 2)
    products.linear(x, weight, bias).sum().backward()
    assert products.choices() == {}                  # under MIN_ROWS rows: F.linear
    big, weight, bias = _tensors()
    with torch.no_grad():
        out = products.linear(big, weight, bias)
    assert out.grad_fn is None and list(products.choices().values()) == ["onednn"]
    torch.testing.assert_close(out, F.linear(big, weight, bias).detach(), atol=1e-5, rtol=1e-5)


def test_tracing_sees_f_linear(monkeypatch):
    monkeypatch.setenv(products.ENVIRONMENT, "onednn")
    x, weight, bias = (t.detach() for t in _tensors())
    traced = torch.jit.trace(lambda a: products.linear(a, weight, bias), (x,), check_trace=False)
    assert "mkldnn" not in str(traced.graph), str(traced.graph)
    assert products.choices() == {}


def test_an_unknown_library_is_one_sentence(monkeypatch):
    monkeypatch.setenv(products.ENVIRONMENT, "openblas")
    x, weight, bias = _tensors()
    with pytest.raises(UserError, match="GAMMA_EDGE_CPU_MATMUL='openblas' is not one of onednn, mkl"):
        products.linear(x, weight, bias)


@pytest.mark.parametrize("policy", ["onednn", "mkl"])
def test_the_training_step_equals_open_clips_on_either_library(monkeypatch, policy):
    from tests.test_training_step import _assert_same, _batch, _model

    monkeypatch.setenv(products.ENVIRONMENT, policy)
    model = _model()
    images, target = _batch()
    _assert_same(model, images, target)
    used = set(products.choices().values())
    assert used == ({"onednn"} if policy == "onednn" else set())   # the vision products ran on it

"""benchmarks/bench_training.py times equal computations: its "before issue 28" and "authors" steps
(the MoAE blocks as they were, open_clip's towers) give the loss and gradients of the step
training.train runs, and the MoAE module is left as it is afterwards."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_training as bt  # noqa: E402
from gamma_edge.model import MixtureOfAssessmentExperts  # noqa: E402
from tests.test_training_step import _batch, _model  # noqa: E402

SCENES = ["natural", "natural", "aigc", "natural"]


def _loss_and_grads(model, loss_fn, images, target):
    model.zero_grad(set_to_none=True)
    with bt.moae_as_before(loss_fn is not bt.loss_this_step):
        loss = loss_fn(model, images, target, SCENES)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.trainable_parameters().items()}


def test_the_steps_it_compares_compute_the_same_loss_and_gradients():
    model = _model()
    images, target = _batch(len(SCENES))
    current = MixtureOfAssessmentExperts.forward
    loss, grads = _loss_and_grads(model, bt.loss_this_step, images, target)
    for other in (bt.loss_before, bt.loss_authors):
        other_loss, other_grads = _loss_and_grads(model, other, images, target)
        assert abs(other_loss - loss) < 1e-5
        for name, grad in grads.items():
            torch.testing.assert_close(other_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)
    assert MixtureOfAssessmentExperts.forward is current


def test_the_before_step_runs_the_moae_blocks_as_they_were():
    model = _model()
    moae = next(m for m in model.modules() if isinstance(m, MixtureOfAssessmentExperts))
    calls = []
    moae.shared_expert.register_forward_hook(lambda *_: calls.append("open_clip mlp"))
    images, target = _batch(len(SCENES))
    bt.loss_this_step(model, images, target, SCENES)
    assert calls == []                    # this step computes the experts itself (SiLU, gamma_edge/towers.py)
    with bt.moae_as_before():
        bt.loss_before(model, images, target, SCENES)
    assert calls                          # the step before called open_clip's MLP modules


def test_bench_products_prints_both_libraries_for_every_product():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_products.py"
    done = subprocess.run([sys.executable, str(script), "--rows", "64", "--rounds", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "ms" not in line]
    if "no oneDNN linear" in done.stdout:
        return
    assert len(rows) == 12 and all(len(r.split("|")) == 6 for r in rows), done.stdout
    assert float(rows[0].split("|")[2]) > 0 and float(rows[0].split("|")[3]) > 0

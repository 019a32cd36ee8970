"""contract.degradations (the demo model's training recipe) and runtime.demo.heldout (its independent
held-out degradations and the bar a kind must clear before the card claims it)."""
import numpy as np
import pytest

from contract import degradations as distortions

from runtime.demo import heldout
from contract.degradations import RECIPE, distort, draw

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def photo():
    from training.synth import load_photo
    return load_photo("chelsea", 160)


def _mse(a, b):
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


@pytest.mark.parametrize("kind", RECIPE)
def test_each_level_is_further_from_the_photo_than_the_last(photo, kind):
    """Training and held-out degradations alike: pristine is best and the order of levels is
    unambiguous (mean over random nuisances, which vary how, not how much)."""
    train, held = [], []
    for level in range(1, 6):
        train.append(np.mean([_mse(photo, distort(photo, kind, level, seed=s, nuisance=draw(kind, np.random.default_rng(s))))
                              for s in range(4)]))
        held.append(np.mean([_mse(photo, heldout.degrade(photo, kind, level, np.random.default_rng([s, level]),
                                                                 np.random.default_rng(s)))
                             for s in range(4)]))
    for name, errors in (("training", train), ("held-out", held)):
        assert errors[0] > 1.0, (name, errors)
        assert all(b > a for a, b in zip(errors, errors[1:])), (name, errors)


def test_motion_blur_goes_any_way_and_the_default_is_horizontal(photo):
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[::8] = 255                                       # horizontal lines
    along = distort(stripes, "motion_blur", 3, nuisance={"angle": 0.0})
    across = distort(stripes, "motion_blur", 3, nuisance={"angle": 90.0})
    assert np.array_equal(distort(stripes, "motion_blur", 3), along)
    assert _mse(stripes, along) < 1.0 < _mse(stripes, across)        # blur along the lines leaves them
    kernel = distortions._line_kernel(9, 90.0)
    assert kernel.sum() == pytest.approx(1.0) and kernel[:, 4].sum() > 0.95


def test_exposure_methods_agree_on_mid_grey():
    grey = np.full((8, 8, 3), 128, np.uint8)
    for kind in ("underexposure", "overexposure"):
        values = {m: int(distort(grey, kind, 3, nuisance={"method": m})[0, 0, 0]) for m in distortions.EXPOSURE_METHODS}
        assert max(values.values()) - min(values.values()) <= 2, (kind, values)
        held = {int(heldout._exposure(grey, (-1 if kind == "underexposure" else 1) *
                                      distortions.parameter(kind, 3), m)[0, 0, 0]) for m in distortions.EXPOSURE_METHODS}
        assert max(held) - min(held) <= 2 and abs(min(held) - min(values.values())) <= 2


def test_draws_are_seeded_and_combined_never_mixes_under_and_overexposure():
    assert draw("motion_blur", np.random.default_rng(3)) == draw("motion_blur", np.random.default_rng(3))
    for seed in range(200):
        names = [name for name, _ in draw("combined", np.random.default_rng(seed))["parts"]]
        assert 2 <= len(names) <= 3 and not {"underexposure", "overexposure"} <= set(names)


def test_evaluate_reports_the_four_figures_and_claims_only_above_the_bar():
    photos = {"a": np.zeros((4, 4, 3), np.uint8), "b": np.zeros((4, 4, 3), np.uint8)}
    rows = [heldout.Item(p, "pristine", 0, 0, None) for p in photos]
    rows += [heldout.Item(p, k, lv, 0, None) for p in photos for k in ("good", "bad") for lv in (1, 2)]
    scores = {("a", "pristine"): 1.0, ("b", "pristine"): 0.9}
    values = []
    for r in rows:
        if r.level == 0:
            values.append(scores[r.photo, "pristine"])
        elif r.kind == "good":              # right order within and across photos
            values.append(0.8 - 0.3 * r.level - (0.05 if r.photo == "b" else 0))
        else:                               # level 2 above pristine on photo a
            values.append(1.2 if (r.photo, r.level) == ("a", 2) else 0.5)
    figures = heldout.evaluate(rows, values, ["good", "bad"])
    assert figures["good"] == {**figures["good"], "srcc": 1.0, "srcc_min": 1.0, "pairs": 1.0, "claimed": True}
    assert figures["good"]["pooled"] > 0.8
    bad = figures["bad"]
    assert bad["pairs"] == 0.75 and bad["srcc_min"] < 0 and bad["claimed"] is False
    assert bad["mean_by_level"][:3] == pytest.approx([0.95, 0.5, 0.85])

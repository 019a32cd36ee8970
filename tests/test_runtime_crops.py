"""The manifest's resize policy and the four crop protocols, exactly as docs/manifest.md says."""
import cv2
import numpy as np
import pytest

from contract.preprocess import Preprocess, crop_offsets, resize_for_crops
from contract.errors import UserError
from runtime_fixtures import textured_image


def test_shrink_long_side_with_area_then_keep():
    image = textured_image(600, 1000)
    got = resize_for_crops(image, 512, 224, 224)
    assert got.shape[:2] == (307, 512)            # 600 * 512 / 1000 = 307.2
    assert np.array_equal(got, cv2.resize(image, (512, 307), interpolation=cv2.INTER_AREA))


def test_enlarge_short_side_with_cubic():
    image = textured_image(150, 300)
    got = resize_for_crops(image, 512, 224, 224)
    assert got.shape[:2] == (224, 448)
    assert np.array_equal(got, cv2.resize(image, (448, 224), interpolation=cv2.INTER_CUBIC))


def test_shrink_then_enlarge_and_no_limits():
    image = textured_image(100, 1200)             # long side -> 512 gives 43 x 512, then short side -> 224
    got = resize_for_crops(image, 512, 224, 224)
    assert got.shape[:2] == (224, round(512 * 224 / 43))
    untouched = textured_image(300, 400)
    assert resize_for_crops(untouched, None, None, 224) is untouched
    assert resize_for_crops(untouched, 512, 224, 224) is untouched


def test_offsets_of_each_protocol():
    assert crop_offsets(300, 400, 224, "center") == [(38, 88)]
    assert crop_offsets(300, 400, 224, "five") == [(38, 88), (0, 0), (0, 176), (76, 0), (76, 176)]
    assert crop_offsets(300, 400, 224, "grid") == [
        (0, 0), (0, 88), (0, 176), (38, 0), (38, 88), (38, 176), (76, 0), (76, 88), (76, 176)]
    # odd spans: round() halves to even, as numpy does
    assert crop_offsets(225, 227, 224, "grid")[4] == (round(0.5), round(1.5)) == (0, 2)
    rng = np.random.default_rng(7)
    expected = [(int(rng.integers(0, 76, endpoint=True)), int(rng.integers(0, 176, endpoint=True))) for _ in range(10)]
    assert crop_offsets(300, 400, 224, "random10", seed=7) == expected
    assert crop_offsets(300, 400, 224, "random10", seed=7) == crop_offsets(300, 400, 224, "random10", seed=7)
    assert crop_offsets(300, 400, 224, "random10", seed=7) != crop_offsets(300, 400, 224, "random10", seed=8)
    assert crop_offsets(224, 224, 224, "random10") == [(0, 0)] * 10
    with pytest.raises(UserError, match="unknown"):
        crop_offsets(300, 400, 224, "six")


@pytest.mark.parametrize("protocol,count", [("center", 1), ("five", 5), ("grid", 9), ("random10", 10)])
def test_preprocess_cuts_the_pixels_at_the_offsets(protocol, count):
    image = textured_image(333, 444, seed=3)
    preprocess = Preprocess(224, 512, 224, protocol, seed=5)
    crops = preprocess(image)
    assert crops.shape == (count, 224, 224, 3) and crops.dtype == np.uint8 and crops.flags.c_contiguous
    assert preprocess.crops_per_image == count
    for crop, (y, x) in zip(crops, crop_offsets(333, 444, 224, protocol, seed=5)):
        assert np.array_equal(crop, image[y:y + 224, x:x + 224])

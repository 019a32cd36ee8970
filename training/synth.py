"""A synthetic quality dataset from real photographs that scikit-image ships.

Each photograph is distorted by several kinds (blur, noise, JPEG, contrast,
saturation, exposure, pixelation) at `levels` known strengths; the pristine
photograph is kept as level 0. The MOS is a known decreasing function of the
level, the same for every kind:

    mos = 1 - level / (levels + 1)            (pristine 1.0, strongest 1/(levels+1))

so within a photograph and a kind the quality order is exact. The distortions are
gamma_edge.distortions (torch-free), shared with the demo and INT8 calibration. The split holds a
group of photographs out entirely, so test images show scenes never seen in
training. Output, in the IQA-PyTorch meta-info layout the registry's
"synthetic" entry reads:

    OUT/meta_info.csv   image_name, mos, distortion, level, photo, split
    OUT/split.json      {"1": {"train": [row indices], "val": [], "test": [...]}}
    OUT/images/<photo>/<distortion>_<level>.png   (lossless; JPEG artefacts baked in)

Only image files inside the installed scikit-image package are read (never
skimage.data's downloadable images), so this works without internet.

    python -m training.synth --out DIR [--photos astronaut coffee ...] [--levels 5]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from gamma_edge.distortions import DISTORTIONS, distort, draw, mos_of
from gamma_edge.errors import GammaUserError

# Colour photographs shipped inside the scikit-image wheel (no download needed).
PHOTOS = {
    "astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
    "rocket": "rocket.jpg", "motorcycle": "motorcycle_left.png", "hubble": "hubble_deep_field.jpg",
    "ihc": "ihc.png", "retina": "retina.jpg",
}
# Greyscale photographs, usable with --photos (saturation loss does nothing to them).
GREY_PHOTOS = {"camera": "camera.png", "moon": "moon.png", "coins": "coins.png", "grass": "grass.png",
               "brick": "brick.png", "gravel": "gravel.png", "cell": "cell.png"}
# Photographs other installed packages ship (package, path inside it).
OTHER_PHOTOS = {"grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")}


def photo_path(name: str) -> Path:
    """Where an offline photograph lives: inside scikit-image, or another package named in OTHER_PHOTOS."""
    import importlib

    if name in OTHER_PHOTOS:
        package, inside = OTHER_PHOTOS[name]
        try:
            return Path(importlib.import_module(package).__file__).parent / inside
        except ImportError:
            raise GammaUserError(f"photo '{name}' ships with {package}, which is not installed "
                                 "(pip install -e '.[full]')") from None
    import skimage.data

    files = {**PHOTOS, **GREY_PHOTOS}
    if name not in files:
        raise GammaUserError(f"unknown photo '{name}'; shipped photos: {', '.join([*files, *OTHER_PHOTOS])}")
    return Path(skimage.data.__file__).parent / files[name]


def load_photo(name: str, short_side: int) -> np.ndarray:
    """A shipped photograph as RGB uint8, resized so its short side is `short_side`."""
    path = photo_path(name)
    if not path.is_file():
        raise GammaUserError(f"photo '{name}' ({path}) is not in the installed scikit-image package")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise GammaUserError(f"photo '{name}' ({path}) cannot be decoded")
    image = image[..., ::-1]
    h, w = image.shape[:2]
    factor = short_side / min(h, w)
    size = (round(w * factor), round(h * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=interpolation))


def make_synthetic_dataset(out: str | Path, photos=None, kinds=None, levels: int = 5, short_side: int = 256,
                           test_fraction: float = 0.25, seed: int = 0, variants: int = 0,
                           test_photos=None) -> dict:
    """Write the dataset to `out`; returns a summary (counts, test photos).

    variants 0: each (photo, kind, level) once with the kind's fixed defaults. variants N >= 1: N
    versions, each with its own random nuisance (gamma_edge.distortions.draw: the motion's angle,
    the exposure method, ...), and the pristine photo listed len(kinds) times so that it weighs in
    training like one level of one kind in N draws would not drown it. `test_photos` names the
    held-out photos instead of drawing them."""
    out = Path(out)
    photos = list(photos or PHOTOS)
    kinds = list(kinds or DISTORTIONS)
    unknown = [k for k in kinds if k not in DISTORTIONS]
    if unknown:
        raise GammaUserError(f"unknown distortion {unknown[0]}; known: {', '.join(DISTORTIONS)}")
    if levels < 1:
        raise GammaUserError("--levels must be at least 1")
    if len(set(photos)) < 2:
        raise GammaUserError("the synthetic set needs at least 2 photos (one for training, one for testing)")
    rng = np.random.default_rng(seed)
    if test_photos:
        test_photos = set(test_photos)
        if not test_photos <= set(photos):
            raise GammaUserError(f"--test-photos {', '.join(sorted(test_photos - set(photos)))} are not among --photos")
    else:
        n_test = min(len(photos) - 1, max(1, round(test_fraction * len(photos))))
        test_photos = set(rng.choice(sorted(set(photos)), size=n_test, replace=False).tolist())

    rows = []
    for p_index, photo in enumerate(photos):
        image = load_photo(photo, short_side)
        folder = out / "images" / photo
        folder.mkdir(parents=True, exist_ok=True)
        versions = [("pristine", 0, "", image)]
        for k_index, kind in enumerate(kinds):
            for level in range(1, levels + 1):
                noise_seed = seed * 1_000_003 + p_index * 1000 + k_index * 10 + level
                if not variants:
                    versions.append((kind, level, "", distort(image, kind, level, levels, noise_seed)))
                for v in range(variants):
                    nuisance = draw(kind, np.random.default_rng([seed, p_index, k_index, level, v]))
                    versions.append((kind, level, f"_{v}",
                                     distort(image, kind, level, levels, noise_seed * 31 + v, nuisance)))
        split = "test" if photo in test_photos else "train"
        for kind, level, suffix, version in versions:
            name = f"{photo}/{kind}_{level}{suffix}.png"
            ok, data = cv2.imencode(".png", version[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
            assert ok
            (out / "images" / name).write_bytes(data.tobytes())
            copies = len(kinds) if variants and level == 0 and split == "train" else 1
            rows += [[name, f"{mos_of(level, levels):.6f}", kind, level, photo, split]] * copies

    with open(out / "meta_info.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name", "mos", "distortion", "level", "photo", "split"])
        writer.writerows(rows)
    split = {"1": {"train": [i for i, r in enumerate(rows) if r[5] == "train"], "val": [],
                   "test": [i for i, r in enumerate(rows) if r[5] == "test"]}}
    (out / "split.json").write_text(json.dumps(split))
    return {"images": len(rows), "photos": photos, "test_photos": sorted(test_photos), "kinds": kinds,
            "levels": levels, "out": str(out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.synth",
        description="Write a synthetic quality dataset (shipped scikit-image photos distorted at known levels) "
                    "in the IQA-PyTorch meta-info layout; train on it with --datasets synthetic:DIR.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--photos", nargs="+", default=None,
                        help=f"photos to use (default: the colour ones: {' '.join(PHOTOS)}; "
                             f"also: {' '.join([*GREY_PHOTOS, *OTHER_PHOTOS])})")
    parser.add_argument("--kinds", nargs="+", default=None, help=f"distortions (default all: {' '.join(DISTORTIONS)})")
    parser.add_argument("--levels", type=int, default=5, help="strength levels per distortion (default 5)")
    parser.add_argument("--short-side", type=int, default=256, help="resize photos to this short side (default 256)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="fraction of photos held out (default 0.25)")
    parser.add_argument("--test-photos", nargs="+", default=None,
                        help="hold these photos out of training (default: --test-fraction of them, drawn by --seed)")
    parser.add_argument("--variants", type=int, default=0,
                        help="versions per photo, kind and level, each with a random nuisance (motion angle, "
                             "exposure method, noise channels, ...); 0 (default): one, with fixed defaults")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        summary = make_synthetic_dataset(args.out, args.photos, args.kinds, args.levels, args.short_side,
                                         args.test_fraction, args.seed, args.variants, args.test_photos)
    except GammaUserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {summary['images']} images of {len(summary['photos'])} photos x {len(summary['kinds'])} "
          f"distortions x {summary['levels']} levels (+ pristine) to {summary['out']}; "
          f"test photos (unseen in training): {', '.join(summary['test_photos'])}")
    print(f"train on it: python -m training.train --datasets synthetic:{summary['out']} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())

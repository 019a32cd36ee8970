"""A synthetic quality dataset from real photographs that scikit-image ships.

Each photograph is distorted by several kinds (blur, noise, JPEG, contrast,
saturation, exposure, pixelation) at `levels` known strengths; the pristine
photograph is kept as level 0. The MOS is a known decreasing function of the
level, the same for every kind:

    mos = 1 - level / (levels + 1)            (pristine 1.0, strongest 1/(levels+1))

so within a photograph and a kind the quality order is exact. The distortions are
contract.degradations (torch-free), shared with the demo and INT8 calibration. The split holds a
group of photographs out entirely, so test images show scenes never seen in
training. Output, in the IQA-PyTorch meta-info layout the registry's
"synthetic" entry reads:

    OUT/meta_info.csv   image_name, mos, distortion, level, photo, split
    OUT/split.json      {"1": {"train": [row indices], "val": [], "test": [...]}}
    OUT/images/<photo>/<distortion>_<level>.png   (lossless; JPEG artefacts baked in)

Only image files inside installed packages are read (never skimage.data's downloadable
images), so this works without internet; --photos-dir adds the builder's own photos.

    python -m training.synth --out DIR [--photos astronaut coffee ...] [--levels 5]
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from contract.degradations import DISTORTIONS, distort, draw, mos_of
from contract.errors import UserError

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
OTHER_PHOTOS = {"grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
                "china": ("sklearn", "datasets/images/china.jpg"),
                "flower": ("sklearn", "datasets/images/flower.jpg")}


def photo_path(name: str) -> Path:
    """Where an offline photograph lives: inside scikit-image, or another package named in OTHER_PHOTOS."""
    import importlib

    if name in OTHER_PHOTOS:
        package, inside = OTHER_PHOTOS[name]
        try:
            return Path(importlib.import_module(package).__file__).parent / inside
        except ImportError:
            raise UserError(f"photo '{name}' ships with {package}, which is not installed "
                                 "(pip install -e '.[full]')") from None
    import skimage.data

    files = {**PHOTOS, **GREY_PHOTOS}
    if name not in files:
        raise UserError(f"unknown photo '{name}'; shipped photos: {', '.join([*files, *OTHER_PHOTOS])}")
    return Path(skimage.data.__file__).parent / files[name]


LEAVES_PREFIX = "leaves-"
_VIEW = re.compile(r"(.+)-v[1-9][0-9]*")


def view_name(photo: str, view: int) -> str:
    """The scene name of random view number `view` (>= 1) of a training photo."""
    return f"{photo}-v{view}"


def leaves_name(index: int) -> str:
    """The scene name of dead-leaves scene number `index`."""
    return f"{LEAVES_PREFIX}{index}"


def scene_source(scene: str) -> str | None:
    """The photo a scene of the set was made from (a view's photo, a photo itself); None for a
    dead-leaves scene."""
    if re.fullmatch(re.escape(LEAVES_PREFIX) + r"[0-9]+", scene):
        return None
    view = _VIEW.fullmatch(scene)
    return view.group(1) if view else scene


def own_photos(folder: str | Path) -> tuple[dict[str, Path], list[str]]:
    """The builder's own photos: every readable image in `folder` (not its subfolders), named by its
    file stem, and one sentence per file that could not be read (skipped)."""
    from contract.errors import UserError
    from contract.images import IMAGE_SUFFIXES, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--photos-dir '{folder}' is not a folder")
    found, skipped = {}, []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            read_image(path)
        except UserError as exc:
            skipped.append(f"skipped: {exc}")
            continue
        if scene_source(path.stem) != path.stem:
            skipped.append(f"skipped '{path}': names like 'x-v2' and 'leaves-3' are the set's own views and "
                           "dead-leaves scenes; rename the file")
            continue
        if path.stem in found or path.stem in {*PHOTOS, *GREY_PHOTOS, *OTHER_PHOTOS}:
            skipped.append(f"skipped '{path}': another photo is already named '{path.stem}'; rename the file")
            continue
        found[path.stem] = path
    if not found:
        raise UserError(f"--photos-dir '{folder}' holds no readable image "
                             f"({', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...)")
    return found, skipped


def read_photo(name: str | Path) -> np.ndarray:
    """A shipped photograph (by name) or an image file (a Path) as RGB uint8 at its own size."""
    if isinstance(name, Path):
        from contract.images import read_image

        return np.ascontiguousarray(read_image(name)[..., ::-1])
    path = photo_path(name)
    if not path.is_file():
        raise UserError(f"photo '{name}' ({path}) is not in the installed scikit-image package")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"photo '{name}' ({path}) cannot be decoded")
    return np.ascontiguousarray(image[..., ::-1])


def fit_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """`image` resized so its short side is `short_side` (area filter down, cubic up)."""
    h, w = image.shape[:2]
    factor = short_side / min(h, w)
    size = (round(w * factor), round(h * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=interpolation))


def load_photo(name: str | Path, short_side: int) -> np.ndarray:
    """A shipped photograph (by name) or an image file (a Path) as RGB uint8, resized so its short side
    is `short_side`."""
    return fit_short_side(read_photo(name), short_side)


def random_view(photo: np.ndarray, short_side: int, rng: np.random.Generator) -> np.ndarray:
    """Another scene from one photograph: a random crop (never upscaled where the photo is large
    enough), turned by a multiple of 90 degrees, maybe mirrored, its hue turned by up to 20 degrees,
    saturation x0.7-1.3 and white balance x0.9-1.1 per channel. Sharpness, noise and exposure are
    left as the photo has them, so the view is as pristine as the photo."""
    h, w = photo.shape[:2]
    side = rng.uniform(min(1.0, short_side / min(h, w)), 1.0) * min(h, w)
    long = side * rng.uniform(1.0, 1.5)
    ch, cw = (side, long) if rng.random() < 0.5 else (long, side)
    ch, cw = round(min(h, ch)), round(min(w, cw))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    view = np.rot90(photo[y:y + ch, x:x + cw], k=int(rng.integers(4)))
    if rng.random() < 0.5:
        view = view[:, ::-1]
    view = fit_short_side(np.ascontiguousarray(view), short_side)
    if view[..., 0].tobytes() != view[..., 1].tobytes():       # colour photos only
        hsv = cv2.cvtColor(view, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-14, 14)) % 256          # 256 steps = 360 degrees
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
        view = cv2.cvtColor(hsv.round().astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)
        view = np.clip(view * rng.uniform(0.9, 1.1, size=3), 0, 255).round().astype(np.uint8)
    return view


def dead_leaves(shape: tuple[int, int], palette: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dead-leaves scene (occluding discs with radii drawn from p(r) ~ r^-3, the texture chart camera
    tests use, e.g. ISO 19567-2, for its natural-image statistics):
    colours drawn from `palette` (pixels of real photos), drawn at 2x and area-downscaled, so edges
    are anti-aliased and the scene is sharp and noise-free."""
    h, w = shape
    canvas = np.empty((2 * h, 2 * w, 3), np.uint8)
    canvas[:] = palette[rng.integers(len(palette))]
    r_min, r_max = 2.0, 2 * min(h, w) / 3
    u = rng.random(15000)                                    # ~3x the canvas covered
    radii = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5
    for radius in radii:                                     # later discs fall on top
        centre = (int(rng.integers(2 * w)), int(rng.integers(2 * h)))
        colour = tuple(int(c) for c in palette[rng.integers(len(palette))])
        cv2.circle(canvas, centre, int(round(radius)), colour, -1, lineType=cv2.LINE_AA)
    return np.ascontiguousarray(cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA))


def make_synthetic_dataset(out: str | Path, photos=None, kinds=None, levels: int = 5, short_side: int = 256,
                           test_fraction: float = 0.25, seed: int = 0, variants: int = 0,
                           test_photos=None, views: int = 1, leaves: int = 0, photos_dir=None) -> dict:
    """Write the dataset to `out`; returns a summary (counts, test photos).

    variants 0: each (photo, kind, level) once with the kind's fixed defaults. variants N >= 1: N
    versions, each with its own random nuisance (contract.degradations.draw: the motion's angle,
    the exposure method, ...), and the pristine photo listed len(kinds) times so that it weighs in
    training like one level of one kind in N draws would not drown it. `test_photos` names the
    held-out photos instead of drawing them. views N > 1: each training photo gives N scenes, itself and
    N - 1 random views (random_view: crop, turn, mirror, colour); leaves N: N dead-leaves scenes in
    the training split, coloured from the training photos. Test photos are used as they are.
    photos_dir: the builder's own photos (own_photos) join `photos` (only they, without `photos`)."""
    out = Path(out)
    own, skipped = own_photos(photos_dir) if photos_dir else ({}, [])
    photos = [*(photos or ([] if own else PHOTOS)), *own]
    kinds = list(kinds or DISTORTIONS)
    _check_options(photos, kinds, levels, views, leaves)
    test_photos = _held_out_photos(photos, test_photos, test_fraction, seed)
    scenes = _scenes(photos, own, test_photos, short_side, seed, views, leaves)
    rows = []
    for p_index, (photo, image, split) in enumerate(scenes):
        rows += _write_versions(out, photo, image, split, p_index, kinds, levels, variants, seed)
    _write_meta_info(out, rows)
    return {"images": len(rows), "photos": photos, "scenes": len(scenes), "skipped": skipped,
            "test_photos": sorted(test_photos), "kinds": kinds, "levels": levels, "out": str(out)}


def _check_options(photos: list, kinds: list, levels: int, views: int, leaves: int) -> None:
    unknown = [k for k in kinds if k not in DISTORTIONS]
    if unknown:
        raise UserError(f"unknown distortion {unknown[0]}; known: {', '.join(DISTORTIONS)}")
    if levels < 1:
        raise UserError("--levels must be at least 1")
    if views < 1 or leaves < 0:
        raise UserError("--views must be at least 1 and --leaves at least 0")
    if len(set(photos)) < 2:
        raise UserError("the synthetic set needs at least 2 photos (one for training, one for testing)")


def _held_out_photos(photos: list, test_photos, test_fraction: float, seed: int) -> set:
    """The photos of the test split: those named, or test_fraction of them drawn by `seed`."""
    rng = np.random.default_rng(seed)
    if test_photos:
        test_photos = set(test_photos)
        if not test_photos <= set(photos):
            raise UserError(f"--test-photos {', '.join(sorted(test_photos - set(photos)))} are not among --photos")
        return test_photos
    n_test = min(len(photos) - 1, max(1, round(test_fraction * len(photos))))
    return set(rng.choice(sorted(set(photos)), size=n_test, replace=False).tolist())


def _scenes(photos: list, own: dict, test_photos: set, short_side: int, seed: int, views: int,
            leaves: int) -> list[tuple[str, np.ndarray, str]]:
    """(name, pristine image, split) of every scene: each photo, the training photos' random views,
    then the dead-leaves scenes."""
    scenes = []
    for p_index, photo in enumerate(photos):
        split = "test" if photo in test_photos else "train"
        raw = read_photo(own.get(photo, photo))
        scenes.append((photo, fit_short_side(raw, short_side), split))
        if split == "train" and views > 1:
            scenes += [(view_name(photo, v), random_view(raw, short_side, np.random.default_rng([seed, p_index, v])),
                        split) for v in range(1, views)]
    if leaves:
        pixels = np.concatenate([image.reshape(-1, 3) for _, image, split in scenes if split == "train"])
        palette = pixels[np.random.default_rng([seed, 7]).integers(len(pixels), size=20000)]
        shape = (short_side, round(short_side * 4 / 3))
        scenes += [(leaves_name(i), dead_leaves(shape, palette, np.random.default_rng([seed, 8, i])), "train")
                   for i in range(leaves)]
    return scenes


def _write_versions(out: Path, photo: str, image: np.ndarray, split: str, p_index: int, kinds: list,
                    levels: int, variants: int, seed: int) -> list[list]:
    """Write one scene's pristine image and its distorted versions; their meta-info rows."""
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
    rows = []
    for kind, level, suffix, version in versions:
        name = f"{photo}/{kind}_{level}{suffix}.png"
        ok, data = cv2.imencode(".png", version[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
        assert ok
        (out / "images" / name).write_bytes(data.tobytes())
        # With variants, the pristine image is listed once per kind, weighing like one level of one kind.
        copies = len(kinds) if variants and level == 0 and split == "train" else 1
        rows += [[name, f"{mos_of(level, levels):.6f}", kind, level, photo, split]] * copies
    return rows


def _write_meta_info(out: Path, rows: list[list]) -> None:
    """OUT/meta_info.csv and OUT/split.json (split index "1"), from the rows' split column."""
    with open(out / "meta_info.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name", "mos", "distortion", "level", "photo", "split"])
        writer.writerows(rows)
    split = {"1": {"train": [i for i, r in enumerate(rows) if r[5] == "train"], "val": [],
                   "test": [i for i, r in enumerate(rows) if r[5] == "test"]}}
    (out / "split.json").write_text(json.dumps(split))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.synth",
        description="Write a synthetic quality dataset (shipped scikit-image photos distorted at known levels) "
                    "in the IQA-PyTorch meta-info layout; train on it with --datasets synthetic:DIR.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--photos", nargs="+", default=None,
                        help=f"photos to use (default: the colour ones: {' '.join(PHOTOS)}; "
                             f"also: {' '.join([*GREY_PHOTOS, *OTHER_PHOTOS])})")
    parser.add_argument("--photos-dir", default=None,
                        help="also use every image in this folder (your own photos, named by file stem; unreadable "
                             "ones are reported and skipped); without --photos, only these")
    parser.add_argument("--kinds", nargs="+", default=None, help=f"distortions (default all: {' '.join(DISTORTIONS)})")
    parser.add_argument("--levels", type=int, default=5, help="strength levels per distortion (default 5)")
    parser.add_argument("--short-side", type=int, default=256, help="resize photos to this short side (default 256)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="fraction of photos held out (default 0.25)")
    parser.add_argument("--test-photos", nargs="+", default=None,
                        help="hold these photos out of training (default: --test-fraction of them, drawn by --seed)")
    parser.add_argument("--variants", type=int, default=0,
                        help="versions per photo, kind and level, each with a random nuisance (motion angle, "
                             "exposure method, noise channels, ...); 0 (default): one, with fixed defaults")
    parser.add_argument("--views", type=int, default=1,
                        help="scenes per training photo: itself and N-1 random views (crop, 90-degree turn, mirror, "
                             "hue, saturation, white balance); default 1 (the photo only)")
    parser.add_argument("--leaves", type=int, default=0,
                        help="add N dead-leaves scenes (occluding discs, the camera-test texture chart) coloured "
                             "from the training photos, to the training split (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        summary = make_synthetic_dataset(args.out, args.photos, args.kinds, args.levels, args.short_side,
                                         args.test_fraction, args.seed, args.variants, args.test_photos,
                                         args.views, args.leaves, args.photos_dir)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    for line in summary["skipped"]:
        print(line, file=sys.stderr)
    print(f"wrote {summary['images']} images of {summary['scenes']} scenes ({len(summary['photos'])} photos) x "
          f"{len(summary['kinds'])} distortions x {summary['levels']} levels (+ pristine) to {summary['out']}; "
          f"test photos (unseen in training): {', '.join(summary['test_photos'])}")
    print(f"train on it: python -m training.train --datasets synthetic:{summary['out']} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())

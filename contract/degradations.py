"""Image distortions at known strengths: the ground truth of the synthetic quality set,
the demo, and INT8 calibration. numpy + OpenCV only (no torch), so the torch-free
demo uses exactly the distortions the demo model was trained on.

Images are RGB uint8 (the synthetic set's convention). Level 0 is pristine, 1 the
weakest and `levels` the strongest; parameters interpolate geometrically between
each kind's (weakest, strongest) values, and fractional levels are allowed (the
demo clip ramps through them).
"""
from __future__ import annotations

import cv2
import numpy as np

# Each kind: (weakest, strongest) parameter.
DISTORTIONS = {
    "gaussian_blur": (1.2, 6.0),      # sigma, pixels
    "motion_blur": (7, 31),           # kernel length, pixels (horizontal unless drawn)
    "gaussian_noise": (9.0, 60.0),    # standard deviation on 0..255
    "jpeg": (30, 3),                  # JPEG quality (lower is worse)
    "contrast": (0.6, 0.12),          # kept fraction of contrast around the mean grey (or a drawn pivot)
    "saturation": (0.6, 0.0),         # kept fraction of chroma
    "darken": (0.65, 0.12),           # brightness multiplier
    "brighten": (0.25, 0.85),         # fraction of the way to white
    "pixelate": (2.0, 12.0),          # down-and-up scaling factor
    # The demo model's recipe (RECIPE): each kind as users meet it, its nuisance drawn by `draw`.
    "shot_noise": (200.0, 8.0),       # photons at white (Poisson; fewer is noisier)
    "chroma_noise": (9.0, 45.0),      # standard deviation of blotchy colour noise on 0..255
    "underexposure": (0.9, 3.5),      # exposure stops below (gain, gamma or linear-light exposure)
    "overexposure": (0.7, 2.5),       # exposure stops above, clipped at white
    "downscale": (2.0, 8.0),          # shrink factor, then back up to the original size
    "combined": (1.0, 5.0),           # two or three of COMBINABLE, each at 0.8 x this level
}
# The kinds the demo model is trained on (scripts/build_demo_model.sh) and evaluated on.
RECIPE = ("gaussian_blur", "motion_blur", "gaussian_noise", "shot_noise", "chroma_noise", "underexposure",
          "overexposure", "jpeg", "contrast", "downscale", "combined")
# What "combined" mixes, in the order a camera pipeline applies them (optics, exposure, sensor, codec).
COMBINABLE = ("gaussian_blur", "motion_blur", "downscale", "underexposure", "overexposure", "gaussian_noise",
              "shot_noise", "chroma_noise", "contrast", "jpeg")
EXPOSURE_METHODS = ("gain", "gamma", "exposure")
# How the model card names each kind and its range ({0}: weakest, {1}: strongest parameter).
DESCRIBE = {
    "gaussian_blur": "gaussian (defocus) blur, sigma {0:g}-{1:g} px",
    "motion_blur": "straight motion blur at any angle, {0:g}-{1:g} px long",
    "gaussian_noise": "gaussian noise, per channel or luma only, std {0:g}-{1:g} of 255",
    "shot_noise": "shot (Poisson) noise, {0:g} down to {1:g} photons at white",
    "chroma_noise": "blotchy colour (chroma) noise, std {0:g}-{1:g} of 255",
    "underexposure": "underexposure by gain, gamma or linear exposure, {0:g}-{1:g} stops",
    "overexposure": "overexposure by gain, gamma or linear exposure with clipping, {0:g}-{1:g} stops",
    "jpeg": "JPEG compression, quality {0:g} down to {1:g}",
    "contrast": "contrast loss, {0:g} down to {1:g} of the contrast kept",
    "downscale": "downscale then upscale, {0:g}x-{1:g}x",
    "combined": "two or three of the above at once (each at 0.8 x the level)",
    "saturation": "saturation loss, {0:g} down to {1:g} of the chroma kept",
    "darken": "darkening by a gain of {0:g} down to {1:g}",
    "brighten": "brightening {0:g}-{1:g} of the way to white",
    "pixelate": "pixelation, {0:g}x-{1:g}x blocks",
}


def describe(kind: str) -> str:
    """The kind and its trained range in words (the model card's and the demo's)."""
    return DESCRIBE[kind].format(*DISTORTIONS[kind])


def mos_of(level: int, levels: int) -> float:
    """The synthetic set's MOS: pristine 1.0, falling linearly to 1/(levels+1) at the strongest level."""
    return 1.0 - level / (levels + 1)


def parameter(kind: str, level: float, levels: int = 5) -> float:
    if kind not in DISTORTIONS:
        raise ValueError(f"unknown distortion {kind}; known: {', '.join(DISTORTIONS)}")
    weakest, strongest = DISTORTIONS[kind]
    if levels == 1:
        return float(strongest)
    t = (level - 1) / (levels - 1)
    if weakest > 0 and strongest > 0:
        return float(weakest * (strongest / weakest) ** t)
    return float(weakest + (strongest - weakest) * t)


def combination(rng: np.random.Generator) -> list[str]:
    """Two or three kinds of COMBINABLE, in its order; never under- and overexposure together."""
    while True:
        count = 2 if rng.random() < 0.6 else 3
        names = [COMBINABLE[i] for i in sorted(rng.choice(len(COMBINABLE), size=count, replace=False))]
        if not {"underexposure", "overexposure"} <= set(names):
            return names


def draw(kind: str, rng: np.random.Generator) -> dict:
    """A random nuisance for `kind` (what varies in the wild besides the strength): the motion's angle,
    the exposure method, the noise's channels, the contrast pivot, the upscaling filter, the mix of a
    combination. Training draws one per image; `distort` without one uses the fixed defaults."""
    if kind == "motion_blur":
        return {"angle": float(rng.uniform(0.0, 180.0))}
    if kind in ("underexposure", "overexposure"):
        return {"method": str(rng.choice(EXPOSURE_METHODS))}
    if kind == "gaussian_noise":
        return {"luma_only": bool(rng.random() < 0.3)}
    if kind == "chroma_noise":
        return {"grain": float(rng.uniform(0.8, 2.5))}
    if kind == "contrast":
        return {"pivot": float(rng.uniform(64.0, 192.0)) if rng.random() < 0.5 else None}
    if kind == "downscale":
        return {"up": str(rng.choice(["linear", "cubic", "nearest"]))}
    if kind == "combined":
        names = combination(rng)
        return {"parts": [(name, draw(name, rng)) for name in names]}
    return {}


def distort(image: np.ndarray, kind: str, level: float, levels: int = 5, seed: int = 0,
            nuisance: dict | None = None) -> np.ndarray:
    """An RGB uint8 image distorted by `kind` at `level` (1 = weakest, `levels` = strongest);
    `nuisance` (from `draw`) varies how, not how much."""
    p = parameter(kind, level, levels)
    if kind == "combined":
        return _combined(image, level, levels, seed, nuisance or {})
    return _APPLY[kind](image, p, seed, nuisance or {})


def _combined(image: np.ndarray, level: float, levels: int, seed: int, nuisance: dict) -> np.ndarray:
    """Each part at 0.8 x the level, in the order drawn, each with a seed of its own."""
    parts = nuisance.get("parts") or [("gaussian_blur", {}), ("gaussian_noise", {}), ("jpeg", {})]
    out = image
    for i, (part, part_nuisance) in enumerate(parts):
        out = distort(out, part, 0.8 * level, levels, seed + 7919 * (i + 1), part_nuisance)
    return out


def _gaussian_noise(image: np.ndarray, p: float, seed: int, nuisance: dict) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = image.shape[:2] + (1,) if nuisance.get("luma_only") else image.shape
    return _to_uint8(image.astype(np.float32) + rng.normal(0.0, p, shape).astype(np.float32))


def _shot_noise(image: np.ndarray, p: float, seed: int, nuisance: dict) -> np.ndarray:
    photons = np.random.default_rng(seed).poisson(image.astype(np.float32) / 255.0 * p)
    return _to_uint8(photons.astype(np.float32) * (255.0 / p))


def _chroma_noise(image: np.ndarray, p: float, seed: int, nuisance: dict) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grain = nuisance.get("grain", 1.5)
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, image.shape[:2] + (2,)).astype(np.float32), (0, 0), grain)
    noise *= p / max(float(noise.std()), 1e-6)
    ycc = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2YCrCb)
    ycc[..., 1:] += noise
    return _to_uint8(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB))


def _rescaled(image: np.ndarray, p: float, interpolation: int) -> np.ndarray:
    """Shrunk by `p` (area filter), then back to its own size with `interpolation`."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / p)), max(1, round(h / p))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=interpolation)


_UPSCALING = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


def _jpeg(image: np.ndarray, p: float, seed: int, nuisance: dict) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(round(p))])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode an image")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def _contrast(image: np.ndarray, p: float, seed: int, nuisance: dict) -> np.ndarray:
    x = image.astype(np.float32)
    pivot = nuisance.get("pivot")
    pivot = x.mean() if pivot is None else pivot
    return _to_uint8(pivot + p * (x - pivot))


def _saturation(image: np.ndarray, p: float, seed: int, nuisance: dict) -> np.ndarray:
    x = image.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    return _to_uint8(grey[..., None] + p * (x - grey[..., None]))


def _brighten(image: np.ndarray, p: float, seed: int, nuisance: dict) -> np.ndarray:
    x = image.astype(np.float32)
    return _to_uint8(x + p * (255.0 - x))


# How each kind (but "combined", made of the others) is applied: (image, parameter, seed, nuisance) -> image.
_APPLY = {
    "gaussian_blur": lambda image, p, seed, nuisance: cv2.GaussianBlur(image, (0, 0), sigmaX=p,
                                                                       borderType=cv2.BORDER_REFLECT),
    "motion_blur": lambda image, p, seed, nuisance: cv2.filter2D(
        image, -1, _line_kernel(p, nuisance.get("angle", 0.0)), borderType=cv2.BORDER_REFLECT),
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "chroma_noise": _chroma_noise,
    "underexposure": lambda image, p, seed, nuisance: _expose(image.astype(np.float32), -p,
                                                              nuisance.get("method", "exposure")),
    "overexposure": lambda image, p, seed, nuisance: _expose(image.astype(np.float32), p,
                                                             nuisance.get("method", "exposure")),
    "downscale": lambda image, p, seed, nuisance: _rescaled(image, p, _UPSCALING[nuisance.get("up", "cubic")]),
    "jpeg": _jpeg,
    "contrast": _contrast,
    "saturation": _saturation,
    "darken": lambda image, p, seed, nuisance: _to_uint8(image.astype(np.float32) * p),
    "brighten": _brighten,
    "pixelate": lambda image, p, seed, nuisance: _rescaled(image, p, cv2.INTER_NEAREST),
}


def _line_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised straight-line blur kernel `length` pixels long at `angle` degrees (0 = horizontal)."""
    size = int(round(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2, :] = 1.0
    if angle % 180.0:
        rotation = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (size, size), flags=cv2.INTER_LINEAR)
    return kernel / kernel.sum()


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB code values 0..1 -> linear light (IEC 61966-2-1)."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def exposed_grey(stops: float) -> float:
    """Where mid-grey (0.5) lands after `stops` of exposure in linear light, clipped: every
    exposure method maps mid-grey to the same value, so the level means one thing."""
    return float(linear_to_srgb(srgb_to_linear(np.float64(0.5)) * 2.0 ** stops))


def _expose(x: np.ndarray, stops: float, method: str) -> np.ndarray:
    v = x / 255.0
    target = min(exposed_grey(stops), 0.995)
    if method == "gain":              # a digital gain on the code values, clipped
        out = v * (target / 0.5)
    elif method == "gamma":           # a tone curve through (0, 0), (0.5, target), (1, 1)
        out = v ** (np.log(target) / np.log(0.5))
    elif method == "exposure":        # the sensor's exposure: a gain in linear light, clipped
        out = linear_to_srgb(srgb_to_linear(v) * 2.0 ** stops)
    else:
        raise ValueError(f"unknown exposure method {method}; known: {', '.join(EXPOSURE_METHODS)}")
    return _to_uint8(np.asarray(out, np.float32) * 255.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)

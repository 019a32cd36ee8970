"""Decode any image a user hands over into 8-bit BGR, the way the model was trained.

EXIF orientation is applied, grayscale becomes BGR, transparent pixels are composited
on white, 16-bit samples keep their high byte (as cv2.imread(IMREAD_COLOR) does) and
CMYK JPEGs come out as BGR from OpenCV's decoder.

Memory is bounded before decoding: the header (read by Pillow, without decoding) gives
the size; an image above the pixel limit is refused (a decompression bomb declares
gigapixels in a few kilobytes), and a JPEG far larger than the model will look at is
decoded at 1/2, 1/4 or 1/8 scale by libjpeg (docs/manifest.md, "preprocess").
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np

from contract.errors import UserError

# Suffixes a folder walk picks up; a file named on the command line is tried whatever its name.
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".jp2", ".j2k", ".exr", ".hdr", ".pic",
    ".sr", ".ras", ".gif", ".avif",
})

# The largest image decoded, in pixels (150 MP: beyond the largest medium-format cameras). A decoded
# 150 MP image takes 450 MB; set GAMMA_EDGE_MAX_PIXELS (or --max-pixels) to move the limit.
DEFAULT_MAX_PIXELS = int(os.environ.get("GAMMA_EDGE_MAX_PIXELS", 150_000_000))
# A JPEG is decoded at 1/k scale (k = 2, 4, 8) only while its long side stays at least this many times the
# long side the preprocessing shrinks to, so the area resize that follows still averages >= 4x4 decoded
# pixels per output pixel. Measured on 12 photos of 3-12.8 kpx (demo model, five crops): scores within
# 1.3e-3 of a full decode with 4, up to 2.1e-2 with 2 (docs/manifest.md).
REDUCED_DECODE_MARGIN = 4
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image(image, name: str | None = None, shrink_to: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image given as a path, encoded bytes or a numpy array, as contiguous uint8 BGR HxWx3.
    A numpy array is taken to be in OpenCV's channel order (BGR / BGRA / gray). `shrink_to`: the long
    side the caller will shrink the image to (lets a large JPEG be decoded at reduced scale);
    `max_pixels`: refuse encoded images larger than this (None: no limit of ours)."""
    if isinstance(image, np.ndarray):
        return to_bgr8(image, name or "the array")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(image, name or "the image bytes", shrink_to, max_pixels)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if path.exists() and not path.is_file() and not path.is_dir():   # reading a pipe would wait forever
            raise UserError(f"'{path}' is not a regular file (a pipe, socket or device); pass image files")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"'{path}' does not exist (no such image file or folder); check the path") from None
        except IsADirectoryError:
            raise UserError(f"'{path}' is a folder, not an image; pass the image files in it") from None
        except OSError as exc:
            raise UserError(f"image '{path}' cannot be read ({exc.strerror}); check its permissions") from None
        return decode_image(data, name or str(path), shrink_to, max_pixels)
    raise TypeError(f"an image must be a path, bytes or a numpy array, not {type(image).__name__}")


def image_header(data) -> tuple[int, int, str, str] | None:
    """(width, height, format, mode) from the header, without decoding the pixels; None where Pillow
    cannot read the header (OpenCV may still decode the file), (0, 0, "bomb", "") for a size above
    Pillow's own bomb threshold (about 179 MP)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")               # Pillow's DecompressionBombWarning: we decide below
            with Image.open(io.BytesIO(data)) as header:
                return header.size[0], header.size[1], str(header.format), str(header.mode)
    except Image.DecompressionBombError:
        return 0, 0, "bomb", ""
    except Exception:  # Pillow raises many types for files it does not know; OpenCV has the last word
        return None


def decode_flags(header, shrink_to: int | None) -> int:
    """OpenCV's decode flags for this file. IMREAD_UNCHANGED keeps alpha and 16-bit samples, which
    IMREAD_COLOR would drop or truncate; but a CMYK TIFF under IMREAD_UNCHANGED comes out as four
    channels that would pass for BGRA, so CMYK files take IMREAD_COLOR (OpenCV converts them).
    None of these flags applies EXIF orientation here (done after decoding)."""
    scale = reduced_scale(header, shrink_to)
    if scale > 1:
        return _REDUCED_FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    if header and header[3] == "CMYK":
        return cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.IMREAD_UNCHANGED


def reduced_scale(header, shrink_to: int | None) -> int:
    """1, 2, 4 or 8: the scale a JPEG can be decoded at and stay REDUCED_DECODE_MARGIN x `shrink_to`."""
    if not header or not shrink_to or header[2] != "JPEG":
        return 1
    long_side = max(header[0], header[1])
    return max((k for k in (8, 4, 2) if long_side / k >= REDUCED_DECODE_MARGIN * shrink_to), default=1)


def check_pixels(header, name: str, max_pixels: int | None) -> None:
    if not header or not max_pixels:
        return
    width, height, kind, _ = header
    if kind == "bomb" or width * height > max_pixels:
        size = "more than 179 million" if kind == "bomb" else f"{width}x{height} = {width * height / 1e6:.0f} million"
        raise UserError(
            f"{name} declares {size} pixels, above the limit of {max_pixels / 1e6:.0f} million (a decompression "
            f"bomb or an extreme image); raise --max-pixels (or GAMMA_EDGE_MAX_PIXELS) to score it anyway")


def decode_image(data, name: str = "the image", shrink_to: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes as uint8 BGR, or UserError naming `name`."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise UserError(f"{name} is empty (0 bytes); replace it with a real image")
    header = image_header(data)
    check_pixels(header, name, max_pixels)
    try:
        image, kinds, chunks = cv2.imdecodeWithMetadata(buffer, decode_flags(header, shrink_to))
    except cv2.error:
        image, kinds, chunks = None, (), ()
    if image is None or image.size == 0:
        raise UserError(
            f"{name} is not an image OpenCV can decode (corrupt, truncated or an unsupported "
            f"format); replace it or convert it to JPEG or PNG")
    image = to_bgr8(image, name)
    for kind, chunk in zip(kinds, chunks):
        if kind == cv2.IMAGE_METADATA_EXIF:
            image = apply_orientation(image, exif_orientation(np.asarray(chunk).tobytes()))
            break
    return np.ascontiguousarray(image)


def to_bgr8(image: np.ndarray, name: str = "the image") -> np.ndarray:
    """Any OpenCV-style array (gray, gray+alpha, BGR, BGRA; 8/16-bit or float) as uint8 BGR."""
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)         # what IMREAD_COLOR does with 16-bit files
    elif image.dtype in (np.float16, np.float32, np.float64):  # EXR / HDR / float TIFF: [0, 1] is black..white
        image = np.clip(np.nan_to_num(image.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    else:
        raise UserError(
            f"{name} has {image.dtype} samples, which the runtime does not convert; save it as 8- or 16-bit")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (2, 3, 4) or min(image.shape[:2]) < 1:
        raise UserError(
            f"{name} has shape {image.shape}, not an image (expected HxW, HxWx3 or HxWx4)")
    if image.shape[2] == 3:
        return image
    if image.shape[2] == 2:                           # gray + alpha
        color, alpha = cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR), image[:, :, 1]
    else:
        color, alpha = image[:, :, :3], image[:, :, 3]
    return composite_on_white(color, alpha)


def composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Transparent pixels shown on a white page, as a viewer would show them."""
    weight = alpha.astype(np.float32)[:, :, None] * (1.0 / 255.0)
    blended = color.astype(np.float32) * weight + 255.0 * (1.0 - weight)
    return (blended + 0.5).astype(np.uint8)


def exif_orientation(exif: bytes) -> int:
    """The Orientation tag (0x0112) of an EXIF block (a TIFF structure, with or without the
    'Exif\\0\\0' prefix JPEG APP1 segments carry); 1 when absent or unreadable."""
    if exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if exif[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", exif, 4)
        (count,) = struct.unpack_from(order + "H", exif, ifd)
        for entry in range(count):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", exif, ifd + 2 + 12 * entry)
            if tag == 0x0112 and kind == 3:
                (orientation,) = struct.unpack_from(order + "H", value)
                return orientation if 1 <= orientation <= 8 else 1
    except struct.error:
        return 1
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn the stored pixels upright as EXIF orientation 1..8 asks (TIFF 6.0 / EXIF 2.3)."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.flip(image, 1), cv2.ROTATE_90_CLOCKWISE)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image

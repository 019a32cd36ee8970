"""A corpus of odd inputs, made at test time, through `gamma-edge score` as a user runs it: no
traceback, every good image scored, every bad one reported in one sentence, the rest unaffected."""
from __future__ import annotations

import io
import json
import os
import zlib
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from runtime_fixtures import make_model, textured_image

GOOD, BAD, SMALL = "good", "bad", "small"      # SMALL: scored, with a warning that the score means little


def _pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid gray PNG of width x height zeros: a few hundred kB declaring hundreds of megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, row, parts = zlib.compressobj(9), b"\x00" * (width + 1), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def build_corpus(root: Path) -> dict[str, str]:
    """name -> GOOD | BAD | SMALL, files written under root."""
    rgb = textured_image(300, 400, seed=1)[:, :, ::-1].copy()      # RGB for Pillow
    pil = Image.fromarray(rgb)
    jpeg = _pil_bytes(pil, "JPEG", quality=90)
    png = _pil_bytes(pil, "PNG")
    files: dict[str, tuple[bytes, str]] = {
        "plain.jpg": (jpeg, GOOD), "plain.png": (png, GOOD),
        "png_named.jpg": (png, GOOD), "jpeg_named.png": (jpeg, GOOD), "jpeg_named.webp": (jpeg, GOOD),
        "progressive.jpg": (_pil_bytes(pil, "JPEG", progressive=True), GOOD),
        "gray.jpg": (_pil_bytes(pil.convert("L"), "JPEG"), GOOD),
        "cmyk.jpg": (_pil_bytes(pil.convert("CMYK"), "JPEG"), GOOD),
        "cmyk.tif": (_pil_bytes(pil.convert("CMYK"), "TIFF"), GOOD),
        "palette.png": (_pil_bytes(pil.convert("P"), "PNG"), GOOD),
        "one_bit.png": (_pil_bytes(pil.convert("1"), "PNG"), GOOD),
        "gray_alpha.png": (_pil_bytes(pil.convert("LA"), "PNG"), GOOD),
        "rgba.png": (_pil_bytes(pil.convert("RGBA"), "PNG"), GOOD),
        "rgba.webp": (_pil_bytes(pil.convert("RGBA"), "WEBP"), GOOD),
        "plain.bmp": (_pil_bytes(pil, "BMP"), GOOD), "plain.tif": (_pil_bytes(pil, "TIFF"), GOOD),
        "plain.ppm": (_pil_bytes(pil, "PPM"), GOOD),
        "static.gif": (_pil_bytes(pil.convert("P"), "GIF"), GOOD),
        "animated.gif": (_pil_bytes(pil.convert("P"), "GIF", save_all=True,
                                    append_images=[pil.rotate(90).convert("P")] * 2, duration=100, loop=0), GOOD),
        "sixteen_bit.png": (cv2.imencode(".png", (textured_image(300, 400, 2).astype(np.uint16) * 257))[1].tobytes(),
                            GOOD),
        "sixteen_bit.tif": (cv2.imencode(".tif", (textured_image(300, 400, 3).astype(np.uint16) * 257))[1].tobytes(),
                            GOOD),
        "sixteen_bit_alpha.png": (cv2.imencode(".png", np.dstack([textured_image(300, 400, 4).astype(np.uint16) * 257,
                                                                  np.full((300, 400), 40000, np.uint16)]))[1].tobytes(),
                                  GOOD),
        "float.tif": (cv2.imencode(".tif", textured_image(300, 400, 5).astype(np.float32) / 255)[1].tobytes(), GOOD),
        "big.jpg": (cv2.imencode(".jpg", cv2.resize(textured_image(300, 400, 6), (4400, 3300)))[1].tobytes(), GOOD),
        "tall_thin.png": (cv2.imencode(".png", textured_image(2000, 40, 7))[1].tobytes(), SMALL),
        "one_by_one.png": (cv2.imencode(".png", np.full((1, 1, 3), 128, np.uint8))[1].tobytes(), SMALL),
        "one_by_one.jpg": (cv2.imencode(".jpg", np.full((1, 1, 3), 128, np.uint8))[1].tobytes(), SMALL),
        "small.png": (cv2.imencode(".png", textured_image(100, 150, 8))[1].tobytes(), SMALL),
        "empty.jpg": (b"", BAD), "text.jpg": (b"this is a text file named like a photo\n", BAD),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], BAD),             # OpenCV 5 refuses a JPEG without its end
        "header_only.jpg": (jpeg[:200], BAD), "truncated.png": (png[: len(png) // 2], BAD),
        "random.png": (os.urandom(3000), BAD), "zeros.jpg": (b"\x00" * 5000, BAD),
        "pdf.jpg": (b"%PDF-1.4\n" + b"x" * 500, BAD),
        "bomb.png": (_bomb_png(16000, 12000), BAD),                 # 192 MP declared, above the 150 MP limit
        "empty.mp4": (b"", BAD), "truncated.mp4": (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, BAD),
    }
    for orientation in range(1, 9):
        files[f"exif_{orientation}.jpg"] = (_pil_bytes(pil, "JPEG", quality=95, exif=_exif(orientation)), GOOD)
    files["exif_9_invalid.jpg"] = (_pil_bytes(pil, "JPEG", exif=_exif(9)), GOOD)
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    (root / "folder.jpg").mkdir()                                    # a folder named like an image: walked
    (root / "folder.jpg" / "inside.png").write_bytes(png)
    (root / "broken_link.jpg").symlink_to(root / "no-such-target.jpg")
    os.mkfifo(root / "pipe.jpg")                                     # reading it would wait forever
    kinds = {name: kind for name, (_, kind) in files.items()}
    kinds.update({"folder.jpg/inside.png": GOOD, "broken_link.jpg": BAD, "pipe.jpg": BAD})
    return kinds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    return root, build_corpus(root)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m"))


def test_corpus_has_at_least_40_odd_inputs(corpus):
    assert len(corpus[1]) >= 40


def test_every_odd_input_scored_or_reported_in_one_sentence(corpus, model):
    from gamma_edge.cli import main

    root, kinds = corpus
    named = [root / name for name in kinds]                     # every file named, as a user's glob would
    result = CliRunner().invoke(main, ["score", *map(str, named), "--model", str(model), "--format", "jsonl", "-q"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == 1                                    # some images failed: documented status
    rows = {str(Path(r["path"]).relative_to(root)): r for r in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == set(kinds)
    for name, kind in kinds.items():
        row = rows[name]
        if kind == BAD:
            assert row["score"] is None and row["error"], name
            assert "\n" not in row["error"] and len(row["error"]) < 300, name
        else:
            assert row["error"] is None and 0 < row["score"] < 1, (name, row["error"])
            assert ("warning" in row) == (kind == SMALL), (name, row.get("warning"))
    assert "above the limit of 150 million" in rows["bomb.png"]["error"]
    assert "not a regular file" in rows["pipe.jpg"]["error"]
    assert "enlarged 224.0x" in rows["one_by_one.png"]["warning"]


def test_exif_orientations_turn_the_picture_upright(corpus):
    """Orientation n stores the pixels so that the viewer's transform n shows the picture upright."""
    from contract.images import apply_orientation, read_image

    root, _ = corpus
    upright = read_image(root / "exif_1.jpg")
    for orientation in range(2, 9):
        stored = cv2.imdecode(np.frombuffer((root / f"exif_{orientation}.jpg").read_bytes(), np.uint8),
                              cv2.IMREAD_UNCHANGED)
        expected = apply_orientation(stored, orientation)
        got = read_image(root / f"exif_{orientation}.jpg")
        assert got.shape == expected.shape and np.array_equal(got, expected)
        assert got.shape[:2] == ((400, 300) if orientation >= 5 else (300, 400))
    assert read_image(root / "exif_9_invalid.jpg").shape == upright.shape


def test_large_jpeg_decodes_reduced_and_oriented(tmp_path):
    """The reduced decode keeps EXIF orientation and scores as the full decode does (within 1.3e-3)."""
    from runtime import Scorer
    from contract.images import read_image, reduced_scale, image_header

    photo = cv2.resize(textured_image(300, 400, seed=9), (8400, 6300), interpolation=cv2.INTER_CUBIC)
    data = _pil_bytes(Image.fromarray(photo[:, :, ::-1]), "JPEG", quality=92, exif=_exif(6))
    assert reduced_scale(image_header(data), 512) == 4
    reduced = read_image(data, shrink_to=512)
    full = read_image(data, shrink_to=None)
    assert full.shape == (8400, 6300, 3) and reduced.shape == (2100, 1575, 3)       # upright, 1/4 scale
    scorer = Scorer(make_model(tmp_path / "m"))
    a = scorer.backend.run(scorer.preprocess(full)).mean()
    b = scorer.backend.run(scorer.preprocess(reduced)).mean()
    assert abs(a - b) < 1.3e-3


def test_pixel_limit_is_configurable(tmp_path):
    from runtime import Scorer
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), textured_image(300, 400, seed=0))
    model = make_model(tmp_path / "m")
    [row] = Scorer(model, max_pixels=100_000).score_many([image])
    assert "400x300 = 0 million pixels, above the limit of 0 million" in row.error
    [row] = Scorer(model, max_pixels=None).score_many([image])
    assert row.ok


def test_cmyk_and_sixteen_bit_alpha_decode_to_the_right_colours(corpus):
    """A CMYK TIFF has four channels that would pass for BGRA; it must come out as the colours
    Pillow's own CMYK -> RGB conversion gives, not composited on white by its K channel."""
    from contract.images import read_image

    root, _ = corpus
    expected = np.asarray(Image.open(root / "cmyk.tif").convert("RGB"))[:, :, ::-1]
    got = read_image(root / "cmyk.tif")
    assert np.abs(got.astype(int) - expected).max() <= 1
    half_transparent = read_image(root / "sixteen_bit_alpha.png")          # alpha 40000/65535 = 0.61
    color = textured_image(300, 400, 4).astype(np.float32)
    assert np.abs(half_transparent - (color * (40000 >> 8) / 255 + 255 * (1 - (40000 >> 8) / 255))).max() <= 1

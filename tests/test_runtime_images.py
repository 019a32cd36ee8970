"""Decoding: every odd image kind becomes the 8-bit BGR image the model expects."""
import io
import struct

import cv2
import numpy as np
import pytest

from contract.errors import UserError
from contract.images import decode_image, exif_orientation, read_image, to_bgr8
from runtime_fixtures import textured_image


def exif_block(orientation: int, big_endian: bool = False) -> bytes:
    order = ">" if big_endian else "<"
    head = b"MM\x00*" if big_endian else b"II*\x00"
    return (head + struct.pack(order + "I", 8) + struct.pack(order + "H", 1)
            + struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(order + "I", 0))


def encode(ext, image, exif=None) -> bytes:
    if exif is None:
        ok, buffer = cv2.imencode(ext, image)
    else:
        ok, buffer = cv2.imencodeWithMetadata(ext, image, [cv2.IMAGE_METADATA_EXIF], [np.frombuffer(exif, np.uint8)])
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv_imread_color(ext, orientation):
    # OpenCV's IMREAD_COLOR applies EXIF orientation; our decoder keeps alpha / 16-bit and must agree.
    image = cv2.resize(textured_image(4, 6, seed=orientation), (60, 40), interpolation=cv2.INTER_NEAREST)
    for big_endian in (False, True):
        data = encode(ext, image, exif_block(orientation, big_endian))
        expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        got = decode_image(data)
        assert got.shape == expected.shape
        assert np.array_equal(got, expected)
    if orientation in (5, 6, 7, 8):
        assert got.shape[:2] == (60, 40)


def test_exif_orientation_parser_handles_prefix_and_garbage():
    assert exif_orientation(b"Exif\x00\x00" + exif_block(6)) == 6
    assert exif_orientation(b"") == 1
    assert exif_orientation(b"II*\x00\xff\xff\xff\xff") == 1


def test_grayscale_becomes_bgr():
    gray = textured_image(50, 70)[:, :, 0]
    got = decode_image(encode(".png", gray))
    assert got.shape == (50, 70, 3) and got.dtype == np.uint8
    assert all(np.array_equal(got[:, :, c], gray) for c in range(3))


def test_16bit_color_and_gray_keep_the_high_byte():
    color16 = (textured_image(30, 40).astype(np.uint16) * 257 + np.uint16(100))
    got = decode_image(encode(".png", color16))
    assert got.dtype == np.uint8 and np.array_equal(got, (color16 >> 8).astype(np.uint8))
    assert np.array_equal(got, cv2.imdecode(np.frombuffer(encode(".png", color16), np.uint8), cv2.IMREAD_COLOR))
    gray16 = color16[:, :, 1]
    got = decode_image(encode(".png", gray16))
    assert got.shape == (30, 40, 3) and np.array_equal(got[:, :, 2], (gray16 >> 8).astype(np.uint8))


def test_alpha_is_composited_on_white():
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[:, :, :3] = (10, 20, 30)
    bgra[:, :10, 3] = 255      # opaque
    bgra[:, 10:20, 3] = 0      # transparent -> white
    bgra[:, 20:, 3] = 128      # half
    got = decode_image(encode(".png", bgra))
    assert got.shape == (20, 30, 3)
    assert (got[:, :10] == (10, 20, 30)).all()
    assert (got[:, 10:20] == 255).all()
    half = np.round(np.array([10, 20, 30]) * 128 / 255 + 255 * (1 - 128 / 255))
    assert np.abs(got[:, 20:].astype(int) - half).max() <= 1
    # IMREAD_COLOR would have shown the hidden colour under the transparent pixels instead
    assert not np.array_equal(got, cv2.imdecode(np.frombuffer(encode(".png", bgra), np.uint8), cv2.IMREAD_COLOR))


def test_gray_alpha_and_palette_transparency():
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.stack([np.full((8, 8), 40, np.uint8), np.zeros((8, 8), np.uint8)], -1), "LA").save(buffer, "PNG")
    assert (decode_image(buffer.getvalue()) == 255).all()
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putpixel((0, 0), 1)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", transparency=0)
    got = decode_image(buffer.getvalue())
    assert tuple(got[0, 0]) == (50, 100, 200) and (got[1:, 1:] == 255).all()


def test_cmyk_jpeg_becomes_bgr():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(buffer, "JPEG", quality=95)   # pure red
    got = decode_image(buffer.getvalue())
    assert got.shape == (24, 32, 3)
    blue, green, red = got.reshape(-1, 3).mean(axis=0)
    assert red > 240 and blue < 15 and green < 15


def test_paths_bytes_and_arrays_agree(tmp_path):
    image = textured_image(40, 50)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), image)
    assert np.array_equal(read_image(path), image)
    assert np.array_equal(read_image(str(path)), image)
    assert np.array_equal(read_image(path.read_bytes()), image)
    assert np.array_equal(read_image(image), image)
    assert np.array_equal(read_image(np.dstack([image, np.full((40, 50), 255, np.uint8)])), image)
    assert read_image(np.ones((5, 6), np.float32)).max() == 255


@pytest.mark.parametrize("content,expected", [
    (b"", "is empty (0 bytes)"),
    (b"this is plain text, not a JPEG", "not an image OpenCV can decode"),
    (bytes(range(256)) * 4, "not an image OpenCV can decode"),
])
def test_bad_files_end_in_one_sentence(tmp_path, content, expected):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        read_image(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(UserError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(UserError, match="shape"):
        to_bgr8(np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(TypeError):
        read_image(42)

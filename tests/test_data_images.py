"""open_image / resize_shorter_side on generated images: formats, modes, damage, limits."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinlesion.data.images import ImageError, open_image, resize_shorter_side


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise(size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# === Formats ===


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF"])
def test_formats_decode_to_rgb(fmt: str) -> None:
    img = open_image(_encode(_noise(), fmt), name=f"x.{fmt.lower()}")
    assert img.mode == "RGB"
    assert img.size == (40, 30)


def test_path_and_bytes_agree(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    _noise().save(path)
    a = np.asarray(open_image(path))
    b = np.asarray(open_image(path.read_bytes()))
    assert np.array_equal(a, b)
    assert np.array_equal(a, np.asarray(_noise()))  # PNG is lossless


def test_format_sniffed_from_bytes_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(_encode(_noise(), "PNG"))
    assert open_image(path).size == (40, 30)
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image\n")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        open_image(fake)


# === Modes ===


def test_grayscale_8bit() -> None:
    g = Image.fromarray(np.full((10, 12), 77, dtype=np.uint8))
    out = np.asarray(open_image(_encode(g, "PNG")))
    assert out.shape == (10, 12, 3)
    assert (out == 77).all()


def test_grayscale_16bit_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    g = Image.fromarray(arr)
    assert g.mode.startswith("I;16")
    out = np.asarray(open_image(_encode(g, "PNG")))
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_int32_and_float_grayscale() -> None:
    i32 = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32))
    assert np.asarray(open_image(_encode(i32, "TIFF")))[0, :, 0].tolist() == [0, 4, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(open_image(_encode(f, "TIFF")))[0, :, 0].tolist() == [0, 128, 255]


def test_rgba_composited_on_white() -> None:
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 200  # red channel
    arr[:2, :, 3] = 255  # top half opaque, bottom half transparent
    out = np.asarray(open_image(_encode(Image.fromarray(arr, "RGBA"), "PNG")))
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[3, 0].tolist() == [255, 255, 255]


def test_la_and_palette_transparency_on_white() -> None:
    la = Image.fromarray(np.stack([np.full((3, 3), 10, np.uint8),
                                   np.zeros((3, 3), np.uint8)], axis=-1), "LA")
    assert np.asarray(open_image(_encode(la, "PNG")))[0, 0].tolist() == [255, 255, 255]
    p = Image.new("P", (3, 3), 1)
    p.putpalette([0, 0, 0, 50, 60, 70] + [0] * 762)
    p.info["transparency"] = 1
    assert np.asarray(open_image(_encode(p, "PNG", transparency=1)))[0, 0].tolist() == [255] * 3
    p_opaque = Image.new("P", (3, 3), 1)
    p_opaque.putpalette([0, 0, 0, 50, 60, 70] + [0] * 762)
    assert np.asarray(open_image(_encode(p_opaque, "PNG")))[0, 0].tolist() == [50, 60, 70]


def test_cmyk_jpeg_to_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(open_image(_encode(cmyk, "JPEG", quality=95)))
    r, g, b = out[8, 8].tolist()
    assert r > 200 and g < 60 and b < 60


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = np.asarray(open_image(data))
    assert out[0, 0].tolist() == [255, 0, 0]


def test_animated_webp_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 255, 0), (0, 0, 255))]
    data = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    out = np.asarray(open_image(data))
    assert out[0, 0].tolist() == [0, 255, 0]


def test_exif_orientation_applied() -> None:
    img = _noise((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    out = open_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


# === Draft (reduced-DCT) decoding ===


def test_draft_keeps_shorter_side_at_least_target() -> None:
    data = _encode(_noise((1000, 700)), "JPEG")
    full = open_image(data)
    small = open_image(data, draft_size=128)
    assert full.size == (1000, 700)
    assert min(small.size) >= 128
    assert small.size == (250, 175)  # scale 1/4: 700 // 128 = 5 → 4
    assert small.mode == "RGB"


def test_draft_ignored_for_png() -> None:
    assert open_image(_encode(_noise((300, 200)), "PNG"), draft_size=50).size == (300, 200)


def test_draft_grayscale_jpeg_still_rgb() -> None:
    g = Image.fromarray(np.full((400, 400), 90, dtype=np.uint8))
    out = open_image(_encode(g, "JPEG"), draft_size=64)
    assert out.mode == "RGB" and min(out.size) >= 64


# === Bad input ===


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file"):
        open_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="upload: empty"):
        open_image(b"", name="upload")


def test_truncated_jpeg_and_png() -> None:
    for fmt in ("JPEG", "PNG"):
        data = _encode(_noise((200, 200)), fmt)
        with pytest.raises(ImageError, match="corrupt or truncated") as info:
            open_image(data[: len(data) // 2], name=f"half.{fmt}")
        assert info.value.name == f"half.{fmt}"


def test_garbage_after_valid_header() -> None:
    data = bytearray(_encode(_noise((100, 100)), "PNG"))
    data[60:] = bytes(len(data) - 60)  # zero the pixel data (bad CRC/zlib)
    with pytest.raises(ImageError):
        open_image(bytes(data))


def test_decompression_bomb_refused_before_decoding() -> None:
    # A 1-bit PNG header claiming 20,000 × 20,000 = 400 MP is tiny on disk.
    data = _encode(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(ImageError, match="too large"):
        open_image(data, name="bomb.png")
    with pytest.raises(ImageError, match="exceeds the limit of 1,000"):
        open_image(_encode(_noise((40, 30)), "PNG"), max_pixels=1000)


def test_missing_directory_and_symlink_loop(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        open_image(tmp_path)
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    with pytest.raises(ImageError, match="symlink loop"):
        open_image(loop)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root ignores file permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.jpg"
    path.write_bytes(_encode(_noise(), "JPEG"))
    path.chmod(0)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            open_image(path)
    finally:
        path.chmod(0o644)


def test_permission_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores chmod, so also simulate the OS refusing the read.
    path = tmp_path / "locked.jpg"
    path.write_bytes(_encode(_noise(), "JPEG"))

    real = Path.open

    def _deny(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", _deny)
    with pytest.raises(ImageError, match=r"locked\.jpg: permission denied"):
        open_image(path)


def test_unsupported_format_refused() -> None:
    data = _encode(_noise(), "ICO")
    with pytest.raises(ImageError, match="not supported"):
        open_image(data, name="x.ico")


def test_heic_without_plugin_names_the_fix() -> None:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        fake = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
        with pytest.raises(ImageError, match="HEIC is not supported; install pillow-heif"):
            open_image(fake, name="phone.heic")
    else:
        pytest.skip("pillow-heif installed")


def test_error_is_value_error_with_name_and_reason() -> None:
    err = ImageError("a.jpg", "empty file")
    assert isinstance(err, ValueError)
    assert str(err) == "a.jpg: empty file"


# === resize_shorter_side ===


@pytest.mark.parametrize(("size", "target", "expected"), [
    ((1000, 600), 300, (500, 300)),
    ((600, 1000), 300, (300, 500)),
    ((333, 333), 100, (100, 100)),
    ((3001, 2000), 512, (768, 512)),
])
def test_resize_shorter_side(size: tuple[int, int], target: int, expected: tuple[int, int]) -> None:
    out = resize_shorter_side(Image.new("RGB", size, (10, 20, 30)), target)
    assert out.size == expected
    assert min(out.size) == target


def test_resize_never_upscales() -> None:
    img = Image.new("RGB", (100, 80))
    assert resize_shorter_side(img, 512) is img
    assert resize_shorter_side(img, 80) is img


def test_resize_keeps_content() -> None:
    img = Image.new("RGB", (400, 200), (0, 128, 255))
    out = np.asarray(resize_shorter_side(img, 50))
    assert out.shape == (50, 100, 3)
    assert np.abs(out.astype(int) - [0, 128, 255]).max() <= 1

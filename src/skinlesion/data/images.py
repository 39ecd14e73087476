"""Opening images safely: one decoder for ``prepare``, ``predict`` and the service.

``open_image`` turns a path or raw bytes into a fully decoded RGB
:class:`PIL.Image.Image`, or raises :class:`ImageError` naming the file and the
reason. It never trusts the file extension (the format is sniffed from the
bytes), refuses decompression bombs before decoding a single pixel, forces a
full decode so a truncated file fails here rather than later in a training
batch, and applies the EXIF orientation, so every caller sees the photo the
way a viewer shows it.

Conversions to RGB:

* grayscale ``L``/``1`` → replicated to three channels; 16-bit (``I;16*``) is
  scaled from 0–65,535 to 0–255 (not clipped); 32-bit ``I`` and float ``F`` are
  scaled by the range they actually use (see :func:`_high_depth_to_l`);
* anything with transparency (``RGBA``, ``LA``, ``P`` with a transparent index,
  …) is composited on **white**: dermoscopy photos have no meaningful alpha,
  and a white surround is what a viewer shows and what a cropped web export
  usually meant (black would read as a dark lesion border);
* ``CMYK`` and ``YCbCr`` → Pillow's conversion;
* animated GIF/WebP → the first frame.

HEIC/HEIF is decoded when the optional ``pillow-heif`` package is installed;
otherwise it is refused with an error that says so.
"""

from __future__ import annotations

import errno
import functools
import io
import logging
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

MAX_PIXELS = 100_000_000
"""Default pixel limit (width × height). ISIC 2020 photos reach 6,000×4,000 = 24 MP."""

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF")
"""Pillow formats accepted (JPEG includes camera JPEGs that Pillow reports as ``MPO``).
Others — EPS, PSD, ICO, … — are refused: a skin photo in those is a mistake, and EPS would
run Ghostscript."""

_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")

# What Pillow's decoders raise on damaged input (struct.error is not an OSError/ValueError).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError,
                                                   IndexError, TypeError, MemoryError,
                                                   struct.error)


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the reason.

    Attributes:
        name: The file name (or the label given for raw bytes).
        reason: Why the image was refused, e.g. ``"empty file"``.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def open_image(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode an image file or raw bytes into a fully loaded RGB image.

    Args:
        source: A path, or the raw bytes of an image file (e.g. an HTTP upload).
        name: Label used in error messages (defaults to the path, or ``"<bytes>"``).
        max_pixels: Refuse images whose header claims more pixels than this, before
            decoding (decompression-bomb guard). Default ``MAX_PIXELS`` (100 MP).
            Pillow's own hard limit (``2 × Image.MAX_IMAGE_PIXELS``) also applies.
        draft_size: If given, JPEGs are decoded at a reduced DCT scale (1/2, 1/4 or
            1/8) chosen so that both sides stay at least ``draft_size`` pixels —
            several times faster for large photos that will be downscaled anyway.
            Other formats ignore it.

    Returns:
        An ``RGB`` image with the EXIF orientation applied, pixels in memory.

    Raises:
        ImageError: for a missing, unreadable or empty file, a directory, a symlink loop,
            data that is not a supported image, a truncated or corrupt file, an image
            above ``max_pixels``, or HEIC without ``pillow-heif``.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "<bytes>"
        data = bytes(source)
    else:
        label = name or os.fspath(source)
        data = read_image_bytes(source, name=label)
    return decode_image(data, name=label, max_pixels=max_pixels, draft_size=draft_size)


def read_image_bytes(path: str | os.PathLike[str], *, name: str | None = None) -> bytes:
    """Read a file's bytes, turning every file-system failure into an :class:`ImageError`.

    Raises:
        ImageError: if the file is missing, a directory, a symlink loop, unreadable or empty.
    """
    label = name or os.fspath(path)
    p = Path(path)
    try:
        if p.is_dir():
            raise ImageError(label, "is a directory, not an image file")
        data = p.read_bytes()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(label, "file not found") from None
    except PermissionError:
        raise ImageError(label, "permission denied (file not readable)") from None
    except IsADirectoryError:
        raise ImageError(label, "is a directory, not an image file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(label, "symlink loop") from None
        raise ImageError(label, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(label, "empty file (0 bytes)")
    return data


def decode_image(
    data: bytes,
    *,
    name: str = "<bytes>",
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode image bytes; see :func:`open_image` for arguments and errors."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    img = _open_checked(data, name, max_pixels)
    try:
        if draft_size and img.format in ("JPEG", "MPO"):
            # Reduced-DCT decoding: libjpeg skips the high frequencies, ~3-5x faster.
            img.draft("RGB", (int(draft_size), int(draft_size)))
        if getattr(img, "is_animated", False):
            img.seek(0)  # first frame of an animated GIF/WebP
        img.load()  # full decode now: truncated data fails here, not in a training batch
        ImageOps.exif_transpose(img, in_place=True)
        rgb = _to_rgb(img)
        if rgb is not img:
            rgb.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(name, f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None
    return rgb


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` pixels, keeping the aspect ratio.

    Never upscales: an image whose shorter side is already ``<= size`` is returned
    unchanged (the same object). Uses Lanczos with ``reducing_gap=3.0`` (a box
    pre-reduction for large factors; Pillow documents the result as
    indistinguishable from plain Lanczos).

    Args:
        img: The image (any mode Pillow can resize).
        size: Target length of the shorter side, in pixels (> 0).

    Returns:
        The resized image.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    w, h = img.size
    short = min(w, h)
    if short <= size:
        return img
    if w <= h:
        new = (size, max(size, round(h * size / w)))
    else:
        new = (max(size, round(w * size / h)), size)
    return img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)


# === Internals ===


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """``Image.open`` on bytes with a format whitelist and the pixel limit checked on the header."""
    formats = list(SUPPORTED_FORMATS)
    if _is_heif(data):
        if not _heif_available():
            raise ImageError(name, "HEIC is not supported; install pillow-heif "
                                   "(pip install pillow-heif) or convert the photo to JPEG")
        formats.append("HEIF")
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large, refused before decoding ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not an image, or a format that is not supported (accepted: "
                               f"{', '.join(formats)})") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(name, f"corrupt or truncated image header ({type(exc).__name__}: {exc})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(name, f"invalid image size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(name, f"image too large: {w}x{h} = {w * h:,} pixels exceeds the limit "
                               f"of {max_pixels:,} (possible decompression bomb)")
    return img


def _is_heif(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS


@functools.cache
def _heif_available() -> bool:
    try:
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]
    except ImportError:
        return False
    register_heif_opener()
    return True


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("1", "L", "CMYK", "YCbCr", "RGBX"):
        return img.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_l(img).convert("RGB")
    if mode == "P" and "transparency" not in img.info:
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA", "P"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise ImageError(getattr(img, "filename", "") or "<image>",
                         f"unsupported colour mode {mode}") from exc


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Map a 16-bit, 32-bit integer or float grayscale image to 8-bit ``L``.

    ``I;16*`` uses its full 0–65,535 scale (divide by 257). ``I`` and ``F`` have no
    declared scale: values already within 0–255 are kept; ``I`` within 0–65,535 is
    treated as 16-bit; ``F`` within 0–1 is scaled by 255; anything else is stretched
    from its minimum to its maximum.
    """
    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        out = arr / 257.0
    else:
        lo = float(np.nanmin(arr)) if arr.size else 0.0
        hi = float(np.nanmax(arr)) if arr.size else 0.0
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            out = arr * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            out = arr
        elif img.mode == "I" and lo >= 0.0 and hi <= 65535.0:
            out = arr / 257.0
        else:
            out = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    out = np.nan_to_num(out, nan=0.0)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

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

SNIFF_BYTES = 64
"""Bytes read to recognise a file's type before the rest of it is read."""

REDUCE_MARGIN = 2
"""``reduce_for=S`` keeps the shorter side at least ``REDUCE_MARGIN × S`` (and at least
:data:`REDUCE_MIN_SIDE`) before the model's resize."""
REDUCE_MIN_SIDE = 512
"""Shorter side kept by a reduced decode whatever the model size (heatmap overlays are 512 px)."""


def reduced_side(model_size: int) -> int:
    """The shorter side a decode with ``reduce_for=model_size`` keeps at least."""
    return max(REDUCE_MARGIN * int(model_size), REDUCE_MIN_SIDE)

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
    reduce_for: int | None = None,
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
        reduce_for: If given (the model's input side ``S``), the image is decoded
            *reduced* for a model that resizes it to ``S × S``: JPEGs at a DCT scale
            (``Image.draft``), every other format box-reduced by a whole factor
            (``Image.reduce``), so that the shorter side stays at least
            ``max(2·S, 512)`` and below twice that (see :func:`reduced_side`). The
            model's float32 resize then works on at most ~1 MP instead of up to 50 MP.

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
    return decode_image(data, name=label, max_pixels=max_pixels, draft_size=draft_size,
                        reduce_for=reduce_for)


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
        with p.open("rb") as fh:
            # The type is checked on the first bytes before the rest is read: a 1.5 GB
            # file that is not an image costs 64 bytes, not 1.5 GB.
            head = fh.read(SNIFF_BYTES)
            if head and not looks_like_image(head):
                raise ImageError(label, _not_image_message(head))
            data = head + fh.read()
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
    reduce_for: int | None = None,
) -> Image.Image:
    """Decode image bytes; see :func:`open_image` for arguments and errors."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    img = _open_checked(data, name, max_pixels)
    declared = img.size
    try:
        draft = int(draft_size) if draft_size else None
        if reduce_for:
            draft = reduced_side(int(reduce_for))
        if draft and img.format in ("JPEG", "MPO"):
            # Reduced-DCT decoding: libjpeg skips the high frequencies, ~3-5x faster.
            img.draft("RGB", (draft, draft))
        if getattr(img, "is_animated", False):
            img.seek(0)  # first frame of an animated GIF/WebP
        img.load()  # full decode now: truncated data fails here, not in a training batch
        if img.mode.startswith("I;16"):
            img = _sixteen_bit_to_l(img)  # 8-bit before anything else: no wide copies
        if reduce_for:
            img = _reduce(img, reduced_side(int(reduce_for)))
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
    rgb.info["original_size"] = declared  # before any draft/reduce (width, height as stored)
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


_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8\xff",            # JPEG
    b"\x89PNG\r\n\x1a\n",       # PNG
    b"GIF87a", b"GIF89a",
    b"II*\x00", b"MM\x00*",       # TIFF (little / big endian)
    b"II+\x00", b"MM\x00+",       # BigTIFF
    b"BM",                        # BMP
)


def looks_like_image(head: bytes) -> bool:
    """Whether the first bytes of a file are those of an accepted image format.

    Used to refuse a large non-image before reading it whole; the real decision is
    Pillow's, on the full bytes (a file that passes here may still be refused).
    """
    if head.startswith(_SIGNATURES):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return len(head) >= 12 and head[4:8] == b"ftyp"  # HEIC/HEIF, decided later


def _not_image_message(head: bytes) -> str:
    del head
    return ("not an image, or a format that is not supported (accepted: "
            f"{', '.join(SUPPORTED_FORMATS)}; recognised from the first bytes)")


def _reduce(img: Image.Image, least: int) -> Image.Image:
    """Box-reduce by one whole factor, keeping the shorter side at least ``least`` pixels.

    One factor for both axes keeps the aspect ratio (the heatmap overlay shows the photo
    as it is). Modes Pillow cannot reduce are converted first.
    """
    factor = min(img.size) // least
    if factor <= 1:
        return img
    try:
        return img.reduce(factor)
    except ValueError:  # a mode Image.reduce does not support (P, 1, …): convert first
        if img.mode in ("P", "1", "PA"):
            return _reduce(_to_rgb(img), least)
        return img


def _sixteen_bit_to_l(img: Image.Image, rows: int = 256) -> Image.Image:
    """``I;16*`` → 8-bit ``L`` (0–65,535 → 0–255, rounded), ``rows`` rows at a time.

    Pillow cannot reduce or LUT 16-bit images, and a whole-image float copy of a 49 MP
    PNG is 392 MB; in blocks the extra memory is the 8-bit result plus one block.
    """
    w, h = img.size
    out = np.empty((h, w), np.uint8)
    for y in range(0, h, rows):
        block = np.asarray(img.crop((0, y, w, min(h, y + rows))), dtype=np.uint32)
        out[y:y + block.shape[0]] = (block * 2 + 257) // 514  # round(v / 257)
    return Image.fromarray(out, "L")


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
    if img.mode.startswith("I;16"):
        return _sixteen_bit_to_l(img)
    arr = np.asarray(img).astype(np.float32)  # float32: half the memory of float64
    lo = float(np.nanmin(arr)) if arr.size else 0.0
    hi = float(np.nanmax(arr)) if arr.size else 0.0
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        out = arr * np.float32(255.0)
    elif lo >= 0.0 and hi <= 255.0:
        out = arr
    elif img.mode == "I" and lo >= 0.0 and hi <= 65535.0:
        out = arr / np.float32(257.0)
    else:
        out = (arr - lo) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    out = np.nan_to_num(out, nan=0.0)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

"""The bad-input corpus: every odd or hostile input, and what each entry point must do with it.

One list, :data:`CASES`, drives the corpus tests of ``prepare``
(``test_corpus_prepare.py``), ``predict`` (``test_corpus_predict.py``) and the
service (``test_corpus_service.py``), and renders the table in
``docs/RELIABILITY.md``; ``test_docs_table_matches_the_corpus`` fails when the
document and this list disagree. Regenerate the table with::

    .venv/bin/python tests/reliability/corpus.py > /tmp/table.md

Every input is generated into a temporary folder when the tests run (nothing is
committed): small synthetic images made with Pillow, hand-crafted headers for the
decompression bombs and HEIC, and a few real isic-dev photographs copied for the
cases that need a real photo.

Each case says, per entry point, one of:

* ``accepted`` — and how the input was converted (checked on the pixels the
  entry point produced: the prepared JPEG, the model input, the service's answer);
* ``rejected`` — this one input gets an error that contains ``message``, the
  others in the batch go on (a row in ``prepare_report.json``, a row with an
  ``error`` in ``predict``'s output, a 422 JSON answer from the service);
* ``refused`` — the whole command stops with exit status 2 and ``message``;
* ``n/a`` — the entry point cannot receive such an input (said why).
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ACCEPTED, REJECTED, REFUSED, NA = "accepted", "rejected", "refused", "n/a"

DOCS = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
TABLE_START = "<!-- corpus-table:start (generated from tests/reliability/corpus.py) -->"
TABLE_END = "<!-- corpus-table:end -->"


@dataclass(frozen=True)
class Outcome:
    """What one entry point does with one case.

    Attributes:
        status: ``accepted``, ``rejected``, ``refused`` or ``n/a``.
        message: Text the error must contain (rejected/refused); empty otherwise.
        how: For the table: how an accepted input was converted, or a note.
    """

    status: str
    message: str = ""
    how: str = ""

    def cell(self) -> str:
        """The Markdown table cell."""
        if self.status == ACCEPTED:
            return f"**accepted**: {self.how}" if self.how else "**accepted**"
        if self.status == NA:
            return f"n/a: {self.how}"
        head = "**rejected**" if self.status == REJECTED else "**refused** (exit 2)"
        tail = f" ({self.how})" if self.how else ""
        return f"{head}: `{self.message}`{tail}"


def ok(how: str = "") -> Outcome:
    return Outcome(ACCEPTED, how=how)


def bad(message: str, how: str = "") -> Outcome:
    return Outcome(REJECTED, message, how)


def refused(message: str, how: str = "") -> Outcome:
    return Outcome(REFUSED, message, how)


def na(why: str) -> Outcome:
    return Outcome(NA, how=why)


@dataclass
class Built:
    """A case's inputs, as each entry point receives them.

    Attributes:
        path: The file ``predict`` is given; the service uploads its bytes.
        csv_path: How the shared ``prepare`` table names the file (default: ``path``
            relative to the corpus folder).
        upload_name: The multipart file name sent to the service (default: ``path.name``).
        upload_bytes: The uploaded bytes (default: ``path``'s bytes).
        table: For table cases: the CSV that ``prepare`` reads.
    """

    path: Path | None = None
    csv_path: str | None = None
    upload_name: str | None = None
    upload_bytes: bytes | None = None
    table: Path | None = None

    def upload(self) -> tuple[str, bytes]:
        """``(file name, bytes)`` for the service."""
        assert self.path is not None or self.upload_bytes is not None
        name = self.upload_name or (self.path.name if self.path else "upload")
        data = self.upload_bytes if self.upload_bytes is not None else self.path.read_bytes()
        return name, data


PhotoSource = Callable[[int], bytes]
"""``photo(i)``: the bytes of the i-th real isic-dev photograph (distinct for distinct i)."""

Builder = Callable[[Path, PhotoSource], Built]
PixelCheck = Callable[[np.ndarray], None]
"""Asserts on an accepted image's RGB pixels ``(H, W, 3)``, at any size and 0–255 scale."""


@dataclass(frozen=True)
class Case:
    """One input of the corpus.

    Attributes:
        name: Identifier (test id, image id in the shared prepare table).
        title: What the input is, for the table.
        group: ``image`` (a file's content), ``path`` (where/how a file is found) or
            ``table`` (a label table for ``prepare``).
        build: Writes the input under a folder.
        prepare: Outcome of ``skinlesion prepare``.
        predict: Outcome of ``skinlesion predict`` and ``Predictor.predict_files``.
        service: Outcome of ``POST /v1/predict``.
        check: Pixel check for an accepted image (None: only "a finite probability").
        kept: Table cases: rows ``prepare`` keeps.
        label: Label of the row in the shared prepare table.
        unprivileged: The case needs a user that file permissions apply to (run in a
            subprocess as ``nobody`` when the tests run as root).
    """

    name: str
    title: str
    group: str
    build: Builder
    prepare: Outcome
    predict: Outcome
    service: Outcome
    check: PixelCheck | None = None
    kept: int | None = None
    label: int = 0
    unprivileged: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


# === Image helpers ==================================================================

def encode(img: object, fmt: str, **kwargs: object) -> bytes:
    """Encode a PIL image to bytes."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)  # type: ignore[attr-defined]
    return buf.getvalue()


def two_tone(size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int],
             seed: int = 0) -> object:
    """An RGB image whose left half is ``left`` and right half ``right``, with a little noise
    (so that two cases never share bytes: ``prepare`` drops exact duplicates)."""
    from PIL import Image

    w, h = size
    arr = np.empty((h, w, 3), np.float64)
    arr[:, : w // 2] = left
    arr[:, w // 2:] = right
    arr += np.random.default_rng(seed).normal(0, 2, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(side: int = 40_000) -> bytes:
    """A 1 KB PNG whose header claims ``side`` × ``side`` 8-bit RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""))


def bomb_jpeg(side: int = 40_000) -> bytes:
    """A small valid JPEG with its frame header (SOF0) patched to claim ``side`` × ``side``."""
    from PIL import Image

    data = bytearray(encode(Image.new("RGB", (16, 16), (120, 80, 60)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def fake_heic() -> bytes:
    """The start of an iPhone HEIC file: an ISO-BMFF ``ftyp`` box with the ``heic`` brand."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)


# === Pixel checks ===================================================================

def region(arr: np.ndarray, rows: tuple[float, float] = (0.0, 1.0),
           cols: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Mean RGB of a region given as fractions of the height and width."""
    a = np.asarray(arr, np.float64)
    h, w = a.shape[:2]
    r0, r1 = int(rows[0] * h), max(int(rows[0] * h) + 1, round(rows[1] * h))
    c0, c1 = int(cols[0] * w), max(int(cols[0] * w) + 1, round(cols[1] * w))
    return a[r0:r1, c0:c1].reshape(-1, a.shape[2]).mean(axis=0)


def near(actual: np.ndarray, expected: tuple[float, ...], tol: float, what: str) -> None:
    diff = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)).max()
    assert diff <= tol, f"{what}: got {np.round(actual, 1).tolist()}, expected {expected} ± {tol}"


def halves(left: tuple[int, int, int], right: tuple[int, int, int], tol: float = 16) -> PixelCheck:
    """Left third ≈ ``left`` and right third ≈ ``right``."""

    def check(arr: np.ndarray) -> None:
        near(region(arr, cols=(0.0, 0.3)), left, tol, "left of the image")
        near(region(arr, cols=(0.7, 1.0)), right, tol, "right of the image")

    return check


def uniform(color: tuple[int, int, int], tol: float = 16) -> PixelCheck:
    def check(arr: np.ndarray) -> None:
        near(region(arr), color, tol, "whole image")

    return check


def gray_halves(left: int, right: int, tol: float = 12) -> PixelCheck:
    """Three equal channels, left ≈ ``left``, right ≈ ``right``."""

    def check(arr: np.ndarray) -> None:
        a = np.asarray(arr, np.float64)
        spread = float(np.abs(a - a.mean(axis=2, keepdims=True)).max())
        assert spread <= 6, f"grey image has unequal channels (spread {spread:.1f})"
        halves((left,) * 3, (right,) * 3, tol)(arr)

    return check


def top_dark_bottom_bright(arr: np.ndarray) -> None:
    """The EXIF case: stored left-dark/right-bright, orientation 6 → shown top-dark/bottom-bright."""
    top, bottom = region(arr, rows=(0.0, 0.3)).mean(), region(arr, rows=(0.7, 1.0)).mean()
    assert top < 80 and bottom > 170, (
        f"EXIF orientation not applied: top {top:.0f}, bottom {bottom:.0f} (expected dark over bright)")


# === Builders =======================================================================

def _write(folder: Path, rel: str, data: bytes) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _file(rel: str, make: Callable[[], bytes]) -> Builder:
    def build(folder: Path, photo: PhotoSource) -> Built:
        return Built(path=_write(folder, rel, make()))

    return build


def _photo(rel: str, index: int) -> Builder:
    def build(folder: Path, photo: PhotoSource) -> Built:
        return Built(path=_write(folder, rel, photo(index)))

    return build


def _truncated(folder: Path, photo: PhotoSource) -> Built:
    data = photo(1)
    return Built(path=_write(folder, "images/truncated.jpg", data[: len(data) // 2]))


def _random_bytes() -> bytes:
    return np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _rgba() -> bytes:
    from PIL import Image

    arr = np.zeros((40, 60, 4), np.uint8)            # left: fully transparent black
    arr[:, 30:] = (200, 30, 30, 255)                 # right: opaque red
    return encode(Image.fromarray(arr, "RGBA"), "PNG")


def _png16() -> bytes:
    from PIL import Image

    arr = np.empty((40, 60), np.uint16)
    arr[:, :30] = 65535                              # → 255
    arr[:, 30:] = 32896                              # → 128 (scaled by 1/257, not clipped)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    return encode(img, "PNG")


def _gray() -> bytes:
    from PIL import Image

    arr = np.empty((40, 60), np.uint8)
    arr[:, :30], arr[:, 30:] = 60, 190
    return encode(Image.fromarray(arr, "L"), "JPEG", quality=95)


def _cmyk() -> bytes:
    from PIL import Image

    img = Image.new("CMYK", (48, 32), (0, 255, 255, 0))
    img.paste((0, 0, 0, 255), (2, 2, 8, 8))  # a small black mark: not a constant image
    return encode(img, "JPEG", quality=95)


def _exif_rotated() -> bytes:
    from PIL import Image

    arr = np.empty((40, 60, 3), np.uint8)
    arr[:, :30], arr[:, 30:] = 30, 220               # stored: left dark, right bright
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90° clockwise to display"
    return encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def _one_pixel() -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")


def _strip() -> bytes:
    return encode(two_tone((400, 40), (200, 120, 90), (90, 60, 50), seed=6), "PNG")


def _flat() -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (120, 100), (150, 110, 95)), "PNG")


def _png16_large() -> bytes:
    from PIL import Image

    arr = np.empty((3000, 4000), np.uint16)          # 12 MP, 16-bit: decoded reduced
    arr[:, :2000] = 65535
    arr[:, 2000:] = 32896
    return encode(Image.fromarray(arr), "PNG")


def _huge_text() -> bytes:
    return b"a text file, not a photo, 12 MB of it\n" * (12 * 2**20 // 38)


def _gif() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (40, 32), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].paste((0, 0, 0), (2, 2, 6, 6))  # a small mark: not a constant frame
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)


def _tiff() -> bytes:
    return encode(two_tone((60, 40), (20, 120, 220), (220, 120, 20), seed=3), "TIFF")


def _webp() -> bytes:
    return encode(two_tone((60, 40), (40, 180, 90), (180, 40, 140), seed=4), "WEBP", lossless=True)


def _png_named_jpg() -> bytes:
    return encode(two_tone((60, 40), (250, 220, 30), (30, 60, 250), seed=5), "PNG")


def _symlink_loop(folder: Path, photo: PhotoSource) -> Built:
    path = folder / "images" / "loop.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.name, path)                      # loop.jpg → loop.jpg
    return Built(path=path, upload_name="loop.jpg", upload_bytes=b"")


def _unreadable(folder: Path, photo: PhotoSource) -> Built:
    path = _write(folder, "images/locked.jpg", photo(4))
    path.chmod(0)
    return Built(path=path)


def _escaping(folder: Path, photo: PhotoSource) -> Built:
    # prepare: a table row naming ../../etc/passwd; predict: the user names /etc/passwd;
    # service: a real photo uploaded under that name (a label, never a path).
    return Built(path=Path("/etc/passwd"), csv_path="../../etc/passwd",
                 upload_name="../../etc/passwd", upload_bytes=photo(5))


# --- label tables (prepare only) ---

def _table_images(folder: Path, n: int = 6, seed: int = 100) -> list[str]:
    """``n`` distinct small photos-to-be under ``folder/img``; returns their relative paths."""
    from PIL import Image

    rels = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        rel = f"img/p{i}.jpg"
        _write(folder, rel, encode(Image.fromarray(
            rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)), "JPEG"))
        rels.append(rel)
    return rels


def _table(text_for: Callable[[list[str]], str], *, encoding: str = "utf-8",
           bom: bool = False) -> Builder:
    def build(folder: Path, photo: PhotoSource) -> Built:
        rels = _table_images(folder)
        text = text_for(rels)
        data = text.encode(encoding)
        if bom:
            data = b"\xef\xbb\xbf" + data
        return Built(table=_write(folder, "labels.csv", data))

    return build


def _rows(rels: list[str], sep: str = ",") -> list[str]:
    return [f"{r}{sep}{i % 2}" for i, r in enumerate(rels)]


# === The corpus =====================================================================

_REAL_PHOTO = "a real isic-dev JPEG"
_NO_PATHS = "the service reads only the uploaded bytes; it never opens a path"
_NO_TABLES = "takes image files, not label tables"
_NOT_IMAGE = "not an image, or a format that is not supported"
_CORRUPT = "corrupt or truncated image"
_TOO_LARGE = "image too large"
_HEIC = "HEIC is not supported; install pillow-heif"
_OUT_OF_SCOPE = "out of scope"

CASES: tuple[Case, ...] = (
    # --- file contents ---
    Case("control_photo", "control: " + _REAL_PHOTO, "image", _photo("images/control.jpg", 0),
         prepare=ok("resized (shorter side to --size)"), predict=ok("resized to the model input"),
         service=ok("200 with P(malignant)"), label=1),
    Case("empty_file", "empty file (0 bytes)", "image", _file("images/empty.jpg", bytes),
         prepare=bad("empty file (0 bytes)"), predict=bad("empty file (0 bytes)"),
         service=bad("empty upload", "422")),
    Case("truncated_jpeg", "truncated JPEG (first half of a real photo)", "image", _truncated,
         prepare=bad(_CORRUPT), predict=bad(_CORRUPT), service=bad(_CORRUPT, "422")),
    Case("random_bytes", "4 KB of random bytes named `.jpg`", "image",
         _file("images/random.jpg", _random_bytes),
         prepare=bad(_NOT_IMAGE), predict=bad(_NOT_IMAGE), service=bad(_NOT_IMAGE, "422")),
    Case("text_as_jpg", "a text file named `.jpg`", "image",
         _file("images/notes.jpg", lambda: b"patient notes, not a photo\n"),
         prepare=bad(_NOT_IMAGE), predict=bad(_NOT_IMAGE), service=bad(_NOT_IMAGE, "422")),
    Case("png_alpha", "PNG with alpha (left half fully transparent)", "image",
         _file("images/alpha.png", _rgba),
         prepare=ok("composited on white"), predict=ok("composited on white"),
         service=ok("composited on white"), check=halves((255, 255, 255), (200, 30, 30))),
    Case("png_16bit", "16-bit greyscale PNG", "image", _file("images/deep.png", _png16),
         prepare=ok("scaled 0–65,535 → 0–255, grey to RGB"),
         predict=ok("scaled 0–65,535 → 0–255, grey to RGB"),
         service=ok("scaled 0–65,535 → 0–255"), check=gray_halves(255, 128)),
    Case("grayscale", "8-bit greyscale JPEG", "image", _file("images/gray.jpg", _gray),
         prepare=ok("grey copied to R, G and B"), predict=ok("grey copied to R, G and B"),
         service=ok("grey copied to R, G and B"), check=gray_halves(60, 190), label=1),
    Case("cmyk_jpeg", "CMYK JPEG (pure red)", "image", _file("images/cmyk.jpg", _cmyk),
         prepare=ok("CMYK → RGB"), predict=ok("CMYK → RGB"), service=ok("CMYK → RGB"),
         check=uniform((237, 28, 36), tol=40)),
    Case("exif_rotated", "JPEG with EXIF orientation 6 (stored sideways)", "image",
         _file("images/rotated.jpg", _exif_rotated),
         prepare=ok("rotated upright (orientation applied, EXIF dropped)"),
         predict=ok("rotated upright before resizing"), service=ok("rotated upright"),
         check=top_dark_bottom_bright, label=1),
    Case("one_pixel", "1×1 px PNG", "image", _file("images/dot.png", _one_pixel),
         prepare=ok("kept at 1×1 (never upscaled)"),
         predict=bad(_OUT_OF_SCOPE + ": image is 1×1 px", "decision `out_of_scope`, no probability"),
         service=bad(_OUT_OF_SCOPE, "422")),
    Case("aspect_strip", "400×40 px strip (aspect ratio 10:1)", "image",
         _file("images/strip.png", _strip),
         prepare=ok("kept (prepare does not judge scope)"),
         predict=bad(_OUT_OF_SCOPE + ": aspect ratio 10.0:1", "decision `out_of_scope`"),
         service=bad(_OUT_OF_SCOPE, "422")),
    Case("flat_image", "one flat colour, 120×100 px", "image", _file("images/flat.png", _flat),
         prepare=ok("kept (prepare does not judge scope)"),
         predict=bad(_OUT_OF_SCOPE + ": near-constant image", "decision `out_of_scope`"),
         service=bad(_OUT_OF_SCOPE, "422")),
    Case("png16_large", "16-bit PNG, 4,000×3,000 px (12 MP)", "image",
         _file("images/deep_large.png", _png16_large),
         prepare=ok("scaled to 8-bit in row blocks (no float copy), then resized"),
         predict=ok("decoded reduced for the model (`Image.reduce`), 8-bit in row blocks"),
         service=ok("decoded reduced, as predict"), check=gray_halves(255, 128), label=1),
    Case("huge_text", "12 MB text file named `.jpg`", "image",
         _file("images/huge.jpg", _huge_text),
         prepare=bad(_NOT_IMAGE, "refused from its first 64 bytes; the rest is never read"),
         predict=bad(_NOT_IMAGE, "refused from its first 64 bytes"),
         service=bad(_NOT_IMAGE, "422")),
    Case("bomb_png", "PNG header claiming 40,000×40,000 px (1 KB file)", "image",
         _file("images/bomb.png", bomb_png),
         prepare=bad(_TOO_LARGE, "refused from the header, before decoding"),
         predict=bad(_TOO_LARGE, "before decoding"), service=bad(_TOO_LARGE, "422")),
    Case("bomb_jpeg", "JPEG frame header claiming 40,000×40,000 px", "image",
         _file("images/bomb.jpg", bomb_jpeg),
         prepare=bad(_TOO_LARGE, "refused from the header, before decoding"),
         predict=bad(_TOO_LARGE, "before decoding"), service=bad(_TOO_LARGE, "422")),
    Case("animated_gif", "animated GIF (red, blue, green frames)", "image",
         _file("images/anim.gif", _gif),
         prepare=ok("first frame"), predict=ok("first frame"), service=ok("first frame"),
         check=uniform((255, 0, 0)), label=1),
    Case("tiff", "TIFF", "image", _file("images/scan.tif", _tiff),
         prepare=ok("decoded as is"), predict=ok("decoded as is"), service=ok("decoded as is"),
         check=halves((20, 120, 220), (220, 120, 20))),
    Case("webp", "WebP (lossless)", "image", _file("images/web.webp", _webp),
         prepare=ok("decoded as is"), predict=ok("decoded as is"), service=ok("decoded as is"),
         check=halves((40, 180, 90), (180, 40, 140)), label=1),
    Case("png_named_jpg", "PNG named `.jpg`", "image", _file("images/really_png.jpg", _png_named_jpg),
         prepare=ok("type sniffed from the bytes"), predict=ok("type sniffed from the bytes"),
         service=ok("type sniffed from the bytes"), check=halves((250, 220, 30), (30, 60, 250))),
    Case("heic", "HEIC (an `ftypheic` header; pillow-heif not installed)", "image",
         _file("images/phone.heic", fake_heic),
         prepare=bad(_HEIC), predict=bad(_HEIC), service=bad(_HEIC, "422")),
    # --- paths ---
    Case("path_spaces", "path with spaces (`with space/photo 1.jpg`)", "path",
         _photo("with space/photo 1.jpg", 2),
         prepare=ok("image id sanitised and hashed for the output file name"),
         predict=ok("path kept as given"), service=ok("file name echoed as a label"), label=1),
    Case("path_non_ascii", "non-ASCII path (`naïve/ünïcødé 日本.jpg`)", "path",
         _photo("naïve/ünïcødé 日本.jpg", 3),
         prepare=ok("image id sanitised and hashed for the output file name"),
         predict=ok("path kept as given"), service=ok("file name echoed as a label")),
    Case("symlink_loop", "symlink loop (`loop.jpg → loop.jpg`)", "path", _symlink_loop,
         prepare=bad("symlink loop"), predict=bad("symlink loop"), service=na(_NO_PATHS)),
    Case("unreadable", "file without read permission (chmod 000)", "path", _unreadable,
         prepare=bad("permission denied (file not readable)"),
         predict=bad("permission denied (file not readable)"), service=na(_NO_PATHS),
         unprivileged=True),
    Case("path_escape", "path escaping the data folder (`../../etc/passwd`)", "path", _escaping,
         prepare=bad("path escapes the source folder", "checked on the path, nothing read"),
         predict=bad(_NOT_IMAGE, "the CLI reads the paths its user names: /etc/passwd"),
         service=ok("only the bytes are read; the name becomes the label `passwd`")),
    # --- label tables (prepare) ---
    Case("table_missing_columns", "CSV without a label column (`file,comment`)", "table",
         _table(lambda rels: "file,comment\n" + "".join(f"{r},x\n" for r in rels)),
         prepare=refused("no known layout matches this table; columns found"),
         predict=na(_NO_TABLES), service=na(_NO_TABLES)),
    Case("table_unknown_label", "CSV with an unknown label (`purple`)", "table",
         _table(lambda rels: "path,label\n" + "\n".join([*_rows(rels[:5]), f"{rels[5]},purple"])
                + "\n"),
         prepare=bad("unknown label 'purple'", "that row; the others are kept"),
         predict=na(_NO_TABLES), service=na(_NO_TABLES), kept=5),
    Case("table_duplicate_ids", "CSV with a duplicate image id", "table",
         _table(lambda rels: "image_id,path,label\n" + "".join(
             f"{'dup' if i >= 4 else f'id{i}'},{r},{i % 2}\n" for i, r in enumerate(rels))),
         prepare=bad("image_id already used by", "the later row; the first is kept"),
         predict=na(_NO_TABLES), service=na(_NO_TABLES), kept=5),
    Case("table_bom", "CSV with a UTF-8 byte-order mark", "table",
         _table(lambda rels: "path,label\n" + "\n".join(_rows(rels)) + "\n", bom=True),
         prepare=ok("BOM ignored, header read"), predict=na(_NO_TABLES), service=na(_NO_TABLES),
         kept=6),
    Case("table_semicolons", "CSV separated by semicolons", "table",
         _table(lambda rels: "path;label\n" + "\n".join(_rows(rels, ";")) + "\n"),
         prepare=ok("separator sniffed from the header"), predict=na(_NO_TABLES),
         service=na(_NO_TABLES), kept=6),
    Case("table_blank_lines", "CSV with blank lines", "table",
         _table(lambda rels: "\n\npath,label\n\n" + "\n\n".join(_rows(rels)) + "\n\n\n"),
         prepare=ok("blank lines skipped"), predict=na(_NO_TABLES), service=na(_NO_TABLES),
         kept=6),
    Case("table_path_escape", "CSV row naming `../../etc/passwd`", "table",
         _table(lambda rels: "path,label\n" + "\n".join([*_rows(rels), "../../etc/passwd,0"])
                + "\n"),
         prepare=bad("path escapes the source folder", "that row; nothing outside is read"),
         predict=na(_NO_TABLES), service=na(_NO_TABLES), kept=6),
    Case("table_missing_file", "CSV row naming a file that does not exist", "table",
         _table(lambda rels: "path,label\n" + "\n".join([*_rows(rels), "img/gone.jpg,1"]) + "\n"),
         prepare=bad("file not found", "that row"), predict=na(_NO_TABLES),
         service=na(_NO_TABLES), kept=6),
    Case("table_not_utf8", "CSV in Latin-1 (not UTF-8)", "table",
         _table(lambda rels: "path,label,diagnosis\n" + "\n".join(
             f"{r},{i % 2},{'mélanome' if i % 2 else 'nævus'}" for i, r in enumerate(rels)) + "\n",
             encoding="latin-1"),
         prepare=refused("not UTF-8 text", "says to re-save it as UTF-8"),
         predict=na(_NO_TABLES), service=na(_NO_TABLES)),
)
"""Every case; the order is the table's."""

SERVICE_ONLY = "service"


def case(name: str) -> Case:
    """The case called ``name``."""
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)


def cases(group: str | None = None, *, entry: str | None = None) -> list[Case]:
    """Cases of ``group`` (all when None) that ``entry`` (prepare/predict/service) can receive."""
    out = [c for c in CASES if group is None or c.group == group]
    if entry is not None:
        out = [c for c in out if getattr(c, entry).status != NA]
    return out


# === Building the corpus =============================================================

def real_photos(isic_dev: Path, n: int = 8) -> PhotoSource:
    """``photo(i)``: bytes of the i-th of ``n`` distinct real isic-dev JPEGs (400–1,000 px)."""
    import pandas as pd

    df = pd.read_csv(isic_dev / "labels.csv", dtype=str, keep_default_na=False)
    files = [isic_dev / f for f in df["filename"] if not f.startswith("fullsize/")][:n]

    def photo(i: int) -> bytes:
        return files[i].read_bytes()

    return photo


def build_all(folder: Path, photo: PhotoSource, group: str | None = None) -> dict[str, Built]:
    """Build every case of ``group`` under ``folder`` (table cases in their own subfolder)."""
    built: dict[str, Built] = {}
    for c in cases(group):
        target = folder / c.name if c.group == "table" else folder
        target.mkdir(parents=True, exist_ok=True)
        built[c.name] = c.build(target, photo)
    return built


def shared_table(folder: Path, built: dict[str, Built], names: list[str]) -> Path:
    """One ``image_id,path,label`` table naming the files of ``names``, for one prepare run."""
    import csv

    path = folder / "corpus.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image_id", "path", "label"])
        for name in names:
            b = built[name]
            rel = b.csv_path or b.path.relative_to(folder).as_posix()  # type: ignore[union-attr]
            writer.writerow([name, rel, case(name).label])
    return path


def heif_installed() -> bool:
    """Whether pillow-heif is installed (the HEIC case documents the default install, without it)."""
    import importlib.util

    return importlib.util.find_spec("pillow_heif") is not None


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


NOBODY = 65534
"""uid and gid the unprivileged child switches to when the tests run as root."""


def world_dir(prefix: str) -> Path:
    """A fresh folder under the system temp folder that any user may enter and write.

    pytest's ``tmp_path`` lives under a 0700 folder, which an unprivileged child
    could not even enter; its permission error would then be about the folder,
    not about the file under test.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    return path


def run_unprivileged(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn()`` in a forked child that drops root (to ``nobody``) first.

    File permissions do not apply to root, and CI runs as root, so a real
    "permission denied" needs another user. A fork, not a new interpreter: the
    interpreter may live under a folder ``nobody`` cannot read (``/root/.pyenv``).
    The child must not touch TensorFlow (its thread pools do not survive a fork).

    Returns:
        ``{"uid": ..., "value": fn()}`` or ``{"uid": ..., "error": "..."}``.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_fd)
            if running_as_root():
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            out: dict[str, Any] = {"uid": os.getuid(), "value": fn()}
        except BaseException as exc:
            out = {"uid": os.getuid(), "error": f"{type(exc).__name__}: {exc}"}
            code = 1
        with os.fdopen(write_fd, "w", encoding="utf-8") as fh:
            json.dump(out, fh, default=str)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, encoding="utf-8") as fh:
        text = fh.read()
    os.waitpid(pid, 0)
    return json.loads(text) if text else {"error": "the child wrote nothing"}


# === The table =======================================================================

_COLUMNS = ("case", "`skinlesion prepare`", "`skinlesion predict` / `Predictor`",
            "service `POST /v1/predict`")
_GROUP_TITLES = {"image": "file contents", "path": "paths and permissions",
                 "table": "label tables"}


def render_table() -> str:
    """The Markdown table of :data:`CASES` (what ``docs/RELIABILITY.md`` must contain)."""
    lines = ["| # | " + " | ".join(_COLUMNS) + " |", "|---|" + "---|" * len(_COLUMNS)]
    n = 0
    for group, title in _GROUP_TITLES.items():
        lines.append(f"| | *{title}* | | | |")
        for c in cases(group):
            n += 1
            cells = [f"{c.title} <br>`{c.name}`", c.prepare.cell(), c.predict.cell(),
                     c.service.cell()]
            lines.append(f"| {n} | " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def documented_table(doc: Path = DOCS) -> str:
    """The table between the markers in ``docs/RELIABILITY.md``."""
    text = doc.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return text[start:end].strip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_table())

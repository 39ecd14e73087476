"""Which files are images: the one list of extensions every command recognises.

``prepare`` (folder layouts, tables naming an image by id only), ``predict``
(folders and globs), batch inference and the metadata tables all use
:data:`IMAGE_EXTENSIONS`, so a file that one command picks up is not silently
skipped by another. The extension only selects files: the decoder
(``skinlesion.data.images.open_image``) sniffs the format from the bytes.
"""

from __future__ import annotations

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".heic", ".heif"})
"""Image file extensions, lower case with the dot (compare ``Path.suffix.lower()``).

Each names a format the decoder reads (JPEG, PNG, TIFF, WebP, BMP, GIF; HEIC/HEIF with the
optional ``pillow-heif``, without which such a file gets an error row saying so rather than
being skipped)."""

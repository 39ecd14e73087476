"""Image files of a source: a sorted walk, and lookup of image files by id."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from skinlesion.data.extensions import IMAGE_EXTENSIONS


def walk_sorted(top: Path, skip: tuple[Path, ...]) -> Iterable[tuple[str, list[str]]]:
    """``os.walk`` in sorted order without hidden folders and without ``skip`` folders."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not is_skipped(Path(dirpath) / d, skip))
        yield dirpath, sorted(filenames)


def is_skipped(path: Path, skip: tuple[Path, ...]) -> bool:
    """Whether ``path`` is one of the resolved ``skip`` folders."""
    return bool(skip) and path.resolve() in skip


class ImageIndex:
    """Image files under a folder, found by id (file stem), built lazily with one walk."""

    def __init__(self, root: Path, skip: tuple[Path, ...] = ()) -> None:
        self.root = root
        self.skip = skip
        self._by_stem: dict[str, list[Path]] | None = None

    def _build(self) -> dict[str, list[Path]]:
        index: dict[str, list[Path]] = defaultdict(list)
        for dirpath, filenames in walk_sorted(self.root, self.skip):
            for fname in filenames:
                p = Path(dirpath) / fname
                if not fname.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS:
                    index[p.stem].append(p)
        return index

    def find(self, image_id: str) -> tuple[Path | None, str | None]:
        """The file for ``image_id`` and a warning when several files share that id.

        When several match (an id in two folders), the shallowest path wins, then the
        alphabetically first: deterministic, and listed in the report.
        """
        if self._by_stem is None:
            self._by_stem = self._build()
        key = image_id
        if Path(image_id).suffix.lower() in IMAGE_EXTENSIONS:
            key = Path(image_id).stem
        hits = self._by_stem.get(key, [])
        if Path(image_id).suffix:
            exact = [h for h in hits if h.name == Path(image_id).name]
            hits = exact or hits
        if not hits:
            return None, None
        hits = sorted(hits, key=lambda p: (len(p.relative_to(self.root).parts), str(p)))
        warning = None
        if len(hits) > 1:
            warning = (f"{image_id}: {len(hits)} files share this id; used "
                       f"{hits[0].relative_to(self.root).as_posix()}")
        return hits[0], warning


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators (the path itself if outside)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()

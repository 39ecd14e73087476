"""``folders``: one folder per class, optionally under ``train/ valid/ test/`` split folders."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from skinlesion.data.extensions import IMAGE_EXTENSIONS
from skinlesion.data.labels import LabelMap, resolve_label
from skinlesion.data.layouts.base import (
    SPLIT_ALIASES,
    Layout,
    SourceError,
    SourceRows,
    add_row,
    normalise_given_splits,
)
from skinlesion.data.layouts.files import is_skipped, relative_posix, walk_sorted

_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})


def _read_folders(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    del tables
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                     and not is_skipped(d, src.skip))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        for d in subdirs:
            if d not in split_dirs:
                src.warnings.append(f"{d.name}/: ignored (beside split folders "
                                    f"{[s.name for s in split_dirs]})")
        parts = {d.name: SPLIT_ALIASES[d.name.lower()] for d in split_dirs}
        given = normalise_given_splits(parts)
        class_dirs = [(c, given[d.name]) for d in split_dirs for c in sorted(d.iterdir())
                      if c.is_dir() and not c.name.startswith(".") and not is_skipped(c, src.skip)]
        for d in split_dirs:
            for f in sorted(d.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    src.reject(f.stem, relative_posix(f, root), "not inside a class folder")
    else:
        class_dirs = [(d, "") for d in subdirs]
    if not class_dirs:
        raise SourceError(f"{root}: no class folders found (expected e.g. benign/ and "
                          "malignant/, or train/<class>/ …)")
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
            src.reject(f.stem, f.name, "not inside a class folder")

    files: list[tuple[Path, Path, str]] = []
    for class_dir, split in class_dirs:
        for dirpath, filenames in walk_sorted(class_dir, src.skip):
            for fname in filenames:
                if fname.startswith(".") or fname.lower() in _JUNK_FILES:
                    continue
                files.append((Path(dirpath) / fname, class_dir, split))
    stems: dict[str, int] = defaultdict(int)
    for f, _, _ in files:
        stems[f.stem] += 1
    source = root.resolve().name or "folders"
    for f, class_dir, split in files:
        # The file stem is the id (ISIC files are named by id); where two files share a
        # stem (img001.jpg in benign/ and malignant/) the relative path disambiguates.
        image_id = (f.stem if stems[f.stem] == 1
                    else relative_posix(f.with_suffix(""), root).replace("/", "__"))
        decision = resolve_label(class_dir.name, "", label_map)
        add_row(src, image_id=image_id, file=f, wanted=relative_posix(f, root), decision=decision,
                split=split, source=source)


LAYOUT = Layout("folders", "one folder per class (optionally under train/ valid/ test/)",
                None, _read_folders, specific=False)

"""``ham10000``: ``HAM10000_metadata.csv`` with images in one or more folders."""

from __future__ import annotations

from pathlib import Path

from skinlesion.data.labels import LabelMap, resolve_label
from skinlesion.data.layouts.base import Layout, SourceRows, add_row
from skinlesion.data.layouts.files import ImageIndex
from skinlesion.data.layouts.tables import read_table, require_columns


def _matches_ham(h: list[str] | None) -> bool:
    return h is not None and {"lesion_id", "image_id", "dx"} <= set(h)


def _read_ham10000(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    for table in tables:
        df = read_table(table)
        require_columns(df, table, ("lesion_id", "image_id", "dx"))
        for rec in df.to_dict("records"):
            image_id = rec["image_id"]
            file, warn = index.find(image_id)
            add_row(src, image_id=image_id, file=file, wanted=image_id,
                    decision=resolve_label("", rec["dx"], label_map), source="HAM10000",
                    lesion_id=rec["lesion_id"], age=rec.get("age", ""), sex=rec.get("sex", ""),
                    site=rec.get("localization", ""), lookup_warning=warn)


LAYOUT = Layout("ham10000", "HAM10000_metadata.csv (lesion_id, image_id, dx, …) + image folders",
                _matches_ham, _read_ham10000)

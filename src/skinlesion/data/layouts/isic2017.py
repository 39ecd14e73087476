"""``isic2017``: ISIC 2017 ground truth (melanoma, seborrheic keratosis) and the header-less
ISIC 2016 tables; Training / Validation / Test file names give the split."""

from __future__ import annotations

from pathlib import Path

from skinlesion.data.labels import LabelDecision, LabelMap, resolve_label
from skinlesion.data.layouts.base import (
    Layout,
    SourceRows,
    add_row,
    normalise_given_splits,
    split_from_name,
)
from skinlesion.data.layouts.files import ImageIndex
from skinlesion.data.layouts.tables import read_table, require_columns, to_float, year_in_name


def _matches_isic2017(h: list[str] | None) -> bool:
    return h is None or {"image_id", "melanoma", "seborrheic_keratosis"} <= set(h)


def _read_isic2017(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    given = normalise_given_splits({t.name: split_from_name(t.stem) for t in tables})
    for table in tables:
        df = read_table(table)
        if "melanoma" in df.columns or "label" not in df.columns:
            require_columns(df, table, ("image_id", "melanoma", "seborrheic_keratosis"))
        year = year_in_name(table.name, default="2017")
        for rec in df.to_dict("records"):
            image_id = rec.get("image_id", "")
            if "melanoma" in df.columns:
                mel, sk = (to_float(rec.get("melanoma")), to_float(rec.get("seborrheic_keratosis")))
                if mel is None or sk is None or mel not in (0, 1) or sk not in (0, 1) or mel + sk > 1:
                    decision = LabelDecision(None, "", "ground truth must be 0/1 with at most one "
                                             f"class set (melanoma={rec.get('melanoma')!r}, "
                                             f"seborrheic_keratosis={rec.get('seborrheic_keratosis')!r})")
                else:
                    name = "melanoma" if mel else "seborrheic keratosis" if sk else "nevus"
                    decision = resolve_label("", name, label_map)
            else:
                decision = resolve_label(rec.get("label", ""), "", label_map)
            file, warn = index.find(image_id)
            add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                    split=given[table.name], source=f"ISIC{year}", lookup_warning=warn)


LAYOUT = Layout("isic2017",
                "ISIC 2016/2017 ground truth (image_id, melanoma, seborrheic_keratosis)",
                _matches_isic2017, _read_isic2017)

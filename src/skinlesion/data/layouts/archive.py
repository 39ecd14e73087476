"""``archive``: an ISIC Archive download (``isic image download``): ``metadata.csv`` with
``isic_id`` and ``diagnosis_1…5`` (or ``benign_malignant``)."""

from __future__ import annotations

from pathlib import Path

from skinlesion.data.labels import LabelMap, resolve_label
from skinlesion.data.layouts.base import Layout, SourceRows, add_row
from skinlesion.data.layouts.files import ImageIndex
from skinlesion.data.layouts.tables import read_table, require_columns


def _matches_archive(h: list[str] | None) -> bool:
    return h is not None and "isic_id" in h and bool({"diagnosis_1", "benign_malignant"} & set(h))


def _read_archive(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    for table in tables:
        df = read_table(table)
        require_columns(df, table, ("isic_id",))
        diag_cols = [c for c in ("diagnosis_5", "diagnosis_4", "diagnosis_3", "diagnosis_2")
                     if c in df.columns]
        for rec in df.to_dict("records"):
            image_id = rec["isic_id"]
            # diagnosis_1 is the benign/malignant/indeterminate level of the ISIC taxonomy;
            # the deepest filled level is the most specific diagnosis.
            label = rec.get("diagnosis_1", "") or rec.get("benign_malignant", "")
            diagnosis = next((rec[c] for c in diag_cols if rec.get(c)), rec.get("diagnosis", ""))
            decision = resolve_label(label, diagnosis, label_map)
            file, warn = index.find(image_id)
            add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                    source="ISIC-archive", patient_id=rec.get("patient_id", ""),
                    lesion_id=rec.get("lesion_id", ""), age=rec.get("age_approx", ""),
                    sex=rec.get("sex", ""), site=rec.get("anatom_site_general", ""),
                    lookup_warning=warn)


LAYOUT = Layout("archive", "ISIC Archive download: metadata.csv (isic_id, diagnosis_1…5, …)",
                _matches_archive, _read_archive)

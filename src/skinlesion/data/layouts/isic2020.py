"""``isic2020``: the ISIC 2020 training CSV (v1 or v2), its JPEG folder and its duplicates list."""

from __future__ import annotations

from pathlib import Path

from skinlesion.data.labels import LabelDecision, LabelMap, resolve_label
from skinlesion.data.layouts.base import Layout, SourceError, SourceRows, add_row
from skinlesion.data.layouts.files import ImageIndex
from skinlesion.data.layouts.tables import read_table, require_columns


def _matches_isic2020(h: list[str] | None) -> bool:
    return h is not None and {"image_name", "patient_id", "target"} <= set(h)


def _read_isic2020(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    duplicates = _isic2020_duplicates(root, src)
    # v2 first: it has every v1 column plus lesion_id. An image listed by both tables
    # (v1 and v2 side by side) is read once.
    seen: set[str] = set()
    for table in sorted(tables, key=lambda t: ("v2" not in t.stem.lower(), t.name)):
        df = read_table(table)
        require_columns(df, table, ("image_name", "target"))
        repeated = 0
        for rec in df.to_dict("records"):
            image_id = rec["image_name"]
            if image_id in seen:
                repeated += 1
                continue
            seen.add(image_id)
            if image_id in duplicates:
                src.reject(image_id, image_id, duplicates[image_id])
                continue
            label = rec.get("target", "") or rec.get("benign_malignant", "")
            decision = resolve_label(label, rec.get("diagnosis", ""), label_map)
            if rec.get("target") and rec.get("benign_malignant"):
                decision = _cross_check(decision, rec["benign_malignant"], label_map)
            file, warn = index.find(image_id)
            add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                    source="ISIC2020", patient_id=rec.get("patient_id", ""),
                    lesion_id=rec.get("lesion_id", ""), age=rec.get("age_approx", ""), sex=rec.get("sex", ""),
                    site=rec.get("anatom_site_general_challenge", rec.get("anatom_site_general", "")),
                    lookup_warning=warn)
        if repeated:
            src.warnings.append(f"{table.name}: {repeated} image(s) already listed by another "
                                "ground-truth table; read once")


def _isic2020_duplicates(root: Path, src: SourceRows) -> dict[str, str]:
    """Second members of the pairs in ``ISIC_2020_Training_Duplicates.csv``, if present."""
    out: dict[str, str] = {}
    for path in sorted(root.glob("*[Dd]uplicates*.csv")):
        try:
            df = read_table(path)
        except SourceError as exc:
            src.warnings.append(str(exc))
            continue
        if {"image_name_1", "image_name_2"} <= set(df.columns):
            for a, b in zip(df["image_name_1"], df["image_name_2"], strict=True):
                out[b] = f"listed as a duplicate of {a} in {path.name}"
    return out


def _cross_check(decision: LabelDecision, name: str, label_map: LabelMap) -> LabelDecision:
    """Reject when a second label column (``benign_malignant``) contradicts the first."""
    if decision.label is None:
        return decision
    other = resolve_label(name, "", label_map)
    if other.label is not None and other.label != decision.label:
        return LabelDecision(None, decision.diagnosis,
                             f"target {decision.label} contradicts benign_malignant {name!r}")
    return decision


LAYOUT = Layout("isic2020",
                "ISIC 2020 training CSV (image_name, patient_id, …, target) + JPEG folder",
                _matches_isic2020, _read_isic2020)

"""``isic2019``: ISIC 2019 (and ISIC 2018 Task 3) one-hot ground truth, with the optional
``…Metadata.csv`` for age, sex, site and lesion."""

from __future__ import annotations

from pathlib import Path

from skinlesion.data.labels import LabelDecision, LabelMap, resolve_label
from skinlesion.data.layouts.base import (
    Layout,
    SourceError,
    SourceRows,
    add_row,
    normalise_given_splits,
    split_from_name,
)
from skinlesion.data.layouts.files import ImageIndex
from skinlesion.data.layouts.tables import (
    read_header,
    read_table,
    require_columns,
    to_float,
    year_in_name,
)

_ONEHOT = ("mel", "nv", "bcc", "ak", "akiec", "bkl", "df", "vasc", "scc", "unk")


def _matches_isic2019(h: list[str] | None) -> bool:
    return h is not None and "image" in h and len(set(h) & set(_ONEHOT)) >= 3


def _read_isic2019(root: Path, tables: list[Path], label_map: LabelMap, src: SourceRows) -> None:
    index = ImageIndex(root, src.skip)
    meta = _isic2019_metadata(root, src)
    given = normalise_given_splits({t.name: split_from_name(t.stem) for t in tables})
    for table in tables:
        df = read_table(table)
        require_columns(df, table, ("image",))
        classes = [c for c in df.columns if c in _ONEHOT]
        if not classes:
            raise SourceError(f"{table}: no one-hot class columns (MEL, NV, BCC, …); columns "
                              f"found: {list(df.columns)}")
        year = year_in_name(table.name, default="2019")
        for rec in df.to_dict("records"):
            image_id = rec.get("image", "")
            values = {c: to_float(rec.get(c)) for c in classes}
            hot = [c for c, v in values.items() if v == 1]
            if any(v not in (0, 1) for v in values.values()) or len(hot) != 1:
                decision = LabelDecision(None, "", "one-hot ground truth must have exactly one "
                                         f"class set to 1 (got {hot or 'none'})")
            else:
                decision = resolve_label("", hot[0], label_map)
            m = meta.get(image_id, {})
            file, warn = index.find(image_id)
            add_row(src, image_id=image_id, file=file, wanted=image_id, decision=decision,
                    split=given[table.name], source=f"ISIC{year}", lesion_id=m.get("lesion_id", ""),
                    age=m.get("age_approx", ""), sex=m.get("sex", ""),
                    site=m.get("anatom_site_general", ""), lookup_warning=warn)


def _isic2019_metadata(root: Path, src: SourceRows) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for path in sorted(root.glob("*[Mm]etadata*.csv")):
        header = read_header(path) or []
        if "image" not in header:
            continue
        try:
            df = read_table(path)
        except SourceError as exc:
            src.warnings.append(str(exc))
            continue
        for rec in df.to_dict("records"):
            out.setdefault(rec["image"], rec)
        src.tables.append(path)
    return out


LAYOUT = Layout("isic2019", "ISIC 2018/2019 one-hot ground truth (image, MEL, NV, BCC, …)",
                _matches_isic2019, _read_isic2019)

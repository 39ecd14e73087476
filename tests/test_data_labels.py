"""Label map: defaults, normalisation, overrides, and the explicit-label cross-check."""

from __future__ import annotations

import pytest

from skinlesion.data.labels import (
    LabelMap,
    normalize_name,
    parse_binary,
    parse_label_map,
    resolve_label,
)


@pytest.mark.parametrize(("name", "label"), [
    ("melanoma", 1), ("MEL", 1), ("Melanoma in situ", 1), ("invasive melanoma", 1),
    ("basal cell carcinoma", 1), ("bcc", 1), ("Squamous_Cell_Carcinoma", 1), ("scc", 1),
    ("nevus", 0), ("nv", 0), ("seborrheic_keratosis", 0), ("Seborrheic Keratosis", 0),
    ("bkl", 0), ("benign keratosis", 0), ("dermatofibroma", 0), ("df", 0),
    ("vascular lesion", 0), ("VASC", 0), ("solar lentigo", 0), ("lentigo NOS", 0),
    ("benign", 0), ("Malignant", 1),
])
def test_default_map(name: str, label: int) -> None:
    hit = LabelMap().lookup(name)
    assert hit is not None and hit[1] == label


@pytest.mark.parametrize("name", ["actinic keratosis", "akiec", "AK", "Indeterminate",
                                  "indeterminate/malignant", "unknown", "UNK"])
def test_excluded_by_default(name: str) -> None:
    decision = resolve_label("", name, LabelMap())
    assert decision.label is None
    assert "excluded" in (decision.reason or "")
    assert "--label-map" in (decision.reason or "")


def test_normalize_name() -> None:
    assert normalize_name("  Seborrheic_Keratosis ") == "seborrheic keratosis"
    assert normalize_name("Melanoma, NOS") == "melanoma nos"
    assert normalize_name(None) == ""


def test_canonical_names_collapse_spellings() -> None:
    lm = LabelMap()
    assert lm.canonical("NV") == "nevus"
    assert lm.canonical("bkl") == "benign keratosis"
    assert lm.canonical("mel") == "melanoma"
    assert lm.canonical("Something New") == "something new"


def test_overrides_keep_excluded_and_remap_aliases() -> None:
    lm = LabelMap({"actinic keratosis": 0})
    assert lm.lookup("akiec") == ("actinic keratosis", 0)
    assert resolve_label("", "AK", lm).label == 0
    lm2 = LabelMap({"cafe au lait macule": None, "my_class": 1})
    assert lm2.lookup("cafe au lait macule") == ("cafe au lait macule", None)
    assert lm2.lookup("My Class") == ("my class", 1)
    with pytest.raises(ValueError, match="must map to 0, 1 or exclude"):
        LabelMap({"x": 2})  # type: ignore[dict-item]


def test_parse_label_map() -> None:
    assert parse_label_map("nevus=0,seborrheic_keratosis=0,melanoma=1") == {
        "nevus": 0, "seborrheic_keratosis": 0, "melanoma": 1}
    assert parse_label_map(["ak=exclude", "x = malignant"]) == {"ak": None, "x": 1}
    assert parse_label_map(None) == {}
    for bad in ("nevus", "nevus=2", "=1"):
        with pytest.raises(ValueError, match="bad label-map entry"):
            parse_label_map(bad)


def test_parse_binary() -> None:
    assert [parse_binary(v) for v in ("0", "1", "0.0", "1.0", True, " 1 ")] == [0, 1, 0, 1, 1, 1]
    assert parse_binary("2") is None and parse_binary("") is None and parse_binary("mel") is None


def test_explicit_label_is_authoritative_but_cross_checked() -> None:
    lm = LabelMap()
    # ISIC 2020: 'unknown' diagnosis with target 0 is a kept benign image.
    assert resolve_label("0", "unknown", lm).label == 0
    assert resolve_label("1", "melanoma", lm).label == 1
    conflict = resolve_label("0", "melanoma", lm)
    assert conflict.label is None and "contradicts" in (conflict.reason or "")
    assert resolve_label("malignant", "nevus", lm).label is None
    # A diagnosis the map does not know cannot contradict anything.
    kept = resolve_label("1", "merkel cell carcinoma", lm)
    assert kept.label == 1 and kept.diagnosis == "merkel cell carcinoma"


def test_unknown_and_missing_labels_are_rejected_with_a_fix() -> None:
    lm = LabelMap()
    unknown = resolve_label("", "weird thing", lm)
    assert unknown.label is None and "unknown diagnosis 'weird thing'" in (unknown.reason or "")
    assert "--label-map" in (unknown.reason or "")
    assert "unknown label" in (resolve_label("class_7", "", lm).reason or "")
    assert resolve_label("", "", lm).reason == "no label and no diagnosis"


def test_label_from_name_sets_diagnosis() -> None:
    d = resolve_label("seborrheic_keratosis", "", LabelMap())
    assert (d.label, d.diagnosis, d.reason) == (0, "seborrheic keratosis", None)

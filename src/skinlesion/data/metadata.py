"""Clinical metadata vocabulary: age, sex and anatomic site as the manifest stores them.

The manifest keeps three metadata columns (``age``, ``sex``, ``site``) in one
vocabulary whatever layout they came from, so the model's metadata branch sees the
same categories for ISIC 2019, ISIC 2020, HAM10000 and the ISIC Archive:

* ``age`` — approximate age in years (float); ``0`` is a real value (infants),
  unknown is empty (NaN). Values outside ``[0, 120]`` are invalid.
* ``sex`` — ``female`` or ``male``; unknown is empty.
* ``site`` — the ISIC 2020 ``anatom_site_general`` vocabulary (:data:`SITE_VALUES`);
  the ISIC 2019 torso subdivisions fold into ``torso``; unknown is empty.

Invalid values never crash and never drop an image: they become missing and the
caller reports them per row.
"""

from __future__ import annotations

import math

SEX_VALUES: tuple[str, ...] = ("female", "male")
SITE_VALUES: tuple[str, ...] = (
    "head/neck", "upper extremity", "lower extremity", "torso", "palms/soles", "oral/genital",
)
METADATA_FIELDS: tuple[str, ...] = ("age", "sex", "site")
AGE_RANGE: tuple[float, float] = (0.0, 120.0)

_MISSING = {"", "nan", "none", "null", "na", "n/a", "unknown", "unk", "?", "-"}
_SEX_ALIASES = {"female": "female", "f": "female", "woman": "female",
                "male": "male", "m": "male", "man": "male"}
# ISIC 2019 / Archive spellings and HAM10000 ``localization`` values (documented in
# docs/DATA.md); every key is lower case with single spaces.
_SITE_ALIASES: dict[str, str] = {
    "head/neck": "head/neck", "head neck": "head/neck", "head": "head/neck",
    "neck": "head/neck", "face": "head/neck", "scalp": "head/neck", "ear": "head/neck",
    "upper extremity": "upper extremity", "upper limb": "upper extremity",
    "hand": "upper extremity", "arm": "upper extremity",
    "lower extremity": "lower extremity", "lower limb": "lower extremity",
    "foot": "lower extremity", "leg": "lower extremity",
    "torso": "torso", "anterior torso": "torso", "posterior torso": "torso",
    "lateral torso": "torso", "trunk": "torso", "back": "torso", "chest": "torso",
    "abdomen": "torso",
    "palms/soles": "palms/soles", "palms soles": "palms/soles", "acral": "palms/soles",
    "oral/genital": "oral/genital", "oral genital": "oral/genital", "genital": "oral/genital",
    # Further spellings seen in ISIC Archive / derm7pt-style exports; each names one
    # general site unambiguously (``buttocks``, ``shoulder``, ``hip`` do not and stay invalid).
    "upper extremities": "upper extremity", "upper arm": "upper extremity",
    "forearm": "upper extremity", "lower extremities": "lower extremity",
    "thigh": "lower extremity", "lower leg": "lower extremity",
    "palm": "palms/soles", "palms": "palms/soles", "sole": "palms/soles",
    "soles": "palms/soles", "oral": "oral/genital", "genitalia": "oral/genital",
    "anterior trunk": "torso", "posterior trunk": "torso", "upper back": "torso",
    "lower back": "torso",
}


HAM_LOCALIZATION: dict[str, str] = {
    "abdomen": "torso", "back": "torso", "chest": "torso", "trunk": "torso",
    "face": "head/neck", "scalp": "head/neck", "ear": "head/neck", "neck": "head/neck",
    "upper extremity": "upper extremity", "hand": "upper extremity",
    "lower extremity": "lower extremity", "foot": "lower extremity",
    "acral": "palms/soles", "genital": "oral/genital", "unknown": "",
}
"""HAM10000 ``localization`` → :data:`SITE_VALUES` (documented in docs/DATA.md). ``hand`` and
``foot`` stay extremities (a hand lesion need not be acral); ``trunk`` is plain ``torso``
(ISIC 2020's vocabulary does not split the torso)."""

ID_FIELDS: tuple[str, ...] = ("patient_id", "lesion_id")
"""The grouping ids that metadata tables may carry beside :data:`METADATA_FIELDS`."""

METADATA_COLUMNS: dict[str, tuple[str, ...]] = {
    "age": ("age", "age_approx", "age_approximate"),
    "sex": ("sex", "gender"),
    "site": ("site", "anatom_site_general", "anatom_site_general_challenge", "localization",
             "anatomic_site", "anatom_site"),
    "patient_id": ("patient_id", "patient"),
    "lesion_id": ("lesion_id", "lesion"),
}
"""Column names (lower case, spaces as ``_``) read for each field, first match wins: the
generic CSV layout and metadata sidecars use the same names."""


class MetadataValueError(ValueError):
    """A metadata value outside the vocabulary (the caller turns it into missing)."""


def _clean(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).strip().lower().replace("_", " ").split())


def normalize_age(value: object) -> float:
    """Age in years as a float, NaN when unknown.

    Raises:
        MetadataValueError: for a value that is not a number in ``AGE_RANGE``.
    """
    text = _clean(value)
    if text in _MISSING:
        return math.nan
    try:
        age = float(text)
    except ValueError:
        raise MetadataValueError(f"age {value!r} is not a number") from None
    if not math.isfinite(age) or not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        raise MetadataValueError(f"age {value!r} is outside {AGE_RANGE[0]:g}–{AGE_RANGE[1]:g}")
    return age


def normalize_sex(value: object) -> str:
    """``female``/``male``, ``""`` when unknown.

    Raises:
        MetadataValueError: for any other value.
    """
    text = _clean(value)
    if text in _MISSING:
        return ""
    if text not in _SEX_ALIASES:
        raise MetadataValueError(f"sex {value!r} is not one of {list(SEX_VALUES)}")
    return _SEX_ALIASES[text]


def normalize_site(value: object) -> str:
    """A value of :data:`SITE_VALUES`, ``""`` when unknown.

    Raises:
        MetadataValueError: for a site the vocabulary does not know.
    """
    text = _clean(value)
    if text in _MISSING:
        return ""
    if text not in _SITE_ALIASES:
        raise MetadataValueError(f"anatomic site {value!r} is not in the vocabulary "
                                 f"{list(SITE_VALUES)}")
    return _SITE_ALIASES[text]


_NORMALIZERS = {"age": normalize_age, "sex": normalize_sex, "site": normalize_site}


def clean_id(value: object) -> str:
    """A patient or lesion id as text, ``""`` for empty or a missing-value word."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else str(value).strip()
    return "" if _clean(text) in _MISSING else text


def normalize_metadata(values: dict[str, object]) -> tuple[dict[str, object], list[dict[str, str]]]:
    """Normalise the metadata fields present in ``values``; invalid values become missing.

    Args:
        values: Any of ``age``, ``sex``, ``site``, ``patient_id``, ``lesion_id`` as raw
            cells (other keys are ignored).

    Returns:
        ``(normalised, problems)``: the fields of ``values`` in manifest form (age NaN,
        text ``""`` when unknown) and one ``{"field", "value", "reason"}`` dict per value
        that was given but could not be used.
    """
    out: dict[str, object] = {}
    problems: list[dict[str, str]] = []
    for name, norm in _NORMALIZERS.items():
        if name not in values:
            continue
        try:
            out[name] = norm(values[name])
        except MetadataValueError as exc:
            out[name] = math.nan if name == "age" else ""
            problems.append({"field": name, "value": str(values[name]), "reason": str(exc)})
    for name in ID_FIELDS:
        if name in values:
            out[name] = clean_id(values[name])
    return out, problems


def is_known(value: object) -> bool:
    """Whether a normalised manifest cell holds a value (not NaN, not empty)."""
    if value is None:
        return False
    if isinstance(value, float):
        return not math.isnan(value)
    return str(value) != ""

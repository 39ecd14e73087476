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
}


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

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

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


# === Encoding for the model's metadata branch ===================================

MISSING_MODES: tuple[str, ...] = ("flags", "impute")


def _lenient(fn: Any, value: object) -> Any:
    try:
        return fn(value)
    except MetadataValueError:
        return fn("")


@dataclass(frozen=True)
class MetadataEncoder:
    """Age, sex and site → the fixed-length float vector the model's ``metadata`` input takes.

    The layout of the vector (stored in ``model_spec.json`` so every path encodes alike):

    * ``age`` — ``(age − age_mean) / age_std``; unknown → 0 (the training mean);
    * ``sex`` — one-hot over :data:`SEX_VALUES`;
    * ``site`` — one-hot over :data:`SITE_VALUES`.

    Unknown values depend on ``missing``: ``"flags"`` leaves the one-hot at zero and adds
    one ``<field>_missing`` flag per field; ``"impute"`` fills the one-hot with the
    training split's category frequencies and adds no flag (the model cannot tell an
    unknown value from an average one as directly).

    Attributes:
        fields: Which of age, sex, site are used, in :data:`METADATA_FIELDS` order.
        missing: ``"flags"`` or ``"impute"``.
        age_mean: Mean age of the training split (years).
        age_std: Standard deviation of age on the training split.
        sex_prior: Training frequencies of :data:`SEX_VALUES` (used by ``impute``).
        site_prior: Training frequencies of :data:`SITE_VALUES` (used by ``impute``).
    """

    fields: tuple[str, ...] = METADATA_FIELDS
    missing: str = "flags"
    age_mean: float = 50.0
    age_std: float = 20.0
    sex_prior: tuple[float, ...] = (0.5, 0.5)
    site_prior: tuple[float, ...] = tuple(1.0 / len(SITE_VALUES) for _ in SITE_VALUES)

    def __post_init__(self) -> None:
        bad = [f for f in self.fields if f not in METADATA_FIELDS]
        if bad or not self.fields:
            raise ValueError(f"metadata fields must be a non-empty subset of "
                             f"{list(METADATA_FIELDS)}, got {list(self.fields)}")
        if self.missing not in MISSING_MODES:
            raise ValueError(f"missing must be one of {list(MISSING_MODES)}, got {self.missing!r}")

    @classmethod
    def fit(cls, frame: Any, fields: Sequence[str], missing: str = "flags") -> MetadataEncoder:
        """Fit the scaling and priors on a manifest frame (the training split).

        Args:
            frame: Rows with ``age``, ``sex``, ``site`` columns (missing columns = unknown).
            fields: Subset of ``("age", "sex", "site")``.
            missing: ``"flags"`` or ``"impute"``.
        """
        order = tuple(f for f in METADATA_FIELDS if f in set(fields))
        ages, sexes, sites = _columns(frame)
        known = ages[np.isfinite(ages)]
        mean = float(known.mean()) if known.size else 50.0
        std = float(known.std()) if known.size > 1 and known.std() > 0 else 20.0
        return cls(fields=order, missing=missing, age_mean=mean, age_std=std,
                   sex_prior=_prior(sexes, SEX_VALUES), site_prior=_prior(sites, SITE_VALUES))

    @property
    def names(self) -> list[str]:
        """Name of every position of the vector."""
        out: list[str] = []
        flags = self.missing == "flags"
        if "age" in self.fields:
            out += ["age"] + (["age_missing"] if flags else [])
        if "sex" in self.fields:
            out += [f"sex={v}" for v in SEX_VALUES] + (["sex_missing"] if flags else [])
        if "site" in self.fields:
            out += [f"site={v}" for v in SITE_VALUES] + (["site_missing"] if flags else [])
        return out

    @property
    def dim(self) -> int:
        """Length of the vector."""
        return len(self.names)

    def encode(self, frame: Any) -> np.ndarray:
        """``(N, dim)`` float32 for rows with ``age``/``sex``/``site`` (values normalised leniently).

        ``frame`` may be a DataFrame, a list of dicts, or a dict of columns; an invalid
        value counts as unknown.
        """
        ages, sexes, sites = _columns(frame)
        n = len(ages)
        flags = self.missing == "flags"
        parts: list[np.ndarray] = []
        if "age" in self.fields:
            known = np.isfinite(ages)
            z = np.where(known, (np.nan_to_num(ages) - self.age_mean) / self.age_std, 0.0)
            parts.append(z[:, None])
            if flags:
                parts.append((~known).astype(np.float64)[:, None])
        for name, values, vocab, prior in (("sex", sexes, SEX_VALUES, self.sex_prior),
                                           ("site", sites, SITE_VALUES, self.site_prior)):
            if name not in self.fields:
                continue
            onehot = np.zeros((n, len(vocab)))
            for j, v in enumerate(vocab):
                onehot[:, j] = values == v
            unknown = onehot.sum(1) == 0
            if flags:
                parts += [onehot, unknown.astype(np.float64)[:, None]]
            else:
                onehot[unknown] = np.asarray(prior)
                parts.append(onehot)
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((n, 0),
                                                                                      np.float32)

    def field_matrix(self) -> np.ndarray:
        """``(len(fields), dim)`` 0/1: which vector positions belong to each field."""
        names = self.names
        out = np.zeros((len(self.fields), len(names)), dtype=np.float32)
        for k, f in enumerate(self.fields):
            for j, n in enumerate(names):
                out[k, j] = float(n == f or n.startswith(f"{f}=") or n == f"{f}_missing")
        return out

    def blank(self) -> np.ndarray:
        """``(dim,)`` the encoding of a row whose fields are all unknown."""
        return self.encode([{"age": "", "sex": "", "site": ""}])[0]

    def hide(self, encoded: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        """Metadata dropout: each field of each row looks unknown with probability ``rate``."""
        if rate <= 0:
            return encoded
        draws = (rng.random((len(encoded), len(self.fields))) < rate).astype(np.float32)
        mask = draws @ self.field_matrix()
        return (encoded * (1.0 - mask) + self.blank()[None, :] * mask).astype(np.float32)

    def missing_mask(self, frame: Any) -> np.ndarray:
        """``(N,)`` True where any used field is unknown."""
        ages, sexes, sites = _columns(frame)
        miss = np.zeros(len(ages), dtype=bool)
        if "age" in self.fields:
            miss |= ~np.isfinite(ages)
        if "sex" in self.fields:
            miss |= sexes == ""
        if "site" in self.fields:
            miss |= sites == ""
        return miss

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in ``model_spec.json``)."""
        return {"fields": list(self.fields), "missing": self.missing,
                "age_mean": self.age_mean, "age_std": self.age_std,
                "sex_prior": list(self.sex_prior), "site_prior": list(self.site_prior),
                "names": self.names}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetadataEncoder:
        """Inverse of :meth:`to_dict` (``names`` is derived, and ignored)."""
        return cls(fields=tuple(data["fields"]), missing=str(data.get("missing", "flags")),
                   age_mean=float(data["age_mean"]), age_std=float(data["age_std"]),
                   sex_prior=tuple(float(v) for v in data["sex_prior"]),
                   site_prior=tuple(float(v) for v in data["site_prior"]))


def parse_fields(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"age,sex,site"`` (or a list) → the ordered field tuple; ``""``/None → ``()``.

    Raises:
        ValueError: naming an unknown field and the valid ones.
    """
    if spec is None:
        return ()
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    bad = [s for s in items if s not in METADATA_FIELDS]
    if bad:
        raise ValueError(f"unknown metadata field(s) {bad}; valid: {', '.join(METADATA_FIELDS)}")
    return tuple(f for f in METADATA_FIELDS if f in items)


def _columns(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:

    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    n = len(df)

    def col(key: str) -> list[Any]:
        return list(df[key]) if key in df.columns else [""] * n

    ages = np.array([_lenient(normalize_age, v) for v in col("age")], dtype=np.float64)
    sexes = np.array([_lenient(normalize_sex, v) for v in col("sex")], dtype=object)
    sites = np.array([_lenient(normalize_site, v) for v in col("site")], dtype=object)
    return ages, sexes, sites


def _prior(values: np.ndarray, vocab: tuple[str, ...]) -> tuple[float, ...]:
    counts = np.array([(values == v).sum() for v in vocab], dtype=np.float64)
    if counts.sum() == 0:
        return tuple(1.0 / len(vocab) for _ in vocab)
    return tuple(float(c) for c in counts / counts.sum())
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

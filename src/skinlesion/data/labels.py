"""Diagnosis names → binary labels: the default ISIC map and user overrides.

Every layout reader turns what its source says (a ``0/1`` target, a diagnosis
name, a class-folder name, a one-hot column) into one ``label`` through
:func:`resolve_label`, so the rules live in one place:

* an explicit ``0``/``1`` label (ISIC 2020 ``target``, a CSV ``label`` column,
  a folder named ``0``) is authoritative; a diagnosis given beside it is
  cross-checked, and a contradiction rejects the row (never a silent mislabel);
* otherwise the diagnosis (or class name) is looked up in the label map:
  malignant names → 1, benign names → 0; *excluded* names (actinic keratosis,
  indeterminate, unknown, …) and names the map does not know reject the row
  with a reason that says how to keep it (``--label-map name=0|1``).

Names are compared after :func:`normalize_name`: case, surrounding spaces,
underscores, hyphens, commas and slashes do not matter
(``Seborrheic_Keratosis`` = ``seborrheic keratosis``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

EXCLUDED: None = None
"""Map value for names that are dropped unless the user maps them."""

# canonical diagnosis, label (1 malignant, 0 benign, None excluded), aliases.
# Clinically distinct entities (melanoma in situ, SCC in situ) keep their own name so
# subgroup reports can separate them; spellings and abbreviations collapse.
_TABLE: tuple[tuple[str, int | None, tuple[str, ...]], ...] = (
    # === Malignant ===
    ("melanoma", 1, ("mel", "melanoma nos", "invasive melanoma", "melanoma invasive",
                     "malignant melanoma", "nodular melanoma", "superficial spreading melanoma",
                     "acral lentiginous melanoma")),
    ("melanoma in situ", 1, ("mis", "in situ melanoma")),
    ("lentigo maligna", 1, ("lentigo maligna melanoma", "lmm")),
    ("melanoma metastasis", 1, ("metastatic melanoma",)),
    ("basal cell carcinoma", 1, ("bcc", "basal cell carcinomas")),
    ("squamous cell carcinoma", 1, ("scc", "squamous cell carcinoma invasive",
                                    "invasive squamous cell carcinoma",
                                    "squamous cell carcinoma nos")),
    ("squamous cell carcinoma in situ", 1, ("scc in situ", "bowen's disease", "bowens disease",
                                            "bowen disease")),
    ("malignant", 1, ("malignancy",)),
    # === Benign ===
    ("nevus", 0, ("nv", "nevi", "naevus", "naevi", "melanocytic nevus", "melanocytic nevi",
                  "nevus nos", "benign nevus")),
    ("seborrheic keratosis", 0, ("sk", "seborrhoeic keratosis", "seborrheic keratoses")),
    ("benign keratosis", 0, ("bkl", "benign keratosis like lesions", "benign keratosis like lesion",
                             "pigmented benign keratosis", "benign keratoses")),
    ("lichen planus like keratosis", 0, ("lplk", "lichenoid keratosis")),
    ("solar lentigo", 0, ("solar lentigines",)),
    ("lentigo", 0, ("lentigo nos", "lentigo simplex")),
    ("dermatofibroma", 0, ("df", "dermatofibromas")),
    ("vascular lesion", 0, ("vasc", "vascular lesions", "vascular")),
    ("angioma", 0, ("hemangioma", "haemangioma", "cherry angioma")),
    ("angiokeratoma", 0, ()),
    ("pyogenic granuloma", 0, ()),
    ("cafe au lait macule", 0, ("café au lait macule",)),
    ("benign", 0, ("benign (unspecified)", "benign unspecified")),
    # === Excluded unless mapped ===
    ("actinic keratosis", EXCLUDED, ("ak", "akiec", "actinic keratoses", "solar keratosis",
                                     "solar or actinic keratosis")),
    ("indeterminate", EXCLUDED, ()),
    ("indeterminate benign", EXCLUDED, ("indeterminate probably benign",)),
    ("indeterminate malignant", EXCLUDED, ("indeterminate probably malignant",)),
    ("atypical melanocytic proliferation", EXCLUDED, ("atypical melanocytic neoplasm",)),
    ("unknown", EXCLUDED, ("unk", "other")),
)

_SEPARATORS = re.compile(r"[\s_\-,/]+")


def normalize_name(name: object) -> str:
    """Lower-case ``name`` and collapse spaces, underscores, hyphens, commas and slashes.

    >>> normalize_name("  Seborrheic_Keratosis ")
    'seborrheic keratosis'
    """
    text = "" if name is None else str(name)
    return _SEPARATORS.sub(" ", text.strip().lower()).strip()


@dataclass(frozen=True)
class LabelDecision:
    """Outcome of :func:`resolve_label`.

    Attributes:
        label: 0 or 1, or None when the row is rejected.
        diagnosis: Canonical diagnosis name ("" when none was given).
        reason: Why the row is rejected (None when it is kept).
    """

    label: int | None
    diagnosis: str
    reason: str | None = None


class LabelMap:
    """Names → (canonical diagnosis, label): the ISIC defaults plus user overrides.

    Args:
        overrides: ``{name: 0 | 1 | None}``; None excludes the name. Overrides win over
            the defaults (``{"actinic keratosis": 0}`` keeps AK as benign).
        use_defaults: Start from the default ISIC table (True) or from nothing.
    """

    def __init__(self, overrides: Mapping[str, int | None] | None = None,
                 use_defaults: bool = True) -> None:
        self._entries: dict[str, tuple[str, int | None]] = {}
        if use_defaults:
            for canonical, label, aliases in _TABLE:
                for alias in (canonical, *aliases):
                    self._entries[normalize_name(alias)] = (canonical, label)
        self.overrides: dict[str, int | None] = {}
        for name, label in (overrides or {}).items():
            key = normalize_name(name)
            if label not in (0, 1, None):
                raise ValueError(f"label map: {name!r} must map to 0, 1 or exclude, got {label!r}")
            canonical = self._entries.get(key, (key, None))[0]
            # An override of a canonical name also re-maps its aliases (bkl → benign keratosis).
            for alias, (canon, _) in list(self._entries.items()):
                if canon == canonical:
                    self._entries[alias] = (canonical, label)
            self._entries[key] = (canonical, label)
            self.overrides[key] = label

    def lookup(self, name: object) -> tuple[str, int | None] | None:
        """``(canonical name, label or None if excluded)``, or None for an unknown name."""
        return self._entries.get(normalize_name(name))

    def canonical(self, name: object) -> str:
        """Canonical diagnosis for ``name`` (its normalised form when unknown)."""
        hit = self.lookup(name)
        return hit[0] if hit else normalize_name(name)

    def as_dict(self) -> dict[str, int | None]:
        """Every known name and its label (for the report and the docs)."""
        return {name: label for name, (_, label) in sorted(self._entries.items())}


def parse_label_map(spec: str | Iterable[str] | None) -> dict[str, int | None]:
    """Parse ``"nevus=0,seborrheic_keratosis=0,melanoma=1"`` (or several such strings).

    Values are ``0``, ``1``, ``benign``, ``malignant`` or ``exclude`` (also ``skip``,
    ``none``, ``-``). Raises ValueError on a malformed entry.
    """
    if spec is None:
        return {}
    parts: list[str] = []
    for item in [spec] if isinstance(spec, str) else spec:
        parts.extend(p for p in item.split(",") if p.strip())
    values = {"0": 0, "1": 1, "benign": 0, "malignant": 1, "exclude": None, "excluded": None,
              "skip": None, "none": None, "-": None}
    out: dict[str, int | None] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        v = value.strip().lower()
        if not sep or not key.strip() or v not in values:
            raise ValueError(f"bad label-map entry {part.strip()!r}: expected NAME=0, NAME=1 or "
                             "NAME=exclude")
        out[key.strip()] = values[v]
    return out


def parse_binary(value: object) -> int | None:
    """``0``/``1`` from ``0``, ``1``, ``0.0``, ``1.0``, ``True``/``False``; None otherwise."""
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower() if value is not None else ""
    if text in ("0", "0.0", "false"):
        return 0
    if text in ("1", "1.0", "true"):
        return 1
    return None


def resolve_label(label: object, diagnosis: object, label_map: LabelMap) -> LabelDecision:
    """Decide the binary label of one row.

    Args:
        label: An explicit label: ``0``/``1`` (authoritative), a name such as
            ``benign``/``malignant``/``melanoma``, or empty.
        diagnosis: A diagnosis name given beside the label, or empty.
        label_map: The name → label map.

    Returns:
        A :class:`LabelDecision`; ``reason`` is set when the row must be rejected
        (unknown or excluded name, no label, or a label contradicting the diagnosis).
    """
    diag_text = normalize_name(diagnosis)
    diag_hit = label_map.lookup(diag_text) if diag_text else None
    canonical = diag_hit[0] if diag_hit else diag_text
    numeric = parse_binary(label)
    label_text = normalize_name(label) if numeric is None else ""

    if numeric is None and label_text:
        hit = label_map.lookup(label_text)
        if hit is None:
            return LabelDecision(None, canonical or label_text,
                                 f"unknown label {label_text!r} (map it with --label-map "
                                 f"'{label_text}=0' or '=1')")
        if hit[1] is None:
            return LabelDecision(None, canonical or hit[0],
                                 f"excluded diagnosis {hit[0]!r} (keep it with --label-map "
                                 f"'{hit[0]}=0' or '=1')")
        numeric = hit[1]
        if not canonical:
            canonical = hit[0]
    if numeric is None:
        if not diag_text:
            return LabelDecision(None, "", "no label and no diagnosis")
        if diag_hit is None:
            return LabelDecision(None, canonical,
                                 f"unknown diagnosis {diag_text!r} (map it with --label-map "
                                 f"'{diag_text}=0' or '=1')")
        if diag_hit[1] is None:
            return LabelDecision(None, canonical,
                                 f"excluded diagnosis {canonical!r} (keep it with --label-map "
                                 f"'{canonical}=0' or '=1')")
        return LabelDecision(diag_hit[1], canonical)
    if diag_hit is not None and diag_hit[1] is not None and diag_hit[1] != numeric:
        return LabelDecision(None, canonical,
                             f"label {numeric} contradicts diagnosis {canonical!r} "
                             f"(which maps to {diag_hit[1]})")
    return LabelDecision(numeric, canonical)

"""Patient-grouped, stratified train/val/test splits and cross-validation folds.

Why grouped: ISIC 2020 has about 16 images per patient. An image-level split puts
one patient's photos on both sides and the test AUC rewards recognising the
patient, not the lesion. Here every row belongs to a *group* — the connected
component of rows sharing a ``patient_id`` or a ``lesion_id`` (a row with
neither is its own group) — and a group never spans two splits or two folds.

Why stratified: splits keep the malignant share, and where several sources are
combined, each source's share (sources differ in crop, colour and prevalence).
The building block is scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold`:
the rows are cut into ``k`` grouped, stratified folds, ``k`` chosen so the
fractions are whole numbers of folds (80/10/10 → 10 folds: 8 train, 1 val, 1 test).

Reproducible: rows are sorted by ``image_id`` before anything random, and the
only randomness is the seeded shuffle of StratifiedGroupKFold, so the same
input and seed give the same split bit for bit, whatever the input order.

Splits the source gives (a ``test/`` folder, an official test table) are kept;
only rows without one are assigned. A group with some rows given and some not
follows the given rows.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from skinlesion.data.layouts.base import TRAINVAL

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
_MAX_FOLDS = 100


def parse_fractions(spec: str) -> tuple[float, float, float]:
    """Parse ``"80/10/10"`` (or ``0.8/0.1/0.1``, ``80,10,10``) into fractions summing to 1.

    Raises:
        ValueError: on anything but three non-negative numbers with a positive train part.
    """
    parts = [p for p in spec.replace(",", "/").replace(":", "/").split("/") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"split {spec!r}: expected TRAIN/VAL/TEST, e.g. 80/10/10") from None
    if len(values) != 3 or any(v < 0 or not math.isfinite(v) for v in values) or values[0] <= 0:
        raise ValueError(f"split {spec!r}: expected three non-negative numbers TRAIN/VAL/TEST "
                         "with TRAIN > 0, e.g. 80/10/10")
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


def group_ids(df: pd.DataFrame) -> np.ndarray:
    """Group number per row: rows sharing a patient_id or a lesion_id are one group.

    Connected components (union-find), so a lesion photographed under two patient
    ids, or a patient whose other rows carry only a lesion id, still stays together.
    """
    n = len(df)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for col in ("patient_id", "lesion_id"):
        if col not in df.columns:
            continue
        first: dict[str, int] = {}
        for i, value in enumerate(df[col].fillna("").astype(str).tolist()):
            if not value:
                continue
            j = first.setdefault(value, i)
            if j != i:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    _, dense = np.unique(roots, return_inverse=True)
    return dense.astype(np.int64)


def strata(df: pd.DataFrame, by: Sequence[str] = ("label", "source")) -> np.ndarray:
    """Stratum per row: the label, crossed with the source where there are several."""
    cols = [c for c in by if c in df.columns and df[c].nunique(dropna=False) > 1]
    if not cols:
        return np.zeros(len(df), dtype=np.int64)
    keys = df[cols].astype(str).agg("|".join, axis=1)
    _, codes = np.unique(keys.to_numpy(), return_inverse=True)
    return codes.astype(np.int64)


def assign_splits(
    df: pd.DataFrame,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 1,
    given: pd.Series | None = None,
) -> tuple[pd.Series, list[str]]:
    """Assign ``train``/``val``/``test`` to every row.

    Args:
        df: Rows with ``image_id``, ``label`` and optionally ``source``, ``patient_id``,
            ``lesion_id``.
        fractions: Train, val, test fractions (sum 1).
        seed: Seed of the shuffle; same seed and input → same split.
        given: Split the source gave each row: ``train``/``val``/``test``, ``trainval``
            (train or val, never test) or empty (free). Defaults to all free.

    Returns:
        ``(split, warnings)``: the split per row (index aligned with ``df``), and
        observations for the report (e.g. a group the source itself put in two splits).
    """
    notes: list[str] = []
    given = (pd.Series("", index=df.index) if given is None
             else given.reindex(df.index).fillna("").astype(str))
    out = given.where(given.isin(SPLIT_NAMES), "")
    if df.empty:
        return out, notes
    # Group numbers from the id-sorted rows, so they do not depend on the input order.
    ordered = _sorted(df)
    groups = pd.Series(group_ids(ordered), index=ordered.index).reindex(df.index)

    # A group follows a split the source gave to some of its rows (test wins over val
    # over train when the source itself is inconsistent: the safe side for leakage).
    pool = given.copy()
    for _, idx in groups.groupby(groups).groups.items():
        kinds = set(given.loc[idx]) - {""}
        definite = [s for s in ("test", "val", "train") if s in kinds]
        if len(definite) > 1:
            notes.append(f"the source puts one patient/lesion group in {definite} "
                         f"(image_ids {sorted(df.loc[idx, 'image_id'].astype(str))[:5]}); "
                         "kept as given")
        if definite:
            free = [i for i in idx if given.loc[i] in ("", TRAINVAL)]
            out.loc[free] = definite[0]
        elif TRAINVAL in kinds:
            pool.loc[idx] = TRAINVAL
    todo_free = out.eq("") & pool.eq("")
    todo_trainval = out.eq("") & pool.eq(TRAINVAL)
    if todo_free.any():
        out.loc[todo_free] = _grouped_split(df.loc[todo_free], groups[todo_free],
                                            list(fractions), SPLIT_NAMES, seed, notes)
    if todo_trainval.any():
        tv = [fractions[0], fractions[1]]
        out.loc[todo_trainval] = _grouped_split(df.loc[todo_trainval], groups[todo_trainval],
                                                tv, SPLIT_NAMES[:2], seed, notes)
    return out, notes


def assign_folds(df: pd.DataFrame, k: int, seed: int = 1) -> pd.Series:
    """Grouped, stratified cross-validation folds ``0..k-1`` for the train and val rows.

    Test rows get ``-1``: they stay out of cross-validation.

    Raises:
        ValueError: if ``k < 2`` or there are fewer groups than folds.
    """
    if k < 2:
        raise ValueError(f"folds must be at least 2, got {k}")
    fold = pd.Series(-1, index=df.index, dtype="int64")
    mask = df["split"].isin(("train", "val"))
    sub = _sorted(df.loc[mask])
    groups = group_ids(sub)
    if len(np.unique(groups)) < k:
        raise ValueError(f"{k} folds need at least {k} patient/lesion groups in train+val; "
                         f"found {len(np.unique(groups))}")
    fold.loc[sub.index] = _grouped_folds(sub, groups, k, seed)
    return fold


# === Internals ===


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    # Sorting first makes the result independent of input order (file-system listing
    # order differs between machines).
    return df.sort_values("image_id", kind="stable")


def fold_plan(fractions: Sequence[float], max_folds: int = _MAX_FOLDS) -> list[int]:
    """Whole numbers of folds per part: ``(0.8, 0.1, 0.1)`` → ``[8, 1, 1]`` (10 folds).

    The smallest fold count up to ``max_folds`` that expresses the fractions exactly;
    otherwise they are rounded on ``max_folds`` folds.
    """
    total = sum(fractions)
    fr = [Fraction(f / total).limit_denominator(max_folds) for f in fractions]
    k = math.lcm(*(f.denominator for f in fr))
    if k > max_folds:
        k = max_folds
    counts = [round(float(f) * k) for f in fr]
    counts[0] = k - sum(counts[1:])
    return counts


def _grouped_split(df: pd.DataFrame, groups: pd.Series, fractions: list[float],
                   names: Sequence[str], seed: int, notes: list[str]) -> pd.Series:
    """Split ``df`` into ``names`` by ``fractions``, grouped and stratified."""
    sub = _sorted(df)
    grp = groups.loc[sub.index].to_numpy()
    n_groups = len(np.unique(grp))
    counts = fold_plan(fractions)
    k = sum(counts)
    result = pd.Series(names[0], index=sub.index, dtype=object)
    if k > n_groups:
        # Too few groups for that many folds (a tiny data set): shrink the plan, dropping
        # the last parts (test, then val) when even one fold each is too many.
        scale = n_groups / k
        counts = [max(1, math.floor(c * scale)) if c else 0 for c in counts]
        while sum(counts) > n_groups:
            i = (int(np.argmax(counts)) if max(counts) > 1
                 else max(j for j, c in enumerate(counts) if c))
            counts[i] -= 1
        k = sum(counts)
        notes.append(f"only {n_groups} patient/lesion groups: split by {counts} of {k} folds "
                     f"for {list(names)}")
    if k < 2:
        result[:] = names[int(np.argmax(counts))]
        return result.reindex(df.index)
    fold_of = _grouped_folds(sub, grp, k, seed)
    # Folds 0..c0-1 → train, the next c1 → val, the rest → test.
    bounds = np.cumsum(counts)
    part = np.searchsorted(bounds, fold_of, side="right")
    result[:] = np.asarray(names, dtype=object)[part]
    return result.reindex(df.index)


def _grouped_folds(df: pd.DataFrame, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number per row from StratifiedGroupKFold.

    Strata fall back from label × source to label to none when every stratum is
    smaller than ``k`` (scikit-learn refuses to stratify then).
    """
    for by in (("label", "source"), ("label",), ()):
        y = strata(df, by)
        if np.bincount(y).max() >= k:
            break
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of = np.empty(len(df), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rare strata: fewer members than folds
        for f, (_, test_idx) in enumerate(cv.split(np.zeros(len(df)), y, groups)):
            fold_of[test_idx] = f
    return fold_of

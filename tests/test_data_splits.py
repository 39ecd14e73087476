"""Splits: no patient or lesion crosses splits, stratified, reproducible, given splits kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skinlesion.data.splits import (
    assign_folds,
    assign_splits,
    fold_plan,
    group_ids,
    parse_fractions,
)


def _frame(n: int, n_patients: int, seed: int = 0, sources: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "image_id": [f"ISIC_{i:07d}" for i in range(n)],
        "label": rng.integers(0, 2, n),
        "patient_id": [f"IP_{p}" for p in rng.integers(0, n_patients, n)],
        "lesion_id": "",
        "source": [f"S{s}" for s in rng.integers(0, sources, n)],
    })


def _crossing(df: pd.DataFrame, split: pd.Series, col: str) -> set[str]:
    ids = df[col].astype(str)
    per = pd.DataFrame({"id": ids, "split": split})[ids != ""]
    counts = per.groupby("id")["split"].nunique()
    return set(counts[counts > 1].index)


rows = st.lists(
    st.tuples(
        st.one_of(st.just(""), st.sampled_from([f"P{i}" for i in range(12)])),
        st.one_of(st.just(""), st.sampled_from([f"L{i}" for i in range(15)])),
        st.integers(0, 1),
        st.sampled_from(["", "", "", "train", "val", "test", "trainval"]),
        st.sampled_from(["A", "B"]),
    ),
    min_size=1, max_size=80,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows, seed=st.integers(0, 2**16), train=st.integers(1, 90))
def test_no_patient_or_lesion_crosses_splits(rows: list[tuple[str, str, int, str, str]],
                                             seed: int, train: int) -> None:
    df = pd.DataFrame(rows, columns=["patient_id", "lesion_id", "label", "given", "source"])
    df["image_id"] = [f"img{i:03d}" for i in range(len(df))]
    # A source may itself put one patient in two splits; that is kept (and reported),
    # so the property is checked where the source gave no conflicting splits.
    groups = group_ids(df)
    definite = df["given"].where(df["given"].isin(["train", "val", "test"]), "")
    conflicted = {g for g in set(groups)
                  if len(set(definite[groups == g]) - {""}) > 1}
    rest = (100 - train) / 2
    split, _ = assign_splits(df, parse_fractions(f"{train}/{rest}/{rest}"), seed=seed,
                             given=df["given"])
    assert set(split) <= {"train", "val", "test"}
    keep = ~pd.Series(groups).isin(conflicted).to_numpy()
    assert not _crossing(df[keep], split[keep], "patient_id")
    assert not _crossing(df[keep], split[keep], "lesion_id")
    # Given splits are kept; trainval rows never land in test.
    fixed = df["given"].isin(["train", "val", "test"])
    assert (split[fixed] == df.loc[fixed, "given"]).all()
    tv = (df["given"] == "trainval") & keep
    tv_free = tv & ~pd.Series(groups).map(
        lambda g: bool(set(definite[groups == g]) - {""})).to_numpy()
    assert not (split[tv_free] == "test").any()
    # Reproducible, and independent of the input row order.
    again, _ = assign_splits(df, parse_fractions(f"{train}/{rest}/{rest}"), seed=seed,
                             given=df["given"])
    assert split.equals(again)
    shuffled = df.sample(frac=1.0, random_state=seed)
    split_shuffled, _ = assign_splits(shuffled, parse_fractions(f"{train}/{rest}/{rest}"),
                                      seed=seed, given=shuffled["given"])
    assert split_shuffled.reindex(df.index).equals(split)


def test_group_ids_connect_patient_and_lesion() -> None:
    df = pd.DataFrame({"patient_id": ["P1", "", "", "P2", ""],
                       "lesion_id": ["L1", "L1", "L2", "L2", ""]})
    g = group_ids(df)
    assert g[0] == g[1]  # same lesion
    assert g[2] == g[3]  # lesion L2 links to patient P2
    assert g[0] != g[2] and g[4] not in (g[0], g[2])


def test_fractions_and_stratification_on_many_patients() -> None:
    df = _frame(3000, 400, seed=3, sources=3)
    split, notes = assign_splits(df, (0.8, 0.1, 0.1), seed=1)
    frac = split.value_counts(normalize=True)
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["test"] - 0.1) < 0.03
    assert not _crossing(df, split, "patient_id")
    rate = df.groupby(split)["label"].mean()
    assert rate.max() - rate.min() < 0.06
    for src in ("S0", "S1", "S2"):
        share = (df["source"] == src).groupby(split).mean()
        assert share.max() - share.min() < 0.06
    assert not notes


def test_seed_changes_split() -> None:
    df = _frame(500, 500, seed=1)
    a, _ = assign_splits(df, seed=1)
    b, _ = assign_splits(df, seed=2)
    assert not a.equals(b)


def test_other_fractions_and_tiny_data() -> None:
    df = _frame(400, 400, seed=2)
    split, _ = assign_splits(df, parse_fractions("70/15/15"), seed=0)
    assert abs((split == "val").mean() - 0.15) < 0.03
    tiny = _frame(4, 4)
    tiny["patient_id"] = ["P1", "P2", "P3", "P4"]
    split, notes = assign_splits(tiny, (0.8, 0.1, 0.1), seed=0)
    assert len(split) == 4 and notes and "only 4" in notes[0]
    one, _ = assign_splits(_frame(1, 1), (0.8, 0.1, 0.1), seed=0)
    assert one.tolist() == ["train"]
    no_test, _ = assign_splits(df, (0.9, 0.1, 0.0), seed=0)
    assert set(no_test) == {"train", "val"}


def test_fold_plan() -> None:
    assert fold_plan((0.8, 0.1, 0.1)) == [8, 1, 1]
    assert fold_plan((0.7, 0.15, 0.15)) == [14, 3, 3]
    assert fold_plan((8 / 9, 1 / 9)) == [8, 1]
    assert sum(fold_plan((0.34, 0.33, 0.33))) == 100


def test_parse_fractions() -> None:
    assert parse_fractions("80/10/10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_fractions("0.7,0.2,0.1") == pytest.approx((0.7, 0.2, 0.1))
    for bad in ("80/20", "a/b/c", "0/50/50", "-1/1/1"):
        with pytest.raises(ValueError, match="split"):
            parse_fractions(bad)


def test_folds_grouped_and_test_excluded() -> None:
    df = _frame(600, 120, seed=4)
    df["split"], _ = assign_splits(df, seed=1)
    fold = assign_folds(df, 5, seed=1)
    assert set(fold[df["split"] == "test"]) == {-1}
    assert set(fold[df["split"] != "test"]) == {0, 1, 2, 3, 4}
    assert not _crossing(df[fold >= 0], fold[fold >= 0], "patient_id")
    assert fold.equals(assign_folds(df, 5, seed=1))
    with pytest.raises(ValueError, match="at least 2"):
        assign_folds(df, 1)
    with pytest.raises(ValueError, match="groups"):
        assign_folds(df.head(3), 5)

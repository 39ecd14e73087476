"""The peer bench (bench/quality_peer.py): metadata mapping, subset, scoring path and renderer.

None of these needs the ``sklesion`` package; the one test that loads its model skips
cleanly when it is not installed.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bench import quality_peer as qp
from bench import report as r

PROPS: dict[str, Any] = {
    # The shape of sklesion 0.2.2's model_props.pkl (values as published).
    "img_shape": np.array([254, 254]), "age_mean": 51.90180032733224, "age_max": 90.0,
    "i_cl_map": {0: "akiec", 1: "bcc", 2: "bkl", 3: "df", 4: "mel", 5: "nv", 6: "vasc"},
    "oh_map": {
        "sex": {"female": [1, 0, 0], "male": [0, 1, 0], "unknown": [0, 0, 1]},
        "loc": {"arm": [1, 0, 0, 0, 0], "head-or-neck": [0, 1, 0, 0, 0],
                "leg-or-genital": [0, 0, 1, 0, 0], "trunk": [0, 0, 0, 1, 0],
                "unknown": [0, 0, 0, 0, 1]},
    },
}


# === The metadata mapping ===

@pytest.mark.parametrize(("site", "expected"), [
    ("head/neck", "head-or-neck"), ("head neck", "head-or-neck"),
    ("upper extremity", "arm"), ("lower extremity", "leg-or-genital"),
    ("torso", "trunk"), ("anterior torso", "trunk"), ("posterior torso", "trunk"),
    ("oral/genital", "leg-or-genital"), ("palms/soles", "unknown"),
    ("", "unknown"), (None, "unknown"), (float("nan"), "unknown"),
    ("buttocks", "unknown"),  # not in skinlesion's vocabulary → missing, never a crash
])
def test_site_mapping(site: Any, expected: str) -> None:
    assert qp.peer_site(site) == expected
    assert expected in PROPS["oh_map"]["loc"]


def test_every_site_of_our_vocabulary_has_a_peer_key() -> None:
    from skinlesion.data.metadata import SITE_VALUES

    assert set(qp.SITE_TO_PEER) == set(SITE_VALUES)
    assert set(qp.SITE_TO_PEER.values()) <= set(PROPS["oh_map"]["loc"])


@pytest.mark.parametrize(("sex", "expected"), [
    ("female", "female"), ("male", "male"), ("Male", "male"), ("", "unknown"),
    (None, "unknown"), (float("nan"), "unknown"), ("x", "unknown")])
def test_sex_mapping(sex: Any, expected: str) -> None:
    assert qp.peer_sex(sex) == expected


def test_metadata_vector_matches_sklesion_encoding() -> None:
    v = qp.peer_metadata(45.0, "male", "torso", PROPS)
    assert len(v) == 10
    assert v[:3] == [0.0, 1.0, 0.0]                    # sex one-hot: male
    assert v[3:8] == [0.0, 0.0, 0.0, 1.0, 0.0]         # location one-hot: trunk
    assert v[8] == pytest.approx(45.0 / 90.0)          # age / age_max
    assert v[9] == 0.0                                 # age known
    # Age 0 is a real value, not a missing one.
    assert qp.peer_metadata(0, None, None, PROPS)[8:] == [0.0, 0.0]


def test_neutral_encoding_for_missing_fields() -> None:
    v = qp.peer_metadata(None, None, None, PROPS)
    assert v[:3] == [0.0, 0.0, 1.0]
    assert v[3:8] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert v[8] == pytest.approx(PROPS["age_mean"] / PROPS["age_max"])
    assert v[9] == 1.0
    assert qp.peer_metadata(float("nan"), "", "", PROPS) == v


def test_ham10000_detection() -> None:
    assert qp.is_ham10000("ISIC_0000001", "x@abc:HAM10000")
    assert qp.is_ham10000("ISIC_0024306", "ISIC-archive")       # HAM id range
    assert qp.is_ham10000("ISIC_0034320", "ISIC-archive")
    assert not qp.is_ham10000("ISIC_0034321", "ISIC2018-Task3-test")
    assert not qp.is_ham10000("ISIC_0000024", "ISIC2017-train")
    assert not qp.is_ham10000("my_image", "clinic")


def test_subset_drops_ham_and_other_splits() -> None:
    manifest = pd.DataFrame({
        "image_id": ["ISIC_0000001", "ISIC_0000002", "ISIC_0024400", "ISIC_0000003",
                     "ISIC_0034600", "ISIC_0000004"],
        "source": ["ISIC2017-train", "ISIC2017-train", "HAM10000", "ISIC2016",
                   "ISIC2018-Task3-test", "ISIC2017-train"],
        "split": ["test", "test", "test", "train", "test", "val"],
        "label": [1, 0, 1, 1, 0, 0],
    })
    subset, info = qp.select_subset(manifest, quick=False)
    assert list(subset["image_id"]) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0034600"]
    assert (info["test_n"], info["test_malignant"], info["excluded_ham10000"]) == (4, 2, 1)
    assert (info["n"], info["n_malignant"]) == (3, 1)
    assert info["by_source"]["ISIC2017-train"] == {"n": 2, "n_malignant": 1}
    assert info["ham10000_ids"] == ["ISIC_0024400"]


def test_not_installed_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qp, "PEER_PACKAGE", "no_such_package_for_skinlesion_tests")
    assert qp.peer_installed() == {"installed": False}


def test_runs_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv(qp.RUNS_ENV, str(tmp_path))
    assert qp.runs_dir(quick=False) == tmp_path
    monkeypatch.delenv(qp.RUNS_ENV)
    monkeypatch.setenv("SKINLESION_BENCH_CACHE", str(tmp_path / "cache"))
    assert qp.runs_dir(quick=False) == tmp_path / "cache" / "quality_ablation" / "full"


def test_unknown_part_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown quality_peer part"):
        qp._select(["nope"], ("finetune.binary",))
    assert qp._select(["finetune"], ("frozen.binary", "finetune.binary", "finetune.x")) == [
        "finetune.binary", "finetune.x"]


# === Our side: the restricted view and skinlesion's evaluation path ===

def _dataset(root: Path) -> tuple[Path, list[str]]:
    from PIL import Image

    from skinlesion.data.manifest import write_manifest

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for split, n in (("train", 8), ("val", 8), ("test", 16)):
        for i in range(n):
            image_id = f"{split}_{i:02d}"
            img = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "images" / f"{image_id}.jpg")
            rows.append({"image_id": image_id, "path": f"images/{image_id}.jpg",
                         "label": i % 2, "source": "synthetic", "split": split,
                         "age": 50.0, "sex": "female", "site": "torso"})
    write_manifest(pd.DataFrame(rows), root)
    return root, [f"test_{i:02d}" for i in range(0, 16, 2)] + ["test_01", "test_03"]


def test_score_run_on_a_restricted_view(tiny_run: Path, tmp_path: Path) -> None:
    data, ids = _dataset(tmp_path / "data")
    view = qp.restricted_view(str(data), ids, str(tmp_path / "view"))
    from skinlesion.data.manifest import read_manifest

    m = read_manifest(view)
    assert sorted(m.loc[m["split"] == "test", "image_id"]) == sorted(ids)
    assert (m["split"] == "train").sum() == 8 and (m["split"] == "val").sum() == 8

    out = qp.score_run(str(tiny_run), str(data), ids, str(tmp_path / "view2"),
                       str(tmp_path / "eval"), bootstrap=20)
    assert out["status"] == "ok"
    test = out["fused"]["test"]
    assert (test["n"], test["n_positive"]) == (10, 2)
    assert 0.0 <= test["roc_auc"] <= 1.0
    assert "withheld" not in out                      # an image-only model
    assert (tmp_path / "eval" / "metrics.json").is_file()

    # An image outside the run's test split is refused (the run may have trained on it).
    bad = qp.score_run(str(tiny_run), str(data), [*ids, "train_00"], str(tmp_path / "v3"),
                       str(tmp_path / "e3"), bootstrap=0)
    assert bad["status"] == "failed" and "train_00" in bad["error"]


# === The renderer ===

LABELS = [0, 1] * 10


def _scores(shift: float) -> dict[str, Any]:
    """Per-image scores: positives ranked above negatives by ``shift`` (plus a fixed jitter)."""
    jitter = np.linspace(-0.4, 0.4, len(LABELS))[::-1]
    return {"image_id": [f"ISIC_{i:07d}" for i in range(len(LABELS))], "label": LABELS,
            "probability": [float(0.4 + 0.4 * shift * y + 0.3 * j) for y, j in zip(LABELS, jitter,
                                                                       strict=True)]}


def _test(auc: float, spec90: float, n: int = 152, pos: int = 55,
          shift: float | None = None) -> dict[str, Any]:
    out = {"n": n, "n_positive": pos, "roc_auc": auc, "roc_auc_ci95": [auc - 0.05, auc + 0.05],
           "specificity_at_sensitivity_90": spec90,
           "roc_auc_complete_metadata": {"n": 100, "n_positive": 40, "roc_auc": auc + 0.01}}
    if shift is not None:
        out["scores"] = _scores(shift)
    return out


def _record(quick: bool = False) -> dict[str, Any]:
    return {"name": "quality_peer", "quick": quick, "status": "ok", "created": "2026-12-01",
            "environment": {"commit": "abc"}, "result": {
                "title": "Quality peer", "quick": quick,
                "data": {"subset": {"test_n": 258, "test_malignant": 105,
                                    "excluded_ham10000": 106, "n": 152, "n_malignant": 55,
                                    "by_source": {"ISIC2017-train": {"n": 100,
                                                                     "n_malignant": 36}}},
                         "runs_dir": "/runs"},
                "notes": ["a note about `pip install --no-deps sklesion`"],
                "part_order": ["peer", "finetune.binary", "frozen.diagnosis_meta",
                               "frozen.binary"],
                "parts": {
                    "peer": {"package": {"installed": True, "version": "0.2.2"},
                             "status": "ok",
                             "peer": {"keras_here": "3.15.1",
                                      "saved_with": {"keras_version": "3.3.3"}},
                             "classes": ["akiec", "bcc", "mel"],
                             "malignant_classes": ["akiec", "bcc", "mel"],
                             "metadata_given": {"age": 120, "sex": 119, "site": 105},
                             "sanity_ham10000": {"n": 106, "n_positive": 50, "roc_auc": 0.981},
                             "image_only": {"input": "image only",
                                            "test": _test(0.612, 0.211, shift=0.0)},
                             "with_metadata": {"input": "+ age, sex, site",
                                               "test": _test(0.655, 0.244, shift=0.1)}},
                    "finetune.binary": {"status": "absent",
                                        "reason": "no finished run at /runs/run-finetune.binary"},
                    "frozen.diagnosis_meta": {
                        "status": "ok", "backbone": "efficientnet_lite0", "input_size": 224,
                        "val_auc": 0.851, "run_dir": "/runs/run-frozen.diagnosis_meta",
                        "fused": {"input": "image + age, sex, site",
                                  "test": _test(0.834, 0.467, shift=0.5)},
                        "withheld": {"input": "image (metadata withheld)",
                                     "test": _test(0.801, 0.4, shift=0.5)}},
                    "frozen.binary": {"status": "failed", "error": "Boom: it broke"},
                }}}


def test_renderer_shows_every_row_and_what_is_missing() -> None:
    md, heads = qp.render_report("quality_peer", _record())
    assert "**152 images, 55 malignant**" in md and "minus its 106 HAM10000" in md
    assert "| sklesion 0.2.2 (PyPI; Xception, HAM10000) | image only | — | 0.612 [0.562–0.662] | " \
           "21.1 % | 0.622 (n 100) | 152 (55) |" in md
    assert "| + age, sex, site | — | 0.655 [0.605–0.705] | 24.4 %" in md
    assert "`frozen.diagnosis_meta` (efficientnet_lite0 224 px) | image + age, sex, site | " \
           "0.851 | 0.834 [0.784–0.884] | 46.7 %" in md
    assert "image (metadata withheld) | — | 0.801" in md
    assert "`finetune.binary`: **absent** — no finished run" in md
    assert "`frozen.binary`: **failed** — Boom: it broke" in md
    assert "AUC 0.981" in md and "not a quality figure" in md
    assert "pip install --no-deps sklesion" in md
    assert "Our runs read from `/runs`." in md
    assert "Quick mode" not in md
    # Paired DeLong, input matched: withheld vs peer image only, fused vs peer with metadata.
    pairs = qp.paired_comparisons(_record()["result"])
    assert [(c["part"], c["ours"], c["peer"]) for c in pairs] == [
        ("frozen.diagnosis_meta", "image + age, sex, site", "+ age, sex, site"),
        ("frozen.diagnosis_meta", "image (metadata withheld)", "image only")]
    from sklearn.metrics import roc_auc_score

    ours, peer = _scores(0.5), _scores(0.0)
    expected = (roc_auc_score(LABELS, ours["probability"])
                - roc_auc_score(LABELS, peer["probability"]))
    assert pairs[1]["difference"] == pytest.approx(expected) and expected > 0
    assert pairs[1]["n"] == 20 and 0 <= pairs[1]["p_value"] < 0.05
    assert f"| `frozen.diagnosis_meta` | image (metadata withheld) | image only | 20 | " \
           f"{expected:+.3f}" in md
    assert len(heads) == 3 and all(h["metric"].startswith("Non-HAM10000 test AUC") for h in heads)
    assert heads[2]["metric"].endswith("(our best on validation AUC)")
    assert heads[0]["value"] == "0.612 [0.562–0.662]"


def test_renderer_not_installed_and_quick() -> None:
    rec = _record(quick=True)
    rec["result"]["parts"] = {"peer": {"status": "not installed",
                                       "reason": "install it with `pip install --no-deps "
                                                 "sklesion`"}}
    md, heads = qp.render_report("quality_peer", rec)
    assert "Quick mode" in md and "**not installed**" in md and heads == []
    assert "_No row could be measured._" in md


def test_registered_in_the_report(tmp_path: Path) -> None:
    assert r.renderer_for("quality_peer") is qp.render_report and "quality_peer" in r.ORDER
    doc = r.render({"quality_peer": _record()})
    assert "Quality peer" in doc and "0.834 [0.784–0.884]" in doc


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("sklesion") is None,
                    reason="the optional peer is not installed (pip install --no-deps sklesion)")
def test_peer_model_loads_and_scores_real_images(isic_dev: Path) -> None:
    model, props, _cl_info, info = qp._load_peer()
    assert model is not None, info.get("load_error")
    assert list(props["oh_map"]["loc"]) and math.isclose(float(props["age_max"]), 90.0)
    labels = pd.read_csv(isic_dev / "labels.csv")
    rows = labels[labels["filename"].str.startswith("images/")].head(2)
    files = [str(isic_dev / f) for f in rows["filename"]]
    size = tuple(int(x) for x in props["img_shape"])
    meta = np.array([qp.peer_metadata(None, None, None, props)] * len(files), np.float32)
    probs = qp._peer_predict(model, files, {"x": meta}, size, [0, 1, 4])["x"]
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs)


def test_rows_follow_the_ablation_order_after_merged_parts() -> None:
    """Parts merged from several bench runs render peer first, then in ablation order."""
    ok = {"status": "ok", "fused": {"input": "image", "test": _test(0.8, 0.5)},
          "run": {"created": "2026-12-01T01:00:00+00:00", "commit": "0123456789abcdef"}}
    result = {"part_order": ["finetune.binary"],  # as a later partial run leaves it
              "parts": {"finetune.binary": ok, "frozen.binary": ok,
                        "peer": {"status": "not installed", "reason": "absent"}}}
    assert [r["part"] for r in qp.table_rows(result)] == ["peer", "frozen.binary",
                                                          "finetune.binary"]
    md, _ = qp.render_report("quality_peer", {"result": result})
    assert "Parts measured 2026-12-01T01:00 UTC at `0123456789ab`." in md

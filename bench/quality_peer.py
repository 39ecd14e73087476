"""Quality peer: the ``sklesion`` model from PyPI beside ours, on images neither trained on.

The peer is ``sklesion`` (PyPI, 0.2.2: Keras Xception with an age/sex/site branch, seven
HAM10000 diagnosis classes, trained on 10,000 HAM10000 images). It pins
``tensorflow==2.17``, so it is **not** a project dependency: the row needs

    pip install --no-deps sklesion

and when the package cannot be found the peer part records ``status: "not installed"``
instead of failing. Its files are found with ``importlib.util.find_spec`` /
``importlib.resources`` (never a hard-coded path); its ``model.keras`` is loaded directly
with ``keras.saving.load_model(compile=False)`` — the saved graph has only stock Keras
layers, so nothing of the package is imported (its ``ProbToLabel`` layer only turns
probabilities into names and is not needed). A file that cannot be loaded is recorded
with the exact error.

Its preprocessing is reproduced as ``sklesion/model.py`` does it: the JPEG bytes decoded
with ``tf.image.decode_jpeg(channels=3)`` and resized with ``tf.image.resize`` (bilinear,
float 0–255; the model normalises inside) to ``model_props["img_shape"]``; metadata as one
10-vector ``sex one-hot (female, male, unknown) + location one-hot (arm, head-or-neck,
leg-or-genital, trunk, unknown) + [age / age_max] + [age missing]`` with a missing age
filled with ``age_mean``. The peer sees the original isic-dev file (as its users would
give it), ours the prepared copy (as ``skinlesion`` would). P(malignant) is the sum of its
classes whose ``cl_info`` severity is ``Malign`` (akiec, bcc, mel). Two inputs:

* **image only** — every field missing (its neutral encoding: sex and location
  ``unknown``, age missing);
* **+ age, sex, site** — the manifest's values where known, mapped by
  :func:`peer_metadata` (table in :data:`SITE_TO_PEER`).

The data: isic-dev prepared with its metadata exactly as the ablation bench does
(:func:`bench.quality_ablation.prepared_with_metadata`), its **test split minus every
HAM10000 image** (``source`` HAM10000, or an ISIC id in HAM10000's range) — the peer was
trained on HAM10000.

Our side: every finished run directory of the ablation bench under
``$SKINLESION_ABLATION_RUNS`` (default ``bench/.cache/quality_ablation/<mode>``), named
``run-<row>``, scored on exactly those images with skinlesion's own path
(``evaluate_run`` on a data view whose test split is that subset, at the run's stored
threshold; a metadata model also with every field withheld). Absent rows are reported as
absent. A run is only scored if its own training manifest puts every subset image in its
test split (no leakage).

All figures come from ``evaluate_predictions`` (ROC AUC with a stratified bootstrap CI,
specificity at 90 % sensitivity read off these test images).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness.child import run_in_child
from bench.harness.environment import cache_dir, isic_dev_dir, load_average, now_iso
from bench.harness.timing import self_peak_rss_mb
from bench.markdown import Row, bullets, ci, fixed, fmt, pct, table

log = logging.getLogger(__name__)

PEER_PACKAGE = "sklesion"
PEER_INSTALL = "pip install --no-deps sklesion"
RUNS_ENV = "SKINLESION_ABLATION_RUNS"
SEED = 1
BOOTSTRAP = 2000
QUICK_BOOTSTRAP = 100
QUICK_IMAGES = 24
TIMEOUT_S = 3600
QUICK_TIMEOUT_S = 420
BATCH = 16

OUR_ROWS: tuple[str, ...] = ("finetune.binary", "finetune.diagnosis", "finetune.diagnosis_meta",
                             "frozen.binary", "frozen.diagnosis_meta", "ensemble.finetune")
"""Ablation rows scored by default (any other ablation row may be named as a part)."""
PARTS: tuple[str, ...] = ("peer", *OUR_ROWS)

HAM10000_ID_RANGE: tuple[int, int] = (24306, 34320)
"""ISIC ids of the HAM10000 images (ISIC_0024306 … ISIC_0034320)."""

PEER_SEX: dict[str, str] = {"female": "female", "male": "male"}
"""Our ``sex`` → the peer's ``oh_map["sex"]`` key; anything else is ``unknown``."""

SITE_TO_PEER: dict[str, str] = {
    "head/neck": "head-or-neck",
    "upper extremity": "arm",
    "lower extremity": "leg-or-genital",
    "torso": "trunk",
    "oral/genital": "leg-or-genital",
    "palms/soles": "unknown",
}
"""Our site (ISIC 2020 ``anatom_site_general``) → the peer's ``oh_map["loc"]`` key.

The peer grouped HAM10000's ``localization`` into arm / head-or-neck / leg-or-genital /
trunk: ``oral/genital`` goes with its genital group (HAM10000 has no oral site);
``palms/soles`` (HAM's ``acral``) has no unambiguous group (hand → arm or foot → leg), so
it is given as ``unknown``, as is a missing site."""

PEER_MISSING = "unknown"


# === The metadata mapping (pure) ========================================================

def peer_site(site: Any) -> str:
    """Our anatomic site (any spelling skinlesion normalises) → the peer's location key."""
    from skinlesion.data.metadata import MetadataValueError, normalize_site

    if _missing(site):
        return PEER_MISSING
    try:
        ours = normalize_site(site)
    except MetadataValueError:
        return PEER_MISSING
    return SITE_TO_PEER.get(ours, PEER_MISSING)


def peer_sex(sex: Any) -> str:
    """Our sex → the peer's sex key (``unknown`` when missing or unrecognised)."""
    if _missing(sex):
        return PEER_MISSING
    return PEER_SEX.get(str(sex).strip().lower(), PEER_MISSING)


def peer_metadata(age: Any, sex: Any, site: Any, props: dict[str, Any]) -> list[float]:
    """The peer's 10-float metadata vector, as ``sklesion/model.py`` builds it.

    ``sex one-hot + location one-hot + [age / age_max] + [age missing]``; a missing age is
    filled with ``age_mean`` before scaling and flagged. Pass ``None`` for every field for
    the image-only (neutral) encoding.

    Args:
        age: Age in years, or missing (None/NaN/"").
        sex: ``female``/``male`` or missing.
        site: An anatomic site in skinlesion's vocabulary (or a spelling it normalises).
        props: The peer's ``model_props`` (``oh_map``, ``age_mean``, ``age_max``).

    Returns:
        The vector as floats.
    """
    oh = props["oh_map"]
    age_missing = _missing(age)
    value = float(props["age_mean"]) if age_missing else float(age)
    return [float(v) for v in (
        *oh["sex"][peer_sex(sex)], *oh["loc"][peer_site(site)],
        value / float(props["age_max"]), 1.0 if age_missing else 0.0)]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "unknown", "none")


def is_ham10000(image_id: str, source: str) -> bool:
    """HAM10000 by ``source`` or by an ISIC id in HAM10000's range."""
    if "ham10000" in str(source).lower():
        return True
    digits = str(image_id).removeprefix("ISIC_")
    if digits.isdigit():
        return HAM10000_ID_RANGE[0] <= int(digits) <= HAM10000_ID_RANGE[1]
    return False


# === The bench ===========================================================================

def runs_dir(quick: bool) -> Path:
    """Where the ablation's ``run-<row>`` folders are: ``$SKINLESION_ABLATION_RUNS`` or the
    bench cache's ``quality_ablation/<mode>``."""
    env = os.environ.get(RUNS_ENV)
    return Path(env) if env else cache_dir() / "quality_ablation" / ("quick" if quick else "full")


def peer_installed() -> dict[str, Any]:
    """Whether the peer package can be found (without importing it)."""
    from importlib import metadata
    from importlib.util import find_spec

    try:
        spec = find_spec(PEER_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return {"installed": False}
    try:
        version = metadata.version(PEER_PACKAGE)
    except metadata.PackageNotFoundError:
        version = None
    return {"installed": True, "version": version}


def select_subset(manifest: pd.DataFrame, quick: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The test split minus HAM10000 (and in quick mode a stratified sample of it)."""
    test = manifest[manifest["split"] == "test"]
    ham = [is_ham10000(i, s) for i, s in zip(test["image_id"], test["source"], strict=True)]
    subset = test[~pd.Series(ham, index=test.index)]
    if quick and len(subset) > QUICK_IMAGES:
        from sklearn.model_selection import train_test_split

        subset, _ = train_test_split(subset, train_size=QUICK_IMAGES, stratify=subset["label"],
                                     random_state=SEED)
        subset = subset.sort_index()
    ham_rows = test[pd.Series(ham, index=test.index)]
    if quick and len(ham_rows) > QUICK_IMAGES:
        ham_rows = ham_rows.sample(QUICK_IMAGES, random_state=SEED)
    by_source = {str(k): {"n": len(g), "n_malignant": int(g["label"].sum())}
                 for k, g in subset.groupby("source")}
    info = {"test_n": len(test), "test_malignant": int(test["label"].sum()),
            "excluded_ham10000": int(sum(ham)), "n": len(subset),
            "n_malignant": int(subset["label"].sum()), "by_source": by_source,
            "ham10000_ids": [str(i) for i in ham_rows["image_id"]]}
    return subset, info


def run(quick: bool = True, parts: list[str] | None = None) -> dict[str, Any]:
    """Score the peer and our finished ablation runs on the non-HAM10000 test images.

    Args:
        quick: A 24-image sample, the quick ablation runs, 100 bootstrap replicates.
        parts: ``peer`` and/or ablation row names (default :data:`PARTS`).

    Returns:
        ``{"title", "quick", "data", "notes", "parts": {part: record}, "part_order"}``.
    """
    from bench.quality_ablation import ORDER as ABLATION_ROWS
    from bench.quality_ablation import prepared_with_metadata
    from skinlesion.data.manifest import read_manifest

    chosen = _select(parts, ABLATION_ROWS)
    data = prepared_with_metadata(SEED)
    subset, info = select_subset(read_manifest(data["data_dir"]), quick)
    sanity_ids = info.pop("ham10000_ids")
    ids = [str(i) for i in subset["image_id"]]
    mode = "quick" if quick else "full"
    root = cache_dir() / "quality_peer" / mode
    runs = runs_dir(quick)
    bootstrap = QUICK_BOOTSTRAP if quick else BOOTSTRAP
    out: dict[str, Any] = {}
    for part in chosen:
        record: dict[str, Any] = {"part": part, "quick": quick, "created": now_iso(),
                                  "load_average": {"before": load_average()}}
        if part == "peer":
            found = peer_installed()
            record["package"] = found
            if not found["installed"]:
                record["status"] = "not installed"
                record["reason"] = (f"the {PEER_PACKAGE} package is not importable here; "
                                    f"install it with `{PEER_INSTALL}`")
                out[part] = record
                continue
            target = "bench.quality_peer:score_peer"
            kwargs: dict[str, Any] = {"data_dir": data["data_dir"], "image_ids": ids,
                                      "originals": str(isic_dev_dir()), "bootstrap": bootstrap,
                                      "sanity_ids": sanity_ids}
        else:
            run_dir = runs / f"run-{part}"
            record["run_dir"] = str(run_dir)
            if not ((run_dir / "model_spec.json").is_file()
                    and (run_dir / "model.keras").is_file()):
                record["status"] = "absent"
                record["reason"] = f"no finished run at {run_dir}"
                out[part] = record
                continue
            target = "bench.quality_peer:score_run"
            kwargs = {"run_dir": str(run_dir), "data_dir": data["data_dir"], "image_ids": ids,
                      "view_dir": str(root / f"view-{part}"), "eval_dir": str(root / f"eval-{part}"),
                      "bootstrap": bootstrap}
        child = run_in_child(target, kwargs, timeout=QUICK_TIMEOUT_S if quick else TIMEOUT_S,
                             log_path=root / "logs" / f"{part}.log")
        record["child"] = child.describe()
        record["load_average"]["after"] = load_average()
        if child.ok:
            record.update(child.value)
        else:
            record["status"] = "failed"
            record["error"] = child.error
            log.warning("quality_peer: %s failed: %s", part, child.error)
        out[part] = record
    notes = [
        f"The peer row needs `{PEER_INSTALL}` (it pins tensorflow 2.17, so it is not a "
        "project dependency); without it the row reads 'not installed'.",
        "Images: the isic-dev test split minus every HAM10000 image (the peer was trained on "
        "HAM10000). Ours never saw them either (test split of the ablation's seed-1 split).",
        "Not like for like: these images come from the same collections (ISIC 2016/2017, "
        "ISIC 2018 test, ISIC Archive) as our training split, so they are in-distribution for "
        "ours and out-of-distribution for the peer; the comparison says which model to use on "
        "such images, not which recipe generalises better across collections.",
        "Peer preprocessing as sklesion/model.py: decode_jpeg + tf.image.resize to its "
        "img_shape (254 px), its normalisation inside the model; it sees the original isic-dev "
        "file, ours the prepared copy.",
        "Peer metadata: sex female/male; site head/neck → head-or-neck, upper extremity → arm, "
        "lower extremity and oral/genital → leg-or-genital, torso → trunk, palms/soles and "
        "missing → unknown; age / age_max with a missing flag (missing age = its training mean).",
        "Peer P(malignant) = P(akiec) + P(bcc) + P(mel) (its cl_info severity 'Malign').",
        "Specificity at 90 % sensitivity is read off these test images (optimistic); "
        "'withheld' = the same metadata model given no metadata. Pick our best row on the "
        "validation AUC column (the run's own, on the whole validation split), not on these "
        "test figures.",
        f"Our runs come from {RUNS_ENV} (default the bench cache's quality_ablation/<mode>); "
        "rows not finished there are listed as absent.",
    ]
    if quick:
        notes.insert(0, f"QUICK MODE — not comparable: {QUICK_IMAGES} images, the quick "
                        f"ablation runs, {QUICK_BOOTSTRAP} bootstrap replicates.")
    return {"title": "Quality peer: sklesion (PyPI) beside ours on the non-HAM10000 test images",
            "quick": quick, "data": {**data, "subset": info, "runs_dir": str(runs)},
            "notes": notes, "parts": out, "part_order": [p for p in PARTS if p in out]
            + [p for p in out if p not in PARTS]}


def _select(parts: list[str] | None, ablation_rows: tuple[str, ...]) -> list[str]:
    if not parts:
        return list(PARTS)
    valid = ("peer", *ablation_rows)
    chosen: list[str] = []
    for p in parts:
        hits = [r for r in valid if r == p or r.startswith(f"{p}.")]
        if not hits:
            raise ValueError(f"unknown quality_peer part {p!r}; valid: {', '.join(valid)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


# === Scoring helpers (child processes) ====================================================

def summarize(df: pd.DataFrame, threshold: float, bootstrap: int) -> dict[str, Any]:
    """skinlesion's metrics for ``label``/``probability`` rows, plus the complete-metadata AUC."""
    from skinlesion.evaluation.evaluate import evaluate_predictions

    ev = evaluate_predictions(df, threshold, bootstrap=bootstrap, seed=0)
    return _figures(ev.metrics, ev.predictions)


def _figures(metrics: dict[str, Any], predictions: pd.DataFrame) -> dict[str, Any]:
    from bench.quality import summarize_metrics
    from bench.quality_ablation import _auc_complete

    out = summarize_metrics(metrics)
    s90 = (metrics.get("fixed_rates") or {}).get("specificity_at_sensitivity_0.90") or {}
    out["specificity_at_sensitivity_90"] = s90.get("specificity")
    out["sensitivity_reached_90"] = s90.get("sensitivity")
    out["roc_auc_complete_metadata"] = _auc_complete(predictions)
    out["scores"] = {"image_id": [str(i) for i in predictions["image_id"]],
                     "label": [int(v) for v in predictions["label"]],
                     "probability": [round(float(v), 6) for v in predictions["probability"]]}
    return out


def paired_comparisons(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Ours − peer on the same images, paired DeLong, input matched to input.

    Our image-only figure (an image-only run, or a metadata run with its metadata withheld)
    is compared with the peer's image only; our fused figure with the peer given age, sex
    and site. Rows without per-image scores are skipped.
    """
    from bench.quality_ablation import ORDER as ABLATION_ROWS
    from skinlesion.evaluation.compare import delong_test

    parts: dict[str, Any] = result.get("parts") or {}
    peer = parts.get("peer") or {}
    out: list[dict[str, Any]] = []
    names = [n for n in ABLATION_ROWS if n in parts] + [n for n in parts if n not in ABLATION_ROWS]
    for name in names:
        p = parts[name]
        if name == "peer" or p.get("status") != "ok":
            continue
        meta = bool(p.get("withheld"))
        pairs = [("fused", "with_metadata" if meta else "image_only")]
        if meta:
            pairs.append(("withheld", "image_only"))
        for ours_key, peer_key in pairs:
            a = ((p.get(ours_key) or {}).get("test") or {}).get("scores")
            b = ((peer.get(peer_key) or {}).get("test") or {}).get("scores")
            if not a or not b:
                continue
            pb = dict(zip(b["image_id"], b["probability"], strict=True))
            keep = [i for i, k in enumerate(a["image_id"]) if k in pb]
            y = [a["label"][i] for i in keep]
            try:
                d = delong_test(y, [a["probability"][i] for i in keep],
                                [pb[a["image_id"][i]] for i in keep])
            except Exception as exc:  # too few of a class: say so, never crash the report
                d = {"error": str(exc)}
            out.append({"part": name, "ours": (p.get(ours_key) or {}).get("input", ours_key),
                        "peer": (peer.get(peer_key) or {}).get("input", peer_key),
                        "n": len(keep), **d})
    return out


def _load_peer() -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The peer's model (uncompiled), model_props, cl_info, and what was loaded how."""
    import importlib.resources as resources
    import pickle

    import keras

    pkg = resources.files(PEER_PACKAGE)
    info: dict[str, Any] = {"keras_here": keras.__version__}
    # Its own pickles, from the installed public package (as sklesion/model.py reads them).
    with resources.as_file(pkg.joinpath("model_props.pkl")) as f, open(f, "rb") as fh:
        props = pickle.load(fh)
    with resources.as_file(pkg.joinpath("cl_info.pkl")) as f, open(f, "rb") as fh:
        cl_info = pickle.load(fh)
    with resources.as_file(pkg.joinpath("model.keras")) as f:
        import json
        import zipfile

        with zipfile.ZipFile(f) as z:
            info["saved_with"] = json.loads(z.read("metadata.json"))
        t = time.perf_counter()
        try:
            model = keras.saving.load_model(f, compile=False, safe_mode=True)
        except Exception as exc:  # the exact error is the result
            info["load_error"] = f"{type(exc).__name__}: {exc}"
            return None, props, cl_info, info
        info["load_s"] = time.perf_counter() - t
    info["inputs"] = [list(t.shape) for t in model.inputs]
    info["outputs"] = [list(t.shape) for t in model.outputs]
    info["params"] = int(model.count_params())
    return model, props, cl_info, info


def _peer_image(path: str, size: tuple[int, int]) -> Any:
    import tensorflow as tf

    raw = tf.io.read_file(path)
    try:
        image = tf.image.decode_jpeg(raw, channels=3)
    except tf.errors.InvalidArgumentError:  # not a JPEG: the generic decoder
        image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    return tf.image.resize(image, size)


def _peer_files(rows: pd.DataFrame, data_dir: str, originals: str) -> tuple[list[str], dict[str, int]]:
    """The original isic-dev file of each row where it exists, else the prepared copy."""
    from skinlesion.data.manifest import resolve_paths

    prepared = resolve_paths(rows, data_dir)
    files, used = [], {"original": 0, "prepared": 0}
    origin = rows["original_path"] if "original_path" in rows else [None] * len(rows)
    for orig, prep in zip(origin, prepared, strict=True):
        cand = Path(originals) / str(orig) if isinstance(orig, str) and orig else None
        if cand is not None and cand.is_file():
            files.append(str(cand))
            used["original"] += 1
        else:
            files.append(prep)
            used["prepared"] += 1
    return files, used


def _peer_predict(model: Any, files: list[str], metas: dict[str, Any], size: tuple[int, int],
                  malignant: list[int]) -> dict[str, list[float]]:
    """P(malignant) per file for each metadata matrix in ``metas`` (one image decode)."""
    import numpy as np

    probs: dict[str, list[float]] = {k: [] for k in metas}
    for start in range(0, len(files), BATCH):
        batch = np.stack([_peer_image(f, size).numpy() for f in files[start:start + BATCH]])
        for key, meta in metas.items():
            p = model.predict([batch, meta[start:start + BATCH]], verbose=0, batch_size=BATCH)
            probs[key] += p[:, malignant].sum(axis=1).tolist()
    return probs


def score_peer(data_dir: str, image_ids: list[str], originals: str, bootstrap: int,
               sanity_ids: list[str] | None = None) -> dict[str, Any]:
    """Score the peer on ``image_ids`` of the prepared manifest, image only and with metadata.

    ``sanity_ids`` (HAM10000 test images, which the peer was trained on) are scored image
    only to show that its preprocessing is reproduced — not a quality figure.
    """
    import numpy as np

    from skinlesion.data.manifest import read_manifest

    t0 = time.perf_counter()
    model, props, cl_info, info = _load_peer()
    i_cl = {int(k): str(v) for k, v in props["i_cl_map"].items()}
    malignant = [i for i, c in i_cl.items() if (cl_info.get(c) or {}).get("severity") == "Malign"]
    out: dict[str, Any] = {
        "peer": info, "classes": [i_cl[i] for i in sorted(i_cl)],
        "malignant_classes": [i_cl[i] for i in malignant],
        "img_shape": [int(x) for x in props["img_shape"]],
        "oh_map": {k: sorted(v) for k, v in props["oh_map"].items() if k in ("sex", "loc")},
    }
    if model is None:
        out["status"] = "load failed"
        out["error"] = info["load_error"]
        return out
    manifest = read_manifest(data_dir).set_index("image_id")
    rows = manifest.loc[image_ids].reset_index()
    files, out["image_files"] = _peer_files(rows, data_dir, originals)
    size = (int(props["img_shape"][0]), int(props["img_shape"][1]))
    neutral = np.array([peer_metadata(None, None, None, props)] * len(rows), np.float32)
    given = np.array([peer_metadata(a, s, g, props) for a, s, g in
                      zip(rows["age"], rows["sex"], rows["site"], strict=True)], np.float32)
    out["metadata_given"] = {
        "age": int((given[:, -1] == 0).sum()),
        "sex": int(sum(peer_sex(s) != PEER_MISSING for s in rows["sex"])),
        "site": int(sum(peer_site(s) != PEER_MISSING for s in rows["site"])),
        "site_mapping": {str(k): int(v) for k, v in pd.Series(
            [f"{'(missing)' if _missing(s) else s} → {peer_site(s)}" for s in rows["site"]]
        ).value_counts().items()},
    }
    t = time.perf_counter()
    probs = _peer_predict(model, files, {"image_only": neutral, "with_metadata": given}, size,
                          malignant)
    out["predict_s"] = time.perf_counter() - t
    base = rows[[c for c in ("image_id", "path", "label", "source", "age", "sex", "site")
                 if c in rows.columns]]
    for key, label in (("image_only", "image only"), ("with_metadata", "+ age, sex, site")):
        df = base.assign(probability=probs[key])
        out[key] = {"input": label, "threshold": 0.5, "test": summarize(df, 0.5, bootstrap)}
    if sanity_ids:
        from sklearn.metrics import roc_auc_score

        ham = manifest.loc[sanity_ids].reset_index()
        ham_files, _ = _peer_files(ham, data_dir, originals)
        neutral_ham = np.array([peer_metadata(None, None, None, props)] * len(ham), np.float32)
        p = _peer_predict(model, ham_files, {"image_only": neutral_ham}, size, malignant)
        y = ham["label"].to_numpy(int)
        out["sanity_ham10000"] = {
            "n": len(ham), "n_positive": int(y.sum()),
            "roc_auc": float(roc_auc_score(y, p["image_only"])) if 0 < y.sum() < len(y)
            else None}
    out["status"] = "ok"
    out["wall_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = self_peak_rss_mb()
    return out


def restricted_view(source_dir: str, image_ids: list[str], dest: str) -> Path:
    """A data folder over ``source_dir``'s images whose test split is only ``image_ids``.

    Train and validation rows stay (the stored threshold and the metadata-only baseline
    use them); the images folder is a link to the prepared images.
    """
    import shutil

    from skinlesion.data.manifest import read_manifest, write_manifest
    from skinlesion.data.prepare import IMAGES_DIR

    src, out = Path(source_dir).resolve(), Path(dest)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    df = read_manifest(src)
    keep = (df["split"] != "test") | df["image_id"].astype(str).isin(set(image_ids))
    write_manifest(df[keep].reset_index(drop=True), out)
    (out / IMAGES_DIR).symlink_to(src / IMAGES_DIR, target_is_directory=True)
    return out


def _run_data_dir(run_dir: str) -> str | None:
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # Nested (data.data_dir) since the config sections; flat in runs saved before them.
    return (cfg.get("data") or {}).get("data_dir") or cfg.get("data_dir") or None


def score_run(run_dir: str, data_dir: str, image_ids: list[str], view_dir: str, eval_dir: str,
              bootstrap: int) -> dict[str, Any]:
    """Score one finished run on ``image_ids`` (fused and, for metadata runs, withheld)."""
    from skinlesion.data.manifest import read_manifest
    from skinlesion.evaluation.evaluate import select_split
    from skinlesion.inference.predictor import Predictor
    from skinlesion.workflows.evaluate import evaluate_run
    from skinlesion.workflows.scoring import predict_manifest

    t0 = time.perf_counter()
    own = _run_data_dir(run_dir)
    source = own if own and (Path(own) / "manifest.csv").is_file() else data_dir
    manifest = read_manifest(source)
    test_ids = set(manifest.loc[manifest["split"] == "test", "image_id"].astype(str))
    outside = sorted(set(image_ids) - test_ids)
    out: dict[str, Any] = {"data_dir": source, "run_data_dir": own}
    if outside:
        out["status"] = "failed"
        out["error"] = (f"{len(outside)} of the {len(image_ids)} images are not in this run's "
                        f"test split (e.g. {outside[:3]}): it may have trained on them")
        return out
    view = restricted_view(source, image_ids, view_dir)
    predictor = Predictor.from_run(run_dir)
    spec = predictor.spec
    out.update({"backbone": spec.backbone, "input_size": spec.input_size,
                "target": spec.target, "metadata": spec.metadata,
                "val_auc": (spec.val_metrics or {}).get("roc_auc")})
    ev = evaluate_run(run_dir, view, split="test", bootstrap=bootstrap, seed=0, out=eval_dir,
                      predictor=predictor)
    fused = _figures(ev.metrics, ev.predictions)
    fused["metadata_table"] = ev.metrics.get("metadata")
    out["fused"] = {"input": "image + age, sex, site" if predictor.uses_metadata else "image",
                    "threshold": fused.get("threshold"), "test": fused}
    if predictor.uses_metadata:
        rows = select_split(read_manifest(view), "test")
        scored, _ = predict_manifest(predictor, rows, view, withhold_metadata=True)
        out["withheld"] = {"input": "image (metadata withheld)",
                           "threshold": fused.get("threshold"),
                           "test": summarize(scored, float(fused["threshold"]), bootstrap)}
    out["status"] = "ok"
    out["wall_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = self_peak_rss_mb()
    return out


# === Rendering (docs/BENCHMARKS.md) ======================================================

def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, input): ``model``, ``input``, ``test`` figures or ``status``."""
    from bench.quality_ablation import ORDER as ABLATION_ROWS

    parts: dict[str, Any] = result.get("parts") or {}
    order = [p for p in ("peer", *ABLATION_ROWS) if p in parts]
    order += [p for p in parts if p not in order]
    rows: list[dict[str, Any]] = []
    for name in order:
        p = parts[name]
        if name == "peer":
            version = (p.get("package") or {}).get("version")
            model = f"sklesion {version or ''} (PyPI; Xception, HAM10000)".replace("  ", " ")
            variants = [k for k in ("image_only", "with_metadata") if p.get(k)]
        else:
            model = f"ours · `{name}`"
            if p.get("backbone"):
                model += f" ({p['backbone']} {p.get('input_size')} px)"
            variants = [k for k in ("fused", "withheld") if p.get(k)]
        if not variants:
            rows.append({"part": name, "model": model, "input": "—",
                         "status": p.get("status") or ("failed" if p.get("error") else "—"),
                         "reason": p.get("reason") or p.get("error")})
        for k in variants:
            rows.append({"part": name, "model": model, "input": p[k].get("input", k),
                         "status": "ok", "test": p[k].get("test") or {},
                         "val_auc": p.get("val_auc") if k == "fused" else None,
                         "headline": k != "withheld"})
    return rows


def _counts(d: Any) -> str:
    if not isinstance(d, dict) or not d:
        return "—"
    return ", ".join(f"{fmt(k)} {fmt(v)}" for k, v in d.items())


def _cache_relative(text: str) -> str:
    """Show run paths from the bench cache without the machine's folders."""
    import re

    return re.sub(r"\S*?/(quality_ablation/)", r"<bench cache>/\1", text)


def render_report(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """The peer table, the subset's counts and what could not be measured."""
    result = rec.get("result") or {}
    data = result.get("data") or {}
    sub = data.get("subset") or {}
    body: list[str] = []
    if result.get("quick"):
        body.append("**Quick mode: checks the machinery only.**")
    stamps = sorted({(str((p.get("run") or {}).get("created", ""))[:16],
                      str((p.get("run") or {}).get("commit") or "")[:12])
                     for p in (result.get("parts") or {}).values() if isinstance(p, dict)}
                    - {("", "")})
    if stamps:
        body.append("Parts measured " + ", ".join(f"{c} UTC at `{m}`" for c, m in stamps) + ".")
    body.append(
        f"Images: isic-dev test split ({fmt(sub.get('test_n'))} images, "
        f"{fmt(sub.get('test_malignant'))} malignant) minus its {fmt(sub.get('excluded_ham10000'))}"
        f" HAM10000 images = **{fmt(sub.get('n'))} images, {fmt(sub.get('n_malignant'))} "
        f"malignant** ("
        + ", ".join(f"{k} {fmt(v.get('n'))}/{fmt(v.get('n_malignant'))}"
                    for k, v in (sub.get("by_source") or {}).items())
        + " — n/malignant per source).")
    cells, heads, missing = _peer_table(table_rows(result))
    if cells:
        body.append(table(["Model", "Input", "Val AUC (whole val split)", "Test AUC [95 % CI]",
                           "Spec. at 90 % sens. (read off test)",
                           "AUC, complete metadata (n)", "n (malignant)"], cells))
    else:
        body.append("_No row could be measured._")
    body.extend(_paired_section(paired_comparisons(result)))
    if missing:
        body.append("**Not measured:**\n\n" + bullets(missing))
    body.extend(_peer_details((result.get("parts") or {}).get("peer") or {}))
    folders = sorted({_cache_relative(str(Path(p["run_dir"]).parent)) for p in (result.get("parts") or {}).values()
                      if isinstance(p, dict) and p.get("run_dir") and p.get("status") == "ok"})
    if folders:
        body.append("Our runs read from "
                    + ", ".join(f"`{f}`" for f in folders) + ".")
    if result.get("notes"):
        body.append(bullets(fmt(n) for n in result["notes"]))
    return "\n\n".join(body), heads


def _peer_table(rows: list[dict[str, Any]]) -> tuple[list[list[str]], list[Row], list[str]]:
    """The table's cells, the headline rows (the peer's two rows and our row with the best
    *validation* AUC) and a line for every row that could not be measured."""
    cells: list[list[str]] = []
    heads: list[Row] = []
    missing: list[str] = []
    ours = [r for r in rows if r["part"] != "peer" and isinstance(r.get("val_auc"), int | float)]
    best = max(ours, key=lambda r: r["val_auc"])["part"] if ours else None
    for r in rows:
        if r["status"] != "ok":
            missing.append(f"{r['model']}: **{r['status']}** — {_cache_relative(fmt(r.get('reason')))}")
            continue
        t = r["test"]
        comp = t.get("roc_auc_complete_metadata") or {}
        cells.append([
            r["model"], r["input"], fixed(r.get("val_auc")),
            f"{fixed(t.get('roc_auc'))}{ci(t.get('roc_auc_ci95'))}",
            pct(t.get("specificity_at_sensitivity_90")),
            f"{fixed(comp.get('roc_auc'))} (n {fmt(comp.get('n'))})",
            f"{fmt(t.get('n'))} ({fmt(t.get('n_positive'))})",
        ])
        if t.get("roc_auc") is not None and r.get("headline") and r["part"] in ("peer", best):
            heads.append({"metric": f"Non-HAM10000 test AUC — {r['model']}, {r['input']}"
                          + (" (our best on validation AUC)" if r["part"] == best else ""),
                          "value": f"{fixed(t.get('roc_auc'))}{ci(t.get('roc_auc_ci95'))}",
                          "note": f"n {fmt(t.get('n'))}; spec at 90 % sens "
                                  f"{pct(t.get('specificity_at_sensitivity_90'))}"})
    return cells, heads, missing


def _paired_section(pairs: list[dict[str, Any]]) -> list[str]:
    """Ours − peer on the same images (paired DeLong), if any pair was compared."""
    if not pairs:
        return []
    return [
        "**Ours − peer on the same images** (paired DeLong test; image only against image "
        "only, with metadata against with metadata):\n\n" + table(
            ["Ours", "Input (ours)", "Peer input", "n", "AUC ours − peer [95 % CI]", "p"],
            [[f"`{c['part']}`", c["ours"], c["peer"], fmt(c["n"]),
              (f"{c['difference']:+.3f}{ci(c.get('ci'))}" if "difference" in c
               else fmt(c.get("error"))),
              (f"{c['p_value']:.3g}" if isinstance(c.get("p_value"), float) else "—")]
             for c in pairs])]


def _peer_details(peer: dict[str, Any]) -> list[str]:
    """How the peer was loaded and fed, and its preprocessing check on HAM10000 images."""
    if not peer.get("peer"):
        return []
    p = peer["peer"]
    given = peer.get("metadata_given") or {}
    out = [
        f"Peer: `model.keras` saved with Keras {fmt((p.get('saved_with') or {}).get('keras_version'))}"
        f", loaded with Keras {fmt(p.get('keras_here'))} (`compile=False`)"
        f"{'; load error: ' + fmt(p.get('load_error')) if p.get('load_error') else ''}; "
        f"classes {fmt(peer.get('classes'))}, malignant = {fmt(peer.get('malignant_classes'))}; "
        f"image files: {_counts(peer.get('image_files'))}; metadata given for age "
        f"{fmt(given.get('age'))}, sex {fmt(given.get('sex'))}, site {fmt(given.get('site'))} "
        f"images; sites as given: {_counts(given.get('site_mapping'))}."]
    sanity = peer.get("sanity_ham10000") or {}
    if sanity:
        out.append(
            f"Preprocessing check (not a quality figure): on the {fmt(sanity.get('n'))} "
            f"HAM10000 images left out above ({fmt(sanity.get('n_positive'))} malignant), "
            f"very likely among its own training images, the peer reaches AUC "
            f"{fixed(sanity.get('roc_auc'))} from the image alone — its preprocessing is "
            f"reproduced.")
    return out


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=str))

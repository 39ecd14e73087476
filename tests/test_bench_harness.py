"""Bench harness: timings, child processes (value, peak memory, crashes, timeouts), machine
info, result files, part merging, bench selection, and the pure pieces of the bench modules."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# bench/ is a top-level package beside src/, not installed: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.__main__ import discover, parse_only
from bench.harness.child import run_in_child
from bench.harness.environment import environment
from bench.harness.results import merge_parts, read_results, write_result
from bench.harness.timing import ratio, summarize_times, time_calls

# === Timings ======================================================================


def test_time_calls_reports_repetitions_and_median_min_max() -> None:
    calls = []
    timing = time_calls(lambda: calls.append(sum(range(2000))), repeats=5, warmup=2, items=2000)
    assert len(calls) == 7  # warm-up calls run but are not timed
    assert timing["repeats"] == 5 and timing["warmup"] == 2 and len(timing["times_s"]) == 5
    assert timing["min_s"] <= timing["median_s"] <= timing["max_s"]
    assert timing["median_s"] == sorted(timing["times_s"])[2]
    assert timing["per_s_median"] == pytest.approx(2000 / timing["median_s"])
    assert timing["per_s_best"] >= timing["per_s_median"] >= timing["per_s_worst"]


def test_summarize_times_rejects_nothing_and_negative() -> None:
    with pytest.raises(ValueError, match="no timings"):
        summarize_times([])
    with pytest.raises(ValueError, match="negative"):
        summarize_times([0.1, -1.0])
    assert summarize_times([3.0, 1.0, 2.0])["median_s"] == 2.0
    assert ratio(10.0, 4.0) == 2.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_environment_records_machine_versions_and_commit() -> None:
    env = environment()
    machine = env["machine"]
    assert machine["cpu_model"] and machine["cpu_model"] != "unknown"
    assert machine["usable_cores"] >= 1 and machine["logical_cores"] >= machine["usable_cores"]
    assert {"python", "tensorflow", "keras", "numpy"} <= set(env["versions"])
    assert env["commit"] is None or len(env["commit"].split("-")[0]) == 40


# === Child processes ==============================================================


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    """A tiny importable module of child targets."""
    (tmp_path / "tiny_targets.py").write_text(textwrap.dedent("""
        import os, signal, time

        def alloc(mb):
            block = bytearray(mb * 2**20)
            block[::4096] = b"x" * len(block[::4096])  # touch every page
            return {"n": len(block), "pid": os.getpid()}

        def boom():
            raise ValueError("boom in the child")

        def die():
            os.kill(os.getpid(), signal.SIGKILL)

        def hang():
            time.sleep(60)
    """))
    return tmp_path


def test_child_returns_value_and_its_own_peak_memory(targets: Path) -> None:
    big = run_in_child("tiny_targets:alloc", {"mb": 200}, pythonpath=[targets])
    small = run_in_child("tiny_targets:alloc", {"mb": 1}, pythonpath=[targets])
    assert big.ok and big.value["n"] == 200 * 2**20 and big.value["pid"] != os.getpid()
    assert big.peak_rss_mb >= 200  # the child's ru_maxrss, not ours
    assert small.ok and small.peak_rss_mb < big.peak_rss_mb - 150  # per measurement
    assert big.log is None and big.error is None and big.cpu_s > 0


def test_child_failures_are_reported_not_raised(targets: Path, tmp_path: Path) -> None:
    err = run_in_child("tiny_targets:boom", pythonpath=[targets],
                         log_path=tmp_path / "boom.log")
    assert not err.ok and err.returncode == 1
    assert "ValueError: boom in the child" in err.error
    assert "boom in the child" in (tmp_path / "boom.log").read_text()
    killed = run_in_child("tiny_targets:die", pythonpath=[targets])
    assert not killed.ok and killed.returncode == -9 and "SIGKILL" in killed.error
    hung = run_in_child("tiny_targets:hang", pythonpath=[targets], timeout=3)
    assert not hung.ok and hung.timed_out and hung.wall_s < 30
    assert "timed out" in hung.error
    with pytest.raises(ValueError, match="module:function"):
        run_in_child("no_colon_here")


# === Result files and merging =====================================================


def test_results_are_written_atomically_and_read_back(tmp_path: Path) -> None:
    record = {"name": "demo", "result": {"x": np.float32(1.5), "bad": float("nan")}}
    path = write_result(tmp_path, "demo", record)
    data = json.loads(path.read_text())
    assert data["result"] == {"x": 1.5, "bad": None}  # numpy → float, NaN → null
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    (tmp_path / "broken.json").write_text("{not json")
    assert set(read_results(tmp_path)) == {"demo"}  # an unreadable file is skipped


def test_merge_parts_keeps_earlier_parts() -> None:
    old = {"name": "quality", "result": {"parts": {"tutorial1": {"auc": 0.7},
                                                   "frozen": {"auc": 0.8}}}}
    new = {"name": "quality", "status": "ok",
           "result": {"title": "Q", "parts": {"frozen": {"auc": 0.85}}}}
    merged = merge_parts(old, new)
    assert merged["result"]["parts"] == {"tutorial1": {"auc": 0.7}, "frozen": {"auc": 0.85}}
    assert merged["result"]["title"] == "Q" and merged["status"] == "ok"
    assert merge_parts(None, new) is new


def test_merge_parts_keeps_the_record_a_later_commit_replaces() -> None:
    def part(auc: float, commit: str) -> dict[str, object]:
        return {"test": {"roc_auc": auc}, "run": {"commit": commit, "quick": False}}

    old = {"name": "q", "result": {"parts": {"a": part(0.8, "c1"), "b": part(0.7, "c1")}}}
    new = {"name": "q", "result": {"parts": {"a": part(0.82, "c2"), "b": part(0.71, "c1")}}}
    parts = merge_parts(old, new)["result"]["parts"]
    assert parts["a"]["test"]["roc_auc"] == 0.82
    assert parts["a"]["previous"]["test"]["roc_auc"] == 0.8  # earlier commit kept beside
    assert "previous" not in parts["b"]  # same commit: simply replaced
    again = merge_parts({"result": {"parts": parts}},
                          {"result": {"parts": {"a": part(0.83, "c3")}}})["result"]["parts"]
    assert again["a"]["previous"]["test"]["roc_auc"] == 0.82
    assert "previous" not in again["a"]["previous"]  # one level only


def test_remeasured_rows_render_before_and_after() -> None:
    from bench.quality_ablation import render_report

    prev = {"test": {"roc_auc": 0.8385, "threshold": 0.35}, "run": {"commit": "aaaa"}}
    now = {"test": {"roc_auc": 0.8412, "threshold": 0.31}, "run": {"commit": "bbbb"},
           "previous": prev, "label": "frozen"}
    body, _ = render_report("quality_ablation", {"result": {"parts": {"frozen.binary": now}}})
    assert "Re-measured rows" in body
    assert "0.839" in body and "0.841" in body and "0.350" in body and "0.310" in body


def test_discover_and_parse_only() -> None:
    names = discover()
    assert names[:4] == ["quality", "quality_ablation", "quality_peer", "training_speed"]
    assert "machine" in names and "scaling" in names
    assert "report" not in names and "harness" not in names
    sel = parse_only("quality.tutorial1,scaling,quality.frozen", names)
    assert sel == {"quality": ["tutorial1", "frozen"], "scaling": None}
    assert parse_only("quality.frozen,quality", names) == {"quality": None}
    assert parse_only(None, names) == dict.fromkeys(names)
    with pytest.raises(ValueError, match="unknown bench 'nope'; available: quality"):
        parse_only("nope", names)


# === Pure pieces of the bench modules =============================================


def _fake_manifest(n: int = 60) -> pd.DataFrame:
    rows = []
    for i in range(n):
        split = "train" if i < 40 else ("val" if i < 50 else "test")
        rows.append({"image_id": f"img{i:03d}", "path": f"images/img{i:03d}.jpg",
                     "label": i % 2, "split": split, "source": "A" if i % 3 else "B"})
    return pd.DataFrame(rows)


def test_subset_manifest_is_stratified_and_deterministic() -> None:
    from bench.quality import subset_manifest

    df = _fake_manifest()
    sub = subset_manifest(df, {"train": 10, "test": 4}, seed=1)
    counts = sub["split"].value_counts().to_dict()
    assert counts == {"train": 10, "val": 10, "test": 4}  # val untouched
    assert sub[sub["split"] == "train"]["label"].sum() == 5  # stratified by label
    assert sub.equals(subset_manifest(df, {"train": 10, "test": 4}, seed=1))
    assert list(sub.index) == sorted(sub.index)


def test_data_view_has_its_own_manifest_and_links_the_images(tmp_path: Path) -> None:
    from bench.quality import make_data_view

    from skinlesion.data.manifest import read_manifest, resolve_paths, write_manifest

    prepared = tmp_path / "prepared"
    (prepared / "images").mkdir(parents=True)
    df = _fake_manifest()
    for p in df["path"]:
        (prepared / p).write_bytes(b"jpeg")
    write_manifest(df, prepared)
    (prepared / "cache").mkdir()  # another view's features must not leak in
    view = make_data_view(prepared, tmp_path / "view", {"train": 8})
    got = read_manifest(view)
    assert len(got) == 8 + 10 + 10 and not (view / "cache").exists()
    assert all(Path(p).is_file() for p in resolve_paths(got, view))
    (view / "cache").mkdir()
    again = make_data_view(prepared, tmp_path / "view", None)  # rebuilt from scratch
    assert len(read_manifest(again)) == 60 and not (again / "cache").exists()


def test_summarize_metrics_reads_evaluate_predictions_output() -> None:
    from bench.quality import summarize_metrics
    from sklearn.metrics import roc_auc_score

    from skinlesion.evaluation.evaluate import evaluate_predictions

    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 40)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, y.size), 0, 1)
    df = pd.DataFrame({"image_id": [f"i{i}" for i in range(y.size)], "label": y,
                       "probability": p, "source": np.where(np.arange(y.size) < 50, "A", "B")})
    metrics = evaluate_predictions(df, 0.4, bootstrap=50, seed=0).metrics
    s = summarize_metrics(json.loads(json.dumps(metrics)))
    assert s["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert len(s["roc_auc_ci95"]) == 2 and s["roc_auc_ci95"][0] <= s["roc_auc"]
    assert s["threshold"] == 0.4 and s["n"] == 80 and s["n_positive"] == 40
    assert s["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= 0.4))
    assert s["specificity"] == pytest.approx(np.mean(p[y == 0] < 0.4))
    assert 0.0 <= s["pauc_tpr80"] <= 0.2 and s["sensitivity_reached_95"] >= 0.95
    assert [r["source"] for r in s["per_source"]] == ["A", "B"]
    a = df[df["source"] == "A"]
    assert s["per_source"][0]["roc_auc"] == pytest.approx(roc_auc_score(a["label"],
                                                                        a["probability"]))
    assert summarize_metrics({})["roc_auc"] is None  # missing blocks → None, no crash


def test_linear_fit_recovers_a_line() -> None:
    from bench.scaling import linear_fit

    fit = linear_fit([250, 500, 1000, 2000], [5 + 0.01 * n for n in (250, 500, 1000, 2000)])
    assert fit["fixed_s"] == pytest.approx(5.0) and fit["per_1000_images_s"] == pytest.approx(10.0)
    assert linear_fit([100], [1.0]) is None


def test_subset_labels_links_image_folders(tmp_path: Path) -> None:
    from bench.scaling import subset_labels

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rows = [{"image_id": f"i{i}", "filename": f"images/i{i}.jpg", "label": str(i % 2)}
            for i in range(20)]
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    out = subset_labels(src / "labels.csv", 8, tmp_path / "sub")
    sub = pd.read_csv(out, dtype=str)
    assert len(sub) == 8 and (sub["label"] == "1").sum() == 4
    assert (tmp_path / "sub" / "images").resolve() == (src / "images").resolve()


def test_flop_counts_of_a_tiny_model() -> None:
    import keras
    from bench.training_speed import layer_flops, profiler_flops, training_flops

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, name="dense")(x)
    model = keras.Model(inputs, outputs)
    layers = layer_flops(model)
    conv, dw, dense = 2 * 64 * 3 * 3 * 3 * 4, 2 * 64 * 3 * 3 * 4, 2 * 4
    assert layers == [("conv", conv, True), ("dw", dw, True), ("dense", dense, True)]
    # All trainable: forward + input grads above the first layer + every weight grad.
    assert training_flops(layers) == 2 * (conv + dw + dense) + dw + dense
    model.get_layer("conv").trainable = False
    assert training_flops(layer_flops(model)) == (conv + dw + dense) + dense + (dw + dense)
    counted, how = profiler_flops(model, 8)
    assert counted is not None, how
    # The profiler also counts bias adds and pooling: a little above the MAC count.
    assert conv + dw + dense <= counted <= 1.2 * (conv + dw + dense)


# === A recipe trained and evaluated the quality bench's way (tiny, in process) ======


def _tiny_data(root: Path, per_split: dict[str, int], size: int = 40) -> Path:
    """Generated images where malignant ones carry a dark blob (learnable by a tiny CNN)."""
    from PIL import Image

    from skinlesion.data.manifest import write_manifest

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for split, n in per_split.items():
        for i in range(n):
            label = i % 2
            img = np.clip(rng.normal(rng.uniform(150, 230, 3), 12, (size, size, 3)), 0, 255)
            if label:
                yy, xx = np.mgrid[:size, :size]
                img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] *= 0.35
            image_id = f"{split}{i:03d}"
            Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{image_id}.jpg")
            rows.append({"image_id": image_id, "path": f"images/{image_id}.jpg", "label": label,
                         "diagnosis": "melanoma" if label else "nevus", "split": split,
                         "source": "gen-a" if i % 4 < 2 else "gen-b"})
    write_manifest(pd.DataFrame(rows), root)
    return root


@pytest.mark.slow  # a whole bench recipe: train (31 epochs), then evaluate
def test_train_and_evaluate_one_recipe_the_bench_way(tmp_path: Path) -> None:
    from bench.quality import train_and_evaluate

    data = _tiny_data(tmp_path / "data", {"train": 40, "val": 20, "test": 24})
    tiny = {"backbone": "test_tiny_cnn", "weights": "none", "input_size": 32, "batch_size": 8,
            "feature_views": 1, "patience": 0, "seed": 1}
    ours = train_and_evaluate("finetune", str(data), str(tmp_path / "run-ft"),
                              {**tiny, "head_epochs": 30, "head_lr": 3e-2,
                               "finetune_epochs": 1}, bootstrap=20, tta=2)
    assert ours["backbone"] == "test_tiny_cnn" and ours["input_size"] == 32
    assert ours["config"]["mode"] == "finetune" and ours["config"]["threshold"] is None
    assert ours["train"]["wall_s"] > 0 and ours["train"]["peak_memory_mb"] > 0
    assert ours["train"]["epochs_by_stage"] == {"head": 30, "finetune": 1}
    test = ours["test"]
    assert test["n"] == 24 and test["n_positive"] == 12 and test["bootstrap_replicates"] == 20
    assert test["roc_auc"] > 0.8  # the blob is learnable even from random features
    assert "validation" in test["threshold_rule"] or "stored" in test["threshold_rule"]
    assert [s["source"] for s in test["per_source"]] == ["gen-a", "gen-b"]
    assert ours["tta"] == 2 and ours["test_tta"]["tta"] == 2 and ours["test"]["tta"] == 1
    assert (tmp_path / "run-ft" / "eval" / "metrics.json").is_file()
    assert (tmp_path / "run-ft" / "eval-tta2" / "metrics.json").is_file()

    t1 = train_and_evaluate("tutorial1", str(data), str(tmp_path / "run-t1"),
                            {**tiny, "head_epochs": 1}, bootstrap=0)
    assert t1["test"]["threshold"] == pytest.approx(0.23)  # tutorial 1's fixed threshold
    assert t1["config"]["optimizer"] == "rmsprop" and "test_tta" not in t1
    assert "frozen_recomputed_s" in t1["train"]["timings"]

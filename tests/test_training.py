"""Training: config, augmentation, the data stream, stages and the run-directory contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlesion.data.manifest import write_manifest
from skinlesion.training.config import (
    RECIPES,
    AugmentConfig,
    load_config,
    merge_overrides,
    recipe_overrides,
)

# === Helpers ======================================================================

def make_dataset(root: Path, n_train: int = 48, n_val: int = 24, size: int = 40) -> Path:
    """A learnable generated data folder: malignant images are darker, with a dark blob."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        for i in range(n):
            label = i % 2
            base = rng.uniform(150, 230, size=3)
            img = np.clip(rng.normal(base, 12, size=(size, size, 3)), 0, 255)
            if label:
                yy, xx = np.mgrid[:size, :size]
                blob = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
                img[blob] *= 0.35
            image_id = f"{split}_{i:03d}"
            Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{image_id}.jpg")
            rows.append({"image_id": image_id, "path": f"images/{image_id}.jpg", "label": label,
                         "diagnosis": "melanoma" if label else "nevus", "source": "synthetic",
                         "split": split})
    write_manifest(pd.DataFrame(rows), root)
    return root


def tiny_config(data: Path, out: Path, **kw):
    base = dict(data_dir=str(data), out=str(out), backbone="mobilenet_v3_small", weights="none",
                input_size=32, batch_size=8, head_epochs=4, finetune_epochs=2, feature_views=2,
                patience=0, dropout=0.0, seed=3)
    # Layered, so a keyword wins whether it is a flat name or a dotted key.
    return load_config(overrides=merge_overrides(base, kw))


@pytest.fixture(scope="module")
def gen_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("gen_data"))


# === Config =======================================================================

def test_config_layers_defaults_yaml_and_flags(tmp_path: Path) -> None:
    yml = tmp_path / "run.yaml"
    yml.write_text("backbone: efficientnet_b0\nbatch_size: 16\naugment:\n  rotation_deg: 5\n")
    cfg = load_config(yml, {"batch_size": 8, "augment.zoom": 0.2, "seed": None})
    assert cfg.model.backbone == "efficientnet_b0"
    assert cfg.stages.batch_size == 8  # flag beats file
    assert cfg.augment.rotation_deg == 5 and cfg.augment.zoom == 0.2
    assert cfg.seed == 1  # None override ignored: default stays
    again = load_config(None, {**cfg.to_dict(), "augment": cfg.to_dict()["augment"]})
    assert again == cfg


def test_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, {"bakcbone": "x"})
    with pytest.raises(ValueError, match="mode must be one of"):
        load_config(None, {"mode": "fast"})
    with pytest.raises(ValueError, match="target_sensitivity"):
        load_config(None, {"target_sensitivity": 1.5})
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_overrides("tutorial9")


def test_tutorial_recipes_encode_the_tutorials() -> None:
    t1 = load_config(None, recipe_overrides("tutorial1"))
    assert (t1.stages.mode, t1.stages.cache_features, t1.optim.optimizer, t1.stages.batch_size,
            t1.decision.threshold, t1.stages.monitor, t1.model.preprocessing) == (
        "frozen", False, "rmsprop", 64, 0.23, "val_loss", "unit")
    t2 = load_config(None, recipe_overrides("tutorial2"))
    assert (t2.optim.optimizer, t2.stages.finetune_lr, t2.stages.unfreeze_groups,
            t2.model.input_size, t2.decision.threshold) == ("adam", 3e-4, -1, 224, 0.5)
    assert t2.augment.rotation_deg == 15 and t2.augment.zoom == 0.05 and not t2.augment.transpose


def test_set_assignments_reach_every_field_with_their_types() -> None:
    from skinlesion.training.config import parse_assignments

    got = parse_assignments(["dropout=0.3", "augment.zoom=0", "optimizer=adam",
                             "metadata=age,sex", "jit=true", "input_size=288",
                             "threshold=0.23"])
    assert got == {"dropout": 0.3, "augment.zoom": 0.0, "optimizer": "adam",
                   "metadata": "age,sex", "jit": True, "input_size": 288, "threshold": 0.23}
    assert isinstance(got["augment.zoom"], float)
    cfg = load_config(None, got)
    assert (cfg.model.dropout, cfg.augment.zoom, cfg.optim.optimizer, cfg.model.input_size) == (
        0.3, 0.0, "adam", 288)
    for bad, why in [("nokey=1", "unknown config key 'nokey'"),
                     ("batch_size=abc", "expected an integer"),
                     ("seed=1.5", "expected an integer"),
                     ("jit=maybe", "expected true or false"),
                     ("dropout=null", "cannot be null"),
                     ("batch_size", "expected KEY=VALUE")]:
        with pytest.raises(ValueError, match=why):
            parse_assignments([bad])
    with pytest.raises(ValueError, match="optimizer must be one of"):
        load_config(None, parse_assignments(["optimizer=sgdx"]))


def test_train_cli_set_errors_name_the_key(gen_data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from skinlesion.cli.main import app

    result = CliRunner().invoke(app, ["train", str(gen_data), "--out", str(tmp_path / "r"),
                                      "--set", "bakcbone=x"])
    assert result.exit_code == 2
    assert "bakcbone" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_train_cli_set_and_options_resolve_into_config_yaml(gen_data: Path, tmp_path: Path) -> None:
    import yaml

    run = tmp_path / "run"
    proc = subprocess.run(_cli(
        "train", str(gen_data), "--out", str(run), "--backbone", "mobilenet_v3_small",
        "--weights", "none", "--input-size", "32", "--head-epochs", "1", "--finetune-epochs",
        "1", "--no-export-tflite", "--set", "dropout=0.25", "--set", "augment.zoom=0",
        "--set", "stages.batch_size=4", "--batch-size", "8", "--set", "stages.feature_views=1"),
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = yaml.safe_load((run / "config.yaml").read_text())  # nested: one block per section
    assert saved["model"]["dropout"] == 0.25 and saved["augment"]["zoom"] == 0.0
    assert saved["stages"]["batch_size"] == 8  # the dedicated option wins over --set
    assert saved["stages"]["feature_views"] == 1


# === Augmentation and the data stream ============================================

def test_augmentation_is_deterministic_and_in_range() -> None:
    import tensorflow as tf

    from skinlesion.data.augment import augment_image

    img = tf.constant(np.random.default_rng(0).integers(0, 256, (48, 48, 3)), tf.uint8)
    cfg = AugmentConfig()
    a = augment_image(img, tf.constant([1, 2]), cfg).numpy()
    b = augment_image(img, tf.constant([1, 2]), cfg).numpy()
    c = augment_image(img, tf.constant([1, 3]), cfg).numpy()
    assert a.shape == (48, 48, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 255
    off = AugmentConfig(enabled=True, rotation_deg=0, zoom=0, flip=False, transpose=False,
                        brightness=0, contrast=0, saturation=0, hue=0, crop_scale=1.0)
    np.testing.assert_allclose(augment_image(img, tf.constant([1, 2]), off).numpy(),
                               img.numpy().astype(np.float32))


def test_training_stream_resumes_exactly_and_reshuffles(gen_data: Path) -> None:
    from skinlesion.data.manifest import read_manifest, resolve_paths
    from skinlesion.data.pipeline import image_dataset, training_stream

    df = read_manifest(gen_data)
    df = df[df.split == "train"]
    base = image_dataset(resolve_paths(df, gen_data), df.label.to_numpy(), 32)
    n = len(df)
    full = [b for b in training_stream(base, n, batch_size=8, seed=5, start_epoch=0, epochs=3,
                                       augment=AugmentConfig())]
    per_epoch = int(np.ceil(n / 8))
    assert len(full) == 3 * per_epoch
    resumed = [b for b in training_stream(base, n, batch_size=8, seed=5, start_epoch=2, epochs=3,
                                          augment=AugmentConfig())]
    for x, y in zip(full[2 * per_epoch:], resumed, strict=True):
        np.testing.assert_array_equal(x[0].numpy(), y[0].numpy())
        np.testing.assert_array_equal(x[1].numpy(), y[1].numpy())
    order0 = np.concatenate([b[1].numpy() for b in full[:per_epoch]])
    assert sorted(order0.tolist()) == sorted(df.label.astype(float).tolist())
    assert not np.array_equal(full[0][0].numpy(), full[per_epoch][0].numpy())


def test_class_weights_balance_the_loss() -> None:
    from skinlesion.training.objectives import class_weights

    w = class_weights(np.array([0] * 90 + [1] * 10))
    assert w[1] / w[0] == pytest.approx(9.0)
    assert 90 * w[0] == pytest.approx(10 * w[1])
    with pytest.raises(ValueError, match="no examples of class 1"):
        class_weights(np.zeros(5))


def test_set_trainable_unfreezes_top_groups_keeps_batchnorm_frozen() -> None:
    import keras

    from skinlesion.models.classifier import build_classifier
    from skinlesion.models.registry import get_backbone
    from skinlesion.training.stages import set_trainable

    spec = get_backbone("mobilenet_v3_small")
    model = build_classifier("mobilenet_v3_small", 32, weights=None)
    trunk = model.get_layer("backbone")
    assert set_trainable(model, spec, 0) == 0 and not trunk.trainable
    top1 = set_trainable(model, spec, 1)
    all_ = set_trainable(model, spec, -1)
    assert 0 < top1 < all_
    assert not any(layer.trainable for layer in trunk.layers
                   if isinstance(layer, keras.layers.BatchNormalization))


# === End to end ======================================================================

def test_train_writes_the_run_directory_contract(gen_data: Path, tmp_path: Path) -> None:
    from skinlesion.runspec import ModelSpec
    from skinlesion.training.errors import RunExistsError
    from skinlesion.training.trainer import train

    out = tmp_path / "run"
    result = train(tiny_config(gen_data, out))
    for name in ("config.yaml", "model.keras", "model_spec.json", "history.csv"):
        assert (out / name).is_file(), name
    assert (out / "logs" / "finetune").is_dir() and (out / "checkpoints").is_dir()
    spec = ModelSpec.load(out)
    assert spec.backbone == "mobilenet_v3_small" and spec.input_size == 32
    assert 0.0 <= spec.threshold <= 1.0 and spec.youden_threshold is not None
    assert spec.val_metrics["sensitivity"] >= 0.90  # the threshold rule on validation data
    assert len(spec.data_fingerprint) == 64 and spec.model_id
    assert spec.data_dir == str(gen_data)  # export finds its check images through the spec
    assert "not a diagnostic device" in spec.intended_use
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["stage"].unique()) == ["head", "finetune"]
    assert len(hist) == 4 + 2
    for col in ("loss", "val_loss", "val_auc", "val_pr_auc", "val_precision", "val_recall",
                "val_accuracy"):
        assert col in hist
    assert result.best_epoch >= 0 and result.peak_memory_mb > 0
    # A finished run is never overwritten by accident.
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(tiny_config(gen_data, out))
    # The saved model reloads and takes raw 0–255 pixels.
    import keras

    import skinlesion.models.backbones  # noqa: F401  (registers custom layers)

    model = keras.models.load_model(out / "model.keras", compile=False)
    p = np.asarray(model(np.full((2, 32, 32, 3), 200.0, np.float32)))
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))


def test_cached_feature_views_are_the_tta_views(tmp_path: Path) -> None:
    """Feature view ``v`` is test-time augmentation's view ``v`` (one dihedral function)."""
    import tensorflow as tf

    from skinlesion.inference.tta import dihedral_view
    from skinlesion.training.features import extract_features

    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    base = tf.data.Dataset.from_tensor_slices((x, np.zeros(5), np.arange(5)))

    def flatten(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.reshape(images, (tf.shape(images)[0], -1))

    feats = extract_features(flatten, base, 5, views=8, cache_dir=tmp_path, key="k", batch_size=2)
    assert feats.shape == (8, 5, 48)
    for v in range(8):
        np.testing.assert_array_equal(feats[v], dihedral_view(x.astype(np.float32), v).reshape(5, -1))
    assert len({feats[v].tobytes() for v in range(8)}) == 8


def test_frozen_cached_mode_learns_the_signal(gen_data: Path, tmp_path: Path) -> None:
    from skinlesion.training.trainer import train

    result = train(tiny_config(gen_data, tmp_path / "frozen", backbone="test_tiny_cnn",
                               mode="frozen", head_epochs=60, head_lr=3e-2, feature_views=8))
    # Generated malignant images carry a dark blob: even random-init features separate them.
    assert result.val_metrics["roc_auc"] > 0.8
    assert result.timings["feature_pass_s"] >= 0 and "finetune_s" not in result.timings
    # One file per view of the train + val pool, under one key (other tests on gen_data
    # add files under their own keys).
    views: dict[str, int] = {}
    for path in (gen_data / "cache" / "features").glob("*-view*.npy"):
        key = path.name.rsplit("-view", 1)[0]
        views[key] = views.get(key, 0) + 1
    assert 8 in views.values()


def test_feature_cache_is_keyed_by_the_decoder(gen_data: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Features cached under one decoder are never reused by a run with another."""
    from skinlesion.training import stages
    from skinlesion.training.trainer import train

    def keys() -> set[str]:
        return {p.name.rsplit("-view", 1)[0]
                for p in (gen_data / "cache" / "features").glob("*-view*.npy")}

    cfg = {"backbone": "test_tiny_cnn", "mode": "frozen", "head_epochs": 1, "feature_views": 1}
    train(tiny_config(gen_data, tmp_path / "a", **cfg))
    before = keys()
    train(tiny_config(gen_data, tmp_path / "b", **cfg))
    assert keys() == before  # same decoder: the cache is reused
    monkeypatch.setattr(stages, "DECODER_ID", "another-decoder")
    train(tiny_config(gen_data, tmp_path / "c", **cfg))
    assert len(keys() - before) == 1  # another decoder: a new feature pass under a new key


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_named_recipe_trains_one_step(recipe: str, gen_data: Path, tmp_path: Path) -> None:
    """Each named recipe runs end to end for one epoch per stage on a tiny model."""
    from skinlesion.runspec import ModelSpec
    from skinlesion.training.trainer import train

    overrides = recipe_overrides(recipe)
    cfg = tiny_config(gen_data, tmp_path / recipe, **{
        **overrides, "input_size": 32, "batch_size": 8,
        "head_epochs": min(1, int(overrides.get("head_epochs", 1))), "finetune_epochs": 1,
        "feature_views": 1})
    # The recipe's own choices survive the tiny-size overrides.
    for key, value in overrides.items():
        if key not in {"input_size", "batch_size", "head_epochs", "finetune_epochs"}:
            assert cfg.get(key) == value, (recipe, key)
    result = train(cfg)
    run = tmp_path / recipe
    assert (run / "model.keras").is_file() and (run / "model_spec.json").is_file()
    spec = ModelSpec.load(run)
    assert spec.input_size == 32
    assert 0.0 <= float(spec.threshold) <= 1.0
    assert np.isfinite(result.val_metrics["roc_auc"])


def test_interrupted_run_needs_resume_or_overwrite(gen_data: Path, tmp_path: Path) -> None:
    from skinlesion.training.errors import RunExistsError
    from skinlesion.training.trainer import train

    out = tmp_path / "run"
    out.mkdir()
    tiny_config(gen_data, out).save(out / "config.yaml")
    with pytest.raises(RunExistsError, match="--resume"):
        train(tiny_config(gen_data, out))
    with pytest.raises(ValueError, match="same config"):
        train(tiny_config(gen_data, out, seed=99), resume=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "skinlesion.cli.main", *args]


@pytest.mark.slow  # four training processes
def test_sigkill_mid_training_then_resume_matches_uninterrupted(gen_data: Path, tmp_path: Path) -> None:
    """Kill a real training process mid-run; --resume finishes it like an uninterrupted run."""
    args = ["--backbone", "mobilenet_v3_small", "--weights", "none", "--input-size", "32",
            "--batch-size", "8", "--head-epochs", "2", "--finetune-epochs", "6", "--patience", "0",
            "--seed", "4"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    ref, run = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cli("train", str(gen_data), "--out", str(ref), *args), check=True, env=env,
                   capture_output=True, timeout=600)

    proc = subprocess.Popen(_cli("train", str(gen_data), "--out", str(run), *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = run / "checkpoints" / "backup_finetune" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if meta.is_file() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.keras").exists() and not (run / "model_spec.json").exists()
    assert not list(run.glob(".model.keras*"))  # no half-written model left behind

    refused = subprocess.run(_cli("train", str(gen_data), "--out", str(run), *args), env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    done = subprocess.run(_cli("train", str(gen_data), "--out", str(run), "--resume", *args),
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = pd.read_csv(ref / "history.csv"), pd.read_csv(run / "history.csv")
    assert len(a) == len(b) == 8
    np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-3, atol=1e-3)
    sa = json.loads((ref / "model_spec.json").read_text())
    sb = json.loads((run / "model_spec.json").read_text())
    assert sa["val_metrics"]["roc_auc"] == pytest.approx(sb["val_metrics"]["roc_auc"], abs=1e-3)


def test_training_stream_works_under_a_global_seed_of_zero(gen_data: Path) -> None:
    """``--seed 0`` sets TensorFlow's global seed to 0; the per-epoch shuffles must still build."""
    import keras

    from skinlesion.data.manifest import read_manifest, resolve_paths
    from skinlesion.data.pipeline import feature_batches, image_dataset, training_stream

    keras.utils.set_random_seed(0)
    try:
        df = read_manifest(gen_data)
        base = image_dataset(resolve_paths(df, gen_data), df.label.to_numpy(), 32)
        batches = list(training_stream(base, len(df), batch_size=8, seed=0, start_epoch=0,
                                       epochs=2))
        assert sum(len(b[1]) for b in batches) == 2 * len(df)
        feats = list(feature_batches(np.ones((10, 3)), np.arange(10) % 2, 4, seed=0, epochs=2))
        assert sum(len(b[1]) for b in feats) == 20
    finally:
        keras.utils.set_random_seed(1)

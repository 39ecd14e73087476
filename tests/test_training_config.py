"""The training config: nested sections, flat-name compatibility, --set, validation, the CLI
options generated from one table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from skinlesion.training.config import (
    FIELDS,
    KEYS,
    SECTIONS,
    AugmentConfig,
    DataConfig,
    DecisionConfig,
    DistributeConfig,
    MetadataConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    StagesConfig,
    TrainConfig,
    config_from_dict,
    dotted_overrides,
    load_config,
    merge_overrides,
    parse_assignments,
    recipe_overrides,
)

# A config.yaml exactly as runs saved it before the sections (recipe tutorial1 plus a few
# fields): every field flat, augmentation as a block.
LEGACY_FLAT_YAML = """\
data_dir: data/isic
out: runs/t1
backbone: efficientnet_lite0
weights: imagenet
input_size: 0
preprocessing: unit
dropout: 0.0
mode: frozen
cache_features: false
feature_views: 8
head_epochs: 10
head_batch_size: 256
head_lr: 0.001
finetune_epochs: 10
finetune_lr: 0.0002
unfreeze_groups: -1
warmup_epochs: 1
schedule: cosine
optimizer: rmsprop
weight_decay: 0.0001
batch_size: 64
imbalance: none
loss: bce
label_smoothing: 0.0
focal_gamma: 2.0
monitor: val_loss
patience: 0
target_sensitivity: 0.9
threshold: 0.23
seed: 1
strategy: auto
scale_lr: true
precision: float32
jit: false
cache: memory
tfrecords: false
shuffle_buffer: 0
limit: 0
fold: 1
target: binary
min_class_images: 20
metadata: age,sex
metadata_missing: flags
metadata_dropout: 0.2
color_constancy: false
augment:
  enabled: false
  rotation_deg: 15.0
  zoom: 0.05
  flip: true
  transpose: true
  brightness: 0.1
  contrast: 0.1
  saturation: 0.1
  hue: 0.02
  crop_scale: 0.8
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# === Layout ======================================================================

def test_config_is_nested_frozen_sections_and_saves_nested(tmp_path: Path) -> None:
    cfg = TrainConfig()
    assert list(SECTIONS) == ["data", "model", "metadata", "stages", "optim", "objective",
                              "decision", "distribute", "augment"]
    for name, cls in SECTIONS.items():
        section = getattr(cfg, name)
        assert isinstance(section, cls) and section.__doc__
        for f in dataclasses.fields(cls):  # each section documents each of its fields
            assert f"{f.name}:" in cls.__doc__, (name, f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.stages.head_epochs = 3  # type: ignore[misc]
    saved = yaml.safe_load(cfg.save(tmp_path / "config.yaml").read_text())
    assert list(saved) == ["out", "seed", *SECTIONS]
    assert saved["stages"]["head_epochs"] == 40 and saved["metadata"] == {
        "fields": "", "missing": "flags", "dropout": 0.0}
    assert load_config(tmp_path / "config.yaml") == cfg


def test_nested_yaml_loads_with_overrides_in_either_form(tmp_path: Path) -> None:
    yml = _write(tmp_path / "run.yaml", "model:\n  backbone: efficientnet_b0\nstages:\n"
                 "  batch_size: 16\n  mode: frozen\nmetadata:\n  fields: age\naugment:\n"
                 "  rotation_deg: 5\n")
    cfg = load_config(yml, {"stages.batch_size": 8, "head_epochs": 3, "augment.zoom": 0.2,
                            "objective": {"loss": "focal"}, "seed": None})
    assert (cfg.model.backbone, cfg.stages.mode, cfg.metadata.fields) == (
        "efficientnet_b0", "frozen", "age")
    assert cfg.stages.batch_size == 8 and cfg.stages.head_epochs == 3  # overrides beat the file
    assert cfg.objective.loss == "focal" and cfg.seed == 1  # None: not given
    assert (cfg.augment.rotation_deg, cfg.augment.zoom) == (5, 0.2)
    assert load_config(None, cfg.to_dict()) == cfg  # the nested dict is an override too
    assert config_from_dict(cfg.to_dotted()) == cfg == config_from_dict(cfg.to_flat_dict())


# === Compatibility with flat configs ================================================

def test_legacy_flat_config_yaml_loads_to_the_same_config(tmp_path: Path) -> None:
    flat = load_config(_write(tmp_path / "flat.yaml", LEGACY_FLAT_YAML))
    assert (flat.data.data_dir, flat.data.fold, flat.stages.mode, flat.optim.optimizer,
            flat.decision.threshold, flat.metadata.fields, flat.metadata.dropout,
            flat.augment.enabled) == ("data/isic", 1, "frozen", "rmsprop", 0.23, "age,sex", 0.2,
                                      False)
    nested = load_config(flat.save(tmp_path / "nested.yaml"))
    assert nested == flat
    # Nothing is lost either way: the flat form written back is the legacy file.
    assert flat.to_flat_dict() == yaml.safe_load(LEGACY_FLAT_YAML)


def test_every_field_has_a_unique_flat_name_and_a_dotted_key() -> None:
    flats = [info.flat for info in FIELDS.values()]
    assert len(flats) == len(set(flats)) == len(FIELDS) == 55
    for key, info in FIELDS.items():
        assert KEYS[key] == KEYS[info.flat] == key
        assert TrainConfig().get(key) == TrainConfig().get(info.flat) == info.default
    renamed = {k: i.flat for k, i in FIELDS.items() if i.flat != k.rpartition(".")[2]}
    assert renamed == {"metadata.fields": "metadata", "metadata.missing": "metadata_missing",
                       "metadata.dropout": "metadata_dropout",
                       **{k: k for k in FIELDS if k.startswith("augment.")}}


def test_metadata_means_the_section_for_a_mapping_and_the_field_otherwise() -> None:
    assert load_config(None, {"metadata": "age,sex"}).metadata.fields == "age,sex"
    cfg = load_config(None, {"metadata": {"fields": "site", "missing": "impute"}})
    assert (cfg.metadata.fields, cfg.metadata.missing) == ("site", "impute")


def test_later_keys_win_whatever_their_form() -> None:
    assert dotted_overrides({"head_epochs": 1, "stages.head_epochs": 2}) == {
        "stages.head_epochs": 2}
    assert dotted_overrides({"stages": {"mode": "frozen"}, "mode": "finetune"}) == {
        "stages.mode": "finetune"}
    # Layers: a flat key of a later layer beats a dotted key of an earlier one, and a None
    # means "not given".
    merged = merge_overrides({"stages.batch_size": 64, "mode": "frozen"},
                             {"batch_size": 8, "mode": None})
    assert merged == {"stages.batch_size": 8, "stages.mode": "frozen"}


def test_recipes_accept_both_forms_and_return_flat_names() -> None:
    t1 = recipe_overrides("tutorial1")
    assert t1["mode"] == "frozen" and t1["augment.enabled"] is False and t1["threshold"] == 0.23
    assert all(k in KEYS and "." not in k.replace("augment.", "") for k in t1)
    # Callers merge them with flat keys, as before: the later key wins.
    assert load_config(None, {**t1, "batch_size": 8}).stages.batch_size == 8


# === --set =======================================================================

def test_set_takes_dotted_keys_and_flat_names_with_the_same_type_checks() -> None:
    got = parse_assignments(["stages.head_epochs=3", "head_lr=0.01", "model.dropout=0",
                             "metadata.fields=age", "distribute.jit=true",
                             "decision.threshold=null", "augment.hue=0"])
    assert got == {"head_epochs": 3, "head_lr": 0.01, "dropout": 0.0, "metadata": "age",
                   "jit": True, "threshold": None, "augment.hue": 0.0}
    assert isinstance(got["dropout"], float)
    assert parse_assignments(["metadata=sex"]) == parse_assignments(["metadata.fields=sex"])
    for bad, why in [("stages.head_epochs=abc", "expected an integer"),
                     ("stages.batch_size=1.5", "expected an integer"),
                     ("distribute.jit=maybe", "expected true or false"),
                     ("model.dropout=null", "cannot be null"),
                     ("stages.bakcbone=x", "unknown config key 'stages.bakcbone'"),
                     ("stages=1", "unknown config key 'stages'"),
                     ("metadata.missing", "expected KEY=VALUE")]:
        with pytest.raises(ValueError, match=why):
            parse_assignments([bad])


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_set_reaches_every_field(key: str) -> None:
    default = FIELDS[key].default
    text = yaml.safe_dump(default).strip().removesuffix("...").strip()
    assert load_config(None, parse_assignments([f"{key}={text}"])).get(key) == default
    assert parse_assignments([f"{FIELDS[key].flat}={text}"]) == parse_assignments(
        [f"{key}={text}"])


# === Errors ======================================================================

@pytest.mark.parametrize(("data", "named"), [
    ({"bakcbone": "x"}, "['bakcbone'] (did you mean backbone"),
    ({"stages": {"head_epoch": 3}}, "['stages.head_epoch'] (did you mean stages.head_epochs"),
    ({"model.bogus": 1}, "['model.bogus']"),
    ({"bogus": {"x": 1}}, "['bogus']"),
    ({"augment": {"zoomm": 0.1}}, "['augment.zoomm']"),
])
def test_unknown_keys_are_refused_naming_them(data: dict[str, Any], named: str,
                                              tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config key") as err:
        load_config(None, data)
    assert named in str(err.value)
    yml = _write(tmp_path / "c.yaml", yaml.safe_dump(data))
    with pytest.raises(ValueError, match=f"{yml}: unknown config key"):
        load_config(yml)


# === Validation: each section checks itself ==========================================

@pytest.mark.parametrize(("section", "kwargs", "message"), [
    (DataConfig, {"cache": "ram"}, "data.cache must be one of"),
    (DataConfig, {"limit": -1}, "data.limit must be ≥ 0"),
    (DataConfig, {"fold": -2}, "data.fold must be ≥ -1"),
    (ModelConfig, {"target": "stage"}, "model.target must be one of"),
    (ModelConfig, {"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    (ModelConfig, {"min_class_images": 0}, "model.min_class_images must be >= 1"),
    (MetadataConfig, {"fields": "age,height"}, "unknown metadata field"),
    (MetadataConfig, {"missing": "zero"}, "metadata.missing must be one of"),
    (MetadataConfig, {"dropout": 1.0}, "metadata.dropout must be in"),
    (StagesConfig, {"mode": "fast"}, "stages.mode must be one of"),
    (StagesConfig, {"feature_views": 9}, "stages.feature_views must be 1–8"),
    (StagesConfig, {"batch_size": 0}, "stages.batch_size must be ≥ 1"),
    (StagesConfig, {"head_epochs": -1}, "stages.head_epochs must be ≥ 0"),
    (StagesConfig, {"monitor": "auc"}, "stages.monitor must be a validation metric"),
    (OptimConfig, {"optimizer": "lion"}, "optim.optimizer must be one of"),
    (OptimConfig, {"schedule": "step"}, "optim.schedule must be one of"),
    (ObjectiveConfig, {"loss": "hinge"}, "objective.loss must be one of"),
    (ObjectiveConfig, {"imbalance": "smote"}, "objective.imbalance must be one of"),
    (ObjectiveConfig, {"label_smoothing": 1.0}, "objective.label_smoothing must be in"),
    (DecisionConfig, {"target_sensitivity": 1.5}, "decision.target_sensitivity must be in"),
    (DecisionConfig, {"threshold": -0.1}, "decision.threshold must be in"),
    (DistributeConfig, {"strategy": "tpu"}, "distribute.strategy must be one of"),
    (DistributeConfig, {"precision": "float8"}, "distribute.precision must be one of"),
    (AugmentConfig, {"hue": 0.7}, "augment.hue must be ≤ 0.5"),
    (AugmentConfig, {"zoom": 1.0}, "augment.zoom must be < 1"),
    (AugmentConfig, {"crop_scale": 0.0}, "augment.crop_scale must be > 0"),
])
def test_each_section_validates_itself(section: type, kwargs: dict[str, Any],
                                       message: str) -> None:
    section().validate()  # the defaults are valid
    with pytest.raises(ValueError, match=message):
        section(**kwargs).validate()
    name = next(n for n, cls in SECTIONS.items() if cls is section)
    with pytest.raises(ValueError, match=message):  # and through the whole config
        load_config(None, {name: kwargs})


def test_rules_across_sections_are_checked_by_the_config() -> None:
    with pytest.raises(ValueError, match="balanced_sampling works with the binary image-only"):
        load_config(None, {"imbalance": "balanced_sampling", "target": "diagnosis"})
    with pytest.raises(ValueError, match="balanced_sampling"):
        load_config(None, {"objective": {"imbalance": "balanced_sampling"},
                           "metadata": {"fields": "age"}})


# === Runs: resume and reading config.yaml ==============================================

def test_resume_accepts_the_flat_config_yaml_of_an_earlier_run(tmp_path: Path) -> None:
    from skinlesion.training.trainer import open_run_dir

    run = tmp_path / "run"
    run.mkdir()
    _write(run / "config.yaml", LEGACY_FLAT_YAML.replace("out: runs/t1", f"out: {run}"))
    cfg = load_config(run / "config.yaml")
    assert open_run_dir(cfg, resume=True, overwrite=False) == run
    assert "stages" in yaml.safe_load((run / "config.yaml").read_text())  # saved nested now
    changed = load_config(run / "config.yaml", {"stages.head_epochs": 11, "seed": 5})
    with pytest.raises(ValueError, match=r"same config; differs in \['seed', 'stages.head_epochs'\]"):
        open_run_dir(changed, resume=True, overwrite=False)


def test_run_objects_show_old_and_new_config_yaml_nested() -> None:
    from skinlesion.api import _config_glance, _nested_config

    flat = yaml.safe_load(LEGACY_FLAT_YAML)
    nested = _nested_config(flat)
    assert nested == load_config(None, flat).to_dict()
    assert _nested_config(nested) == nested
    assert _nested_config({"epochs": 3}) == {"epochs": 3}  # unknown keys: shown as they are
    assert _config_glance(nested) == [
        ("stages.mode", "frozen"), ("stages.cache_features", False), ("stages.head_epochs", 10),
        ("optim.optimizer", "rmsprop"), ("objective.imbalance", "none"),
        ("objective.loss", "bce")]


def test_the_training_data_of_old_runs_is_found_in_either_layout(tmp_path: Path) -> None:
    from skinlesion.runspec import _legacy_config_data_dir

    _write(tmp_path / "config.yaml", "data_dir: /flat/data\n")
    assert _legacy_config_data_dir(tmp_path) == "/flat/data"
    _write(tmp_path / "config.yaml", "data:\n  data_dir: /nested/data\n")
    assert _legacy_config_data_dir(tmp_path) == "/nested/data"


# === The train command's options ======================================================

def test_train_options_come_from_one_table() -> None:
    import typer

    from skinlesion.cli.main import app
    from skinlesion.cli.train import CONFIG_OPTIONS

    params = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    for opt in CONFIG_OPTIONS:
        info = FIELDS[KEYS[opt.key]]
        param = params[info.flat]
        assert param.opts[0] == "--" + info.flat.replace("_", "-")
        assert param.default is None and param.help == opt.help
        assert bool(getattr(param, "secondary_opts", [])) == (info.kind is bool)
    assert {"data_dir", "out", "config", "recipe", "settings", "resume", "overwrite",
            "export_tflite", "as_json"} | {FIELDS[KEYS[o.key]].flat for o in CONFIG_OPTIONS} \
        == set(params)


def test_train_command_layers_recipe_set_and_options(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """defaults < --config < --recipe < --set < the dedicated options, in either key form."""
    from typer.testing import CliRunner

    import skinlesion.cli.train as train_cli
    from skinlesion.cli.main import app

    seen: list[TrainConfig] = []

    def capture(cfg: TrainConfig, **_: Any) -> None:
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(train_cli, "_run_training", capture)
    yml = _write(tmp_path / "c.yaml", "stages:\n  head_epochs: 7\n  patience: 3\n"
                 "model:\n  dropout: 0.1\n")
    res = CliRunner().invoke(app, [
        "train", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--config", str(yml),
        "--recipe", "frozen", "--set", "stages.patience=4", "--set", "batch_size=4",
        "--set", "model.dropout=0.2", "--batch-size", "8", "--no-jit", "--metadata", "age",
        "-b", "mobilenet_v3_small", "--set", "augment.zoom=0"])
    assert res.exit_code == 0, res.output
    (cfg,) = seen
    assert cfg.stages.head_epochs == 200 and cfg.stages.mode == "frozen"  # recipe > --config
    assert cfg.stages.patience == 4 and cfg.model.dropout == 0.2  # --set > recipe, --config
    assert cfg.stages.batch_size == 8  # the dedicated option > --set
    assert (cfg.distribute.jit, cfg.metadata.fields, cfg.model.backbone, cfg.augment.zoom) == (
        False, "age", "mobilenet_v3_small", 0.0)
    assert (cfg.data.data_dir, cfg.out) == (str(tmp_path / "data"), str(tmp_path / "run"))
    for args, message in [(["--mode", "fast"], "stages.mode must be one of"),
                          (["--set", "stages.bakcbone=x"], "stages.bakcbone")]:
        res = CliRunner().invoke(app, ["train", str(tmp_path / "data"), "--out",
                                       str(tmp_path / "r2"), *args])
        assert res.exit_code == 2 and message in res.output, res.output

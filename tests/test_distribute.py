"""tf.distribute on CPU: Mirrored over 2 logical CPUs, two MultiWorker processes, chief rules.

The three trainings (one process, Mirrored over two logical CPU devices, two
workers on 127.0.0.1 configured by TF_CONFIG) run at the same time as real
``skinlesion train`` processes and share one global batch (16) and one learning
rate (the workers' per-replica batch 8 × 2 replicas with the linear scaling rule;
the single process is given the scaled rates directly), so their histories must
agree. They agree to float rounding, not bit for bit: with two replicas each
gradient is the sum of two half-batch gradients (a different summation order),
and the difference compounds over the steps. Stated tolerance: 1e-3 on losses
and AUCs (measured: about 1e-6). Dropout is off (per-replica random masks are a
legitimate difference); augmentation is stateless and seeded per image, so it
is identical.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_training import make_dataset

TESTS = Path(__file__).resolve().parent
TIMEOUT_S = 420  # one CI hang must not cost more than this

# The CLI with the tests' tiny backbone registered (conftest), optionally over N logical CPUs.
LAUNCHER = f"""
import os, sys
sys.path.insert(0, {str(TESTS)!r})
n = int(os.environ.get("SKINLESION_TEST_LOGICAL_CPUS", "0"))
if n:
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
import conftest  # noqa: F401  (registers test_tiny_cnn)
from skinlesion.cli.main import main
sys.argv[0] = "skinlesion"
main()
"""

COMMON = ["--backbone", "test_tiny_cnn", "--weights", "none", "--input-size", "32",
          "--head-epochs", "2", "--finetune-epochs", "2", "--patience", "0", "--seed", "4"]
BASE_HEAD_LR, BASE_FT_LR = 2e-2, 2e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _train(data: Path, out: Path, *args: str, env: dict[str, str], verbose: bool = False
           ) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", LAUNCHER, *(["-v"] if verbose else []), "train", str(data),
           "--out", str(out), *COMMON, *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Start all six training processes at once, wait for them, return their outputs."""
    from skinlesion.data.tfrecords import write_tfrecords

    root = tmp_path_factory.mktemp("distribute")
    data = make_dataset(root / "data", n_train=32, n_val=16, size=36)
    shutil.copytree(data, root / "data_shards")
    write_tfrecords(root / "data_shards", 4)
    config = root / "cfg.yaml"
    config.write_text("dropout: 0.0\nfeature_views: 1\nhead_batch_size: 16\n")
    # The single process gets its own copy of the data (its own feature cache).
    shutil.copytree(data, root / "data_single")
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    tmp_workers = [root / "tmp0", root / "tmp1"]
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        procs["single"] = _train(
            root / "data_single", root / "single", "--config", str(config), "--batch-size", "16",
            "--strategy", "none", "--head-lr", str(2 * BASE_HEAD_LR),
            "--finetune-lr", str(2 * BASE_FT_LR), "--json", env=_env())
        procs["mirrored"] = _train(
            root / "data_single", root / "mirrored", "--config", str(config), "--batch-size", "8",
            "--strategy", "mirrored", "--head-lr", str(BASE_HEAD_LR),
            "--finetune-lr", str(BASE_FT_LR), env=_env(SKINLESION_TEST_LOGICAL_CPUS="2"))
        for i in (0, 1):
            tmp_workers[i].mkdir()
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            procs[f"worker{i}"] = _train(
                data, root / "multi", "--config", str(config), "--batch-size", "8",
                "--strategy", "multiworker", "--head-lr", str(BASE_HEAD_LR),
                "--finetune-lr", str(BASE_FT_LR), "--resume", "--json",
                env=_env(TF_CONFIG=tf_config, TMPDIR=str(tmp_workers[i])))
        # Two more workers on TFRecord shards: each reads only its own shards (FILE).
        cluster_file = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
        for i in (0, 1):
            tf_config = json.dumps({"cluster": cluster_file, "task": {"type": "worker", "index": i}})
            procs[f"file{i}"] = _train(
                root / "data_shards", root / "multi_file", "--config", str(config),
                "--batch-size", "8", "--strategy", "multiworker", "--tfrecords",
                "--head-lr", str(BASE_HEAD_LR), "--finetune-lr", str(BASE_FT_LR),
                env=_env(TF_CONFIG=tf_config), verbose=True)
        out: dict[str, dict] = {}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
            out[name] = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out["paths"] = {"root": root, "tmp_workers": tmp_workers}
    return out


def _history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv")


def _check_ok(result: dict) -> None:
    assert result["rc"] == 0, result["stderr"][-3000:]


@pytest.mark.slow  # the `runs` fixture trains six processes at once
def test_mirrored_over_two_logical_cpus_trains(runs: dict) -> None:
    _check_ok(runs["mirrored"])
    root = runs["paths"]["root"]
    assert "2 replica(s)" in runs["mirrored"]["stderr"]
    assert (root / "mirrored" / "model.keras").is_file()
    a, b = _history(root / "single"), _history(root / "mirrored")
    assert len(a) == len(b) == 4
    for col in ("loss", "val_loss", "val_auc"):
        np.testing.assert_allclose(b[col], a[col], atol=1e-3, err_msg=col)


@pytest.mark.slow  # the `runs` fixture trains six processes at once
def test_two_workers_train_one_model_matching_one_process(runs: dict) -> None:
    for name in ("single", "worker0", "worker1"):
        _check_ok(runs[name])
    root = runs["paths"]["root"]
    multi = root / "multi"
    # One run directory, written by the chief alone; the other worker left nothing behind.
    # (export/: the float32 TFLite artefact train writes; training_images.json: the overlap check)
    assert sorted(p.name for p in multi.iterdir()) == [
        "checkpoints", "config.yaml", "export", "history.csv", "logs", "model.keras",
        "model_spec.json", "training_images.json"]
    assert list(multi.rglob("*.keras")) == [multi / "model.keras"]
    assert not any(runs["paths"]["tmp_workers"][1].iterdir())  # its private folder is gone
    chief, other = (json.loads(runs[f"worker{i}"]["stdout"]) for i in (0, 1))
    assert chief["run_dir"] == other["run_dir"] == str(multi)
    # Both workers computed the same model; the single process with the same global batch
    # and learning rate reaches the same metrics (see the module docstring for the tolerance).
    assert chief["val_metrics"] == pytest.approx(other["val_metrics"], abs=1e-9)
    single = json.loads(runs["single"]["stdout"])
    a, b = _history(root / "single"), _history(multi)
    assert len(a) == len(b) == 4 and list(b["stage"]) == ["head"] * 2 + ["finetune"] * 2
    for col in ("loss", "val_loss", "val_auc", "val_pr_auc"):
        np.testing.assert_allclose(b[col], a[col], atol=1e-3, err_msg=col)
    assert chief["val_metrics"]["roc_auc"] == pytest.approx(single["val_metrics"]["roc_auc"],
                                                           abs=1e-3)
    assert chief["threshold"] == pytest.approx(single["threshold"], abs=1e-3)


# === Chief rules (no TensorFlow) ======================================================

def _tf_config(monkeypatch: pytest.MonkeyPatch, kind: str, index: int, chief: bool = False) -> None:
    cluster: dict[str, list[str]] = {"worker": ["h:1", "h:2"]}
    if chief:
        cluster["chief"] = ["h:0"]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": kind, "index": index}}))


def test_chief_is_worker0_or_the_named_chief(monkeypatch: pytest.MonkeyPatch) -> None:
    from skinlesion.training.distribute import is_chief, task

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()
    _tf_config(monkeypatch, "worker", 0)
    assert is_chief() and task() == ("worker", 0)
    _tf_config(monkeypatch, "worker", 1)
    assert not is_chief()
    _tf_config(monkeypatch, "worker", 0, chief=True)
    assert not is_chief()
    _tf_config(monkeypatch, "chief", 0, chief=True)
    assert is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        is_chief()


def test_worker_dir_is_private_and_seeded_from_the_chief_on_resume(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from skinlesion.training.distribute import release_worker_dir, worker_run_dir, writable_dir

    shared = tmp_path / "run"
    ck = shared / "checkpoints"
    (ck / "backup_finetune").mkdir(parents=True)
    (ck / "backup_finetune" / "training_metadata.json").write_text('{"epoch": 2}')
    (ck / "history_finetune.csv").write_text("epoch,loss\n0,1\n")
    (ck / "images-train").mkdir()
    (ck / "images-train" / "cache.data").write_text("big")
    (ck / ".history.csv.tmp").write_text("half")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert writable_dir(shared) == shared

    _tf_config(monkeypatch, "worker", 1)
    fresh = worker_run_dir(shared, resume=False)
    assert fresh != shared and fresh.parent == tmp_path / "tmp"
    assert list((fresh / "checkpoints").iterdir()) == []
    resumed = worker_run_dir(shared, resume=True)
    copied = sorted(str(p.relative_to(resumed)) for p in resumed.rglob("*") if p.is_file())
    assert copied == ["checkpoints/backup_finetune/training_metadata.json",
                      "checkpoints/history_finetune.csv"]
    assert release_worker_dir(resumed, shared) == shared and not resumed.exists()
    release_worker_dir(fresh, shared)
    assert shared.is_dir() and (ck / "history_finetune.csv").is_file()


def test_unknown_strategy_is_refused() -> None:
    from skinlesion.training.distribute import get_strategy

    with pytest.raises(ValueError, match="unknown strategy 'ring'"):
        get_strategy("ring")


@pytest.mark.slow  # the `runs` fixture trains six processes at once
def test_two_workers_on_tfrecords_each_read_their_own_shards(runs: dict) -> None:
    for i in (0, 1):
        _check_ok(runs[f"file{i}"])
        err = runs[f"file{i}"]["stderr"]
        assert "FILE sharding" in err
        assert f"input pipeline {i}/2 reads shards [{i}, {i + 2}]" in " ".join(err.split())
    run = runs["paths"]["root"] / "multi_file"
    assert list(run.rglob("*.keras")) == [run / "model.keras"]
    hist = _history(run)
    assert len(hist) == 4 and np.isfinite(hist["loss"]).all()
    # Not step-for-step equal to one process (a global batch is now the union of the
    # workers' own batches), but it learns the generated signal as well.
    assert json.loads((run / "model_spec.json").read_text())["val_metrics"]["roc_auc"] > 0.8

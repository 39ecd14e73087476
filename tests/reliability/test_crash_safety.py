"""Crash safety: a command killed with SIGKILL never leaves a half-written file under a
final name, and a rerun finishes the job without redoing finished work.

Two kinds of kill, both real ``SIGKILL``s of real ``skinlesion`` processes:

* from outside at an arbitrary moment (``prepare`` mid-resize);
* at the worst moment, deterministically: the process kills itself inside ``os.replace``
  just before a chosen file would be renamed into place — its content is fully
  written to the temporary file, and the target must still be absent (or the old one).

Training killed mid-epoch and resumed is tested in ``tests/test_training.py``
(``test_sigkill_mid_training_then_resume_matches_uninterrupted``), and so is the
refusal to train into a finished run without ``--overwrite``
(``test_train_writes_the_run_directory_contract``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from skinlesion.cli.main import app
from skinlesion.data.manifest import read_manifest, write_manifest
from skinlesion.runspec import MODEL_FILE, SPEC_FILE, ModelSpec, RunError, require_run

pytestmark = pytest.mark.integration

# Runs the CLI, SIGKILLing itself when os.replace is about to put KILL_AT_RENAME in place.
# tests/conftest.py registers the tests' tiny backbones (test_tiny_cnn) in the child too.
_KILL_AT_RENAME = r"""
import os, signal, sys
from pathlib import Path

sys.path.insert(0, os.environ["TESTS_DIR"])
import conftest

target = os.environ["KILL_AT_RENAME"]
_replace = os.replace

def replace(src, dst, *args, **kwargs):
    if Path(dst).name == target:
        Path(os.environ["KILL_MARK"]).write_text(str(src))
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)

os.replace = replace
sys.argv = ["skinlesion", *sys.argv[1:]]
from skinlesion.cli.main import main
main()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _killed_at_rename(target: str, args: list[str], tmp_path: Path,
                      timeout: float = 300) -> Path:
    """Run ``skinlesion ARGS`` until it is about to rename ``target`` into place; SIGKILL it there.

    Returns:
        The temporary file that was about to be renamed (complete, never renamed).
    """
    mark = tmp_path / f"killed-at-{target}.txt"
    env = {**_env(), "KILL_AT_RENAME": target, "KILL_MARK": str(mark),
           "TESTS_DIR": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, (
        f"expected SIGKILL at the rename of {target}, got exit {proc.returncode}: "
        f"{proc.stderr[-2000:]}")
    assert mark.is_file()
    return Path(mark.read_text())


def _isic_table(isic_dev: Path, root: Path, n: int, big: int = 0) -> Path:
    """A labels.csv of ``n`` isic-dev photos (``big`` of them full-size), linked, not copied."""
    labels = pd.read_csv(isic_dev / "labels.csv", dtype=str, keep_default_na=False)
    full = labels[labels["filename"].str.startswith("fullsize/")].head(big)
    rest = labels[~labels["filename"].str.startswith("fullsize/")].head(n - big)
    sample = pd.concat([full, rest])
    for rel in sample["filename"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(isic_dev / rel, root / rel)
    sample.to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _complete_jpegs(images: Path) -> dict[str, int]:
    """Every visible prepared image decodes fully; returns name → mtime (ns)."""
    done = {}
    for p in sorted(images.glob("[!.]*.jpg")):  # hidden names are temporary files
        with Image.open(p) as im:
            im.load()  # raises on a truncated file
        done[p.name] = p.stat().st_mtime_ns
    return done


# === prepare ===

def test_prepare_killed_mid_run_then_rerun_skips_finished_images(isic_dev: Path,
                                                                 tmp_path: Path) -> None:
    table = _isic_table(isic_dev, tmp_path / "src", n=60, big=12)
    out, ref = tmp_path / "killed", tmp_path / "ref"
    args = [str(table), "--size", "256", "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "skinlesion.cli.main", "prepare", *args,
                             "--out", str(out)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list((out / "images").glob("[!.]*.jpg"))) >= 4:
            break
        if proc.poll() is not None:
            pytest.fail("prepare finished before it could be killed")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    # What a crash leaves: no manifest, no report, only complete images under final names.
    assert not (out / "manifest.csv").exists() and not (out / "prepare_report.json").exists()
    finished = _complete_jpegs(out / "images")
    assert 4 <= len(finished) < 60

    runner = CliRunner()
    res = runner.invoke(app, ["prepare", *args, "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["counts"]["kept"] == 60
    assert report["counts"]["images_reused"] == len(finished)   # finished images not redone
    after = _complete_jpegs(out / "images")
    assert {k: after[k] for k in finished} == finished             # untouched (same mtime)
    assert len(after) == 60 and not list((out / "images").glob(".*.jpg.*"))  # temp files gone

    # The interrupted-then-rerun result is the uninterrupted one, bit for bit.
    res = runner.invoke(app, ["prepare", *args, "--out", str(ref)])
    assert res.exit_code == 0, res.output
    assert (out / "manifest.csv").read_bytes() == (ref / "manifest.csv").read_bytes()
    for name in after:
        assert (out / "images" / name).read_bytes() == (ref / "images" / name).read_bytes()


def test_prepare_killed_at_the_manifest_rename(isic_dev: Path, tmp_path: Path) -> None:
    """Killed with the new manifest fully written but not yet renamed: the old one stays whole."""
    table = _isic_table(isic_dev, tmp_path / "src", n=12)
    out = tmp_path / "data"
    res = CliRunner().invoke(app, ["prepare", str(table), "--out", str(out), "--size", "32",
                                   "--workers", "1", "--seed", "1"])
    assert res.exit_code == 0, res.output
    old = (out / "manifest.csv").read_bytes()
    old_report = (out / "prepare_report.json").read_bytes()

    tmp = _killed_at_rename("manifest.csv", ["prepare", str(table), "--out", str(out), "--size",
                                             "32", "--workers", "1", "--seed", "2"], tmp_path)
    assert (out / "manifest.csv").read_bytes() == old        # the old manifest, whole
    assert (out / "prepare_report.json").read_bytes() == old_report  # still describes it
    read_manifest(out)
    # The new one was complete in its hidden temporary file, and differs (another seed).
    assert tmp.name.startswith(".manifest.csv.") and tmp.parent == out
    assert tmp.read_bytes() != old and len(pd.read_csv(tmp)) == 12
    # A fresh folder killed at the same point has no manifest at all: never a partial one.
    fresh = tmp_path / "fresh"
    _killed_at_rename("manifest.csv", ["prepare", str(table), "--out", str(fresh), "--size",
                                       "32", "--workers", "1"], tmp_path)
    assert not (fresh / "manifest.csv").exists()
    with pytest.raises(Exception, match="no manifest here"):
        read_manifest(fresh)


def test_a_reader_never_sees_a_partial_manifest(tmp_path: Path) -> None:
    """A writer process rewrites manifest.csv (12 ↔ 3,000 rows) while this process reads it."""
    small = pd.DataFrame({"image_id": [f"s{i}" for i in range(12)],
                          "path": [f"images/s{i}.jpg" for i in range(12)],
                          "label": [i % 2 for i in range(12)], "split": "train"})
    write_manifest(small, tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", r"""
import sys, time
import pandas as pd
from skinlesion.data.manifest import write_manifest
out = sys.argv[1]
frames = [pd.DataFrame({"image_id": [f"{p}{i}" for i in range(n)],
                        "path": [f"images/{p}{i}.jpg" for i in range(n)],
                        "label": [i % 2 for i in range(n)], "split": "train"})
          for p, n in (("s", 12), ("b", 3000))]
end = time.monotonic() + 3
k = 0
while time.monotonic() < end:
    write_manifest(frames[k % 2], out)
    k += 1
print(k)
""", str(tmp_path)], env=_env(), stdout=subprocess.PIPE, text=True)
    sizes: set[int] = set()
    reads = 0
    while writer.poll() is None:
        sizes.add(len(read_manifest(tmp_path)))  # raises on a partial file
        reads += 1
    assert writer.returncode == 0
    writes = int(writer.stdout.read())  # type: ignore[union-attr]
    assert writes > 20 and reads > 20
    assert sizes <= {12, 3000} and len(sizes) == 2, sizes


# === train ===

@pytest.fixture(scope="module")
def gen_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_training import make_dataset

    return make_dataset(tmp_path_factory.mktemp("crash data"), n_train=16, n_val=12, size=32)


_TRAIN = ["--backbone", "test_tiny_cnn", "--weights", "none", "--input-size", "32",
          "--batch-size", "8", "--mode", "frozen", "--head-epochs", "2", "--patience", "0",
          "--seed", "5"]


def test_train_killed_at_the_spec_rename_is_not_a_finished_run(gen_data: Path,
                                                               tmp_path: Path) -> None:
    """model_spec.json is written last, as the 'finished' mark: killed just before its rename,
    the run is unusable rather than half-usable, and --resume completes it."""
    run = tmp_path / "run"
    tmp = _killed_at_rename(SPEC_FILE, ["train", str(gen_data), "--out", str(run), *_TRAIN],
                            tmp_path)
    assert not (run / SPEC_FILE).exists()
    assert tmp.parent == run and tmp.name.startswith(".model_spec.json.")
    with pytest.raises(RunError, match=r"model_spec\.json: missing"):
        require_run(run)
    # model.keras went in before it, whole (atomic): it loads.
    import keras

    import skinlesion.models.backbones
    import skinlesion.models.preprocessing  # noqa: F401  (registers the custom layers)

    keras.saving.load_model(run / MODEL_FILE, compile=False)
    # Refused without --resume; finished with it, without retraining the head.
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(gen_data), "--out", str(run), *_TRAIN])
    assert res.exit_code == 3 and "--resume" in " ".join(res.stderr.split())
    res = runner.invoke(app, ["train", str(gen_data), "--out", str(run), *_TRAIN, "--resume"])
    assert res.exit_code == 0, res.output
    assert "head stage already finished" in res.stderr
    spec = ModelSpec.load(run)
    assert spec.backbone == "test_tiny_cnn" and len(spec.data_fingerprint) == 64


# === evaluate ===

def test_evaluate_killed_at_the_report_rename_leaves_no_report(gen_data: Path,
                                                              tmp_path_factory: pytest.TempPathFactory,
                                                              tmp_path: Path) -> None:
    from inference_runs import responsive_run_dir

    run = responsive_run_dir(tmp_path_factory)
    out = tmp_path / "eval"
    tmp = _killed_at_rename("report.html", ["evaluate", str(run), "--data", str(gen_data),
                                            "--out", str(out), "--bootstrap", "50"], tmp_path)
    assert not (out / "report.html").exists()
    # Everything before it was renamed into place whole; the report was complete in its temp.
    json.loads((out / "metrics.json").read_text())
    assert tmp.parent == out and tmp.read_text().rstrip().endswith("</html>")
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert "report.html" not in {p.name for p in visible}

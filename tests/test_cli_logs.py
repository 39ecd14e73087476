"""Model commands keep TensorFlow's C++/absl start-up lines off the console unless -v."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_image

# TensorFlow/absl C++ log lines: "I0000 00:00:17… port.cc:153] …", "E0000 … cuInit …",
# "WARNING: All log messages before absl::InitializeLog() …".
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|cuInit|oneDNN|cuda drivers",
                   re.MULTILINE)


def _predict(run: Path, image: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "SKINLESION_TF_LOGS")}  # as a user has it
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "skinlesion.cli.main", *flags, "predict",
                           str(run), str(image), "--json"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.slow  # two CLI subprocesses, each importing TensorFlow
def test_predict_prints_no_tensorflow_noise(tiny_run: Path, tmp_path: Path) -> None:
    image = make_image(tmp_path / "a.jpg", size=(40, 40))
    quiet = _predict(tiny_run, image)
    assert quiet.returncode == 0, quiet.stderr
    assert '"probability"' in quiet.stdout
    assert not NOISE.search(quiet.stderr), quiet.stderr
    # -v shows them again: the lines exist and the test above is not vacuous.
    loud = _predict(tiny_run, image, "-v")
    assert loud.returncode == 0, loud.stderr
    assert NOISE.search(loud.stderr), loud.stderr


def test_a_failed_tensorflow_import_is_still_reported(tmp_path: Path) -> None:
    # A broken "tensorflow" on the path: the captured output and the error come through.
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'native loader said: libfoo.so missing\\n')\n"
        "raise ImportError('broken tensorflow')\n")
    code = ("from skinlesion.utils.quiet import quiet_tensorflow\nquiet_tensorflow()\n"
            "import tensorflow\n")
    env = {k: v for k, v in os.environ.items() if k != "SKINLESION_TF_LOGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1] / "src")])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert res.returncode != 0
    assert "libfoo.so missing" in res.stderr and "broken tensorflow" in res.stderr

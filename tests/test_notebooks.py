"""The stored notebooks and their runner (executing them is the CI's "notebooks" step)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/tmp/|/var/folders/|/home/|/root/|/work/|/Users/|[A-Z]:\\\\)")


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks",
                                                  REPO / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_notebooks", module)
    spec.loader.exec_module(module)
    return module


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        for key, value in out.get("data", {}).items():
            if key.startswith("text/"):
                parts.append("".join(value) if isinstance(value, list) else value)
        parts.extend(out.get("traceback", []))
    return "".join(parts)


def test_the_three_notebooks_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == ["tutorial1.ipynb", "tutorial2.ipynb",
                                           "your_own_data.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_holds_a_clean_real_execution(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    # Executed top to bottom in one kernel: counts 1, 2, 3, ... and no errors.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    for cell in code:
        assert all(o.output_type != "error" for o in cell.outputs), cell.source[:80]
        text = _outputs_text(cell)
        assert not MACHINE_PATH.search(text), f"machine path in the output of: {cell.source[:80]}"
        assert "oneDNN" not in text and "absl::InitializeLog" not in text
    # Figures are stored inline (PNG/JPEG outputs, or images embedded in rich HTML reprs).
    images = sum(1 for c in code for o in c.outputs
                 if any(k.startswith("image/") for k in o.get("data", {}))
                 or "data:image/" in o.get("data", {}).get("text/html", ""))
    assert images >= 3


def test_scrub_removes_machine_paths_and_tensorflow_noise() -> None:
    runner = _runner()
    tmp = str(Path(tempfile.gettempdir()).resolve())
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=(
            "I0000 00:00:1796084164.671909    4652 port.cc:153] oneDNN custom operations are on.\n"
            "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")),
        nbformat.v4.new_output("stream", name="stdout", text=(
            f"report: {tmp}/skinlesion-t1-abc123/runs/cached/eval/report.html\n"
            f"code: {REPO}/src/skinlesion/api.py\n")),
        nbformat.v4.new_output("execute_result", data={
            "text/plain": f"Run('{tmp}/skinlesion-own-x9/runs/a')",
            "text/html": f"<b>Run</b> {sys.prefix}/lib/python3/site-packages"}, execution_count=1),
    ]
    nb.cells.append(cell)
    dropped = runner.scrub(nb)
    assert dropped == 1  # the stderr output held only noise
    stdout, result = nb.cells[0].outputs
    assert stdout["text"] == ("report: runs/cached/eval/report.html\n"
                              "code: <repo>/src/skinlesion/api.py\n")
    assert result["data"]["text/plain"] == "Run('runs/a')"
    assert result["data"]["text/html"] == "<b>Run</b> <python>/lib/python3/site-packages"

"""``python -m bench`` end to end on its smallest bench, plus --list, --report-only and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_only_machine_end_to_end(tmp_path: Path) -> None:
    results, docs = tmp_path / "results", tmp_path / "docs" / "BENCHMARKS.md"
    proc = bench("--quick", "--only", "machine", "--out", str(results), "--docs", str(docs))
    assert proc.returncode == 0, proc.stderr
    assert "machine: ok" in proc.stderr and proc.stdout == ""  # progress on stderr only
    rec = json.loads((results / "machine.json").read_text())
    assert rec["status"] == "ok" and rec["quick"] is True and rec["name"] == "machine"
    assert rec["environment"]["machine"]["cpu_model"] and rec["environment"]["versions"]
    assert rec["wall_s"] > 0 and rec["cpu_s"] > 0 and rec["peak_rss_mb"] > 10
    matmul = rec["result"]["tables"][0]["rows"]
    assert [row["n"] for row in matmul] == [256, 1024]
    assert all(row["time"]["repeats"] == 5 and row["gflops_best"] > 0 for row in matmul)
    md = docs.read_text()
    head = rec["result"]["headline"][0]
    from_json = f"{head['value']:,.{max(0, 2 - len(str(int(head['value']))) + 1)}f}"
    assert f"| {head['metric']} | {from_json} GFLOP/s |" in md
    assert "## Machine limits (NumPy)" in md and "mode: **quick**" in md

    # Another bench's result appears on re-rendering, without measuring anything again.
    other = {**rec, "name": "inference_speed",
             "result": {"title": "Inference runtimes", "rows": [{"runtime": "tflite",
                                                                 "img_per_s": 99.5}]}}
    (results / "inference_speed.json").write_text(json.dumps(other))
    proc = bench("--report-only", "--out", str(results), "--docs", str(docs))
    assert proc.returncode == 0, proc.stderr
    md2 = docs.read_text()
    assert "## Inference runtimes" in md2 and "| tflite | 99.5 |" in md2
    assert json.loads((results / "machine.json").read_text()) == rec  # untouched


def test_list_and_bad_names() -> None:
    listed = bench("--list")
    assert listed.returncode == 0
    names = listed.stdout.split()
    assert names[:5] == ["quality", "quality_ablation", "quality_peer", "training_speed",
                         "scaling"] and "machine" in names
    bad = bench("--only", "nope")
    assert bad.returncode == 2 and "unknown bench 'nope'" in bad.stderr
    assert "available: quality" in bad.stderr

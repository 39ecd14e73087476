"""The machine's own limits, without TensorFlow: NumPy float32 matmul GFLOP/s and memory copy GB/s.

A small, fast bench (a few seconds) that puts every other figure in context: how much
float32 arithmetic and memory bandwidth these cores give a plain BLAS call, measured
while the machine is in its current (possibly shared) state. It also serves as the
harness's smoke test (``python -m bench --only machine``). TensorFlow's own matmul peak,
used for the "fraction of the machine's limit", is measured by ``training_speed`` in the
same run as the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.harness.environment import machine_info
from bench.harness.timing import time_calls


def run(quick: bool = True) -> dict[str, Any]:
    """Measure matmul GFLOP/s at a few sizes and memory-copy bandwidth.

    Returns:
        A result in the generic shape (``title``, ``tables``, ``notes``, ``headline``).
    """
    sizes = (256, 1024) if quick else (256, 1024, 2048)
    repeats = 5 if quick else 10
    rng = np.random.default_rng(0)
    matmul_rows = []
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        timing = time_calls(lambda a=a, b=b: a @ b, repeats=repeats, warmup=1)
        flops = 2.0 * n**3
        matmul_rows.append({"n": n, "time": timing, "gflops_best": flops / timing["min_s"] / 1e9,
                            "gflops_median": flops / timing["median_s"] / 1e9})
    mib = 64 if quick else 256
    src = np.ones(mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    copy = time_calls(lambda: np.copyto(dst, src), repeats=repeats, warmup=1)
    # A copy reads and writes every byte.
    copy_row = {"bytes_mib": mib, "time": copy,
                "gb_per_s_best": 2 * src.nbytes / copy["min_s"] / 1e9,
                "gb_per_s_median": 2 * src.nbytes / copy["median_s"] / 1e9}
    # The largest product is the sustained figure; a small one fits in cache and, on a shared
    # machine, in the gaps between other processes' time slices.
    best = matmul_rows[-1]
    info = machine_info()
    return {
        "title": "Machine limits (NumPy)",
        "description": (f"{info['cpu_model']}, {info['usable_cores']} usable cores. NumPy "
                        f"{np.__version__} float32 matmul (BLAS) and a memory copy, timed with "
                        f"{repeats} repetitions after one warm-up."),
        "tables": [
            {"title": "float32 matmul", "columns": ["n", "time", "gflops_median", "gflops_best"],
             "rows": matmul_rows},
            {"title": "Memory copy (read + write)",
             "columns": ["bytes_mib", "time", "gb_per_s_median", "gb_per_s_best"],
             "rows": [copy_row]},
        ],
        "notes": ["time: seconds per call, median (min–max).",
                  "GFLOP/s = 2n³ / time; GB/s = 2 × bytes / time."],
        "headline": [{"metric": "float32 matmul peak (NumPy BLAS)",
                      "value": best["gflops_best"], "unit": "GFLOP/s",
                      "note": f"n = {best['n']}, best of {repeats}"}],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))

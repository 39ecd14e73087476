"""Backbone speed: CPU forward throughput of every registered backbone at its default size.

For each backbone, in its own child process (its own peak memory; one crash does not
stop the others): build ``build_classifier(name, weights=None)`` — the trunk with the
in-graph preprocessing, pooling and the one-unit head, i.e. exactly what ``predict``
runs (random weights cost the same as ImageNet ones) — wrap its inference call in a
``tf.function``, and time forward passes on random 0–255 images at batch 32 and batch 1
(warm-up calls discarded; median/min/max of the repetitions). Build time is recorded too.

``quick`` measures a representative subset (efficientnet_lite0, efficientnet_b0,
mobilenet_v3_small, inception_v3) with fewer repetitions; the full run measures every
built-in backbone. Ratios to EfficientNetB0 come from the same run. Reference figures
measured earlier on the 2-core development machine (Keras 3.15 / TF 2.21, batch 32)
are reported beside the new ones, since a shared machine's load moves timings.

Run: ``python -m bench.backbone_speed [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench.harness.child import run_in_child
from bench.harness.environment import environment, load_average, now_iso
from bench.harness.timing import ratio, time_calls

QUICK_BACKBONES = ("efficientnet_lite0", "efficientnet_b0", "mobilenet_v3_small", "inception_v3")
BASELINE = "efficientnet_b0"
REFERENCE_IMG_S = {"efficientnet_b0": 63.0, "inception_v3": 16.0, "mobilenet_v3_small": 264.0}
"""img/s at batch 32, default size, measured earlier here (the issue's figures)."""

# mode → {batch: (warm-up calls, timed repetitions)}
SETTINGS: dict[bool, dict[int, tuple[int, int]]] = {
    True: {32: (1, 3), 1: (3, 10)},
    False: {32: (2, 5), 1: (5, 20)},
}
CHILD_TIMEOUT_S = {True: 240, False: 1800}


def measure(name: str, quick: bool = True, seed: int = 0) -> dict[str, Any]:
    """Time one backbone's forward pass (runs inside a child process)."""
    import numpy as np
    import tensorflow as tf

    from skinlesion.models.classifier import build_classifier
    from skinlesion.models.registry import get_backbone

    spec = get_backbone(name)
    t0 = time.perf_counter()
    model = build_classifier(name, weights=None)
    build_s = time.perf_counter() - t0
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    rng = np.random.default_rng(seed)
    size = spec.input_size
    out: dict[str, Any] = {
        "backbone": name, "input_size": size, "params": spec.extra.get("params"),
        "build_s": round(build_s, 3), "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "batches": {},
    }
    for batch, (warmup, repeats) in SETTINGS[quick].items():
        x = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
        timing = time_calls(lambda x=x: forward(x).numpy(), repeats=repeats, warmup=warmup,
                            items=batch)
        out["batches"][str(batch)] = timing
    return out


def run(quick: bool = True) -> dict[str, Any]:
    """Measure the backbones (see module docstring) and return a JSON-serialisable record."""
    from skinlesion.models.registry import list_backbones

    names = (list(QUICK_BACKBONES) if quick else
             [n for n in list_backbones() if not n.startswith("test_")])
    load_before = load_average()
    results: dict[str, Any] = {}
    for name in names:
        child = run_in_child("bench.backbone_speed:measure", {"name": name, "quick": quick},
                             timeout=CHILD_TIMEOUT_S[quick])
        entry = child.value if child.ok else {"backbone": name}
        entry["child"] = child.describe()
        results[name] = entry

    def img_s(name: str, batch: int) -> float | None:
        entry = results.get(name, {})
        return entry.get("batches", {}).get(str(batch), {}).get("per_s_median")

    comparisons = {
        name: {
            "img_s_batch32": img_s(name, 32),
            "img_s_batch1": img_s(name, 1),
            f"vs_{BASELINE}_batch32": ratio(img_s(name, 32), img_s(BASELINE, 32)),
            f"vs_{BASELINE}_batch1": ratio(img_s(name, 1), img_s(BASELINE, 1)),
            "reference_img_s_batch32": REFERENCE_IMG_S.get(name),
            "vs_reference_batch32": ratio(img_s(name, 32), REFERENCE_IMG_S.get(name)),
        }
        for name in names
    }
    return {
        "bench": "backbone_speed", "quick": quick, "time": now_iso(),
        "method": "build_classifier(name, weights=None) at the default input size; "
                  "tf.function forward on random 0-255 float32 images; CPU; one child "
                  "process per backbone",
        "settings": {str(b): {"warmup": w, "repeats": r} for b, (w, r) in SETTINGS[quick].items()},
        "load_average_before": load_before, "load_average_after": load_average(),
        "environment": environment(),
        "results": results, "comparisons": comparisons,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.backbone_speed [--quick]``: print the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_BACKBONES)}, fewer repetitions")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run(quick=args.quick), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

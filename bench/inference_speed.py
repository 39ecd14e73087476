"""Inference speed: Keras vs SavedModel vs TFLite (float32, int8) vs ONNX Runtime, and the service.

The default backbone (``efficientnet_lite0`` at its default 224 px; ImageNet weights when
installed, else random — the cost is the same) is saved as a run, loaded through the
``Predictor`` (the real inference path) and exported with ``skinlesion.inference.export``
(the code behind ``skinlesion export``). On the same 32 real isic-dev images, already
decoded and resized (so only the model is timed), each runtime is timed for:

* **single-image latency** — batch 1, median of the repetitions;
* **batch-32 throughput** — images per second at the median batch time.

Warm-up calls are discarded; every figure carries repetitions and median/min/max.
Ratios to Keras come from the same run. Each exported model's agreement with Keras on
those images (max |Δp|) is recorded beside its timing, and int8 is calibrated on 32 other
isic-dev images. TFLite and ONNX Runtime use as many threads as there are cores.

Then the service: ``create_app`` under uvicorn on 127.0.0.1, and 4 client threads × 25
requests (quick: 4 × 10) each POSTing a real isic-dev JPEG (decode + resize + predict, no
heatmap); per-request latency p50/p95 and requests per second; a few heatmap requests
are timed too.

Run: ``python -m bench.inference_speed [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench._harness import (
    cache_dir,
    environment,
    isic_dev_dir,
    load_average,
    now_iso,
    ratio,
    run_in_child,
    summarize_times,
    time_calls,
)

BACKBONE = "efficientnet_lite0"
# mode → (batch-1 warm-up, batch-1 repeats, batch-32 warm-up, batch-32 repeats)
SETTINGS: dict[bool, tuple[int, int, int, int]] = {True: (3, 15, 1, 3), False: (5, 50, 2, 8)}
SERVICE_LOAD: dict[bool, tuple[int, int]] = {True: (4, 10), False: (4, 25)}
"""mode → (client threads, requests per client)."""
CHILD_TIMEOUT_S = {True: 520, False: 3600}


def _images(n: int, offset: int, size: int) -> tuple[Any, list[Path]]:
    import numpy as np
    import pandas as pd

    from skinlesion.data.images import open_image
    from skinlesion.data.pipeline import to_model_input

    root = isic_dev_dir()
    files = pd.read_csv(root / "labels.csv")["filename"].tolist()[offset:offset + n]
    paths = [root / f for f in files]
    return np.stack([to_model_input(open_image(p), size) for p in paths]), paths


def _make_run(folder: Path) -> tuple[Path, str]:
    """Save the default backbone as a run (weights: ImageNet if installed, else random)."""
    from skinlesion.models.classifier import build_classifier
    from skinlesion.models.registry import get_backbone
    from skinlesion.runspec import MODEL_FILE, ModelSpec

    spec = get_backbone(BACKBONE)
    status = spec.weights_status()
    weights = "imagenet" if status in ("installed", "cached") else None
    model = build_classifier(BACKBONE, weights=weights)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model.save(folder / MODEL_FILE)
    ModelSpec(backbone=BACKBONE, input_size=spec.input_size, preprocessing=spec.preprocessing,
              last_conv_layer=spec.last_conv_layer, model_id=f"bench-{BACKBONE}").save(folder)
    return folder, "imagenet" if weights else "random"


def _time_runtime(predict: Any, one: Any, batch: Any, quick: bool) -> dict[str, Any]:
    w1, r1, w32, r32 = SETTINGS[quick]
    return {
        "batch1": time_calls(lambda: predict(one), repeats=r1, warmup=w1, items=1),
        "batch32": time_calls(lambda: predict(batch), repeats=r32, warmup=w32, items=len(batch)),
    }


def measure(quick: bool = True) -> dict[str, Any]:
    """Export and time every runtime, then load-test the service (runs in a child process)."""
    import numpy as np

    from skinlesion.inference import export as ex
    from skinlesion.inference.predictor import Predictor

    work = cache_dir() / "inference_speed"
    run_dir, weights = _make_run(work / "run")
    predictor = Predictor.from_run(run_dir)
    size = predictor.input_size
    batch, _ = _images(32, 0, size)
    calibration, _ = _images(32, 32, size)
    one = batch[:1]
    threads = os.cpu_count() or 1
    keras_ref = predictor.predict_arrays(batch)

    results: dict[str, Any] = {}
    results["keras"] = _time_runtime(lambda x: predictor.predict_arrays(x, batch_size=32),
                                     one, batch, quick)
    sm = work / "savedmodel"
    t = time.perf_counter()
    if sm.exists():
        shutil.rmtree(sm)
    ex.export_savedmodel(predictor, sm)
    export_s = {"savedmodel": time.perf_counter() - t}

    tfl32, tfl8, onnx_path = work / "model.tflite", work / "model_int8.tflite", work / "model.onnx"
    t = time.perf_counter()
    ex.export_tflite(sm, tfl32)
    export_s["tflite_float32"] = time.perf_counter() - t
    t = time.perf_counter()
    ex.export_tflite(sm, tfl8, quantize="int8", representative=calibration)
    export_s["tflite_int8"] = time.perf_counter() - t
    t = time.perf_counter()
    ex.export_onnx(sm, onnx_path, input_size=size)
    export_s["onnx"] = time.perf_counter() - t
    builders = {
        "savedmodel": lambda: ex.SavedModelRuntime(sm),
        "tflite_float32": lambda: ex.TFLiteRuntime(tfl32, num_threads=threads),
        "tflite_int8": lambda: ex.TFLiteRuntime(tfl8, num_threads=threads),
        "onnxruntime": lambda: ex.OnnxRuntime(onnx_path, num_threads=threads),
    }
    sizes = {"keras": (run_dir / "model.keras").stat().st_size,
             "savedmodel": sum(p.stat().st_size for p in sm.rglob("*") if p.is_file()),
             "tflite_float32": tfl32.stat().st_size, "tflite_int8": tfl8.stat().st_size,
             "onnxruntime": onnx_path.stat().st_size}
    agreement: dict[str, Any] = {}
    for name, build in builders.items():
        # One runtime per batch size: resizing a TFLite interpreter between calls is not
        # what a deployment does, and would be timed otherwise.
        rt1, rt32 = build(), build()
        w1, r1, w32, r32 = SETTINGS[quick]
        results[name] = {
            "batch1": time_calls(lambda rt1=rt1: rt1.predict(one), repeats=r1, warmup=w1, items=1),
            "batch32": time_calls(lambda rt32=rt32: rt32.predict(batch), repeats=r32, warmup=w32,
                                  items=len(batch)),
        }
        diff = np.abs(rt32.predict(batch) - keras_ref)
        agreement[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
        del rt1, rt32

    service = _service_load(predictor, quick)
    comparisons = {
        name: {
            "batch1_latency_ms": 1000 * results[name]["batch1"]["median_s"],
            "batch32_img_s": results[name]["batch32"]["per_s_median"],
            "latency_vs_keras": ratio(results[name]["batch1"]["median_s"],
                                      results["keras"]["batch1"]["median_s"]),
            "throughput_vs_keras": ratio(results[name]["batch32"]["per_s_median"],
                                         results["keras"]["batch32"]["per_s_median"]),
            "size_mb": sizes[name] / 2**20,
        }
        for name in results
    }
    return {"backbone": BACKBONE, "input_size": size, "weights": weights, "threads": threads,
            "images": "32 isic-dev images (decoded and resized beforehand)",
            "export_s": export_s, "results": results, "agreement_with_keras": agreement,
            "comparisons": comparisons, "service": service}


def _service_load(predictor: Any, quick: bool) -> dict[str, Any]:
    import httpx
    import uvicorn

    from skinlesion.service.app import create_app

    clients, per_client = SERVICE_LOAD[quick]
    _, paths = _images(clients, 64, predictor.input_size)
    payloads = [p.read_bytes() for p in paths]
    server = uvicorn.Server(uvicorn.Config(create_app(predictor), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/predict"
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(timeout=120) as http:
            for _ in range(per_client):
                t = time.perf_counter()
                r = http.post(url, files={"image": (paths[i].name, payloads[i], "image/jpeg")})
                took = time.perf_counter() - t
                with lock:
                    (latencies.append(took) if r.status_code == 200
                     else errors.append(f"{r.status_code}: {r.text[:200]}"))

    try:
        with httpx.Client(timeout=120) as http:  # warm-up, then a few heatmap requests
            http.post(url, files={"image": ("w.jpg", payloads[0], "image/jpeg")})
            heat = []
            for _ in range(3):
                t = time.perf_counter()
                http.post(url, params={"heatmap": "true"},
                          files={"image": ("h.jpg", payloads[0], "image/jpeg")})
                heat.append(time.perf_counter() - t)
        start = time.perf_counter()
        workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    import numpy as np

    lat = np.asarray(latencies) * 1000
    return {
        "clients": clients, "requests_per_client": per_client, "ok": len(latencies),
        "errors": errors[:5], "n_errors": len(errors), "wall_s": wall,
        "requests_per_s": len(latencies) / wall if wall > 0 else None,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                       "min": float(lat.min()), "max": float(lat.max())} if len(lat) else None,
        "heatmap_request": summarize_times(heat),
        "payload_bytes": [len(p) for p in payloads],
    }


def run(quick: bool = True) -> dict[str, Any]:
    """Measure (see module docstring) and return a JSON-serialisable record.

    The record follows the report's documented shape (``title``, ``description``,
    ``headline``, ``tables``, ``notes``); the raw measurements are kept beside them.
    """
    load_before = load_average()
    child = run_in_child("bench.inference_speed:measure", {"quick": quick},
                         timeout=CHILD_TIMEOUT_S[quick])
    w1, r1, w32, r32 = SETTINGS[quick]
    clients, per_client = SERVICE_LOAD[quick]
    record: dict[str, Any] = {
        "bench": "inference_speed", "quick": quick, "time": now_iso(),
        "title": "Inference: Keras vs SavedModel vs TFLite vs ONNX Runtime, and the service",
        "description": (
            f"{BACKBONE} at its default input size, saved as a run and loaded by the Predictor; "
            "exports made by skinlesion.inference.export (the code behind `skinlesion export`). "
            "Latency: batch 1; throughput: batch 32; both on 32 real isic-dev images decoded "
            "and resized beforehand (only the model is timed), CPU, TFLite/ONNX Runtime with "
            "one thread per core. Service: `create_app` under uvicorn on 127.0.0.1, "
            f"{clients} concurrent clients × {per_client} POSTs of a real JPEG (decode, resize, "
            "predict; no heatmap)."),
        "settings": {"batch1": {"warmup": w1, "repeats": r1},
                     "batch32": {"warmup": w32, "repeats": r32},
                     "service": {"clients": clients, "requests_per_client": per_client}},
        "load_average_before": load_before, "load_average_after": load_average(),
        "environment": environment(),
        "child": child.describe(),
    }
    if not child.ok:
        record["error"] = child.error
        return record
    value = child.value
    record.update(value)
    record["tables"] = _tables(value)
    record["headline"] = _headline(value)
    record["notes"] = [
        f"Weights: {value['weights']} (speed does not depend on them; agreement with Keras "
        "on random weights says little about a trained model — see docs/DEPLOYMENT.md for "
        "parity measured on a trained run).",
        "Ratios to Keras come from the same run; the machine is shared, so compare ratios "
        "rather than absolute figures across runs (load average recorded).",
        "int8 TFLite keeps float32 input/output; ops without an int8 kernel run in float.",
    ]
    return record


_LABELS = {"keras": "Keras (Predictor, tf.function)", "savedmodel": "SavedModel (TF)",
           "tflite_float32": "TFLite float32 (ai-edge-litert)",
           "tflite_int8": "TFLite int8 (ai-edge-litert)", "onnxruntime": "ONNX Runtime (CPU)"}


def _tables(value: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, cmp in value["comparisons"].items():
        agree = value["agreement_with_keras"].get(name, {})
        rows.append({
            "runtime": _LABELS.get(name, name),
            "batch1_latency": value["results"][name]["batch1"],
            "batch1_latency_ms": cmp["batch1_latency_ms"],
            "batch32_img_per_s": cmp["batch32_img_s"],
            "latency_vs_keras": cmp["latency_vs_keras"],
            "throughput_vs_keras": cmp["throughput_vs_keras"],
            "size_mb": cmp["size_mb"],
            "max_abs_diff_vs_keras": agree.get("max_abs_diff"),
        })
    service = value["service"]
    lat = service.get("latency_ms") or {}
    return [
        {"title": "By runtime", "rows": rows,
         "notes": ["batch1_latency: seconds per call, median (min–max) of the repetitions."]},
        {"title": "Service under concurrent load (127.0.0.1)", "rows": [{
            "clients": service["clients"], "requests": service["ok"] + service["n_errors"],
            "errors": service["n_errors"], "p50_ms": lat.get("p50"), "p95_ms": lat.get("p95"),
            "max_ms": lat.get("max"), "requests_per_s": service["requests_per_s"],
            "heatmap_request": service["heatmap_request"]}]},
        {"title": "Export time", "rows": [{"export": k, "time_s": v}
                                          for k, v in value["export_s"].items()]},
    ]


def _headline(value: dict[str, Any]) -> list[dict[str, Any]]:
    cmp = value["comparisons"]
    fastest = min(cmp, key=lambda k: cmp[k]["batch1_latency_ms"])
    service = value["service"].get("latency_ms") or {}
    return [
        {"metric": f"Single-image latency, Keras ({BACKBONE})",
         "value": cmp["keras"]["batch1_latency_ms"], "unit": "ms", "note": "median"},
        {"metric": f"Single-image latency, fastest runtime ({_LABELS.get(fastest, fastest)})",
         "value": cmp[fastest]["batch1_latency_ms"], "unit": "ms", "note": "median"},
        {"metric": "Batch-32 throughput, Keras", "value": cmp["keras"]["batch32_img_s"],
         "unit": "img/s", "note": "median batch time"},
        {"metric": "Service latency p50 / p95 under load", "value":
         f"{service.get('p50', float('nan')):.0f} / {service.get('p95', float('nan')):.0f}",
         "unit": "ms", "note": f"{value['service']['clients']} concurrent clients"},
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.inference_speed [--quick]``: print the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and requests")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run(quick=args.quick), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Input throughput: the training split read from TFRecord shards vs from JPEG files,
and the one decoder vs TensorFlow's own JPEG decoder.

Same images (isic-dev prepared as ``skinlesion prepare`` does, 512 px shorter side),
same resize to the model input (``SIZE`` px, rounded to uint8), same ``tf.data``
parallelism (AUTOTUNE), no cache, batches of 64 drained as fast as possible:

* ``jpeg``: :func:`skinlesion.data.pipeline.image_dataset` over the file paths
  (what training does by default): the one decoder (Pillow, in ``tf.numpy_function``);
* ``tfrecord``: :func:`skinlesion.data.tfrecords.tfrecord_dataset` over 8 shards
  written by :func:`~skinlesion.data.tfrecords.write_tfrecords` (what
  ``train --tfrecords`` does), read with a parallel deterministic interleave, the
  same decoder on the stored bytes;
* ``tf_decode``: a reference, not used by the project — the input pipeline before the
  one decoder (issue #14): ``tf.io.decode_image`` (TensorFlow's JPEG decoder, its fast
  integer DCT, no EXIF orientation) in the graph, then the same resize. It gave
  inputs that differ from ``predict``'s by about one grey level on average.

The modes alternate within each repetition after one untimed warm-up pass each (so
all read from a warm page cache: this measures the pipeline, not the disk); the ratios
are images per second of one mode over another within a repetition (median, min, max).
``images_per_cpu_s`` divides by the process's CPU time instead of the wall time: on a
shared machine it varies far less than images/s. On local disk most of the time is
JPEG decoding, which the file and shard modes share, so expect a tfrecord/jpeg ratio
near 1; the shards' advantage is on network storage (GCS, NFS), where per-file latency
dominates — not measured here.

Run ``python -m bench.tfrecord_speed`` (``--full`` for the whole split and more
repetitions).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SIZE = 224
SHARDS = 8
BATCH = 64


def _data(quick: bool) -> tuple[Path, list[str], list[int], list[str], dict[str, Any]]:
    """A data folder over the bench's prepared isic-dev (train split), with its shards."""
    from bench.harness.environment import cache_dir, prepared_isic_dev
    from skinlesion.data.manifest import read_manifest, resolve_paths, write_manifest
    from skinlesion.data.tfrecords import shard_files, write_tfrecords

    prepared = prepared_isic_dev()
    source = Path(prepared["data_dir"])
    df = read_manifest(source)
    train = df[df["split"] == "train"].reset_index(drop=True)
    if quick:
        train = train.iloc[:600]
    root = cache_dir() / "tfrecord_speed" / ("quick" if quick else "full")
    root.mkdir(parents=True, exist_ok=True)
    link = root / "images"
    if not link.exists():
        link.symlink_to((source / "images").resolve(), target_is_directory=True)
    write_manifest(train, root)
    t = time.perf_counter()
    index = write_tfrecords(root, SHARDS, splits=("train",))
    info = {"write_shards_s": round(time.perf_counter() - t, 3),
            "shard_images": [s["images"] for s in index["splits"]["train"]["shards"]],
            "prepared_now": prepared["prepared_now"]}
    paths = resolve_paths(train, root)
    return root, paths, train["label"].tolist(), shard_files(root, "train"), info


def _drain(ds: Any) -> int:
    n = 0
    for x, *_ in ds.batch(BATCH):
        n += int(x.shape[0])
    return n


def tf_decode_dataset(paths: list[str], size: int) -> Any:
    """The reference ``tf_decode`` mode: TensorFlow's decoder, then the model-input resize."""
    import tensorflow as tf

    from skinlesion.data.pipeline import resize_to_uint8

    def decode(path: Any) -> Any:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return (resize_to_uint8(image, size),)

    return tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def run(quick: bool = True) -> dict[str, Any]:
    """Measure the input pipelines; returns JSON-serialisable results."""
    from bench.harness.environment import machine_info
    from bench.harness.timing import summarize_times
    from skinlesion.data.pipeline import image_dataset
    from skinlesion.data.tfrecords import tfrecord_dataset

    repeats = 3 if quick else 5
    _root, paths, labels, files, info = _data(quick)
    n = len(paths)
    jpeg_bytes = sum(os.path.getsize(p) for p in paths)
    shard_bytes = sum(os.path.getsize(f) for f in files)

    def jpeg() -> int:
        return _drain(image_dataset(paths, labels, SIZE, cache=None))

    def shards() -> int:
        return _drain(tfrecord_dataset(files, SIZE, cache=None))

    def tf_decode() -> int:
        return _drain(tf_decode_dataset(paths, SIZE))

    modes = {"jpeg": jpeg, "tfrecord": shards, "tf_decode": tf_decode}
    counts = {name: fn() for name, fn in modes.items()}  # warm-up; each reads every image
    if any(c != n for c in counts.values()):
        raise RuntimeError(f"pipelines read {counts} images, expected {n}")
    times: dict[str, list[float]] = {name: [] for name in modes}
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeats):
        for name, fn in modes.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)

    def ratio(a: str, b: str) -> dict[str, Any]:
        """Images/s of mode ``a`` over mode ``b``, per repetition."""
        values = [tb / ta for ta, tb in zip(times[a], times[b], strict=True)]
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "values": values}

    return {
        "what": "images/s through decode + resize to the model input, from 8 TFRecord shards "
                "vs from the JPEG files, and the one decoder vs TensorFlow's JPEG decoder "
                "(same images, warm page cache, no cache, batch 64)",
        "images": n, "size": SIZE, "shards": len(files),
        "jpeg_mb": round(jpeg_bytes / 2**20, 2), "shards_mb": round(shard_bytes / 2**20, 2),
        **{name: summarize_times(times[name], items=n, warmup=1) for name in modes},
        "ratio_tfrecord_over_jpeg": ratio("tfrecord", "jpeg"),
        "ratio_jpeg_over_tf_decode": ratio("jpeg", "tf_decode"),
        # Images per CPU-second of this process (all its threads): what the machine's
        # other load hardly changes, and what the images/s of a busy pipeline scale with.
        "images_per_cpu_s": {name: statistics.median(n / c for c in cpu[name] if c > 0)
                             for name in modes},
        "setup": info, "quick": quick, "machine": machine_info(),
        "data_dir": f"<bench cache>/tfrecord_speed/{'quick' if quick else 'full'}",
    }


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(run(quick="--full" not in sys.argv[1:]), indent=2, default=str))

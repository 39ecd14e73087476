"""TFRecord shards: the prepared images packed for streaming at scale.

``skinlesion prepare ... --tfrecords N`` writes, for each split, N shards::

    DATA_DIR/tfrecords/train-00000-of-00008.tfrec
    DATA_DIR/tfrecords/...
    DATA_DIR/tfrecords/tfrecords.json      the index: files, counts, malignant counts

Each record is a ``tf.train.Example`` holding the prepared JPEG's bytes as they
are on disk (no second lossy encode), ``label`` (0/1), ``image_id`` and
``index`` (the row's position in the split, manifest order).

Why shards: half a million small files are slow on network storage (GCS, NFS)
and at the mercy of per-file latency; a few hundred large files stream at the
storage's full bandwidth and are read in parallel with ``interleave``.

How rows are dealt to shards (the ISIC 2020 winners' "triple-stratified" idea):
a patient's images stay in one shard (grouped by the manifest's patient/lesion
groups, as the splits are), every shard gets the same malignant share, and the
same number of images. A greedy deal — groups with the most malignant images
first, each to the shard furthest below its malignant target, benign-only groups
to the shard furthest below its size target — keeps every shard within one
malignant image of its target whenever no group holds more than one malignant
image (otherwise within the largest group's count), and never splits a group.

Shards and the index are written atomically (temporary file, then rename); the
index is written last and names the manifest's SHA-256, so training refuses
shards that no longer match the manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.data.manifest import manifest_fingerprint, read_manifest, resolve_paths
from skinlesion.data.pipeline import decode_resize_bytes
from skinlesion.data.splits import SPLIT_NAMES, group_ids
from skinlesion.utils.atomic import atomic_path, atomic_write_json
from skinlesion.utils.progress import Progress, Tally

log = logging.getLogger(__name__)

TFRECORDS_DIR = "tfrecords"
INDEX_NAME = "tfrecords.json"
INDEX_VERSION = 1
SUFFIX = ".tfrec"



class TFRecordError(ValueError):
    """Missing, stale or malformed TFRecord shards; the message names the file and the fix."""


@dataclass(frozen=True)
class Shard:
    """One shard to write: its file name and the manifest rows it holds (in write order)."""

    split: str
    number: int
    total: int
    rows: pd.DataFrame

    @property
    def name(self) -> str:
        return shard_name(self.split, self.number, self.total)


def shard_name(split: str, number: int, total: int) -> str:
    """``train-00003-of-00008.tfrec``."""
    return f"{split}-{number:05d}-of-{total:05d}{SUFFIX}"


# === Dealing rows to shards ===========================================================

def assign_shards(df: pd.DataFrame, n_shards: int, seed: int = 1) -> np.ndarray:
    """Shard number per row: patient-grouped, same malignant share and size per shard.

    Args:
        df: Rows of one split with ``label`` and optionally ``patient_id``/``lesion_id``.
        n_shards: Number of shards (≥ 1).
        seed: Breaks ties between equal groups reproducibly.

    Returns:
        ``(len(df),)`` int array of shard numbers in ``0 … n_shards-1``.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be ≥ 1, got {n_shards}")
    n = len(df)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    groups = group_ids(df)
    labels = df["label"].to_numpy(dtype=np.int64)
    n_groups = int(groups.max()) + 1
    size = np.bincount(groups, minlength=n_groups)
    pos = np.bincount(groups, weights=labels, minlength=n_groups).astype(np.int64)
    # Most malignant images first, then largest; a seeded shuffle orders equal groups.
    tie = np.random.default_rng(seed).permutation(n_groups)
    order = np.lexsort((tie, -size, -pos))
    target_pos = pos.sum() / n_shards
    target_size = n / n_shards
    got_pos = np.zeros(n_shards)
    got_size = np.zeros(n_shards)
    shard_of_group = np.empty(n_groups, dtype=np.int64)
    for g in order:
        if pos[g] > 0:
            # Furthest below the malignant target; ties → furthest below the size target.
            key = np.lexsort((got_size - target_size, got_pos - target_pos))
        else:
            key = np.lexsort((got_pos - target_pos, got_size - target_size))
        s = int(key[0])
        shard_of_group[g] = s
        got_pos[s] += pos[g]
        got_size[s] += size[g]
    return shard_of_group[groups]


def plan_shards(manifest: pd.DataFrame, n_shards: int, seed: int = 1,
                splits: Sequence[str] = SPLIT_NAMES) -> list[Shard]:
    """The shards of every split: at most ``n_shards`` each (never more than its groups).

    Rows keep their position in the split (``index``, manifest order) and are shuffled
    within their shard (seeded), so reading shards in parallel mixes patients and labels.
    """
    shards: list[Shard] = []
    rng = np.random.default_rng(seed)
    for split in splits:
        part = manifest[manifest["split"] == split].reset_index(drop=True)
        if part.empty:
            continue
        part = part.assign(index=np.arange(len(part), dtype=np.int64))
        total = int(min(n_shards, int(group_ids(part).max()) + 1))
        which = assign_shards(part, total, seed)
        for number in range(total):
            rows = part[which == number]
            rows = rows.iloc[rng.permutation(len(rows))]
            shards.append(Shard(split, number, total, rows))
    return shards


# === Writing =====================================================================

def write_tfrecords(
    data_dir: str | os.PathLike[str], n_shards: int, *, seed: int = 1,
    splits: Sequence[str] = SPLIT_NAMES, workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the prepared images of ``data_dir`` as TFRecord shards and their index.

    Args:
        data_dir: A prepared data folder (``manifest.csv`` + images).
        n_shards: Shards per split (fewer for a split with fewer patient groups).
        seed: Seed of the deal and of the order inside each shard.
        splits: Splits to write.
        workers: Threads writing shards in parallel (default: min(shards, CPUs)).
        progress: Gets the shard count (task ``"shards"``) after each shard.

    Returns:
        The index written to ``DATA_DIR/tfrecords/tfrecords.json``.

    Raises:
        ManifestError: if the manifest is missing or invalid.
        ValueError: if ``n_shards`` < 1.
    """
    import tensorflow as tf

    if n_shards < 1:
        raise ValueError(f"--tfrecords needs at least 1 shard, got {n_shards}")
    root = Path(data_dir)
    manifest = read_manifest(root)
    manifest = manifest.assign(abs_path=resolve_paths(manifest, root))
    out = root / TFRECORDS_DIR
    out.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(manifest, n_shards, seed, splits)

    def write(shard: Shard) -> dict[str, Any]:
        skipped: list[dict[str, str]] = []
        written = malignant = 0
        with atomic_path(out / shard.name) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            for row in shard.rows.itertuples(index=False):
                try:
                    data = Path(row.abs_path).read_bytes()
                except OSError as exc:  # one unreadable file never stops the shard
                    skipped.append({"image_id": str(row.image_id), "path": str(row.path),
                                    "reason": exc.strerror or str(exc)})
                    continue
                writer.write(_example(data, int(row.label), str(row.image_id), int(row.index)))
                written += 1
                malignant += int(row.label)
        groups = len(set(group_ids(shard.rows))) if len(shard.rows) else 0
        return {"file": shard.name, "split": shard.split, "images": written,
                "malignant": malignant, "groups": groups, "skipped": skipped}

    done: list[dict[str, Any]] = []
    threads = workers or min(len(shards), os.cpu_count() or 1) or 1
    tally = Tally(progress, "shards", len(shards), unit="shards")
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for info in pool.map(write, shards):
            done.append(info)
            tally.add(1)
    tally.close()
    index = _index(done, manifest_fingerprint(root), seed, n_shards)
    atomic_write_json(out / INDEX_NAME, index)
    keep = {info["file"] for info in done} | {INDEX_NAME}
    for stale in out.glob(f"*{SUFFIX}"):  # shards of an earlier run with another N
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    log.info("wrote %d shards to %s", len(done), out)
    return index


def _example(jpeg: bytes, label: int, image_id: str, index: int) -> bytes:
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode()])),
        "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _index(shards: list[dict[str, Any]], manifest_sha: str, seed: int, requested: int
           ) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for info in shards:
        entry = splits.setdefault(info["split"], {"images": 0, "malignant": 0, "shards": []})
        entry["images"] += info["images"]
        entry["malignant"] += info["malignant"]
        entry["shards"].append({k: info[k] for k in ("file", "images", "malignant", "groups")})
    for entry in splits.values():
        entry["malignant_fraction"] = round(entry["malignant"] / entry["images"], 4) \
            if entry["images"] else None
    return {
        "version": INDEX_VERSION, "manifest_sha256": manifest_sha, "seed": seed,
        "shards_requested": requested,
        "features": {"image": "bytes (JPEG, as prepared)", "label": "int64 0/1",
                     "image_id": "bytes", "index": "int64 position in the split"},
        "splits": splits,
        "skipped": [s for info in shards for s in info["skipped"]],
    }


# === Reading =====================================================================

def read_index(data_dir: str | os.PathLike[str], *, check_manifest: bool = True) -> dict[str, Any]:
    """Read ``DATA_DIR/tfrecords/tfrecords.json``.

    Raises:
        TFRecordError: if it is missing, unreadable, or (``check_manifest``) was written
            for another version of the manifest.
    """

    root = Path(data_dir)
    path = root / TFRECORDS_DIR / INDEX_NAME
    if not path.is_file():
        raise TFRecordError(f"{path}: no TFRecord shards here; run `skinlesion prepare SOURCE "
                            f"--out {root} --tfrecords N` first")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TFRecordError(f"{path}: not a readable index ({exc})") from exc
    if check_manifest and index.get("manifest_sha256") != manifest_fingerprint(root):
        raise TFRecordError(f"{path}: the shards were written for another version of "
                            f"{root / 'manifest.csv'}; run `skinlesion prepare ... --tfrecords N` "
                            "again")
    return index


def shard_files(data_dir: str | os.PathLike[str], split: str, *, check_manifest: bool = True
                ) -> list[str]:
    """Paths of the shards of ``split``, in shard order.

    Raises:
        TFRecordError: if the index is missing or stale, the split has no shards, or a
            listed shard file is missing.
    """
    root = Path(data_dir)
    index = read_index(root, check_manifest=check_manifest)
    entry = index.get("splits", {}).get(split)
    if not entry or not entry.get("shards"):
        raise TFRecordError(f"{root / TFRECORDS_DIR / INDEX_NAME}: no shards for split {split!r}")
    files = [root / TFRECORDS_DIR / s["file"] for s in entry["shards"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TFRecordError(f"{missing[0]}: listed in {INDEX_NAME} but missing "
                            f"({len(missing)} missing shard(s)); write the shards again")
    return [str(f) for f in files]


_FEATURES: dict[str, Any] | None = None


def _features() -> dict[str, Any]:
    global _FEATURES
    if _FEATURES is None:
        import tensorflow as tf

        _FEATURES = {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "image_id": tf.io.FixedLenFeature([], tf.string),
            "index": tf.io.FixedLenFeature([], tf.int64),
        }
    return _FEATURES


def parse_record(record: Any) -> dict[str, Any]:
    """Parse one serialised record into ``image`` (bytes), ``label``, ``image_id``, ``index``."""
    import tensorflow as tf

    return tf.io.parse_single_example(record, _features())


def tfrecord_dataset(
    files: Sequence[str], size: int, *, image_ids: Sequence[str] | None = None,
    cache: str | None = "memory", cycle_length: int = 8,
) -> Any:
    """Images from TFRecord shards as ``image_dataset`` yields them: ``(uint8 (S,S,3), label, index)``.

    Shards are read with a parallel, deterministic ``interleave`` (the order depends
    only on the files, never on thread timing), decoded and resized exactly as
    :func:`skinlesion.data.pipeline.decode_resize` does (the one decoder, on the stored
    bytes), so ``training_stream`` and everything downstream work unchanged and an image
    gives the same array from its shard as from its file.

    Args:
        files: Shard paths (see :func:`shard_files`).
        size: Square model input size.
        image_ids: The split's rows in manifest order (e.g. after ``--limit``): only
            these images are kept and ``index`` is each one's position in this list.
            None keeps every record with its stored index.
        cache: ``"memory"``, a file prefix for an on-disk cache, or None/"none" to stream
            (datasets larger than memory).
        cycle_length: Shards read at once.

    Returns:
        A ``tf.data.Dataset`` in shard-interleaved order.
    """
    import tensorflow as tf


    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(files), tf.string))
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
        cycle_length=max(1, min(cycle_length, len(files))), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(parse_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if image_ids is not None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(image_ids), tf.string),
                tf.range(len(image_ids), dtype=tf.int64)), default_value=-1)
        ds = ds.map(lambda r: {**r, "index": table.lookup(r["image_id"])}
                    ).filter(lambda r: r["index"] >= 0)

    def decode(r: dict[str, Any]) -> tuple[Any, Any, Any]:
        image = decode_resize_bytes(r["image"], r["image_id"], size)
        return image, tf.cast(r["label"], tf.float32), r["index"]

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache == "memory":
        ds = ds.cache()
    elif cache and cache != "none":
        ds = ds.cache(cache)
    return ds


def split_dataset(data_dir: str | os.PathLike[str], split: str, image_ids: Sequence[str],
                  size: int, *, cache: str | None = "memory") -> Any:
    """``tfrecord_dataset`` over the shards of ``split`` in ``data_dir``, for the rows ``image_ids``.

    Raises:
        TFRecordError: if the shards are missing or stale, or an image asked for was
            skipped when the shards were written (its file was unreadable then).
    """
    index = read_index(data_dir)
    skipped = {s["image_id"] for s in index.get("skipped", [])} & set(image_ids)
    if skipped:
        raise TFRecordError(f"{Path(data_dir) / TFRECORDS_DIR / INDEX_NAME}: {len(skipped)} "
                            f"image(s) of the {split} split are not in the shards (e.g. "
                            f"{sorted(skipped)[0]}); fix them and write the shards again")
    return tfrecord_dataset(shard_files(data_dir, split), size, image_ids=image_ids, cache=cache)

"""Turning images into model input: the one decode and the one resize used everywhere.

Every path into a model — the training pipeline (and its cached-feature pass, and
TFRecord shards), evaluation, ``predict``, the service, export checks — turns a file
into the model's input the same way, so the same file gives the same array, to the grey
level, whichever path reads it:

1. **decode** with :func:`decode_for_model` — Pillow through
   :func:`skinlesion.data.images.open_image` with ``reduce_for=size``: type sniffed from
   the bytes, decompression bombs refused from the header, EXIF orientation applied,
   CMYK/16-bit/palette/alpha converted to RGB, large images decoded reduced;
2. **resize** the *whole* image to the square model input with
   ``tf.image.resize(..., antialias=True)`` (bilinear; aspect ratio not kept, the whole
   lesion stays in view, as tutorial 1 resized), on the CPU;
3. **round** to uint8 (what the training cache stores) and feed as float32 0–255.

The tf.data pipelines run step 1 in ``tf.numpy_function`` (parallel map calls: Pillow
releases the GIL while it decodes) and steps 2–3 as graph ops; inference runs the same
three steps eagerly (:func:`load_model_input`, :func:`to_model_input`).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from skinlesion.data.augment import augment_image
from skinlesion.data.images import MAX_PIXELS, open_image

if TYPE_CHECKING:
    from PIL import Image

DECODER_ID = "pillow-reduced+tf-antialias-bilinear-uint8"
"""Names the decode and resize below. Caches of model inputs or of features computed from
them (the frozen tier's feature cache) include it in their key: change it whenever the
steps change, so no cache made by another decoder is ever reused."""


def decode_for_model(source: str | os.PathLike[str] | bytes, size: int, *,
                     name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The one decode: a file or raw bytes as the RGB image the model input is made from.

    ``open_image(..., reduce_for=size)``: JPEGs at a DCT scale and other formats
    box-reduced so the shorter side stays at least ``max(2·size, 512)`` px, then EXIF
    orientation and the RGB conversions of :mod:`skinlesion.data.images`.

    Raises:
        ImageError: naming the file, if it is not a usable image (see ``open_image``).
    """
    return open_image(source, name=name, max_pixels=max_pixels, reduce_for=size)


def resize_for_model(image: Any, size: int) -> Any:
    """Resize an RGB tensor (H, W, 3) or batch (N, H, W, 3) to ``size``×``size`` float32 0–255."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    out = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.clip_by_value(out, 0.0, 255.0)


def resize_to_uint8(image: Any, size: int) -> Any:
    """The one resize, rounded to uint8 (half to even): what every model input is made of."""
    import tensorflow as tf

    return tf.cast(tf.round(resize_for_model(image, size)), tf.uint8)


def to_model_input(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """A decoded RGB image (PIL, or uint8 (H, W, 3)) as the model's input: float32
    ``(size, size, 3)``, whole grey levels 0–255 — what the training pipeline yields for it."""
    import tensorflow as tf

    arr = np.asarray(image if isinstance(image, np.ndarray) else image.convert("RGB"), np.uint8)
    with tf.device("/CPU:0"):  # the same kernel as the tf.data pipeline, whatever the machine
        out = resize_to_uint8(arr, size)
    return np.asarray(out, dtype=np.float32)


def load_model_input(source: str | os.PathLike[str] | bytes, size: int, *,
                     name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`decode_for_model` then :func:`to_model_input`: a file or bytes as model input.

    Raises:
        ImageError: naming the file, if it is not a usable image.
    """
    return to_model_input(decode_for_model(source, size, name=name, max_pixels=max_pixels), size)


# === tf.data pipelines =========================================================

def _bytes(value: bytes | np.ndarray) -> bytes:
    """A scalar string from ``tf.numpy_function``: ``bytes`` inside a dataset, a 0-d object
    array when called eagerly. (Never ``np.asarray(value).item()``: a NumPy bytes scalar
    drops trailing NUL bytes, and image files may end with them.)"""
    return value if isinstance(value, bytes) else value.item()


def _decoded_file(path: bytes | np.ndarray, *, size: int) -> np.ndarray:
    return np.asarray(decode_for_model(os.fsdecode(_bytes(path)), size), dtype=np.uint8)


def _decoded_bytes(data: bytes | np.ndarray, name: bytes | np.ndarray, *, size: int
                   ) -> np.ndarray:
    label = _bytes(name).decode("utf-8", "replace")
    return np.asarray(decode_for_model(_bytes(data), size, name=label), dtype=np.uint8)


def _decode_then_resize(decode: Any, inputs: list[Any], size: int) -> Any:
    import tensorflow as tf

    # A partial, not a lambda: AutoGraph leaves it alone (no conversion on every call).
    image = tf.numpy_function(functools.partial(decode, size=size), inputs, tf.uint8,
                              stateful=False, name="decode_for_model")
    image.set_shape([None, None, 3])
    return resize_to_uint8(image, size)


def decode_resize(path: Any, size: int) -> Any:
    """In a tf.data map: read and decode an image file (:func:`decode_for_model`) and
    resize it (:func:`resize_to_uint8`); uint8 ``(size, size, 3)`` (cache-friendly).

    A file that cannot be decoded fails the iteration with ``InvalidArgumentError``
    whose message is the :class:`~skinlesion.data.images.ImageError` naming the file.
    """
    return _decode_then_resize(_decoded_file, [path], size)


def decode_resize_bytes(data: Any, name: Any, size: int) -> Any:
    """:func:`decode_resize` for an image's bytes held in a tensor (a TFRecord field);
    ``name`` labels the image in errors."""
    return _decode_then_resize(_decoded_bytes, [data, name], size)


def image_dataset(
    paths: list[str], labels: list[int] | np.ndarray, size: int, cache: str | None = "memory",
) -> Any:
    """Decoded, resized images with labels and indices, read in parallel and cached.

    Each image is exactly what :func:`load_model_input` gives for its file (as uint8).

    Args:
        paths: Absolute image paths.
        labels: 0/1 labels, one per path.
        size: Square model input size.
        cache: ``"memory"``, a file prefix for an on-disk cache, or None/"none".

    Returns:
        A ``tf.data.Dataset`` of ``(image uint8 (S, S, 3), label float32, index int64)``.
    """
    import tensorflow as tf

    n = len(paths)
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(paths, tf.string), tf.constant(np.asarray(labels, np.float32)),
        tf.range(n, dtype=tf.int64),
    ))
    ds = ds.map(lambda p, y, i: (decode_resize(p, size), y, i),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache == "memory":
        ds = ds.cache()
    elif cache and cache != "none":
        ds = ds.cache(cache)
    return ds


_MAXINT32 = 2**31 - 1


def _guard_zero_global_seed() -> None:
    """Let a dataset function use a tensor op seed even when TensorFlow's global seed is 0.

    ``tf.random.set_seed(0)`` (or ``keras.utils.set_random_seed(0)``, i.e. ``--seed 0``)
    makes ``random_seed.get_seed`` compare ``(0, op_seed)`` with ``(0, 0)``, which a
    tensor op seed — our per-epoch shuffle seeds — cannot do ("symbolic tensor as a
    bool"). Inside the traced dataset function only, a global seed of 0 becomes 1; any
    other global seed, and the user's own state, are left alone.
    """
    import tensorflow as tf

    graph = tf.compat.v1.get_default_graph()
    if not tf.executing_eagerly() and graph.seed is not None and graph.seed % _MAXINT32 == 0:
        graph.seed = 1


def shard_by_data(ds: Any) -> Any:
    """Set the auto-shard policy explicitly to DATA on a dataset that feeds ``fit``.

    Under MultiWorkerMirroredStrategy every worker builds the same global stream (same
    files, same seeds) and keeps its own part of every global batch. That is correct
    for any source — in-memory arrays, file lists, TFRecord shards — and gives each
    step exactly the examples a single process would see with the same global batch.
    tf.data's own FILE policy cannot find the files behind the per-epoch ``flat_map``
    of ``training_stream``; TFRecord shards are FILE-sharded by hand instead, one
    stream per worker (``skinlesion.training.distribute.file_sharded_stream``).
    Outside multi-worker it does nothing.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


Wrap = Any
"""``wrap(image, label, index, epoch) -> (inputs, target)``: turns a stream element into
what a model with extra inputs (clinical metadata) or another target (diagnosis) takes;
``epoch`` is None outside training."""


def eval_batches(base: Any, batch_size: int, wrap: Wrap | None = None) -> Any:
    """``(image float32, label)`` batches in manifest order, for validation and prediction.

    With ``wrap``, elements are ``wrap(image, label, index, None)`` instead.
    """
    import tensorflow as tf

    if wrap is not None:
        return shard_by_data(base.map(lambda x, y, i: wrap(tf.cast(x, tf.float32), y, i, None),
                                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                             .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    return shard_by_data(base.map(lambda x, y, i: (tf.cast(x, tf.float32), y),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                         .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def feature_batches(x: np.ndarray | tuple[np.ndarray, ...], y: np.ndarray, batch_size: int, *,
                    seed: int | None = None, epochs: int = 1) -> Any:
    """``(features, label)`` batches of in-memory arrays (the head stage), DATA-sharded.

    Args:
        x: ``(N, D)`` features, or a tuple of arrays with N rows (features, metadata).
        y: ``(N,)`` targets (0/1 labels or class indices).
        batch_size: Global batch size.
        seed: Shuffle each epoch with its own seed (``seed``, epoch); None keeps the order
            and yields one epoch. Like ``training_stream``, the order does not depend on
            how many iterators were opened before (Keras opens one to build the model
            under a strategy), so every worker and a single process see the same batches.
        epochs: Number of epochs produced when shuffling; pass
            ``steps_per_epoch=ceil(N / batch_size)`` to ``fit``.
    """
    import tensorflow as tf

    xs = tuple(np.asarray(a, np.float32) for a in x) if isinstance(x, tuple) else np.asarray(
        x, np.float32)
    n = len(xs[0]) if isinstance(xs, tuple) else len(xs)
    ys = np.asarray(y, np.int32 if np.issubdtype(np.asarray(y).dtype, np.integer) else np.float32)
    ds = tf.data.Dataset.from_tensor_slices((xs, ys))
    if seed is not None:
        def one_epoch(epoch: Any) -> Any:
            _guard_zero_global_seed()
            epoch_seed = tf.cast(seed, tf.int64) * 7919 + epoch
            return ds.shuffle(n, seed=epoch_seed, reshuffle_each_iteration=False
                              ).batch(batch_size)

        ds = tf.data.Dataset.range(epochs).flat_map(one_epoch)
    else:
        ds = ds.batch(batch_size)
    return shard_by_data(ds.prefetch(tf.data.AUTOTUNE))


def training_stream(
    base: Any, n: int, *, batch_size: int, seed: int, start_epoch: int, epochs: int,
    augment: Any = None, shuffle_buffer: int = 0, balanced: bool = False,
    labels: np.ndarray | None = None, steps_per_epoch: int | None = None,
    wrap: Wrap | None = None,
) -> Any:
    """Shuffled, augmented training batches for epochs ``start_epoch … epochs-1``.

    Each epoch is built from its own seeds (``seed``, epoch) — shuffle order and
    augmentation alike — so resuming at epoch k yields exactly the batches an
    uninterrupted run sees from epoch k on. Use with
    ``model.fit(..., initial_epoch=start_epoch, epochs=epochs, steps_per_epoch=ceil(n / batch_size))``.

    Args:
        base: Output of ``image_dataset``.
        n: Number of elements in ``base``.
        batch_size: Global batch size.
        seed: Run seed.
        start_epoch: First epoch to produce (0 for a new run).
        epochs: One past the last epoch.
        augment: An ``AugmentConfig`` (None or disabled = no augmentation).
        shuffle_buffer: Shuffle buffer (0 = the whole split).
        balanced: Sample both classes equally (instead of class weights).
        labels: 0/1 labels of ``base`` (needed with ``balanced``).
        steps_per_epoch: Make every epoch exactly this many full batches, repeating the
            epoch's order as needed (None: ``ceil(n / batch_size)``). A multi-worker job
            reading its own TFRecord shards needs it: the workers' shares differ by a few
            images but every worker must take the same number of steps.
        wrap: Turns each augmented element into ``(inputs, target)`` (see :data:`Wrap`).
    """
    import tensorflow as tf


    buffer = shuffle_buffer or n
    use_aug = augment is not None and getattr(augment, "enabled", False)

    def prepare(x: Any, y: Any, i: Any, epoch: Any) -> Any:
        if use_aug:
            x = augment_image(x, tf.stack([tf.cast(seed, tf.int64) * 100_003 + epoch, i]),
                              augment)
        else:
            x = tf.cast(x, tf.float32)
        return wrap(x, y, i, epoch) if wrap is not None else (x, y)

    def one_epoch(epoch: Any) -> Any:
        _guard_zero_global_seed()
        epoch_seed = tf.cast(seed, tf.int64) * 7919 + epoch
        if balanced:
            pos = base.filter(lambda x, y, i: y > 0.5).shuffle(buffer, seed=epoch_seed).repeat()
            neg = base.filter(lambda x, y, i: y <= 0.5).shuffle(buffer, seed=epoch_seed + 1).repeat()
            ds = tf.data.Dataset.sample_from_datasets(
                [pos, neg], weights=[0.5, 0.5], seed=epoch_seed + 2).take(n)
            # Re-index: the same image may be drawn twice in an epoch, its views must differ.
            ds = ds.enumerate().map(lambda k, e: (e[0], e[1], e[2] * 1_000_003 + k))
        else:
            ds = base.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        if steps_per_epoch is not None:
            ds = ds.repeat().take(steps_per_epoch * batch_size)
        ds = ds.map(lambda x, y, i: prepare(x, y, i, epoch),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size)

    epochs_ds = tf.data.Dataset.range(start_epoch, epochs)
    return shard_by_data(epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE))

"""One decoder: a file gives the same model input, to the grey level, on every path.

Training (``image_dataset``, its validation batches and the cached-feature pass), TFRecord
shards, ``Predictor.load_image`` (``predict``, ``evaluate``, the export parity check) and
the service's decode must all produce bit-identical arrays for the same file — whatever
the file: EXIF-rotated, CMYK, PNG with alpha, palette or 16 bits, WebP, large photos that
are decoded reduced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinlesion.data.images import reduced_side
from skinlesion.data.pipeline import decode_for_model
from skinlesion.inference.predictor import Predictor

ORIENTATION = 0x0112


# === Writing test files from an RGB image ===

def _lesion(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (a dark blob on skin tones, with noise), not square."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = np.exp(-(((xx - 0.4 * w) / (0.25 * w)) ** 2 + ((yy - 0.6 * h) / (0.3 * h)) ** 2))
    base = np.array([200.0, 150.0, 130.0]) - blob[..., None] * np.array([120.0, 100.0, 80.0])
    arr = base + rng.normal(0, 6, (h, w, 3)) + (xx / w)[..., None] * 20
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_variants(img: Image.Image, folder: Path) -> dict[str, Path]:
    """``img`` written in every form the inference side accepts (name → path)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **kwargs: object) -> None:
        out[name] = folder / name
        image.save(out[name], **kwargs)

    rgb = img.convert("RGB")
    save("plain.jpg", rgb, quality=92)
    for k in (3, 6, 8):  # rotated 180°, 90° clockwise, 90° counter-clockwise
        exif = Image.Exif()
        exif[ORIENTATION] = k
        save(f"exif{k}.jpg", rgb, quality=92, exif=exif)
    save("cmyk.jpg", rgb.convert("CMYK"), quality=92)
    save("grey.jpg", rgb.convert("L"), quality=92)
    save("progressive.jpg", rgb, quality=85, progressive=True)
    save("rgb.png", rgb)
    alpha = Image.linear_gradient("L").resize(rgb.size)
    save("rgba.png", Image.merge("RGBA", (*rgb.split(), alpha)))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    save("palette_transparent.png", palette, transparency=0)
    grey16 = (np.asarray(rgb.convert("L"), np.uint32) * 257).astype(np.uint16)
    save("grey16.png", Image.fromarray(grey16))  # mode I;16
    save("lossless.webp", rgb, lossless=True)
    save("lossy.webp", rgb, quality=80)
    save("image.tiff", rgb)
    save("image.bmp", rgb)
    save("image.gif", rgb)
    return out


# === The paths into a model ===

def _predictor(size: int) -> Predictor:
    """A Predictor at ``size`` px (a trivial model: only its decoding is under test)."""
    import keras

    from skinlesion.runspec import ModelSpec

    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    return Predictor(model, ModelSpec(backbone="test", input_size=size), scope=None)


def training_arrays(paths: list[Path], size: int) -> list[np.ndarray]:
    """What training sees: ``image_dataset`` (uint8, cached) as ``eval_batches`` feeds it."""
    from skinlesion.data.pipeline import eval_batches, image_dataset

    base = image_dataset([str(p) for p in paths], np.zeros(len(paths)), size)
    cached = [x.numpy() for x, _, _ in base]
    fed = np.concatenate([x.numpy() for x, _ in eval_batches(base, 4)])
    assert fed.dtype == np.float32
    np.testing.assert_array_equal(fed, np.stack(cached).astype(np.float32))
    return [x.astype(np.float32) for x in cached]


def shard_arrays(paths: list[Path], size: int, folder: Path) -> list[np.ndarray]:
    """What ``train --tfrecords`` sees: the files' bytes in a TFRecord shard."""
    import tensorflow as tf

    from skinlesion.data.tfrecords import _example, tfrecord_dataset

    shard = folder / "train-00000-of-00001.tfrec"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for i, p in enumerate(paths):
            writer.write(_example(p.read_bytes(), 0, p.name, i))
    got = {int(i): x.numpy() for x, _, i in tfrecord_dataset([str(shard)], size, cache=None)}
    return [got[i].astype(np.float32) for i in range(len(paths))]


def feature_pass_arrays(paths: list[Path], size: int, folder: Path) -> list[np.ndarray]:
    """What the cached-feature pass feeds the backbone (an extractor that returns its input)."""
    import tensorflow as tf

    from skinlesion.data.pipeline import image_dataset
    from skinlesion.training.features import extract_features

    base = image_dataset([str(p) for p in paths], np.zeros(len(paths)), size)
    feats = extract_features(lambda x, training: tf.reshape(x, (tf.shape(x)[0], -1)), base,
                             len(paths), views=1, cache_dir=folder, key="identity",
                             batch_size=3)
    return list(feats[0].reshape(len(paths), size, size, 3))


def assert_one_decoder(paths: list[Path], size: int, folder: Path) -> None:
    """Every path gives ``Predictor.load_image``'s array for every file, bit for bit."""
    from skinlesion.service.prediction import decode_upload

    predictor = _predictor(size)
    inference = [predictor.load_image(p) for p in paths]
    for x in inference:
        assert x.dtype == np.float32 and x.shape == (size, size, 3)
        assert np.array_equal(x, np.round(x))  # whole grey levels, as training caches them
    def eager() -> list[np.ndarray]:
        import tensorflow as tf

        from skinlesion.data.pipeline import decode_resize

        return [decode_resize(tf.constant(str(p)), size).numpy().astype(np.float32)
                for p in paths]

    others: dict[str, Callable[[], list[np.ndarray]]] = {
        "training": lambda: training_arrays(paths, size),
        "decode_resize called eagerly": eager,
        "tfrecord": lambda: shard_arrays(paths, size, folder),
        "feature pass": lambda: feature_pass_arrays(paths, size, folder),
        "upload bytes": lambda: [predictor.load_image(p.read_bytes(), name=p.name)
                                 for p in paths],
        "service": lambda: [decode_upload(predictor, p.read_bytes(), p.name, 10**8)[1]
                            for p in paths],
    }
    for name, arrays in others.items():
        for p, want, got in zip(paths, inference, arrays(), strict=True):
            assert np.array_equal(got, want), (
                f"{name} path differs from predict for {p.name}: "
                f"max {np.abs(got - want).max()} grey levels")


# === Generated images ===

def test_every_accepted_form_gives_the_same_array_on_every_path(tmp_path: Path) -> None:
    small = write_variants(_lesion((90, 60)), tmp_path / "small")
    # Large enough to be decoded reduced: JPEG at a DCT scale, PNG box-reduced.
    side = reduced_side(32)
    big = _lesion((2 * side + 300, 2 * side + 100), seed=1)
    paths = [*small.values(), tmp_path / "big.jpg", tmp_path / "big.png"]
    big.save(paths[-2], quality=90)
    big.save(paths[-1])
    assert max(decode_for_model(paths[-1], 32).size) < max(big.size)  # reduced, not full
    assert_one_decoder(paths, 32, tmp_path)


def test_image_bytes_keep_their_trailing_nul_bytes_through_numpy_function(tmp_path: Path) -> None:
    import tensorflow as tf

    from skinlesion.data.pipeline import _bytes, decode_resize_bytes

    # A RIFF (WebP) chunk of odd length is padded with a NUL byte: dropping it (as a NumPy
    # bytes scalar does) makes the file unreadable.
    webp = write_variants(_lesion((90, 60)), tmp_path)["lossless.webp"].read_bytes()
    padded = webp if webp.endswith(b"\0") else webp + b"\0"
    for value in (padded, np.asarray(padded, dtype=object)):  # in a dataset; eagerly
        assert _bytes(value) == padded
    want = decode_resize_bytes(tf.constant(webp), tf.constant("x.webp"), 32).numpy()
    ds = tf.data.Dataset.from_tensors(tf.constant(webp)).map(
        lambda d: decode_resize_bytes(d, tf.constant("x.webp"), 32))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), want)


def test_exif_orientation_is_applied_on_the_training_path(tmp_path: Path) -> None:
    from skinlesion.data.pipeline import image_dataset

    files = write_variants(_lesion((90, 60)), tmp_path)
    assert decode_for_model(files["exif6.jpg"], 32).size == (60, 90)  # turned upright
    x = {n: x.numpy().astype(int) for n, (x, _, _) in zip(
        ("plain", "exif3"), image_dataset([str(files["plain.jpg"]), str(files["exif3.jpg"])],
                                          [0, 0], 32, cache=None), strict=True)}
    # Orientation 3 shows the stored pixels turned by 180°: the training input is the
    # plain file's, turned (same JPEG pixels up to a grey level or two of re-encoding).
    assert np.abs(x["exif3"] - x["plain"][::-1, ::-1]).mean() < 2
    assert np.abs(x["exif3"] - x["plain"]).mean() > 10


def test_a_bad_file_fails_the_training_pipeline_naming_the_file(tmp_path: Path) -> None:
    import tensorflow as tf

    from skinlesion.data.pipeline import image_dataset
    from skinlesion.data.tfrecords import _example, tfrecord_dataset

    good = write_variants(_lesion((40, 30)), tmp_path)["plain.jpg"]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo\n")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    for broken, reason in ((bad, "not an image"), (truncated, "corrupt or truncated"),
                           (tmp_path / "gone.jpg", "file not found")):
        ds = image_dataset([str(good), str(broken)], [0, 1], 32, cache=None)
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{broken.name}: {reason}"):
            list(ds)
    shard = tmp_path / "s.tfrec"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        writer.write(_example(bad.read_bytes(), 0, "ISIC_BAD", 0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="ISIC_BAD: not an image"):
        list(tfrecord_dataset([str(shard)], 32, cache=None))


# === Real isic-dev images ===

def _isic_files(isic_dev: Path, sizes: int = 6) -> list[Path]:
    """The first isic-dev file of each of the first ``sizes`` stored sizes, and the first
    full-size photo (2,048–3,072 px: decoded reduced)."""
    import pandas as pd

    names = pd.read_csv(isic_dev / "labels.csv")["filename"].tolist()
    picked: dict[tuple[int, int], Path] = {}
    for rel in names:
        if rel.startswith("fullsize/"):
            continue
        with Image.open(isic_dev / rel) as im:
            picked.setdefault(im.size, isic_dev / rel)
        if len(picked) == sizes:
            break
    return [*picked.values(), next(isic_dev / r for r in names if r.startswith("fullsize/"))]


@pytest.mark.integration
def test_real_isic_dev_files_give_the_same_array_on_every_path(
        isic_dev: Path, tmp_path: Path) -> None:
    from skinlesion.models.registry import DEFAULT_BACKBONE, get_backbone

    size = get_backbone(DEFAULT_BACKBONE).input_size
    files = _isic_files(isic_dev)
    assert len(files) == 7
    with Image.open(files[0]) as im:  # isic-dev has no EXIF-rotated or CMYK file: derive them
        derived = write_variants(im.convert("RGB"), tmp_path / "derived")
    paths = [*files, *(derived[n] for n in ("rgb.png", "exif6.jpg", "exif3.jpg", "cmyk.jpg",
                                            "rgba.png", "grey16.png", "lossless.webp"))]
    with Image.open(derived["cmyk.jpg"]) as im:
        assert im.mode == "CMYK"
    with Image.open(derived["exif6.jpg"]) as im:
        assert im.getexif()[ORIENTATION] == 6
    assert_one_decoder(paths, size, tmp_path)

"""Training speed: frozen-cached vs frozen-recomputed vs fine-tuning, input pipeline vs model,
and the fraction of the machine's float32 limit each reaches.

Measurements, each in its own child process (its own peak memory), all in one run so
their ratios compare like with like:

* **head on cached features** (our frozen recipe): epochs of the head over 2,000 cached
  feature vectors (random values of the backbone's feature size: a Dense layer's cost does
  not depend on them), optimiser and batch size of our recipe;
* **frozen, recomputed** (tutorial 1's way): the full forward pass through the frozen
  backbone for every image in every epoch, with tutorial 1's settings (RMSprop, batch 64,
  no augmentation), on real prepared isic-dev images decoded once and cached in memory;
* **fine-tuning** — ours (the default recipe's fine-tuning stage: its unfrozen layer groups,
  optimiser, batch and augmentation, read from the recipe) and tutorial 2's (every layer,
  Adam, batch 32): forward plus backward;
* **tf.data input**: decode + resize + augment from the prepared JPEGs with
  ``skinlesion.data.pipeline`` (no cache), against the model's training step rate;
* **compute**: model FLOPs per image and a large float32 matmul's GFLOP/s on the same cores.

Epoch times come from a Keras callback (``on_epoch_begin``/``on_epoch_end``); the first
epoch (decoding, tracing) is discarded as warm-up. The recomputed epoch over 2,000 images
is ``2000 / measured img/s`` (in quick mode over fewer images), so the cached-vs-recomputed
ratio compares two measurements of the same run.

FLOP counting (documented in the report): the forward pass is counted by TensorFlow's
profiler (``tf.compat.v1.profiler`` ``float_operation`` on the frozen graph of one image)
and, as a cross-check, analytically from the Keras layers (2 × multiply-adds of every
Conv2D, DepthwiseConv2D and Dense; elementwise ops ignored). A training step is estimated
analytically as forward + input gradients for every layer above the lowest trainable one +
weight gradients for the trainable layers (each ≈ its forward cost). The fraction of the
machine's limit is achieved FLOP/s divided by the best float32 matmul FLOP/s measured.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from bench.harness.child import run_in_child
from bench.harness.environment import cache_dir, load_average, now_iso, prepared_isic_dev
from bench.harness.timing import ratio, self_peak_rss_mb, summarize_times
from bench.markdown import Row, bullets, fmt, load_at_start, mb, num, pct, secs, table

log = logging.getLogger(__name__)

REFERENCE_IMAGES = 2000
"""Epoch size the cached-vs-recomputed comparison is stated for."""
RATIO_TARGET = 50.0
HEAD_EPOCH_TARGET_S = 1.0

REGIMES: dict[str, str] = {
    "frozen_recomputed": "tutorial1",
    "finetune_ours": "finetune",
    "finetune_t2": "tutorial2",
}
"""Regime → the recipe whose optimiser, batch size, augmentation and unfrozen layer groups
it uses (the frozen regime unfreezes nothing)."""
REGIME_LABELS: dict[str, str] = {
    "head_cached": "ours · head on cached features",
    "frozen_recomputed": "T1 · frozen backbone, recomputed (forward per image per epoch)",
    "finetune_ours": "ours · fine-tuning stage of the default recipe (forward + backward)",
    "finetune_t2": "T2 · fine-tuning every layer at once (forward + backward)",
}


def regime_unfreeze(regime: str) -> int:
    """Layer groups the regime unfreezes: 0 for the frozen one, else its recipe's setting."""
    from skinlesion.training.config import load_config, recipe_overrides

    if regime == "frozen_recomputed":
        return 0
    return load_config(overrides=recipe_overrides(REGIMES[regime])).stages.unfreeze_groups

QUICK = {"images": 64, "epochs": 2, "input_images": 64, "input_repeats": 2, "matmul_n": 2048,
         "matmul_repeats": 5, "forward_repeats": 3, "head_epochs": 5}
FULL = {"images": 512, "epochs": 3, "input_images": 512, "input_repeats": 3, "matmul_n": 2048,
        "matmul_repeats": 10, "forward_repeats": 10, "head_epochs": 10}
TIMEOUT_S = {True: 300, False: 3600}


def run(quick: bool = True) -> dict[str, Any]:
    """Measure every regime in its own child process and put the ratios together.

    Returns:
        ``{"title", "quick", "settings", "measurements": {...}, "comparison": {...},
        "notes", "headline"}``.
    """
    from skinlesion.models.registry import DEFAULT_BACKBONE, get_backbone

    s = QUICK if quick else FULL
    backbone = DEFAULT_BACKBONE
    spec = get_backbone(backbone)
    size = spec.input_size
    data = prepared_isic_dev()
    logs = cache_dir() / "training_speed" / "logs"
    timeout = TIMEOUT_S[quick]
    meas: dict[str, Any] = {}

    def child(name: str, target: str, **kwargs: Any) -> None:
        log.info("training_speed: %s", name)
        load = load_average()
        res = run_in_child(f"bench.training_speed:{target}", kwargs, timeout=timeout,
                           log_path=logs / f"{name}.log")
        meas[name] = {**(res.value or {}), "child": res.describe(), "load_average": load}
        if not res.ok:
            meas[name]["error"] = res.error

    # The head is light: it shares a child with the compute measurements, measured first so
    # that its own peak memory is read before the model is built.
    child("compute", "measure_head_and_compute", backbone=backbone, size=size,
          matmul_n=s["matmul_n"], matmul_repeats=s["matmul_repeats"],
          forward_repeats=s["forward_repeats"], head_images=REFERENCE_IMAGES,
          feature_dim=spec.feature_dim, head_epochs=s["head_epochs"])
    meas["head_cached"] = {**(meas["compute"].pop("head", None) or {
        "error": meas["compute"].get("error")}), "load_average": meas["compute"]["load_average"]}
    for regime in REGIMES:
        child(regime, "measure_image_training", regime=regime, backbone=backbone, size=size,
              data_dir=data["data_dir"], n_images=s["images"], epochs=s["epochs"])
    child("input_pipeline", "measure_input_pipeline", data_dir=data["data_dir"], size=size,
          n_images=s["input_images"], repeats=s["input_repeats"])

    comparison = compare(meas)
    return {
        "title": "Training speed",
        "quick": quick, "backbone": backbone, "input_size": size,
        "settings": {**s, "reference_images": REFERENCE_IMAGES},
        "measurements": meas, "comparison": comparison,
        "notes": _notes(quick, s),
        "created": now_iso(),
    }


def _notes(quick: bool, s: dict[str, Any]) -> list[str]:
    notes = [
        f"Image regimes: {s['images']} real prepared isic-dev images per epoch, "
        f"{s['epochs']} timed epochs after one warm-up epoch (decoding + tracing), cached in "
        "memory after decoding; the head: epochs over 2,000 cached feature vectors.",
        "Recomputed epoch over 2,000 images = 2,000 / measured img/s of the frozen regime.",
        "FLOPs: forward counted by tf.compat.v1.profiler (float_operation, frozen graph, batch 1) "
        "and analytically from Keras layers (2 × MACs of Conv2D/DepthwiseConv2D/Dense) as a "
        "cross-check; training FLOPs estimated as forward + input gradients above the lowest "
        "trainable layer + weight gradients of trainable layers (each ≈ the layer's forward).",
        "Machine limit: best time of a float32 matmul (n × n, 2n³ FLOPs) with TensorFlow on the "
        "same cores, in the same run. On a loaded machine a short matmul can run in a gap "
        "between other processes' time slices while a training epoch cannot, so fractions "
        "measured under load understate what the code reaches on an idle machine.",
    ]
    if quick:
        notes.insert(0, "Quick mode: fewer images and repetitions; rates are real but noisier.")
    return notes


def compare(meas: dict[str, Any]) -> dict[str, Any]:
    """Ratios and fractions of the machine's limit from the measurements of one run."""
    head = meas.get("head_cached", {}).get("epoch") or {}
    rec = meas.get("frozen_recomputed", {}).get("epoch") or {}
    compute = meas.get("compute", {})
    peak = (compute.get("matmul") or {}).get("gflops_best")
    head_epoch = head.get("median_s")
    rec_rate = rec.get("per_s_median")
    rec_epoch = REFERENCE_IMAGES / rec_rate if rec_rate else None
    out: dict[str, Any] = {
        "reference_images": REFERENCE_IMAGES,
        "head_epoch_s": head_epoch,
        "recomputed_epoch_s": rec_epoch,
        "cached_vs_recomputed": ratio(rec_epoch, head_epoch),
        "ratio_target": RATIO_TARGET, "head_epoch_target_s": HEAD_EPOCH_TARGET_S,
    }
    out["ratio_target_met"] = (None if out["cached_vs_recomputed"] is None
                               else out["cached_vs_recomputed"] >= RATIO_TARGET)
    out["head_epoch_target_met"] = None if head_epoch is None else head_epoch < HEAD_EPOCH_TARGET_S
    rows = []
    flops = compute.get("train_flops_per_image") or {}
    for name in ("head_cached", *REGIMES):
        m = meas.get(name, {})
        epoch = m.get("epoch") or {}
        rate = epoch.get("per_s_median")
        per_image = flops.get(name) if name != "head_cached" else m.get("flops_per_image")
        achieved = per_image * rate / 1e9 if per_image and rate else None
        rows.append({
            "regime": name, "label": REGIME_LABELS.get(name, name),
            "img_per_s": rate, "img_per_s_best": epoch.get("per_s_best"),
            "img_per_s_worst": epoch.get("per_s_worst"),
            "epoch_2000_s": REFERENCE_IMAGES / rate if rate else None,
            "batch_size": m.get("batch_size"), "repeats": epoch.get("repeats"),
            "unfreeze_groups": m.get("unfreeze_groups"),
            "gflop_per_image": per_image / 1e9 if per_image else None,
            "achieved_gflops": achieved, "fraction_of_peak": ratio(achieved, peak),
            "peak_rss_mb": m.get("peak_rss_mb") or (m.get("child") or {}).get("peak_rss_mb"),
            "load_average": m.get("load_average"),
            "error": m.get("error"),
        })
    out["regimes"] = rows
    fwd = compute.get("forward") or {}
    fwd_rate = fwd.get("per_s_median")
    fwd_flops = compute.get("forward_flops_per_image")
    fwd_achieved = fwd_flops * fwd_rate / 1e9 if fwd_flops and fwd_rate else None
    out["inference_forward"] = {"img_per_s": fwd_rate, "batch_size": compute.get("batch_size"),
                                "achieved_gflops": fwd_achieved,
                                "fraction_of_peak": ratio(fwd_achieved, peak)}
    pipe = (meas.get("input_pipeline") or {}).get("full") or {}
    step = (meas.get("finetune_ours") or {}).get("epoch") or {}
    out["input_vs_model"] = {
        "input_img_per_s": pipe.get("per_s_median"),
        "model_step_img_per_s": step.get("per_s_median"),
        "input_over_model": ratio(pipe.get("per_s_median"), step.get("per_s_median")),
    }
    out["peak_gflops"] = peak
    return out


# === Children ==================================================================

class _EpochTimer:
    """Keras callback recording each epoch's wall time (built lazily: keras is imported late)."""

    @staticmethod
    def make() -> Any:
        import keras

        class EpochTimer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.times: list[float] = []
                self._t = 0.0

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.times.append(time.perf_counter() - self._t)

        return EpochTimer()


def measure_head(n_images: int, feature_dim: int, epochs: int, seed: int = 1) -> dict[str, Any]:
    """Epoch time of our head (recipe ``frozen``'s optimiser, loss, batch, class weights)
    over ``n_images`` cached feature vectors."""
    import keras

    from skinlesion.models.classifier import build_head
    from skinlesion.training.config import load_config, recipe_overrides
    from skinlesion.training.objectives import (
        class_weights,
        make_loss,
        make_metrics,
        make_optimizer,
    )

    cfg = load_config(overrides=recipe_overrides("frozen"))
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_images, feature_dim)).astype(np.float32)
    y = (rng.random(n_images) < 0.4).astype(np.float32)
    head = build_head(feature_dim, cfg.model.dropout)
    head.compile(optimizer=make_optimizer(cfg, cfg.stages.head_lr), loss=make_loss(cfg),
                 metrics=make_metrics())
    timer = _EpochTimer.make()
    head.fit(x, y, epochs=epochs + 1, batch_size=cfg.stages.head_batch_size, callbacks=[timer],
             class_weight=class_weights(y), verbose=0, shuffle=True)
    # Forward 2·D plus the weight gradient 2·D (no input gradient: the features are inputs).
    flops = 4 * feature_dim
    return {"epoch": summarize_times(timer.times[1:], items=n_images, warmup=1),
            "batch_size": cfg.stages.head_batch_size, "feature_dim": feature_dim,
            "optimizer": cfg.optim.optimizer, "flops_per_image": flops,
            "peak_rss_mb": self_peak_rss_mb()}


def measure_head_and_compute(head_images: int, feature_dim: int, head_epochs: int,
                             **compute: Any) -> dict[str, Any]:
    """:func:`measure_head`, then :func:`measure_compute`, in one process (head first)."""
    head = measure_head(n_images=head_images, feature_dim=feature_dim, epochs=head_epochs)
    return {**measure_compute(**compute), "head": head}


def _sample_paths(data_dir: str, n: int, seed: int = 1) -> tuple[list[str], np.ndarray]:
    from skinlesion.data.manifest import read_manifest, resolve_paths

    df = read_manifest(data_dir)
    train = df[df["split"] == "train"].sample(frac=1.0, random_state=seed).head(n)
    return resolve_paths(train, data_dir), train["label"].to_numpy(np.float32)


def measure_image_training(regime: str, backbone: str, size: int, data_dir: str, n_images: int,
                           epochs: int, seed: int = 1) -> dict[str, Any]:
    """Epoch times of ``model.fit`` on real images in one regime of :data:`REGIMES`."""
    import keras

    from skinlesion.data.pipeline import image_dataset, training_stream
    from skinlesion.models.classifier import build_classifier
    from skinlesion.models.registry import get_backbone
    from skinlesion.training.config import load_config, recipe_overrides
    from skinlesion.training.objectives import make_loss, make_metrics, make_optimizer, steps
    from skinlesion.training.stages import set_trainable

    recipe, unfreeze = REGIMES[regime], regime_unfreeze(regime)
    cfg = load_config(overrides={**recipe_overrides(recipe), "backbone": backbone,
                                 "input_size": size})
    bspec = get_backbone(backbone)
    keras.utils.set_random_seed(seed)
    model = build_classifier(backbone, size, weights=cfg.model.weights_arg,
                             dropout=cfg.model.dropout,
                             preprocessing=cfg.model.preprocessing or bspec.preprocessing)
    trainable = set_trainable(model, bspec, unfreeze)
    lr = cfg.stages.head_lr if unfreeze == 0 else cfg.stages.finetune_lr
    model.compile(optimizer=make_optimizer(cfg, lr), loss=make_loss(cfg), metrics=make_metrics())
    paths, labels = _sample_paths(data_dir, n_images, seed)
    n = len(paths)
    base = image_dataset(paths, labels, size, cache="memory")
    stream = training_stream(base, n, batch_size=cfg.stages.batch_size, seed=seed, start_epoch=0,
                             epochs=epochs + 1, augment=cfg.augment)
    timer = _EpochTimer.make()
    model.fit(stream, epochs=epochs + 1, steps_per_epoch=steps(n, cfg.stages.batch_size),
              callbacks=[timer], verbose=0)
    return {"epoch": summarize_times(timer.times[1:], items=n, warmup=1),
            "warmup_epoch_s": timer.times[0], "recipe": recipe, "unfreeze_groups": unfreeze,
            "trainable_backbone_layers": trainable, "batch_size": cfg.stages.batch_size,
            "optimizer": cfg.optim.optimizer, "augment": bool(cfg.augment.enabled)}


def measure_input_pipeline(data_dir: str, size: int, n_images: int, repeats: int,
                           seed: int = 1) -> dict[str, Any]:
    """img/s of the tf.data input: decode + resize + augment from the prepared JPEGs (no
    cache), and decode + resize alone."""
    from skinlesion.data.pipeline import image_dataset, training_stream
    from skinlesion.training.config import AugmentConfig

    paths, labels = _sample_paths(data_dir, n_images, seed)
    n = len(paths)

    def epoch_times(augment: AugmentConfig | None) -> dict[str, Any]:
        base = image_dataset(paths, labels, size, cache=None)
        times = []
        for epoch in range(repeats + 1):
            ds = training_stream(base, n, batch_size=32, seed=seed, start_epoch=epoch,
                                 epochs=epoch + 1, augment=augment)
            t = time.perf_counter()
            count = sum(int(x.shape[0]) for x, _ in ds)
            times.append(time.perf_counter() - t)
            if count != n:
                raise RuntimeError(f"input pipeline yielded {count} images, expected {n}")
        return summarize_times(times[1:], items=n, warmup=1)

    return {"full": epoch_times(AugmentConfig()), "decode_resize": epoch_times(None),
            "images": n, "batch_size": 32, "what": "decode + resize + augment (tf.data, no cache)"}


def measure_compute(backbone: str, size: int, matmul_n: int, matmul_repeats: int,
                    forward_repeats: int, batch_size: int = 32) -> dict[str, Any]:
    """The machine's float32 matmul GFLOP/s, the model's FLOPs per image (profiler and
    analytic; training estimates per regime) and its inference forward img/s."""
    import tensorflow as tf

    from skinlesion.models.classifier import BACKBONE_NAME, build_classifier
    from skinlesion.models.registry import get_backbone
    from skinlesion.training.stages import set_trainable

    out: dict[str, Any] = {"matmul": matmul_gflops(matmul_n, matmul_repeats)}
    bspec = get_backbone(backbone)
    model = build_classifier(backbone, size, weights=None)
    out["profiler_flops_per_image"], out["profiler_note"] = profiler_flops(model, size)
    layers = layer_flops(model)
    out["analytic_flops_per_image"] = float(sum(f for _, f, _ in layers))
    out["forward_flops_per_image"] = out["profiler_flops_per_image"] or out[
        "analytic_flops_per_image"]
    train: dict[str, float] = {}
    for regime in REGIMES:
        set_trainable(model, bspec, regime_unfreeze(regime))
        train[regime] = training_flops(layer_flops(model))
    model.get_layer(BACKBONE_NAME).trainable = False
    out["train_flops_per_image"] = train
    x = tf.random.uniform((batch_size, size, size, 3), 0, 255, seed=1)
    forward = tf.function(lambda t: model(t, training=False))
    out["forward"] = _time_tf(lambda: forward(x), forward_repeats, items=batch_size)
    out["batch_size"] = batch_size
    return out


def _time_tf(fn: Any, repeats: int, items: int) -> dict[str, Any]:
    from bench.harness.timing import time_calls

    return time_calls(lambda: np.asarray(fn()), repeats=repeats, warmup=1, items=items)


def matmul_gflops(n: int, repeats: int) -> dict[str, Any]:
    """GFLOP/s of an ``n × n`` float32 matmul with TensorFlow (2n³ FLOPs per product)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    product = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    timing = _time_tf(product, repeats, items=1)
    flops = 2.0 * n**3
    return {"n": n, "dtype": "float32", "timing": timing,
            "gflops_best": flops / timing["min_s"] / 1e9,
            "gflops_median": flops / timing["median_s"] / 1e9}


def profiler_flops(model: Any, size: int) -> tuple[float | None, str]:
    """Forward FLOPs of one image by TensorFlow's profiler on the frozen graph (or None)."""
    try:
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        fn = tf.function(lambda t: model(t, training=False))
        concrete = fn.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32))
        graph = convert_variables_to_constants_v2(concrete).graph
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                             cmd="op", options=opts)
        return float(info.total_float_ops), "tf.compat.v1.profiler float_operation, frozen graph"
    except Exception as exc:  # the profiler is a v1 API; never let it sink the bench
        return None, f"profiler unavailable ({type(exc).__name__}: {exc})"


def layer_flops(model: Any) -> list[tuple[str, float, bool]]:
    """``(layer name, forward FLOPs per image, trainable)`` for every Conv2D, DepthwiseConv2D,
    SeparableConv2D and Dense layer, in graph order, nested models expanded.

    FLOPs are 2 × multiply-adds: ``2·H_out·W_out·prod(kernel shape)`` for convolutions (the
    kernel shape already holds in-channels per group), ``2·prod(kernel shape)`` for Dense.
    """
    import keras

    out: list[tuple[str, float, bool]] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(layer_flops(layer))
            continue
        kernels = [w for w in layer.weights if "kernel" in w.path.rsplit("/", 1)[-1]]
        if not kernels:
            continue
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        spatial = float(np.prod([d for d in shape[1:-1] if d])) if len(shape) > 2 else 1.0
        macs = sum(float(np.prod(k.shape)) for k in kernels) * spatial
        out.append((layer.name, 2.0 * macs, bool(layer.trainable)))
    return out


def training_flops(layers: list[tuple[str, float, bool]]) -> float:
    """Estimated FLOPs of one training step per image from :func:`layer_flops`.

    Forward of every layer, plus the gradient with respect to the input of every layer
    above the lowest trainable one (back-propagation must pass through them), plus the
    gradient with respect to the weights of every trainable layer; each ≈ that layer's
    forward cost.
    """
    fwd = sum(f for _, f, _ in layers)
    first = next((i for i, (_, _, t) in enumerate(layers) if t), None)
    if first is None:
        return fwd
    input_grads = sum(f for _, f, _ in layers[first + 1:])
    weight_grads = sum(f for _, f, t in layers if t)
    return fwd + input_grads + weight_grads


# === Rendering (docs/BENCHMARKS.md) ===================================================

def render_report(name: str, rec: dict[str, Any]) -> tuple[str, list[Row]]:
    """Regimes table, cached-vs-recomputed ratio, input vs model, compute and FLOPs."""
    result = rec.get("result") or {}
    comp = result.get("comparison") or {}
    meas = result.get("measurements") or {}
    compute = meas.get("compute") or {}
    body = []
    ratio_v = comp.get("cached_vs_recomputed")
    ref = comp.get("reference_images", 2000)
    body.append(
        f"**Frozen-cached vs frozen-recomputed, per epoch over {fmt(ref)} images: "
        f"{num(ratio_v)}×** (head epoch {secs(comp.get('head_epoch_s'))} vs recomputed "
        f"{secs(comp.get('recomputed_epoch_s'))}; target ≥ {num(comp.get('ratio_target'))}×: "
        f"{_met(comp.get('ratio_target_met'))}; head epoch under "
        f"{num(comp.get('head_epoch_target_s'))} s: {_met(comp.get('head_epoch_target_met'))}).")
    body.append(_regimes_table(comp.get("regimes") or [], ref))
    iv = comp.get("input_vs_model") or {}
    pipe = meas.get("input_pipeline") or {}
    body.append("**Input pipeline vs model step**\n\n" + table(
        ["Stage", "img/s median (min–max)"],
        [["tf.data decode + resize + augment (prepared JPEGs, no cache)", fmt(
            _rate_timing(pipe.get("full")))],
         ["tf.data decode + resize only", fmt(_rate_timing(pipe.get("decode_resize")))],
         ["model training step (ours, fine-tuning stage of the default recipe)",
          num(iv.get("model_step_img_per_s"))]])
        + f"\n\nInput / model = {num(iv.get('input_over_model'))}× "
          "(above 1: the input pipeline keeps up with training on this CPU; both share the "
          "same cores, so in training they compete).")
    mm = compute.get("matmul") or {}
    fwd = comp.get("inference_forward") or {}
    body.append("**Compute: model FLOPs and the machine's limit**\n\n" + table(
        ["Quantity", "Value"],
        [[f"float32 matmul {fmt(mm.get('n'))}×{fmt(mm.get('n'))} (TensorFlow), best / median",
          f"{num(mm.get('gflops_best'))} / {num(mm.get('gflops_median'))} GFLOP/s"],
         ["Forward FLOPs per image (profiler)", _gflop(compute.get("profiler_flops_per_image"))],
         ["Forward FLOPs per image (analytic, conv + dense)",
          _gflop(compute.get("analytic_flops_per_image"))],
         [f"Inference forward, batch {fmt(fwd.get('batch_size'))}",
          f"{num(fwd.get('img_per_s'))} img/s = {num(fwd.get('achieved_gflops'))} GFLOP/s = "
          f"{pct(fwd.get('fraction_of_peak'))} of the matmul peak"]]))
    if compute.get("profiler_note"):
        body.append(f"FLOP counter: {compute['profiler_note']}.")
    if result.get("notes"):
        body.append(bullets(fmt(n) for n in result["notes"]))
    errors = [f"{k}: {v.get('error')}" for k, v in meas.items() if isinstance(v, dict)
              and v.get("error")]
    if errors:
        body.append("**Failed measurements:**\n\n```text\n" + "\n\n".join(errors)[:4000]
                    + "\n```")
    return "\n\n".join(body), _headline(comp, mm, fwd)


def _regimes_table(regimes: list[dict[str, Any]], ref: Any) -> str:
    rows = []
    for r in regimes:
        groups = r.get("unfreeze_groups")
        unfrozen = ("" if groups in (None, 0) else
                    " — all layer groups" if groups == -1 else f" — top {groups} layer groups")
        rows.append([fmt(r.get("label")) + unfrozen,
                     f"{num(r.get('img_per_s'))} ({num(r.get('img_per_s_worst'))}–"
                     f"{num(r.get('img_per_s_best'))})",
                     secs(r.get("epoch_2000_s")), fmt(r.get("batch_size")), fmt(r.get("repeats")),
                     num(r.get("gflop_per_image")), num(r.get("achieved_gflops")),
                     pct(r.get("fraction_of_peak")), mb(r.get("peak_rss_mb"))
                     + (" (failed)" if r.get("error") else ""), load_at_start(r)])
    return table(["Regime", "img/s median (min–max)", f"Epoch over {fmt(ref)} images",
                  "Batch", "Timed epochs", "GFLOP / image (train, est.)",
                  "Achieved GFLOP/s", "Fraction of machine peak", "Peak memory",
                  "Load avg at start"], rows)


def _headline(comp: dict[str, Any], mm: dict[str, Any], fwd: dict[str, Any]) -> list[Row]:
    """Headline rows: the cached-features speed-up, fine-tuning and inference throughput."""
    heads: list[Row] = []
    ratio_v, ref = comp.get("cached_vs_recomputed"), comp.get("reference_images", 2000)
    if ratio_v is not None:
        heads.append({"metric": f"Head epoch over {fmt(ref)} images: cached features vs "
                                "recomputed backbone (T1's way)",
                      "value": f"{num(ratio_v)}× faster",
                      "note": f"{secs(comp.get('head_epoch_s'))} vs "
                              f"{secs(comp.get('recomputed_epoch_s'))}"})
    for r in comp.get("regimes") or []:
        if r.get("regime") == "finetune_ours" and r.get("img_per_s"):
            groups = r.get("unfreeze_groups")
            what = "all layers" if groups == -1 else f"top {groups} groups"
            heads.append({"metric": f"Fine-tuning throughput (ours, {what})",
                          "value": r["img_per_s"], "unit": "img/s",
                          "note": f"{pct(r.get('fraction_of_peak'))} of the float32 matmul peak"})
    if fwd.get("img_per_s"):
        heads.append({"metric": "Inference forward pass (Keras, default backbone)",
                      "value": fwd["img_per_s"], "unit": "img/s",
                      "note": f"{pct(fwd.get('fraction_of_peak'))} of the float32 matmul peak "
                              f"({num(mm.get('gflops_best'))} GFLOP/s)"})
    return heads


def _met(v: Any) -> str:
    return "—" if v is None else ("**met**" if v else "**not met**")


def _rate_timing(t: Any) -> dict[str, float] | None:
    if not isinstance(t, dict):
        return None
    keys = ("per_s_median", "per_s_worst", "per_s_best")
    if not all(isinstance(t.get(k), int | float) for k in keys):
        return None
    return {"median": t["per_s_median"], "min": t["per_s_worst"], "max": t["per_s_best"]}


def _gflop(x: float | None) -> str:
    return "—" if x is None else f"{num(x / 1e9)} GFLOP"


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(json.dumps(run(quick="--full" not in sys.argv), indent=2, default=str))

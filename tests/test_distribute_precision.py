"""Mixed precision and XLA on CPU: the run trains, the output layer stays float32.

GPU speed-ups are not measured here (no GPU in CI); see docs/SCALING.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_training import make_dataset, tiny_config

pytestmark = pytest.mark.slow  # one training run per precision


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("precision_data"), n_train=32, n_val=16, size=36)


@pytest.mark.parametrize(("precision", "jit", "compute"), [
    ("mixed_bfloat16", True, "bfloat16"),
    ("mixed_float16", False, "float16"),
])
def test_mixed_precision_trains_with_float32_output(data: Path, tmp_path: Path, precision: str,
                                                    jit: bool, compute: str) -> None:
    import keras

    import skinlesion.models.backbones  # noqa: F401  (registers custom layers for loading)
    from skinlesion.training.trainer import train

    try:
        result = train(tiny_config(data, tmp_path / "run", backbone="test_tiny_cnn",
                                   precision=precision, jit=jit, head_epochs=8, head_lr=3e-2,
                                   finetune_epochs=1, feature_views=1))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    hist = result.history
    assert hist is not None and np.isfinite(hist["loss"]).all() and len(hist) == 9
    # The generated malignant images carry a dark blob: low precision still learns it.
    assert result.val_metrics["roc_auc"] > 0.8
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert model.get_layer("preprocess").compute_dtype == compute  # casts raw pixels itself
    assert model.get_layer("pool").compute_dtype == compute
    assert model.get_layer("head").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    p = np.asarray(model(np.full((2, 32, 32, 3), 180.0, np.float32)))
    assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))

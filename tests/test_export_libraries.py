"""export checks for its optional libraries first and names the extra that installs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import app
from skinlesion.inference import export as ex
from skinlesion.workflows import export as wx


@pytest.fixture
def no_litert(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []

    def have(module: str) -> bool:
        asked.append(module)
        return module != "ai_edge_litert"

    monkeypatch.setattr(ex, "_have", have)
    return asked


def test_missing_runtime_is_reported_before_any_conversion(no_litert: list[str], tiny_run: Path,
                                                           tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("conversion started before the library check")

    monkeypatch.setattr("skinlesion.inference.predictor.Predictor.from_run", never)
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--format", "tflite",
                                      "--out", str(tmp_path / "out"), "--skip-check"])
    # --skip-check: the runtime is not needed, so the export goes on (and hits the stub).
    assert isinstance(result.exception, AssertionError)
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--format", "tflite",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    # The extra's name survives rich markup: "[export]" is not swallowed.
    assert "pip install 'skinlesion[export]'" in text, text
    assert "ai-edge-litert" in text
    assert not (tmp_path / "out").exists()


def test_missing_libraries_per_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ex, "_have", lambda module: False)
    assert ex.missing_libraries("savedmodel") == []
    assert ex.missing_libraries("onnx") == ["ONNX export needs tf2onnx",
                                            "running ONNX needs onnxruntime"]
    assert ex.missing_libraries("onnx", check=False) == ["ONNX export needs tf2onnx"]
    with pytest.raises(ex.ExportError, match=r"skinlesion\[export\]"):
        ex.require_libraries("tflite")


def test_fail_keeps_square_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from skinlesion.cli._common import fail

    with pytest.raises(typer.Exit):
        fail("install it: pip install 'skinlesion[export]' (files [a.csv, b.csv])")
    err = " ".join(capsys.readouterr().err.split())
    assert "'skinlesion[export]'" in err and "[a.csv, b.csv]" in err


@pytest.mark.slow  # a real TFLite conversion
def test_tflite_export_and_runtime_print_nothing(tiny_run: Path, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ai_edge_litert")
    import numpy as np

    monkeypatch.delenv("SKINLESION_TF_LOGS", raising=False)
    result = wx.export_run(tiny_run, "tflite", quantize="float16", out=tmp_path / "t",
                           skip_check=True)
    probs = ex.TFLiteRuntime(result.model_file).predict(np.full((2, 32, 32, 3), 128, np.float32))
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))
    err = capfd.readouterr().err
    # Neither the converter's settings line nor LiteRT's delegate notice reaches the console.
    assert "XNNPACK" not in err and "fully_quantize" not in err and "inference_type" not in err

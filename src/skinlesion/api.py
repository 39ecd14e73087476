"""The Python API a notebook user reaches for: ``import skinlesion as sl``.

Five calls cover the workflow, each built on the function the CLI runs, so the
two cannot disagree::

    import skinlesion as sl

    data = sl.prepare("raw/isic2020", out="data/isic", size=256)   # -> PreparedData
    run = sl.train(data, out="runs/lite0", mode="frozen")          # -> Run
    ev = sl.evaluate(run, data, split="test")                      # -> Evaluation
    model = sl.load(run)                                           # -> Predictor
    model.predict("lesion.jpg")                                    # -> Prediction

Every object renders itself in Jupyter (``_repr_html_``): a data folder its split
counts, a run its spec, validation metrics and training curves, an evaluation its
headline metrics (ROC AUC with its bootstrap CI, sensitivity and specificity at the
stored operating point) and figures, a prediction the photo, the Grad-CAM heatmap,
the probability and the decision. Plot methods take ``ax=`` and return a
scikit-learn-style display (``.ax_``, ``.figure_``).

Results are still the files of the run-directory contract: ``Run.open(path)`` and
``Evaluation.open(path)`` read back what the CLI wrote, and the CLI reads what
these calls write. TensorFlow is imported only when a call needs it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skinlesion import INTENDED_USE
from skinlesion.runspec import (
    CONFIG_FILE,
    EVAL_DIR,
    HISTORY_FILE,
    ModelSpec,
    require_run,
)
from skinlesion.utils.progress import Progress

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    from skinlesion.data.prepare import PrepareResult
    from skinlesion.display import HistoryDisplay, PhotoFigure
    from skinlesion.evaluation.compare import CompareResult
    from skinlesion.evaluation.metrics import EvalResult
    from skinlesion.inference.export import ExportResult
    from skinlesion.inference.interactive import Predictor
    from skinlesion.training.trainer import TrainResult

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

__all__ = [
    "Comparison",
    "Evaluation",
    "PreparedData",
    "Run",
    "compare",
    "ensemble",
    "evaluate",
    "load",
    "prepare",
    "train",
]


def _path(obj: Any) -> Path:
    """A Path from a str, a PathLike, or one of this module's objects (their ``path``)."""
    if isinstance(obj, PreparedData | Run):
        return obj.path
    return Path(os.fspath(obj))


# === Data ===


@dataclass
class PreparedData:
    """A prepared data folder (``manifest.csv``, ``images/``, ``prepare_report.json``).

    Pass it wherever a data folder is expected (``sl.train``, ``sl.evaluate``); it is
    also ``os.PathLike``.

    Attributes:
        path: The data folder, as given.
        manifest: One row per image: ``image_id``, ``path``, ``label``, ``split``,
            ``patient_id``, ``diagnosis``, ``age``, ``sex``, ``site``, ``source``, ...
        report: ``prepare_report.json`` (counts, rejected rows and why), or ``{}``.
    """

    path: Path
    manifest: pd.DataFrame = field(repr=False)
    report: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: PathLike) -> PreparedData:
        """Read a prepared data folder.

        Raises:
            ManifestError: if the manifest is missing or invalid.
        """
        from skinlesion.data.manifest import manifest_path, read_manifest

        manifest = read_manifest(path)
        report_file = manifest_path(path).parent / "prepare_report.json"
        report = json.loads(report_file.read_text(encoding="utf-8")) \
            if report_file.is_file() else {}
        return cls(Path(os.fspath(path)), manifest, report)

    @classmethod
    def _from_result(cls, path: Path, result: PrepareResult) -> PreparedData:
        # Read back through read_manifest: the same dtypes as PreparedData.open, as train sees.
        from skinlesion.data.manifest import read_manifest

        return cls(path, read_manifest(path), result.report)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def rejected(self) -> pd.DataFrame:
        """Rows ``prepare`` left out, with the reason (``source``, ``image_id``, ``file``, ``reason``)."""
        return pd.DataFrame(self.report.get("rejected", []),
                            columns=["source", "image_id", "file", "reason"])

    def split(self, name: str) -> pd.DataFrame:
        """Manifest rows of one split (``train``, ``val`` or ``test``)."""
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)

    def counts(self) -> pd.DataFrame:
        """Images, malignant, benign and patients per split."""
        rows = []
        for name in ("train", "val", "test"):
            part = self.split(name)
            patients = part["patient_id"].astype(str).replace("", pd.NA).dropna()
            rows.append({"split": name, "images": len(part), "malignant": int(part["label"].sum()),
                         "benign": int((part["label"] == 0).sum()),
                         "patients": patients.nunique()})
        return pd.DataFrame(rows).set_index("split")

    def show_batch(self, n: int = 25, *, split: str | None = "train", seed: int = 0,
                   cols: int = 5) -> PhotoFigure:
        """A grid of ``n`` random prepared images titled with label and diagnosis (tutorial 1's check).

        Args:
            n: Images to show. Defaults to 25 (the 5×5 grid).
            split: Split to sample from (``None``: all). Defaults to ``train``.
            seed: Sampling seed.
            cols: Images per row.

        Returns:
            A :class:`~skinlesion.display.PhotoFigure`: shown inline as JPEG, the matplotlib
            figure in ``.figure``.
        """
        from skinlesion.data.preview import plot_batch, sample_batch
        from skinlesion.display import PhotoFigure

        batch = sample_batch(self.manifest, n=n, split=split, seed=seed)
        return PhotoFigure(plot_batch(batch, self.path, cols=cols, thumb=160,
                                      title=f"{len(batch)} random {split or 'all'} images, "
                                            f"seed {seed}"))

    def _repr_html_(self) -> str:
        from skinlesion.display import counts_table, escape

        m = self.manifest
        rejected = int(self.report.get("counts", {}).get("rejected", 0))
        return (f"<div><b>PreparedData</b> {escape(self.path.as_posix())}: {len(m):,} images "
                f"({int(m['label'].sum()):,} malignant)"
                + (f", {rejected} rejected (see <code>.rejected</code>)" if rejected else "")
                + counts_table(m) + "</div>")

    def __repr__(self) -> str:
        return f"PreparedData({self.path.as_posix()!r}, images={len(self.manifest)})"


def prepare(sources: PathLike | Sequence[PathLike], out: PathLike, *, size: int | None = None,
            seed: int = 1, fractions: tuple[float, float, float] | None = None,
            folds: int | None = None, label_map: Mapping[str, int | None] | None = None,
            fmt: str = "auto", workers: int | None = None, strict: bool = False,
            progress: Progress | None = None) -> PreparedData:
    r"""Ingest raw downloads into a prepared data folder (``skinlesion prepare``).

    Every common ISIC layout is recognised (class folders, ISIC 2016–2020 ground truth,
    HAM10000, ISIC Archive ``metadata.csv``, any CSV with a path and a label). Splits are
    grouped by patient (and lesion), so no patient's images fall on both sides.

    Args:
        sources: A folder or CSV file, or several (combined; on a duplicate the first wins).
        out: The data folder to write.
        size: Shorter side of the prepared images in pixels. Defaults to 512.
        seed: Split seed. Defaults to 1.
        fractions: Train, val, test fractions. Defaults to (0.8, 0.1, 0.1).
        folds: Also assign this many cross-validation folds over train+val.
        label_map: Label overrides ``{name: 0 | 1 | None}`` on top of the default map.
        fmt: ``auto`` or a layout name (``skinlesion prepare --help`` lists them).
        workers: Resizing processes (default: every core; 1 runs in this process).
        strict: Any rejected row is an error.
        progress: Gets ``ProgressEvent``\ s (counts of ``"reading"`` and ``"resizing"``);
            ``print`` shows them as lines.

    Returns:
        The :class:`PreparedData`.

    Raises:
        SourceError: if a source cannot be read at all.
        PrepareError: with ``strict``, if any row was rejected.
    """
    from skinlesion.data.prepare import PrepareSettings
    from skinlesion.data.prepare import prepare as _prepare

    kwargs: dict[str, Any] = {"seed": seed, "fmt": fmt, "workers": workers, "strict": strict,
                              "folds": folds, "label_map": dict(label_map or {})}
    if size is not None:
        kwargs["size"] = size
    if fractions is not None:
        kwargs["fractions"] = tuple(fractions)
    src = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    result = _prepare(src, out, PrepareSettings(**kwargs), progress=progress)
    return PreparedData._from_result(Path(os.fspath(out)), result)


# === Runs ===


@dataclass
class Run:
    """A training run directory (``model.keras``, ``model_spec.json``, ``config.yaml``, ...).

    Attributes:
        path: The run folder, as given.
        spec: Its ``model_spec.json`` (backbone, input size, threshold and how it was chosen,
            validation metrics).
        config: The resolved training config (``config.yaml``) in its nested layout
            (``config["stages"]["head_epochs"]``; runs saved flat by earlier versions are
            shown nested too), or ``{}``.
        history: Per-epoch metrics (``history.csv``; ``stage`` says head or fine-tuning).
        result: What ``train`` returned (timings, peak memory) when this object came from
            :func:`train`; ``None`` when opened from disk.
    """

    path: Path
    spec: ModelSpec = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    history: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    result: TrainResult | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: PathLike) -> Run:
        """Read a finished run.

        Raises:
            RunError: if the folder lacks ``model.keras`` or ``model_spec.json``.
        """
        from skinlesion.runspec import read_training_config

        run = require_run(path)
        hist = run / HISTORY_FILE
        history = pd.read_csv(hist) if hist.is_file() else pd.DataFrame()
        return cls(Path(os.fspath(path)), ModelSpec.load(run),
                   _nested_config(read_training_config(run) or {}), history)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def threshold(self) -> float:
        """The stored operating threshold on P(malignant)."""
        return float(self.spec.threshold)

    @property
    def val_metrics(self) -> dict[str, Any]:
        """Validation metrics at the stored threshold (``roc_auc``, ``sensitivity``, ...)."""
        return dict(self.spec.val_metrics)

    @property
    def evaluation(self) -> Evaluation | None:
        """The last evaluation written to ``RUN/eval`` (by ``sl.evaluate`` or the CLI), if any."""
        if not (self.path / EVAL_DIR / "metrics.json").is_file():
            return None
        return Evaluation.open(self.path / EVAL_DIR)

    def plot_history(self, metric: str = "auc", *, ax: Axes | None = None) -> HistoryDisplay:
        """Train and validation curves of ``metric`` per epoch (stage changes marked).

        Args:
            metric: ``auc``, ``loss``, ``pr_auc``, ``precision``, ``recall`` or ``accuracy``.
            ax: Axes to draw on (a new figure if ``None``).

        Returns:
            The :class:`~skinlesion.display.HistoryDisplay`.
        """
        from skinlesion.display import HistoryDisplay

        return HistoryDisplay.from_history(self.history, metric, ax=ax)

    def load(self) -> Predictor:
        """Load the model for prediction (same as ``sl.load(run)``)."""
        return load(self)

    def evaluate(self, data: PathLike | PreparedData, **kwargs: Any) -> Evaluation:
        """Evaluate on a prepared data folder (same as ``sl.evaluate(run, data, ...)``)."""
        return evaluate(self, data, **kwargs)

    def export(self, fmt: str = "tflite", **kwargs: Any) -> ExportResult:
        """Export for phones or servers with a parity check (``skinlesion export``).

        Args:
            fmt: ``savedmodel``, ``tflite`` or ``onnx``.
            **kwargs: Passed to :func:`skinlesion.workflows.export.export_run`
                (``quantize``, ``out``, ``check_images``, ``check_count``, ...).

        Returns:
            The export result (folder, size, parity against the Keras model).
        """
        from skinlesion.workflows.export import export_run

        return export_run(self.path, fmt, **kwargs)

    def app(self, **kwargs: Any) -> Any:
        """The HTTP service for this run as an ASGI app (``skinlesion serve`` without uvicorn).

        Use it in-process with ``fastapi.testclient.TestClient(run.app())`` or serve it
        with ``uvicorn.run(run.app())``.

        Args:
            **kwargs: Passed to :func:`skinlesion.service.app.create_app`.
        """
        from skinlesion.service.app import create_app

        return create_app(self.path, **kwargs)

    def _repr_html_(self) -> str:
        from skinlesion.display import escape, history_figure, html_table, img_tag

        s, v = self.spec, self.spec.val_metrics
        c = self.config
        rows: list[tuple[str, Any]] = [
            ("backbone", f"{s.backbone} at {s.input_size} px"),
            ("training", ", ".join(f"{key.rpartition('.')[2]} {value}"
                                   for key, value in _config_glance(c)) or "—"),
            ("threshold", f"{s.threshold:.3f} — {s.threshold_rule}"),
            ("validation", f"ROC AUC {_f(v.get('roc_auc'))}, sensitivity "
                           f"{_f(v.get('sensitivity'))}, specificity {_f(v.get('specificity'))} "
                           f"at the threshold ({v.get('n', '?')} images)"),
            ("best epoch", v.get("best_epoch", "—")),
            ("model id", s.model_id or "—"),
        ]
        if self.result is not None and self.result.timings.get("total_s"):
            rows.append(("training time", f"{self.result.timings['total_s']:.0f} s"))
        curves = ""
        if not self.history.empty:
            curves = img_tag(history_figure(self.history), alt="training curves")
        return (f"<div><b>Run</b> {escape(self.path.as_posix())}" + html_table(rows) + curves
                + "</div>")

    def __repr__(self) -> str:
        return (f"Run({self.path.as_posix()!r}, backbone={self.spec.backbone!r}, "
                f"val_auc={_f(self.spec.val_metrics.get('roc_auc'))}, "
                f"threshold={self.spec.threshold:.3f})")


def _nested_config(raw: dict[str, Any]) -> dict[str, Any]:
    """``config.yaml`` in the nested layout, also for a run saved flat by an earlier version."""
    from skinlesion.training.config import dotted_overrides, nest

    try:
        return nest(dotted_overrides(raw))
    except ValueError:  # keys this version does not know: show the file as it is
        return raw


def _config_glance(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of the config fields worth a glance, for the run's mode."""
    stages = config.get("stages")
    stages = stages if isinstance(stages, Mapping) else {}
    if stages.get("mode") == "frozen":
        if not stages.get("cache_features", True):  # recomputed every epoch: no feature views
            keys: tuple[str, ...] = ("stages.mode", "stages.cache_features", "stages.head_epochs",
                                     "optim.optimizer", "objective.imbalance", "objective.loss")
        else:
            keys = ("stages.mode", "stages.cache_features", "stages.feature_views",
                    "stages.head_epochs", "objective.imbalance", "objective.loss")
    else:
        keys = ("stages.mode", "stages.head_epochs", "stages.finetune_epochs",
                "stages.unfreeze_groups", "optim.optimizer", "objective.imbalance",
                "objective.loss")
    out = []
    for key in keys:
        section, name = key.split(".")
        block = config.get(section)
        if isinstance(block, Mapping) and name in block:
            out.append((key, block[name]))
    return out


def _f(value: Any, digits: int = 3) -> str:
    from skinlesion.display import fmt_number

    return fmt_number(value, digits)


def train(data: PathLike | PreparedData, out: PathLike, *, recipe: str | None = None,
          config: PathLike | None = None, resume: bool = False, overwrite: bool = False,
          verbose: int = 0, progress: Progress | None = None,
          **overrides: Any) -> Run:
    r"""Train a classifier and write the run directory (``skinlesion train``).

    Args:
        data: A prepared data folder (or :class:`PreparedData`).
        out: The run directory to write.
        recipe: Named recipe: ``finetune`` (default), ``frozen``, ``tutorial1``, ``tutorial2``.
        config: A YAML config; ``recipe`` and ``overrides`` override it.
        resume: Continue an interrupted run in ``out``.
        overwrite: Replace a run in ``out``.
        verbose: Keras ``fit`` verbosity (0 silent, 1 bar, 2 a line per epoch). Defaults to 0.
        progress: Gets ``ProgressEvent``\ s: step messages and the feature pass's counts
            (``print`` shows them as lines).
        **overrides: Any :class:`~skinlesion.training.config.TrainConfig` field by its
            flat name (``mode="frozen"``, ``head_epochs=30``, ``input_size=128``,
            ``backbone=...``), or a whole section as a dict (``augment={"rotation_deg": 30}``,
            ``stages={"mode": "frozen", "head_epochs": 30}``).

    Returns:
        The :class:`Run` (with ``result`` holding timings and peak memory).

    Raises:
        ValueError: on an unknown recipe, config key or value (naming it).
        RunExistsError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        TrainingDivergedError: the loss became NaN/Inf.
    """
    from skinlesion.training.config import load_config, merge_overrides, recipe_overrides
    from skinlesion.training.trainer import train as _train

    if config is None and resume and (Path(os.fspath(out)) / CONFIG_FILE).is_file():
        config = Path(os.fspath(out)) / CONFIG_FILE
    cfg = load_config(config, merge_overrides(
        recipe_overrides(recipe) if recipe else {}, overrides,
        {"data_dir": os.fspath(_path(data)), "out": os.fspath(out)}))
    if cfg.model.backbone:
        from skinlesion.models.registry import get_backbone

        get_backbone(cfg.model.backbone)  # unknown names fail here, listing the valid ones
    result = _train(cfg, resume=resume, overwrite=overwrite, verbose=verbose, progress=progress)
    run = Run.open(out)
    run.result = result
    return run


def ensemble(runs: Sequence[PathLike | Run], out: PathLike, data: PathLike | PreparedData, *,
             target_sensitivity: float = 0.90, overwrite: bool = False) -> Run:
    """Average several runs into one run directory (``skinlesion ensemble``).

    Args:
        runs: Two or more finished runs (backbones and input sizes may differ).
        out: The ensemble's run directory.
        data: Prepared data whose validation split fits the ensemble's threshold.
        target_sensitivity: Validation sensitivity the threshold must reach. Defaults to 0.90.
        overwrite: Replace a run in ``out``.

    Returns:
        The ensemble as a :class:`Run` (evaluate, load, compare and export it like any run).

    Raises:
        RunError: fewer than two runs, runs that cannot be combined, or ``out`` holding a run.
    """
    from skinlesion.workflows.ensemble import build_ensemble

    build_ensemble([_path(r) for r in runs], out, data_dir=_path(data),
                   target_sensitivity=target_sensitivity, overwrite=overwrite)
    return Run.open(out)


def load(run: PathLike | Run) -> Predictor:
    """Load a finished run for prediction.

    Args:
        run: A run folder or :class:`Run`.

    Returns:
        A :class:`skinlesion.inference.interactive.Predictor`: the CLI's and the service's
        predictor, plus ``predict(image)`` returning a displayable
        :class:`~skinlesion.inference.interactive.Prediction`.

    Raises:
        RunError: if the folder is not a finished run or the model cannot be loaded.
    """
    from skinlesion.inference.interactive import Predictor

    return Predictor.from_run(_path(run))


# === Evaluation ===


@dataclass
class Evaluation:
    """An evaluation of a run on one split: metrics, per-image predictions and figures.

    Attributes:
        metrics: Everything ``metrics.json`` holds (see docs/EVALUATION.md).
        predictions: One row per scored image (``image_id``, ``label``, ``probability``,
            ``decision``, subgroup columns).
        errors: Images that could not be scored, with the reason.
        path: The folder written (``RUN/eval`` by default), or None.
        result: The underlying :class:`~skinlesion.evaluation.metrics.EvalResult` (with the
            bootstrap ROC band) when computed in this session; None when opened from disk.
    """

    metrics: dict[str, Any] = field(repr=False)
    predictions: pd.DataFrame = field(repr=False)
    errors: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    path: Path | None = None
    result: EvalResult | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: PathLike) -> Evaluation:
        """Read an evaluation folder written by ``sl.evaluate`` or ``skinlesion evaluate``.

        Args:
            path: The folder holding ``metrics.json`` and ``predictions.csv`` (or a run,
                whose ``eval/`` is read).

        Raises:
            FileNotFoundError: if ``metrics.json`` is missing.
        """
        folder = Path(os.fspath(path))
        if not (folder / "metrics.json").is_file() and (folder / EVAL_DIR / "metrics.json").is_file():
            folder = folder / EVAL_DIR
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            raise FileNotFoundError(f"{metrics_file}: no evaluation here; run sl.evaluate first")
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        preds = pd.read_csv(folder / "predictions.csv", keep_default_na=False,
                            dtype={"image_id": str})
        errors_file = folder / "errors.csv"
        errors = pd.read_csv(errors_file) if errors_file.is_file() else pd.DataFrame()
        return cls(metrics, preds, errors, folder)

    @classmethod
    def _from_result(cls, result: EvalResult) -> Evaluation:
        return cls(result.metrics, result.predictions, result.errors, result.out_dir, result)

    # --- headline numbers ---

    @property
    def threshold(self) -> float:
        """The operating threshold the decisions were made at."""
        return float(self.metrics["operating_point"]["threshold"])

    @property
    def auc(self) -> float | None:
        """ROC AUC computed from probabilities (None if one class is absent)."""
        return self.metrics["ranking"].get("roc_auc")

    @property
    def auc_ci(self) -> tuple[float, float] | None:
        """95 % stratified-bootstrap CI of the ROC AUC (None without bootstrap)."""
        ci = self.metrics["ranking"].get("roc_auc_ci95")
        return (float(ci[0]), float(ci[1])) if ci else None

    @property
    def sensitivity(self) -> float | None:
        """Sensitivity (recall of malignant) at the operating threshold."""
        return self.metrics["at_threshold"].get("sensitivity")

    @property
    def specificity(self) -> float | None:
        """Specificity (recall of benign) at the operating threshold."""
        return self.metrics["at_threshold"].get("specificity")

    @property
    def report_path(self) -> Path | None:
        """The self-contained ``report.html`` (None if not written)."""
        if self.path is None or not (self.path / "report.html").is_file():
            return None
        return self.path / "report.html"

    def summary(self) -> pd.Series:
        """The headline metrics as a Series (for side-by-side tables of several runs)."""
        at, rk = self.metrics["at_threshold"], self.metrics["ranking"]
        ci = self.auc_ci or (None, None)
        s95 = self.metrics.get("fixed_rates", {}).get("specificity_at_sensitivity_0.95") or {}
        return pd.Series({
            "n": self.metrics["counts"]["n"], "malignant": self.metrics["counts"]["n_positive"],
            "roc_auc": rk.get("roc_auc"), "auc_ci_low": ci[0], "auc_ci_high": ci[1],
            "average_precision": rk.get("average_precision"), "threshold": self.threshold,
            "sensitivity": at.get("sensitivity"), "specificity": at.get("specificity"),
            "ppv": at.get("ppv"), "spec_at_sens95": s95.get("specificity"),
        })

    # --- plots (each takes ax= and returns what sklearn's displays return) ---

    def _yp(self) -> tuple[Any, Any]:
        return (self.predictions["label"].to_numpy(dtype=int),
                self.predictions["probability"].to_numpy(dtype=float))

    def plot_roc(self, *, ax: Axes | None = None) -> RocCurveDisplay:
        """ROC curve with the bootstrap band (when computed here) and the operating point."""
        from skinlesion.evaluation.plots import plot_roc

        y, p = self._yp()
        curves = self.result.curves if self.result is not None else {}
        return plot_roc(y, p, self.threshold, band=curves.get("roc_band"),
                        operating_ci=curves.get("operating_ci"), auc_ci=self.auc_ci, ax=ax)

    def plot_confusion_matrix(self, *, ax: Axes | None = None) -> ConfusionMatrixDisplay:
        """Confusion matrix at the operating threshold, normalised by true class."""
        from skinlesion.evaluation.plots import plot_confusion_matrix

        y, p = self._yp()
        names = self.metrics.get("run", {}).get("class_names") or ("benign", "malignant")
        return plot_confusion_matrix(y, p, self.threshold, class_names=tuple(names), ax=ax)

    def plot_precision_recall(self, *, ax: Axes | None = None) -> Any:
        """Precision–recall curve with the prevalence baseline (a ``PrecisionRecallDisplay``)."""
        from skinlesion.evaluation.plots import plot_precision_recall

        y, p = self._yp()
        return plot_precision_recall(y, p, self.threshold, ax=ax)

    def plot_calibration(self, *, n_bins: int = 10, ax: Axes | None = None) -> Any:
        """Reliability diagram (a ``CalibrationDisplay``)."""
        from skinlesion.evaluation.plots import plot_reliability

        y, p = self._yp()
        return plot_reliability(y, p, n_bins=n_bins, ax=ax)

    def plot_scores(self, *, ax: Axes | None = None) -> Axes:
        """Histograms of P(malignant) per true class, with the threshold."""
        from skinlesion.evaluation.plots import plot_score_histograms

        y, p = self._yp()
        return plot_score_histograms(y, p, self.threshold, ax=ax)

    def plot_thresholds(self, *, ax: Axes | None = None) -> Axes:
        """Sensitivity and specificity as functions of the threshold."""
        from skinlesion.evaluation.plots import plot_threshold_curves

        y, p = self._yp()
        return plot_threshold_curves(y, p, self.threshold, ax=ax)

    def figure(self) -> Figure:
        """ROC, confusion matrix and score histograms side by side (what ``_repr_html_`` shows)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(15, 4.2), layout="constrained")
        axes = fig.subplots(1, 3)
        y, _ = self._yp()
        if 0 < y.sum() < len(y):
            self.plot_roc(ax=axes[0])
        else:
            axes[0].text(0.5, 0.5, "ROC needs both classes", ha="center")
            axes[0].set_axis_off()
        self.plot_confusion_matrix(ax=axes[1])
        self.plot_scores(ax=axes[2])
        return fig

    def _repr_html_(self) -> str:
        from skinlesion.display import escape, fmt_ci, html_table, img_tag

        m, at, op = self.metrics, self.metrics["at_threshold"], self.metrics["operating_point"]
        counts = m["counts"]
        split = m.get("data", {}).get("split", "?")
        rows: list[tuple[str, Any]] = [
            ("images", f"{counts['n']} scored, {counts['n_positive']} malignant "
                       f"({100 * (counts.get('prevalence') or 0):.1f} %)"
                       + (f"; {m['errors']['count']} unreadable" if m.get("errors", {}).get("count")
                          else "")),
            ("ROC AUC", f"{_f(self.auc)} (95 % CI {fmt_ci(self.auc_ci)})"),
            ("threshold", f"{op['threshold']:.3f} — {op.get('description', op.get('rule', ''))}"),
            ("sensitivity", f"{_f(at.get('sensitivity'))} (95 % CI "
                            f"{fmt_ci(at.get('sensitivity_ci95'))})"),
            ("specificity", f"{_f(at.get('specificity'))} (95 % CI "
                            f"{fmt_ci(at.get('specificity_ci95'))})"),
            ("average precision", _f(m["ranking"].get("average_precision"))),
        ]
        warning = op.get("warning")
        warn_html = f'<p style="color:#b9770e">warning: {escape(warning)}</p>' if warning else ""
        return (f"<div><b>Evaluation</b> on the {escape(split)} split" + html_table(rows)
                + warn_html + img_tag(self.figure(), alt="ROC, confusion matrix, scores")
                + f'<br/><small style="color:#666">{escape(INTENDED_USE)}</small></div>')

    def __repr__(self) -> str:
        from skinlesion.display import fmt_ci

        return (f"Evaluation(n={self.metrics['counts']['n']}, roc_auc={_f(self.auc)} "
                f"[{fmt_ci(self.auc_ci)}], sensitivity={_f(self.sensitivity)}, "
                f"specificity={_f(self.specificity)}, threshold={self.threshold:.3f})")


def evaluate(run: PathLike | Run, data: PathLike | PreparedData, *, split: str = "test",
             threshold: str | float = "stored", tta: int = 1, bootstrap: int = 1000,
             out: PathLike | None = None, seed: int = 0, batch_size: int = 32,
             predictor: Predictor | None = None) -> Evaluation:
    """Score a run on a manifest split and write metrics, plots and the report (``skinlesion evaluate``).

    Args:
        run: A finished run folder or :class:`Run`.
        data: The prepared data folder (or :class:`PreparedData`).
        split: ``test`` (default), ``val``, ``train`` or ``all``.
        threshold: ``stored`` (the run's, chosen on validation), ``youden``, ``sens=0.95``
            or a number. ``youden`` and ``sens=`` are fitted on the validation split, never
            on the scored images.
        tta: Dihedral test-time-augmentation views (1, 2, 4, 8). Defaults to 1.
        bootstrap: Stratified bootstrap replicates for the 95 % CIs (0 = none). Defaults to
            1000 (the CLI's 2000 is slower in a notebook for little gain).
        out: Output folder (default ``RUN/eval``).
        seed: Bootstrap seed.
        batch_size: Images per forward pass.
        predictor: An already loaded predictor of ``run`` (skips loading it again).

    Returns:
        The :class:`Evaluation`.

    Raises:
        RunError: if ``run`` is not a finished run.
        ManifestError: if the manifest is missing or invalid.
        ValueError: on an unknown split, an empty split or an unusable threshold rule.
    """
    from skinlesion.workflows.evaluate import evaluate_run

    result = evaluate_run(_path(run), _path(data), split=split, threshold=threshold, tta=tta,
                          bootstrap=bootstrap, out=out, seed=seed, batch_size=batch_size,
                          predictor=predictor)
    return Evaluation._from_result(result)


# === Comparison ===


@dataclass
class Comparison:
    """Several runs scored on the same images, with paired DeLong tests of their AUCs.

    Attributes:
        comparison: What ``compare.json`` holds (per-model metrics, pairwise tests).
        predictions: ``image_id``, ``label`` and one ``p_<name>`` column per run.
        path: The folder written.
    """

    comparison: dict[str, Any] = field(repr=False)
    predictions: pd.DataFrame = field(repr=False)
    path: Path | None = None

    @classmethod
    def _from_result(cls, result: CompareResult) -> Comparison:
        return cls(result.comparison, result.predictions, result.out_dir)

    def table(self) -> pd.DataFrame:
        """One row per run: AUC with CI, sensitivity/specificity at its threshold."""
        rows = []
        for name, m in self.comparison["models"].items():
            ci = m.get("roc_auc_ci95") or (None, None)
            s95 = m.get("fixed_rates", {}).get("specificity_at_sensitivity_0.95") or {}
            rows.append({"run": name, "roc_auc": m.get("roc_auc"), "auc_ci_low": ci[0],
                         "auc_ci_high": ci[1], "threshold": m.get("threshold"),
                         "sensitivity": m["at_threshold"].get("sensitivity"),
                         "specificity": m["at_threshold"].get("specificity"),
                         "spec_at_sens95": s95.get("specificity")})
        return pd.DataFrame(rows).set_index("run")

    def tests(self) -> pd.DataFrame:
        """Pairwise DeLong tests: AUC difference, its 95 % CI and p-value."""
        rows = []
        for pair in self.comparison.get("pairs", []):
            d = pair.get("delong") or {}
            ci = d.get("ci") or (None, None)
            rows.append({"a": pair["a"], "b": pair["b"], "auc_difference": d.get("difference"),
                         "ci_low": ci[0], "ci_high": ci[1], "p_value": d.get("p_value")})
        return pd.DataFrame(rows, columns=["a", "b", "auc_difference", "ci_low", "ci_high",
                                           "p_value"])

    def plot_roc(self, *, ax: Axes | None = None) -> list[RocCurveDisplay]:
        """The runs' ROC curves overlaid on one axes (one ``RocCurveDisplay`` per run)."""
        from skinlesion.evaluation.plots import plot_roc_comparison

        probs = {c[2:]: self.predictions[c].to_numpy(dtype=float)
                 for c in self.predictions.columns if c.startswith("p_")}
        return plot_roc_comparison(self.predictions["label"].to_numpy(dtype=int), probs, ax=ax)

    def _repr_html_(self) -> str:
        from skinlesion.display import img_tag

        fig = self.plot_roc()[0].figure_
        n = self.comparison.get("counts", {}).get("n", len(self.predictions))
        return (f"<div><b>Comparison</b> on {n} shared images"
                + self.table().to_html(float_format=lambda v: f"{v:.3f}", na_rep="—")
                + self.tests().to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="—")
                + img_tag(fig, alt="ROC curves") + "</div>")

    def __repr__(self) -> str:
        aucs = ", ".join(f"{name}={_f(m.get('roc_auc'))}"
                         for name, m in self.comparison["models"].items())
        return f"Comparison({aucs})"


def compare(runs: Sequence[PathLike | Run], data: PathLike | PreparedData, *,
            split: str = "test", threshold: str = "stored", tta: int = 1,
            bootstrap: int = 1000, out: PathLike | None = None, seed: int = 0) -> Comparison:
    """Compare runs on the same images (``skinlesion compare``): metrics side by side, DeLong tests.

    Args:
        runs: Two or more finished runs.
        data: The prepared data folder.
        split: Manifest split to score. Defaults to ``test``.
        threshold: Rule for each run's threshold (see :func:`evaluate`).
        tta: Dihedral TTA views.
        bootstrap: Replicates for the AUC CIs.
        out: Output folder (default ``<first run>/eval/compare``).
        seed: Bootstrap seed.

    Returns:
        The :class:`Comparison`.

    Raises:
        ValueError: with fewer than two runs, or on an unusable split or rule.
    """
    from skinlesion.workflows.compare import compare_runs

    if len(runs) < 2:
        raise ValueError("compare needs at least two runs")
    result = compare_runs([_path(r) for r in runs], _path(data), split=split, threshold=threshold,
                          tta=tta, bootstrap=bootstrap, out=out, seed=seed)
    return Comparison._from_result(result)

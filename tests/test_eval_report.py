"""Plots (Agg), the HTML report (strictly valid, every figure inline) and how a browser shows it."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from skinlesion import INTENDED_USE
from skinlesion.evaluation import plots
from skinlesion.evaluation.bootstrap import stratified_bootstrap
from skinlesion.evaluation.evaluate import evaluate_predictions, write_evaluation
from skinlesion.evaluation.report import caveats, render_compare

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# === A strict HTML check (balanced tags, sane nesting) ===

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
NO_BLOCK_INSIDE = {"p", "span", "strong", "code", "summary", "dt", "h1", "h2", "h3", "td", "th"}
BLOCK = {"div", "section", "table", "ul", "ol", "dl", "figure", "p", "h1", "h2", "h3", "header",
         "footer", "main", "details", "pre"}
PARENTS = {"tr": {"thead", "tbody", "tfoot", "table"}, "td": {"tr"}, "th": {"tr"},
           "thead": {"table"}, "tbody": {"table"}, "li": {"ul", "ol"}, "dt": {"dl"},
           "dd": {"dl"}, "summary": {"details"}, "figcaption": {"figure"},
           "head": {"html"}, "body": {"html"}}


class StrictHTML(HTMLParser):
    """Collects errors: unbalanced or misnested tags, bad parents, duplicate ids, bad images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.doctype = False
        self.images: list[dict[str, str | None]] = []

    def _where(self) -> str:
        return f"line {self.getpos()[0]}"

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        parent = self.stack[-1] if self.stack else None
        if tag in PARENTS and parent not in PARENTS[tag]:
            self.errors.append(f"<{tag}> inside <{parent}> at {self._where()}")
        if tag in BLOCK and parent in NO_BLOCK_INSIDE:
            self.errors.append(f"block <{tag}> inside <{parent}> at {self._where()}")
        if "id" in a:
            if a["id"] in self.ids:
                self.errors.append(f"duplicate id {a['id']!r}")
            self.ids.add(str(a["id"]))
        if tag == "img":
            self.images.append(a)
            if not a.get("alt"):
                self.errors.append(f"<img> without alt at {self._where()}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.errors.append(f"self-closing <{tag}/> at {self._where()}")
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag </{tag}> for a void element at {self._where()}")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> "
                               f"at {self._where()}")
        else:
            self.stack.pop()


def assert_valid_html(html: str) -> StrictHTML:
    """Parse ``html`` strictly; fail listing every problem. Returns the parser (images, ids)."""
    parser = StrictHTML()
    parser.feed(html)
    parser.close()
    problems = list(parser.errors)
    if parser.stack:
        problems.append(f"unclosed: {parser.stack}")
    if not parser.doctype:
        problems.append("no <!DOCTYPE html>")
    for needle in ('<html lang="en">', '<meta charset="utf-8">', "<title>"):
        if needle not in html:
            problems.append(f"missing {needle}")
    assert not problems, "\n".join(problems[:20])
    return parser


def inline_pngs(parser: StrictHTML) -> list[bytes]:
    """Decoded bytes of every ``data:image/png;base64`` image."""
    out = []
    for img in parser.images:
        src = str(img.get("src") or "")
        assert src.startswith("data:image/png;base64,"), f"image not inline: {src[:60]}"
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


# === Data ===


def synthetic_predictions(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.4).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.18), 0, 1)
    return pd.DataFrame({
        "image_id": [f"ISIC_{i:07d}" for i in range(n)], "label": y, "probability": p,
        "source": rng.choice(["HAM10000", "ISIC2017-train", "ISIC2016"], n, p=[0.6, 0.37, 0.03]),
        "sex": rng.choice(["male", "female", ""], n), "age": rng.choice([25, 45, 62, 80, np.nan], n),
        "site": "",
    })


@pytest.fixture(scope="module")
def synthetic_eval(tmp_path_factory: pytest.TempPathFactory):
    """A written evaluation of synthetic predictions (no model): the report's inputs."""
    df = synthetic_predictions()
    errors = pd.DataFrame([{"image_id": "ISIC_bad", "path": "images/ISIC_bad.jpg", "label": 1,
                            "error": "truncated <JPEG> & unreadable"}])
    result = evaluate_predictions(df, 0.5, bootstrap=300, seed=0, errors=errors,
                                  operating_point={"rule": "youden", "chosen_on": "val",
                                                   "description": "maximises Youden's J"})
    result.metrics["run"] = {"backbone": "efficientnet_lite0", "input_size": 224,
                             "preprocessing": "none", "model_id": "abc123",
                             "training_config": {"epochs": 3, "augment": {"flip": True}}}
    return write_evaluation(result, tmp_path_factory.mktemp("eval"))


# === Plots ===


def _ys() -> tuple[np.ndarray, np.ndarray]:
    df = synthetic_predictions(200, seed=1)
    return df["label"].to_numpy(), df["probability"].to_numpy()


@pytest.mark.parametrize("fn", [plots.plot_precision_recall, plots.plot_confusion_matrix,
                                plots.plot_score_histograms, plots.plot_threshold_curves])
def test_plots_draw_on_given_axes_and_render(fn) -> None:
    y, p = _ys()
    fig = Figure()
    ax = fig.add_subplot()
    out = fn(y, p, 0.5, ax=ax)
    assert getattr(out, "ax_", out) is ax
    assert ax.get_title(loc="left")
    assert ax.lines or ax.patches or ax.images
    assert plots.figure_png(fig).startswith(PNG_MAGIC)


def test_roc_plot_marks_operating_point_and_band() -> None:
    y, p = _ys()
    boot = stratified_bootstrap(y, p, threshold=0.5, n_boot=200, roc_points=51)
    display = plots.plot_roc(y, p, 0.5, band=boot.roc_band(), operating_ci=boot.summary(),
                             auc_ci=boot.auc_ci)
    ax = display.ax_
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("95 % CI" in t for t in labels) and any("threshold 0.5" in t for t in labels)
    assert any("bootstrap band" in t for t in labels)
    sens = (p[y == 1] >= 0.5).mean()
    marker = next(line for line in ax.lines if line.get_marker() == "o")
    assert marker.get_ydata()[0] == pytest.approx(sens)
    assert plots.figure_png(display.figure_).startswith(PNG_MAGIC)


def test_confusion_matrix_is_row_normalised_with_counts() -> None:
    y, p = _ys()
    display = plots.plot_confusion_matrix(y, p, 0.5)
    np.testing.assert_allclose(display.confusion_matrix.sum(axis=1), [1.0, 1.0])
    assert "images)" in display.text_[1, 1].get_text()


def test_reliability_and_subgroup_plots() -> None:
    y, p = _ys()
    display = plots.plot_reliability(y, p)
    assert display.ax_.get_title(loc="left") == "Reliability diagram"
    df = synthetic_predictions()
    result = evaluate_predictions(df, 0.5, bootstrap=50)
    ax = plots.plot_subgroup_auc(result.metrics["subgroups"], 0.8)
    n_groups = sum(len(g["groups"]) for g in result.metrics["subgroups"]["groupings"].values())
    assert len(ax.get_yticklabels()) == n_groups


def test_error_gallery_shows_thumbnails_placeholders_and_empty(tmp_path: Path) -> None:
    from conftest import make_image

    good = make_image(tmp_path / "a.jpg", size=(80, 60), color=(200, 40, 40))
    errors = pd.DataFrame({"image_id": ["a", "missing"], "path": [str(good), str(tmp_path / "x")],
                           "label": [1, 0], "probability": [0.02, 0.97], "kind": ["FN", "FP"]})
    fig = plots.plot_error_gallery(errors, n=4, columns=2)
    axes = [ax for ax in fig.axes if ax.images or ax.texts]
    assert len(axes[0].images) == 1 and axes[0].get_title().startswith("FN")
    assert "cannot open" in axes[1].texts[0].get_text()
    empty = plots.plot_error_gallery(errors.iloc[:0])
    assert "No errors" in empty.axes[0].texts[0].get_text()


# === The report ===


def test_report_is_valid_html_and_holds_every_figure(synthetic_eval) -> None:
    html = synthetic_eval.report_path.read_text(encoding="utf-8")
    parser = assert_valid_html(html)
    pngs = inline_pngs(parser)
    written = sorted(p for p in synthetic_eval.out_dir.glob("*.png"))
    assert len(pngs) == len(written) == 8
    for path in written:  # every PNG on disk is embedded byte for byte
        assert path.read_bytes() in pngs
    for png in pngs:
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 150
    assert "src=\"http" not in html and "<link" not in html  # self-contained


def test_report_content_model_card_metrics_and_escaping(synthetic_eval) -> None:
    html = synthetic_eval.report_path.read_text(encoding="utf-8")
    m = synthetic_eval.metrics
    assert INTENDED_USE in html and html.index(INTENDED_USE) < html.index("Model card")
    for text in ("efficientnet_lite0", "224 × 224", "abc123", "maximises Youden",
                 "augment.flip", "Source dataset",
                 "Specificity at sensitivity ≥ 95 %", "Reliability diagram", "Caveats",
                 "too small", "HAM10000"):
        assert text in html, text
    assert f"{m['ranking']['roc_auc']:.3f}" in html
    lo, hi = m["ranking"]["roc_auc_ci95"]
    assert f"{lo:.3f}–{hi:.3f}" in html
    # The unreadable image is listed, its message escaped.
    assert "ISIC_bad" in html and "truncated &lt;JPEG&gt; &amp; unreadable" in html
    assert not re.search(r">\s*(None|nan|NaN)\s*<", html)


def test_report_metrics_json_and_predictions_csv(synthetic_eval) -> None:
    from sklearn.metrics import roc_auc_score

    out = synthetic_eval.out_dir
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns[:4]) == ["image_id", "label", "probability", "decision"]
    assert m["ranking"]["roc_auc"] == pytest.approx(roc_auc_score(pred["label"], pred["probability"]))
    assert (out / "errors.csv").is_file() and m["errors"]["count"] == 1
    assert set(m["files"]) >= {"report", "metrics", "predictions", "roc", "error_gallery"}


def test_caveats_are_derived_from_the_numbers(synthetic_eval) -> None:
    notes = caveats(synthetic_eval.metrics)
    text = " ".join(notes)
    assert "clinical prevalence" in text and "1.8 %" in text and "projection" in text
    assert "Sources differ" in text and "ISIC2016" in text  # tiny source named
    assert "could not be read" in text


def test_compare_report_renders_valid_html() -> None:
    from skinlesion.evaluation.compare import compare_predictions

    df = synthetic_predictions(200, seed=3)
    y = df["label"].to_numpy()
    p2 = np.clip(df["probability"] + np.random.default_rng(0).normal(0, 0.1, 200), 0, 1)
    comp = compare_predictions(y, {"run_a": df["probability"], "run_b": p2},
                               {"run_a": 0.5, "run_b": 0.5}, bootstrap=100)
    fig = plots.plot_roc_comparison(y, {"run_a": df["probability"], "run_b": p2})[0].figure_
    html = render_compare(comp, {"roc_comparison": plots.figure_png(fig)})
    parser = assert_valid_html(html)
    assert len(inline_pngs(parser)) == 1
    assert "run_a − run_b" in html and "DeLong" in html and INTENDED_USE in html


# === Looked at as a person would: headless Chromium ===


def _chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return {w: i.naturalWidth, h: i.naturalHeight, shown: r.width,
            x: r.left + window.scrollX, y: r.top + window.scrollY, rw: r.width, rh: r.height};
  });
  const pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify({imgs, height: document.body.scrollHeight});
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.browser
def test_report_in_headless_chromium(synthetic_eval, chromium: str, tmp_path: Path) -> None:
    report = synthetic_eval.report_path
    # 1. Every figure decodes and is laid out with a real width in the browser.
    probe = tmp_path / "probe.html"
    html = report.read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    window = "--window-size=1280,4000"
    dom = _chromium(chromium, tmp_path, "--virtual-time-budget=10000", "--hide-scrollbars",
                    window, "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    info = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(info["imgs"]) == 8
    assert all(i["w"] > 300 and i["h"] > 150 and i["shown"] > 200 for i in info["imgs"]), info
    assert info["height"] > 4000  # a long report, not a stub
    # 2. The screenshot shows a page: not blank, with the plots' colours in it.
    shot = tmp_path / "shot.png"
    res = _chromium(chromium, tmp_path, f"--screenshot={shot}", window, "--hide-scrollbars",
                    report.as_uri())
    assert shot.is_file(), res.stderr[-2000:]
    with Image.open(shot) as im:
        page = im.convert("RGB")
    px = np.asarray(page).astype(int)
    assert px.shape[:2] == (4000, 1280)
    non_white = (px.sum(axis=2) < 700).mean()  # darker than the #f5f7fa page
    assert non_white > 0.08, f"only {non_white:.1%} of the page is drawn"
    # Header bar (#1f2933) at the top, red curves and the blue confusion matrix below.
    assert np.abs(px[10, 640] - [31, 41, 51]).max() < 10
    red = (np.abs(px - [192, 57, 43]).max(axis=2) < 25).sum()
    blue = (np.abs(px - [46, 134, 193]).max(axis=2) < 25).sum()
    assert red > 2000 and blue > 500, (red, blue)
    # 3. Where the browser placed each figure, the screenshot shows that figure.
    pngs = inline_pngs(assert_valid_html(html))
    compared = 0
    for img, png in zip(info["imgs"], pngs, strict=True):
        x, y, w, h = (round(img[k]) for k in ("x", "y", "rw", "rh"))
        if y + h > px.shape[0]:
            continue  # below the fold of the 4000 px screenshot
        shown = np.asarray(page.crop((x, y, x + w, y + h)).convert("L"), dtype=float)
        with Image.open(io.BytesIO(png)) as fig:
            expected = np.asarray(fig.convert("L").resize((w, h), Image.Resampling.BILINEAR),
                                  dtype=float)
        corr = np.corrcoef(shown.ravel(), expected.ravel())[0, 1]
        assert corr > 0.8, f"figure at y={y} does not match its PNG (r = {corr:.2f})"
        compared += 1
    assert compared >= 4


def test_rewriting_an_eval_folder_removes_stale_outputs(tmp_path: Path) -> None:
    df = synthetic_predictions(120, seed=4)
    errors = pd.DataFrame([{"image_id": "x", "path": "x.jpg", "label": 0, "error": "empty file"}])
    write_evaluation(evaluate_predictions(df, 0.5, bootstrap=0, errors=errors), tmp_path)
    assert (tmp_path / "errors.csv").is_file() and (tmp_path / "subgroup_auc.png").is_file()
    again = write_evaluation(evaluate_predictions(df[["label", "probability"]], 0.5, bootstrap=0),
                             tmp_path)
    assert not (tmp_path / "errors.csv").exists() and not (tmp_path / "subgroup_auc.png").exists()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        n for n in again.metrics["files"].values() if n.endswith(".png"))

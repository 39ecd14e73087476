"""Execute the notebooks in ``notebooks/`` and store their outputs (or only check they run).

    python scripts/run_notebooks.py                 # execute every notebook, write outputs in place
    python scripts/run_notebooks.py --check         # execute, write nothing (CI)
    python scripts/run_notebooks.py notebooks/tutorial1.ipynb

Each notebook runs in a fresh kernel (the ``python3`` kernel of this interpreter) from a
scratch working folder, offline, with figures inline. Before a notebook is written, its
outputs are scrubbed of machine paths (scratch folders, this checkout, the interpreter's
prefix, the home folder) and of TensorFlow's C++ start-up log lines, so stored notebooks
read the same on any machine. Prints the wall time of each notebook; exits non-zero if any
cell fails.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

# C++ log lines TensorFlow/absl write on the kernel's stderr, captured by ipykernel.
NOISE = re.compile(
    r"^(?:[IWE]\d{4} [\d:.]+\s+\d+ \S+\] .*"
    r"|INFO:tensorflow:Assets written to: .*"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .*"
    r"|.*(?:oneDNN custom operations are on|Could not find cuda drivers|cuda_blas|cuda_dnn"
    r"|cuda_fft|computation placer|cpu_feature_guard|TF-TRT Warning|failed call to cuInit).*)$"
)


def path_replacements(scratch: str | None = None) -> list[tuple[re.Pattern[str], str]]:
    """Machine paths to replace in outputs, most specific first.

    Args:
        scratch: The folder the kernel's temporary files went to, if not the system's.
    """
    subs: list[tuple[re.Pattern[str], str]] = []
    for base in filter(None, (scratch, str(Path(tempfile.gettempdir()).resolve()))):
        # The notebooks' scratch folders (tempfile.mkdtemp(prefix="skinlesion-...")).
        subs.append((re.compile(re.escape(base) + r"/skinlesion-[\w.-]+/"), ""))
        subs.append((re.compile(re.escape(base) + r"/skinlesion-[\w.-]+"), "."))
    tmp = re.escape(str(Path(tempfile.gettempdir()).resolve()))
    roots: dict[str, str] = {}
    for root, name in ((REPO, "<repo>"), (Path(sys.prefix), "<python>"), (Path.home(), "~")):
        for text in {str(root), str(root.resolve())}:
            if len(text) > 1:
                roots[text] = name
    # Longest first: a virtual environment inside the checkout is "<python>", not "<repo>/.venv".
    for text in sorted(roots, key=len, reverse=True):
        subs.append((re.compile(re.escape(text)), roots[text]))
    subs.append((re.compile(tmp + r"/[\w.-]+"), "<tmp>"))
    return subs


def scrub_text(text: str, subs: list[tuple[re.Pattern[str], str]]) -> str:
    """``text`` with machine paths replaced."""
    for pattern, repl in subs:
        text = pattern.sub(repl, text)
    return text


def scrub(nb: object, scratch: str | None = None) -> int:
    """Scrub every output of ``nb`` in place; return how many outputs were dropped as noise."""
    subs = path_replacements(scratch)
    dropped = 0
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                lines = [ln for ln in out["text"].splitlines(keepends=True)
                         if not NOISE.match(ln.rstrip("\n"))]
                if not "".join(lines).strip():
                    dropped += 1
                    continue
                out["text"] = scrub_text("".join(lines), subs)
            for key in ("text/plain", "text/html", "text/markdown"):
                data = out.get("data", {})
                if key in data:
                    value = data[key]
                    value = "".join(value) if isinstance(value, list) else value
                    data[key] = scrub_text(value, subs)
            if out.get("output_type") == "error":
                out["traceback"] = [scrub_text(t, subs) for t in out.get("traceback", [])]
            kept.append(out)
        cell["outputs"] = kept
        cell.get("metadata", {}).pop("execution", None)
    return dropped


def run(path: Path, *, write: bool, timeout: int) -> float:
    """Execute one notebook; return its wall time in seconds.

    Raises:
        nbclient.exceptions.CellExecutionError: if a cell fails (the notebook is still
            written, with the error, when ``write`` is set).
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # Figures inline, whatever the caller's MPLBACKEND (CI sets Agg for the tests).
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved_tmpdir = os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix="nbrun-") as cwd:
        cwd = str(Path(cwd).resolve())
        # The notebooks' own tempfile.mkdtemp() folders land in here and go with it.
        os.environ["TMPDIR"] = cwd
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": cwd}}, record_timing=False)
        start = time.perf_counter()
        try:
            client.execute()
        finally:
            seconds = time.perf_counter() - start
            if saved_tmpdir is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved_tmpdir
            if write:
                scrub(nb, scratch=cwd)
                nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="Notebooks to run (default: notebooks/*.ipynb).")
    parser.add_argument("--check", action="store_true",
                        help="Execute but write nothing (CI).")
    parser.add_argument("--timeout", type=int, default=900, help="Seconds per cell (900).")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {NOTEBOOKS}", file=sys.stderr)
        return 2
    from nbclient.exceptions import CellExecutionError

    failed = []
    total = 0.0
    for path in paths:
        try:
            seconds = run(path, write=not args.check, timeout=args.timeout)
            print(f"{path.name}: ok in {seconds:.0f} s", flush=True)
        except CellExecutionError as exc:
            seconds = 0.0
            failed.append(path.name)
            print(f"{path.name}: FAILED\n{exc}", file=sys.stderr, flush=True)
        total += seconds
    print(f"{len(paths) - len(failed)}/{len(paths)} notebooks ran in {total:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Keep TensorFlow's start-up chatter off the console unless asked for.

TensorFlow writes C++ log lines straight to file descriptor 2 while it loads —
``WARNING: All log messages before absl::InitializeLog() …``, oneDNN and
"Could not find cuda drivers" notes, and on a machine without a GPU ``E0000 …
failed call to cuInit: … (303)`` — every one of which looks like a failure to a
new user and none of which is. ``TF_CPP_MIN_LOG_LEVEL`` silences what TensorFlow
logs after start-up, but the lines written while its shared libraries load come
from absl before TensorFlow reads that variable, so the import itself runs with
file descriptor 2 pointed at a temporary file; the captured text is replayed if
the import fails, so a real error is never hidden.

Only the CLI and the service call :func:`quiet_tensorflow`; the library itself
never changes logging. ``skinlesion -v …`` (or ``SKINLESION_TF_LOGS=1``) keeps every
line.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType

SHOW_ENV = "SKINLESION_TF_LOGS"
"""Set to 1 to keep TensorFlow's own log lines (``skinlesion -v`` sets it)."""

_QUIET_LOGGERS = ("tensorflow", "absl", "h5py", "tf2onnx")


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger, what: str) -> Iterator[None]:
    """Run a block whose native code prints to fd 2 (a converter's stray lines) quietly.

    What the block wrote is logged at DEBUG (``-vv`` shows it); with ``SKINLESION_TF_LOGS``
    set nothing is captured.
    """
    if _show_requested():
        yield
        return
    with _stderr_fd_captured() as captured:
        try:
            yield
        finally:
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace").strip()
    if text:
        logger.debug("%s wrote: %s", what, text)


def _show_requested() -> bool:
    return os.environ.get(SHOW_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _stderr_fd_captured() -> Iterator[tempfile._TemporaryFileWrapper[bytes]]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield tmp  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once and runs its import with fd 2 captured."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            error: BaseException | None = None
            with _stderr_fd_captured() as captured:
                try:
                    original(module)
                except BaseException as exc:  # re-raised below
                    error = exc
                    captured.seek(0)
                    text = captured.read()
            if error is not None:  # a real import problem: show what TensorFlow said
                sys.stderr.write(text.decode("utf-8", "replace"))
                raise error
            _quiet_python_loggers()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _quiet_python_loggers() -> None:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_tensorflow() -> bool:
    """Silence TensorFlow's C++ and absl start-up logs for this process (and its children).

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless already set, and, if TensorFlow is not yet
    imported, arranges for its import to run with stderr captured (replayed on failure).
    Does nothing when ``SKINLESION_TF_LOGS`` is set to a true value.

    Returns:
        Whether anything was changed.
    """
    if _show_requested():
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        _quiet_python_loggers()
    elif not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    return True


def show_tensorflow_logs() -> None:
    """Keep TensorFlow's log lines (what ``-v`` asks for), here and in child processes."""
    os.environ[SHOW_ENV] = "1"

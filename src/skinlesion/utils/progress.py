"""The one progress protocol of the library: a callback that takes a :class:`ProgressEvent`.

Every long-running library function (``prepare``, ``train``, ``Predictor.predict_files``,
``evaluate_run``, ``compare_runs``, ``build_ensemble``, ``export_run``, ``run_demo``,
``download``) takes ``progress: Progress | None`` and calls it with events of two kinds:

* a **step**: ``ProgressEvent(task, message="…")`` — one line worth showing
  ("feature pass: 2070 images × 8 views");
* a **count**: ``ProgressEvent(task, done=…, total=…, unit=…)`` — ``done`` is cumulative,
  ``total`` is ``None`` when unknown; ``finished=True`` closes the task.

The library never prints. The CLI draws events with one rich adapter
(``skinlesion.cli._progress.RichProgress``); in Python, ``progress=print`` prints each
event as a readable line (``str(event)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report (see the module docstring).

    Attributes:
        task: What is progressing: ``"predict"``, ``"prepare: decode"``, ``"train"``, a
            file name for a download…
        message: A step to show, or None for a pure count.
        done: Units finished so far (cumulative), or None for a pure step.
        total: Units in all, when known.
        unit: What is counted: ``"images"``, ``"bytes"``, ``"views"``, ``"shards"``…
        finished: The task ended (successfully or not).
    """

    task: str
    message: str | None = None
    done: int | None = None
    total: int | None = None
    unit: str = "images"
    finished: bool = False

    def __str__(self) -> str:
        if self.message is not None:
            return f"{self.task}: {self.message}" if self.task else self.message
        count = f"{self.done if self.done is not None else 0}"
        if self.total is not None:
            count += f"/{self.total}"
        return f"{self.task}: {count} {self.unit}" + (" (done)" if self.finished else "")


Progress = Callable[[ProgressEvent], None]
"""The progress callback every library function takes."""


def say(progress: Progress | None, task: str) -> Callable[[str], None]:
    """A ``say(message)`` function that reports step messages of ``task`` (or nothing)."""
    if progress is None:
        return lambda _message: None
    return lambda message: progress(ProgressEvent(task, message=message))


def relabel(progress: Progress | None, task: str) -> Progress | None:
    """``progress`` with every event's task renamed (e.g. one bar per compared run)."""
    if progress is None:
        return None
    return lambda event: progress(replace(event, task=task))


class Tally:
    """Counts the units of one task and reports the running total.

    ``Tally(progress, "predict", total=120)`` reports ``done=0`` at once, then each
    :meth:`add` reports the new cumulative count; :meth:`close` reports ``finished``.
    Safe with ``progress=None`` (counts, reports nothing).
    """

    def __init__(self, progress: Progress | None, task: str, total: int | None = None, *,
                 unit: str = "images", done: int = 0) -> None:
        self.progress, self.task, self.total, self.unit, self.done = (
            progress, task, total, unit, done)
        self._emit()

    def add(self, n: int) -> None:
        """``n`` more units are done."""
        self.done += n
        self._emit()

    def close(self) -> None:
        """The task ended."""
        self._emit(finished=True)

    def _emit(self, finished: bool = False) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(self.task, done=self.done, total=self.total,
                                        unit=self.unit, finished=finished))

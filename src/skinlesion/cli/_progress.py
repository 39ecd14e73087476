"""The CLI's one progress adapter: library :class:`ProgressEvent`\\ s drawn with rich on stderr.

Every command that runs something long does::

    with RichProgress() as progress:
        result = library_function(..., progress=progress)

Counts become one bar per task (images with their rate, or bytes with size, speed and
time left); step messages are printed as ``· message`` lines above the bars. Bars are
drawn only on a terminal (``transient``: they vanish when done, unless ``keep_bars``);
messages are printed everywhere unless ``quiet``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from skinlesion.cli._common import err_console
from skinlesion.utils.progress import ProgressEvent
from skinlesion.utils.safe_text import terminal_text


class _CountColumn(ProgressColumn):
    """``12/40`` for counted units; downloaded/total size for bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._items, self._bytes = MofNCompleteColumn(), DownloadColumn()

    def render(self, task: Any) -> Text:
        column = self._bytes if task.fields.get("unit") == "bytes" else self._items
        return column.render(task)  # type: ignore[return-value]


class _RateColumn(ProgressColumn):
    """Units per second (rich's moving average), bytes as a transfer speed."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = TransferSpeedColumn()

    def render(self, task: Any) -> Text:
        unit = task.fields.get("unit", "images")
        if unit == "bytes":
            return self._bytes.render(task)
        speed = task.finished_speed or task.speed
        short = {"images": "img"}.get(unit, unit)
        return Text("" if speed is None else f"{speed:.1f} {short}/s",
                    style="progress.data.speed")


class RichProgress:
    """A ``skinlesion.utils.progress.Progress`` callback drawing on stderr (a context manager).

    Args:
        quiet: Show nothing (``--json`` output).
        keep_bars: Leave finished bars on screen.
        label: Prefix of every step message (e.g. ``"tflite export"``).
    """

    def __init__(self, *, quiet: bool = False, keep_bars: bool = False, label: str = "") -> None:
        self.quiet, self.label = quiet, label
        self._bar = Progress(
            TextColumn("{task.description}", style="bold"), BarColumn(), _CountColumn(),
            _RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=err_console, transient=not keep_bars,
            disable=quiet or not err_console.is_terminal)
        self._tasks: dict[str, TaskID] = {}
        self._started = False

    def __enter__(self) -> RichProgress:
        # The bars start with the first count: a command that only reports steps may show a
        # spinner of its own (rich allows one live display at a time).
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._started:
            self._bar.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if event.message is not None:
            if not self.quiet:
                prefix = f"{self.label}: " if self.label else ""
                err_console.print(f"[dim]·[/] {prefix}{terminal_text(event.message)}",
                                  highlight=False)
            return
        if not self._started:
            self._bar.start()
            self._started = True
        task = self._tasks.get(event.task)
        if task is None:
            task = self._bar.add_task(terminal_text(event.task), total=event.total,
                                      completed=event.done or 0, unit=event.unit)
            self._tasks[event.task] = task
        self._bar.update(task, completed=event.done, total=event.total)
        if event.finished:
            self._bar.stop_task(task)
            del self._tasks[event.task]  # the same task name may start again (a retry)

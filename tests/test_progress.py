"""The one progress protocol (``utils/progress.py``) and the CLI's one rich adapter."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from skinlesion.cli import _progress
from skinlesion.cli._progress import RichProgress
from skinlesion.utils.progress import ProgressEvent, Tally, relabel, say


def test_tally_reports_cumulative_counts_then_finished() -> None:
    events: list[ProgressEvent] = []
    tally = Tally(events.append, "predict", 7)
    tally.add(3)
    tally.add(4)
    tally.close()
    assert [(e.task, e.done, e.total, e.finished) for e in events] == [
        ("predict", 0, 7, False), ("predict", 3, 7, False), ("predict", 7, 7, False),
        ("predict", 7, 7, True)]
    silent = Tally(None, "x")  # no callback: counts, reports nothing
    silent.add(2)
    assert silent.done == 2


def test_steps_relabel_and_readable_lines() -> None:
    events: list[ProgressEvent] = []
    say(events.append, "export")("converting to TFLite")
    relabel(events.append, "scoring run-a")(ProgressEvent("predict", done=2, total=5))
    assert events[0] == ProgressEvent("export", message="converting to TFLite")
    assert events[1].task == "scoring run-a" and events[1].done == 2
    # progress=print gives readable lines.
    assert str(events[0]) == "export: converting to TFLite"
    assert str(events[1]) == "scoring run-a: 2/5 images"
    assert str(ProgressEvent("a.zip", done=10, unit="bytes", finished=True)) == \
        "a.zip: 10 bytes (done)"
    say(None, "x")("nothing happens")  # None is allowed everywhere
    assert relabel(None, "x") is None


@pytest.fixture()
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    monkeypatch.setattr(_progress, "err_console", console)
    return buf


def test_rich_adapter_draws_one_bar_per_task_and_prints_steps(terminal: io.StringIO) -> None:
    with RichProgress(label="tflite export", keep_bars=True) as progress:
        progress(ProgressEvent("export", message="exporting SavedModel"))
        tally = Tally(progress, "predict", 4)
        tally.add(4)
        bar = progress._bar
        (task,) = bar.tasks
        assert (task.description, task.completed, task.total) == ("predict", 4, 4)
        assert task.fields["unit"] == "images"
        tally.close()
        assert "predict" not in progress._tasks  # finished: a new bar if it starts again
        Tally(progress, "a.zip", 2048, unit="bytes").add(1024)
        assert [t.description for t in bar.tasks] == ["predict", "a.zip"]
        assert bar.tasks[1].fields["unit"] == "bytes"
    out = terminal.getvalue()
    assert "tflite export: exporting SavedModel" in out


def test_rich_adapter_quiet_and_lazy(terminal: io.StringIO) -> None:
    with RichProgress(quiet=True) as progress:
        progress(ProgressEvent("demo", message="1/3 prepare"))
    assert terminal.getvalue() == ""
    with RichProgress() as progress:  # steps only: no live display started (a spinner may run)
        progress(ProgressEvent("export", message="converting"))
        assert not progress._started
    assert "converting" in terminal.getvalue()

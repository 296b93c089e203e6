"""Progress bars in the terminal (stderr, only when it is a terminal), for the commands that run flows."""

from __future__ import annotations

import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def region_bar():
    """A terminal bar of regions and its hook ``(done, total)``; ``done`` counts the finished
    regions and the fractions of those in flight, so the bar moves within a long region."""
    progress = Progress(TextColumn("regions"), BarColumn(), TextColumn("{task.fields[regions]}"),
                        TimeElapsedColumn(), transient=False, disable=not sys.stderr.isatty())
    state: dict = {}

    def hook(done: float, total: int) -> None:
        count = f"{int(done + 1e-9)}/{total}"
        if "task" not in state:
            progress.start()
            state["task"] = progress.add_task("regions", total=total, regions=count)
        progress.update(state["task"], completed=done, total=total, regions=count)
        if done >= total:
            progress.stop()

    return hook, progress


def training_bar():
    """A terminal bar of training steps with the loss, and its hook ``(done, total, loss)``."""
    progress = Progress(TextColumn("steps"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), transient=False, disable=not sys.stderr.isatty())
    state: dict = {}

    def hook(done: int, total: int, loss: float) -> None:
        shown = "-" if loss != loss else f"{loss:.4f}"
        if "task" not in state:
            progress.start()
            state["task"] = progress.add_task("steps", total=total, completed=done, loss=shown)
        progress.update(state["task"], completed=done, total=total, loss=shown)

    return hook, progress

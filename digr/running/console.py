"""Where long work reports progress: one rich console on stderr and progress bars that stay quiet when stderr is not a
terminal (CI logs, pipes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["console", "log", "progress"]

console = Console(stderr=True)


def log(message: str) -> None:
    """Print a timestamped line on stderr."""
    console.log(message)


@contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar for one piece of work: ``with progress("dataset: train", n) as update: update(k)``.

    ``update(completed, total=None, label=None)`` moves the bar (and may change its total and label).
    """
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    with bar:
        task = bar.add_task(label, total=total)

        def update(completed: int, total: int | None = None, label: str | None = None) -> None:
            kw = {"completed": completed}
            if total is not None:
                kw["total"] = total
            if label is not None:
                kw["description"] = label
            bar.update(task, **kw)

        yield update

"""A Rich progress bar on stderr (bytes, rate, ETA), so stdout stays clean for --json."""

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn


@contextmanager
def byte_progress(enabled: bool = True):
    """Yields a callback (phase, done, total); shows nothing when stderr is not a terminal or when disabled."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda phase, done, total: None
        return
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield update

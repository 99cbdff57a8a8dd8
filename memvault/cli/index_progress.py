"""A Rich bar on stderr for the vector index build that a search of a large SQLite store may
have to run first (store/sqlite/ann.py): minutes at a million memories, so it shows."""

from __future__ import annotations

from memvault.progress import Advance


class IndexBuildBar:
    """The Progress protocol as one transient bar per task, closed when the task completes."""

    def task(self, description: str, total: int | None) -> Advance:
        if not total:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from memvault.cli.output import err_console

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=err_console, transient=True)
        bar.start()
        task_id = bar.add_task(description, total=total)
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.advance(task_id, n)
            if done[0] >= total:
                bar.stop()

        return advance

"""Terminal output shared by every command: human output on stderr (rich), JSON on stdout.

With ``--json`` a command prints exactly one JSON document on stdout; everything meant for a
person (tables, progress bars, notes) goes to stderr so scripts can pipe stdout safely.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err = Console(stderr=True, highlight=False)


def say_last(line: str) -> None:
    """Print a command's last line on stderr: ``"error: ..."`` with the word in red, anything else
    (``"interrupted; ..."``) plain. The text is printed as is, never read as rich markup."""
    from rich.markup import escape

    if line.startswith("error: "):
        err.print(f"[bold red]error:[/] {escape(line[len('error: '):])}", markup=True, highlight=False, soft_wrap=True)
    else:
        err.print(line, markup=False, highlight=False, soft_wrap=True)


def print_json(doc: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress(description: str, total: int | None, *, disable: bool = False) -> Iterator[Any]:
    """A rich progress bar on stderr; yields ``advance(n=1, **fields)``.

    Extra fields (e.g. ``loss=0.12``) are shown after the bar; ``total=N`` (None: unknown) sets the
    bar's total instead.
    """
    # On a terminal the bar redraws itself. Written to a file (`> log 2>&1`, `reproduce --jobs`'s
    # logs) rich would draw it only once, at the end, cut to 80 columns; there a plain line is
    # printed instead at every tenth of the way (every LOG_EVERY_S seconds while the total is
    # unknown) and once at the end.
    lines = not disable and not err.is_terminal
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err,
        disable=disable or lines,
        transient=False,
    )
    began, said = time.monotonic(), {"tenth": 0, "at": time.monotonic()}
    with bar:
        tid = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: Any) -> None:
            if "total" in fields:
                bar.update(tid, total=fields.pop("total"))
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            bar.update(tid, advance=n, **({"info": info} if fields else {}))
            if lines:
                _log_line(bar.tasks[0], description, began, said)

        yield advance
        if lines:
            _log_line(bar.tasks[0], description, began, said, last=True)


LOG_EVERY_S = 60.0
"""How often a progress bar of unknown total prints a line when stderr is not a terminal."""


def _log_line(task: Any, description: str, began: float, said: dict[str, float], last: bool = False) -> None:
    """The progress line of a bar drawn to a file: when it has gone one more tenth of the way, and
    (``last``) once when the work is done."""
    now = time.monotonic()
    if task.total:
        tenth = int(10 * task.completed / task.total)
        if not last and (tenth <= said["tenth"] or task.completed >= task.total):  # the end has its own line
            return
        said["tenth"] = tenth
        where = f"{task.completed:g}/{task.total:g} ({round(100 * task.completed / task.total)}%)"
    else:
        if not last and now - said["at"] < LOG_EVERY_S:
            return
        where = f"{task.completed:g}"
    said["at"] = now
    info = task.fields.get("info")
    elapsed = time.strftime("%H:%M:%S", time.gmtime(now - began))
    done = ", done" if last else ""
    err.print(f"{description}: {where}{done}, {elapsed} elapsed" + (f"  {info}" if info else ""), markup=False, highlight=False, soft_wrap=True)

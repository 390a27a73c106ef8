"""The ``ractd`` command line: thin wrappers that parse, call one library function, and render.

Conventions shared by every command:
- ``--json`` prints exactly one JSON document on stdout; human output goes to stderr.
- Exit codes: 0 success, 1 runtime failure, 2 usage error.
- Errors are one line saying what to do; ``ractd --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .errors import RactdError
from .ui import err, print_json

_state = {"debug": False}


class _Group(TyperGroup):
    """Turns library errors into one-line messages with the right exit code."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RactdError as e:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; the last checkpoint (if any) is kept, rerun with --resume")
            raise typer.Exit(130) from None
        except Exception as e:  # a bug: still one line unless --debug
            if _state["debug"] or type(e).__module__.startswith(("typer", "click")):
                raise  # usage errors and exits are rendered by typer itself
            msg = str(e).splitlines()[0] if str(e) else ""
            err.print(f"[bold red]error:[/] internal error {type(e).__name__}: {msg} (rerun with --debug for the traceback)")
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    help="Reward-Aware Consistency Trajectory Distillation: one-step diffusion planners for offline RL.\n\n"
    "Pipeline: fetch -> train-teacher -> train-reward -> distill -> rollout / bench.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
cache_app = typer.Typer(help="Inspect and clean the local cache of datasets and models.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout (human output goes to stderr).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ractd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache root for datasets and models (default: $RACTD_CACHE_DIR or the user cache dir)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    _state["debug"] = debug
    if cache_dir is not None:
        os.environ["RACTD_CACHE_DIR"] = str(cache_dir)


# --------------------------------------------------------------------------------------------- envs
@app.command()
def envs(json_: bool = JsonOpt) -> None:
    """List the installed environment adapters (entry-point group `ractd.envs`) and their tasks."""
    from .registry import plugins

    rows = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "tasks": p.tasks, "error": p.error}
        for p in plugins().values()
    ]
    if json_:
        print_json({"adapters": rows})
        return
    table = Table(title="ractd environment adapters")
    for col in ("adapter", "distribution", "version", "tasks"):
        table.add_column(col)
    for r in rows:
        tasks = ", ".join(r["tasks"]) if r["error"] is None else f"[red]failed to load: {r['error']}[/]"
        table.add_row(r["name"], r["distribution"], r["version"], tasks)
    err.print(table)
    if not rows:
        err.print("no adapters installed: `pip install -e plugins/ractd-maze2d` (or any ractd plugin)")


# -------------------------------------------------------------------------------------------- cache
@cache_app.command("path")
def cache_path(json_: bool = JsonOpt) -> None:
    """Print the cache root (datasets/ and models/ live under it)."""
    from .paths import cache_root

    if json_:
        print_json({"cache": str(cache_root())})
    else:
        typer.echo(str(cache_root()))


@cache_app.command("list")
def cache_list(
    kind: Optional[str] = typer.Option(None, help="Only this kind (teacher, reward, student, inverse-dynamics, proposer)."),
    env: Optional[str] = typer.Option(None, "--env", help="Only artifacts of this task."),
    json_: bool = JsonOpt,
) -> None:
    """List model artifacts in the cache, newest first."""
    from .artifacts import list_artifacts

    arts = [a for a in list_artifacts() if (kind is None or a.kind == kind) and (env is None or a.task == env)]
    rows = [
        {
            "id": a.id,
            "kind": a.kind,
            "task": a.task,
            "created": a.meta.get("created"),
            "parents": a.meta.get("parents", []),
            "size_bytes": a.path.stat().st_size,
            "path": str(a.path),
        }
        for a in arts
    ]
    if json_:
        print_json({"artifacts": rows})
        return
    table = Table(title=f"artifacts in {arts[0].path.parent}" if arts else "artifacts")
    for col in ("id", "kind", "task", "created", "size", "parents"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["kind"], r["task"], r["created"] or "", f"{r['size_bytes'] / 1e6:.2f} MB", ", ".join(r["parents"]))
    err.print(table)
    if not rows:
        err.print("no artifacts yet: train one with `ractd train-teacher --env TASK`")


@cache_app.command("rm")
def cache_rm(
    ref: str = typer.Argument(..., help="Artifact id (or unique prefix), file name, or `all`."),
    json_: bool = JsonOpt,
) -> None:
    """Delete model artifacts from the cache."""
    from .artifacts import remove

    removed = remove(ref)
    if json_:
        print_json({"removed": [str(p) for p in removed]})
    else:
        err.print(f"removed {len(removed)} artifact(s)")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

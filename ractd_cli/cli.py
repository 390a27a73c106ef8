"""The ``ractd`` command line: thin wrappers that parse, call one library function, and render.

Conventions shared by every command:
- ``--json`` prints exactly one JSON document on stdout; human output goes to stderr.
- Exit codes: 0 success, 1 runtime failure, 2 usage error.
- Errors are one line saying what to do; ``ractd --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .errors import RactdError, UsageError, check_seed, unknown_choice
from .ui import err, print_json, say_last

_state = {"debug": False}


CHOICES: dict[str, tuple[str, ...]] = {
    "--preset": ("tiny", "quick", "paper"),  # presets.PRESETS
    "--device": ("auto", "cpu", "cuda"),
    "--precision": ("fp32", "bf16", "fp16"),  # train.loop.PRECISIONS
    "--distance": ("huber", "l2"),  # diffusion.DISTANCES
    "--follow": ("inverse", "track", "controller"),  # evaluate.FOLLOWERS
    "--init-noise": ("unit", "edm"),  # planner.INIT_NOISES
    "--sampler": ("onestep", "multistep", "heun", "euler", "ancestral"),  # planner.STUDENT_SAMPLERS + TEACHER_SAMPLERS
    "--eval-sampler": ("euler", "heun", "ancestral"),  # planner.TEACHER_SAMPLERS
    "--planner": ("diffusion", "trajdiffuser"),  # resolve.PLANNERS
    "--source": ("minari", "local"),  # data.fetch.SOURCES
    "--format": ("onnx", "torchscript"),  # export.FORMATS
    "--runtime": ("torch", "onnxruntime"),  # bench.RUNTIMES
    "--weights": ("raw", "ema"),  # train.distill.SAVED_WEIGHTS
    "--windows": ("full", "padded"),  # layouts.WINDOWS
    "--score-scale": ("d4rl", "minari"),  # the shipped tasks' scales; a plugin may add its own
    "--kind": ("teacher", "reward", "student", "inverse-dynamics", "proposer"),  # artifacts.KINDS
    "--keep": ("last", "best", "both"),  # train.common.KEEP
    "--what": ("table", "sweep", "table4"),  # reproduce.WHAT
}
"""The values of each option with a fixed set of them, shown in ``--help`` as ``[a|b|c]``; each
option still checks its value itself, with a one-line error (tests/test_cli_basic.py checks this
table against the constants it copies)."""

EVAL_PANELS: dict[str, tuple[str, ...]] = {
    "Sampling": ("--sampler", "--nfe", "--init-noise", "--clamp"),
    "Executing state plans (Maze2d)": ("--follow", "--replan", "--snap-goal"),
    "Trajectory Diffuser (--planner trajdiffuser)": ("--proposer", "--refine-steps", "--refine-sigma", "--guidance", "--target-return",
                                                     "--candidates", "--reward"),
    "Episodes and scores": ("--episodes", "--teacher-episodes", "--seed", "--score-scale", "--peers"),
    "Speed": ("--device", "--jit", "--cuda-graphs", "--workers", "--batch", "--repeats", "--runtime"),
    "Video": ("--video", "--video-episodes"),
}
TRAIN_PANELS: dict[str, tuple[str, ...]] = {
    "Training recipe": ("--preset", "--steps", "--batch-size", "--lr", "--seed", "--dataset", "--distance", "--net", "--horizon", "--plan-stride",
                        "--windows", "--weights", "--teacher-steps", "--ode-pairs", "--pair-weight"),
    "Running": ("--device", "--resume", "--nproc", "--precision", "--log-dir"),
    "Evaluation during training": ("--eval-every", "--eval-episodes", "--eval-sampler", "--eval-nfe", "--val-fraction", "--keep"),
}
"""``--help`` panels of the long commands (rollout and bench; the trainers), by option name; the rest
stay under "Options". Applied to commands with more than :data:`PANEL_MIN_OPTIONS` options."""
PANEL_MIN_OPTIONS = 14
_PANEL_OF = {
    "rollout": {opt: panel for panel, opts in EVAL_PANELS.items() for opt in opts},
    "bench": {opt: panel for panel, opts in EVAL_PANELS.items() for opt in opts},
    **{cmd: {opt: panel for panel, opts in TRAIN_PANELS.items() for opt in opts}
       for cmd in ("train-teacher", "train-reward", "distill", "train-proposer")},
}


def _show_choices(command, ctx) -> None:
    """``--help`` shows each choice option's values, no ``<bool>`` after a flag (click's own ``--help``
    included), and a long command's options in panels."""
    params = getattr(command, "params", [])
    panels = _PANEL_OF.get(getattr(command, "name", ""), {}) if len(params) > PANEL_MIN_OPTIONS else {}
    for param in params:
        panel = next((panels[o] for o in getattr(param, "opts", []) if o in panels), None)
        if panel is not None and hasattr(param, "rich_help_panel") and param.rich_help_panel is None:
            param.rich_help_panel = panel
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif any(o in CHOICES for o in getattr(param, "opts", [])):
            param.metavar = "[" + "|".join(next(CHOICES[o] for o in param.opts if o in CHOICES)) + "]"
    help_option = command.get_help_option(ctx)  # click caches it, so the blank metavar stays
    if help_option is not None:
        help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _show_choices(sub, ctx)


def _config_first(args: list[str], commands: set[str]) -> list[str]:
    """``ractd CMD ... --config FILE ...`` as ``ractd --config FILE CMD ...``: the recipe option
    belongs to the group (it sets every command's defaults) but reads naturally after the command."""
    cmd = next((i for i, a in enumerate(args) if a in commands), None)
    if cmd is None:
        return args
    for i in range(cmd + 1, len(args)):
        if args[i] == "--":
            break
        if args[i] == "--config" and i + 1 < len(args):
            return ["--config", args[i + 1], *args[:i], *args[i + 2:]]
        if args[i].startswith("--config="):
            return [args[i], *args[:i], *args[i + 1:]]
    return args


class _Group(TyperGroup):
    """Turns library errors into one-line messages with the right exit code."""

    def get_params(self, ctx):  # type: ignore[override]
        params = super().get_params(ctx)
        for param in params:  # `ractd --help`: no <bool> after --version, --debug, the completion flags
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params

    def get_command(self, ctx, cmd_name):  # type: ignore[override]
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _show_choices(command, ctx)
        return command

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        """Click's own usage errors (an unknown option, a value of the wrong type) are one line too:
        ``error: <what>; see `ractd CMD --help```, exit code 2."""
        args = _config_first(list(sys.argv[1:] if args is None else args), set(self.commands))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            err.print("aborted")
            sys.exit(1)
        except Exception as e:
            if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):  # not a click usage error
                raise
            if type(e).__name__ == "NoArgsIsHelpError":  # `ractd` alone: the help text
                e.show()
            else:
                ctx = getattr(e, "ctx", None)
                hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
                say_last(f"error: {e.format_message().rstrip('.')}{hint}")
            sys.exit(e.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RactdError as e:
            if _state["debug"]:
                raise
            _stop_with(f"error: {e}", e.exit_code)
        except KeyboardInterrupt:
            if ctx.invoked_subcommand in TRAIN_COMMANDS:
                _stop_with("interrupted; the last checkpoint (if any) is kept, rerun with --resume", 130)
            _stop_with("interrupted; nothing half-written is left in the cache, rerun the same command", 130)
        except (PermissionError, NotADirectoryError, FileExistsError) as e:  # the cache (or an output) cannot be written
            if _state["debug"]:
                raise
            from .paths import cache_root

            _stop_with(f"error: cannot write {e.filename or 'a file'} ({e.strerror or type(e).__name__}); the cache is {cache_root()}: "
                       f"make it a writable folder, or set RACTD_CACHE_DIR to one", 1)
        except OSError as e:
            if e.errno != errno.EROFS or _state["debug"]:
                raise
            _stop_with(f"error: cannot write {e.filename or 'a file'}: the file system is read-only; set RACTD_CACHE_DIR to a writable folder", 1)
        except MemoryError as e:
            _stop_with(f"error: out of memory{_first_line(e)}; lower --batch-size (or --episodes), or use a larger machine", 1)
        except Exception as e:  # a bug: still one line unless --debug
            if _state["debug"] or type(e).__module__.startswith(("typer", "click")):
                raise  # usage errors and exits are rendered by typer itself
            from . import distributed

            if _out_of_memory(e):
                _stop_with(f"error: out of memory{_first_line(e)}; lower --batch-size (or --episodes), or use a larger machine", 1)
            if distributed.peer_lost(e):
                _stop_with(distributed.PEER_LOST_LINE, 1)
            msg = str(e).splitlines()[0] if str(e) else ""
            _stop_with(f"error: internal error {type(e).__name__}: {msg} (rerun with --debug for the traceback)", 1)


def _out_of_memory(e: BaseException) -> bool:
    """An allocation failure (torch's CPU allocator or CUDA), not a bug."""
    return type(e).__name__ == "OutOfMemoryError" or (isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e)))


def _first_line(e: BaseException) -> str:
    """`` (what the error said, in short)``, or nothing."""
    text = str(e).splitlines()[0][:160] if str(e) else ""
    return f" ({text})" if text else ""


def _stop_with(line: str, code: int) -> None:
    """Say ``line`` (one line: "error: ..." in red, or a plain note) and exit with ``code``. A worker
    of ``--nproc`` leaves it to the launcher, which says it once (:func:`distributed.report`)."""
    from . import distributed

    if not distributed.report(line):
        say_last(line)
    raise typer.Exit(code) from None


app = typer.Typer(
    cls=_Group,
    help="Reward-Aware Consistency Trajectory Distillation: one-step diffusion planners for offline RL.\n\n"
    "Pipeline: fetch -> train-teacher -> train-reward -> distill -> rollout / bench.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
cache_app = typer.Typer(help="Inspect and clean the local cache of datasets and models.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout (human output goes to stderr).")

# Bounds of the numeric options: a typo (`--steps 1e9`, `--seed -1`) is a one-line usage error at
# once, not an allocation failure or a run of days.
SEED_MAX = 2**32 - 1
STEPS_MAX = 100_000_000
BATCH_MAX = 1_048_576
NFE_MAX = 10_000
EPISODES_MAX = 1_000_000


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ractd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache root for datasets and models (default: $RACTD_CACHE_DIR or the user cache dir)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    config: Optional[str] = typer.Option(None, "--config", metavar="FILE|NAME", help="A recipe: a TOML file with one table per command (\\[train-teacher], \\[distill], ...) whose keys are its options (steps = 24000, batch-size = 128); they become the defaults, and flags on the command line win. NAME: a recipe shipped with ractd (`ractd recipes` lists them). May also follow the command: `ractd train-teacher --config FILE`."),
) -> None:
    _state["debug"] = debug
    if cache_dir is not None:
        os.environ["RACTD_CACHE_DIR"] = str(cache_dir)
    if config is not None:
        from .config import default_map, read_recipe

        group = ctx.command
        commands = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
        ctx.default_map = {**(ctx.default_map or {}), **default_map(read_recipe(config), commands, config)}


@app.command()
def recipes(json_: bool = JsonOpt) -> None:
    """List the recipes shipped with ractd (`ractd --config NAME CMD`): TOML files of options, one table
    per command; print where they are, to copy one and edit it."""
    from .config import RECIPES_DIR, read_recipe, shipped_recipes

    rows = [{"name": n, "path": str(RECIPES_DIR / f"{n}.toml"), "commands": list(read_recipe(n))} for n in shipped_recipes()]
    if json_:
        print_json({"recipes": rows})
        return
    table = Table(title=f"recipes in {RECIPES_DIR}")
    for col in ("name", "commands"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], ", ".join(r["commands"]))
    err.print(table)


# --------------------------------------------------------------------------------------------- envs
@app.command()
def envs(json_: bool = JsonOpt) -> None:
    """List the installed environment adapters (entry-point group `ractd.envs`) and their tasks.

    A plugin that cannot load is listed with the reason; one written for an older plugin API works
    and gets a deprecation line saying what to change (docs/plugins.md, "Plugin API changes").

    With --json each adapter also carries `specs`: every task's spec as data (dimensions, planning,
    horizon, history, goal_dim, gamma, loss weights, score scales, presets), for scripts."""
    from rich.markup import escape

    from .adapters import spec_dict
    from .registry import collisions, plugins

    rows = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "tasks": p.tasks, "error": p.error,
         "api_version": p.adapter.api_version if p.adapter is not None else None, "deprecations": p.notes,
         "specs": {t: spec_dict(p.adapter.tasks[t]) for t in p.tasks}}
        for p in plugins().values()
    ]
    clashes = collisions()
    if json_:
        print_json({"adapters": rows, "collisions": clashes})
        return
    table = Table(title="ractd environment adapters")
    for col in ("adapter", "distribution", "version", "tasks"):
        table.add_column(col)
    for r in rows:
        tasks = ", ".join(r["tasks"]) if r["error"] is None else f"[red]{escape(r['error'])}[/]"
        table.add_row(r["name"], r["distribution"], r["version"], tasks)
    err.print(table)
    for r in rows:
        for note in r["deprecations"]:
            err.print(f"[yellow]deprecated: plugin {r['name']} {escape(note)}[/]", soft_wrap=True)
    for task, who in clashes.items():
        err.print(f"[red]task {task} is declared by {' and '.join(who)}: the name is refused until one is uninstalled[/]")
    if not rows:
        err.print(no_adapters_hint())


def no_adapters_hint() -> str:
    """What to do when no plugin is installed: the checkout's plugin folders when ractd runs from one
    (an editable install), else where the plugins come from."""
    plugins = Path(__file__).resolve().parents[1] / "plugins"
    if plugins.is_dir():
        return (f"no adapters installed: tasks come from plugins (the `ractd.envs` entry point); install the ones in "
                f"this checkout, e.g. `pip install -e {plugins / 'ractd-maze2d'}`, or all of them with `make install`")
    return ("no adapters installed: tasks come from plugins (the `ractd.envs` entry point), distributed with ractd's source "
            "under plugins/ (ractd-maze2d, ractd-mujoco, ractd-kitchen, ractd-bimodal): from a clone of the repository, "
            "`pip install ./plugins/ractd-maze2d`; any package declaring a `ractd.envs` entry point works (docs/plugins.md)")


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
    """List model artifacts in the cache, newest first, and any damaged file (its header unreadable).

    Each row: id, kind, task, reward weight (a student's sigma, a reward-aware teacher's w), preset,
    gradient steps, the last evaluation (an --eval-every curve's final score, a reward model's
    held-out R^2), when it was made, size and parents."""
    from .artifacts import KINDS, scan_store
    from .models import model_summary

    readable, unreadable = scan_store()
    if kind is not None and kind not in KINDS:
        raise UsageError(unknown_choice("--kind", kind, KINDS))
    if env is not None and env not in {a.task for a in readable}:
        from .registry import all_tasks

        tasks = all_tasks()
        if env not in tasks:
            raise UsageError(unknown_choice("--env", env, sorted(tasks)))
    arts = [a for a in readable if (kind is None or a.kind == kind) and (env is None or a.task == env)]
    damaged = [p for p in unreadable if (kind is None or p.name.startswith(f"{kind}-")) and (env is None or f"-{env}-" in p.name)]
    rows = [
        {
            "id": a.id,
            "kind": a.kind,
            "task": a.task,
            "created": a.meta.get("created"),
            "parents": a.meta.get("parents", []),
            "size_bytes": a.path.stat().st_size,
            "path": str(a.path),
            "name": a.meta.get("name"),
            **model_summary(a),
        }
        for a in arts
    ]
    if json_:
        print_json({"artifacts": rows, "damaged": [str(p) for p in damaged],
                    "other": {name: {"holds": what, "files": files, "size_bytes": size} for name, what, (files, size) in _other_cache_parts()}})
        return
    table = Table(title=f"artifacts in {arts[0].path.parent}" if arts else "artifacts")
    wide = err.width >= 150  # a narrow terminal gets the columns that tell models apart; `cache show ID` has the rest
    named = any(r["name"] for r in rows)
    cols = ["id", *(["name"] if named else []), "kind", "task", "weight", "steps", "last evaluation",
            *(["created", "preset", "size", "parents"] if wide else [])]
    for col in cols:
        table.add_column(col, no_wrap=col in ("id", "kind", "task"))

    def evaluation(e: dict | None) -> str:
        if not e:
            return ""
        if "val_r2" in e:
            return f"R^2 {e['val_r2']:.3f}"
        if e.get("selected"):
            return f"{e['score_mean']:.1f}, best (step {e['step']})"
        return f"{e['score_mean']:.1f} ± {e['score_stderr'] or 0:.1f} (step {e['step']})"

    for r in rows:
        cells = [r["id"][:8], *([r["name"] or ""] if named else []), r["kind"], r["task"],
                 "" if r["reward_weight"] is None else f"{r['reward_weight']:g}", "" if r["steps"] is None else str(r["steps"]),
                 evaluation(r["evaluation"])]
        if wide:
            cells += [(r["created"] or "")[:16].replace("T", " "), r["preset"] or "", f"{r['size_bytes'] / 1e6:.2f} MB",
                      ", ".join(p[:8] for p in r["parents"])]
        table.add_row(*cells)
    err.print(table)
    for p in damaged:
        err.print(f"[red]damaged: {p.name} (its header cannot be read); delete it with `ractd cache rm {p.name}`[/]", soft_wrap=True)
    if not rows and not damaged:
        err.print("no artifacts yet: train one with `ractd train-teacher --env TASK`")
    for name, what, (files, size) in _other_cache_parts():
        err.print(f"also in the cache: {name}/ ({what}): {files} files, {size / 1e6:.1f} MB; `ractd cache rm {name}` deletes it", soft_wrap=True)


def _other_cache_parts() -> list[tuple[str, str, tuple[int, int]]]:
    """The cache's non-empty folders besides models/: (name, what it holds, (files, bytes))."""
    from .paths import CACHE_PARTS, cache_root, folder_size

    parts = [(name, what, folder_size(cache_root() / name)) for name, what in CACHE_PARTS.items()]
    return [p for p in parts if p[2][0]]


@cache_app.command("show")
def cache_show(
    ref: str = typer.Argument(..., help="Artifact id (or unique prefix) or file name, as `cache list` shows them."),
    json_: bool = JsonOpt,
) -> None:
    """A model card: what the model is, how it was made (config, training recipe, data, parents),
    what was made from it, its losses and its evaluation curve. The file's integrity is checked."""
    from .artifacts import list_artifacts, load_artifact
    from .models import curve_summary, model_summary

    art = load_artifact(ref)
    by_id = {a.id: a for a in list_artifacts()}
    config = dict(art.config)
    curve = config.pop("eval_curve", None) or []
    card = {
        "id": art.id, "name": art.meta.get("name"), "kind": art.kind, "task": art.task, "path": str(art.path),
        "size_bytes": art.path.stat().st_size,
        **model_summary(art),
        "created": art.meta.get("created"), "made_on": art.meta.get("made_on"), "ractd_version": art.meta.get("ractd_version"),
        "dataset": art.meta.get("dataset"), "data_fingerprint": art.meta.get("data_fingerprint"),
        "parents": [{"id": p, "kind": by_id[p].kind if p in by_id else None} for p in art.meta.get("parents", [])],
        "children": [{"id": a.id, "kind": a.kind} for a in by_id.values() if art.id in a.meta.get("parents", [])],
        "config": config, "losses": art.meta.get("losses", {}), "speed": art.meta.get("speed", {}), "eval_curve": curve,
        "eval_summary": curve_summary(curve), "runs": art.meta.get("runs") or [],
    }
    if json_:
        print_json(card)
        return
    train = config.get("train") or {}
    recipe = ", ".join(f"{k} {train[k]}" for k in ("steps", "batch_size", "lr", "weight_decay", "warmup", "ema_decay", "seed", "device")
                       if k in train)
    # the one header key with two meanings: sigma of eq. 9 for a student, w of a reward-aware teacher
    labels = {"reward_weight": {"student": "reward weight sigma", "teacher": "teacher reward weight w"}.get(art.kind, "reward_weight"),
              "reward_scale": "reward scale kappa"}
    settings = ", ".join(f"{labels.get(k, k)} {config[k]}" for k in ("reward_weight", "reward_scale", "ctm_weight", "dsm_weight", "planning", "horizon",
                                                                     "plan_stride", "windows", "distance", "weights", "gamma",
                                                                     "termination_penalty", "input")
                         if config.get(k) is not None)
    made = art.meta.get("made_on") or {}
    lines = [
        f"[bold]{art.kind} {art.id}[/]" + (f" \"{card['name']}\"" if card["name"] else "") + f" ({art.task}), {card['size_bytes'] / 1e6:.2f} MB: {art.path}",
        f"made {card['created']} by ractd {card['ractd_version']}" + (f" (torch {made.get('torch')}, {made.get('threads')} threads"
                                                                          + (f", {made['cpu']}" if made.get("cpu") else "") + ")" if made else ""),
        f"data: {card['dataset']}" + (f", fingerprint {card['data_fingerprint']}" if card["data_fingerprint"] else ""),
        f"network: {config.get('net_kind')} {json.dumps(config.get('net'))}" if config.get("net") else "",
        f"preset {config.get('preset')}; training: {recipe}" if recipe else "",
        f"settings: {settings}" if settings else "",
        "parents: " + (", ".join(f"{p['kind'] or '(not in the cache)'} {p['id']}" for p in card["parents"]) or "none"),
        "made from it: " + (", ".join(f"{c['kind']} {c['id']}" for c in card["children"]) or "nothing yet"),
        f"training runs: {', '.join(card['runs'])} (`ractd curves --env {art.task} --model {art.id[:8]}`)" if card["runs"] else "",
        "final losses: " + ", ".join(f"{k} {v:.4g}" for k, v in card["losses"].items()) if card["losses"] else "",
    ]
    if config.get("selection"):
        sel = config["selection"]
        twin = f"; the same run's last weights: {sel['last_weights']}" if sel.get("last_weights") else ""
        lines.append(f"saved weights: step {sel['step']}'s, score {sel['score_mean']:.1f}, {sel['protocol']}{twin}")
    if card["eval_summary"]:
        e = card["eval_summary"]
        lines.append(f"evaluations: {e['evaluations']}, mean {e['mean']:.1f}" + (f" ± {e['stderr']:.1f} across them" if e["stderr"] is not None else "")
                     + f", best {e['best']:.1f} (step {e['best_step']}), last {e['last']:.1f} (step {e['last_step']})")
    if curve:
        lines.append("evaluation curve: " + "; ".join(f"step {c['step']}: {c['score_mean']:.1f} ± {c.get('score_stderr') or 0:.1f}"
                                                       for c in curve if c.get("score_mean") is not None))
    if (config.get("validation") or {}).get("val_r2") is not None:
        v = config["validation"]
        lines.append(f"held-out fit: R^2 {v['val_r2']:.3f}, MSE {v['val_mse']:.4g} on {v['episodes']} episodes")
    for line in lines:
        if line:
            err.print(line, soft_wrap=True, highlight=False)


@cache_app.command("rm")
def cache_rm(
    ref: str = typer.Argument(..., help="Artifact id (or unique prefix), file name, `all` (every artifact), or a folder: datasets, runs, checkpoints, sac."),
    json_: bool = JsonOpt,
) -> None:
    """Delete model artifacts from the cache (`all`: every one), or one of its other folders by name:
    datasets, runs (event files), checkpoints, sac (the MuJoCo plugin's SAC runs)."""
    from .artifacts import remove
    from .paths import CACHE_PARTS, cache_root

    if ref in CACHE_PARTS:
        import shutil

        folder = cache_root() / ref
        existed = folder.is_dir()
        if existed:
            shutil.rmtree(folder)
        if json_:
            print_json({"removed": [str(folder)] if existed else []})
        else:
            err.print(f"removed {folder}" if existed else f"nothing to remove: {folder} does not exist")
        return
    removed = remove(ref)
    if json_:
        print_json({"removed": [str(p) for p in removed]})
        return
    err.print(f"removed {len(removed)} artifact(s)")
    kept = _other_cache_parts() if ref == "all" else []
    if kept:
        err.print("kept: " + ", ".join(f"{name}/ ({size / 1e6:.1f} MB)" for name, _, (_, size) in kept)
                  + "; `ractd cache rm NAME` deletes one of them", soft_wrap=True)


# ----------------------------------------------------------------------------------------- fetch
@app.command()
def fetch(
    task: Optional[str] = typer.Argument(None, help="Task name, e.g. maze2d-umaze (see `ractd envs`); or give it as --env, as every other command takes it."),
    env: Optional[str] = typer.Option(None, "--env", help="The task, as other commands take it (instead of TASK)."),
    source: str = typer.Option("minari", help="`minari`: download the published Minari dataset; `local`: generate it here."),
    steps: Optional[int] = typer.Option(None, min=1, max=10 * STEPS_MAX, help="Env steps to generate (local source; default: the adapter's)."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the local generator. The same seed gives the same data on the same CPU type and --threads; MuJoCo's SAC-made data differ between CPU types (docs/commands/fetch.md)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024, help="torch threads of the local generator (default 1, on any machine). MuJoCo's SAC run depends on the thread count: another count makes other data, so the default does not follow the machine's cores. Recorded in the dataset (`made_on`)."),
    force: bool = typer.Option(False, "--force", help="Re-fetch even if the dataset is already in the cache (a damaged one is re-fetched without it)."),
    json_: bool = JsonOpt,
) -> None:
    """Download (or generate locally) the offline dataset of TASK into the cache, in Minari format.

    A dataset already in the cache is checked against the checksums recorded when it was fetched: a
    damaged one (a file truncated, missing or changed) is fetched again, a local one with the steps,
    seed and threads it was made with."""
    from .data import store
    from .data.fetch import check_fetch_args, default_steps, will_generate
    from .data.fetch import fetch as do_fetch
    from .registry import get_task

    if task is not None and env is not None and task != env:
        raise UsageError(f"two tasks given ({task} and --env {env}); give one")
    task = task or env
    if task is None:
        raise UsageError("name the task: `ractd fetch TASK` or `ractd fetch --env TASK` (`ractd envs` lists them)")
    from .ui import progress

    check_fetch_args(source, steps, seed, threads)
    adapter, spec = get_task(task)
    present = store.local_dataset_id(spec) if source == "local" else (store.remote_dataset_id(spec) if spec.minari_ids else None)
    damaged = store.dataset_problem(present) if present and store.dataset_exists(present) and not force else None
    if damaged:  # repair: fetch it again, with the recipe it was made with unless told otherwise
        made = store.local_recipe(present)
        steps = steps if steps is not None else made.get("steps")
        seed = seed if seed != 0 or made.get("seed") is None else int(made["seed"])
        threads = threads if threads is not None else store.recipe_threads(made)
        err.print(f"[yellow]dataset {present} is damaged ({damaged}): fetching it again[/]", soft_wrap=True)
        force = True
    if source == "local" and will_generate(spec, force=force):
        with progress(f"generating {task}", steps or default_steps(spec)) as advance:
            dataset_id = do_fetch(adapter, spec, source=source, steps=steps, seed=seed, threads=threads, force=force,
                                  progress=advance)
    elif source == "local":  # already there: fetch only checks the recipe, no bar to show
        dataset_id = do_fetch(adapter, spec, source=source, steps=steps, seed=seed, threads=threads, force=force)
    else:  # minari shows its own download progress
        dataset_id = do_fetch(adapter, spec, source=source, force=force)
    meta = store.read_metadata(dataset_id)
    info = {"task": task, "dataset_id": dataset_id, "path": str(store.dataset_path(dataset_id)), "source": source,
            "episodes": meta.get("total_episodes"), "steps": meta.get("total_steps")}
    if source == "local":
        info["made_on"] = store.recipe_in(meta).get("made_on")  # None: made before ractd recorded it
    if json_:
        print_json(info)
    else:
        err.print(f"dataset [bold]{dataset_id}[/]: {info['episodes']} episodes, {info['steps']} steps, in {info['path']}")


# -------------------------------------------------------------------------------------- training
PresetOpt = typer.Option("quick", "--preset", help="quick: CPU-sized (minutes); paper: the paper's network sizes (GPU); tiny: seconds, for smoke tests.")
StepsOpt = typer.Option(None, "--steps", min=1, max=STEPS_MAX, help="Gradient steps (default: from the preset).")
BatchOpt = typer.Option(None, "--batch-size", min=1, max=BATCH_MAX, help="Minibatch size (default: from the preset).")
LrOpt = typer.Option(None, "--lr", help="Peak AdamW learning rate (default: from the preset).")
SeedOpt = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed: the same seed, data and options give the same artifact (bit-identical weights, same id) on the same CPU type, torch version and thread count (OMP_NUM_THREADS), whatever the interruptions (--resume); another thread count or CPU may change the last bits and so the id. The artifact records these in `made_on`.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run of the same configuration from its last checkpoint.")
NameOpt = typer.Option(None, "--name", help="A name for the model made (letters, digits, . _ -; starting with a letter), recorded in it and shown by `cache list`; any command's --model/--teacher/--reward then takes it instead of the id (the newest of that name). Outside the model's content id.")
LogDirOpt = typer.Option(None, "--log-dir", help="Where the TensorBoard event files go (each loss term and the learning rate, every step; one folder per run). Default: the cache's runs/ when tensorboard is installed. `ractd curves` draws them.")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32 (default), bf16 or fp16: autocast of the forward pass (fp16 with a gradient scaler); weights, optimiser and EMA stay fp32. Recorded in the artifact when not fp32. fp32 stays the default on CUDA too: bf16 was within 7% of its speed on the paper's hopper U-Net (docs/notes/lab-log.md).")
NprocOpt = typer.Option(1, "--nproc", help="Train as N data-parallel processes on this machine: relaunches the command under torchrun (gloo on CPU, nccl on CUDA; DistributedDataParallel). Each process draws its own batches (seeded by seed and rank): the effective batch is N x --batch-size. Same seed and N, same artifact. See docs/scaling.md.")
DatasetOpt = typer.Option(None, "--dataset", help="Dataset id (default: the one fetched for the task).")
FollowOpt = typer.Option(None, "--follow", help="State-planning tasks: how the one open-loop plan per episode is executed. inverse (default, the RACTD paper's): the inverse-dynamics model a_t = f(s_t, s*_{t+1}) of the plan s*; track: the adapter's tracking rule a = (p*-p) + (v*-v); controller: the adapter's PD controller.")
ReplanOpt = typer.Option(False, "--replan", help="State-planning tasks: plan again from the current state whenever the plan runs out (default, the paper's: one plan per episode, then hold its last state at rest). A deviation, recorded in the result; on Maze2d it lifts every planner (docs/notes/lab-log.md).")
InitNoiseOpt = typer.Option("unit", "--init-noise", help="Teacher and student sampling: where it starts. unit (default): x_T ~ N(0, I), the RACTD authors' code; edm: x_T = sigma_max z, EDM's and the paper's text. Recorded in the result.")
ClampOpt = typer.Option(True, "--clamp/--no-clamp", help="Teacher and student sampling: clamp every denoised estimate and student jump to the data's normalised range [-1, 1] (default, the RACTD authors' code); --no-clamp is the paper's text. Recorded in the result.")
SnapGoalOpt = typer.Option(False, "--snap-goal", help="With --follow controller: give the controller the goal, which snaps a target near it to the goal at rest (default off: the follower sees only the plan).")
ScoreScaleOpt = typer.Option(None, "--score-scale", help="Reference returns of the normalised score: d4rl (default, the paper's) or minari (Maze2d); a task without d4rl uses its own (see `ractd envs --json`).")
JitOpt = typer.Option(True, "--jit/--no-jit", help="Run every network call through a traced, frozen TorchScript graph (same math, less Python overhead).")
CudaGraphsOpt = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", help="On CUDA with --jit: replay the frozen graph as one CUDA graph per batch shape (captured on first use) instead of launching its kernels one by one; the same plans up to float rounding (closed-loop scores can then differ in the last digits). No effect on a CPU.")
EnvOpt = typer.Option(..., "--env", help="Task name (see `ractd envs`).")
DistanceOpt = typer.Option("huber", "--distance", help="d of the loss: huber (the paper's element-wise pseudo-Huber, c = 0.00054 sqrt(T*D)) or l2 (squared error).")


def _train_options(preset, steps, batch_size, lr, seed, device, resume, dataset, nproc=1, precision="fp32", log_dir=None, name=None):
    from .train.common import TrainOptions

    if nproc != 1:  # `ractd ... --nproc N` (N > 1) was relaunched under torchrun by main() before reaching here
        raise UsageError(f"--nproc must be at least 1 and given on the `ractd` command line (it launches torchrun), got {nproc}; "
                         f"under torchrun itself, leave it out")

    return TrainOptions(preset=preset, steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                        resume=resume, dataset=dataset, precision=precision, log_dir=None if log_dir is None else str(log_dir), name=name)


def _report_artifacts(arts, json_: bool) -> None:
    docs = [{"id": a.id, "name": a.meta.get("name"), "kind": a.kind, "task": a.task, "path": str(a.path), "losses": a.meta.get("losses", {}),
             "parents": a.meta.get("parents", []), "speed": a.meta.get("speed", {}),
             **{k: a.config[k] for k in ("loss_terms", "eval_curve", "selection", "validation", "fit_curve") if k in a.config}} for a in arts]
    if json_:
        print_json(docs[-1] if len(docs) == 1 else {"artifacts": docs})
        return
    for d in docs:
        losses = "  ".join(f"{k} {v:.4g}" for k, v in d["losses"].items())
        speed = d["speed"]
        rate = f", {speed['samples_per_s']:,.0f} samples/s over {speed['steps']} steps" if speed.get("steps") else ""
        named = f" \"{d['name']}\"" if d["name"] else ""
        err.print(f"saved {d['kind']} [bold]{d['id']}[/]{named} ({losses}{rate})")


@app.command("train-teacher")
def train_teacher(
    env: str = EnvOpt, preset: str = PresetOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt, nproc: int = NprocOpt, precision: str = PrecisionOpt, log_dir: Optional[Path] = LogDirOpt, name: Optional[str] = NameOpt,
    dataset: Optional[str] = DatasetOpt, distance: str = DistanceOpt,
    teacher_reward_weight: float = typer.Option(0.0, "--teacher-reward-weight", help="w > 0: a reward-aware teacher (the paper's Table 4 ablation), its loss adding -w R_psi of its own denoised estimates; needs a reward model (`ractd train-reward` first). 0 (default): the paper's unconditioned teacher. (Not distill's --reward-weight, the student's sigma.)"),
    old_reward_weight: Optional[float] = typer.Option(None, "--reward-weight", hidden=True, help="Deprecated name of --teacher-reward-weight."),
    reward_ref: str = typer.Option("latest", "--reward", help="Reward artifact id/path for --teacher-reward-weight (default: latest for the task)."),
    net: Optional[str] = typer.Option(None, "--net", help="The denoiser network instead of the preset's: quick (64/128/256), small (16/32/64), mujoco, maze2d-umaze|medium|large (the paper's), mlp. For sizing studies; recorded in the artifact, inherited by its students."),
    plan_stride: Optional[int] = typer.Option(None, "--plan-stride", help="State-planning tasks: plan every k-th state (H/k knots, followed along the straight lines between them), recorded in the artifact and inherited by its students. Default: the preset's, 1 (every state, the paper's) except where a task's quick preset sizes it for a CPU (`ractd envs --json` shows the presets)."),
    horizon: Optional[int] = typer.Option(None, "--horizon", help="State-planning tasks: states per plan H. Default: the preset's, the task's (the paper's, Table 2: maze2d 128/256/384) except where a task's quick preset sizes it by measurement (`ractd envs --json` shows the presets): a deviation for goals farther than the data travels in the paper's H steps. A multiple of --plan-stride. Recorded in the artifact (as H/k knots) and inherited by its students and every result."),
    windows: Optional[str] = typer.Option(None, "--windows", help="Training windows: full (RACTD's code: no window runs past an episode's end) or padded (every transition starts a window, padded by repeating the episode's last row). Default: the task's (`ractd envs --json`): full, except hopper-medium-replay's and the three mazes' padded, chosen by measurement (docs/results.md). Recorded in the artifact, inherited by its students. Endpoint plans (Maze2d): padded does not join episodes that continue one another, so a window that runs past an episode's end (a goal reached) ends there at rest."),
    eval_every: int = typer.Option(0, "--eval-every", help="Score the teacher (its EMA weights, the ones saved) every N steps and at the end in the environment, with --eval-sampler, the task's default follower: a learning curve, in the artifact and --json as eval_curve. 0: no evaluation. Training is the same either way."),
    eval_episodes: int = typer.Option(20, "--eval-episodes", help="Episodes per evaluation (seed 0: the starts of `ractd rollout`)."),
    eval_sampler: str = typer.Option("euler", "--eval-sampler", help="Sampler for --eval-every: euler (default, cheap), heun or ancestral, at --eval-nfe."),
    eval_nfe: int = typer.Option(15, "--eval-nfe", help="Steps of --eval-sampler (Euler 15 is the paper's DDIM-like row)."),
    keep: str = typer.Option("last", "--keep", help="With --eval-every: save the weights at the last step (last, default), those of the evaluation with the highest score (best: the RACTD authors' protocol, which keeps their top checkpoints by online test score; optimistic, as the same episodes choose and score it), or both, as two artifacts from one run (training is the same either way; --json lists both). Recorded in the artifact as `selection`."),
    json_: bool = JsonOpt,
) -> None:
    """Train the EDM diffusion teacher (and, for open-loop tasks, the inverse-dynamics model)."""
    from .registry import get_task
    from .train import teacher

    if eval_every < 0 or eval_episodes < 1 or eval_nfe < 1:
        raise UsageError("--eval-every must be >= 0, --eval-episodes and --eval-nfe at least 1")
    if old_reward_weight is not None:  # the option's name until issue 29: one name per meaning now
        if teacher_reward_weight not in (0.0, old_reward_weight):
            raise UsageError("give --teacher-reward-weight alone (--reward-weight is its deprecated name)")
        teacher_reward_weight = old_reward_weight
        err.print("deprecated: `train-teacher --reward-weight` is now `--teacher-reward-weight` (w of the reward-aware teacher; "
                  "`distill --reward-weight` is the student's sigma); the old name will be removed in ractd 0.3")
    adapter, spec = get_task(env)
    opts = _train_options(preset, steps, batch_size, lr, seed, device, resume, dataset, nproc, precision, log_dir, name)
    evaluator = None
    if eval_every:
        from .errors import unknown_choice
        from .evaluate import score_artifact
        from .models import resolve_device
        from .planner import TEACHER_SAMPLERS

        if eval_sampler not in TEACHER_SAMPLERS:
            raise UsageError(unknown_choice("--eval-sampler", eval_sampler, TEACHER_SAMPLERS))

        def evaluator(art):
            return score_artifact(adapter, spec, art, episodes=eval_episodes, device=resolve_device(opts.device),
                                  sampler=eval_sampler, nfe=eval_nfe)

    arts = teacher.train_teacher(adapter, spec, opts,
                       distance=distance, reward_weight=teacher_reward_weight, reward_ref=reward_ref, plan_stride=plan_stride,
                       net_name=net, windows=windows, evaluator=evaluator, eval_every=eval_every,
                       eval_label={"episodes": eval_episodes, "seed": 0, "sampler": eval_sampler, "nfe": eval_nfe}, keep=keep,
                       horizon=horizon)
    _report_artifacts(arts, json_)


@app.command("train-reward")
def train_reward(
    env: str = EnvOpt, preset: str = PresetOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt, nproc: int = NprocOpt, precision: str = PrecisionOpt, log_dir: Optional[Path] = LogDirOpt, name: Optional[str] = NameOpt,
    dataset: Optional[str] = DatasetOpt,
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of episodes held out (chosen by --seed) to measure the fit: held-out MSE and R^2 are printed and kept in the artifact. 0.1 as RACTD's configs; 0: fit on every episode, no measurement."),
    eval_every: int = typer.Option(0, "--eval-every", help="Also measure the held-out fit every N steps: the learning curve goes into the artifact and --json as fit_curve. 0: only at the end. Training is the same either way."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="Discount of the return-to-go R_psi regresses, in (0, 1] (default: the task's; `ractd envs --json` shows it: 0.99, as RACTD's code, except hopper-medium-replay's 0.997, chosen by measurement; the paper's App. B.2 says 0.997 hopper, 0.99 walker2d, 0.9 halfcheetah). Recorded in the artifact."),
    termination_penalty: Optional[float] = typer.Option(None, "--termination-penalty", help="Added to the reward of a true termination (a fall, not a time-out) in the return-to-go (default: the task's: 0, as RACTD's code, except hopper-medium-replay's -100, chosen by measurement; the paper's App. B.2 says -100 for MuJoCo). Recorded in the artifact."),
    reads: Optional[str] = typer.Option(None, "--reads", help="What R_psi reads of a plan (default: the task's; `ractd envs --json` shows it as reward_input). Action chunks: state_action, R_psi(s_n, a_n), the paper's eq. 8 and its authors' code; state_action_chunk, R_psi(s_n, a_n..a_{n+c-1}), every planned action (not in RACTD; docs/notes/lab-log.md has what it measured). State plans have one reading. Recorded in the artifact; `distill` reads plans as its R_psi does."),
    json_: bool = JsonOpt,
) -> None:
    """Train the return-to-go model R_psi used by `distill --reward-weight` (independent of the teacher).

    R_psi is fitted on 90% of the episodes; its R^2 on the other 10% (1 - MSE / variance of the
    return-to-go: 0 is no better than the mean, 1 is exact) says how much its gradient, which steers
    the student, can be trusted."""
    from .registry import get_task
    from .train import reward

    adapter, spec = get_task(env)
    art = reward.train_reward(adapter, spec, _train_options(preset, steps, batch_size, lr, seed, device, resume, dataset, nproc, precision, log_dir, name),
                     val_fraction=val_fraction, eval_every=eval_every, gamma=gamma, termination_penalty=termination_penalty, reads=reads)
    _report_artifacts([art], json_)


@app.command()
def distill(
    env: str = EnvOpt,
    reward_weight: Optional[float] = typer.Option(None, "--reward-weight", help="sigma of eq. 9, weight of -kappa R_psi(s, a_hat) with R_psi in [-1, 1] and kappa the task's reward scale (`ractd envs --json`: 1 for MuJoCo, where the default sigma is the RACTD authors' configs: Table 9's but for hopper-medium 1, hopper-medium-expert 0.5 and walker2d-medium-replay 0.5, where Table 9 prints 3, 0 and 1; Maze2d: the RACTD authors' weight per planned state times the plan's states, so that 1 is their code's weighting). Default: the task's; 0 gives plain CTD. Both are recorded in the student."),
    ctm_weight: Optional[float] = typer.Option(None, "--ctm-weight", help="alpha, weight of the CTM loss (default: the task's)."),
    dsm_weight: Optional[float] = typer.Option(None, "--dsm-weight", help="beta, weight of the student's DSM loss (default: the task's)."),
    teacher_steps: int = typer.Option(1, "--teacher-steps", help="The most Heun steps of the teacher (t to u on the 80-bin grid) behind each CTM target; each target draws its count in [1, N]. 1 (default) is RACTD's code (ode_steps_max 1); more costs teacher calls per step. Recorded in the artifact."),
    ode_pairs: int = typer.Option(0, "--ode-pairs", help="Not in RACTD: also regress the one-step jump G(x_T, T, 0) onto N plans the teacher solves from the same x_T before training (Heun over 80 bins, unit noise, clamped, at the conditions of N training windows; knowledge distillation), weighted --pair-weight. 0 (default): RACTD's loss alone. Recorded in the artifact; docs/notes/lab-log.md has what it measured."),
    pair_weight: float = typer.Option(1.0, "--pair-weight", help="Weight of the --ode-pairs term."),
    teacher_ref: str = typer.Option("latest", "--teacher", help="Teacher artifact id/path (default: latest for the task)."),
    reward_ref: str = typer.Option("latest", "--reward", help="Reward artifact id/path (default: latest for the task)."),
    preset: str = PresetOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt, nproc: int = NprocOpt, precision: str = PrecisionOpt, log_dir: Optional[Path] = LogDirOpt, name: Optional[str] = NameOpt,
    dataset: Optional[str] = DatasetOpt, distance: str = DistanceOpt,
    weights: str = typer.Option("raw", "--weights", help="What to save: raw = the student's weights at the last step (as the authors' code samples), ema = the training loop's EMA of them (an option; see docs/notes/lab-log.md)."),
    eval_every: int = typer.Option(0, "--eval-every", help="Score the student every N steps (and at the end) in the environment, one step per plan, the task's default follower; the curve goes into the artifact and --json as eval_curve (paper Figure 4). 0: no evaluation. Training is the same either way."),
    eval_episodes: int = typer.Option(20, "--eval-episodes", help="Episodes per evaluation (seed 0: the starts of `ractd rollout`)."),
    keep: str = typer.Option("last", "--keep", help="With --eval-every: save the weights at the last step (last, default), those of the evaluation with the highest score (best: the RACTD authors' protocol, which keeps their top checkpoints by online test score; optimistic, as the same episodes choose and score it), or both, as two artifacts from one run (training is the same either way; --json lists both). Recorded in the artifact as `selection`."),
    json_: bool = JsonOpt,
) -> None:
    """Distill the one-step student: alpha*CTM + beta*DSM + sigma*Reward (RACTD eq. 9), initialised from the teacher.

    The CTM target is the stop-gradient student (eq. 5-6), DSM regresses the one-step jump
    G(x_t, t, 0) (eq. 7), and the reward term (eq. 8) scores those same jumps, as the authors' code
    does. At the end it prints each weighted term's mean magnitude over the last 10% of steps (also
    kept in the artifact). MuJoCo's weights are the authors' configs (Table 9 but three tasks); see docs/commands/train.md.
    """
    from .registry import get_task
    from .train import distill as d
    from .train.fit import with_last_weights

    if eval_every < 0 or eval_episodes < 1:
        raise UsageError("--eval-every must be >= 0 and --eval-episodes at least 1")
    adapter, spec = get_task(env)
    opts = _train_options(preset, steps, batch_size, lr, seed, device, resume, dataset, nproc, precision, log_dir, name)
    evaluator = None
    if eval_every:
        from .evaluate import score_artifact
        from .models import resolve_device

        def evaluator(student):
            return score_artifact(adapter, spec, student, episodes=eval_episodes, device=resolve_device(opts.device))

    art = d.distill_student(adapter, spec, opts,
                teacher_ref=teacher_ref, reward_ref=reward_ref, alpha=ctm_weight, beta=dsm_weight, reward_weight=reward_weight,
                distance=distance, weights=weights, evaluator=evaluator, eval_every=eval_every,
                eval_label={"episodes": eval_episodes, "seed": 0}, keep=keep, teacher_steps=teacher_steps,
                n_pairs=ode_pairs, pair_weight=pair_weight)
    _report_artifacts(with_last_weights(art), json_)
    if not json_:
        terms = art.config["loss_terms"]
        err.print("weighted loss terms (mean magnitude, last 10% of steps): "
                  + "  ".join(f"{k} {v:.3g}" for k, v in terms.items()))


@app.command("train-proposer")
def train_proposer(
    env: str = EnvOpt, preset: str = PresetOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt, nproc: int = NprocOpt, precision: str = PrecisionOpt, log_dir: Optional[Path] = LogDirOpt, name: Optional[str] = NameOpt,
    dataset: Optional[str] = DatasetOpt, distance: str = DistanceOpt, json_: bool = JsonOpt,
) -> None:
    """Train the Trajectory Diffuser (Huang et al.), one artifact for `rollout --planner trajdiffuser`.

    Three networks on state plans of the task (H states: the authors' per-task horizon for MuJoCo,
    the task's own for Maze2d), in turn: inverse dynamics; the refiner, an EDM state-plan model
    conditioned on the return with classifier-free guidance (return dropped for half the batch) and
    the first state inpainted; the proposer, a causal transformer over (state, return-to-go) tokens.
    Returns are undiscounted. Steps per network from the preset (inverse-dynamics, teacher,
    proposer); --steps sets all three."""
    from .registry import get_task
    from .train import proposer

    adapter, spec = get_task(env)
    _report_artifacts([proposer.train_trajdiffuser(adapter, spec, _train_options(preset, steps, batch_size, lr, seed, device, resume, dataset, nproc, precision, log_dir, name),
                                    distance=distance)], json_)


# ---------------------------------------------------------------------------------------- curves
@app.command()
def curves(
    env: str = EnvOpt,
    log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="Where the runs wrote their event files (default: the cache's runs/)."),
    run: Optional[str] = typer.Option(None, "--run", help="Only the runs whose folder name contains this (e.g. teacher, student, a run key)."),
    model: Optional[str] = typer.Option(None, "--model", help="Only the runs that trained this artifact (its id or prefix; `ractd cache show ID` names them)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: every loss term and the learning rate against the step, one panel per run."),
    json_: bool = JsonOpt,
) -> None:
    """The training curves of a task's runs, from their TensorBoard event files (no server needed).

    Every trainer writes each loss term and the learning rate at every step (`--log-dir`, default the
    cache's runs/, one folder `<model>-<task>-<run key>` per run; a resumed run adds to its folder).
    `tensorboard --logdir <cache>/runs` shows the same files."""
    from .curves import plot_curves, read_run, run_dirs
    from .paths import runs_dir
    from .registry import get_task

    get_task(env)
    where = log_dir or runs_dir()
    wanted = None
    if model is not None:
        from .artifacts import load_artifact

        art = load_artifact(model, task=env)
        wanted = set(art.meta.get("runs") or [])
        if not wanted:
            raise RactdError(f"artifact {art.id} does not record its training runs (made before ractd recorded them); use --run")
    dirs = [d for d in run_dirs(where, env) if (run is None or run in d.name) and (wanted is None or d.name in wanted)]
    if not dirs:
        raise RactdError(f"no training runs of {env} under {where}" + (f" matching {run!r}" if run else "")
                         + (f" of model {model}" if model else "")
                         + "; train a model first (event files need the tensorboard package: `make install`)")
    data = {d.name: read_run(d) for d in dirs}
    if plot is not None:
        plot_curves(data, plot)
    if json_:
        print_json({"log_dir": str(where), "runs": data, **({"plot": str(plot)} if plot else {})})
        return
    table = Table(title=f"training runs of {env} under {where}")
    for col in ("run", "steps", "first loss", "last loss", "terms", "last evaluation"):
        table.add_column(col, justify="left" if col in ("run", "terms", "last evaluation") else "right")
    for name, tags in data.items():
        loss = tags.get("loss/loss", {"step": [], "value": []})
        terms = ", ".join(t[5:] for t in tags if t.startswith("loss/") and t != "loss/loss")
        score = tags.get("eval/score_mean")
        last_eval = f"{score['value'][-1]:.1f} at step {score['step'][-1]}" if score and score["value"] else "-"
        table.add_row(name, str(loss["step"][-1] if loss["step"] else 0), f"{loss['value'][0]:.4g}" if loss["value"] else "-",
                      f"{loss['value'][-1]:.4g}" if loss["value"] else "-", terms or "-", last_eval)
    err.print(table)
    if plot is not None:
        err.print(f"plot written to {plot}")


# ---------------------------------------------------------------------------------------- export
@app.command()
def export(
    env: str = EnvOpt,
    model: str = typer.Option("student", "--model", help="Artifact id/path, `teacher` (the latest), or `student` (default): the newest student at the task's default reward weight, else the newest RACTD one, else the newest CTD one; the choice is printed."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (run it with onnxruntime) or torchscript (torch.jit.load)."),
    out: Path = typer.Option(..., "-o", "--output", help="The file to write."),
    sampler: Optional[str] = typer.Option(None, help="Student: onestep (default). Teacher: euler (default) or heun, unrolled into the graph."),
    nfe: Optional[int] = typer.Option(None, "--nfe", min=1, max=NFE_MAX, help="Teacher: network calls (default 15 for euler, 159 for heun)."),
    init_noise: str = InitNoiseOpt,
    clamp: bool = ClampOpt,
    json_: bool = JsonOpt,
) -> None:
    """Write a planner as one self-contained graph: (past states, goal, noise) -> plan, in env units.

    The normalisers are inside and the initial noise N(0, I) is an input, so the caller controls the
    randomness. Inputs `past` (B, history, obs_dim), `goal` (B, goal_dim; width 0 for tasks without
    one), `noise` (B, horizon, plan_dim); output `plan` (B, horizon, plan_dim): actions for MuJoCo and
    Kitchen, states for Maze2d. The file's metadata names the task, dimensions, artifact and sampler.
    """
    from .export import export as do_export
    from .planner import Sampling
    from .registry import get_task
    from .resolve import load_for_planning

    if out.is_dir():
        raise UsageError(f"-o {out} is a folder; give the file to write, e.g. -o {out / ('plan.' + {'torchscript': 'pt'}.get(fmt, fmt))}")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: the folder {out.parent} does not exist; create it first")
    sampling = Sampling(init_noise, clamp)
    adapter, spec = get_task(env)
    from .export import FORMATS

    if fmt not in FORMATS:
        raise UsageError(unknown_choice("--format", fmt, FORMATS))
    loaded = load_for_planning(model, spec)
    if model == "student":
        from .resolve import student_choice

        err.print(student_choice(loaded.art, spec))
    meta = do_export(loaded.art, spec, out, fmt=fmt, sampler=sampler, nfe=nfe, sampling=sampling)
    doc = {"path": str(out), "format": fmt, **meta}
    if json_:
        print_json(doc)
        return
    err.print(f"wrote {out} ({fmt}): {meta['artifact_kind']} {meta['artifact_id']} {meta['sampler']}, "
              f"plan ({meta['horizon']}, {meta['plan_dim']}) {meta['plan']}s from past ({meta['history']}, {meta['obs_dim']}), "
              f"goal ({meta['goal_dim']}), noise ({meta['horizon']}, {meta['plan_dim']})")


# ---------------------------------------------------------------------------------------- rollout
WorkersOpt = typer.Option(
    1, "--workers",
    help="Run the episodes in N spawned CPU processes, each with 1/N of torch's threads and its own copy of the models (a few seconds to start). "
         "Each worker runs a contiguous part of the episodes exactly as one process would at its batch and thread count (same starts and noise "
         "streams); on MuJoCo, whose returns carry the network's batch- and thread-dependent rounding, scores then agree within their standard "
         "errors, not to the digit (docs/commands/rollout.md). The same --workers, --batch and seed give the same result. CPU only; not with --video.",
)
@app.command()
def rollout(
    env: str = EnvOpt,
    model: Optional[str] = typer.Option(None, "--model", help="Artifact id/path, `teacher` (the latest), or `student` (default): the newest student at the task's default reward weight, else the newest RACTD one, else the newest CTD one; the choice is printed. Not with --planner trajdiffuser (see --proposer)."),
    sampler: Optional[str] = typer.Option(None, help="onestep|multistep (student), heun|euler|ancestral (teacher), euler|heun (trajdiffuser refinement). Default: onestep / heun / euler."),
    nfe: Optional[int] = typer.Option(None, "--nfe", min=1, max=NFE_MAX, help="Network calls per plan (default: 1 student; 159 = 80 Heun bins teacher, which the paper counts as NFE 80; 15 Euler/ancestral). A student with --nfe k > 1 samples in k steps (the authors' chain: re-noise to sigma 27, then 54)."),
    planner: str = typer.Option("diffusion", "--planner", help="diffusion: sample the teacher/student; trajdiffuser: the Trajectory Diffuser (`train-proposer`): a return-conditioned transformer proposes states, a return-guided diffusion model refines them, inverse dynamics acts."),
    proposer: Optional[str] = typer.Option(None, "--proposer", help="trajdiffuser: its artifact id/path (default: the task's latest)."),
    refine_steps: Optional[int] = typer.Option(None, "--refine-steps", help="trajdiffuser: refiner steps K (default 5, the authors'; 0 = the proposal alone)."),
    refine_sigma: Optional[float] = typer.Option(None, "--refine-sigma", help="trajdiffuser: noise level (EDM sigma) the proposal is lifted to before refining (default 0.08, the authors' last 5 of 100 DDPM steps)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="trajdiffuser: classifier-free guidance weight w on the return (default: the task's, 1.2 hopper, 1.1 other MuJoCo; 0 = unconditional, 1 = conditional)."),
    target_return: Optional[float] = typer.Option(None, "--target-return", help="trajdiffuser: the return (env units, undiscounted) plans are asked for, the same at every decision (the planner sees no rewards to subtract, unlike its authors' runner). Default: the task's, else the best return-to-go of its training data."),
    candidates: int = typer.Option(1, "--candidates", help="trajdiffuser: plans drawn per decision; with N > 1 the reward model (--reward, default the latest) keeps the best."),
    reward_ref: Optional[str] = typer.Option(None, "--reward", help="trajdiffuser --candidates N > 1: reward artifact id/path (default: latest for the task)."),
    video: Optional[Path] = typer.Option(None, "--video", help="Write the first --video-episodes episodes as an MP4: Maze2d draws the maze, the plan and the path (no OpenGL needed); MuJoCo and Kitchen render offscreen (MUJOCO_GL=egl or osmesa). Needs imageio-ffmpeg (`make install`)."),
    video_episodes: int = typer.Option(1, "--video-episodes", help="How many episodes (the first ones) --video records."),
    episodes: int = typer.Option(100, min=1, max=EPISODES_MAX, help="Evaluation episodes."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed: episode i uses seed+i, so planners are compared on the same starts."),
    batch: int = typer.Option(50, help="Episodes run in lockstep (planner batch size)."),
    workers: int = WorkersOpt,
    follow: Optional[str] = FollowOpt,
    replan: bool = ReplanOpt,
    snap_goal: bool = SnapGoalOpt,
    init_noise: str = InitNoiseOpt,
    clamp: bool = ClampOpt,
    score_scale: Optional[str] = ScoreScaleOpt,
    device: str = DeviceOpt,
    jit: bool = JitOpt,
    cuda_graphs: bool = CudaGraphsOpt,
    json_: bool = JsonOpt,
) -> None:
    """Run a planner in the real environment: normalised score, return, success rate, latency."""
    from .evaluate import Execution, check_workers
    from .evaluate import rollout as do_rollout
    from .models import resolve_device
    from .planner import Sampling
    from .registry import get_task
    from .resolve import TrajDiffuserOptions

    if episodes < 1 or batch < 1:
        raise UsageError("--episodes and --batch must be at least 1")
    check_seed(seed)
    check_workers(workers, resolve_device(device), video=video is not None)
    sampling = Sampling(init_noise, clamp)
    adapter, spec = get_task(env)
    execution = Execution.of(adapter, spec, follow, replan=replan, snap_goal=snap_goal)  # usage errors before anything loads
    recorder = None
    if video is not None:
        from .video import VideoRecorder

        if video_episodes < 1:
            raise UsageError("--video-episodes must be at least 1")
        if video.suffix.lower() != ".mp4":  # the file is an H.264 MP4 whatever its name: say so rather than mislabel it
            raise UsageError(f"--video writes an MP4 video; name it {video.with_suffix('.mp4')}")
        recorder = VideoRecorder(adapter, spec, video, min(video_episodes, episodes))
    if planner != "trajdiffuser" and model in (None, "student"):  # say which student "the student" is
        from .planner import STUDENT_SAMPLERS, TEACHER_SAMPLERS
        from .resolve import newest_student, student_choice

        if sampler is not None and sampler not in STUDENT_SAMPLERS + TEACHER_SAMPLERS:
            raise UsageError(unknown_choice("--sampler", sampler, STUDENT_SAMPLERS + TEACHER_SAMPLERS))

        chosen = newest_student(spec)
        if chosen is not None:
            model = chosen.id
            err.print(student_choice(chosen, spec))
    td_given = any(v is not None for v in (refine_steps, refine_sigma, guidance, target_return, reward_ref)) or candidates != 1
    td_opts = TrajDiffuserOptions(refine_steps=refine_steps, refine_sigma=refine_sigma, guidance=guidance, target_return=target_return,
                                  candidates=candidates, reward=reward_ref) if planner == "trajdiffuser" or td_given else None
    try:
        res = do_rollout(adapter, spec, model, sampler=sampler, nfe=nfe, episodes=episodes, seed=seed, batch=batch,
                         execution=execution, score_scale=score_scale, device=device, show_progress=True,
                         planner=planner, proposer=proposer, trajdiffuser=td_opts, jit=jit, cuda_graphs=cuda_graphs, video=recorder,
                         workers=workers, sampling=sampling)
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    summary = res.summary()
    if recorder is not None:
        summary["video"] = recorder.close()
        err.print(f"video written to {video}: {summary['video']['frames']} frames at {summary['video']['fps']} fps")
    if summary["jit_error"]:
        err.print(f"note: the frozen TorchScript graph could not be built ({escape(summary['jit_error'])}); the planner ran eager")
    if json_:
        summary["per_episode"] = [{"return": e.ret, "score": e.score, "length": e.length, "success": e.success, **e.checks} for e in res.episodes]
        print_json(summary)
        return
    succ = f", success {summary['success_rate']:.0%}" if summary["success_rate"] is not None else ""
    what = f"{summary['model_kind']} {summary['sampler']}"
    if summary.get("planner") == "trajdiffuser":
        what = (f"trajdiffuser {summary['proposer_id'][:8]} (H={summary['plan_horizon']}, K={summary['refine_steps']} {summary['sampler']} "
                f"steps from sigma {summary['refine_sigma']:g}, guidance {summary['guidance']:g}, target return {summary['target_return']:g}"
                + (f", best of {summary['candidates']}" if summary["candidates"] > 1 else "") + ")")
    nfe = f"NFE {summary['nfe_paper']}, {summary['nfe']} network calls" if summary["nfe_paper"] != summary["nfe"] else f"NFE {summary['nfe']}"
    err.print(f"{spec.name} {what} ({nfe}{_sampling(summary)}{_following(summary)}): "
              f"{summary['score_scale']} score [bold]{summary['score_mean']:.1f} ± {summary['score_stderr']:.1f}[/] over {summary['episodes']} episodes, "
              f"return {summary['return_mean']:.2f}{succ}, {summary['ms_per_action']:.2f} ms/action, {summary['wall_s']:.1f} s")
    if "plan_reaches_goal_rate" in summary:
        err.print(f"first plans: {summary['plan_reaches_goal_rate']:.0%} reach the goal, {summary.get('plan_hits_wall_rate', 0):.0%} pass through a wall")


def _following(doc: dict) -> str:
    """', follow inverse, one plan per episode' (and so on) for a states task's result, '' for a chunk task's."""
    if not doc.get("follow"):
        return ""
    replan = "replan when the plan runs out" if doc["replan"] else "one plan per episode"
    stride = doc.get("plan_stride")
    plans = f", {doc['planning']} plans" if doc.get("planning") else ""
    plans += f" of {doc['horizon']} states" if doc.get("horizon") else ""
    plans += f", every {stride}th planned" if stride not in (None, 1, "1") else ""
    return f"{plans}, follow {doc['follow']}, {replan}" + (", goal snapping" if doc["snap_goal"] else "")


def _sampling(doc: dict) -> str:
    """', x_T = z, clamped' (and so on) for a result that records its initial noise and clamping, with
    the RACTD student's R_psi return-to-go where it has one."""
    if doc.get("init_noise") is None:
        return ""
    padded = ", padded windows" if doc.get("windows") == "padded" else ""
    from .bench import return_to_go

    rtg = doc.get("return_to_go") or (return_to_go(doc) if doc.get("rtg_gamma") is not None else None)  # bench's / rollout's
    rtg = f", R_psi's return-to-go {rtg}" if rtg else ""
    return f", x_T = {'z' if doc['init_noise'] == 'unit' else 'sigma_max z'}" + (", clamped" if doc.get("clamp") else ", unclamped") + padded + rtg


# ------------------------------------------------------------------------------------------ bench
@app.command()
def bench(
    env: str = EnvOpt,
    episodes: int = typer.Option(20, min=1, max=EPISODES_MAX, help="Rollout episodes per method (scores); ignored with --latency-only."),
    teacher_episodes: Optional[int] = typer.Option(None, "--teacher-episodes", help="Episodes of the 80-bin Heun teacher row alone (default: --episodes): its 159 network calls per decision can make 100 closed-loop MuJoCo episodes take hours on a CPU. Each row records its episode count."),
    repeats: int = typer.Option(50, help="Least number of timed planner calls per method at batch 1 (after 5 warm-up calls; fast planners are called for at least 1 s)."),
    latency_only: bool = typer.Option(False, "--latency-only", help="Only time the planners; skip the rollouts."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: return distribution per method (and planned paths for Maze2d); the table goes beside it as markdown (same name, .md)."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the rollouts (same starts for every method)."),
    workers: int = WorkersOpt,
    follow: Optional[str] = FollowOpt,
    replan: bool = ReplanOpt,
    snap_goal: bool = SnapGoalOpt,
    init_noise: str = InitNoiseOpt,
    clamp: bool = ClampOpt,
    score_scale: Optional[str] = ScoreScaleOpt,
    device: str = DeviceOpt,
    jit: bool = JitOpt,
    cuda_graphs: bool = CudaGraphsOpt,
    runtime: str = typer.Option("torch", "--runtime", help="torch (default); onnxruntime also exports the one-step RACTD student to ONNX and times it on onnxruntime beside its frozen graph (a latency row; needs the export extra)."),
    student: Optional[str] = typer.Option(None, "--student", help="The RACTD student to bench (id, id prefix or path); its teacher is the teacher of every row. Default: the newest student of the task at the task's own reward weight sigma (`ractd envs`), else the newest at any weight > 0."),
    ctd: Optional[str] = typer.Option(None, "--ctd", help="The CTD student (reward weight 0) to bench. Default: the newest distilled from the RACTD student's teacher."),
    peers: Optional[list[Path]] = typer.Option(None, "--peers", help="A JSON of standard offline RL (BC, BC on the best 10%, TD3+BC, IQL; d3rlpy) trained on the same dataset and scored on the same episodes, written by scripts/peers.py in an environment of its own (docs/commands/bench.md): its rows go under the data's. Repeatable: the rows of several files (e.g. `--methods` run as halves side by side), each method once."),
    also: Optional[list[str]] = typer.Option(None, "--also", help="One more student of the same teacher to bench, one step per plan (repeatable): each row says its reward weight and whether it holds its last weights or those selected on online score (`distill --keep best`, the authors' protocol; optimistic)."),
    json_: bool = JsonOpt,
) -> None:
    """Compare the teacher's samplers and the students on speed and score, on this machine, in one run.

    Every row uses one teacher; the table's footer names the teacher and students by id, with the
    RACTD student's reward weight sigma (the JSON rows carry `model_id` and `reward_weight`)."""
    from . import bench as b
    from .adapters import resolve_score_scale
    from .evaluate import Execution, check_workers
    from .models import resolve_device
    from .registry import get_task

    if episodes < 1 or repeats < 1 or (teacher_episodes is not None and teacher_episodes < 1):
        raise UsageError("--episodes, --teacher-episodes and --repeats must be at least 1")
    check_seed(seed)
    adapter, spec = get_task(env)
    execution = Execution.of(adapter, spec, follow, replan=replan, snap_goal=snap_goal)  # usage errors before "no models"
    from .planner import Sampling

    sampling = Sampling(init_noise, clamp)
    check_workers(workers, resolve_device(device))
    resolve_score_scale(spec, score_scale)
    if runtime not in b.RUNTIMES:
        raise UsageError(f"unknown --runtime {runtime!r}; use one of {', '.join(b.RUNTIMES)}")
    b.require_models(spec)
    out = b.bench_planners(adapter, spec, episodes=episodes, teacher_episodes=teacher_episodes, seed=seed, repeats=repeats, latency_only=latency_only, device=device, jit=jit, cuda_graphs=cuda_graphs,
                execution=execution, score_scale=score_scale, runtime=runtime, student=student, ctd=ctd, sampling=sampling, also=also or (), peers=peers or (),
                workers=workers)
    if plot is not None:
        from .plots import plot_bench

        plot_bench(out.doc, out.results, spec, plot, plans=out.plans, background=out.background)
        out.doc["plot"] = str(plot)
    out = out.doc
    title = (f"ractd bench {spec.name} on {out['device']}" + _sampling(out) + _following(out)
             + ("" if latency_only else f", {episodes} episodes, {out['score_scale']} scores"))
    head, body = b.table(out)
    if plot is not None:  # the same table as markdown beside the plot
        plot.with_suffix(".md").write_text(f"{title}\n\n{b.markdown(head, body)}\n\n{b.models_line(out['rows'])}\n")
        out["table"] = str(plot.with_suffix(".md"))
    if json_:
        print_json(out)
        return
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    if err.is_terminal and sum(widths) + 3 * len(widths) + 1 <= err.width:
        table = Table(title=title)
        for col in head:
            table.add_column(col, justify="right" if col != "method" else "left")
        for cells in body:
            table.add_row(*cells)
        err.print(table)
    else:  # a log file or a narrow terminal: markdown, no cell cut short
        err.print(escape(title), soft_wrap=True)
        err.print(escape(b.markdown(head, body)), soft_wrap=True)
    err.print(b.models_line(out["rows"]))
    if out["forward_ms"]:
        err.print(f"bare network forward: {out['forward_ms']:.3f} ms; one-step student / forward = {out['forward_overhead']:.2f}")
    for r in out["rows"]:
        if "vs_frozen_torch" in r:
            err.print(f"{r['method']}: {r['vs_frozen_torch']:.2f}x the latency of the frozen torch graph, same run")
    if plot is not None:
        err.print(f"plot written to {plot}, the table as markdown to {plot.with_suffix('.md')}")


@app.command()
def reproduce(
    task: str = typer.Argument(..., help="The task (`ractd envs`)."),
    what: str = typer.Option("table", "--what", help="table: the task's results table beside the paper's (Tables 1-2, 11); sweep: score against training step by reward weight (Figure 4); table4: where the reward model enters (Table 4)."),
    episodes: int = typer.Option(100, min=1, max=EPISODES_MAX, help="Episodes per row (table) or per cell (table4)."),
    teacher_episodes: Optional[int] = typer.Option(None, "--teacher-episodes", min=1, max=EPISODES_MAX, help="table: episodes of the Heun teacher row (default: --episodes)."),
    train_args: str = typer.Option("", "--train-args", help='Options of every training command, e.g. "--preset tiny".'),
    teacher_args: str = typer.Option("", "--teacher-args", help='table: options of train-teacher alone, after --train-args, e.g. "--steps 24000".'),
    bench_args: str = typer.Option("", "--bench-args", help='table: options of bench, e.g. "--follow track" (Maze2d).'),
    reward_weights: str = typer.Option("", "--reward-weights", help='sweep: the reward weights, space-separated (default: Figure 4\'s, "0 0.3 0.5 0.7 1 1.5").'),
    eval_every: int = typer.Option(500, "--eval-every", min=1, help="sweep: training steps between evaluations."),
    eval_episodes: int = typer.Option(20, "--eval-episodes", min=1, max=EPISODES_MAX, help="sweep: episodes per evaluation."),
    student_weight: Optional[float] = typer.Option(None, "--student-weight", help="table4: the RACTD students' reward weight (default: the task's, `ractd envs --json`)."),
    teacher_weight: Optional[float] = typer.Option(None, "--teacher-weight", help="table4: the reward-aware teacher's weight (default: the students')."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="sweep, table4: the unconditioned teacher's id prefix (default: the newest, trained if none)."),
    reward: Optional[str] = typer.Option(None, "--reward", help="sweep, table4: the reward model's id prefix (default: the newest, trained if none)."),
    select_every: int = typer.Option(0, "--select-every", min=0, help="table: distil every student (each --seeds seed's CTD and RACTD) scored online every N steps and saved twice from that one run (`distill --keep both`): its last weights, the table's rows, and those of its best evaluation (the RACTD authors' protocol), benched as rows of their own beside them (optimistic: the same starts choose and score them) and pooled across seeds apart. 0 (default): last weights only, trained without evaluations."),
    select_episodes: int = typer.Option(20, "--select-episodes", min=1, max=EPISODES_MAX, help="table: episodes per online evaluation with --select-every (the authors' students: 20)."),
    seeds: int = typer.Option(1, "--seeds", min=1, max=20, help="table: distil CTD and RACTD with this many seeds (the chain's, 0 unless --train-args give --seed K, then K+1, ...) from the same teacher and reward model, bench each, and add each kind's mean and standard error across seeds and RACTD - CTD: training's own spread, which the episodes' errors do not show. 1 (default): one student each, as the paper's tables (their errors are over planning seeds)."),
    jobs: int = typer.Option(1, "--jobs", min=1, max=64, help="Train up to N models at once where the chain has independent ones (the teacher beside R_psi; the students), each process with 1/N of torch's threads and its output in OUT/logs/. On the 2-core CPU two one-thread distills at once did 1.28x the work of one two-thread distill after another (docs/notes/lab-log.md). A model trained on another thread count may differ in its last bits, and so in its id (--seed of train-teacher); the chain takes models of either. 1 (default): one after the other, output shown."),
    out: Path = typer.Option(Path("out"), "--out", help="Folder of the tables, JSON and plots."),
) -> None:
    """Reproduce one of the paper's tables or figures for TASK from nothing.

    Prints every `ractd` command before it runs it, and skips each step whose output the cache holds (a model trained with the chain's own options: one trained with other --steps, --lr, preset or seed is an experiment and not taken); training commands run with --resume, so after a stop the same command continues where it stopped. `make results`, `make sweep` and `make table4` call it."""
    import shlex

    from . import reproduce as r
    from .registry import get_task

    if what not in r.WHAT:
        raise UsageError(unknown_choice("--what", what, r.WHAT))
    get_task(task)  # an unknown task is a usage error before anything runs
    try:
        sweep_weights = [float(w) for w in reward_weights.split()] or list(r.SWEEP_WEIGHTS)
        chain = r.Chain(task, shlex.split(train_args), jobs=jobs, logs=out / "logs")  # a --seed there that is not an integer: a usage error now
        teacher_split, bench_split = shlex.split(teacher_args), shlex.split(bench_args)
    except ValueError as e:
        raise UsageError(f"--reward-weights, --train-args, --teacher-args and --bench-args: {e}") from None
    if what == "table":
        r.results_table(chain, episodes=episodes, teacher_episodes=teacher_episodes, out=out, teacher_args=teacher_split,
                        bench_args=bench_split, selection=(select_every, select_episodes) if select_every else None, seeds=seeds)
    elif what == "sweep":
        r.reward_sweep(chain, weights=sweep_weights, eval_every=eval_every, eval_episodes=eval_episodes, out=out,
                       teacher=teacher, reward=reward)
    else:
        r.where_reward_enters(chain, episodes=episodes, out=out, student_weight=student_weight, teacher_weight=teacher_weight,
                              teacher=teacher, reward=reward)


TRAIN_COMMANDS = ("train-teacher", "train-reward", "distill", "train-proposer")
"""The commands ``--nproc N`` applies to."""


def main() -> None:
    """Console-script entry point. ``ractd <training command> ... --nproc N`` (N > 1) relaunches itself
    as N torchrun workers (:func:`distributed.launch`). Rank 0 draws the progress and prints the result;
    a worker that stops leaves its last line to the launcher, which prints it once; other ranks print nothing."""
    from . import distributed, stopping

    argv = sys.argv[1:]
    if argv and argv[0] in TRAIN_COMMANDS and not distributed.launched():
        n, rest = distributed.split_nproc(argv)
        if n > 1:
            sys.exit(distributed.launch(rest, n))
        if n == 1:
            sys.argv = [sys.argv[0], *rest]
    if distributed.world().rank > 0:
        err.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if not distributed.launched():  # under torchrun SIGTERM is the launcher's way of stopping workers
        stopping.take_stop_signals()
    try:
        app()
    except SystemExit as e:  # typer ends every command this way
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        distributed.shutdown(ok=code == 0)
        distributed.leave(code)  # a torchrun worker exits here, before the interpreter's teardown
        raise
    except BaseException:  # --debug: the traceback is printed on the way out
        distributed.shutdown(ok=False)
        raise


if __name__ == "__main__":
    main()

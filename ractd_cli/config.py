"""``--config FILE``: a recipe as a TOML file instead of a chain of flags.

One table per command, its keys the command's option names without the dashes::

    # maze2d-large on a 2-core CPU
    [train-teacher]
    env = "maze2d-large"
    steps = 24000
    batch-size = 128
    plan-stride = 8

    [distill]
    env = "maze2d-large"
    reward-weight = 0.1

The file's values become the options' defaults: a flag given on the command line wins. A key that is
no option of its command, or a table that is no command, is a usage error naming the valid ones.
Recipes shipped with ractd (:data:`RECIPES_DIR`) are named without their path or suffix:
``ractd --config maze2d-large train-teacher``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .errors import UsageError, unknown_choice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RECIPES_DIR = Path(__file__).with_name("recipes")
"""The recipes shipped in the package, one ``NAME.toml`` each (``ractd --config NAME``)."""


def shipped_recipes() -> list[str]:
    """The names of the shipped recipes, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_path(ref: str | Path) -> Path:
    """``ref`` as a file: a path to an existing file, else the shipped recipe of that name."""
    path = Path(ref)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{ref}.toml"
    if shipped.is_file():
        return shipped
    raise UsageError(f"--config {ref}: no such file, nor a shipped recipe ({', '.join(shipped_recipes()) or 'none'})")


def read_recipe(ref: str | Path) -> dict[str, dict[str, Any]]:
    """The TOML recipe ``ref`` as ``{command: {option name: value}}`` (option names as in the file)."""
    path = recipe_path(ref)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"--config {path}: not a readable TOML file ({e})") from e
    bad = [k for k, v in doc.items() if not isinstance(v, dict)]
    if bad:
        raise UsageError(f"--config {path}: {', '.join(bad)} must be tables of options, one per command (e.g. [train-teacher])")
    return doc


def default_map(doc: dict[str, dict[str, Any]], commands: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Click's ``default_map`` for a recipe: ``{command: {parameter name: value}}``, with every table
    checked against ``commands`` (name -> click command) and every key against that command's
    options (``steps``, ``batch-size``: its long option names without the dashes)."""
    out: dict[str, dict[str, Any]] = {}
    for cmd, options in doc.items():
        if cmd not in commands:
            raise UsageError(f"--config {source}: " + unknown_choice("command table", cmd, sorted(commands)))
        names: dict[str, str] = {}
        for param in commands[cmd].params:
            if getattr(param, "hidden", False):  # deprecated names stay on the command line only
                continue
            for opt in getattr(param, "opts", []):  # `clamp = false`, not `no-clamp = true`
                if opt.startswith("--"):
                    names[opt[2:]] = param.name
            if getattr(param, "param_type_name", "") == "argument":
                names[param.name] = param.name
        mapped = {}
        for key, value in options.items():
            if key not in names or key in ("help", "json"):
                choices = sorted(k for k in names if k not in ("help", "json"))
                raise UsageError(f"--config {source}: [{cmd}] " + unknown_choice("option", key, choices))
            mapped[names[key]] = value
        out[cmd] = mapped
    return out

"""The layering of ``ractd_cli``: no module imports one above it (docs/architecture.md).

Training and planning sit side by side on the models layer and never import each other; the
environment-facing policy lives with the evaluation loop; only the CLI sees everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ractd_cli"

# (layer, modules): a module may import its own layer or lower ones, never a higher one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "paths", "locks", "stopping", "distributed", "ui", "artifacts", "layouts", "adapters", "config")),
    ("math, networks, data", ("diffusion", "nets", "proposer", "trajdiffuser", "data", "presets", "accel")),
    ("models", ("models",)),
    ("plugins", ("registry", "plugin_api")),
    ("training", ("train",)),
    ("planning", ("planner", "trajdiffuser_planner", "resolve", "export")),
    ("evaluation", ("evaluate",)),
    ("comparison", ("bench", "plots", "curves", "video", "reproduce")),
    ("command line", ("cli", "__main__")),
]
SIDE_BY_SIDE = {"training": {"planning"}, "planning": {"training"}}
"""Layers at the same height that must not import each other."""


def _layer(module: str) -> str:
    top = module.split(".")[0]
    for name, members in LAYERS:
        if top in members:
            return name
    raise AssertionError(f"ractd_cli.{module} is in no layer of tests/test_layers.py")


def _rank(layer: str) -> int:
    ranks = {name: i for i, (name, _) in enumerate(LAYERS)}
    return ranks[layer] if layer not in ("training", "planning") else ranks["training"]


def _imports(path: Path) -> set[str]:
    """ractd_cli modules imported anywhere in ``path`` (function-level imports included)."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    package = list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [".".join(base + [a.name]) for a in node.names]
                out.update(n for n in names if n)
            elif node.module and node.module.startswith("ractd_cli."):
                out.add(node.module[len("ractd_cli."):])
        elif isinstance(node, ast.Import):
            out.update(a.name[len("ractd_cli."):] for a in node.names if a.name.startswith("ractd_cli."))
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    me = _layer(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    for other in _imports(path):
        if other.split(".")[-1] == "__version__":
            continue  # the package's version string
        theirs = _layer(other)
        assert _rank(theirs) <= _rank(me), f"{path.relative_to(PACKAGE)} ({me}) imports {other} ({theirs})"
        assert theirs not in SIDE_BY_SIDE.get(me, set()), f"{path.relative_to(PACKAGE)} ({me}) imports {other} ({theirs})"

"""The env-adapter registry: plugins register under the entry-point group ``ractd.envs``.

Loading is lazy (on first use) and happens once per process. A plugin that fails to import is
recorded with its error and reported by ``ractd envs``; it never breaks the CLI or the other
plugins. Unknown task names get a "did you mean" and the list of known tasks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from .adapters import EnvAdapter, TaskSpec
from .errors import UsageError

GROUP = "ractd.envs"


@dataclass
class Plugin:
    """One entry point of the group: the adapter it loaded, or the error it raised."""

    name: str
    distribution: str
    version: str
    adapter: EnvAdapter | None = None
    error: str | None = None

    @property
    def tasks(self) -> list[str]:
        return sorted(self.adapter.tasks) if self.adapter is not None else []


_plugins: dict[str, Plugin] | None = None


def _load_entry_point(ep: Any) -> Plugin:
    dist = getattr(ep, "dist", None)
    plugin = Plugin(
        name=ep.name,
        distribution=dist.name if dist is not None else "?",
        version=dist.version if dist is not None else "?",
    )
    try:
        adapter = ep.load()
        if callable(adapter) and not hasattr(adapter, "tasks"):
            adapter = adapter()  # a factory
        if not hasattr(getattr(adapter, "tasks", None), "items"):
            raise TypeError("adapter has no `tasks` mapping")
        plugin.adapter = adapter
    except Exception as e:  # a broken plugin must not break the CLI
        plugin.error = f"{type(e).__name__}: {e}".splitlines()[0]
    return plugin


def plugins() -> dict[str, Plugin]:
    """All registered plugins by entry-point name, loaded once."""
    global _plugins
    if _plugins is None:
        _plugins = {}
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            _plugins[ep.name] = _load_entry_point(ep)
    return _plugins


def register(name: str, adapter: EnvAdapter, *, distribution: str = "(in-process)", version: str = "") -> None:
    """Register an adapter in-process (tests, notebooks). Overrides an entry point of the same name."""
    plugins()[name] = Plugin(name=name, distribution=distribution, version=version, adapter=adapter)


def unregister(name: str) -> None:
    plugins().pop(name, None)


def reset() -> None:
    """Forget loaded plugins so the next call re-reads the entry points."""
    global _plugins
    _plugins = None


def all_tasks() -> dict[str, tuple[EnvAdapter, TaskSpec]]:
    out: dict[str, tuple[EnvAdapter, TaskSpec]] = {}
    for p in plugins().values():
        if p.adapter is not None:
            for name, spec in p.adapter.tasks.items():
                out.setdefault(name, (p.adapter, spec))
    return out


def get_task(task: str) -> tuple[EnvAdapter, TaskSpec]:
    """The adapter and spec of ``task``; a UsageError with "did you mean" for an unknown name."""
    tasks = all_tasks()
    if task in tasks:
        return tasks[task]
    close = difflib.get_close_matches(task, list(tasks), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    known = ", ".join(sorted(tasks)) or "none (install a plugin, see `ractd envs`)"
    broken = [p.name for p in plugins().values() if p.error]
    extra = f" (plugins that failed to load: {', '.join(broken)}; see `ractd envs`)" if broken else ""
    raise UsageError(f"unknown task {task!r}; {hint}known tasks: {known}{extra}")


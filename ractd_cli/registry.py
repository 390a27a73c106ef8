"""The env-adapter registry: plugins register under the entry-point group ``ractd.envs``.

Loading is lazy (on first use) and happens once per process. A plugin that fails to import, lacks
a method of the adapter protocol or declares a bad task (unknown network or preset override) is
recorded with its error and reported by ``ractd envs``; it never breaks the CLI or the other
plugins. Two plugins declaring the same task name are both listed, and the name is refused.
Unknown task names get a "did you mean" and the list of known tasks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from .adapters import EnvAdapter, TaskSpec
from .errors import UsageError
from .presets import task_preset_problems

REQUIRED_METHODS = ("make_env", "state", "states", "goals", "goal", "reset_options", "generate", "normalized_score", "success")
"""What every adapter must have (``ractd_cli.adapters.EnvAdapter``)."""
OPTIONAL_HOOKS = ("track_action", "controller_action", "draw", "plan_check")
"""What an adapter may add: ``rollout --follow track|controller``, the maze drawing of ``bench --plot``
and the check of each episode's first plan (``plan_check``)."""

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
        problems = adapter_problems(adapter)
        if problems:
            raise TypeError("; ".join(problems))
        plugin.adapter = adapter
    except Exception as e:  # a broken plugin must not break the CLI
        plugin.error = f"{type(e).__name__}: {e}".splitlines()[0]
    return plugin


def trajdiffuser_problems(spec: TaskSpec) -> list[str]:
    from .trajdiffuser import settings_problems

    return settings_problems(spec)


def adapter_problems(adapter: Any) -> list[str]:
    """What keeps an adapter from working ([] when nothing does): a missing protocol method, a
    non-callable optional hook, a task whose key is not its name, a bad network or preset override."""
    problems = [f"adapter lacks the method {m}()" for m in REQUIRED_METHODS if not callable(getattr(adapter, m, None))]
    problems += [f"adapter hook {h} is not callable" for h in OPTIONAL_HOOKS if hasattr(adapter, h) and not callable(getattr(adapter, h))]
    for key, spec in adapter.tasks.items():
        if not isinstance(spec, TaskSpec) or spec.name != key:
            problems.append(f"task {key!r} must map to a TaskSpec named {key!r}")
            continue
        problems += task_preset_problems(spec.name, spec.model_preset, spec.presets)
        problems += trajdiffuser_problems(spec)
    return problems


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


def task_owners() -> dict[str, list[Plugin]]:
    """Every task name with the plugins that declare it (more than one: a collision)."""
    owners: dict[str, list[Plugin]] = {}
    for p in plugins().values():
        if p.adapter is not None:
            for name in p.adapter.tasks:
                owners.setdefault(name, []).append(p)
    return owners


def collisions() -> dict[str, list[str]]:
    """Task names declared by more than one plugin -> "plugin (distribution)" of each."""
    return {t: [f"{p.name} ({p.distribution})" for p in ps] for t, ps in task_owners().items() if len(ps) > 1}


def all_tasks() -> dict[str, tuple[EnvAdapter, TaskSpec]]:
    """Every task declared by exactly one plugin (a colliding name belongs to none)."""
    return {t: (ps[0].adapter, ps[0].adapter.tasks[t]) for t, ps in task_owners().items() if len(ps) == 1}


def get_task(task: str) -> tuple[EnvAdapter, TaskSpec]:
    """The adapter and spec of ``task``; a UsageError with "did you mean" for an unknown name."""
    clash = collisions().get(task)
    if clash:
        raise UsageError(f"task {task!r} is declared by {' and '.join(clash)}; uninstall one of them (see `ractd envs`)")
    tasks = all_tasks()
    if task in tasks:
        return tasks[task]
    close = difflib.get_close_matches(task, list(tasks), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    known = ", ".join(sorted(tasks)) or "none (install a plugin, see `ractd envs`)"
    broken = [p.name for p in plugins().values() if p.error]
    extra = f" (plugins that failed to load: {', '.join(broken)}; see `ractd envs`)" if broken else ""
    raise UsageError(f"unknown task {task!r}; {hint}known tasks: {known}{extra}")


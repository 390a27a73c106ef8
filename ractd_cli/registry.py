"""The env-adapter registry: plugins register under the entry-point group ``ractd.envs``.

Loading is lazy (on first use) and happens once per process. Each adapter is taken through the
plugin API (:func:`ractd_cli.plugin_api.adopt`): one written for an older contract keeps working,
with a deprecation note. A plugin that fails to import (an exception, ``sys.exit`` or a
KeyboardInterrupt raised while importing), lacks a required method or declares a bad task (unknown
network or preset override, no score scale) is recorded with its error and reported by ``ractd
envs``; it never breaks the CLI or the other plugins, and what it prints while importing goes to
stderr, never into ``--json`` output. Two plugins declaring the same task name are both listed, and
the name is refused. Unknown task names get a "did you mean" and the list of known tasks.
"""

from __future__ import annotations

import contextlib
import difflib
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from .adapters import EnvAdapter, TaskSpec
from .errors import UsageError
from .plugin_api import PluginError, adopt
from .presets import task_preset_problems

OPTIONAL_HOOKS = ("track_action", "controller_action", "draw", "plan_check", "episode_return")
"""What an adapter may add: ``rollout --follow track|controller``, the maze drawing of ``bench --plot``,
the check of each episode's first plan (``plan_check``) and the return a dataset episode would have
had in the evaluation env (``episode_return(task, episode)``, for bench's data rows; default: the
sum of its recorded rewards)."""

GROUP = "ractd.envs"


@dataclass
class Plugin:
    """One entry point of the group: the adapter it loaded, or the error it raised."""

    name: str
    distribution: str
    version: str
    adapter: EnvAdapter | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    """Deprecations: what the plugin should change before a later release drops its contract."""

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
        with contextlib.redirect_stdout(sys.stderr):  # a print at import must not corrupt --json output
            adapter = ep.load()
            if callable(adapter) and not hasattr(adapter, "tasks"):
                adapter = adapter()  # a factory
        plugin.adapter, plugin.notes = _checked(adapter, ep.name)
    except PluginError as e:
        plugin.error = str(e)
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # a broken plugin must not break (or end) the CLI
        what = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        plugin.error = f"plugin {ep.name} failed to load: {what}"
    return plugin


def _checked(adapter: Any, name: str) -> tuple[EnvAdapter, list[str]]:
    """``adapter`` under the current plugin API, with its notes; PluginError if it cannot work."""
    adopted, notes = adopt(adapter, name)
    problems = adapter_problems(adopted)
    if problems:
        raise PluginError(f"plugin {name}: " + "; ".join(problems))
    return adopted, notes


def trajdiffuser_problems(spec: TaskSpec) -> list[str]:
    from .trajdiffuser import settings_problems

    return settings_problems(spec)


def adapter_problems(adapter: EnvAdapter) -> list[str]:
    """What keeps an adopted adapter from working ([] when nothing does): a non-callable optional
    hook, a task whose key is not its name, a bad network or preset override, a task with no score
    scale (``rollout`` could not score it)."""
    problems = [f"adapter hook {h} is not callable" for h in OPTIONAL_HOOKS if hasattr(adapter, h) and not callable(getattr(adapter, h))]
    for key, spec in adapter.tasks.items():
        if not isinstance(spec, TaskSpec) or spec.name != key:
            problems.append(f"task {key!r} must map to a TaskSpec named {key!r}")
            continue
        if not spec.ref_scores:
            problems.append(f"task {key} has no score scale: set TaskSpec.ref_scores = {{name: (random_return, expert_return)}}")
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


def register(name: str, adapter: Any, *, distribution: str = "(in-process)", version: str = "") -> None:
    """Register an adapter in-process (tests, notebooks), checked as an entry point's is (a
    :class:`~ractd_cli.plugin_api.PluginError` if it cannot work). Overrides an entry point of the
    same name."""
    adopted, notes = _checked(adapter, name)
    plugins()[name] = Plugin(name=name, distribution=distribution, version=version, adapter=adopted, notes=notes)


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


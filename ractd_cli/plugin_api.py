"""The plugin API's versions, and how an adapter written for an older one keeps working.

Every documented contract an adapter may have been written for (docs/plugins.md, "Plugin API
changes"):

- **1** (2026-11-23): a task's score is ``normalized_score(task, episode_return)``, usually from
  ``TaskSpec.ref_min_score``/``ref_max_score``; no ``ref_scores``; the adapter's class stands alone
  (a Protocol) and defines every method, stubs included.
- **2** (2026-11-25, current, :data:`~ractd_cli.adapters.PLUGIN_API`): named score scales,
  ``TaskSpec.ref_scores`` and ``normalized_score(task, episode_return, scale=None)``. Since
  2026-12-05 adapters subclass :class:`~ractd_cli.adapters.EnvAdapter` (defaults for every method
  but ``make_env``/``state``/``states``) and declare ``api_version``.

:func:`adopt` takes whatever a plugin's entry point gave and returns an :class:`EnvAdapter` the
pipeline can use, with the deprecation notes ``ractd envs`` shows, or raises :class:`PluginError`
with one line naming the missing piece and the fix: at load time, never at the end of a chain.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

from .adapters import PLUGIN_API, EnvAdapter, TaskSpec

LEGACY_SCALE = "plugin"
"""The score scale an API-1 task's ``ref_min_score``/``ref_max_score`` pair becomes."""

METHODS = ("make_env", "state", "states", "goals", "goal", "reset_options", "generate", "normalized_score", "success")
"""Every method of the contract (the ones with defaults included)."""


class PluginError(Exception):
    """An adapter that cannot be used as it is; the message is one line saying what to change."""


def _takes_scale(fn: Any) -> bool:
    """``normalized_score`` accepts the ``scale`` argument of API 2."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True  # a builtin or C callable: trust it
    return "scale" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _api1_spec(spec: TaskSpec) -> TaskSpec:
    """An API-1 spec with the score scale its ``ref_min_score``/``ref_max_score`` pair meant."""
    if spec.ref_scores or spec.ref_min_score is None or spec.ref_max_score is None:
        return spec
    return dataclasses.replace(spec, ref_scores={LEGACY_SCALE: (float(spec.ref_min_score), float(spec.ref_max_score))})


class Adopted(EnvAdapter):
    """An adapter that does not subclass :class:`EnvAdapter` (or was written for API 1), seen through
    the current contract: its own methods where it has them, the defaults elsewhere, its extra
    hooks (``track_action``, ``draw``, ...) passed through, and API 1's scores mapped to a scale."""

    def __init__(self, inner: Any, tasks: Mapping[str, TaskSpec], api_version: int, legacy_score: bool):
        self.inner = inner
        self.tasks = dict(tasks)
        self.api_version = api_version
        self._legacy_score = legacy_score
        for name in METHODS:
            if name != "normalized_score" and callable(getattr(inner, name, None)):
                setattr(self, name, getattr(inner, name))

    def normalized_score(self, task: str, episode_return: float, scale: str | None = None) -> float:
        own = getattr(self.inner, "normalized_score", None)
        if not callable(own):
            return super().normalized_score(task, episode_return, scale)
        if self._legacy_score:
            from .adapters import resolve_score_scale

            resolve_score_scale(self.spec(task), scale)  # API 1 knows one scale: refuse any other
            return own(task, episode_return)
        return own(task, episode_return, scale=scale)

    def __getattr__(self, name: str) -> Any:  # the adapter's own extras (optional hooks and helpers)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def adopt(adapter: Any, plugin: str) -> tuple[EnvAdapter, list[str]]:
    """``adapter`` under the current contract, and its deprecation notes ([] for a current one).
    Raises :class:`PluginError` (one line naming ``plugin``) for one that cannot work."""
    tasks = getattr(adapter, "tasks", None)
    if not hasattr(tasks, "items"):
        raise PluginError(f"plugin {plugin}: the adapter has no `tasks` mapping (task name -> TaskSpec); see docs/plugins.md")
    declared = getattr(adapter, "api_version", None)
    if declared is not None and (not isinstance(declared, int) or isinstance(declared, bool) or declared < 1):
        raise PluginError(f"plugin {plugin}: api_version must be a positive integer, got {declared!r}")
    if declared is not None and declared > PLUGIN_API:
        raise PluginError(f"plugin {plugin} is written for plugin API {declared}; this ractd implements {PLUGIN_API}: upgrade ractd")
    broken = [m for m in METHODS if hasattr(adapter, m) and not callable(getattr(adapter, m))]
    if broken:
        raise PluginError(f"plugin {plugin}: the adapter's {', '.join(m + '()' for m in broken)} is not a method; "
                          f"define it or leave it out for the default (docs/plugins.md, section 3)")
    missing = [m for m in EnvAdapter.REQUIRED if not callable(getattr(adapter, m, None))
               or getattr(type(adapter), m, None) is getattr(EnvAdapter, m)]
    if missing:
        raise PluginError(f"plugin {plugin}: the adapter lacks {', '.join(m + '()' for m in missing)}; define them (docs/plugins.md, section 3)")
    score = getattr(adapter, "normalized_score", None)
    legacy_score = callable(score) and not _takes_scale(score)
    legacy_specs = any(isinstance(s, TaskSpec) and not s.ref_scores and s.ref_min_score is not None for s in tasks.values())
    version = declared if declared is not None else (1 if legacy_score or legacy_specs else PLUGIN_API)
    if version >= 2 and legacy_score:
        raise PluginError(f"plugin {plugin}: normalized_score() takes no `scale` argument, which plugin API {version} requires; "
                          f"add `scale=None` (docs/plugins.md, section 3)")
    if isinstance(adapter, EnvAdapter) and version == PLUGIN_API:
        return adapter, []
    notes = []
    if version < PLUGIN_API:
        specs = {k: _api1_spec(s) if isinstance(s, TaskSpec) else s for k, s in tasks.items()}
        notes.append(f"written for plugin API {version} (ref_min_score/ref_max_score, normalized_score without `scale`): "
                     f"scored on its scale {LEGACY_SCALE!r}; move to TaskSpec.ref_scores and subclass "
                     f"ractd_cli.adapters.EnvAdapter (docs/plugins.md, \"Plugin API changes\")")
    else:
        specs = dict(tasks)
        if declared is None:
            notes.append("declares no api_version and does not subclass ractd_cli.adapters.EnvAdapter; subclass it "
                         "(docs/plugins.md, \"Plugin API changes\")")
    return Adopted(adapter, specs, version, legacy_score), notes

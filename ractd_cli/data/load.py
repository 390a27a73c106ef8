"""Minari dataset -> list of :class:`Episode` (flat float32 arrays), through the task's adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import EnvAdapter, TaskSpec
from ..errors import RactdError
from . import store


@dataclass
class Episode:
    """One episode of T transitions.

    - ``states`` (T+1, obs_dim) float32: s_0..s_T (``adapter.states``)
    - ``actions`` (T, act_dim) float32: a_t taken in s_t
    - ``rewards`` (T,) float32: r_t received on the step s_t -> s_{t+1}
    - ``terminations`` (T,) bool: the step ended the episode for real (goal reached, fell over)
    - ``truncations`` (T,) bool: the step ended it otherwise (time-out, data-collection boundary)
    - ``goals`` (T+1, goal_dim) float32 or None (``adapter.goals``)
    - ``id``: the episode's index in the Minari dataset
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    goals: np.ndarray | None = None
    id: int = -1

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))


def open_dataset(dataset_id_or_path: str | Path, root: Path | str | None = None) -> Any:
    """The ``minari.MinariDataset`` of a dataset id (in our cache) or folder."""
    import minari

    data_dir = store.resolve_data_dir(dataset_id_or_path, root)
    if not (data_dir / "metadata.json").is_file():
        raise RactdError(f"no dataset {dataset_id_or_path} in {data_dir.parent}; run `ractd fetch` first")
    damaged = store.dataset_problem(str(dataset_id_or_path), root) if data_dir == store.dataset_path(str(dataset_id_or_path), root) / "data" else None
    if damaged:
        raise RactdError(f"dataset {dataset_id_or_path} is damaged: {damaged}; run `ractd fetch TASK` (with the --source you used) to repair it")
    try:
        return minari.MinariDataset(data_dir)
    except (OSError, ValueError, KeyError) as e:
        raise RactdError(f"dataset {dataset_id_or_path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"run `ractd fetch TASK --force` (with the --source you used) to rebuild it") from e


def load_episodes(
    adapter: EnvAdapter,
    spec: TaskSpec,
    dataset_id_or_path: str | Path,
    *,
    root: Path | str | None = None,
) -> list[Episode]:
    """Read every episode of a Minari dataset, converting observations with the adapter.

    Raises :class:`RactdError` if the data do not have the task's dimensions.
    """
    dataset = open_dataset(dataset_id_or_path, root)
    episodes: list[Episode] = []
    try:
        for ep in dataset.iterate_episodes():
            episodes.append(_episode(adapter, spec, dataset_id_or_path, ep))
    except (OSError, KeyError, ValueError) as e:  # an HDF5 file cut short under a dataset without checksums
        raise RactdError(f"dataset {dataset_id_or_path} cannot be read ({type(e).__name__}); "
                         f"run `ractd fetch TASK --force` (with the --source you used) to rebuild it") from e
    if not episodes:
        raise RactdError(f"dataset {dataset_id_or_path} has no episodes")
    return episodes


def _episode(adapter: EnvAdapter, spec: TaskSpec, where: Any, ep: Any) -> Episode:
    """One Minari episode as an :class:`Episode`, checked against the task's dimensions."""
    T = len(ep.rewards)
    states = np.asarray(adapter.states(spec.name, ep.observations), dtype=np.float32)
    actions = np.asarray(ep.actions, dtype=np.float32).reshape(T, -1)
    goals = adapter.goals(spec.name, ep.observations)
    if goals is not None:
        goals = np.asarray(goals, dtype=np.float32).reshape(T + 1, -1)
    _check(spec, where, ep.id, states, actions, goals, T)
    return Episode(
        states=states,
        actions=actions,
        rewards=np.asarray(ep.rewards, dtype=np.float32).reshape(T),
        terminations=np.asarray(ep.terminations, dtype=bool).reshape(T),
        truncations=np.asarray(ep.truncations, dtype=bool).reshape(T),
        goals=goals,
        id=int(ep.id),
    )


def _check(spec: TaskSpec, where: Any, ep_id: int, states, actions, goals, T: int) -> None:
    problems = []
    if states.shape != (T + 1, spec.obs_dim):
        problems.append(f"states {states.shape}, expected {(T + 1, spec.obs_dim)}")
    if actions.shape != (T, spec.act_dim):
        problems.append(f"actions {actions.shape}, expected {(T, spec.act_dim)}")
    if spec.goal_dim and (goals is None or goals.shape != (T + 1, spec.goal_dim)):
        got = None if goals is None else goals.shape
        problems.append(f"goals {got}, expected {(T + 1, spec.goal_dim)}")
    if problems:
        raise RactdError(
            f"dataset {where} does not fit task {spec.name} (episode {ep_id}: {'; '.join(problems)})"
        )

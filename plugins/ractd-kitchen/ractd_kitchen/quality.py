"""Data quality of a FrankaKitchen dataset: which subtasks its episodes complete.

Works from the 59-dim ``observation`` alone, so it applies to any kitchen dataset (this plugin's
local ones and Minari's ``D4RL/kitchen/*`` alike): entries 18..38 of the observation are the
object positions ``qpos[9:30]``, on which FrankaKitchen-v1 decides completion (a subtask's
coordinates ``OBS_ELEMENT_INDICES`` within ``BONUS_THRESH`` = 0.3, L2, of ``OBS_ELEMENT_GOALS``).
An episode completes a subtask if that holds at any of its states, as the env's
``episode_task_completions`` counts it. (The stored object positions carry the env's observation
noise, at most 5e-5 here, negligible against the 0.3 threshold.)

    python -m ractd_kitchen.quality ractd/kitchen-mixed/local-v0
"""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .scripted import SUBTASKS, _env_constants

OBJECT_COLUMN = 9
"""qpos index i (i >= 9, an object coordinate) is observation column i + 9 (after 9 joint
positions and 9 joint velocities of the robot come the 21 object positions)."""


def subtask_distances(observations: np.ndarray) -> dict[str, np.ndarray]:
    """(T+1, 59) observations -> {subtask: (T+1,) L2 distance of its object to its goal}."""
    obs = np.asarray(observations, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != 59:
        raise ValueError(f"expected (T+1, 59) kitchen observations, got {obs.shape}")
    indices, goals, _ = _env_constants()
    return {t: np.linalg.norm(obs[:, np.asarray(indices[t]) + OBJECT_COLUMN] - goals[t], axis=1) for t in SUBTASKS}


def completed_subtasks(observations: np.ndarray) -> list[str]:
    """Subtasks completed at some state of a (T+1, 59) episode, in the order first completed."""
    thresh = _env_constants()[2]
    first = {}
    for t, dist in subtask_distances(observations).items():
        hit = np.flatnonzero(dist < thresh)
        if hit.size:
            first[t] = int(hit[0])
    return sorted(first, key=lambda t: (first[t], SUBTASKS.index(t)))


def dataset_quality(episodes: Iterable[np.ndarray], targets: Sequence[str] | None = None) -> dict[str, Any]:
    """Completion statistics of episodes given as (T+1, 59) observation arrays.

    Returns ``episodes``, ``steps`` (transitions), ``subtask_share`` (per subtask, the share of
    episodes completing it), ``tasks_completed`` (how many episodes complete 0, 1, ... 7 of the
    seven subtasks) and ``mean_tasks_completed``; with ``targets`` (a dataset's four target
    subtasks) also ``targets_completed`` (episodes completing 0..4 of them) and
    ``all_targets_share`` (the share completing all four). Counts are keyed by strings (JSON).
    """
    n, steps = 0, 0
    per_task = dict.fromkeys(SUBTASKS, 0)
    hist = dict.fromkeys(range(len(SUBTASKS) + 1), 0)
    target_hist = dict.fromkeys(range(len(targets) + 1), 0) if targets is not None else None
    for obs in episodes:
        done = set(completed_subtasks(obs))
        n += 1
        steps += int(np.shape(obs)[0]) - 1
        for t in done:
            per_task[t] += 1
        hist[len(done)] += 1
        if target_hist is not None:
            target_hist[len(done & set(targets))] += 1
    out: dict[str, Any] = {
        "episodes": n,
        "steps": steps,
        "subtask_share": {t: per_task[t] / max(n, 1) for t in SUBTASKS},
        "tasks_completed": {str(k): v for k, v in hist.items()},
        "mean_tasks_completed": sum(k * v for k, v in hist.items()) / max(n, 1),
    }
    if target_hist is not None:
        out["targets"] = list(targets)
        out["targets_completed"] = {str(k): v for k, v in target_hist.items()}
        out["all_targets_share"] = target_hist[len(targets)] / max(n, 1)
    return out


def episode_observations(dataset: Any) -> Iterable[np.ndarray]:
    """(T+1, 59) arrays of a ``minari.MinariDataset``'s episodes (dict observations)."""
    for ep in dataset.iterate_episodes():
        obs = ep.observations
        yield np.asarray(obs["observation"] if isinstance(obs, Mapping) else obs)


def format_report(q: Mapping[str, Any]) -> str:
    """A few lines of text for :func:`dataset_quality`'s result."""
    lines = [f"{q['episodes']} episodes, {q['steps']} steps"]
    lines.append("share of episodes completing each subtask:")
    lines += [f"  {t:14s} {100 * s:5.1f}%" for t, s in q["subtask_share"].items()]
    lines.append("subtasks completed per episode (of 7): " + ", ".join(f"{k}: {v}" for k, v in q["tasks_completed"].items() if v)
                 + f"  (mean {q['mean_tasks_completed']:.2f})")
    if "targets" in q:
        lines.append(f"target subtasks ({', '.join(q['targets'])}) completed per episode: "
                     + ", ".join(f"{k}: {v}" for k, v in q["targets_completed"].items())
                     + f"  (all four: {100 * q['all_targets_share']:.1f}%)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ractd_kitchen.quality DATASET [--task TASK] [--json]``: the completion statistics
    of a kitchen dataset in ractd's cache (an id such as ``ractd/kitchen-mixed/local-v0`` or
    ``D4RL/kitchen/mixed-v2``, or a dataset folder). The targets are the task's (``--task``, else
    the task recorded in a local dataset's metadata, else the id's ``complete``/``partial``/``mixed``)."""
    import argparse

    from ractd_cli.data import read_metadata
    from ractd_cli.data.load import open_dataset
    from ractd_cli.errors import RactdError

    from .adapter import TARGETS

    p = argparse.ArgumentParser(prog="python -m ractd_kitchen.quality", description=main.__doc__)
    p.add_argument("dataset")
    p.add_argument("--task", choices=[f"kitchen-{d}" for d in TARGETS], default=None)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    try:
        dataset = open_dataset(args.dataset)
        task = args.task or read_metadata(args.dataset).get("ractd", {}).get("task")
    except (RactdError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if task is None:
        task = next((f"kitchen-{d}" for d in TARGETS if d in str(args.dataset)), None)
    targets = TARGETS[task.removeprefix("kitchen-")] if task else None
    q = dataset_quality(episode_observations(dataset), targets)
    q["dataset"] = str(args.dataset)
    print(json.dumps(q) if args.json else format_report(q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

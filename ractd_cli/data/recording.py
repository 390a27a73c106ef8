"""Recording env steps into Minari ``EpisodeBuffer``s, and a budgeted rollout loop.

For adapters' ``generate``: shared by the MuJoCo and Kitchen plugins, and available to
third-party plugins (see docs/plugins.md).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

Policy = Callable[[Any], np.ndarray]
"""One observation -> one action."""


def _stack(items: list[Any]) -> Any:
    """Stack a list of observations (arrays or nested dicts of arrays) along a new first axis."""
    first = items[0]
    if isinstance(first, dict):
        return {key: _stack([item[key] for item in items]) for key in first}
    return np.stack(items)  # the leaves are already private copies (``_copy``); stacking copies again anyway


class EpisodeRecorder:
    """Accumulates one episode; ``to_buffer`` gives a complete ``minari.data_collector.EpisodeBuffer``.

    Observations hold T+1 rows (the reset observation, then one per step); actions, rewards,
    terminations and truncations hold T rows. ``infos`` is left empty (None).
    """

    def __init__(self, first_obs: Any, seed: int | None = None):
        self.seed = seed
        self.observations = [_copy(first_obs)]
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminations: list[bool] = []
        self.truncations: list[bool] = []

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, action: Any, obs: Any, reward: float, terminated: bool, truncated: bool) -> None:
        self.actions.append(np.array(action, copy=True))
        self.observations.append(_copy(obs))
        self.rewards.append(float(reward))
        self.terminations.append(bool(terminated))
        self.truncations.append(bool(truncated))

    def to_buffer(self, episode_id: int, *, truncate_last: bool = False) -> Any:
        """The finished episode. ``truncate_last`` marks a cut (budget end, snapshot) as a truncation."""
        from minari.data_collector import EpisodeBuffer

        if not self.rewards:
            raise ValueError("an episode needs at least one step")
        truncations = list(self.truncations)
        if truncate_last and not self.terminations[-1]:
            truncations[-1] = True
        return EpisodeBuffer(
            id=episode_id,
            seed=self.seed,
            observations=_stack(self.observations),
            actions=np.stack(self.actions),
            rewards=np.asarray(self.rewards, dtype=np.float64),
            terminations=np.asarray(self.terminations, dtype=bool),
            truncations=np.asarray(truncations, dtype=bool),
            infos=None,
        )


def _copy(obs: Any) -> Any:
    # Some envs (FrankaKitchen) hand out the same arrays on every step: copy every leaf.
    if isinstance(obs, dict):
        return {key: _copy(value) for key, value in obs.items()}
    return np.array(obs, copy=True)


class ProgressBatcher:
    """Calls ``progress(n)`` every ``every`` steps (and on ``flush``) instead of once per step.

    ``step(n, **fields)`` with fields (e.g. ``sac_return=812.5``; ``total=N`` resets the bar's
    total, None: unknown) passes them on at once, as ``progress(n, **fields)``: a ``progress``
    that shows fields (``ractd_cli.ui.progress``'s) must accept them. ``done`` counts every step.
    """

    def __init__(self, progress: Callable[..., None] | None, every: int = 100):
        self.progress = progress
        self.every = every
        self.pending = 0
        self.done = 0

    def step(self, n: int = 1, **fields: Any) -> None:
        self.pending += n
        self.done += n
        if fields:
            if self.progress is not None:
                self.progress(self.pending, **fields)
            self.pending = 0
        elif self.pending >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.progress is not None and self.pending:
            self.progress(self.pending)
        self.pending = 0


def rollout(
    env: Any,
    policy: Policy,
    *,
    steps: int,
    seed: int,
    progress: ProgressBatcher,
    first_id: int = 0,
) -> list[Any]:
    """Run ``policy`` in ``env`` for exactly ``steps`` env steps; one EpisodeBuffer per episode.

    Episode k is reset with seed ``seed + k`` (recorded in its buffer). Episodes end at a
    termination or the env's time limit; the last one is cut at the budget and marked truncated.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    buffers: list[Any] = []
    done = 0
    while done < steps:
        episode_seed = seed + len(buffers)
        obs, _ = env.reset(seed=episode_seed)
        recorder = EpisodeRecorder(obs, seed=episode_seed)
        while True:
            action = policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            recorder.add(action, obs, reward, terminated, truncated)
            done += 1
            progress.step()
            if terminated or truncated or done >= steps:
                break
        buffers.append(recorder.to_buffer(first_id + len(buffers), truncate_last=True))
    progress.flush()
    return buffers


def random_policy(env: Any, seed: int) -> Policy:
    """Uniform random actions from ``env.action_space``, seeded."""
    space = env.action_space
    space.seed(seed)
    return lambda _obs: space.sample()

"""D4RL-style behaviour data from one SAC run (needs the optional ``sb3`` extra: stable-baselines3).

One SAC agent trains online for ``train_steps`` env steps. At one third of them its policy is
frozen as the *medium* policy (D4RL stopped SAC early at roughly a third of expert score; here
a third of the step budget stands in for that, no score-based early stopping). From that run:

* ``medium``: rollouts of the frozen one-third policy;
* ``medium-replay``: every transition SAC collected up to that checkpoint (its replay buffer,
  including the initial random-action warm-up), in collection order;
* ``expert``: rollouts of the final policy;
* ``medium-expert``: medium rollouts + expert rollouts.

Rollouts sample from the stochastic policy (``deterministic=False``) for state coverage.
Training stops as early as the requested data allows (medium/medium-replay never train past
the checkpoint).
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any, Callable

import numpy as np

from ractd_cli.data.recording import EpisodeRecorder, ProgressBatcher, rollout


def available() -> bool:
    """Whether stable-baselines3 is installed (without paying for its import)."""
    return importlib.util.find_spec("stable_baselines3") is not None


def _recording_env(env: Any) -> Any:
    """Wrap ``env`` so that every transition SAC collects is recorded, episode by episode."""
    import gymnasium as gym

    class Recording(gym.Wrapper):
        def __init__(self, inner: Any):
            super().__init__(inner)
            self.finished: list[EpisodeRecorder] = []
            self.current: EpisodeRecorder | None = None

        def reset(self, **kwargs: Any) -> Any:
            if self.current is not None and len(self.current):
                self.finished.append(self.current)  # reset mid-episode: keep what was done
            obs, info = self.env.reset(**kwargs)
            self.current = EpisodeRecorder(obs, seed=kwargs.get("seed"))
            return obs, info

        def step(self, action: Any) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            assert self.current is not None, "step before reset"
            self.current.add(action, obs, reward, terminated, truncated)
            if terminated or truncated:
                self.finished.append(self.current)
                self.current = None
            return obs, reward, terminated, truncated, info

        def snapshot(self) -> list[Any]:
            """Every transition so far as EpisodeBuffers; an unfinished episode is cut (truncated)."""
            episodes = list(self.finished)
            if self.current is not None and len(self.current):
                episodes.append(self.current)
            return [ep.to_buffer(i, truncate_last=True) for i, ep in enumerate(episodes)]

    return Recording(env)


def generate(
    make_env: Callable[[], Any],
    kind: str,
    *,
    steps: int,
    seed: int,
    progress: ProgressBatcher,
    train_steps: int | None = None,
) -> tuple[list[Any], dict]:
    """Buffers for ``kind`` in {medium, medium-replay, expert, medium-expert}, plus metadata.

    ``train_steps`` defaults to ``3 * steps``, so that the medium-replay buffer (the first third
    of training) holds ``steps`` transitions. Rollout datasets hold ``steps`` transitions
    (medium-expert: half from each policy). ``progress`` counts training and rollout steps.
    """
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    if kind not in ("medium", "medium-replay", "expert", "medium-expert"):
        raise ValueError(f"SAC behaviour has no dataset kind {kind!r}")
    train_steps = int(train_steps if train_steps is not None else 3 * steps)
    checkpoint = max(1, train_steps // 3)

    class Progress(BaseCallback):
        def _on_step(self) -> bool:
            progress.step()
            return True

    train_env = _recording_env(make_env())
    model = SAC("MlpPolicy", train_env, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=checkpoint, callback=Progress())
    medium_policy = copy.deepcopy(model.policy)
    replay = train_env.snapshot()
    trained = checkpoint
    if kind in ("expert", "medium-expert") and train_steps > checkpoint:
        model.learn(total_timesteps=train_steps - checkpoint, callback=Progress(), reset_num_timesteps=False)
        trained = train_steps
    train_env.close()

    def act(policy: Any) -> Callable[[Any], np.ndarray]:
        return lambda obs: policy.predict(obs, deterministic=False)[0]

    def rollouts(policy: Any, n: int, offset: int) -> list[Any]:
        env = make_env()
        try:
            return rollout(env, act(policy), steps=n, seed=seed + offset, progress=progress)
        finally:
            env.close()

    if kind == "medium-replay":
        buffers = replay
    elif kind == "medium":
        buffers = rollouts(medium_policy, steps, 1_000_000)
    elif kind == "expert":
        buffers = rollouts(model.policy, steps, 2_000_000)
    else:
        half = steps // 2
        buffers = (rollouts(medium_policy, half, 1_000_000) if half else []) + rollouts(
            model.policy, steps - half, 2_000_000
        )
    progress.flush()
    meta = {
        "algorithm_name": "SAC (stable-baselines3)",
        "sac_train_steps": trained,
        "sac_checkpoint_step": checkpoint,
    }
    return buffers, meta

"""The ``bimodal`` adapter: one task, ``bimodal``, on ``ractd/Bimodal-v0`` (see :mod:`.env`).

Closed-loop chunk planning (h = 1, c = 8). The local dataset holds two families of noisy scripted
paths in equal parts, one to each goal; no remote dataset exists. Normalised score = 100 * return
(A: 100, B: 50, neither: 0), on its own score scale ``bimodal`` (there is no D4RL one). ``success`` = goal A reached.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ractd_cli.adapters import EnvAdapter, TaskSpec

from . import env as benv

SPEC = TaskSpec(
    name="bimodal",
    env_id=benv.ENV_ID,
    obs_dim=2,
    act_dim=2,
    planning="chunk",
    horizon=8,
    history=1,
    goal_dim=0,
    gamma=0.99,
    termination_penalty=0.0,  # terminating here means reaching a goal: nothing to penalise
    max_episode_steps=benv.MAX_EPISODE_STEPS,
    minari_ids=(),
    local_generation="noisy scripted paths, half to goal A (+1,+1, pays 1.0), half to goal B (-1,+1, pays 0.5)",
    loss_weights=(1.0, 1.0, 1.0),
    model_preset="mlp",  # its network at every preset (`--preset paper` used to fail on "tiny")
    ref_min_score=0.0,
    ref_max_score=1.0,
    ref_scores={"bimodal": (0.0, 1.0)},
    extra={"local_steps": 10_000, "goals": {"A": benv.GOAL_A.tolist(), "B": benv.GOAL_B.tolist()}},
)

PATH_NOISE_STD = 0.2
"""Per-step Gaussian noise on the scripted actions."""
PATH_BEND = 0.4
"""Each scripted path bends sideways by a constant drawn from U(-PATH_BEND, PATH_BEND)."""


class BimodalAdapter(EnvAdapter):
    """:class:`ractd_cli.adapters.EnvAdapter` for the two-goal toy task."""

    name = "bimodal"

    def __init__(self) -> None:
        benv.register()
        self.tasks: Mapping[str, TaskSpec] = {SPEC.name: SPEC}

    def make_env(self, task: str, *, seed: int | None = None) -> Any:
        import gymnasium as gym

        spec = self.spec(task)
        benv.register()
        env = gym.make(spec.env_id)
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env

    def state(self, task: str, obs: Any) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(2)

    def states(self, task: str, observations: Any) -> np.ndarray:
        return np.asarray(observations, dtype=np.float32).reshape(-1, 2)

    def success(self, task: str, episode_return: float, info: Mapping[str, Any]) -> bool | None:
        """Goal A (the better one) reached."""
        if "reached" in info:
            return info["reached"] == "A"
        return bool(episode_return >= benv.REWARD_A - 1e-6)

    @staticmethod
    def scripted_action(pos: np.ndarray, goal: np.ndarray, bend: float, rng: np.random.Generator) -> np.ndarray:
        """Head for ``goal`` with a sideways bend and Gaussian noise; clipped to [-1, 1]."""
        d = goal - pos
        d = d / max(float(np.linalg.norm(d)), 1e-6)
        perp = np.array([-d[1], d[0]])
        a = d + bend * perp
        a = a / max(float(np.linalg.norm(a)), 1e-6) + rng.normal(0.0, PATH_NOISE_STD, size=2)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def generate(
        self, task: str, *, steps: int, seed: int, progress: Callable[[int], None] | None = None
    ) -> tuple[Sequence[Any], dict]:
        """Episodes alternate between goal A and goal B until ``steps`` env steps are reached (the last
        episode is completed, so the total may exceed ``steps`` by < 32)."""
        from minari.data_collector import EpisodeBuffer

        spec = self.spec(task)
        env = self.make_env(task)
        rng = np.random.default_rng(seed)
        buffers: list[Any] = []
        total, counts = 0, {"A": 0, "B": 0}
        while total < steps:
            i = len(buffers)
            family = "A" if i % 2 == 0 else "B"
            goal = benv.GOAL_A if family == "A" else benv.GOAL_B
            bend = rng.uniform(-PATH_BEND, PATH_BEND)
            obs, _ = env.reset(seed=int(seed) * 100_003 + i)
            observations, actions, rewards, terms, truncs = [obs], [], [], [], []
            done = False
            while not done:
                a = self.scripted_action(obs, goal, bend, rng)
                obs, r, term, trunc, info = env.step(a)
                observations.append(obs)
                actions.append(a)
                rewards.append(r)
                terms.append(term)
                truncs.append(trunc)
                done = term or trunc
            if info["reached"]:
                counts[info["reached"]] += 1
            buffers.append(
                EpisodeBuffer(
                    id=i,
                    seed=int(seed) * 100_003 + i,
                    observations=np.asarray(observations, dtype=np.float32),
                    actions=np.asarray(actions, dtype=np.float32),
                    rewards=np.asarray(rewards, dtype=np.float64),
                    terminations=np.asarray(terms, dtype=bool),
                    truncations=np.asarray(truncs, dtype=bool),
                )
            )
            if progress is not None:  # the bar counts up to the steps asked for; the last episode may run past them
                progress(min(len(actions), max(0, steps - total)))
            total += len(actions)
        env.close()
        meta = {
            "env": spec.env_id,
            "algorithm_name": "scripted noisy paths to goal A / goal B, alternating",
            "ref_min_score": spec.ref_min_score,
            "ref_max_score": spec.ref_max_score,
            "episodes_to_A": counts["A"],
            "episodes_to_B": counts["B"],
            "timeouts": len(buffers) - counts["A"] - counts["B"],
            "total_steps": total,
        }
        return buffers, meta

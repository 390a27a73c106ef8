"""FrankaKitchen tasks (kitchen-complete, kitchen-partial, kitchen-mixed) for ractd.

Data: Minari's ``D4RL/kitchen/{complete,partial,mixed}-v2``, human teleoperation demos replayed
in gymnasium-robotics' ``FrankaKitchen-v1``. Observations there are dicts: ``observation`` (59:
robot joint positions and velocities 9 + 9, then object positions 21 and velocities 20),
``achieved_goal`` and ``desired_goal`` (dicts keyed by task name). The planner's state is the
59-dim ``observation`` entry; the goals are fixed per task, so there is no goal conditioning.

Reward and score. Built with ``remove_task_when_completed=False`` (this plugin's specification;
the Minari datasets' own env kwargs could not be checked offline), FrankaKitchen-v1's reward at a
step is the number of target tasks whose object is *currently* within 0.3 of its goal, so an
episode's return sums that count over steps (a task held for 100 steps adds 100). The D4RL kitchen score is instead the number of distinct target
tasks completed in the episode, x 100 / 4 (D4RL's reference range is 0..4). The env reports
that set as ``info["episode_task_completions"]`` (a task enters it the first time it is reached
and stays). Because the evaluation pipeline calls ``normalized_score(task, episode_return)``
with the return alone, :meth:`KitchenAdapter.make_env` wraps the env in
:class:`TaskCompletionReward`: its reward is the number of target tasks completed *for the first
time* at that step, so an evaluation return is exactly the number of tasks completed and
``normalized_score = 100 * return / 4``. The raw reward stays available as ``info["env_reward"]``.
``generate`` records the raw env's per-step reward; datasets are never rewritten.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np

from ractd_cli.adapters import EnvAdapter, TaskSpec, normalize_return, quiet_import
from ractd_cli.data.recording import ProgressBatcher, random_policy, rollout

ENV_ID = "FrankaKitchen-v1"
OBS_DIM = 59
ACT_DIM = 9
N_TASKS = 4

# The four target subtasks of each D4RL kitchen dataset (complete/partial share theirs).
TARGETS: dict[str, tuple[str, ...]] = {
    "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}
# Episode time limits: 280 for complete (FrankaKitchen-v1's default), 450 for partial and mixed
# (Minari's kitchen-mixed page lists max_episode_steps 450).
MAX_STEPS = {"complete": 280, "partial": 450, "mixed": 450}

# Loss weights (alpha, beta, sigma): the paper's Table 9 covers MuJoCo only. Kitchen's could not be
# chosen from a measurement here: its data are human demonstrations, which cannot be downloaded or
# generated on a machine without network (the local generator makes random-action smoke data whose
# return-to-go is flat). (1, 1, 1) is Table 9's medium-replay choice; `distill` prints the weighted
# loss terms so a user with the data can check the paper's "within one order of magnitude" rule.
LOSS_WEIGHTS = (1.0, 1.0, 1.0)

# gamma 0.99: DESIGN.md (after the RACTD paper) gives discounts for the MuJoCo tasks only; 0.99
# is the discount IQL (Kostrikov et al., 2022) uses on every D4RL task, kitchen included.
GAMMA = 0.99

LOCAL_GENERATION = (
    "uniform-random-action episodes on FrankaKitchen-v1, for smoke tests only "
    "(the human demonstrations cannot be generated)"
)


def env_kwargs(dataset: str) -> dict[str, Any]:
    """Keyword arguments of ``gym.make(FrankaKitchen-v1, ...)`` for one dataset."""
    return {
        "tasks_to_complete": list(TARGETS[dataset]),
        "remove_task_when_completed": False,
        "terminate_on_tasks_completed": False,
        "max_episode_steps": MAX_STEPS[dataset],
    }


def _spec(dataset: str) -> TaskSpec:
    return TaskSpec(
        name=f"kitchen-{dataset}",
        env_id=ENV_ID,
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        planning="chunk",
        horizon=16,
        history=1,
        goal_dim=0,
        gamma=GAMMA,
        # Episodes never terminate (terminate_on_tasks_completed=False): they end on the time
        # limit. Were one to terminate, it would be because every task is done, which must not be
        # penalised; hence 0 rather than the locomotion -100.
        termination_penalty=0.0,
        max_episode_steps=MAX_STEPS[dataset],
        minari_ids=(f"D4RL/kitchen/{dataset}-v2",),
        local_generation=LOCAL_GENERATION,
        loss_weights=LOSS_WEIGHTS,
        model_preset="mujoco",
        trajdiffuser={"horizon": 32, "guidance": 1.2},  # the Trajectory Diffuser authors' main.py (kitchen-*)
        # Minari's kitchen datasets carry no reference scores, and their returns (raw per-step
        # task counts) are not on the 0..4 scale; normalized_score handles the scale itself.
        ref_min_score=None,
        ref_max_score=None,
        ref_scores={"d4rl": (0.0, float(N_TASKS))},  # D4RL's kitchen scale: 0..4 tasks completed
        extra={"dataset": dataset, "targets": TARGETS[dataset], "d4rl_name": f"kitchen-{dataset}-v0"},
    )


class TaskCompletionReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Reward = number of target tasks completed for the first time at this step.

    Over an episode the rewards sum to the number of distinct target tasks completed (0..4),
    D4RL's kitchen return. ``info`` gains ``env_reward`` (the unwrapped reward),
    ``num_tasks_completed``, and ``episode_task_completions`` as a fresh list (the unwrapped env
    hands out one list object that it clears on reset).
    """

    def __init__(self, env: Any):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._targets = frozenset(env.unwrapped.goal)
        self._done: list[str] = []

    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        self._done = []
        return obs, self._info(info, env_reward=0.0)

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        new = [t for t in info.get("episode_task_completions", ()) if t in self._targets and t not in self._done]
        self._done.extend(new)
        return obs, float(len(new)), terminated, truncated, self._info(info, env_reward=float(reward))

    def _info(self, info: Mapping[str, Any], *, env_reward: float) -> dict[str, Any]:
        out = dict(info)
        out["env_reward"] = env_reward
        out["episode_task_completions"] = list(self._done)
        out["num_tasks_completed"] = len(self._done)
        return out


class KitchenAdapter(EnvAdapter):
    """The ``kitchen`` plugin: kitchen-complete, kitchen-partial, kitchen-mixed."""

    tasks: Mapping[str, TaskSpec] = {f"kitchen-{d}": _spec(d) for d in TARGETS}

    # -- environment -------------------------------------------------------------------------

    def make_raw_env(self, task: str, render_mode: str | None = None) -> Any:
        """FrankaKitchen-v1 exactly as the dataset's env: raw per-step task-count reward."""
        gymnasium_robotics = quiet_import("gymnasium_robotics")

        gym.register_envs(gymnasium_robotics)
        return gym.make(ENV_ID, **env_kwargs(self.spec(task).extra["dataset"]), **({"render_mode": render_mode} if render_mode else {}))

    def make_env(self, task: str, *, seed: int | None = None, render_mode: str | None = None) -> Any:
        """The evaluation env: :meth:`make_raw_env` with :class:`TaskCompletionReward` on top.
        ``render_mode="rgb_array"`` renders offscreen (``rollout --video``).

        An episode's return is then the number of target tasks completed (0..4).
        """
        env = TaskCompletionReward(self.make_raw_env(task, render_mode))
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env

    def state(self, task: str, obs: Any) -> np.ndarray:
        self.spec(task)
        s = np.asarray(obs["observation"] if isinstance(obs, Mapping) else obs, dtype=np.float32)
        if s.shape != (OBS_DIM,):
            raise ValueError(f"{task}: expected a {OBS_DIM}-dim 'observation', got shape {s.shape}")
        return s

    def states(self, task: str, observations: Any) -> np.ndarray:
        """Minari's dict of arrays (``observations['observation']``, (T+1, 59)), a (T+1, 59) array,
        or a list of per-step dict observations -> float32 (T+1, 59)."""
        self.spec(task)
        if isinstance(observations, Mapping):
            s = np.asarray(observations["observation"], dtype=np.float32)
        elif isinstance(observations, (list, tuple)) and observations and isinstance(observations[0], Mapping):
            s = np.stack([np.asarray(o["observation"], dtype=np.float32) for o in observations])
        else:
            s = np.asarray(observations, dtype=np.float32)
        if s.ndim != 2 or s.shape[1] != OBS_DIM:
            raise ValueError(f"{task}: expected observations of shape (T+1, {OBS_DIM}), got {s.shape}")
        return s

    # -- data --------------------------------------------------------------------------------

    def generate(
        self,
        task: str,
        *,
        steps: int,
        seed: int,
        progress: Callable[[int], None] | None = None,
        behaviour: str | None = None,
    ) -> tuple[Sequence[Any], dict]:
        """A small uniform-random-action dataset, for smoke tests ONLY.

        The real kitchen datasets are human teleoperation demos, which cannot be generated; these
        episodes rarely complete any task. They are collected on :meth:`make_raw_env` (the raw
        per-step reward, as in Minari's datasets) and stored with the same dict observations.
        ``behaviour`` (beyond the protocol, for symmetry with the mujoco plugin) accepts only
        ``None`` or ``"random"``.
        """
        spec = self.spec(task)
        if behaviour not in (None, "random"):
            raise ValueError(f"kitchen data can only be generated with behaviour='random', got {behaviour!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        batcher = ProgressBatcher(progress)
        env = self.make_raw_env(task)
        try:
            buffers = rollout(env, random_policy(env, seed), steps=steps, seed=seed, progress=batcher)
        finally:
            env.close()
        buffers = [dataclasses.replace(b, id=i) for i, b in enumerate(buffers)]
        meta = {
            "env_id": ENV_ID,
            "env_kwargs": env_kwargs(spec.extra["dataset"]),
            "behaviour": "random",
            "algorithm_name": "uniform random policy",
            "smoke_test_only": True,
            "description": (
                f"{task}, generated locally with uniform random actions: a smoke-test stand-in, NOT "
                "the human demonstrations of D4RL kitchen"
            ),
            "seed": seed,
            "total_steps": int(sum(len(b.rewards) for b in buffers)),
            "total_episodes": len(buffers),
        }
        return buffers, meta

    # -- scores ------------------------------------------------------------------------------

    def tasks_completed(self, task: str, episode_return: float, info: Mapping[str, Any] | None = None) -> int:
        """Distinct target tasks completed: from ``info['episode_task_completions']`` when given,
        else from the return of an episode run in :meth:`make_env`'s env."""
        targets = set(self.spec(task).extra["targets"])
        if info is not None and "episode_task_completions" in info:
            return len(targets & set(info["episode_task_completions"]))
        n = float(episode_return)
        if not (-1e-6 <= n <= N_TASKS + 1e-6) or abs(n - round(n)) > 1e-6:
            raise ValueError(
                f"{task}: return {episode_return} is not a count of completed tasks (0..{N_TASKS}); "
                "evaluate in the env from make_env (its reward counts first completions), "
                "or pass the episode's final info"
            )
        return int(round(n))

    def normalized_score(
        self, task: str, episode_return: float, scale: str | None = None, *, info: Mapping[str, Any] | None = None
    ) -> float:
        """100 * (tasks completed) / 4, D4RL's kitchen scale (``d4rl``, the only one). ``episode_return``
        is an episode's return in the :meth:`make_env` env (= tasks completed); the optional ``info``
        (the episode's final info, beyond the protocol) takes precedence when it carries
        ``episode_task_completions``."""
        return normalize_return(self.spec(task), self.tasks_completed(task, episode_return, info), scale)

    def success(self, task: str, episode_return: float, info: Mapping[str, Any]) -> bool | None:
        """All four target tasks completed."""
        return self.tasks_completed(task, episode_return, info) == N_TASKS


adapter = KitchenAdapter()

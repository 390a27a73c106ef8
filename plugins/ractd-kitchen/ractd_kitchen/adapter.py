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

Local data (``ractd fetch kitchen-* --source local``): the human demonstrations cannot be
generated, so :meth:`KitchenAdapter.generate` records scripted demonstrations instead
(:mod:`ractd_kitchen.scripted`: one inverse-kinematics controller per subtask, chained, with
Gaussian action noise) following the composition of D4RL's three datasets (:func:`episode_tasks`).
``docs/kitchen.md`` has the recipe and the measured success rates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np

from ractd_cli.adapters import EnvAdapter, TaskSpec, normalize_return, quiet_import
from ractd_cli.data.recording import EpisodeRecorder, ProgressBatcher, random_policy, rollout
from ractd_cli.paths import cache_root

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

# Loss weights (alpha, beta, sigma): the paper's Table 9 covers MuJoCo only, so Kitchen's sigma is
# chosen by measurement on the local scripted kitchen-mixed (docs/results.md, "FrankaKitchen"; one
# teacher, fd658b22, and its R_psi): the RACTD student scored 0.0 at sigma 1 and at 0.1, both within
# the paper's rule (weighted terms within one order of magnitude; at sigma 1 DSM 0.43, reward 0.31),
# and 47.75 +- 0.72 at sigma 0.01 (its weighted reward term about 1/90 of DSM) against CTD's
# 38.0 +- 1.3 (100 episodes, seed 0); over three student seeds 38.1 +- 10.9 against CTD's 29.9 +- 4.1
# (on par; sigma 0.003 scored 32.25 and 9.75 on two seeds). R_psi scores the first planned action;
# on scripted data its action gradient leads a strongly weighted student off the demonstrations.
# alpha and beta stay Table 9's medium-replay 1 and 1.
LOSS_WEIGHTS = (1.0, 1.0, 0.01)

# gamma 0.99: DESIGN.md (after the RACTD paper) gives discounts for the MuJoCo tasks only; 0.99
# is the discount IQL (Kostrikov et al., 2022) uses on every D4RL task, kitchen included.
GAMMA = 0.99

LOCAL_GENERATION = (
    "scripted demonstrations on FrankaKitchen-v1 (inverse-kinematics controllers per subtask, chained "
    "in D4RL's task compositions, with Gaussian action noise); not the human demonstrations of D4RL"
)

BEHAVIOURS = ("scripted", "random")
"""``generate``'s data-collecting policies: the scripted controllers (default) or uniform random actions."""

ACTION_NOISE = 0.1
"""Std of the Gaussian noise added to every scripted action (action units: 1 = 2 rad/s)."""

PARTIAL_FULL_SHARE = 0.5
"""kitchen-partial: the share of episodes planned as the four target subtasks in order."""

TAIL_STEPS = 10
"""Steps an episode goes on after its last subtask (the arm holding still) before it is cut."""

EPISODES_PER_CHUNK = 20
"""Finished episodes are cached in chunks of this many, so an interrupted generation resumes."""

SCRIPTED_VERSION = 1
"""Bumped whenever the controllers change what they record; part of the chunk cache's key."""

LOCAL_STEPS = {"complete": 40_000, "partial": 156_560, "mixed": 156_560}
"""Default env steps of ``fetch --source local``: partial and mixed as Minari's
``D4RL/kitchen/{partial,mixed}`` (156,560 steps each); complete more than D4RL's few human demos."""


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
        extra={"dataset": dataset, "targets": TARGETS[dataset], "d4rl_name": f"kitchen-{dataset}-v0",
               "local_steps": LOCAL_STEPS[dataset]},
    )


def episode_tasks(dataset: str, rng: np.random.Generator) -> tuple[list[str], bool]:
    """The subtasks one scripted episode of ``dataset`` performs, in order, and whether it is the
    dataset's four target subtasks in their order (D4RL's recipe, as Minari describes it):

    * ``complete``: always the four targets (microwave, kettle, light switch, slide cabinet), in order;
    * ``partial``: the four targets in order with probability :data:`PARTIAL_FULL_SHARE`, else
      four distinct subtasks drawn at random from the seven that are not all four targets;
    * ``mixed``: four distinct random subtasks, never all four targets (microwave, kettle, bottom
      burner, light switch) together.

    A random plan is reordered by :func:`ractd_kitchen.scripted.feasible_order` (the hinge
    cabinet after the subtasks its open door would obstruct).
    """
    from .scripted import SUBTASKS, feasible_order

    targets = list(TARGETS[dataset])
    if dataset == "complete" or (dataset == "partial" and rng.random() < PARTIAL_FULL_SHARE):
        return targets, True
    while True:
        plan = [str(t) for t in rng.permutation(np.array(SUBTASKS))[:N_TASKS]]
        if not set(targets) <= set(plan):
            return feasible_order(plan), False


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
        """FrankaKitchen-v1 exactly as the dataset's env: raw per-step task-count reward.

        Without gymnasium's passive env checker: FrankaKitchen-v1 hands back one observation object
        from step to step, which the checker warned about in four lines of every `rollout` and
        `bench`; :meth:`state` copies each observation, so nothing downstream holds that object."""
        gymnasium_robotics = quiet_import("gymnasium_robotics")

        gym.register_envs(gymnasium_robotics)
        return gym.make(ENV_ID, **env_kwargs(self.spec(task).extra["dataset"]), disable_env_checker=True,
                        **({"render_mode": render_mode} if render_mode else {}))

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
        s = np.array(obs["observation"] if isinstance(obs, Mapping) else obs, dtype=np.float32)  # a copy (make_raw_env)
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
        noise: float = ACTION_NOISE,
        cache: bool = True,
    ) -> tuple[Sequence[Any], dict]:
        """``steps`` env steps of ``task``'s dataset as Minari EpisodeBuffers, and metadata.

        ``behaviour`` (beyond the protocol): ``"scripted"`` (default) records the scripted
        controllers of :mod:`ractd_kitchen.scripted` on :meth:`make_raw_env` (the raw per-step
        reward and the dict observations, as in Minari's datasets). Episode ``k`` is reset with seed
        ``seed + k``; its plan (:func:`episode_tasks`) and its action noise (N(0, ``noise``^2) per
        coordinate) come from ``numpy.random.default_rng([seed, k])``. It ends :data:`TAIL_STEPS`
        steps after its last subtask, at the env's time limit, or at the budget (the last episode
        is cut there); all three are truncations. In ``kitchen-mixed`` an episode that would
        complete all four targets (by accident: plans never hold all four) ends just before the
        step that would complete the fourth. ``"random"``: uniform random actions, a smoke-test
        stand-in.

        Finished scripted episodes are cached under ``<cache>/kitchen-scripted/`` in chunks of
        :data:`EPISODES_PER_CHUNK` (NumPy ``.npz`` files, read without pickle), so a generation that
        is stopped resumes where it was and ends with the same data (``cache=False``: no cache).

        Metadata: ``recipe`` (how the data were made), ``seed``, ``success`` (completion
        statistics of the episodes, :func:`ractd_kitchen.quality.dataset_quality`), ``plans``
        (how often each subtask was planned) and Minari's fields.
        """
        spec = self.spec(task)
        dataset = spec.extra["dataset"]
        behaviour = "scripted" if behaviour is None else behaviour
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"kitchen behaviour must be one of {BEHAVIOURS}, got {behaviour!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        batcher = ProgressBatcher(progress)
        meta: dict[str, Any] = {"env_id": ENV_ID, "env_kwargs": env_kwargs(dataset), "behaviour": behaviour, "seed": seed}
        if behaviour == "random":
            env = self.make_raw_env(task)
            try:
                buffers = rollout(env, random_policy(env, seed), steps=steps, seed=seed, progress=batcher)
            finally:
                env.close()
            meta.update(
                algorithm_name="uniform random policy",
                smoke_test_only=True,
                description=f"{task}, generated locally with uniform random actions: a smoke-test stand-in, NOT "
                "the human demonstrations of D4RL kitchen",
            )
        else:
            buffers, extra = self._scripted(task, steps=steps, seed=seed, noise=noise, batcher=batcher, cache=cache)
            meta.update(extra)
        buffers = [dataclasses.replace(b, id=i) for i, b in enumerate(buffers)]
        meta["total_steps"] = int(sum(len(b.rewards) for b in buffers))
        meta["total_episodes"] = len(buffers)
        if behaviour == "scripted":
            from .quality import dataset_quality

            meta["success"] = dataset_quality((b.observations["observation"] for b in buffers), TARGETS[dataset])
        return buffers, meta

    def _scripted(
        self, task: str, *, steps: int, seed: int, noise: float, batcher: ProgressBatcher, cache: bool
    ) -> tuple[list[Any], dict[str, Any]]:
        """The scripted episodes of :meth:`generate` and their metadata."""
        import mujoco

        from .quality import completed_subtasks
        from .scripted import SUBTASKS, ScriptedPolicy

        dataset = self.spec(task).extra["dataset"]
        targets = set(TARGETS[dataset])
        recipe = {
            "generator": "ractd_kitchen.scripted",
            "version": SCRIPTED_VERSION,
            "dataset": dataset,
            "targets": list(TARGETS[dataset]),
            "plans": {
                "complete": "the four targets in order, every episode",
                "partial": f"the four targets in order with probability {PARTIAL_FULL_SHARE}, else 4 random distinct "
                "subtasks of the 7 that are not all four targets",
                "mixed": "4 random distinct subtasks of the 7, never all four targets; an episode about to complete all "
                "four ends before that step",
            }[dataset],
            "subtasks": list(SUBTASKS),
            "action_noise_std": float(noise),
            "tail_steps": TAIL_STEPS,
            "max_episode_steps": MAX_STEPS[dataset],
            "episode_seed": "env.reset(seed=seed + k); plan and noise from numpy.random.default_rng([seed, k])",
        }
        store = _ChunkStore(task, seed, recipe) if cache else None
        env = self.make_raw_env(task)
        buffers: list[Any] = []
        infos: list[dict[str, Any]] = []
        done, t0 = 0, time.perf_counter()
        try:
            while done < steps:
                k = len(buffers)
                cached = store.load(k) if store is not None and k % EPISODES_PER_CHUNK == 0 else None
                if cached is not None:  # a whole chunk from an earlier run
                    for buf, info in zip(*cached):
                        if done >= steps:
                            break
                        n = len(buf.rewards)
                        if done + n > steps:  # the budget ends inside this episode
                            buf = _cut(buf, steps - done)
                            n = steps - done
                        buffers.append(buf)
                        infos.append(info)
                        done += n
                        batcher.step(n)
                    continue
                rng = np.random.default_rng([seed, k])
                plan, full = episode_tasks(dataset, rng)
                # A full MuJoCo reset first (the solver's warm start included): episode k is then the
                # same whichever episode ran before it, which a resumed generation relies on.
                mujoco.mj_resetData(env.unwrapped.model, env.unwrapped.data)
                obs, _ = env.reset(seed=seed + k)
                policy = ScriptedPolicy(env, plan, noise=noise, rng=rng)
                rec = EpisodeRecorder(obs, seed=seed + k)
                reached: set[str] = set()
                tail, cut, natural_end = 0, False, False
                while True:
                    action = policy()
                    obs, reward, terminated, truncated, info = env.step(action)
                    now = set(completed_subtasks(obs["observation"][None, :])) | set(info.get("episode_task_completions", ()))
                    if dataset == "mixed" and targets <= reached | now:
                        if not len(rec):
                            raise RuntimeError("kitchen-mixed: an episode completed all four targets on its first step")
                        cut = natural_end = True  # this step would complete the fourth target: end before it
                        break
                    reached |= now
                    rec.add(action, obs, reward, terminated, truncated)
                    tail += policy.finished
                    if terminated or truncated or tail > TAIL_STEPS:
                        natural_end = True
                        break
                    if done + len(rec) >= steps:
                        break
                buf = rec.to_buffer(k, truncate_last=True)
                buffers.append(buf)
                infos.append({"plan": plan, "full_plan": full, "cut_before_fourth_target": cut,
                              "controller_outcomes": [[n, bool(ok), int(st)] for n, ok, st in policy.outcomes]})
                done += len(buf.rewards)
                batcher.step(len(buf.rewards))
                if store is not None and natural_end and len(buffers) % EPISODES_PER_CHUNK == 0:
                    store.save(len(buffers) // EPISODES_PER_CHUNK - 1, buffers[-EPISODES_PER_CHUNK:], infos[-EPISODES_PER_CHUNK:])
        finally:
            env.close()
            batcher.flush()
        planned = {t: sum(t in i["plan"] for i in infos) for t in SUBTASKS}
        extra = {
            "algorithm_name": "ractd scripted FrankaKitchen controllers (damped least-squares IK) + Gaussian action noise",
            "smoke_test_only": False,
            "description": f"{task}, generated locally: {LOCAL_GENERATION}",
            "recipe": recipe,
            "plans": {"episodes_with_target_plan": int(sum(i["full_plan"] for i in infos)), "subtask_planned": planned,
                      "cut_before_fourth_target": int(sum(i["cut_before_fourth_target"] for i in infos))},
            "steps_per_second": round(done / max(time.perf_counter() - t0, 1e-9), 1),
        }
        return buffers, extra

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

    def episode_return(self, task: str, episode: Any) -> float:
        """A dataset episode's return as :meth:`make_env`'s env pays it: the distinct target tasks
        completed at some state of the episode (:func:`ractd_kitchen.quality.completed_subtasks` on
        its 59-dim states). The recorded rewards are the raw env's (a task held for 100 steps adds 100)."""
        from .quality import completed_subtasks

        targets = set(self.spec(task).extra["targets"])
        return float(len(targets & set(completed_subtasks(np.asarray(episode.states)))))

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


def _cut(buf: Any, n: int) -> Any:
    """The first ``n`` steps of an EpisodeBuffer (observations n+1 rows), its last step truncated."""

    def head(x: Any, rows: int) -> Any:
        return {key: head(v, rows) for key, v in x.items()} if isinstance(x, Mapping) else np.asarray(x)[:rows].copy()

    truncations = np.asarray(buf.truncations)[:n].copy()
    truncations[-1] = not bool(np.asarray(buf.terminations)[n - 1])
    return dataclasses.replace(
        buf, observations=head(buf.observations, n + 1), actions=head(buf.actions, n), rewards=head(buf.rewards, n),
        terminations=head(buf.terminations, n), truncations=truncations,
    )


class _ChunkStore:
    """Finished scripted episodes of one (task, seed, recipe), cached in chunks of
    :data:`EPISODES_PER_CHUNK`: ``chunk-NNNNN.npz`` (arrays; loaded with ``allow_pickle=False``) and
    ``chunk-NNNNN.json`` (episode seeds and plans), each written to a temporary file and renamed
    into place, so a chunk is either whole or absent."""

    SEP = "|"

    def __init__(self, task: str, seed: int, recipe: Mapping[str, Any]):
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        self.dir = cache_root() / "kitchen-scripted" / f"{task}-seed{int(seed)}-{key}"

    def _paths(self, index: int) -> tuple[Path, Path]:
        stem = self.dir / f"chunk-{index:05d}"
        return stem.with_suffix(".npz"), stem.with_suffix(".json")

    def save(self, index: int, buffers: Sequence[Any], infos: Sequence[Mapping[str, Any]]) -> None:
        arrays: dict[str, np.ndarray] = {}

        def put(prefix: str, x: Any) -> None:
            if isinstance(x, Mapping):
                for key, v in x.items():
                    put(f"{prefix}{self.SEP}{key}", v)
            else:
                arrays[prefix] = np.asarray(x)

        for j, b in enumerate(buffers):
            for field in ("observations", "actions", "rewards", "terminations", "truncations"):
                put(f"{j}{self.SEP}{field}", getattr(b, field))
        npz, meta = self._paths(index)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = npz.with_name(npz.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, npz)
        tmp = meta.with_name(meta.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"episodes": [{"id": int(b.id), "seed": b.seed, **dict(i)} for b, i in zip(buffers, infos)]}))
        os.replace(tmp, meta)

    def load(self, first_episode: int) -> tuple[list[Any], list[dict[str, Any]]] | None:
        """The cached chunk that starts at episode ``first_episode``, or None."""
        from minari.data_collector import EpisodeBuffer

        npz, meta = self._paths(first_episode // EPISODES_PER_CHUNK)
        if not (npz.is_file() and meta.is_file()):
            return None
        try:
            episodes = json.loads(meta.read_text())["episodes"]
            with np.load(npz, allow_pickle=False) as z:
                tree: dict[str, Any] = {}
                for name in z.files:
                    node = tree
                    *path, last = name.split(self.SEP)
                    for part in path:
                        node = node.setdefault(part, {})
                    node[last] = z[name]
        except (OSError, ValueError, KeyError):
            return None  # a damaged chunk is made again
        buffers, infos = [], []
        for j, e in enumerate(episodes):
            t = tree[str(j)]
            buffers.append(EpisodeBuffer(
                id=first_episode + j, seed=e["seed"], observations=t["observations"], actions=t["actions"],
                rewards=t["rewards"], terminations=t["terminations"], truncations=t["truncations"], infos=None,
            ))
            infos.append({k: v for k, v in e.items() if k not in ("id", "seed")})
        return buffers, infos


adapter = KitchenAdapter()

"""``ractd rollout``: run a planner in the real environment and score it.

Episodes run in lockstep batches (one gymnasium env per episode), so the planner sees a batch
of states per call: that is where the vectorisation is. Each planner call is timed; the
reported latency is planner wall time divided by the number of actions it produced.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .adapters import EnvAdapter, TaskSpec, make_env, resolve_score_scale
from .artifacts import Artifact
from .errors import UsageError
from .models import RewardConfig, StudentConfig, resolve_device, reward_of
from .planner import Planner, Sampling
from .resolve import PLANNERS, Loaded, TrajDiffuserOptions, build_planner, load_for_planning, load_trajdiffuser, loaded_from
from .trajdiffuser_planner import TrajDiffuserPlanner
from .ui import progress

PLAN_CHECK_RATES = {"plan_reaches_goal_rate": "plan reaches goal", "plan_hits_wall_rate": "plan hits wall"}
"""The adapter's first-plan checks (Maze2d) as :meth:`RolloutResult.summary` reports them, with the
column titles of `bench`'s table."""


class Policy(Protocol):
    """What the env loop drives: batched, stateful across the steps of one batch of episodes."""

    def reset(self, n: int, episodes: Sequence[int] | None = None) -> None:
        """Start ``n`` new episodes; ``episodes`` are their indices in the evaluation (for
        per-episode randomness that does not depend on the batching)."""

    def act(self, states: np.ndarray, goals: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        """states (n, obs_dim), goals (n, goal_dim) or None, active (n,) bool -> actions (n, act_dim).

        Rows of inactive episodes are ignored by the caller (the policy may skip them)."""


FOLLOWERS = ("inverse", "track", "controller")
"""How a ``states`` plan is executed (``rollout``/``bench --follow``); see :class:`PlanFollower`."""
DEFAULT_FOLLOW = "inverse"
"""The RACTD paper's execution: one open-loop plan per episode, followed by inverse dynamics."""
_FOLLOW_HOOKS = {"track": "track_action", "controller": "controller_action"}
"""The optional adapter method each follower other than ``inverse`` needs (docs/plugins.md)."""


@dataclass(frozen=True)
class Execution:
    """How a task's plans become actions: one validated value, made once per command by :meth:`of`.

    ``follow`` None: a ``chunk`` task, which executes each plan's first action and plans again at
    the next step (:class:`ChunkReplanner`). Otherwise a ``states`` task, whose one open-loop plan per
    episode is followed by ``follow`` (:class:`PlanFollower`), re-planned when it runs out if
    ``replan``, with the goal handed to the adapter's controller if ``snap_goal``.
    """

    follow: str | None = None
    replan: bool = False
    snap_goal: bool = False

    @classmethod
    def of(cls, adapter: EnvAdapter, spec: TaskSpec, follow: str | None = None, *, replan: bool = False,
           snap_goal: bool = False) -> "Execution":
        """The execution of ``spec``'s plans the options ask for (``follow`` None: :data:`DEFAULT_FOLLOW`
        on a ``states`` task). One-line UsageErrors for a follower the adapter lacks, ``--snap-goal``
        without ``--follow controller`` or without a goal, and any of the options on a ``chunk`` task."""
        if not spec.layout.open_loop:
            if follow is not None or replan or snap_goal:
                raise UsageError(f"--follow, --replan and --snap-goal apply to state-planning tasks; {spec.name} plans action chunks")
            return cls()
        follow = follow or DEFAULT_FOLLOW
        if follow not in FOLLOWERS:
            raise UsageError(f"unknown --follow {follow!r}; use one of {', '.join(FOLLOWERS)}")
        hook = _FOLLOW_HOOKS.get(follow)
        if hook is not None and not hasattr(adapter, hook):
            raise UsageError(f"--follow {follow} needs the adapter method {hook}, which {spec.name}'s adapter lacks; use --follow inverse")
        if snap_goal and follow != "controller":
            raise UsageError(f"--snap-goal hands the goal to the adapter's controller: it needs --follow controller, not --follow {follow}")
        if snap_goal and not spec.goal_dim:
            raise UsageError(f"--snap-goal needs a goal, and {spec.name} has none")
        return cls(follow, bool(replan), bool(snap_goal))

    def describe(self) -> dict[str, Any]:
        """``follow``, ``replan``, ``snap_goal`` for results (each None for a ``chunk`` task)."""
        if self.follow is None:
            return {"follow": None, "replan": None, "snap_goal": None}
        return {"follow": self.follow, "replan": self.replan, "snap_goal": self.snap_goal}


class _PlanningPolicy:
    """What both policies share: the planner's per-episode noise, the state histories it reads, the
    description of how plans are made and executed."""

    def __init__(self, planner: Planner, adapter: EnvAdapter, execution: Execution):
        self.planner, self.adapter, self.spec, self.execution = planner, adapter, planner.spec, execution

    def describe(self) -> dict:
        """How plans are made and executed, for results: the planning kind (its conditioning), horizon
        (states per plan), plan stride and training windows the model was trained with, a student's
        sigma (0 for CTD), kappa, selection and distill seed (:meth:`StudentConfig.describe`), a RACTD
        student's R_psi's return-to-go, the initial noise and clamping (None
        for the Trajectory Diffuser, which starts from its proposal), and the :class:`Execution`."""
        sampling = getattr(self.planner, "sampling", None)
        art = getattr(self.planner, "art", None)  # a stand-in planner may have none
        reward = reward_of(art) if art is not None else None
        student = StudentConfig.of(art) if art is not None and art.kind == "student" else None
        return {"planning": self.spec.planning, "horizon": self.spec.horizon, "plan_stride": self.spec.plan_stride, "windows": self.spec.windows,
                **(student.describe() if student is not None else {}),
                **(sampling.describe() if sampling is not None else {"init_noise": None, "clamp": None}),
                **(RewardConfig.of(reward).describe() if reward is not None else {}),
                **self.execution.describe()}

    def reset(self, n: int, episodes: Sequence[int] | None = None) -> None:
        """Start ``n`` episodes. With their indices ``episodes``, each plans with its own noise
        stream seeded by (planner seed, episode), so its noise is the same at any ``--batch``;
        without, the planner's single stream is shared by the batch."""
        self.noise = self.planner.noise_streams(episodes) if episodes is not None else None
        self.history: list[collections.deque] = [collections.deque(maxlen=self.spec.history) for _ in range(n)]
        self.checks: dict[str, np.ndarray] = {}

    def episode_checks(self) -> dict[str, np.ndarray]:
        """The adapter's ``plan_check`` of each episode's first plan since :meth:`reset`:
        {name: (n,) bool}; empty where the adapter has none or the task plans actions."""
        return self.checks

    def inputs(self, states: np.ndarray, goals: np.ndarray | None, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the planner reads for episodes ``rows``, in env units: their last h states (len(rows),
        h, obs_dim), the history padded at the start by repeating the first, and their goals
        (len(rows), goal_dim) or None. Appends ``states[rows]`` to the histories."""
        s = np.asarray(states[rows], dtype=np.float32)
        for i, r in enumerate(rows):
            h = self.history[r]
            h.append(s[i])
            while len(h) < h.maxlen:
                h.appendleft(s[i])
        past = torch.as_tensor(np.stack([np.stack(self.history[r]) for r in rows]))
        goal = None if goals is None else torch.as_tensor(np.asarray(goals[rows], dtype=np.float32))
        return past, goal


class ChunkReplanner(_PlanningPolicy):
    """A :class:`Policy` for ``chunk`` tasks: plan an action chunk from the last h states at every step
    and execute its first action."""

    def act(self, states: np.ndarray, goals: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        actions = np.zeros((states.shape[0], self.spec.act_dim), dtype=np.float32)
        rows = np.flatnonzero(active)
        x0, _ = self.planner.plan(*self.inputs(states, goals, rows), None if self.noise is None else self.noise[rows])
        actions[rows] = x0[:, 0].cpu().numpy()
        return actions


class PlanFollower(_PlanningPolicy):
    """A :class:`Policy` for ``states`` tasks: ONE open-loop plan (n, H, obs_dim) per episode from the
    start state and the goal, followed step by step: at step t the target is ``plan[t+1]``; past the
    plan's end it is the plan's last state with its rest dims (``spec.rest_dims``, the velocities) set
    to 0, i.e. hold the last planned state. The :class:`Execution`'s ``follow``:

    - ``"inverse"`` (default, the RACTD paper's): the inverse-dynamics model ``inverse`` (env units in
      and out, :class:`~ractd_cli.models.RawInverse`)
      a_t = f(s_t, target). Sees only the state and the plan, never the goal; no position error is
      fed back, so an open-loop plan's drift is never corrected.
    - ``"track"``: the adapter's ``track_action(state, target)``, the RACTD authors' tracking rule
      (Maze2d: a = (p* - p) + (v* - v)).
    - ``"controller"``: the adapter's ``controller_action(state, target[, goal])``, a PD controller
      (Maze2d: inverts the point mass's dynamics). With ``snap_goal`` it also gets the goal, and
      snaps a target near it to the goal itself: goal information the plan never had, so opt-in.

    ``replan``: plan again from the current state (and goal) whenever the plan runs out, instead
    of holding its last state.

    Where the adapter has ``plan_check(task, plans, goals)`` (Maze2d: does the plan reach the goal,
    does it pass through a wall), each episode's first plan is checked before it is followed
    (:meth:`episode_checks`): the plan's quality apart from how well it is executed.
    """

    def __init__(self, planner: Planner, adapter: EnvAdapter, execution: Execution, inverse: nn.Module | None = None):
        super().__init__(planner, adapter, execution)
        if execution.follow == "inverse" and inverse is None:
            raise UsageError("this task plans states: it needs an inverse-dynamics model (train-teacher makes one), or --follow track|controller")
        self.inverse = inverse.to(planner.device).eval() if inverse is not None else None
        self.to_target = {"inverse": self._inverse, "track": self._track, "controller": self._controller}[execution.follow]
        """a_t from (s_t, target, goal): the follower, chosen once."""

    def reset(self, n: int, episodes: Sequence[int] | None = None) -> None:
        super().reset(n, episodes)
        self.plans: np.ndarray | None = None  # (n, H, obs_dim) in env units
        self.hold: np.ndarray | None = None  # (n, obs_dim): the plans' last states at rest
        self.t_in_plan = 0

    def act(self, states: np.ndarray, goals: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        n = states.shape[0]
        if self.plans is None or (self.execution.replan and self.t_in_plan >= self.plans.shape[1] - 1):
            first = self.plans is None
            x0, _ = self.planner.plan(*self.inputs(states, goals, np.arange(n)), self.noise)  # the only place the goal is read
            # a state at every env step (a strided plan's knots joined by straight lines)
            self.plans = np.asarray(self.spec.layout.dense(self.spec, x0).cpu().numpy(), dtype=np.float32)
            if first and hasattr(self.adapter, "plan_check"):
                self.checks = {k: np.asarray(v, dtype=bool) for k, v in self.adapter.plan_check(self.spec.name, self.plans, goals).items()}
            self.hold = self.plans[:, -1].copy()
            self.hold[:, list(self.spec.rest_dims)] = 0.0
            self.t_in_plan = 0
        H = self.plans.shape[1]
        target = self.plans[:, self.t_in_plan + 1] if self.t_in_plan < H - 1 else self.hold  # (n, obs_dim)
        self.t_in_plan += 1
        return self.to_target(states, target, goals)

    def _track(self, states: np.ndarray, target: np.ndarray, goals: np.ndarray | None) -> np.ndarray:
        # The adapter's extra ``track_action(state, target_state)`` (batched; see docs/plugins.md).
        return np.asarray(self.adapter.track_action(states, target), dtype=np.float32)

    def _controller(self, states: np.ndarray, target: np.ndarray, goals: np.ndarray | None) -> np.ndarray:
        # The adapter's extra ``controller_action(state, target_state[, goal])`` (batched; see docs/plugins.md).
        goal = {"goal": goals} if self.execution.snap_goal and goals is not None else {}
        return np.asarray(self.adapter.controller_action(states, target, **goal), dtype=np.float32)

    def _inverse(self, states: np.ndarray, target: np.ndarray, goals: np.ndarray | None) -> np.ndarray:
        with torch.inference_mode():
            dev = self.planner.device
            s = torch.as_tensor(np.asarray(states, dtype=np.float32), device=dev)
            a = self.inverse(s, torch.as_tensor(target, device=dev))
        return a.cpu().numpy()


PlanningPolicy = ChunkReplanner | PlanFollower
"""The two policies that execute a planner's plans (:func:`planner_policy` picks one)."""


def planner_policy(planner: Planner, adapter: EnvAdapter, *, inverse: nn.Module | None = None,
                   execution: Execution | None = None) -> PlanningPolicy:
    """The policy that executes ``planner``'s plans as ``execution`` says (default: the task's default,
    :meth:`Execution.of` with no options): a :class:`PlanFollower` for ``states`` tasks, a
    :class:`ChunkReplanner` for ``chunk`` tasks."""
    execution = execution or Execution.of(adapter, planner.spec)
    if execution.follow is None:
        return ChunkReplanner(planner, adapter, execution)
    return PlanFollower(planner, adapter, execution, inverse)


@dataclass(frozen=True)
class PolicyRecipe:
    """Everything that makes a policy (:func:`planner_policy`) from the cache: picklable, so that a rollout
    worker process builds the same policy as its parent (:func:`run_episodes` ``workers``).

    ``model``: a teacher or student (``planner="diffusion"``) or a Trajectory Diffuser artifact
    (``planner="trajdiffuser"``), as an id, path, or ``student``/``teacher`` (the latest of that kind).
    """

    task: str
    model: str
    planner: str = "diffusion"
    sampler: str | None = None
    nfe: int | None = None
    trajdiffuser: TrajDiffuserOptions | None = None
    seed: int = 0
    jit: bool = True
    cuda_graphs: bool = True
    execution: Execution | None = None
    sampling: Sampling | None = None

    def build(self, adapter: EnvAdapter, spec: TaskSpec, device: str | torch.device) -> tuple[Loaded, Planner | TrajDiffuserPlanner, PlanningPolicy]:
        """Load the artifact and make its planner on ``device`` and the policy that follows its plans."""
        loaded = load_trajdiffuser(self.model, spec) if self.planner == "trajdiffuser" else load_for_planning(self.model, spec)
        planner = build_planner(loaded, spec, sampler=self.sampler, nfe=self.nfe, trajdiffuser=self.trajdiffuser, device=device, seed=self.seed,
                                jit=self.jit, cuda_graphs=self.cuda_graphs, sampling=self.sampling)
        policy = planner_policy(planner, adapter, inverse=loaded.inverse, execution=self.execution)
        return loaded, planner, policy

    def resolved(self, loaded: Loaded) -> "PolicyRecipe":
        """This recipe naming ``loaded``'s artifact by id, so that workers load the very same one
        (not a newer ``latest``)."""
        return dataclasses.replace(self, model=loaded.art.id)


@dataclass
class EpisodeResult:
    ret: float
    score: float
    length: int
    success: bool | None
    checks: dict[str, bool] = field(default_factory=dict)
    """The adapter's ``plan_check`` of the episode's first plan (see :class:`PlanFollower`)."""


@dataclass
class RolloutResult:
    task: str
    episodes: list[EpisodeResult]
    wall_s: float
    plan_s: float
    """Planner wall time (sum over calls)."""
    actions: int
    """Number of env steps taken (actions executed) over all episodes."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> np.ndarray:
        return np.array([e.score for e in self.episodes], dtype=float)

    def summary(self) -> dict[str, Any]:
        s = self.scores
        succ = [e.success for e in self.episodes if e.success is not None]
        check_names = sorted({k for e in self.episodes for k in e.checks})
        return {
            "task": self.task,
            "episodes": len(self.episodes),
            "score_mean": float(s.mean()) if len(s) else math.nan,
            "score_stderr": float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else 0.0,
            "return_mean": float(np.mean([e.ret for e in self.episodes])) if self.episodes else math.nan,
            "success_rate": float(np.mean(succ)) if succ else None,
            "ms_per_action": 1000.0 * self.plan_s / max(self.actions, 1),
            "wall_s": self.wall_s,
            **{f"{k}_rate": float(np.mean([e.checks[k] for e in self.episodes if k in e.checks])) for k in check_names},
            **self.info,
        }


class TimedPolicy:
    """Wraps a policy and accumulates the wall time of its ``act`` calls."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.seconds = 0.0

    def reset(self, n: int, episodes: Sequence[int] | None = None) -> None:
        self.policy.reset(n, episodes)

    def act(self, states, goals, active):
        t0 = time.perf_counter()
        a = self.policy.act(states, goals, active)
        self.seconds += time.perf_counter() - t0
        return a


def run_episodes(
    adapter: EnvAdapter,
    spec: TaskSpec,
    policy: Policy,
    *,
    episodes: int,
    seed: int = 0,
    batch: int = 50,
    show_progress: bool = True,
    score_scale: str | None = None,
    video: Any = None,
    workers: int = 1,
    recipe: PolicyRecipe | None = None,
    episode_ids: Sequence[int] | None = None,
    label: str | None = None,
) -> RolloutResult:
    """Run ``episodes`` evaluation episodes of ``spec`` under ``policy``, ``batch`` at a time.
    ``video`` (a :class:`ractd_cli.video.VideoRecorder`) is shown every step of its episodes.

    Episode i is reset with seed ``seed + i`` and the adapter's ``reset_options`` for i (drawn for
    every episode in order from one generator seeded by ``seed``), and plans from its own noise
    stream (:meth:`PlanFollower.reset`), so a given seed evaluates every planner on the same start
    states, goals and noise at any ``batch``. The returns are bit-identical only where the network's
    rounding does not depend on the batch size and thread count: MuJoCo amplifies it. Scores are
    normalised on ``score_scale`` (a key of ``spec.ref_scores``; None: ``d4rl`` where defined),
    recorded in the result's ``info["score_scale"]``.

    ``workers`` > 1 splits the episodes into that many contiguous parts, each run by a spawned CPU
    process with an equal share of torch's threads; each builds its own policy from ``recipe`` (which
    must make ``policy``; the task must come from an installed plugin). Each part's results are those
    of one process at that batch and thread count, joined in episode order. ``episode_ids``: run
    only these of the ``episodes`` (what a worker does). ``label``: what the progress bar names
    besides the task (e.g. bench's row).
    """
    score_scale = resolve_score_scale(spec, score_scale)
    if workers > 1:
        if recipe is None or video is not None:
            raise ValueError("rollout workers need the policy's recipe, and record no video")
        return _run_in_workers(spec, recipe, episodes=episodes, seed=seed, batch=batch, show_progress=show_progress,
                               score_scale=score_scale, workers=workers, label=label)
    timed = TimedPolicy(policy)
    results: list[EpisodeResult] = []
    steps_taken = 0
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    options = [adapter.reset_options(spec.name, i, rng) for i in range(episodes)]
    ids = list(range(episodes)) if episode_ids is None else [int(i) for i in episode_ids]
    with progress(f"rollout {spec.name}" + (f": {label}" if label else ""), len(ids), disable=not show_progress) as advance:
        for first in range(0, len(ids), batch):
            chunk = ids[first:first + batch]
            n = len(chunk)
            envs = [make_env(adapter, spec.name, seed=seed + e, **(video.env_kwargs(e) if video else {})) for e in chunk]
            try:
                obs = [env.reset(seed=seed + e, options=options[e])[0] for e, env in zip(chunk, envs)]
                timed.reset(n, chunk)
                active = np.ones(n, dtype=bool)
                returns = np.zeros(n)
                lengths = np.zeros(n, dtype=int)
                infos: list[dict] = [{} for _ in range(n)]
                if video is not None:
                    for i, env in enumerate(envs):
                        video.capture(chunk[i], env, adapter.state(spec.name, obs[i]), None)
                for _ in range(spec.max_episode_steps):
                    if not active.any():
                        break
                    states = np.stack([adapter.state(spec.name, o) for o in obs]).astype(np.float32)
                    goals = None
                    if spec.goal_dim:
                        goals = np.stack([adapter.goal(spec.name, o) for o in obs]).astype(np.float32)
                    actions = timed.act(states, goals, active.copy())
                    for i in np.flatnonzero(active):
                        space = envs[i].action_space
                        a = np.clip(np.asarray(actions[i], dtype=space.dtype), space.low, space.high)
                        o, r, term, trunc, info = envs[i].step(a)
                        obs[i] = o
                        if video is not None:
                            plans = getattr(policy, "plans", None)
                            video.capture(chunk[i], envs[i], adapter.state(spec.name, o), None if plans is None else plans[i])
                        returns[i] += float(r)
                        lengths[i] += 1
                        infos[i] = info
                        steps_taken += 1
                        if term or trunc:
                            active[i] = False
                checks = policy.episode_checks() if hasattr(policy, "episode_checks") else {}
                for i in range(n):
                    results.append(
                        EpisodeResult(
                            ret=float(returns[i]),
                            score=float(adapter.normalized_score(spec.name, float(returns[i]), scale=score_scale)),
                            length=int(lengths[i]),
                            success=adapter.success(spec.name, float(returns[i]), infos[i]),
                            checks={k: bool(v[i]) for k, v in checks.items()},
                        )
                    )
                advance(n)
            finally:
                for env in envs:
                    env.close()
    return RolloutResult(
        task=spec.name, episodes=results, wall_s=time.perf_counter() - t_start, plan_s=timed.seconds, actions=steps_taken,
        info={"score_scale": score_scale},
    )


def _run_in_workers(spec: TaskSpec, recipe: PolicyRecipe, *, episodes: int, seed: int, batch: int, show_progress: bool, score_scale: str,
                    workers: int, label: str | None = None) -> RolloutResult:
    """:func:`run_episodes` over ``workers`` spawned processes, each running a contiguous part of the
    episodes; their results are joined in episode order. The progress advances as each part ends."""
    parts = [p.tolist() for p in np.array_split(np.arange(episodes), min(workers, episodes)) if len(p)]
    threads = max(1, torch.get_num_threads() // len(parts))
    t_start = time.perf_counter()
    done: dict[int, RolloutResult] = {}
    with progress(f"rollout {spec.name}" + (f": {label}" if label else "") + f" ({len(parts)} workers)", episodes,
                  disable=not show_progress) as advance, _workers(len(parts)) as pool:
        futures = {pool.submit(_worker, recipe, part, episodes, seed, batch, score_scale, threads): k for k, part in enumerate(parts)}
        for fut in as_completed(futures):  # one part per worker: all start at once, so there is nothing queued to cancel
            done[futures[fut]] = fut.result()
            advance(len(parts[futures[fut]]))
    results = [done[k] for k in range(len(parts))]
    return RolloutResult(
        task=spec.name, episodes=[e for r in results for e in r.episodes], wall_s=time.perf_counter() - t_start,
        plan_s=sum(r.plan_s for r in results), actions=sum(r.actions for r in results),
        info={"score_scale": score_scale, "workers": len(parts), "threads_per_worker": threads, "nfe": results[0].info["nfe"]},
    )


@contextlib.contextmanager
def _workers(n: int) -> Iterator[ProcessPoolExecutor]:
    """``n`` spawned rollout processes. When the parent stops early (Ctrl-C, SIGTERM, a worker's error)
    they are ended at once, as a rollout has nothing to save; the pool's own exit would wait for each
    to play all its episodes."""
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _worker(recipe: PolicyRecipe, episode_ids: list[int], episodes: int, seed: int, batch: int, score_scale: str, threads: int) -> RolloutResult:
    """One rollout worker (a spawned process): ``threads`` torch threads, the policy made from
    ``recipe`` on the CPU, and episodes ``episode_ids`` of the ``episodes``."""
    from .registry import get_task

    torch.set_num_threads(threads)
    adapter, spec = get_task(recipe.task)
    _, planner, policy = recipe.build(adapter, spec, "cpu")
    res = run_episodes(adapter, spec, policy, episodes=episodes, seed=seed, batch=batch, show_progress=False, score_scale=score_scale,
                       episode_ids=episode_ids)
    res.info["nfe"] = planner.nfe_per_plan  # known once it has planned: the parent's planner never does
    return res


def rollout(
    adapter: EnvAdapter,
    spec: TaskSpec,
    model: str | None = None,
    *,
    sampler: str | None = None,
    nfe: int | None = None,
    episodes: int = 100,
    seed: int = 0,
    batch: int = 50,
    execution: Execution | None = None,
    score_scale: str | None = None,
    device: str = "auto",
    jit: bool = True,
    cuda_graphs: bool = True,
    show_progress: bool = True,
    planner: str = "diffusion",
    proposer: str | None = None,
    trajdiffuser: TrajDiffuserOptions | None = None,
    video: Any = None,
    workers: int = 1,
    sampling: Sampling | None = None,
) -> RolloutResult:
    """Plan with a teacher or student (``planner="diffusion"``: ``model``, default the latest
    student, sampled by ``sampler`` at ``nfe`` evaluations) or with the Trajectory Diffuser
    (``planner="trajdiffuser"``: the artifact ``proposer``, default the task's latest, run with
    ``trajdiffuser`` options), and run the episodes. Plans are executed as ``execution`` says (default:
    the task's, :meth:`Execution.of`), scores normalised on ``score_scale`` (default ``d4rl``); both
    are recorded in ``info``, with
    ``sampling`` (initial noise and clamping, :class:`~ractd_cli.planner.Sampling`).
    ``workers`` > 1 runs the episodes in that many CPU processes (:func:`run_episodes`).
    """

    execution = execution or Execution.of(adapter, spec)
    score_scale = resolve_score_scale(spec, score_scale)
    if planner not in PLANNERS:
        raise UsageError(f"unknown --planner {planner!r}; use one of {', '.join(PLANNERS)}")
    if planner == "trajdiffuser":  # usage first, then the cache
        if model is not None:
            raise UsageError("--planner trajdiffuser runs its own networks; pass the artifact as --proposer, not --model")
        if nfe is not None:
            raise UsageError("--nfe does not apply to --planner trajdiffuser; set --refine-steps (and --sampler euler|heun)")
        trajdiffuser = trajdiffuser or TrajDiffuserOptions()
    elif proposer is not None or trajdiffuser is not None:
        raise UsageError("--proposer, --refine-steps, --refine-sigma, --guidance, --target-return and --candidates need --planner trajdiffuser")
    dev = resolve_device(device)
    check_workers(workers, dev, video=video is not None)
    recipe = PolicyRecipe(spec.name, (proposer or "latest") if planner == "trajdiffuser" else (model or "student"), planner, sampler=sampler,
                          nfe=nfe, trajdiffuser=trajdiffuser, seed=seed, jit=jit, cuda_graphs=cuda_graphs, execution=execution,
                          sampling=sampling)
    loaded, p, policy = recipe.build(adapter, spec, dev)
    extra = p.describe() if planner == "trajdiffuser" else {"planner": "diffusion"}
    res = run_episodes(adapter, spec, policy, episodes=episodes, seed=seed, batch=batch, show_progress=show_progress,
                       score_scale=score_scale, video=video, workers=workers, recipe=recipe.resolved(loaded))
    res.info.update(
        model_id=loaded.art.id, model_kind=loaded.art.kind, sampler=p.sampler_name,
        nfe=res.info.get("nfe", p.nfe_per_plan), nfe_paper=p.nfe_paper, device=str(p.device), jit=p.jit, jit_error=p.jit_error,
        cuda_graphs=p.cuda_graphs, cuda_graphs_error=p.cuda_graphs_error,
        **policy.describe(), **extra,
    )
    res.info.setdefault("workers", 1)
    return res


def check_workers(workers: int, device: torch.device, *, video: bool = False) -> None:
    """One-line UsageErrors for a ``--workers`` that cannot apply: below 1, on a GPU, or with ``--video``."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers > 1 and device.type != "cpu":
        raise UsageError(f"--workers splits the episodes over CPU processes; on {device.type} use --workers 1")
    if workers > 1 and video:
        raise UsageError("--video records in one process: use --workers 1 with --video")


def score_artifact(
    adapter: EnvAdapter, spec: TaskSpec, art: Artifact, *, episodes: int, seed: int = 0, device: str | torch.device = "cpu",
    sampler: str | None = None, nfe: int | None = None,
) -> dict[str, Any]:
    """Score a teacher or student artifact (saved or in memory, e.g. a model mid-training) with
    ``sampler``/``nfe`` (default: its own default sampler) and the task's default follower:
    ``score_mean``, ``score_stderr``, ``success_rate`` over ``episodes`` episodes from ``seed`` (the
    same starts as ``rollout --seed``), and where the adapter checks plans (Maze2d) the shares of
    first plans that reach the goal and that pass through a wall (``plan_*_rate``)."""
    loaded = loaded_from(art, spec)
    planner = build_planner(loaded, spec, sampler=sampler, nfe=nfe, device=device, seed=seed, jit=False)
    policy = planner_policy(planner, adapter, inverse=loaded.inverse)
    s = run_episodes(adapter, spec, policy, episodes=episodes, seed=seed, show_progress=False).summary()
    return {k: v for k, v in s.items() if k in ("score_mean", "score_stderr", "success_rate") or k in PLAN_CHECK_RATES}

"""``ractd rollout``: run a planner in the real environment and score it.

Episodes run in lockstep batches (one gymnasium env per episode), so the planner sees a batch
of states per call: that is where the vectorisation is. Each planner call is timed; the
reported latency is planner wall time divided by the number of actions it produced.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .adapters import EnvAdapter, TaskSpec, resolve_score_scale
from .ui import progress


class Policy(Protocol):
    """What the env loop drives: batched, stateful across the steps of one batch of episodes."""

    def reset(self, n: int) -> None:
        """Start ``n`` new episodes."""

    def act(self, states: np.ndarray, goals: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        """states (n, obs_dim), goals (n, goal_dim) or None, active (n,) bool -> actions (n, act_dim).

        Rows of inactive episodes are ignored by the caller (the policy may skip them)."""


@dataclass
class EpisodeResult:
    ret: float
    score: float
    length: int
    success: bool | None


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
        return {
            "task": self.task,
            "episodes": len(self.episodes),
            "score_mean": float(s.mean()) if len(s) else math.nan,
            "score_stderr": float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else 0.0,
            "return_mean": float(np.mean([e.ret for e in self.episodes])) if self.episodes else math.nan,
            "success_rate": float(np.mean(succ)) if succ else None,
            "ms_per_action": 1000.0 * self.plan_s / max(self.actions, 1),
            "wall_s": self.wall_s,
            **self.info,
        }


class TimedPolicy:
    """Wraps a policy and accumulates the wall time of its ``act`` calls."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.seconds = 0.0

    def reset(self, n: int) -> None:
        self.policy.reset(n)

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
) -> RolloutResult:
    """Run ``episodes`` evaluation episodes of ``spec`` under ``policy``, ``batch`` at a time.

    Episode i is reset with seed ``seed + i`` and the adapter's ``reset_options`` for i, so a
    given seed evaluates every planner on the same start states and goals. Scores are normalised
    on ``score_scale`` (a key of ``spec.ref_scores``; None: ``d4rl`` where defined), recorded in
    the result's ``info["score_scale"]``.
    """
    score_scale = resolve_score_scale(spec, score_scale)
    timed = TimedPolicy(policy)
    results: list[EpisodeResult] = []
    steps_taken = 0
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    with progress(f"rollout {spec.name}", episodes, disable=not show_progress) as advance:
        for first in range(0, episodes, batch):
            n = min(batch, episodes - first)
            envs = [adapter.make_env(spec.name, seed=seed + first + i) for i in range(n)]
            try:
                obs = [
                    env.reset(seed=seed + first + i, options=adapter.reset_options(spec.name, first + i, rng))[0]
                    for i, env in enumerate(envs)
                ]
                timed.reset(n)
                active = np.ones(n, dtype=bool)
                returns = np.zeros(n)
                lengths = np.zeros(n, dtype=int)
                infos: list[dict] = [{} for _ in range(n)]
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
                        returns[i] += float(r)
                        lengths[i] += 1
                        infos[i] = info
                        steps_taken += 1
                        if term or trunc:
                            active[i] = False
                for i in range(n):
                    results.append(
                        EpisodeResult(
                            ret=float(returns[i]),
                            score=float(adapter.normalized_score(spec.name, float(returns[i]), scale=score_scale)),
                            length=int(lengths[i]),
                            success=adapter.success(spec.name, float(returns[i]), infos[i]),
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
    follow: str | None = None,
    replan: bool = False,
    snap_goal: bool = False,
    score_scale: str | None = None,
    device: str = "auto",
    jit: bool = True,
    show_progress: bool = True,
    planner: str = "diffusion",
    proposer: str | None = None,
    refine_steps: int | None = None,
    refine_sigma: float | None = None,
) -> RolloutResult:
    """Plan with a teacher or student (``planner="diffusion"``: ``sampler`` at ``nfe`` evaluations)
    or with the Trajectory Diffuser (``planner="trajdiffuser"``: ``proposer`` refined by the teacher
    ``model`` in ``refine_steps`` steps from ``refine_sigma``), and run the episodes.

    ``model`` defaults to the latest student for ``diffusion`` and the latest teacher for
    ``trajdiffuser``; ``proposer`` to the task's latest proposer. ``states`` plans are executed by
    ``follow`` (default ``inverse``; ``replan``, ``snap_goal``: see :class:`~ractd_cli.planner.PlannerPolicy`),
    scores normalised on ``score_scale`` (default ``d4rl``); all four are recorded in ``info``.
    """
    from .errors import UsageError
    from .planner import (
        DEFAULT_REFINE_SIGMA,
        check_follow,
        DEFAULT_REFINE_STEPS,
        PLANNERS,
        Planner,
        PlannerPolicy,
        TrajDiffuserPlanner,
        load_for_planning,
        load_for_trajdiffuser,
    )
    from .train.loop import resolve_device

    follow = check_follow(adapter, spec, follow, replan=replan, snap_goal=snap_goal)
    score_scale = resolve_score_scale(spec, score_scale)
    if planner not in PLANNERS:
        raise UsageError(f"unknown --planner {planner!r}; use one of {', '.join(PLANNERS)}")
    extra: dict[str, Any] = {}
    if planner == "trajdiffuser":
        if nfe is not None:
            raise UsageError("--nfe does not apply to --planner trajdiffuser; set --refine-steps (and --sampler euler|heun)")
        loaded, proposer_art = load_for_trajdiffuser(model, proposer, spec)
        p = TrajDiffuserPlanner(
            loaded.teacher, proposer_art, spec,
            refine_steps=DEFAULT_REFINE_STEPS if refine_steps is None else refine_steps,
            refine_sigma=DEFAULT_REFINE_SIGMA if refine_sigma is None else refine_sigma,
            sampler=sampler, device=resolve_device(device), seed=seed, jit=jit,
        )
        extra = p.describe()
    else:
        if proposer is not None or refine_steps is not None or refine_sigma is not None:
            raise UsageError("--proposer, --refine-steps and --refine-sigma need --planner trajdiffuser")
        loaded = load_for_planning(model or "student", spec)
        p = Planner(loaded.art, spec, sampler=sampler, nfe=nfe, device=resolve_device(device), seed=seed, jit=jit)
        extra = {"planner": "diffusion"}
    policy = PlannerPolicy(p, adapter, inverse=loaded.inverse, follow=follow, replan=replan, snap_goal=snap_goal)
    res = run_episodes(adapter, spec, policy, episodes=episodes, seed=seed, batch=batch, show_progress=show_progress,
                       score_scale=score_scale)
    res.info.update(
        model_id=loaded.art.id, model_kind=loaded.art.kind, sampler=p.sampler_name,
        nfe=p.nfe_per_plan, nfe_paper=getattr(p, 'nfe_paper', p.nfe_per_plan), device=str(p.device), **policy.describe(), **extra,
    )
    return res

"""From artifacts to actions: rebuild networks, sample plans, turn plans into actions.

Everything here is env-agnostic: the adapter's :class:`~ractd_cli.adapters.TaskSpec` says
whether a plan is an action chunk (closed loop: execute the first action, replan) or a state
sequence (open loop: one plan per episode, followed by the inverse-dynamics model, the adapter's
tracking rule or its controller; see :class:`PlannerPolicy`).

Conditioning layout (normalised to [-1, 1]):
- ``chunk``:  cond = s_{n-h+1..n} flattened, shape (B, h*obs_dim); x = actions (B, c, act_dim).
- ``states``: cond = [s_n, goal], shape (B, obs_dim+goal_dim);     x = states (B, H, obs_dim).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .adapters import EnvAdapter, TaskSpec
from .artifacts import Artifact, load_artifact
from .diffusion import (
    SAMPLERS,
    CTMPrecond,
    EDMPrecond,
    append_zero,
    ctm_sample,
    karras_sigmas,
    student_sigmas,
)
from .errors import RactdError, UsageError
from .nets import build_net
from .proposer import build_proposer
from .train.common import normalizers_from

TEACHER_SAMPLERS = ("heun", "euler", "ancestral")
STUDENT_SAMPLERS = ("onestep", "multistep")
DEFAULT_NFE = {"heun": 159, "euler": 15, "ancestral": 15, "onestep": 1, "multistep": 2}
PLANNERS = ("diffusion", "trajdiffuser")
REFINE_SAMPLERS = ("euler", "heun")
DEFAULT_REFINE_STEPS = 5
DEFAULT_REFINE_SIGMA = 0.5
"""Noise level (EDM scale) the Trajectory Diffuser's proposal is lifted to before refinement:
sigma_data, where signal and noise have equal scale, so the teacher can move the proposal to
the nearest mode of the data without forgetting it."""


def cond_dim(spec: TaskSpec) -> int:
    return spec.history * spec.obs_dim if spec.planning == "chunk" else spec.obs_dim + spec.goal_dim


def x_shape(spec: TaskSpec) -> tuple[int, int]:
    """(T, D) of one plan."""
    return (spec.horizon, spec.act_dim) if spec.planning == "chunk" else (spec.horizon, spec.obs_dim)


def load_net(art: Artifact, prefix: str = "net") -> nn.Module:
    """Rebuild the network stored in an artifact (config ``<prefix>_kind``/``<prefix>``) with its weights."""
    cfg = art.config
    net = build_net(cfg[f"{prefix}_kind"], cfg[prefix])
    net.load_state_dict(art.group(prefix))
    return net.eval()


def denoiser_from(art: Artifact) -> EDMPrecond:
    return EDMPrecond(load_net(art), sigma_data=art.config["sigma_data"]).eval()


def student_from(art: Artifact) -> CTMPrecond:
    return CTMPrecond(load_net(art), sigma_data=art.config["sigma_data"]).eval()


def sigma_grid(sampler: str, nfe: int, cfg: dict, device: torch.device | None = None) -> torch.Tensor:
    """The sigma grid a sampler walks for a given NFE budget (ends in 0).

    Heun over N bins costs 2N-1 evaluations, so N = (nfe+1)//2; Euler and ancestral cost one per
    step; the student takes k = nfe jumps.
    """
    smin, smax = cfg["sigma_min"], cfg["sigma_max"]
    if sampler == "heun":
        return append_zero(karras_sigmas(max(1, (nfe + 1) // 2), smin, smax, device=device))
    if sampler in ("euler", "ancestral"):
        return append_zero(karras_sigmas(nfe, smin, smax, device=device))
    return student_sigmas(nfe, sigma_min=smin, sigma_max=smax, device=device)


class Planner:
    """Samples normalised plans from a teacher or student artifact with one of the samplers.

    ``plan(cond)``: cond (B, cond_dim) normalised -> x0 (B, T, D) normalised, plus NFE.
    """

    def __init__(self, art: Artifact, spec: TaskSpec, *, sampler: str | None = None, nfe: int | None = None, device: str | torch.device = "cpu", seed: int = 0, jit: bool = False):
        self.art, self.spec = art, spec
        self.device = torch.device(device)
        is_student = art.kind == "student"
        sampler = sampler or ("heun" if not is_student else "multistep" if (nfe or 1) > 1 else "onestep")
        allowed = STUDENT_SAMPLERS if is_student else TEACHER_SAMPLERS
        if sampler not in allowed:
            raise UsageError(f"sampler {sampler!r} does not apply to a {art.kind}; use one of {', '.join(allowed)}")
        if sampler == "onestep" and nfe not in (None, 1):
            raise UsageError(f"--sampler onestep takes exactly one step, not --nfe {nfe}; use --sampler multistep for k steps")
        nfe = nfe or DEFAULT_NFE[sampler]
        if nfe < 1:
            raise UsageError(f"--nfe must be at least 1, got {nfe}")
        self.sampler_name, self.nfe_budget = sampler, nfe
        self.model = (student_from(art) if is_student else denoiser_from(art)).to(self.device)
        self.sample_fn: Callable = ctm_sample if is_student else SAMPLERS[sampler]
        self.sigmas = sigma_grid(sampler, nfe, art.config, self.device)
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.norms = normalizers_from(art.tensors)
        self.T, self.D = x_shape(spec)
        self.nfe_per_plan: int | None = None
        self.jit = jit
        if jit:
            try:
                self._freeze(is_student)
            except Exception:  # a network TorchScript cannot trace: stay eager (_freeze changed nothing), say so in results
                self.jit = False

    def _freeze(self, is_student: bool) -> None:
        """Replace the eager model by a traced, frozen TorchScript graph (same math, less Python).
        Assigns only once the graph is built, so a failed trace leaves the eager planner intact.

        Every network call of the sampler goes through the frozen graph, so a teacher and a
        student compared with ``jit=True`` get the same treatment. For the one-step student the
        times are constants (t = T, s = sigmas[-1]), so freezing also folds the t/s embeddings.
        """
        if is_student and self.sampler_name == "onestep":
            x, cond = _example(self)[:2]
            graph = frozen(_OneStep(self.model, float(self.sigmas[0]), float(self.sigmas[-1])), (x, cond))
            self.sample_fn = lambda model, x, sigmas, *, cond=None, generator=None: (graph(x, cond), 1)
        else:
            self.model = frozen_model(self.model, self, n_times=2 if is_student else 1)

    @property
    def nfe_paper(self) -> int:
        """NFE the way the paper counts it: Heun over N bins is "N" (80 for the teacher, Tables 2-3,
        11), though it makes 2N - 1 network calls (``nfe_per_plan``); every other sampler makes one
        call per step, so both counts agree."""
        return len(self.sigmas) - 1 if self.sampler_name == "heun" else self.nfe_budget

    def reseed(self) -> None:
        """Restart the noise stream at ``seed``: plans from here on are those of a fresh planner."""
        self.generator.manual_seed(self.seed)

    @torch.inference_mode()
    def plan(self, cond: torch.Tensor) -> tuple[torch.Tensor, int]:
        B = cond.shape[0]
        x = torch.randn(B, self.T, self.D, generator=self.generator, device=self.device) * self.sigmas[0]
        x0, self.nfe_per_plan = self.sample_fn(self.model, x, self.sigmas, cond=cond.to(self.device), generator=self.generator)
        return x0, self.nfe_per_plan


class _OneStep(nn.Module):
    """x_T, cond -> G(x_T, T, s_end, cond): the student's one-step plan with its times fixed."""

    def __init__(self, student: nn.Module, T: float, s_end: float):
        super().__init__()
        self.student, self.T, self.s_end = student, T, s_end

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        return self.student(x, torch.full((B,), self.T, device=x.device), torch.full((B,), self.s_end, device=x.device), cond)


class _Broadcast:
    """Calls a frozen graph traced with (B,) times, accepting scalar times as the samplers may pass."""

    def __init__(self, frozen, n_times: int):
        self.frozen, self.n_times = frozen, n_times

    def __call__(self, x, *args):
        times = [torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]) for t in args[: self.n_times]]
        return self.frozen(x, *times, *args[self.n_times :])


def _example(planner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-1 example inputs (x, cond, sigma) for tracing a planner's network."""
    dev = planner.device
    return (torch.zeros(1, planner.T, planner.D, device=dev), torch.zeros(1, cond_dim(planner.spec), device=dev), torch.ones(1, device=dev))


def frozen_model(model: nn.Module, planner, *, n_times: int) -> "_Broadcast":
    """A denoiser D(x, sigma, cond) (n_times=1) or student G(x, t, s, cond) (n_times=2) as a frozen graph."""
    x, cond, sig = _example(planner)
    return _Broadcast(frozen(model, (x, *[sig * (1.0 - 0.5 * i) for i in range(n_times)], cond)), n_times=n_times)


def frozen(module: nn.Module, example: tuple) -> torch.jit.ScriptModule:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


def proposer_from(art: Artifact) -> nn.Module:
    """Rebuild the Trajectory Diffuser proposer stored in a ``proposer`` artifact."""
    net = build_proposer(art.config["net"], art.config["net_kind"])
    net.load_state_dict(art.group("net"))
    return net.eval()


def refine_sigmas(refine_sigma: float, steps: int, sigma_min: float, device: torch.device | None = None) -> torch.Tensor:
    """The grid the refinement walks: ``steps`` steps on a Karras grid from ``refine_sigma`` to 0.

    ``steps`` = 0 or ``refine_sigma`` = 0 gives ``[0]``: no step, the proposal is the plan.
    """
    if steps == 0 or refine_sigma == 0:
        return torch.zeros(1, device=device)
    return append_zero(karras_sigmas(steps, min(sigma_min, refine_sigma), refine_sigma, device=device))


def _renormalize(spec: TaskSpec, cond: torch.Tensor | None, x: torch.Tensor | None, src: dict, dst: dict):
    """Re-express a normalised cond (layout above) and/or plan x from ``src`` to ``dst`` normalisers."""

    def conv(v: torch.Tensor, name: str) -> torch.Tensor:
        return dst[name].normalize(src[name].unnormalize(v)) if name in src and name in dst else v

    if cond is not None:
        if spec.planning == "chunk":
            cond = conv(cond.reshape(cond.shape[0], spec.history, spec.obs_dim), "state").reshape(cond.shape[0], -1)
        else:
            cond = torch.cat([conv(cond[:, : spec.obs_dim], "state"), conv(cond[:, spec.obs_dim :], "goal")], dim=-1)
    if x is not None:
        x = conv(x, "action" if spec.planning == "chunk" else "state")
    return cond, x


class TrajDiffuserPlanner:
    """Trajectory Diffuser (Huang et al.): a transformer proposes, the EDM teacher refines.

    ``plan(cond)``: cond (B, cond_dim) normalised -> x0 (B, T, D) normalised, plus NFE, where

        x_prop = proposer.generate(cond)                            (autoregressive, no NFE)
        x      = x_prop + refine_sigma * n,  n ~ N(0, I)
        x0     = sampler(teacher, x, karras(refine_steps, refine_sigma -> 0))

    ``refine_steps`` = 0 (or ``refine_sigma`` = 0) returns the proposal itself. NFE counts
    teacher calls only (Euler: K, Heun: 2K-1); the proposer's time is in the callers' latency.
    Drop-in for :class:`Planner` in :class:`PlannerPolicy` and ``bench``.
    """

    def __init__(
        self,
        teacher: Artifact,
        proposer: Artifact,
        spec: TaskSpec,
        *,
        refine_steps: int = DEFAULT_REFINE_STEPS,
        refine_sigma: float = DEFAULT_REFINE_SIGMA,
        sampler: str | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        jit: bool = False,
    ):
        sampler = sampler or "euler"
        if sampler not in REFINE_SAMPLERS:
            raise UsageError(f"sampler {sampler!r} does not apply to trajdiffuser refinement; use one of {', '.join(REFINE_SAMPLERS)}")
        if refine_steps < 0:
            raise UsageError(f"--refine-steps must be >= 0, got {refine_steps}")
        if not 0 <= refine_sigma <= teacher.config["sigma_max"]:
            raise UsageError(f"--refine-sigma must be in [0, {teacher.config['sigma_max']:g}], got {refine_sigma:g}")
        if teacher.kind != "teacher" or proposer.kind != "proposer":
            raise UsageError(f"trajdiffuser needs a teacher and a proposer, got a {teacher.kind} and a {proposer.kind}")
        self.art, self.proposer_art, self.spec = teacher, proposer, spec
        self.T, self.D = x_shape(spec)
        pc = proposer.config["net"]
        if (pc["horizon"], pc["x_dim"], pc["cond_dim"]) != (self.T, self.D, cond_dim(spec)):
            raise UsageError(
                f"proposer {proposer.id} plans ({pc['horizon']}, {pc['x_dim']}) from cond {pc['cond_dim']}, but {spec.name} "
                f"needs ({self.T}, {self.D}) from cond {cond_dim(spec)}; retrain it with `ractd train-proposer --env {spec.name}`"
            )
        self.device = torch.device(device)
        self.sampler_name = sampler
        self.refine_steps, self.refine_sigma = int(refine_steps), float(refine_sigma)
        self.model = denoiser_from(teacher).to(self.device)
        self.proposer = proposer_from(proposer).to(self.device)
        self.jit = jit
        if jit:  # the refining teacher gets the same frozen graph as in Planner (the proposer stays eager)
            self.model = frozen_model(self.model, self, n_times=1)
        self.sample_fn: Callable = SAMPLERS[sampler]
        self.sigmas = refine_sigmas(self.refine_sigma, self.refine_steps, teacher.config["sigma_min"], self.device)
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.norms = normalizers_from(teacher.tensors)
        self._proposer_norms = normalizers_from(proposer.tensors)
        self._same_norms = self.norms.keys() == self._proposer_norms.keys() and all(
            np.array_equal(n.min, self._proposer_norms[k].min) and np.array_equal(n.max, self._proposer_norms[k].max)
            for k, n in self.norms.items()
        )
        self.nfe_per_plan: int | None = None

    @torch.inference_mode()
    def propose(self, cond: torch.Tensor) -> torch.Tensor:
        """The proposer's plan (B, T, D), in the teacher's normalisation."""
        cond = cond.to(self.device)
        if self._same_norms:
            return self.proposer.generate(cond)
        cond_p, _ = _renormalize(self.spec, cond, None, self.norms, self._proposer_norms)
        _, x = _renormalize(self.spec, None, self.proposer.generate(cond_p), self._proposer_norms, self.norms)
        return x

    @torch.inference_mode()
    def refine(self, x_prop: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Noise ``x_prop`` to ``refine_sigma`` and denoise it with the teacher: (x0, NFE)."""
        if len(self.sigmas) < 2:
            return x_prop, 0
        noise = torch.randn(x_prop.shape, generator=self.generator, device=self.device, dtype=x_prop.dtype)
        return self.sample_fn(self.model, x_prop + self.sigmas[0] * noise, self.sigmas, cond=cond.to(self.device), generator=self.generator)

    reseed = Planner.reseed

    @torch.inference_mode()
    def plan(self, cond: torch.Tensor) -> tuple[torch.Tensor, int]:
        x0, self.nfe_per_plan = self.refine(self.propose(cond), cond)
        return x0, self.nfe_per_plan

    def describe(self) -> dict:
        """What a result should record about this planner."""
        return {
            "planner": "trajdiffuser",
            "proposer_id": self.proposer_art.id,
            "refine_steps": self.refine_steps,
            "refine_sigma": self.refine_sigma,
        }


FOLLOWERS = ("inverse", "track", "controller")
"""How a ``states`` plan is executed (``rollout``/``bench --follow``); see :class:`PlannerPolicy`."""
DEFAULT_FOLLOW = "inverse"
"""The RACTD paper's execution: one open-loop plan per episode, followed by inverse dynamics."""
_FOLLOW_HOOKS = {"track": "track_action", "controller": "controller_action"}
"""The optional adapter method each follower other than ``inverse`` needs (docs/plugins.md)."""


def check_follow(adapter: EnvAdapter, spec: TaskSpec, follow: str | None = None, *, replan: bool = False, snap_goal: bool = False) -> str | None:
    """Check the plan-following options for ``spec`` and return the follower (None: ``chunk`` tasks,
    which execute their plans' first action and have no follower). One-line UsageErrors for a
    follower the adapter lacks, ``--snap-goal`` without ``--follow controller``, and any of the
    options on a ``chunk`` task. ``follow`` None: :data:`DEFAULT_FOLLOW`."""
    if spec.planning != "states":
        if follow is not None or replan or snap_goal:
            raise UsageError(f"--follow, --replan and --snap-goal apply to state-planning tasks; {spec.name} plans action chunks")
        return None
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
    return follow


class PlannerPolicy:
    """A :class:`~ractd_cli.evaluate.Policy` that plans with a :class:`Planner`.

    ``chunk`` tasks replan every step and execute the first action (``follow``, ``replan`` and
    ``snap_goal`` do not apply). ``states`` tasks make ONE open-loop plan ``plan`` (n, H, obs_dim)
    per episode from the start state and the goal and follow it step by step: at step t the target
    is ``plan[t+1]``; past the plan's end it is the plan's last state with its rest dims
    (``spec.rest_dims``, the velocities) set to 0, i.e. hold the last planned state. ``follow``:

    - ``"inverse"`` (default, the RACTD paper's): the inverse-dynamics model
      a_t = f(s_t, target). Sees only the state and the plan, never the goal; no position error is
      fed back, so an open-loop plan's drift is never corrected.
    - ``"track"``: the adapter's ``track_action(state, target)``, the RACTD authors' tracking rule
      (Maze2d: a = (p* - p) + (v* - v)).
    - ``"controller"``: the adapter's ``controller_action(state, target[, goal])``, a PD controller
      (Maze2d: inverts the point mass's dynamics). With ``snap_goal`` it also gets the goal, and
      snaps a target near it to the goal itself: goal information the plan never had, so opt-in.

    ``replan``: plan again from the current state (and goal) whenever the plan runs out, instead
    of holding its last state. Followers the adapter lacks are refused (:func:`check_follow`).
    """

    def __init__(
        self,
        planner: Planner,
        adapter: EnvAdapter,
        *,
        inverse: nn.Module | None = None,
        follow: str | None = None,
        replan: bool = False,
        snap_goal: bool = False,
    ):
        self.planner, self.adapter, self.spec = planner, adapter, planner.spec
        self.norm_s = planner.norms["state"]
        self.norm_a = planner.norms.get("action")
        self.goal_norm = planner.norms.get("goal")
        self.inverse = inverse.to(planner.device).eval() if inverse is not None else None
        self.follow = check_follow(adapter, self.spec, follow, replan=replan, snap_goal=snap_goal)
        states = self.spec.planning == "states"
        self.replan = bool(replan) if states else None
        self.snap_goal = bool(snap_goal) if states else None
        if self.follow == "inverse" and inverse is None:
            raise UsageError("this task plans states: it needs an inverse-dynamics model (train-teacher makes one), or --follow track|controller")

    def describe(self) -> dict:
        """How plans are executed, for results: ``follow``, ``replan``, ``snap_goal`` (None for ``chunk`` tasks)."""
        return {"follow": self.follow, "replan": self.replan, "snap_goal": self.snap_goal}

    def reset(self, n: int) -> None:
        self.history: list[collections.deque] = [collections.deque(maxlen=self.spec.history) for _ in range(n)]
        self.plans: np.ndarray | None = None  # (n, H, obs_dim) in env units, for states planning
        self.hold: np.ndarray | None = None  # (n, obs_dim): the plans' last states at rest
        self.t_in_plan = 0

    def _cond(self, states: np.ndarray, goals: np.ndarray | None, rows: np.ndarray) -> torch.Tensor:
        s = self.norm_s.normalize(states[rows])
        if self.spec.planning == "chunk":
            for i, r in enumerate(rows):
                h = self.history[r]
                h.append(s[i])
                while len(h) < h.maxlen:
                    h.appendleft(s[i])
            return torch.as_tensor(np.stack([np.concatenate(self.history[r]) for r in rows]), dtype=torch.float32)
        g = self.goal_norm.normalize(goals[rows]) if self.goal_norm is not None else goals[rows]
        return torch.as_tensor(np.concatenate([s, g], axis=-1), dtype=torch.float32)

    def act(self, states: np.ndarray, goals: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        n = states.shape[0]
        actions = np.zeros((n, self.spec.act_dim), dtype=np.float32)
        rows = np.flatnonzero(active)
        if self.spec.planning == "chunk":
            x0, _ = self.planner.plan(self._cond(states, goals, rows))
            actions[rows] = self.norm_a.unnormalize(x0[:, 0].cpu().numpy())
            return actions
        H = self.spec.horizon
        if self.plans is None or (self.replan and self.t_in_plan >= H - 1):
            x0, _ = self.planner.plan(self._cond(states, goals, np.arange(n)))  # the only place the goal is read
            self.plans = np.asarray(self.norm_s.unnormalize(x0.cpu().numpy()), dtype=np.float32)
            self.hold = self.plans[:, -1].copy()
            self.hold[:, list(self.spec.rest_dims)] = 0.0
            self.t_in_plan = 0
        target = self.plans[:, self.t_in_plan + 1] if self.t_in_plan < H - 1 else self.hold  # (n, obs_dim)
        self.t_in_plan += 1
        if self.follow == "track":
            # The adapter's extra ``track_action(state, target_state)`` (batched; see docs/plugins.md).
            return np.asarray(self.adapter.track_action(states, target), dtype=np.float32)
        if self.follow == "controller":
            # The adapter's extra ``controller_action(state, target_state[, goal])`` (batched; see docs/plugins.md).
            goal = {"goal": goals} if self.snap_goal and goals is not None else {}
            return np.asarray(self.adapter.controller_action(states, target, **goal), dtype=np.float32)
        with torch.inference_mode():
            dev = self.planner.device
            s = torch.as_tensor(self.norm_s.normalize(states), dtype=torch.float32, device=dev)
            a = self.inverse(s, torch.as_tensor(self.norm_s.normalize(target), dtype=torch.float32, device=dev))
        return self.norm_a.unnormalize(a.cpu().numpy())


@dataclass
class Loaded:
    """A planning artifact with what it needs: its teacher (for students) and inverse dynamics."""

    art: Artifact
    teacher: Artifact
    inverse: nn.Module | None


def load_for_planning(ref: str, spec: TaskSpec) -> Loaded:
    """Resolve ``ref`` (id, path, ``student``/``teacher`` = latest of that kind) for ``spec``."""
    if ref in ("student", "teacher"):
        try:
            art = load_artifact("latest", kind=ref, task=spec.name)
        except RactdError as e:
            cmd = "distill" if ref == "student" else "train-teacher"
            raise RactdError(f"no {ref} for {spec.name} in the cache; run `ractd {cmd} --env {spec.name}` first") from e
    else:
        art = load_artifact(ref, task=spec.name)
        if art.kind not in ("student", "teacher"):
            raise UsageError(f"artifact {art.id} is a {art.kind}; pass a teacher or a student")
    teacher = art if art.kind == "teacher" else load_artifact(art.meta["parents"][0], kind="teacher", task=spec.name)
    inverse = None
    inv_id = teacher.meta.get("inverse_dynamics")
    if inv_id:
        inv = load_artifact(inv_id, kind="inverse-dynamics", task=spec.name)
        inverse = load_net(inv)
    return Loaded(art=art, teacher=teacher, inverse=inverse)


def load_proposer(ref: str | None, spec: TaskSpec) -> Artifact:
    """The proposer ``ref`` (id/path; None or ``latest``: the newest for the task)."""
    from .errors import RactdError

    try:
        return load_artifact(ref or "latest", kind="proposer", task=spec.name)
    except RactdError as e:
        if ref in (None, "latest"):
            raise RactdError(f"no proposer for {spec.name} in the cache; run `ractd train-proposer --env {spec.name}` first") from e
        raise


def load_for_trajdiffuser(model: str | None, proposer: str | None, spec: TaskSpec) -> tuple[Loaded, Artifact]:
    """The teacher that refines (``model``: id/path or ``teacher``, default the latest) and the proposer."""
    loaded = load_for_planning(model or "teacher", spec)
    if loaded.art.kind != "teacher":
        raise UsageError(
            f"--planner trajdiffuser refines with a teacher, and {loaded.art.id} is a {loaded.art.kind}; "
            f"pass --model teacher or a teacher id (this student's teacher is {loaded.teacher.id})"
        )
    return loaded, load_proposer(proposer, spec)

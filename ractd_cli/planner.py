"""From artifacts to actions: rebuild networks, sample plans, turn plans into actions.

Everything here is env-agnostic: the adapter's :class:`~ractd_cli.adapters.TaskSpec` says
whether a plan is an action chunk (closed loop: execute the first action, replan) or a state
sequence (open loop: one plan per episode, followed by the inverse-dynamics model, the adapter's
tracking rule or its controller; see :class:`ractd_cli.evaluate.PlanFollower`).

Planners take and return env units: ``plan(past, goal)`` with the past h states (B, h, obs_dim)
and the goal (B, goal_dim) or None gives the plan x0 (B, T, D) (actions for ``chunk``, states for
``states``). The model's own normalisers (:class:`~ractd_cli.models.PlanIO`) sit inside; in the
model's normalised space the conditioning is laid out as

- ``chunk``:  cond = s_{n-h+1..n} flattened, shape (B, h*obs_dim); x = actions (B, c, act_dim).
- ``states``: cond = [s_n, goal], shape (B, obs_dim+goal_dim);     x = states (B, H, obs_dim).
- ``endpoints``: cond = [s_n, goal at rest], shape (B, 2 obs_dim);  x = states (B, H, obs_dim).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import trajdiffuser as td
from .accel import CudaGraphs, frozen, frozen_model, why
from .adapters import TaskSpec
from .artifacts import Artifact, list_artifacts, load_artifact
from .diffusion import (
    SAMPLERS,
    EDMPrecond,
    StackedRandomGenerator,
    append_zero,
    ctm_sample,
    karras_sigmas,
    randn,
    student_sigmas,
)
from .errors import UsageError
from .models import (
    Normalize,
    PlanIO,
    ProposerConfig,
    StudentConfig,
    check_reward_input,
    denoiser_from,
    inverse_from,
    load_net,
    normalizers_from,
    plan_io,
    proposer_from,
    spec_for,
    student_from,
)


def episode_seed(seed: int, episode: int) -> int:
    """The seed of evaluation episode ``episode``'s noise stream under ``--seed seed``."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1, dtype=np.uint64)[0])


TEACHER_SAMPLERS = ("heun", "euler", "ancestral")
STUDENT_SAMPLERS = ("onestep", "multistep")
DEFAULT_NFE = {"heun": 159, "euler": 15, "ancestral": 15, "onestep": 1, "multistep": 2}
PLANNERS = ("diffusion", "trajdiffuser")


@dataclass(frozen=True)
class KindSampling:
    """How one artifact kind plans, the one place the teacher and the student differ for
    :class:`Planner`: its network (``load``), the samplers it allows (``samplers``) and the one it uses
    when none is asked for (``default(nfe)``), the sampling function of a sampler (``sample_fn``) and the
    times a network call takes (``n_times``: the teacher D(x; sigma) one, the student G(x, t, s) two)."""

    load: Callable[[Artifact], nn.Module]
    samplers: tuple[str, ...]
    default: Callable[[int | None], str]
    sample_fn: Callable[[str], Callable]
    n_times: int


KIND_SAMPLING: dict[str, KindSampling] = {
    "teacher": KindSampling(denoiser_from, TEACHER_SAMPLERS, lambda nfe: "heun", lambda sampler: SAMPLERS[sampler], 1),
    "student": KindSampling(student_from, STUDENT_SAMPLERS, lambda nfe: "multistep" if (nfe or 1) > 1 else "onestep",
                            lambda sampler: ctm_sample, 2),
}
"""The kinds :class:`Planner` samples from, by artifact kind."""
REFINE_SAMPLERS = ("euler", "heun")
INIT_NOISES = ("unit", "edm")
"""Where sampling starts: ``unit``, x_T = z ~ N(0, I), the RACTD authors' code (their
``sample_inital_position``: "Reducing Initial Variance"); ``edm``, x_T = sigma_max z (EDM's, the
paper's text)."""


@dataclass(frozen=True)
class Sampling:
    """How a teacher or student samples, beyond its sampler and NFE: one validated value.

    - ``init_noise``: ``unit`` (default, the RACTD authors' code) or ``edm`` (:data:`INIT_NOISES`);
    - ``clamp``: clamp every denoised estimate and every student jump to the data's normalised range
      [-1, 1] (default True, the authors' code: their diffusion.py ``clamp=True`` at inference).

    The defaults are the authors' because on maze2d-large they lift the plans of the same teacher
    (docs/results.md); ``--init-noise edm --no-clamp`` is the paper's text.
    """

    init_noise: str = "unit"
    clamp: bool = True

    def __post_init__(self) -> None:
        if self.init_noise not in INIT_NOISES:
            raise UsageError(f"unknown --init-noise {self.init_noise!r}; use one of {', '.join(INIT_NOISES)}")

    def describe(self) -> dict:
        return {"init_noise": self.init_noise, "clamp": self.clamp}


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
    """Samples plans from a teacher or student artifact with one of the samplers.

    ``plan(past, goal)``: past states (B, h, obs_dim) and goal (B, goal_dim) or None, in env units
    -> x0 (B, T, D) in env units, plus NFE. The artifact's normalisers (``io``) sit inside.
    """

    def __init__(
        self, art: Artifact, spec: TaskSpec, *, sampler: str | None = None, nfe: int | None = None,
        device: str | torch.device = "cpu", seed: int = 0, jit: bool = False, cuda_graphs: bool = True,
        sampling: Sampling | None = None,
    ):
        if art.kind not in KIND_SAMPLING:
            raise UsageError(f"{art.kind} {art.id[:8]} does not plan; give a teacher or a student")
        spec = spec_for(art, spec)  # the plan stride it was trained with
        self.art, self.spec = art, spec
        self.device = torch.device(device)
        kind = self.kind = KIND_SAMPLING[art.kind]
        sampler = sampler or kind.default(nfe)
        if sampler not in kind.samplers:
            raise UsageError(f"sampler {sampler!r} does not apply to a {art.kind}; use one of {', '.join(kind.samplers)}")
        if sampler == "onestep" and nfe not in (None, 1):
            raise UsageError(f"--sampler onestep takes exactly one step, not --nfe {nfe}; use --sampler multistep for k steps")
        nfe = DEFAULT_NFE[sampler] if nfe is None else nfe
        if nfe < 1:
            raise UsageError(f"--nfe must be at least 1, got {nfe}")
        self.sampler_name, self.nfe_budget = sampler, nfe
        self.sampling = sampling = sampling or Sampling()
        model = kind.load(art).to(self.device)
        self.model = Clamped(model) if sampling.clamp else model
        self.sample_fn: Callable = kind.sample_fn(sampler)
        self.sigmas = sigma_grid(sampler, nfe, art.config, self.device)
        self.noise_scale = float(self.sigmas[0]) if sampling.init_noise == "edm" else 1.0
        """x_T = noise_scale * z, z ~ N(0, I) (:class:`Sampling`)."""
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.io: PlanIO = plan_io(art, spec).to(self.device)
        self.T, self.D = spec.x_shape
        self.nfe_per_plan: int | None = None
        self.jit = jit
        self.jit_error: str | None = None
        """Why the TorchScript freeze failed (the planner then runs eager and ``jit`` is False)."""
        self.cuda_graphs = jit and cuda_graphs and self.device.type == "cuda"
        """Whether the frozen graph is replayed as CUDA graphs (:class:`~ractd_cli.accel.CudaGraphs`; CUDA and ``jit`` only)."""
        if jit:
            try:
                self._freeze()
            except Exception as e:  # a network TorchScript cannot trace: stay eager (_freeze changed nothing)
                self.jit, self.jit_error, self.cuda_graphs = False, why(e), False

    def _freeze(self) -> None:
        """Replace the eager model by a traced, frozen TorchScript graph (same math, less Python).
        Assigns only once the graph is built, so a failed trace leaves the eager planner intact.

        Every network call of the sampler goes through the frozen graph, so a teacher and a
        student compared with ``jit=True`` get the same treatment. For the one-step student the
        times are constants (t = T, s = sigmas[-1]), so freezing also folds the t/s embeddings.
        """
        if self.sampler_name == "onestep":
            # normalisers folded in: (x_T, past, goal) raw -> the plan in env units, one graph
            x, past, goal = _raw_example(self)
            graph = frozen(self.one_step(), (x, past, goal))
            self._one_step_graph = CudaGraphs(graph) if self.cuda_graphs else graph
        else:
            self.model = frozen_model(self.model, _example(self), n_times=self.kind.n_times, cuda_graphs=self.cuda_graphs)

    @property
    def nfe_paper(self) -> int:
        """NFE the way the paper counts it: Heun over N bins is "N" (80 for the teacher, Tables 2-3,
        11), though it makes 2N - 1 network calls (``nfe_per_plan``); every other sampler makes one
        call per step, so both counts agree."""
        return len(self.sigmas) - 1 if self.sampler_name == "heun" else self.nfe_budget

    def one_step(self) -> "_OneStep":
        """This student's one-step plan as one module: (z, past, goal) raw -> the plan raw."""
        student = self.model.inner if isinstance(self.model, Clamped) else self.model
        return _OneStep(self.io, student, float(self.sigmas[0]), float(self.sigmas[-1]), noise_scale=self.noise_scale, clamp=self.sampling.clamp)

    def noise_streams(self, episodes) -> StackedRandomGenerator:
        """One noise stream per episode, seeded by (``seed``, episode): pass it to :meth:`plan` and an
        episode's plans do not depend on which or how many episodes share its batch."""
        return StackedRandomGenerator(self.device, [episode_seed(self.seed, e) for e in episodes])

    _one_step_graph = None

    @property
    def cuda_graphs_error(self) -> str | None:
        """Why capturing the frozen graph as a CUDA graph failed (it then ran launch by launch)."""
        graph = self._one_step_graph if self._one_step_graph is not None else getattr(self.model, "frozen", None)
        return getattr(graph, "error", None)
    """The frozen one-step student with its normalisers (``jit``): (x_T, past, goal) -> raw plan."""

    @torch.inference_mode()
    def plan(
        self, past: torch.Tensor, goal: torch.Tensor | None = None, generator: StackedRandomGenerator | None = None
    ) -> tuple[torch.Tensor, int]:
        """past (B, h, obs_dim), goal (B, goal_dim) or None, raw -> (x0 (B, T, D) raw, NFE); noise from
        ``generator`` (one stream per row, see :meth:`noise_streams`) or, without it, the planner's own."""
        generator = generator if generator is not None else self.generator
        past, goal = _on(past, self.device), _goal_on(goal, past, self.device)
        z = randn((past.shape[0], self.T, self.D), generator, device=self.device)
        if self._one_step_graph is not None:  # it scales z to x_T itself
            self.nfe_per_plan = 1
            return self._one_step_graph(z, past, goal), 1
        x = z * self.noise_scale
        x0, self.nfe_per_plan = self.sample_fn(self.model, x, self.sigmas, cond=self.io.cond(past, goal), generator=generator)
        return self.io.plan(x0), self.nfe_per_plan


def _on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float32, device=device)


def _goal_on(goal: torch.Tensor | None, past: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The goal as a tensor; no goal is a zero-width one (B, 0), so one frozen graph serves both."""
    return past.new_zeros(past.shape[0], 0) if goal is None else _on(goal, device)


class _OneStep(nn.Module):
    """z ~ N(0, I) (B, T, D), past, goal (raw) -> the student's one-step plan G(x_T, T, s_end, cond)
    in env units, x_T = noise_scale z, with its times fixed and its normalisers around it (and, with
    ``clamp``, the jump's result clamped to the data's [-1, 1], as the RACTD authors' code does).

    The times are 0-d constants, not (B,) tensors: frozen, every scaling (c_skip, c_out, c_in, s/T)
    and both time embeddings fold into constants computed once, and a call is the network's own
    layers plus a few elementwise operations (what makes a tiny network's plan cost about its
    forward pass)."""

    def __init__(self, io: PlanIO, student: nn.Module, T: float, s_end: float, *, noise_scale: float | None = None, clamp: bool = False):
        super().__init__()
        if not s_end < T:
            raise ValueError(f"a one-step jump needs s_end < T, got {s_end} and {T}")
        self.io, self.student, self.T, self.s_end = io, student, T, s_end
        self.noise_scale, self.clamp = T if noise_scale is None else float(noise_scale), bool(clamp)

    def forward(self, z: torch.Tensor, past: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        # G(x, T, s) = (s/T) x + (1 - s/T) g(x, T, s), written out (s < T: no identity branch), so the
        # graph has no data-dependent control flow and exports (ractd_cli.export) as it traces
        x = z * self.noise_scale
        t = torch.tensor(self.T, dtype=z.dtype, device=z.device)
        s = torch.tensor(self.s_end, dtype=z.dtype, device=z.device)
        ratio = s / t
        x0 = ratio * x + (1 - ratio) * self.student.g(x, t, s, self.io.cond(past, goal))
        return self.io.plan(x0.clamp(-1.0, 1.0) if self.clamp else x0)


class Clamped(nn.Module):
    """A denoiser D(x, sigma, cond) or student G(x, t, s, cond) whose every estimate is clamped to
    the data's normalised range [-1, 1]: the RACTD authors' sampling (their diffusion.py ``clamp``),
    ``--clamp``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.inner(*args).clamp(-1.0, 1.0)

    @property
    def net(self) -> nn.Module:
        return self.inner.net


def _raw_example(planner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-1 example raw inputs (x_T, past, goal) for tracing a planner with its normalisers."""
    dev, spec = planner.device, planner.spec
    return (torch.zeros(1, planner.T, planner.D, device=dev), torch.zeros(1, spec.history, spec.obs_dim, device=dev),
            torch.zeros(1, spec.goal_dim, device=dev))


def _example(planner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-1 example inputs (x, cond, sigma) for tracing a planner's network."""
    dev = planner.device
    return (torch.zeros(1, planner.T, planner.D, device=dev), torch.zeros(1, planner.spec.cond_dim, device=dev), torch.ones(1, device=dev))


def refine_sigmas(refine_sigma: float, steps: int, sigma_min: float, device: torch.device | None = None) -> torch.Tensor:
    """The grid the refinement walks: ``steps`` steps on a Karras grid from ``refine_sigma`` to 0.

    ``steps`` = 0 or ``refine_sigma`` = 0 gives ``[0]``: no step, the proposal is the plan.
    """
    if steps == 0 or refine_sigma == 0:
        return torch.zeros(1, device=device)
    return append_zero(karras_sigmas(steps, min(sigma_min, refine_sigma), refine_sigma, device=device))


class RawReward(nn.Module):
    """R_psi of a ``reward`` artifact scoring raw plans of ``spec``'s layout: (x (B, T, D), past
    (B, h, obs_dim), goal) in env units -> (B,), through the reward model's own normalisers."""

    def __init__(self, art: Artifact, spec: TaskSpec):
        super().__init__()
        check_reward_input(art, spec)
        self.io = plan_io(art, spec)
        self.score = spec.layout.reward(spec, load_net(art))

    def forward(self, x: torch.Tensor, past: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        return self.score(self.io.x(x), self.io.cond(past, goal))


class TrajDiffuserPlanner:
    """Trajectory Diffuser (Huang et al.; :mod:`ractd_cli.trajdiffuser`) from one ``proposer`` artifact.

    ``plan(past, goal)``: raw past states and goal -> (x0 raw, NFE), as :meth:`Planner.plan`, where,
    in the artifact's normalised space, with s_0 the current state and g* the target return:

        tokens  = proposer.generate([s_0, g*, goal])                  (autoregressive, no NFE)
        x_prop  = [s_0, states of tokens]                              (B, H, obs_dim)
        x       = x_prop + refine_sigma * n,  x[:, 0] = s_0
        x_plan  = sampler(D_w, x, karras(refine_steps, refine_sigma -> 0), [goal, g*, 1])

    D_w is the refiner with classifier-free guidance weight ``guidance`` and the first state
    inpainted (:class:`~ractd_cli.trajdiffuser.GuidedDenoiser`). ``refine_steps`` 0 returns the
    proposal itself. With ``candidates`` N > 1, N plans per row, and ``reward`` (a reward artifact)
    keeps the one it scores highest. x0 is the task's own kind of plan: the state plan for
    ``states`` tasks (followed as any state plan), for ``chunk`` tasks the actions
    a_t = f(s_t, s_{t+1}) of the plan's H-1 transitions (the first is executed, then replanned).
    NFE counts refiner calls (Euler K, Heun 2K-1; guidance batches both conditions in one call).
    """

    def __init__(
        self,
        art: Artifact,
        spec: TaskSpec,
        *,
        refine_steps: int = td.REFINE_STEPS,
        refine_sigma: float = td.REFINE_SIGMA,
        guidance: float | None = None,
        target_return: float | None = None,
        candidates: int = td.CANDIDATES,
        reward: Artifact | None = None,
        sampler: str | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        sampler = sampler or "euler"
        header = ProposerConfig.of(art)
        if sampler not in REFINE_SAMPLERS:
            raise UsageError(f"sampler {sampler!r} does not apply to trajdiffuser refinement; use one of {', '.join(REFINE_SAMPLERS)}")
        if refine_steps < 0:
            raise UsageError(f"--refine-steps must be >= 0, got {refine_steps}")
        if not 0 <= refine_sigma <= header.sigma_max:
            raise UsageError(f"--refine-sigma must be in [0, {header.sigma_max:g}], got {refine_sigma:g}")
        guidance = td.guidance(spec) if guidance is None else float(guidance)
        if not (math.isfinite(guidance) and guidance >= 0):
            raise UsageError(f"--guidance must be a finite number >= 0, got {guidance}")
        if candidates < 1:
            raise UsageError(f"--candidates must be at least 1, got {candidates}")
        if candidates > 1 and reward is None:
            raise UsageError("--candidates N > 1 picks the best plan by the reward model; train one (`ractd train-reward`) or pass --reward")
        self.art, self.spec = art, spec
        view = td.state_view(spec)  # planned as the artifact was trained (its horizon and conditioning)
        self.view = dataclasses.replace(view, horizon=header.horizon, planning=header.planning or view.planning)
        self.device = torch.device(device)
        self.sampler_name = sampler
        self.refine_steps, self.refine_sigma, self.guidance, self.candidates = int(refine_steps), float(refine_sigma), guidance, int(candidates)
        if target_return is None:  # the task's, else the best return-to-go of the training data
            target_return = spec.trajdiffuser.get("target_return", header.best_return)
        self.target_return = float(target_return)
        norms = normalizers_from(art.tensors)
        self.io = PlanIO(self.view, norms).to(self.device)
        self.g_star = float(Normalize(norms["return"])(torch.tensor([self.target_return], dtype=torch.float32))[0])  # bit-identical
        self.proposer = proposer_from(art).to(self.device)
        self.refiner = td.GuidedDenoiser(EDMPrecond(load_net(art, "refiner"), sigma_data=header.sigma_data), guidance).to(self.device).eval()
        self.inverse = inverse_from(art, "inverse").to(self.device)
        self.reward = RawReward(reward, spec).to(self.device).eval() if reward is not None and candidates > 1 else None
        self.reward_id = reward.id if self.reward is not None else None
        self.sample_fn: Callable = SAMPLERS[sampler]
        self.sigmas = refine_sigmas(self.refine_sigma, self.refine_steps, header.sigma_min, self.device)
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.jit, self.jit_error = False, None  # the transformer and the guided refiner run eager
        self.cuda_graphs, self.cuda_graphs_error = False, None
        self.nfe_per_plan: int | None = None

    noise_streams = Planner.noise_streams

    @property
    def nfe_paper(self) -> int:
        """Refiner steps K, as the paper counts NFE (Heun makes 2K - 1 calls, Euler K)."""
        return self.refine_steps if len(self.sigmas) > 1 else 0

    @torch.inference_mode()
    def propose(self, s0: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        """Normalised s_0 (B, obs_dim) and goal -> the proposal (B, H, obs_dim), normalised, from g*."""
        g0 = torch.full((s0.shape[0],), self.g_star, device=s0.device)
        tok = self.proposer.generate(td.proposer_cond(s0, g0, goal))
        return torch.cat([s0[:, None], tok[..., : s0.shape[-1]]], dim=1)

    @torch.inference_mode()
    def refine(self, x_prop: torch.Tensor, goal: torch.Tensor | None, noise: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Lift the normalised proposal to ``refine_sigma`` with ``noise`` (its first state kept) and
        denoise it in K guided steps: (plan normalised, NFE)."""
        if len(self.sigmas) < 2:
            return x_prop, 0
        x = torch.cat([x_prop[:, :1], x_prop[:, 1:] + self.sigmas[0] * noise[:, 1:]], dim=1)
        g0 = torch.full((x.shape[0],), self.g_star, device=x.device)
        return self.sample_fn(self.refiner, x, self.sigmas, cond=td.refiner_cond(goal, g0))

    @torch.inference_mode()
    def plan(
        self, past: torch.Tensor, goal: torch.Tensor | None = None, generator: StackedRandomGenerator | None = None
    ) -> tuple[torch.Tensor, int]:
        """Raw past states and goal -> (x0 raw, NFE): the state plan (``states`` tasks) or the plan's
        actions (``chunk`` tasks); see the class docstring."""
        generator = generator if generator is not None else self.generator
        past, goal = _on(past, self.device), _goal_on(goal, past, self.device)
        B, N, (H, D) = past.shape[0], self.candidates, (self.view.horizon, self.view.obs_dim)
        s0 = self.io.state(past[:, -1]).repeat_interleave(N, 0)
        goal_n = self.io.goal_block(goal).repeat_interleave(N, 0) if goal is not None and goal.shape[-1] else None
        noise = randn((B, N * H, D), generator, device=self.device).reshape(B * N, H, D)
        x, self.nfe_per_plan = self.refine(self.propose(s0, goal_n), goal_n, noise)
        states = self.io.state.inverse(x)  # (B*N, H, obs_dim) raw
        out = states if self.spec.layout.open_loop else self.inverse(states[:, :-1], states[:, 1:])
        if N > 1:
            scores = self.reward(out, past.repeat_interleave(N, 0), None if goal is None else goal.repeat_interleave(N, 0))
            best = scores.reshape(B, N).argmax(1) + torch.arange(B, device=self.device) * N
            out = out[best]
        return out, self.nfe_per_plan

    def describe(self) -> dict:
        """What a result should record about this planner."""
        return {
            "planner": "trajdiffuser",
            "proposer_id": self.art.id,
            "refine_steps": self.refine_steps,
            "refine_sigma": self.refine_sigma,
            "guidance": self.guidance,
            "target_return": self.target_return,
            "candidates": self.candidates,
            "reward_id": self.reward_id,
            "plan_horizon": self.view.horizon,
        }


@dataclass
class Loaded:
    """A planning artifact with what it needs: its teacher (for students; None for a Trajectory
    Diffuser) and inverse dynamics."""

    art: Artifact
    teacher: Artifact | None
    inverse: nn.Module | None
    """Inverse dynamics in env units (:class:`~ractd_cli.models.RawInverse`), for ``states`` tasks."""


def newest_student(spec: TaskSpec, *, rewarded: bool = False) -> Artifact | None:
    """The student a user means by "the student": the newest of ``spec``'s task at the task's own
    reward weight sigma (``TaskSpec.loss_weights``, what ``distill`` uses by default), else the newest
    at any weight > 0, else (unless ``rewarded``) the newest CTD student. None when there is none."""
    found = [a for a in list_artifacts() if a.kind == "student" and a.task == spec.name]
    sigma = spec.loss_weights[2]
    weighted = [(a, StudentConfig.of(a).reward_weight) for a in found]
    weighted = [(a, w) for a, w in weighted if w > 0]
    pick = next((a for a, w in weighted if w == sigma), weighted[0][0] if weighted else None)
    return pick if pick is not None or rewarded else (found[0] if found else None)


def student_choice(art: Artifact, spec: TaskSpec) -> str:
    """One line saying which student :func:`newest_student` chose, and why."""
    w = StudentConfig.of(art).reward_weight
    why = ("the task's default reward weight" if w == spec.loss_weights[2] else
           f"no student at the task's reward weight {spec.loss_weights[2]:g}" if w > 0 else "a CTD student: no RACTD student in the cache")
    return f"model: student {art.id[:8]} (reward weight {w:g}, {why}; --model ID picks another)"


def load_for_planning(ref: str, spec: TaskSpec) -> Loaded:
    """Resolve ``ref`` (id, path, ``teacher`` = the latest teacher, ``student`` = :func:`newest_student`)
    for ``spec``."""
    if ref in ("student", "teacher"):
        chosen = newest_student(spec) if ref == "student" else None
        art = load_artifact(chosen.path if chosen is not None else "latest", kind=ref, task=spec.name)
    else:
        art = load_artifact(ref, task=spec.name)
        if art.kind not in ("student", "teacher"):
            raise UsageError(f"artifact {art.id} is a {art.kind}; pass a teacher or a student")
    return loaded_from(art, spec)


def loaded_from(art: Artifact, spec: TaskSpec) -> Loaded:
    """A teacher or student artifact (saved, or in memory during training) with its teacher and
    inverse dynamics, which are looked up in the cache."""
    teacher = art if art.kind == "teacher" else load_artifact(art.meta["parents"][0], kind="teacher", task=spec.name)
    inverse = None
    inv_id = teacher.meta.get("inverse_dynamics")
    if inv_id:
        inv = load_artifact(inv_id, kind="inverse-dynamics", task=spec.name)
        inverse = inverse_from(inv)
    return Loaded(art=art, teacher=teacher, inverse=inverse)


@dataclass(frozen=True)
class TrajDiffuserOptions:
    """How ``rollout``/``bench`` run a Trajectory Diffuser (None: the defaults of
    :class:`TrajDiffuserPlanner`, i.e. the authors' and the task's)."""

    refine_steps: int | None = None
    refine_sigma: float | None = None
    guidance: float | None = None
    target_return: float | None = None
    candidates: int = td.CANDIDATES
    reward: str | None = None
    """Reward artifact id/path for ``candidates`` > 1 (default: the task's latest)."""

    def given(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "reward"}


def load_trajdiffuser(ref: str | None, spec: TaskSpec) -> Loaded:
    """A Trajectory Diffuser artifact (``ref`` id/path; None or ``latest``: the task's newest) with
    its own inverse dynamics (which follows its state plans on ``states`` tasks)."""
    art = load_artifact(ref or "latest", kind="proposer", task=spec.name)
    if art.config.get("method") != "trajdiffuser":
        raise UsageError(f"proposer {art.id} predates the Trajectory Diffuser of its paper; run `ractd train-proposer --env {spec.name}` again")
    return Loaded(art=art, teacher=None, inverse=inverse_from(art, "inverse"))


def build_planner(
    loaded: Loaded,
    spec: TaskSpec,
    *,
    sampler: str | None = None,
    nfe: int | None = None,
    trajdiffuser: TrajDiffuserOptions | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    jit: bool = True,
    cuda_graphs: bool = True,
    sampling: Sampling | None = None,
) -> Planner | TrajDiffuserPlanner:
    """The one way ``rollout`` and ``bench`` make a planner: a Trajectory Diffuser artifact (kind
    ``proposer``) with ``trajdiffuser`` options, or a teacher or student sampled by ``sampler`` at
    ``nfe`` with ``sampling`` (its initial noise and clamping; the Trajectory Diffuser starts from
    its proposal and ignores it)."""
    if loaded.art.kind == "proposer":
        if nfe is not None:
            raise UsageError("--nfe does not apply to --planner trajdiffuser; set --refine-steps (and --sampler euler|heun)")
        opts = trajdiffuser or TrajDiffuserOptions()
        reward = load_artifact(opts.reward or "latest", kind="reward", task=spec.name) if opts.candidates > 1 else None
        return TrajDiffuserPlanner(loaded.art, spec, **opts.given(), reward=reward, sampler=sampler, device=device, seed=seed)
    if trajdiffuser is not None:
        raise UsageError("--proposer, --refine-steps, --refine-sigma, --guidance, --target-return and --candidates need --planner trajdiffuser")
    return Planner(loaded.art, spec, sampler=sampler, nfe=nfe, device=device, seed=seed, jit=jit, cuda_graphs=cuda_graphs, sampling=sampling)

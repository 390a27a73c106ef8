"""Sampling plans from a teacher or student artifact: the samplers' grids, :class:`Planner` and its
one-step graph. (The Trajectory Diffuser's planner is :mod:`ractd_cli.trajdiffuser_planner`; which
artifact to plan with, and the factory of planners, :mod:`ractd_cli.resolve`.)

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

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .accel import CudaGraphs, frozen, frozen_model, why
from .adapters import TaskSpec
from .artifacts import Artifact
from .diffusion import (
    SAMPLERS,
    StackedRandomGenerator,
    append_zero,
    ctm_sample,
    karras_sigmas,
    randn,
    student_sigmas,
)
from .errors import UsageError
from .models import (
    PlanIO,
    denoiser_from,
    plan_io,
    spec_for,
    student_from,
)


def episode_seed(seed: int, episode: int) -> int:
    """The seed of evaluation episode ``episode``'s noise stream under ``--seed seed``."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1, dtype=np.uint64)[0])


TEACHER_SAMPLERS = ("heun", "euler", "ancestral")
STUDENT_SAMPLERS = ("onestep", "multistep")
DEFAULT_NFE = {"heun": 159, "euler": 15, "ancestral": 15, "onestep": 1, "multistep": 2}


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

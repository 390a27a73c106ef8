"""The Trajectory Diffuser as a planner: its one ``proposer`` artifact (proposer, guided refiner,
inverse dynamics) turned into ``plan(past, goal)``, env units in and out, as
:class:`~ractd_cli.planner.Planner` plans from a teacher or student. What the method is (tokens,
guidance, the refiner's loss) is :mod:`ractd_cli.trajdiffuser`; choosing and loading a planner is
:mod:`ractd_cli.resolve`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import trajdiffuser as td
from .adapters import TaskSpec
from .artifacts import Artifact
from .diffusion import SAMPLERS, EDMPrecond, StackedRandomGenerator, append_zero, karras_sigmas, randn
from .errors import UsageError
from .models import Normalize, PlanIO, ProposerConfig, check_reward_input, inverse_from, load_net, normalizers_from, plan_io, proposer_from
from .planner import Planner, _goal_on, _on

REFINE_SAMPLERS = ("euler", "heun")


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
        self.reads = reads = check_reward_input(art, spec)
        self.io = plan_io(art, spec)
        self.score = spec.layout.reward(spec, load_net(art), reads)

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
        if self.reward is not None and spec.layout.reward_actions(spec, self.reward.reads) > header.horizon - 1:
            raise UsageError(f"reward model {reward.id} reads chunks of {spec.horizon} actions and this proposer plans {header.horizon - 1}; "
                             f"score its candidates with a reward model reading the first action (`ractd train-reward --env {spec.name} --reads state_action`)")
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

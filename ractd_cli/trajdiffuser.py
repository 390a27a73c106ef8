"""Trajectory Diffuser (Huang et al., "Diffusion Models as Optimizers for Efficient Planning in
Offline RL"): what the method is, apart from the networks and the training loop.

It plans *states*, for every task, and gets actions from an inverse-dynamics model:

1. **Proposal.** An autoregressive transformer over (state, return-to-go) tokens, started from the
   current state s_0 and a target return g*, writes the next state and return-to-go, token by token:
   (s_1, g_1), ..., (s_{H-1}, g_{H-1}) (:mod:`ractd_cli.proposer`, fed :func:`proposer_cond` and
   :func:`tokens`).
2. **Refinement.** A state-plan EDM diffusion model conditioned on the return with classifier-free
   guidance (the return is dropped from the condition with probability :data:`COND_DROPOUT` in
   training; sampling mixes D = D_u + w (D_c - D_u)), the first state inpainted (kept at s_0 in
   training and sampling), lifts the proposal to a small noise level and denoises it in K steps
   (:class:`GuidedDenoiser`, :func:`refiner_loss`).
3. **Execution.** a_t = f(s_t, s_{t+1}) on the refined plan; optionally N candidates, the best by
   the reward model R_psi.

Where the task's own planning is ``chunk`` (MuJoCo), the Trajectory Diffuser still plans states,
H of them (the authors' per-task horizon), replans every step and executes f(s_0, s_1); on
``states`` tasks (Maze2d) it plans the task's horizon once and is followed like any state plan.

Facts from the authors' code (github.com/RenMing-Huang/TrajectoryDiffuser, ``main.py``,
``temporal.py``, ``diffusion.py``): horizon 16 hopper, 32 walker2d, 8 halfcheetah, 32 kitchen;
guidance w 1.2 hopper, 1.1 elsewhere; condition dropout 0.5; returns undiscounted; refinement =
the last 5 of 100 DDPM steps, started from the proposal itself (noise level about 0.08 data
standard deviations, :data:`REFINE_SIGMA` here in half-ranges of the [-1, 1] normalisation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from .adapters import TaskSpec
from .data.windows import Windows, returns_to_go
from .diffusion import add_noise, denoising_distance, sample_training_sigma
from .layouts import LAYOUTS

COND_DROPOUT = 0.5
"""Probability of dropping the return from the refiner's condition in training (the authors' 0.5)."""
GUIDANCE = 1.2
"""Classifier-free guidance weight w when the task names none (the authors': 1.2 hopper, 1.1 others)."""
REFINE_STEPS = 5
"""K, the refiner's denoising steps from the proposal (the authors' ``n_timesteps`` 5)."""
REFINE_SIGMA = 0.08
"""EDM sigma the proposal is lifted to before refining: the authors refine with the last 5 of 100
linear-beta DDPM steps (beta 1e-3 .. 2e-2), noise level sqrt((1 - abar_5) / abar_5) = 0.083."""
CANDIDATES = 1
"""N proposals per decision; with N > 1 the reward model picks the best (the authors draw 32)."""
SETTINGS = ("horizon", "guidance", "target_return")
"""Keys of ``TaskSpec.trajdiffuser``."""


def settings_problems(spec: TaskSpec) -> list[str]:
    """What is wrong with ``spec.trajdiffuser`` ([] when nothing is)."""
    td = spec.trajdiffuser
    problems = [f"task {spec.name}: trajdiffuser has unknown key {k!r} (known: {', '.join(SETTINGS)})" for k in td if k not in SETTINGS]
    if "horizon" in td and not (isinstance(td["horizon"], int) and td["horizon"] >= 2):
        problems.append(f"task {spec.name}: trajdiffuser horizon must be an integer >= 2, got {td['horizon']!r}")
    if "guidance" in td and not (isinstance(td["guidance"], (int, float)) and td["guidance"] >= 0):
        problems.append(f"task {spec.name}: trajdiffuser guidance must be >= 0, got {td['guidance']!r}")
    if "target_return" in td and not (isinstance(td["target_return"], (int, float)) and np.isfinite(td["target_return"])):
        problems.append(f"task {spec.name}: trajdiffuser target_return must be a finite number, got {td['target_return']!r}")
    return problems


def horizon(spec: TaskSpec) -> int:
    """States per Trajectory Diffuser plan: the task's ``trajdiffuser["horizon"]``, else the task's
    own horizon when it plans states, else 16."""
    return int(spec.trajdiffuser.get("horizon", spec.horizon if spec.layout.open_loop else 16))


def guidance(spec: TaskSpec) -> float:
    """The task's guidance weight w (:data:`GUIDANCE` when it names none)."""
    return float(spec.trajdiffuser.get("guidance", GUIDANCE))


def state_view(spec: TaskSpec) -> TaskSpec:
    """The task as the Trajectory Diffuser sees it: state plans of :func:`horizon` states from the
    current state (and goal), whatever the task's own planning; every state (no stride); trained on
    every window, padded past an episode's end (the RACTD authors' full windows are their teacher's
    and student's; endpoint plans, which need full windows, keep them)."""
    planning = spec.planning if spec.layout.open_loop else "states"
    windows = "full" if LAYOUTS[planning].full_windows else "padded"
    return dataclasses.replace(spec, planning=planning, horizon=horizon(spec), history=1, plan_stride=1, windows=windows)


def state_returns(w: Windows) -> np.ndarray:
    """(S,) the undiscounted return-to-go at every state row of ``w`` (0 at each episode's last state;
    no termination penalty), the quantity the authors' proposer and refiner are conditioned on. Each
    return stays within its own dataset episode, also where episodes are joined into runs."""
    out = np.zeros(len(w.states), dtype=np.float32)
    rows = w.transition_state_rows()
    for idx in np.split(np.arange(len(w.actions)), np.flatnonzero(np.diff(w.episode)) + 1):
        out[rows[idx]] = returns_to_go(w.rewards[idx], w.terminations[idx], 1.0, 0.0)
    return out


def tokens(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The proposer's tokens (B, H-1, obs_dim+1), [s_t, g_t] for t = 1..H-1, from states x (B, H, obs_dim)
    and returns-to-go g (B, H), both normalised."""
    return torch.cat([x[:, 1:], g[:, 1:, None]], dim=-1)


def proposer_cond(s0: torch.Tensor, g0: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
    """The proposer's first token (B, obs_dim + 1 + goal_dim): [s_0, g_0, goal]."""
    parts = [s0, g0.reshape(-1, 1)] + ([goal] if goal is not None and goal.shape[-1] else [])
    return torch.cat(parts, dim=-1)


def refiner_cond(goal: torch.Tensor | None, g0: torch.Tensor, keep: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The refiner's condition (B, goal_dim + 2): [goal, keep * g_0, keep]. ``keep`` 0 is the
    unconditional model's (the return dropped; the goal, a task input, always kept)."""
    g0 = g0.reshape(-1, 1)
    keep = torch.as_tensor(keep, dtype=g0.dtype, device=g0.device).expand_as(g0)
    parts = ([goal] if goal is not None and goal.shape[-1] else []) + [g0 * keep, keep]
    return torch.cat(parts, dim=-1)


def refiner_cond_dim(spec: TaskSpec) -> int:
    return spec.layout.goal_width(spec) + 2


def unconditional(cond: torch.Tensor) -> torch.Tensor:
    """The same condition with the return dropped (its last two entries zero)."""
    out = cond.clone()
    out[:, -2:] = 0.0
    return out


class GuidedDenoiser(nn.Module):
    """D_w(x; sigma | c) = D(x; sigma | c_u) + w (D(x; sigma | c) - D(x; sigma | c_u)), c_u = c with the
    return dropped, and the first state inpainted: D_w[:, 0] = x[:, 0]. w = 0 is the unconditional
    model, w = 1 the conditional one (each a single call); otherwise one call on a doubled batch.

    Because the output's first state equals the input's, an Euler or Heun step leaves x[:, 0]
    exactly where it is: a plan whose first state is s_0 keeps it through the whole refinement."""

    def __init__(self, denoiser: nn.Module, w: float):
        super().__init__()
        self.denoiser, self.w = denoiser, float(w)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.w == 1.0:
            out = self.denoiser(x, sigma, cond)
        elif self.w == 0.0:
            out = self.denoiser(x, sigma, unconditional(cond))
        else:
            B = x.shape[0]
            sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
            both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, unconditional(cond)]))
            d_c, d_u = both[:B], both[B:]
            out = d_u + self.w * (d_c - d_u)
        return torch.cat([x[:, :1], out[:, 1:]], dim=1)


def refiner_loss(
    denoiser: nn.Module, x: torch.Tensor, cond: torch.Tensor, *, generator: torch.Generator | None = None,
    p_uncond: float = COND_DROPOUT, distance: str = "huber",
) -> torch.Tensor:
    """The refiner's EDM loss per sample (B,): x (B, H, obs_dim) normalised states whose first state
    stays clean (it is inpainted when sampling), cond (B, goal_dim + 2) from :func:`refiner_cond`
    with the return dropped for a ``p_uncond`` share of the batch; the loss covers states 1..H-1."""
    B = x.shape[0]
    keep = (torch.rand(B, 1, generator=generator, device=x.device, dtype=x.dtype) >= p_uncond).to(x.dtype)
    cond = refiner_cond(cond[:, :-2], cond[:, -2], keep)
    sigma = sample_training_sigma(B, generator=generator, device=x.device, dtype=x.dtype)
    x_sigma = torch.cat([x[:, :1], add_noise(x, sigma, generator)[:, 1:]], dim=1)
    return denoising_distance(denoiser(x_sigma, sigma, cond)[:, 1:], x[:, 1:], sigma, distance=distance)

"""Consistency Trajectory Model student and the RACTD distillation losses.

CTM: Kim et al. 2023, "Consistency Trajectory Model: Learning Probability Flow ODE Trajectory of
Diffusion".  RACTD: Duan et al. 2025, "Accelerating Diffusion Planners in Offline RL via
Reward-Aware Consistency Trajectory Distillation".

The student learns the jump G(x_t, t, s) from time t to any earlier time s <= t of the teacher's
probability-flow ODE, parameterised as in CTM (with EDM preconditioning inside g):

    G(x_t, t, s) = (s/t) x_t + (1 - s/t) g(x_t, t, s),
    g(x_t, t, s) = c_skip(t) x_t + c_out(t) F(c_in(t) x_t, c_noise(t), cond, c_noise(s)),

so G(x, t, t) = x for every network, and G(x, t, 0) = g(x, t, 0).  Times are EDM noise levels
(t = sigma).  Shapes: x (B, T, D) (any trailing shape); t, s scalars or (B,) tensors.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .edm import (
    NUM_BINS,
    RHO,
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    add_noise,
    append_dims,
    append_zero,
    batch_sigma,
    c_noise,
    clean_distance,
    denoising_distance,
    edm_scalings,
    karras_sigmas,
    sample_training_sigma,
)
from .samplers import heun_step, randn_like

__all__ = [
    "S_EMBED_FLOOR",
    "MAX_TEACHER_STEPS",
    "STUDENT_SIGMA_MIN",
    "CHAIN_SIGMAS",
    "DSM_XI_MAX",
    "CTMPrecond",
    "student_from_teacher",
    "stop_gradient",
    "student_sigmas",
    "sample_dsm_sigma",
    "one_step_jumps",
    "teacher_sigmas",
    "ctm_sample",
    "teacher_solve",
    "sample_ctm_times",
    "ctm_loss",
    "dsm_loss",
    "reward_loss",
    "pair_loss",
    "ractd_loss",
]

S_EMBED_FLOOR = 1e-5
"""c_noise(s) = ln(s)/4 is undefined at s = 0, the time the one-step sampler jumps to; the
network sees c_noise(max(s, S_EMBED_FLOOR)) instead (ln(1e-5)/4 = -2.88, clear of the EDM range
[ln(0.002)/4, ln(80)/4] = [-1.55, 1.10]).  The same floor guards t = 0, where G is the identity."""

MAX_TEACHER_STEPS = 1
"""Teacher Heun steps t -> u per CTM loss sample: u is the next bin after t (RACTD's code:
``ode_steps_max: 1`` in every student config)."""

STUDENT_SIGMA_MIN = 0.02
"""Smallest noise level of the student's 80-bin CTM grid and DSM noise levels (RACTD's code:
``time_min: 0.02`` of the CTM scheduler; paper App. B.1: "CTM scheduler also with 80 bins")."""

CHAIN_SIGMAS = (27.0, 54.0)
"""Noise levels a k-step student re-noises its estimate to after the first jump from T (RACTD's
code: ``chaining_times: ['D', 27, 54]``, sigmas taken as they are; paper Table 5)."""

DSM_XI_MAX = 0.7
"""DSM noise levels: half the batch sits on the EDM curve at xi ~ U[0, 0.7] (sigma in [0.76, 80]
for sigma_min 0.02), the other half is EDM's log-normal (RACTD's code: time sampler ``ctm_dsm``)."""


def _G_ratio(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """s/t, with 0 where t = 0 (then s = 0 too and G is the identity)."""
    return s / torch.where(t > 0, t, torch.ones_like(t))


def _time(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A time as a tensor of x's dtype and device: 0-d stays 0-d, anything else becomes (B,)."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v if v.ndim == 0 else v.reshape(x.shape[0])


class CTMPrecond(nn.Module):
    """The CTM student G(x_t, t, s) around a raw network ``net(x, c_noise_t, cond, c_noise_s)``.

    ``net`` must embed s (e.g. ``ConditionalUnet1D(..., student=True)``).  G(x, t, t) returns x
    itself, bit for bit (also for t = s = 0); s = 0 gives G = g, the jump to clean data.
    """

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def g(self, x_t: torch.Tensor, t, s, cond: torch.Tensor | None = None) -> torch.Tensor:
        """g(x_t, t, s) = c_skip(t) x_t + c_out(t) F(c_in(t) x_t, c_noise(t), cond, c_noise(s)).

        g(x_t, t, t) estimates the denoiser D(x_t; t) (CTM).  x_t (B, ...), t, s (B,) -> x_t's shape.
        A 0-d t or s stays 0-d (one time for the whole batch, broadcast): the network embeds it once.
        """
        t, s = _time(t, x_t), _time(s, x_t)
        c_skip, c_out, c_in = (append_dims(c, x_t.ndim) for c in edm_scalings(t, self.sigma_data))
        F_x = self.net(
            c_in * x_t, c_noise(t.clamp_min(S_EMBED_FLOOR)), cond, c_noise(s.clamp_min(S_EMBED_FLOOR))
        )
        return c_skip * x_t + c_out * F_x

    def forward(self, x_t: torch.Tensor, t, s, cond: torch.Tensor | None = None) -> torch.Tensor:
        """G(x_t, t, s) = (s/t) x_t + (1 - s/t) g(x_t, t, s), for s <= t: x_t (B, ...) -> same shape."""
        t, s = batch_sigma(t, x_t), batch_sigma(s, x_t)
        same = s == t
        if bool(same.all()):
            return x_t  # G(x, t, t) = x exactly, no network call
        ratio = append_dims(_G_ratio(s, t), x_t.ndim)
        G = ratio * x_t + (1 - ratio) * self.g(x_t, t, s, cond)
        return torch.where(append_dims(same, x_t.ndim), x_t, G)

    def denoise(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The student as an EDM denoiser, D(x; sigma) ~ g(x, sigma, sigma), usable with the samplers."""
        return self.g(x, sigma, sigma, cond)


def student_from_teacher(
    teacher: nn.Module, make_net: Callable[[], nn.Module] | None = None
) -> CTMPrecond:
    """A CTM student initialised from an EDM teacher (``EDMPrecond``).

    ``make_net()`` builds the student's raw network (with an s-embedding); by default it is the
    teacher network's class rebuilt from its ``config`` with ``student=True``.  The teacher's
    weights are copied in; only the s-embedding is new, and its last layer is zero, so at
    initialisation g(x, t, s) == D_teacher(x; t) for all s and G(x, t, s) is exactly one
    Euler (DDIM) step of the teacher's PF-ODE from t to s.
    """
    from ..nets import init_student_from_teacher

    t_net = teacher.net
    if make_net is None:
        net = type(t_net)(**{**t_net.config, "student": True})
    else:
        net = make_net()
    net = net.to(next(t_net.parameters()).device)
    init_student_from_teacher(net, t_net)
    return CTMPrecond(net, sigma_data=teacher.sigma_data)


def stop_gradient(module: nn.Module) -> Callable[..., torch.Tensor]:
    """G_sg(theta): ``module`` called with its parameters detached (RACTD eq. 5-6).

    The same weights as the student at every step -- not a lagging copy -- through which no
    gradient reaches the parameters; gradients still flow through the *inputs*.
    """
    params = {name: p.detach() for name, p in module.named_parameters()}
    return lambda *args: torch.func.functional_call(module, params, args)


# --------------------------------------------------------------------------------------------
# Grids and sampling
# --------------------------------------------------------------------------------------------


def teacher_sigmas(
    n: int = NUM_BINS,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    device=None,
) -> torch.Tensor:
    """The distillation grid: ``append_zero(karras_sigmas(n))``, (n+1,)."""
    return append_zero(karras_sigmas(n, sigma_min, sigma_max, rho, device=device))


def student_sigmas(
    k: int = 1,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    device=None,
) -> torch.Tensor:
    """A k-step student grid [T, t_1, ..., t_{k-1}, 0], shape (k+1,).

    k = 1: [T, 0].  k = 2, 3: the authors' chain, t_i from :data:`CHAIN_SIGMAS` ([T, 27, 0] and
    [T, 27, 54, 0]; paper Table 5).  k >= 4 (beyond what the paper used): the first k points of a
    (k+1)-point EDM grid (eq. 5), spread like the teacher's steps.
    """
    if k < 1:
        raise ValueError(f"student_sigmas needs k >= 1, got {k}")
    if k <= len(CHAIN_SIGMAS) + 1:
        chain = [sigma_max, *CHAIN_SIGMAS[: k - 1], 0.0]
        return torch.tensor(chain, dtype=torch.float32, device=device)
    return append_zero(karras_sigmas(k + 1, sigma_min, sigma_max, rho, device=device)[:-1])


def sample_dsm_sigma(
    batch: int,
    sigma_min: float = STUDENT_SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The DSM loss's noise levels, (B,) (RACTD's ``ctm_dsm`` time sampler, see :data:`DSM_XI_MAX`):

        first ceil(B/2):  sigma = (sigma_max^(1/rho) + xi (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
                          xi ~ U[0, 0.7]  (the upper part of the EDM curve, where one-step jumps start);
        last floor(B/2):  ln sigma ~ N(P_mean, P_std^2)  (EDM's training distribution).
    """
    n_upper = (batch + 1) // 2
    xi = DSM_XI_MAX * torch.rand(n_upper, generator=generator, device=device, dtype=dtype)
    upper = (sigma_max ** (1 / rho) + xi * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    lower = sample_training_sigma(batch - n_upper, generator=generator, device=device, dtype=dtype)
    return torch.cat([upper.clamp(sigma_min, sigma_max), lower])


@torch.no_grad()
def ctm_sample(student: CTMPrecond, x, sigmas, *, cond=None, generator=None) -> tuple[torch.Tensor, int]:
    """CTM sampling along ``sigmas = [T, t_1, ..., t_{k-1}, end]`` (end = 0 or sigma_min): (x, nfe = k).

    One step is G(x_T, T, end).  With k > 1 steps (CTM's gamma = 0 sampling, RACTD Table 5):
    re-noise the estimate to t_i with fresh noise of std sqrt(t_i^2 - end^2), jump to end again.
    ``x`` is the initial noise already scaled by T.
    """
    end = sigmas[-1]
    x = student(x, sigmas[0], end, cond)
    nfe = 1
    for t_i in sigmas[1:-1]:
        noise = randn_like(x, generator)
        x = x + (t_i**2 - end**2).sqrt() * noise
        x = student(x, t_i, end, cond)
        nfe += 1
    return x, nfe


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def teacher_solve(teacher: nn.Module, x_t: torch.Tensor, sigmas, i_t, i_u, cond=None) -> torch.Tensor:
    """Solve the teacher's PF-ODE from sigmas[i_t] to sigmas[i_u] with Heun steps on the grid.

    i_t, i_u: (B,) long tensors with i_t < i_u <= len(sigmas) - 1 (per-sample numbers of steps).
    Loops to the largest step count; rows that have arrived are held fixed.  A step onto
    sigma = 0 is an Euler step (EDM Alg. 1).  x_t (B, ...) -> x_u, same shape.
    """
    i_t, i_u = i_t.to(sigmas.device), i_u.to(sigmas.device)
    if bool((i_u <= i_t).any()) or bool((i_u > len(sigmas) - 1).any()):
        raise ValueError("teacher_solve needs i_t < i_u <= len(sigmas) - 1")
    n_steps = i_u - i_t
    x = x_t
    for j in range(int(n_steps.max())):
        active = j < n_steps
        # Arrived rows re-do a harmless step i_t -> i_t + 1 whose result is discarded.
        i_from = torch.where(active, i_t + j, i_t)
        x_next, _ = heun_step(teacher, x, sigmas[i_from], sigmas[i_from + 1], cond)
        x = torch.where(append_dims(active, x.ndim).to(x.device), x_next, x)
    return x


def sample_ctm_times(
    batch: int,
    n_sigmas: int,
    max_teacher_steps: int = MAX_TEACHER_STEPS,
    *,
    generator: torch.Generator | None = None,
    device=None,
):
    """Grid indices (i_t, i_u, i_s), each (B,) long, with 0 <= i_t < i_u <= i_s <= N = n_sigmas - 1
    and i_u - i_t <= max_teacher_steps: i_t uniform on [0, N-1], the step count uniform on
    [1, min(max_teacher_steps, N - i_t)], i_s uniform on [i_u, N] (so s = 0 is included)."""
    N = n_sigmas - 1
    if N < 1 or max_teacher_steps < 1:
        raise ValueError("need a grid of at least two points and max_teacher_steps >= 1")

    def uniform_int(high: torch.Tensor) -> torch.Tensor:  # uniform on {0, ..., high - 1}
        u = torch.rand(batch, generator=generator, device=device)
        return torch.minimum((u * high).long(), high - 1)

    i_t = uniform_int(torch.full((batch,), N, device=device))
    i_u = i_t + 1 + uniform_int((N - i_t).clamp(max=max_teacher_steps))
    i_s = i_u + uniform_int(N - i_u + 1)
    return i_t, i_u, i_s


def ctm_loss(
    student: CTMPrecond,
    teacher: nn.Module,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    sigmas: torch.Tensor,
    max_teacher_steps: int = MAX_TEACHER_STEPS,
    generator: torch.Generator | None = None,
    distance: str = "huber",
) -> torch.Tensor:
    """CTM soft-consistency distillation loss per sample, (B,) (RACTD eq. 5-6):

        t > u >= s on the grid ``sigmas`` (descending, ending in 0), x_t = x0 + t eps,
        x_u   = Solver(x_t, t, u; phi), Heun steps of the teacher (no grad),
        pred  = G_sg(G_theta(x_t, t, s), s, 0),
        tgt   = G_sg(G_sg(x_u, u, s), s, 0)     (no grad),
        loss  = d(pred, tgt)   (pseudo-Huber or squared error, unweighted as in RACTD's code).

    G_sg is the student itself with its parameters detached (:func:`stop_gradient`): the
    current weights, so gradients reach the student's parameters through G_sg's *input* only.
    Comparing both after the final jump to 0 measures the discrepancy in clean-data space.
    ``generator`` (on x0's device) drives the times and the noise.
    """
    B = x0.shape[0]
    sigmas = sigmas.to(x0)  # one device for the grid, the indices and the generator
    i_t, i_u, i_s = sample_ctm_times(B, len(sigmas), max_teacher_steps, generator=generator, device=x0.device)
    t, u, s = sigmas[i_t], sigmas[i_u], sigmas[i_s]
    zero = torch.zeros_like(s)
    x_t = add_noise(x0, t, generator)
    G_sg = stop_gradient(student)

    with torch.no_grad():
        x_u = teacher_solve(teacher, x_t, sigmas, i_t, i_u, cond)
        tgt = G_sg(G_sg(x_u, u, s, cond), s, zero, cond)
    pred = G_sg(student(x_t, t, s, cond), s, zero, cond)
    return clean_distance(pred, tgt, distance)


def one_step_jumps(
    student: CTMPrecond,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    sigma_min: float = STUDENT_SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's one-step jumps from noised data: (sigma (B,), x0_hat = G(x_sigma, sigma, 0)).

    sigma ~ :func:`sample_dsm_sigma`, x_sigma = x0 + sigma n. These are the predictions L_DSM
    regresses onto x0 (eq. 7) and L_Reward scores (eq. 8): the reward pulls on the very jumps the DSM
    term anchors to the data, as in RACTD's code (its reward model reads the DSM branch's ``pred``).
    """
    kw = dict(generator=generator, device=x0.device, dtype=x0.dtype)
    sigma = sample_dsm_sigma(x0.shape[0], sigma_min, sigma_max, **kw)
    return sigma, student(add_noise(x0, sigma, generator), sigma, torch.zeros_like(sigma), cond)


def dsm_loss(
    student: CTMPrecond,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    sigma_min: float = STUDENT_SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    generator: torch.Generator | None = None,
    distance: str = "huber",
) -> torch.Tensor:
    """Denoising score matching on the student's one-step jump, per sample (B,) (RACTD eq. 7):
    with (sigma, x0_hat) from :func:`one_step_jumps`,

        loss = lambda(sigma) d(x0, G_theta(x_sigma, sigma, 0))     (EDM weighting, as edm_loss).

    G(x, sigma, 0) is the jump to clean data that one-step sampling uses and the reward scores;
    half the sigmas come from the upper part of the curve, where sampling starts. Its minimiser
    is the posterior mean E[x0 | x_sigma], which at large sigma lies between the data's modes.
    (CTM's own auxiliary DSM regresses the denoiser head g(x, sigma, sigma) instead; measured on
    maze2d-umaze, the reward then exploits the unanchored jumps: 0% success. Not offered.)
    """
    sigma, x0_hat = one_step_jumps(student, x0, cond, sigma_min=sigma_min, sigma_max=sigma_max, generator=generator)
    return denoising_distance(x0_hat, x0, sigma, sigma_data=student.sigma_data, distance=distance)


def reward_loss(reward_fn: Callable, x0_hat: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """L_Reward = -R(x0_hat, cond), per sample (B,) (RACTD eq. 8).

    ``reward_fn(x0_hat, cond)`` is a frozen differentiable reward model wrapped by the pipeline
    (e.g. R_psi(s_n, first action of x0_hat)), returning (B,) or (B, 1).  Gradients flow through
    it into the student that produced ``x0_hat``; freeze its parameters (requires_grad False).
    """
    r = reward_fn(x0_hat, cond)
    B = x0_hat.shape[0]
    if r.numel() != B:
        raise ValueError(f"reward_fn must return one value per sample, got shape {tuple(r.shape)}")
    return -r.reshape(B)


def pair_loss(student: CTMPrecond, x_T: torch.Tensor, cond: torch.Tensor | None, x0_teacher: torch.Tensor, *,
              T: float, distance: str = "huber") -> torch.Tensor:
    """The one-step jump regressed onto the teacher's own ODE solution from the same start, per sample
    (B,) (knowledge distillation, Luhmann & Luhmann 2021; not in RACTD; ``distill --ode-pairs``):

        loss = d(G_theta(x_T, T, 0), Solver(x_T, T, 0; phi)),

    x_T (B, T, D) drawn as sampling draws it, so that the student learns the very jump it plans with."""
    zero = x_T.new_zeros(x_T.shape[0])
    return clean_distance(student(x_T, torch.full_like(zero, T), zero, cond), x0_teacher, distance)


def ractd_loss(
    student: CTMPrecond,
    teacher: nn.Module,
    reward_fn: Callable | None,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    sigma_r: float = 0.0,
    sigmas: torch.Tensor,
    max_teacher_steps: int = MAX_TEACHER_STEPS,
    generator: torch.Generator | None = None,
    distance: str = "huber",
    pairs: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None,
    gamma: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The RACTD objective L = alpha L_CTM + beta L_DSM + sigma_r L_Reward (RACTD eq. 9).

    Returns per-sample (B,) tensors 'ctm', 'dsm', 'reward' (unweighted) and the scalar 'total'
    (their weighted sum averaged over the batch).  ``sigmas`` is the student's 80-bin grid ending
    in 0; the one-step jumps x0_hat = G(x_sigma, sigma, 0) (:func:`one_step_jumps`, sigma between
    the grid's smallest positive and largest entries) are drawn once: L_DSM regresses them onto x0
    (eq. 7) and L_Reward = -R(x0_hat) scores them (eq. 8), as RACTD's code does. A term whose weight
    is 0 is not computed and reported as zeros; with ``reward_fn=None`` or ``sigma_r == 0`` this is
    plain CTD (CTM + DSM distillation).

    ``pairs`` = (x_T, cond, x0_teacher), each (B, ...), with ``gamma`` > 0 adds gamma L_pair
    (:func:`pair_loss`, not in RACTD), reported as 'pair'.
    """
    zeros = x0.new_zeros(x0.shape[0])
    ctm = (
        ctm_loss(student, teacher, x0, cond, sigmas=sigmas, max_teacher_steps=max_teacher_steps,
                 generator=generator, distance=distance)
        if alpha != 0 else zeros
    )
    dsm = reward = zeros
    with_reward = reward_fn is not None and sigma_r != 0
    if beta != 0 or with_reward:
        sigma, x0_hat = one_step_jumps(student, x0, cond, sigma_min=float(sigmas[-2]), sigma_max=float(sigmas[0]),
                                       generator=generator)
        if beta != 0:
            dsm = denoising_distance(x0_hat, x0, sigma, sigma_data=student.sigma_data, distance=distance)
        if with_reward:
            reward = reward_loss(reward_fn, x0_hat, cond)
    total = (alpha * ctm + beta * dsm + sigma_r * reward).mean()
    out = {"ctm": ctm, "dsm": dsm, "reward": reward}
    if pairs is not None and gamma != 0:
        x_T, p_cond, p_x0 = pairs
        out["pair"] = pair_loss(student, x_T, p_cond, p_x0, T=float(sigmas[0]), distance=distance)
        total = total + gamma * out["pair"].mean()
    return {**out, "total": total}

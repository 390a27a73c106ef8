"""EDM: noise schedule, preconditioning and training loss (Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models", EDM).

Notation follows the paper: data x0 ~ p_data, noisy x = x0 + sigma * n with n ~ N(0, I), and the
denoiser D(x; sigma) ~ E[x0 | x] is parameterised through a raw network F (EDM eq. 7):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)).

Shapes: x is (B, T, D) for trajectory windows, but nothing here depends on the trailing shape;
sigma is a scalar or a (B,) tensor and is broadcast over the trailing dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "SIGMA_MIN",
    "SIGMA_MAX",
    "SIGMA_DATA",
    "RHO",
    "P_MEAN",
    "P_STD",
    "NUM_BINS",
    "DISTANCES",
    "karras_sigmas",
    "append_zero",
    "edm_scalings",
    "c_noise",
    "loss_weight",
    "pseudo_huber",
    "pseudo_huber_c",
    "sample_training_sigma",
    "add_noise",
    "denoising_distance",
    "clean_distance",
    "EDMPrecond",
    "edm_loss",
    "batch_sigma",
    "append_dims",
]

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
SIGMA_DATA = 0.5
RHO = 7.0
P_MEAN = -1.2
P_STD = 1.2
NUM_BINS = 80


# --------------------------------------------------------------------------------------------
# Broadcasting helpers
# --------------------------------------------------------------------------------------------


def batch_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) sigma -> a (B,) tensor with x's dtype and device."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    return sigma.reshape(x.shape[0])


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) with ``ndim`` dimensions in all, for broadcasting against x."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


# --------------------------------------------------------------------------------------------
# Time discretisation (EDM eq. 5)
# --------------------------------------------------------------------------------------------


def karras_sigmas(
    n: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The EDM noise levels, shape (n,), descending from sigma_max to sigma_min (EDM eq. 5):

        sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i = 0..n-1.

    Computed in float64 and returned as float32; the endpoints are exactly sigma_max, sigma_min.
    ``n == 1`` gives ``[sigma_max]``.  Append sigma_N = 0 with :func:`append_zero` for sampling.
    """
    if n < 1:
        raise ValueError(f"karras_sigmas needs n >= 1, got {n}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float32, device=device)
    i = torch.arange(n, dtype=torch.float64)
    max_inv_rho, min_inv_rho = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    sigmas = (max_inv_rho + i / (n - 1) * (min_inv_rho - max_inv_rho)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return sigmas.to(dtype=torch.float32, device=device)


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n+1,): the grid with sigma_N = 0 appended (the sampler's final target)."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


# --------------------------------------------------------------------------------------------
# Preconditioning (EDM Table 1)
# --------------------------------------------------------------------------------------------


def edm_scalings(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in) of EDM Table 1, elementwise in sigma:

        c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
        c_in = 1 / sqrt(sigma^2 + sd^2).

    At sigma = 0: c_skip = 1, c_out = 0 (D is the identity on clean data).
    """
    sigma = torch.as_tensor(sigma)
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1.0 / total.sqrt()
    return c_skip, c_out, c_in


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """EDM's noise conditioning c_noise(sigma) = ln(sigma) / 4 (EDM Table 1). sigma > 0."""
    return torch.log(torch.as_tensor(sigma)) / 4


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out(sigma)^2."""
    sigma = torch.as_tensor(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


DISTANCES = ("huber", "l2")
"""The distances d of the EDM, CTM and DSM losses: ``huber`` (the paper's, default) or ``l2``."""


def pseudo_huber_c(d: int) -> float:
    """The pseudo-Huber constant c = 0.00054 sqrt(d) for data of d = T*D elements per sample.

    From Song & Dhariwal 2023 (iCT), used by Consistency Policy (Prasad et al. 2024) and RACTD's
    code as ``delta = -1`` (their default for the teacher, CTM and DSM losses).
    """
    return 0.00054 * math.sqrt(d)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pseudo-Huber distance per sample, (B,), in the element-wise form of Consistency Policy
    (Prasad et al. 2024), which RACTD trains its teacher and student with (paper Sec. 2.2):

        e = (a - b)^2 elementwise,  d = mean over elements of  w * (sqrt(e^2 + c^2) - c),

    c = :func:`pseudo_huber_c` of the per-sample element count, ``weight`` (B,) an optional
    per-sample weight such as lambda(sigma).  Note e is the *squared* error, squared again under
    the root (their code's form): ~ (a-b)^4 / 2c for tiny errors, ~ (a-b)^2 once |a-b|^2 >> c.
    """
    e = (a - b).reshape(a.shape[0], -1).pow(2)
    if c is None:
        c = pseudo_huber_c(e.shape[1])
    d = (torch.sqrt(e * e + c * c) - c).mean(dim=1)
    return d if weight is None else weight * d


def clean_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "huber", weight: torch.Tensor | None = None) -> torch.Tensor:
    """d(a, b) per sample, (B,), in clean-data space, optionally times a per-sample ``weight`` (B,):
    ``"huber"`` is :func:`pseudo_huber` (the paper's d), ``"l2"`` the mean squared error."""
    if distance == "huber":
        return pseudo_huber(a, b, weight=weight)
    if distance == "l2":
        d = (a - b).reshape(a.shape[0], -1).pow(2).mean(dim=1)
        return d if weight is None else weight * d
    raise ValueError(f"unknown distance {distance!r} (choose from {', '.join(DISTANCES)})")


def denoising_distance(
    denoised: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    *,
    sigma_data: float = SIGMA_DATA,
    distance: str = "huber",
) -> torch.Tensor:
    """lambda(sigma) d(denoised, x0) per sample, (B,), lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2
    (EDM's weighting; RACTD's code applies it as "karras" weights to both the teacher's loss and the
    student's DSM loss). ``distance``: see :func:`clean_distance` ("l2" gives EDM's loss exactly)."""
    return clean_distance(denoised, x0, distance, weight=loss_weight(batch_sigma(sigma, x0), sigma_data))


def add_noise(x0: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x = x0 + sigma n, n ~ N(0, I) from ``generator``: the forward process at noise level sigma (B,)."""
    n = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return x0 + append_dims(sigma, x0.ndim) * n


def sample_training_sigma(
    batch: int,
    *,
    P_mean: float = P_MEAN,
    P_std: float = P_STD,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """EDM training noise levels: ln(sigma) ~ N(P_mean, P_std^2), shape (B,) (EDM Table 1)."""
    z = torch.randn(batch, generator=generator, device=device, dtype=dtype)
    return torch.exp(P_mean + P_std * z)


# --------------------------------------------------------------------------------------------
# Preconditioned denoiser and its loss
# --------------------------------------------------------------------------------------------


class EDMPrecond(nn.Module):
    """D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), cond)  (EDM eq. 7).

    ``net`` is the raw network F with signature ``net(x, c_noise, cond)``; x is (B, T, D) (any
    trailing shape), sigma a scalar or (B,) tensor, sigma > 0.
    """

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma, cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma = batch_sigma(sigma, x)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in edm_scalings(sigma, self.sigma_data))
        F_x = self.net(c_in * x, c_noise(sigma), cond)
        return c_skip * x + c_out * F_x


def edm_loss(
    denoiser: nn.Module,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    P_mean: float = P_MEAN,
    P_std: float = P_STD,
    sigma_data: float = SIGMA_DATA,
    distance: str = "huber",
) -> torch.Tensor:
    """EDM training loss per sample, (B,) (EDM eq. 2 and Table 1; RACTD eq. 4):

        sigma ~ lognormal(P_mean, P_std),  x = x0 + sigma * n,
        loss = lambda(sigma) d(D(x; sigma), x0),  lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2.

    ``distance`` is "huber" (default: RACTD trains its teacher with pseudo-Huber) or "l2" (EDM's
    squared error); see :func:`denoising_distance`.
    ``generator`` drives both sigma and the noise n.
    """
    sigma, x0_hat = training_denoise(denoiser, x0, cond, generator=generator, P_mean=P_mean, P_std=P_std)
    return denoising_distance(x0_hat, x0, sigma, sigma_data=sigma_data, distance=distance)


def training_denoise(
    denoiser: nn.Module,
    x0: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    P_mean: float = P_MEAN,
    P_std: float = P_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoised estimates the EDM loss regresses: sigma (B,) ~ lognormal(P_mean, P_std) and
    D(x0 + sigma n; sigma) (B, T, D), drawing sigma then n from ``generator``."""
    sigma = sample_training_sigma(
        x0.shape[0], P_mean=P_mean, P_std=P_std, generator=generator, device=x0.device, dtype=x0.dtype
    )
    return sigma, denoiser(add_noise(x0, sigma, generator), sigma, cond)

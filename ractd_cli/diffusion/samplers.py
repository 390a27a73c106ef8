"""Samplers for an EDM denoiser D(x; sigma) (Karras et al. 2022).

All samplers share one signature,

    sampler(model, x, sigmas, *, cond=None, generator=None) -> (sample, nfe)

* ``model(x, sigma, cond)`` is a denoiser D (e.g. :class:`~ractd_cli.diffusion.edm.EDMPrecond`);
* ``x`` (B, ...) is the initial noise already scaled by ``sigmas[0]``;
* ``sigmas`` (N+1,) is the full descending grid the sampler walks, usually ending in 0
  (``append_zero(karras_sigmas(80))``);
* ``nfe`` counts batched calls of ``model``;
* ``generator`` is a ``torch.Generator`` or a :class:`StackedRandomGenerator` (one per sample, so
  a sample's noise does not depend on the batch it is in); draw with :func:`randn_like`.

The probability-flow ODE in EDM's parameterisation (sigma(t) = t, s(t) = 1) is
dx/dsigma = (x - D(x; sigma)) / sigma  (EDM Sec. 2, with sigma(t) = t).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .edm import append_dims, batch_sigma

__all__ = [
    "StackedRandomGenerator",
    "randn",
    "randn_like",
    "to_d",
    "euler_step",
    "heun_step",
    "heun_sample",
    "euler_sample",
    "ancestral_sample",
    "ancestral_step_sigmas",
    "SAMPLERS",
]

Denoiser = Callable[..., torch.Tensor]


class StackedRandomGenerator:
    """One ``torch.Generator`` per sample, as in EDM's ``generate.py``: row i's noise comes from its
    own stream only, so it is the same whatever the batch size or the other rows.

    ``seeds`` (one int per row) seed the streams; ``stacked[rows]`` is a view on some of them
    (same generator objects, so drawing through it advances those rows' streams).
    """

    def __init__(self, device: torch.device | str, seeds=None, *, generators: list[torch.Generator] | None = None):
        if generators is None:
            generators = [torch.Generator(device=device).manual_seed(int(s) % (1 << 63)) for s in seeds]
        self.device, self.generators = torch.device(device), generators

    def __len__(self) -> int:
        return len(self.generators)

    def __getitem__(self, rows) -> "StackedRandomGenerator":
        return StackedRandomGenerator(self.device, generators=[self.generators[int(r)] for r in rows])

    def randn(self, shape, *, device=None, dtype=None) -> torch.Tensor:
        """(B, ...) standard normal noise, row i from stream i (B must equal the number of streams)."""
        if shape[0] != len(self.generators):
            raise ValueError(f"{len(self.generators)} noise streams for a batch of {shape[0]}")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in self.generators])


def randn_like(x: torch.Tensor, generator: torch.Generator | StackedRandomGenerator | None = None) -> torch.Tensor:
    """Standard normal noise of x's shape, device and dtype, from ``generator`` (one stream, or one per row)."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def randn(shape: Sequence[int], generator: torch.Generator | StackedRandomGenerator | None = None, *,
          device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` from ``generator`` (one stream, or one per row of dim 0)."""
    if isinstance(generator, StackedRandomGenerator):
        return generator.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The PF-ODE slope dx/dsigma = (x - D(x; sigma)) / sigma; sigma (B,) or scalar, > 0."""
    return (x - denoised) / append_dims(batch_sigma(sigma, x), x.ndim)


def euler_step(model: Denoiser, x, sigma_from, sigma_to, cond=None) -> tuple[torch.Tensor, int]:
    """One Euler step of the PF-ODE from sigma_from to sigma_to (scalars or (B,)): (x_next, 1).

    x_next = x + (sigma_to - sigma_from) (x - D(x; sigma_from)) / sigma_from, which in EDM's
    parameterisation is exactly a deterministic DDIM step (EDM; Song et al. 2021).
    """
    s_from, s_to = batch_sigma(sigma_from, x), batch_sigma(sigma_to, x)
    d = to_d(x, s_from, model(x, s_from, cond))
    return x + append_dims(s_to - s_from, x.ndim) * d, 1


def heun_step(model: Denoiser, x, sigma_from, sigma_to, cond=None) -> tuple[torch.Tensor, int]:
    """One step of EDM Algorithm 1 (Heun's 2nd-order method) from sigma_from to sigma_to: (x_next, nfe).

    sigma_from > 0 and sigma_to may be scalars or per-sample (B,) tensors.  Rows with
    sigma_to == 0 take the plain Euler step (Alg. 1, line 8: no correction at the last step);
    nfe is 1 when every row ends at 0, else 2.
    """
    s_from, s_to = batch_sigma(sigma_from, x), batch_sigma(sigma_to, x)
    h = append_dims(s_to - s_from, x.ndim)
    d = to_d(x, s_from, model(x, s_from, cond))
    x_euler = x + h * d  # Euler step from sigma_from to sigma_to
    to_zero = s_to == 0
    if bool(to_zero.all()):
        return x_euler, 1
    # 2nd-order correction: average the slopes at both ends.  Rows ending at 0 evaluate at a
    # harmless positive sigma and are discarded below.
    s_eval = torch.where(to_zero, s_from, s_to)
    d_prime = to_d(x_euler, s_eval, model(x_euler, s_eval, cond))
    x_heun = x + h * (0.5 * d + 0.5 * d_prime)
    if bool(to_zero.any()):
        x_heun = torch.where(append_dims(to_zero, x.ndim), x_euler, x_heun)
    return x_heun, 2


@torch.no_grad()
def heun_sample(model: Denoiser, x, sigmas, *, cond=None, generator=None) -> tuple[torch.Tensor, int]:
    """EDM's deterministic sampler (Algorithm 1): Heun steps along ``sigmas``, Euler on the last
    step to 0.  With ``append_zero(karras_sigmas(80))`` that is 79 * 2 + 1 = 159 NFE."""
    nfe = 0
    for i in range(len(sigmas) - 1):
        x, n = heun_step(model, x, sigmas[i], sigmas[i + 1], cond)
        nfe += n
    return x, nfe


@torch.no_grad()
def euler_sample(model: Denoiser, x, sigmas, *, cond=None, generator=None) -> tuple[torch.Tensor, int]:
    """First-order deterministic sampler (Euler on the PF-ODE = DDIM, eta = 0): one NFE per step."""
    nfe = 0
    for i in range(len(sigmas) - 1):
        x, n = euler_step(model, x, sigmas[i], sigmas[i + 1], cond)
        nfe += n
    return x, nfe


def ancestral_step_sigmas(sigma_from, sigma_to, eta: float = 1.0):
    """Split a step sigma_from -> sigma_to into a deterministic part to sigma_down and fresh noise
    of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_to^2 (DDPM posterior for eta = 1):

        sigma_up = min(sigma_to, eta * sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2)).
    """
    sigma_from, sigma_to = torch.as_tensor(sigma_from), torch.as_tensor(sigma_to)
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).clamp_min(0).sqrt()
    )
    sigma_down = (sigma_to**2 - sigma_up**2).clamp_min(0).sqrt()
    return sigma_down, sigma_up


@torch.no_grad()
def ancestral_sample(model: Denoiser, x, sigmas, *, cond=None, generator=None) -> tuple[torch.Tensor, int]:
    """Stochastic ancestral sampler (DDPM-like; Euler-ancestral, eta = 1): for each step, an Euler
    step to sigma_down, then fresh Gaussian noise of std sigma_up (drawn from ``generator``)."""
    nfe = 0
    for i in range(len(sigmas) - 1):
        sigma_from, sigma_to = sigmas[i], sigmas[i + 1]
        sigma_down, sigma_up = ancestral_step_sigmas(sigma_from, sigma_to)
        x, n = euler_step(model, x, sigma_from, sigma_down, cond)
        nfe += n
        if float(sigma_to) > 0:
            x = x + sigma_up * randn_like(x, generator)
    return x, nfe


SAMPLERS: dict[str, Callable[..., tuple[torch.Tensor, int]]] = {
    "heun": heun_sample,
    "euler": euler_sample,
    "ancestral": ancestral_sample,
}

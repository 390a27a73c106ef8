"""EDM math: schedule (eq. 5), preconditioning (Table 1), loss, pseudo-Huber and the samplers.

Sampler checks use a Gaussian data distribution N(0, s0^2), whose exact denoiser is analytic:
D(x; sigma) = x s0^2 / (s0^2 + sigma^2).
"""

from __future__ import annotations

import math

import pytest
import torch

from ractd_cli.diffusion import (
    NUM_BINS,
    SAMPLERS,
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    EDMPrecond,
    ancestral_sample,
    append_zero,
    c_noise,
    edm_loss,
    edm_scalings,
    euler_sample,
    euler_step,
    heun_sample,
    heun_step,
    karras_sigmas,
    loss_weight,
    pseudo_huber,
    pseudo_huber_c,
)


class GaussianDenoiser(torch.nn.Module):
    """Exact D(x; sigma) for data ~ N(0, s0^2 I); counts its calls."""

    def __init__(self, s0: float):
        super().__init__()
        self.s0, self.calls = s0, 0

    def forward(self, x, sigma, cond=None):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return x * self.s0**2 / (self.s0**2 + sigma**2)


class ZeroNet(torch.nn.Module):
    def forward(self, x, c_noise, cond=None):
        return torch.zeros_like(x)


# ----------------------------------------------------------------------------- schedule


def test_karras_sigmas_endpoints_monotone_and_eq5():
    sigmas = karras_sigmas(NUM_BINS)
    assert sigmas.shape == (80,) and sigmas.dtype == torch.float32
    assert sigmas[0].item() == pytest.approx(SIGMA_MAX, rel=0, abs=0)
    assert sigmas[-1].item() == pytest.approx(SIGMA_MIN, rel=1e-7)
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    # EDM eq. 5, written out independently in float64
    rho, n = 7.0, 80
    for i in (1, 17, 40, 78):
        expected = (SIGMA_MAX ** (1 / rho) + i / (n - 1) * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
        assert sigmas[i].item() == pytest.approx(expected, rel=1e-6)
    # rho = 1 is a linear grid
    lin = karras_sigmas(5, sigma_min=1.0, sigma_max=5.0, rho=1.0)
    assert torch.allclose(lin, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]))
    assert karras_sigmas(1).tolist() == [SIGMA_MAX]
    with pytest.raises(ValueError):
        karras_sigmas(0)


def test_append_zero():
    s = append_zero(karras_sigmas(3))
    assert s.shape == (4,) and s[-1].item() == 0.0 and s[0].item() == SIGMA_MAX


# ----------------------------------------------------------------------------- preconditioning


def test_edm_scalings_identities():
    sd = SIGMA_DATA
    sigma = torch.tensor([0.0, 0.002, 0.1, 0.5, 1.0, 10.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = edm_scalings(sigma, sd)
    # unit-variance effective target: c_skip + (c_out / sd)^2 = 1
    assert torch.allclose(c_skip + (c_out / sd) ** 2, torch.ones_like(sigma))
    # unit-variance input: c_in^2 (sigma^2 + sd^2) = 1
    assert torch.allclose(c_in**2 * (sigma**2 + sd**2), torch.ones_like(sigma))
    # c_out = sigma * sd * c_in, and lambda(sigma) = 1 / c_out^2
    assert torch.allclose(c_out, sigma * sd * c_in)
    assert torch.allclose(loss_weight(sigma[1:], sd), 1 / c_out[1:] ** 2)
    # boundary: D is the identity at sigma = 0
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0
    # the textbook values at sigma = sd
    assert c_skip[3].item() == pytest.approx(0.5) and c_out[3].item() == pytest.approx(sd / math.sqrt(2))
    assert c_noise(torch.tensor(math.e**4)).item() == pytest.approx(1.0)


def test_precond_with_zero_net_is_exact_denoiser_for_data_at_sigma_data():
    """For data ~ N(0, sd^2) the exact denoiser is c_skip x, i.e. F* = 0 (EDM's design)."""
    D = EDMPrecond(ZeroNet())
    exact = GaussianDenoiser(SIGMA_DATA)
    x = torch.randn(5, 16, 3)
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0])
    assert torch.allclose(D(x, sigma), exact(x, sigma))
    # a scalar sigma broadcasts
    assert torch.allclose(D(x, 2.0), exact(x, torch.full((5,), 2.0)))


def test_precond_formula_with_a_real_net():
    torch.manual_seed(0)
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x, cn, cond=None):
            seen["x"], seen["cn"], seen["cond"] = x, cn, cond
            return torch.tanh(x) + cn.reshape(-1, 1, 1)

    D = EDMPrecond(Probe())
    x, sigma, cond = torch.randn(3, 4, 2), torch.tensor([0.1, 1.0, 30.0]), torch.randn(3, 7)
    out = D(x, sigma, cond)
    c_skip, c_out, c_in = (c.reshape(-1, 1, 1) for c in edm_scalings(sigma))
    F = torch.tanh(c_in * x) + (torch.log(sigma) / 4).reshape(-1, 1, 1)
    assert torch.allclose(out, c_skip * x + c_out * F)
    assert torch.allclose(seen["x"], c_in * x) and seen["cond"] is cond
    assert torch.allclose(seen["cn"], torch.log(sigma) / 4)
    assert D.net.__class__ is Probe


# ----------------------------------------------------------------------------- distances and loss


def test_pseudo_huber():
    """The element-wise Consistency Policy form: mean of sqrt(e^2 + c^2) - c with e = (a-b)^2."""
    a, b = torch.randn(6, 4, 3), torch.randn(6, 4, 3)
    d = a.shape[1] * a.shape[2]
    c = 0.00054 * math.sqrt(d)
    assert pseudo_huber_c(d) == pytest.approx(c)
    e = (a - b) ** 2
    assert torch.allclose(pseudo_huber(a, b), (torch.sqrt(e * e + c * c) - c).mean(dim=(1, 2)))
    assert torch.allclose(pseudo_huber(a, b, c=1.0), (torch.sqrt(e * e + 1) - 1).mean(dim=(1, 2)))
    assert pseudo_huber(a, b).shape == (6,)
    assert torch.equal(pseudo_huber(a, a), torch.zeros(6))
    w = torch.arange(6.0)
    assert torch.allclose(pseudo_huber(a, b, weight=w), w * pseudo_huber(a, b))
    # tiny errors: ~ e^2 / 2c; errors with e >> c: ~ e (the squared error itself)
    eps = 1e-2 * torch.ones(1, 4, 3, dtype=torch.float64)
    assert pseudo_huber(eps, torch.zeros_like(eps), c=1.0).item() == pytest.approx(1e-8 / 2, rel=1e-3)
    big = torch.full((1, 4, 3), 3.0, dtype=torch.float64)
    assert pseudo_huber(big, torch.zeros_like(big)).item() == pytest.approx(9.0, rel=1e-3)


def test_edm_loss_unit_scale_and_determinism():
    """EDM's weighting makes the optimal loss exactly 1 per element for data N(0, sd^2), any sigma."""
    D = EDMPrecond(ZeroNet())  # F = 0 is optimal for this data
    g = torch.Generator().manual_seed(0)
    x0 = SIGMA_DATA * torch.randn(20000, 2, 2, generator=g)
    loss = edm_loss(D, x0, generator=g, distance="l2")
    assert loss.shape == (20000,)
    assert loss.mean().item() == pytest.approx(1.0, rel=0.03)
    # the default, pseudo-Huber (the paper's d), is never above the squared error and close to it
    # where errors are large against c
    hub = edm_loss(D, x0, generator=torch.Generator().manual_seed(0))
    same_draw = edm_loss(D, x0, generator=torch.Generator().manual_seed(0), distance="l2")
    assert bool((hub <= same_draw + 1e-6).all())
    assert 0.5 < hub.mean().item() / same_draw.mean().item() <= 1.0
    l1 = edm_loss(D, x0[:8], generator=torch.Generator().manual_seed(5))
    l2 = edm_loss(D, x0[:8], generator=torch.Generator().manual_seed(5))
    assert torch.equal(l1, l2)
    with pytest.raises(ValueError):
        edm_loss(D, x0[:8], distance="l3")


def test_edm_loss_backprop():
    torch.manual_seed(0)
    from ractd_cli.nets import MLPDenoiserNet

    D = EDMPrecond(MLPDenoiserNet(8, hidden=(16,), embed_dim=8))
    for distance in ("l2", "huber"):
        D.zero_grad()
        edm_loss(D, torch.randn(4, 4, 2), distance=distance).mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())


# ----------------------------------------------------------------------------- samplers


S0 = 0.5


def _gaussian_start(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SIGMA_MAX * torch.randn(n, 2, 1, generator=g)


def test_heun_reproduces_gaussian_variance_and_counts_159_nfe():
    model, sigmas = GaussianDenoiser(S0), append_zero(karras_sigmas(NUM_BINS))
    x, nfe = heun_sample(model, _gaussian_start(), sigmas)
    assert nfe == 159 and model.calls == 159
    assert x.var().item() == pytest.approx(S0**2, rel=0.05)
    # deterministic: the exact PF-ODE map is x_T * s0 / sqrt(s0^2 + T^2); Heun (2nd order) is
    # within ~0.2% of it on 80 bins and its error shrinks ~16x when the step count is x4
    exact = _gaussian_start() * S0 / math.sqrt(S0**2 + SIGMA_MAX**2)
    err80 = ((x - exact).abs().max() / exact.abs().max()).item()
    x320, _ = heun_sample(model, _gaussian_start(), append_zero(karras_sigmas(320)))
    err320 = ((x320 - exact).abs().max() / exact.abs().max()).item()
    assert err80 < 0.01 and err320 < err80 / 8


def test_one_step_euler_collapses_but_many_steps_do_not():
    model = GaussianDenoiser(S0)
    x1, nfe1 = euler_sample(model, _gaussian_start(), append_zero(karras_sigmas(1)))
    assert nfe1 == 1
    assert x1.var().item() < 0.01 * S0**2  # one step lands on the (shrunk) posterior mean
    x80, nfe80 = euler_sample(model, _gaussian_start(), append_zero(karras_sigmas(80)))
    assert nfe80 == 80
    assert x80.var().item() == pytest.approx(S0**2, rel=0.1)


def test_ancestral_variance_and_generator():
    model, sigmas = GaussianDenoiser(S0), append_zero(karras_sigmas(NUM_BINS))
    x, nfe = ancestral_sample(model, _gaussian_start(), sigmas, generator=torch.Generator().manual_seed(1))
    assert nfe == 80
    # first-order and stochastic: about -14% on 80 bins, converging as the grid is refined
    assert x.var().item() == pytest.approx(S0**2, rel=0.2)
    fine, _ = ancestral_sample(
        model, _gaussian_start(), append_zero(karras_sigmas(640)), generator=torch.Generator().manual_seed(1)
    )
    assert fine.var().item() == pytest.approx(S0**2, rel=0.05)
    again, _ = ancestral_sample(model, _gaussian_start(), sigmas, generator=torch.Generator().manual_seed(1))
    other, _ = ancestral_sample(model, _gaussian_start(), sigmas, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x, again) and not torch.allclose(x, other)


def test_sampler_registry_and_grid_without_zero():
    assert set(SAMPLERS) == {"heun", "euler", "ancestral"}
    model = GaussianDenoiser(S0)
    sigmas = karras_sigmas(10)  # ends at sigma_min, no final Euler step
    _, nfe = SAMPLERS["heun"](model, _gaussian_start(64), sigmas)
    assert nfe == 18
    for name in SAMPLERS:  # one signature for all
        out, n = SAMPLERS[name](model, _gaussian_start(64), append_zero(sigmas), cond=None, generator=None)
        assert out.shape == (64, 2, 1) and n > 0


def test_heun_step_per_sample_sigmas():
    """Per-sample (B,) sigmas; rows stepping to 0 take the Euler step (EDM Alg. 1)."""
    model = GaussianDenoiser(S0)
    x = torch.randn(3, 4, 2)
    s_from, s_to = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([1.0, 0.0, 0.25])
    out, nfe = heun_step(model, x, s_from, s_to)
    assert nfe == 2
    for i in range(3):
        ref, _ = heun_step(model, x[i : i + 1], s_from[i], s_to[i])
        assert torch.allclose(out[i : i + 1], ref)
    euler, _ = euler_step(model, x[1:2], 1.0, 0.0)
    assert torch.allclose(out[1:2], euler)
    _, nfe0 = heun_step(model, x, s_from, torch.zeros(3))
    assert nfe0 == 1

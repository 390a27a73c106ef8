"""CTM student and RACTD losses: the parameterisation, teacher solver, sampling and a toy
end-to-end distillation (two-mode 1-D mixture, reward favouring one mode)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ractd_cli.data.fetch import torch_threads
from ractd_cli.diffusion import (
    SIGMA_DATA,
    SIGMA_MAX,
    CTMPrecond,
    EDMPrecond,
    append_zero,
    ctm_loss,
    ctm_sample,
    dsm_loss,
    edm_loss,
    euler_step,
    heun_sample,
    heun_step,
    karras_sigmas,
    one_step_jumps,
    ractd_loss,
    reward_loss,
    sample_ctm_times,
    sample_dsm_sigma,
    stop_gradient,
    student_from_teacher,
    student_sigmas,
    teacher_sigmas,
    teacher_solve,
)
from ractd_cli.diffusion.ctm import S_EMBED_FLOOR
from ractd_cli.diffusion.edm import c_noise
from ractd_cli.nets import ConditionalUnet1D, MLPDenoiserNet

S0 = 0.5


class GaussianDenoiser(nn.Module):
    """Exact D(x; sigma) for data ~ N(0, s0^2 I)."""

    def __init__(self, s0: float = S0):
        super().__init__()
        self.s0 = s0

    def forward(self, x, sigma, cond=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return x * self.s0**2 / (self.s0**2 + sigma**2)


class GaussianFlowMap(nn.Module):
    """The exact PF-ODE jump for data ~ N(0, s0^2): G(x, t, s) = x ((s0^2 + s^2) / (s0^2 + t^2))^p, p = 1/2.

    Any other p keeps G(x, t, t) = x but is off the teacher's trajectories."""

    def __init__(self, s0: float = S0, power: float = 0.5):
        super().__init__()
        self.s0, self.power = s0, power

    def forward(self, x, t, s, cond=None):
        shape = (-1,) + (1,) * (x.ndim - 1)
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]).reshape(shape)
        s = torch.as_tensor(s, dtype=x.dtype).expand(x.shape[0]).reshape(shape)
        return x * ((self.s0**2 + s**2) / (self.s0**2 + t**2)) ** self.power


def small_unet(student=False, cond_dim=5):
    return ConditionalUnet1D(3, cond_dim, down_dims=(16, 32), embed_dim=16, student=student)


# ----------------------------------------------------------------------------- parameterisation


def test_G_of_t_t_is_identity_bitwise():
    torch.manual_seed(0)
    student = CTMPrecond(small_unet(student=True))
    with torch.no_grad():  # make g far from the identity
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    x, cond = torch.randn(4, 8, 3), torch.randn(4, 5)
    t = torch.tensor([80.0, 1.0, 0.002, 0.0])
    assert torch.equal(student(x, t, t, cond), x)
    assert torch.equal(student(x, 3.0, 3.0, cond), x)  # scalar times
    assert torch.equal(student(x, 0.0, 0.0, cond), x)  # t = s = 0: no 0/0
    # mixed batch: rows with s == t are exactly x, the others are not
    s = torch.tensor([80.0, 0.5, 0.002, 0.0])
    out = student(x, torch.tensor([80.0, 1.0, 0.002, 0.0]).clone(), s, cond)
    assert torch.equal(out[[0, 2, 3]], x[[0, 2, 3]])
    assert not torch.allclose(out[1], x[1])
    assert torch.isfinite(out).all()


def test_G_to_zero_is_g_and_formula():
    torch.manual_seed(0)
    student = CTMPrecond(MLPDenoiserNet(6, hidden=(32,), embed_dim=8, student=True))
    x, t, s = torch.randn(5, 3, 2), torch.tensor([0.1, 1.0, 5.0, 20.0, 80.0]), torch.tensor([0.0, 0.5, 1.0, 2.0, 0.0])
    G = student(x, t, s)
    ratio = (s / t).reshape(-1, 1, 1)
    assert torch.allclose(G, ratio * x + (1 - ratio) * student.g(x, t, s))
    assert torch.allclose(student(x, t, 0.0), student.g(x, t, torch.zeros(5)))


def test_student_from_teacher_is_an_euler_step():
    """At init g(x, t, s) == D_teacher(x; t) for every s, so G(x, t, s) is a DDIM/Euler step t -> s."""
    torch.manual_seed(0)
    teacher = EDMPrecond(small_unet())
    student = student_from_teacher(teacher)
    assert isinstance(student, CTMPrecond) and student.net.student and not teacher.net.student
    x, cond = torch.randn(4, 16, 3), torch.randn(4, 5)
    t = torch.tensor([80.0, 10.0, 1.0, 0.05])
    for s in (torch.tensor([40.0, 0.0, 0.3, 0.002]), torch.zeros(4), 0.5 * t):
        assert torch.allclose(student.g(x, t, s, cond), teacher(x, t, cond), atol=1e-6)
        euler, _ = euler_step(teacher, x, t, s, cond)
        assert torch.allclose(student(x, t, s, cond), euler, atol=1e-5, rtol=1e-5)
    # also for the MLP net, with an explicit make_net
    mlp_teacher = EDMPrecond(MLPDenoiserNet(4, hidden=(16, 16), embed_dim=8))
    mlp_student = student_from_teacher(mlp_teacher, lambda: MLPDenoiserNet(4, hidden=(16, 16), embed_dim=8, student=True))
    y = torch.randn(3, 2, 2)
    euler, _ = euler_step(mlp_teacher, y, 7.0, 0.0)
    assert torch.allclose(mlp_student(y, 7.0, 0.0), euler, atol=1e-5)


def test_student_from_teacher_rejects_mismatched_nets():
    teacher = EDMPrecond(small_unet())
    with pytest.raises(ValueError):  # not a student net
        student_from_teacher(teacher, lambda: small_unet(student=False))
    with pytest.raises(ValueError):  # different widths: shapes do not fit
        student_from_teacher(teacher, lambda: ConditionalUnet1D(3, 5, down_dims=(16, 64), embed_dim=16, student=True))


def test_stop_gradient_is_the_current_student_without_parameter_gradients():
    torch.manual_seed(0)
    student = CTMPrecond(MLPDenoiserNet(2, hidden=(8,), embed_dim=4, student=True))
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x, t, s = torch.randn(5, 1, 2), torch.full((5,), 3.0), torch.full((5,), 0.5)
    for _ in range(3):  # after every optimiser step the target is exactly the student's new weights
        G_sg = stop_gradient(student)
        assert torch.equal(G_sg(x, t, s), student(x, t, s))
        student(x, t, s).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    # gradients flow through the target's input, never into its parameters
    x_in = x.clone().requires_grad_(True)
    stop_gradient(student)(x_in, t, s).sum().backward()
    assert x_in.grad is not None and x_in.grad.abs().sum() > 0
    assert all(p.grad is None for p in student.parameters())


# ----------------------------------------------------------------------------- grids and sampling


def test_stacked_generator_gives_each_row_its_own_stream():
    """A row's noise depends on its own seed only, not on the batch it is drawn in (EDM's
    StackedRandomGenerator); a view on some rows advances exactly those rows' streams."""
    from ractd_cli.diffusion import StackedRandomGenerator, randn_like

    seeds = [11, 12, 13, 14]
    whole = StackedRandomGenerator("cpu", seeds)
    first = randn_like(torch.empty(4, 3, 2), whole)
    alone = torch.stack([torch.randn(3, 2, generator=torch.Generator().manual_seed(s)) for s in seeds])
    assert torch.equal(first, alone)
    split = StackedRandomGenerator("cpu", seeds)
    a, b = randn_like(torch.empty(1, 3, 2), split[[2]]), randn_like(torch.empty(3, 3, 2), split[[0, 1, 3]])
    assert torch.equal(a[0], first[2]) and torch.equal(b, first[[0, 1, 3]])
    # the views advanced the shared streams: the next draw is every row's second draw
    second = torch.stack([
        (lambda g: (torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g))[1])(torch.Generator().manual_seed(s))
        for s in seeds
    ])
    assert torch.equal(randn_like(torch.empty(4, 3, 2), split), second)
    with pytest.raises(ValueError):
        randn_like(torch.empty(3, 3, 2), whole)


def test_student_sigmas():
    assert student_sigmas(1).tolist() == [SIGMA_MAX, 0.0]
    # the authors' chain: re-noise to 27, then to 54 (paper Table 5)
    assert student_sigmas(2).tolist() == [SIGMA_MAX, 27.0, 0.0]
    assert student_sigmas(3).tolist() == [SIGMA_MAX, 27.0, 54.0, 0.0]
    four = student_sigmas(4)
    assert four.shape == (5,) and four[0].item() == SIGMA_MAX and four[-1].item() == 0.0
    assert bool((four[:-1] > four[1:]).all()) and four[3].item() > 0.002
    assert torch.equal(teacher_sigmas(80), append_zero(karras_sigmas(80)))


def test_dsm_sigmas_half_on_the_upper_curve_half_lognormal():
    sigma = sample_dsm_sigma(20001, 0.02, SIGMA_MAX, generator=torch.Generator().manual_seed(0))
    upper, lower = sigma[:10001], sigma[10001:]
    # xi ~ U[0, 0.7] on the rho = 7 curve from 80 to 0.02: sigma in [0.76, 80], covering the range
    assert upper.min().item() >= 0.758 and upper.max().item() <= SIGMA_MAX
    assert upper.min().item() < 0.8 and upper.max().item() > 75
    # EDM's log-normal: ln sigma ~ N(-1.2, 1.2^2)
    assert lower.log().mean().item() == pytest.approx(-1.2, abs=0.05)
    assert lower.log().std().item() == pytest.approx(1.2, abs=0.05)


def test_ctm_sample_with_exact_flow_map():
    flow = GaussianFlowMap()
    g = torch.Generator().manual_seed(0)
    x_T = SIGMA_MAX * torch.randn(20000, 2, 1, generator=g)
    x, nfe = ctm_sample(flow, x_T, student_sigmas(1))
    assert nfe == 1
    assert torch.allclose(x, x_T * S0 / math.sqrt(S0**2 + SIGMA_MAX**2))
    x3, nfe3 = ctm_sample(flow, x_T, student_sigmas(3), generator=torch.Generator().manual_seed(1))
    assert nfe3 == 3
    assert x3.var().item() == pytest.approx(S0**2, rel=0.03)  # re-noising keeps the marginals right
    # the re-noising uses the generator
    again, _ = ctm_sample(flow, x_T, student_sigmas(3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(x3, again)


def test_teacher_solve_varying_step_counts():
    torch.manual_seed(0)
    teacher = EDMPrecond(MLPDenoiserNet(6, hidden=(16,), embed_dim=8)).requires_grad_(False)
    sigmas = teacher_sigmas(10)
    x = torch.randn(4, 3, 2) * 5
    i_t = torch.tensor([0, 2, 7, 9])
    i_u = torch.tensor([3, 3, 10, 10])  # 3, 1, 3 steps (last one onto 0), 1 step onto 0
    out = teacher_solve(teacher, x, sigmas, i_t, i_u)
    for b in range(4):
        ref = x[b : b + 1]
        for i in range(int(i_t[b]), int(i_u[b])):
            ref, _ = heun_step(teacher, ref, sigmas[i], sigmas[i + 1])
        assert torch.allclose(out[b : b + 1], ref, atol=1e-5)
    # onto the whole grid it is the EDM Heun sampler
    full = teacher_solve(teacher, x, sigmas, torch.zeros(4, dtype=torch.long), torch.full((4,), 10))
    assert torch.allclose(full, heun_sample(teacher, x, sigmas)[0], atol=1e-5)
    with pytest.raises(ValueError):
        teacher_solve(teacher, x, sigmas, i_u, i_t)


def test_sample_ctm_times_constraints():
    g = torch.Generator().manual_seed(0)
    i_t, i_u, i_s = sample_ctm_times(20000, 81, max_teacher_steps=4, generator=g)
    assert bool((i_t >= 0).all() and (i_t < i_u).all() and (i_u <= i_s).all() and (i_s <= 80).all())
    assert bool((i_u - i_t <= 4).all()) and set((i_u - i_t).unique().tolist()) == {1, 2, 3, 4}
    assert int(i_t.min()) == 0 and int(i_t.max()) == 79 and bool((i_s == 80).any()) and bool((i_s == i_u).any())


# ----------------------------------------------------------------------------- losses


def test_ctm_loss_vanishes_for_exact_flow_map():
    sigmas = teacher_sigmas(80)
    g = torch.Generator().manual_seed(0)
    x0 = S0 * torch.randn(4096, 4, 2, generator=g)
    teacher, exact = GaussianDenoiser(), GaussianFlowMap()
    for distance, small in (("l2", 2e-3), ("huber", 2e-3)):
        loss = ctm_loss(exact, teacher, x0, sigmas=sigmas, max_teacher_steps=4, generator=torch.Generator().manual_seed(0),
                        distance=distance)
        assert loss.shape == (4096,)
        wrong = GaussianFlowMap(power=0.6)
        loss_wrong = ctm_loss(wrong, teacher, x0, sigmas=sigmas, max_teacher_steps=4,
                              generator=torch.Generator().manual_seed(0), distance=distance)
        assert loss.mean().item() < small
        assert loss_wrong.mean().item() > 20 * loss.mean().item()


def test_ctm_loss_gradients_reach_only_the_student():
    torch.manual_seed(0)
    teacher = EDMPrecond(MLPDenoiserNet(4, hidden=(16,), embed_dim=8)).requires_grad_(False)
    student = student_from_teacher(teacher)
    with torch.no_grad():  # move the student off the target so the loss is informative
        for p in student.net.s_embed.parameters():
            p.add_(0.1 * torch.randn_like(p))
    loss = ctm_loss(student, teacher, torch.randn(8, 2, 2), sigmas=teacher_sigmas(10),
                    generator=torch.Generator().manual_seed(0))
    loss.mean().backward()
    grads = [p.grad for p in student.parameters()]
    assert all(gr is not None for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0
    assert all(p.grad is None for p in teacher.parameters())


class ZeroStudentNet(nn.Module):
    student = True

    def forward(self, x, c_noise_t, cond=None, c_noise_s=None):
        self.seen = (c_noise_t, c_noise_s)
        return torch.zeros_like(x)


def test_dsm_loss_regresses_the_one_step_jump():
    """eq. 7: d(x0, G(x_t, t, 0)). With F = 0, G(x, sigma, 0) = c_skip x is the exact posterior mean
    for data N(0, sd^2), so the lambda-weighted squared error is 1 in expectation."""
    student = CTMPrecond(ZeroStudentNet())
    g = torch.Generator().manual_seed(0)
    x0 = SIGMA_DATA * torch.randn(20000, 2, 2, generator=g)
    loss = dsm_loss(student, x0, generator=g, distance="l2")
    assert loss.shape == (20000,) and loss.mean().item() == pytest.approx(1.0, rel=0.05)
    # the network was asked for the jump to s = 0 (embedded at the floor), from the sampled t
    c_noise_t, c_noise_s = student.net.seen
    assert torch.allclose(c_noise_s, c_noise(torch.tensor(S_EMBED_FLOOR)).expand_as(c_noise_s))
    assert bool((c_noise_t > c_noise_s).all())
    huber = dsm_loss(student, x0, generator=torch.Generator().manual_seed(0))  # default: pseudo-Huber
    assert huber.shape == (20000,) and bool((huber >= 0).all())


def test_dsm_gradient_reaches_the_jump_to_zero():
    """The DSM gradient reaches G(x, t, 0): the s-embedding is trained at s = 0 (only the jump
    to zero sees that s), and the loss falls when the student's G(., ., 0) moves towards x0."""
    torch.manual_seed(0)
    teacher = EDMPrecond(MLPDenoiserNet(4, hidden=(16,), embed_dim=8)).requires_grad_(False)
    student = student_from_teacher(teacher)
    x0 = torch.randn(64, 2, 2)
    loss = dsm_loss(student, x0, generator=torch.Generator().manual_seed(0)).mean()
    loss.backward()
    s_grad = sum(p.grad.abs().sum() for p in student.net.s_embed.parameters())
    assert s_grad > 0


def test_reward_loss_and_ractd_loss_terms():
    torch.manual_seed(0)
    teacher = EDMPrecond(MLPDenoiserNet(4, hidden=(16,), embed_dim=8)).requires_grad_(False)
    student = student_from_teacher(teacher)
    reward_net = nn.Linear(4, 1).requires_grad_(False)

    def reward_fn(x0_hat, cond):
        return reward_net(x0_hat.reshape(x0_hat.shape[0], -1))  # (B, 1) is accepted

    x0 = torch.randn(8, 2, 2)
    r = reward_loss(reward_fn, x0, None)
    assert torch.allclose(r, -reward_net(x0.reshape(8, -1)).squeeze(-1))
    with pytest.raises(ValueError):
        reward_loss(lambda x, c: torch.ones(8, 2), x0, None)

    kw = dict(sigmas=teacher_sigmas(10), max_teacher_steps=3)
    out = ractd_loss(student, teacher, reward_fn, x0, None, alpha=1.0, beta=0.5, sigma_r=2.0,
                     generator=torch.Generator().manual_seed(0), **kw)
    assert set(out) == {"ctm", "dsm", "reward", "total"}
    assert all(out[k].shape == (8,) for k in ("ctm", "dsm", "reward")) and out["total"].ndim == 0
    expected = (out["ctm"] + 0.5 * out["dsm"] + 2.0 * out["reward"]).mean()
    assert torch.allclose(out["total"], expected)
    assert bool((out["reward"] != 0).any())

    # plain CTD: reward skipped (zeros) with sigma_r = 0 or no reward model
    for fn, w in ((reward_fn, 0.0), (None, 1.0)):
        plain = ractd_loss(student, teacher, fn, x0, None, alpha=1.0, beta=1.0, sigma_r=w,
                           generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(plain["reward"], torch.zeros(8))

    # the reward term alone trains the student through the frozen reward model
    student.zero_grad()
    only_r = ractd_loss(student, teacher, reward_fn, x0, None, alpha=0.0, beta=0.0, sigma_r=1.0,
                        generator=torch.Generator().manual_seed(0), **kw)
    only_r["total"].backward()
    assert sum(p.grad.abs().sum() for p in student.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in reward_net.parameters())


def test_reward_scores_the_jumps_the_dsm_term_anchors():
    """eq. 7-8 as RACTD's code computes them: one set of jumps x0_hat = G(x_sigma, sigma, 0) per step,
    regressed onto x0 by L_DSM and scored by L_Reward (so the reward cannot pull on a time that the
    DSM term never sees)."""
    torch.manual_seed(0)
    teacher = EDMPrecond(MLPDenoiserNet(4, hidden=(16,), embed_dim=8)).requires_grad_(False)
    student = student_from_teacher(teacher)
    seen = []

    def reward_fn(x0_hat, cond):
        seen.append(x0_hat.detach())
        return x0_hat.reshape(x0_hat.shape[0], -1).mean(dim=1)

    x0, sigmas = torch.randn(8, 2, 2), teacher_sigmas(10, 0.02)
    out = ractd_loss(student, teacher, reward_fn, x0, None, alpha=0.0, beta=1.0, sigma_r=1.0, sigmas=sigmas,
                     generator=torch.Generator().manual_seed(3))
    sigma, x0_hat = one_step_jumps(student, x0, None, sigma_min=0.02, sigma_max=float(sigmas[0]),
                                   generator=torch.Generator().manual_seed(3))
    assert torch.allclose(seen[0], x0_hat)
    assert torch.allclose(out["reward"], -x0_hat.reshape(8, -1).mean(dim=1))
    assert torch.allclose(out["dsm"], dsm_loss(student, x0, None, sigma_min=0.02, sigma_max=float(sigmas[0]),
                                                generator=torch.Generator().manual_seed(3)))


# ----------------------------------------------------------------------------- toy end to end


def _mixture(n: int, g: torch.Generator) -> torch.Tensor:
    """x0 = +-1 (equal odds) + 0.1 noise, shape (n, 1, 1)."""
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return (sign + 0.1 * torch.randn(n, generator=g)).reshape(n, 1, 1)


def _tiny_net(student=False):
    return MLPDenoiserNet(1, hidden=(64, 64), embed_dim=16, student=student)


@pytest.fixture(scope="module")
def toy_teacher():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    teacher = EDMPrecond(_tiny_net())
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    with torch_threads(1):
        for _ in range(300):
            loss = edm_loss(teacher, _mixture(256, g), generator=g).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return teacher.requires_grad_(False).eval()


def test_toy_teacher_samples_both_modes(toy_teacher):
    g = torch.Generator().manual_seed(1)
    x_T = SIGMA_MAX * torch.randn(2000, 1, 1, generator=g)
    x, nfe = heun_sample(toy_teacher, x_T, teacher_sigmas(80))
    x = x.flatten()
    assert nfe == 159
    assert 0.35 < (x > 0).float().mean().item() < 0.65
    assert ((x.abs() - 1).abs() < 0.3).float().mean().item() > 0.9


def _distill(teacher, sigma_r: float, steps: int = 300):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    student = student_from_teacher(teacher)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    sigmas = teacher_sigmas(18)  # a coarse grid keeps the toy fast

    def reward_fn(x0_hat, cond):  # a smooth bump on the +1 mode, wide enough to reach -1
        return torch.exp(-0.5 * (x0_hat.reshape(x0_hat.shape[0], -1).mean(dim=1) - 1.0) ** 2)

    for _ in range(steps):
        losses = ractd_loss(student, teacher, reward_fn, _mixture(128, g), None, alpha=1.0, beta=1.0,
                            sigma_r=sigma_r, sigmas=sigmas, max_teacher_steps=4, generator=g)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    x_T = SIGMA_MAX * torch.randn(4000, 1, 1, generator=g)
    x, nfe = ctm_sample(student, x_T, student_sigmas(1))
    assert nfe == 1
    return x.flatten()


def test_toy_reward_moves_the_one_step_student_towards_the_rewarded_mode(toy_teacher):
    """The larger sigma, the further the one-step samples move towards the rewarded +1 mode; a strong
    reward puts (nearly) all of them on its side. (With the paper's DSM on the jump, a plain CTD
    student sits between the modes, see below, so sigma = 1 only starts the move on this 1-D toy.)"""
    x = {w: _distill(toy_teacher, sigma_r=w) for w in (0.0, 1.0, 10.0)}
    means = [x[w].mean().item() for w in (0.0, 1.0, 10.0)]
    assert means[0] < means[1] < means[2]
    assert (x[1.0] > 0).float().mean().item() > (x[0.0] > 0).float().mean().item() + 0.05
    assert (x[10.0] > 0).float().mean().item() >= 0.9


def test_toy_plain_ctd_student_with_the_papers_dsm_is_pulled_between_the_modes(toy_teacher):
    """eq. 7 regresses the jump G(x_t, t, 0) onto x0, whose minimiser at large t is the posterior
    mean: on two equally likely modes at +-1 a plain CTD student ends up between them. The reward
    term is what moves it onto a mode (the test above)."""
    x = _distill(toy_teacher, sigma_r=0.0)
    assert (x.abs() < 0.5).float().mean().item() >= 0.5


def test_pair_loss_vanishes_on_the_teachers_own_endpoints_and_not_elsewhere():
    """d(G(x_T, T, 0), Solver(x_T, T, 0)) is 0 for the exact flow map and grows when the jump is off it."""
    from ractd_cli.diffusion import pair_loss

    g = torch.Generator().manual_seed(0)
    x_T = SIGMA_MAX * torch.randn(512, 4, 2, generator=g)
    exact = GaussianFlowMap()
    target = exact(x_T, SIGMA_MAX, 0.0)
    assert pair_loss(exact, x_T, None, target, T=SIGMA_MAX).abs().max().item() < 1e-6
    assert pair_loss(GaussianFlowMap(power=0.6), x_T, None, target, T=SIGMA_MAX).mean().item() > 1e-3


def test_toy_pair_regression_puts_the_one_step_student_on_the_modes(toy_teacher):
    """Regressing the one-step jump onto the teacher's Heun endpoints from the same x_T (--ode-pairs)
    moves the student off the posterior mean, where eq. 7 holds it, onto the teacher's two modes."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    x_T = SIGMA_MAX * torch.randn(512, 1, 1, generator=g)
    target, _ = heun_sample(toy_teacher, x_T, teacher_sigmas(80))
    student = student_from_teacher(toy_teacher)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    sigmas = teacher_sigmas(18)
    for _ in range(300):
        idx = torch.randint(0, 512, (128,), generator=g)
        out = ractd_loss(student, toy_teacher, None, _mixture(128, g), None, alpha=0.0, beta=0.0, sigma_r=0.0, sigmas=sigmas,
                         generator=g, pairs=(x_T[idx], None, target[idx]), gamma=1.0)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    x, _ = ctm_sample(student, SIGMA_MAX * torch.randn(2000, 1, 1, generator=g), student_sigmas(1))
    x = x.flatten()
    assert (x.abs() < 0.5).float().mean().item() < 0.2  # not between the modes
    assert 0.3 < (x > 0).float().mean().item() < 0.7  # both modes kept

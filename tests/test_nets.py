"""Networks: shapes, student/teacher weight loading, configs and factories."""

from __future__ import annotations

import json

import pytest
import torch

from ractd_cli.nets import (
    NET_KINDS,
    UNET_PRESETS,
    ConditionalUnet1D,
    InverseDynamics,
    MLPDenoiserNet,
    RewardMLP,
    SinusoidalPosEmb,
    build_net,
    init_student_from_teacher,
    make_denoiser_net,
)


def test_sinusoidal_pos_emb():
    emb = SinusoidalPosEmb(16)
    out = emb(torch.tensor([0.0, 1.0, -2.5]))
    assert out.shape == (3, 16)
    assert torch.equal(out[0, :8], torch.zeros(8)) and torch.equal(out[0, 8:], torch.ones(8))
    assert out[1, 0].item() == pytest.approx(torch.sin(torch.tensor(1.0)).item())  # highest frequency is 1
    assert len(emb.state_dict()) == 0  # frequencies are not checkpointed
    with pytest.raises(ValueError):
        SinusoidalPosEmb(7)


@pytest.mark.parametrize("horizon", [8, 16, 128, 7, 1])
def test_unet_shapes(horizon):
    torch.manual_seed(0)
    net = make_denoiser_net("quick", input_dim=6, global_cond_dim=11)
    x = torch.randn(2, horizon, 6)
    out = net(x, torch.randn(2), torch.randn(2, 11))
    assert out.shape == x.shape and torch.isfinite(out).all()
    # scalar c_noise broadcasts; cond may arrive unflattened (B, h, obs)
    assert net(x, 0.3, torch.randn(2, 1, 11)).shape == x.shape


def test_unet_without_cond_and_input_checks():
    net = ConditionalUnet1D(4, 0, down_dims=(16, 32, 64), embed_dim=16)
    x = torch.randn(3, 16, 4)
    assert net(x, torch.zeros(3)).shape == x.shape
    with pytest.raises(ValueError):
        net(x, torch.zeros(3), torch.randn(3, 2))  # cond for an unconditional net
    with pytest.raises(ValueError):
        net(torch.randn(3, 16, 5), torch.zeros(3))  # wrong feature dim
    with pytest.raises(ValueError):
        net(x, torch.zeros(3), None, torch.zeros(3))  # s given to a teacher


def test_student_unet_loads_teacher_weights_and_matches_it():
    torch.manual_seed(0)
    teacher = ConditionalUnet1D(3, 5, down_dims=(16, 32), embed_dim=16)
    student = ConditionalUnet1D(**{**teacher.config, "student": True})
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith("s_embed.") for k in result.missing_keys)
    init_student_from_teacher(student, teacher)
    x, cond, cn = torch.randn(4, 16, 3), torch.randn(4, 5), torch.randn(4)
    for c_noise_s in (torch.randn(4), torch.full((4,), -2.88)):
        assert torch.allclose(student(x, cn, cond, c_noise_s), teacher(x, cn, cond), atol=1e-6)
    with pytest.raises(ValueError):
        student(x, cn, cond)  # a student needs s
    # the zero-initialised s-projection still learns
    student(x, cn, cond, torch.randn(4)).pow(2).sum().backward()
    assert student.s_embed[-1].weight.grad.abs().sum() > 0


def test_init_student_from_teacher_checks():
    teacher = ConditionalUnet1D(3, 5, down_dims=(16, 32), embed_dim=16)
    with pytest.raises(ValueError):
        init_student_from_teacher(ConditionalUnet1D(3, 5, down_dims=(16, 32), embed_dim=16), teacher)
    with pytest.raises(ValueError):  # a teacher with extra keys (three levels) does not fit
        init_student_from_teacher(
            ConditionalUnet1D(3, 5, down_dims=(16, 32), embed_dim=16, student=True),
            ConditionalUnet1D(3, 5, down_dims=(16, 32, 32), embed_dim=16),
        )


def test_mlp_denoiser():
    torch.manual_seed(0)
    net = MLPDenoiserNet(16 * 3, global_cond_dim=4, hidden=(32, 32), embed_dim=8)
    x = torch.randn(5, 16, 3)
    assert net(x, torch.randn(5), torch.randn(5, 4)).shape == x.shape
    student = MLPDenoiserNet(**{**net.config, "student": True})
    init_student_from_teacher(student, net)
    cn, cond = torch.randn(5), torch.randn(5, 4)
    assert torch.allclose(student(x, cn, cond, torch.randn(5)), net(x, cn, cond), atol=1e-6)
    mlp = make_denoiser_net("mlp", 3, 4, horizon=16)
    assert isinstance(mlp, MLPDenoiserNet) and mlp(x, cn, cond).shape == x.shape
    with pytest.raises(ValueError):
        make_denoiser_net("mlp", 3, 4)


def test_reward_and_inverse_dynamics():
    torch.manual_seed(0)
    reward = RewardMLP(17 + 6)
    assert reward(torch.randn(9, 23)).shape == (9,)
    assert [m.out_features for m in reward.mlp if isinstance(m, torch.nn.Linear)] == [32, 64, 128, 256, 1]
    assert any(isinstance(m, torch.nn.Mish) for m in reward.mlp)
    inv = InverseDynamics(4, 2)
    a = inv(10 * torch.randn(9, 4), 10 * torch.randn(9, 4))
    assert a.shape == (9, 2) and bool((a.abs() <= 1).all())
    assert inv(torch.randn(3, 127, 4), torch.randn(3, 127, 4)).shape == (3, 127, 2)  # a whole plan


@pytest.mark.parametrize(
    "kind,config,inputs",
    [
        ("unet1d", dict(input_dim=3, global_cond_dim=5, down_dims=(16, 32), embed_dim=16, student=True),
         lambda: (torch.randn(2, 8, 3), torch.randn(2), torch.randn(2, 5), torch.randn(2))),
        ("mlp_denoiser", dict(in_features=6, hidden=(8,), embed_dim=4),
         lambda: (torch.randn(2, 3, 2), torch.randn(2))),
        ("reward_mlp", dict(in_dim=5, widths=(8, 8)), lambda: (torch.randn(2, 5),)),
        ("inverse_dynamics", dict(obs_dim=4, act_dim=2, hidden=(8,)), lambda: (torch.randn(2, 4), torch.randn(2, 4))),
    ],
)
def test_config_round_trip(kind, config, inputs):
    torch.manual_seed(0)
    net = NET_KINDS[kind](**config)
    assert net.kind == kind
    stored = json.loads(json.dumps(net.config))  # what the artifact header holds
    assert stored == net.config
    rebuilt = build_net(kind, stored)
    rebuilt.load_state_dict(net.state_dict())
    args = inputs()
    assert torch.equal(rebuilt(*args), net(*args))


def test_build_net_unknown_kind_suggests():
    with pytest.raises(ValueError, match="did you mean 'unet1d'"):
        build_net("unet1", {})
    with pytest.raises(ValueError, match="did you mean 'maze2d-umaze'"):
        make_denoiser_net("maze2d-umaz", 4, 8)


def test_presets():
    assert UNET_PRESETS["mujoco"] == dict(down_dims=(512, 1024, 2048), embed_dim=128)
    # paper Table 6, one U-Net per maze (step embedding 256)
    assert UNET_PRESETS["maze2d-umaze"] == dict(down_dims=(256, 512, 1024), embed_dim=256)
    assert UNET_PRESETS["maze2d-medium"] == dict(down_dims=(512, 1024, 2048), embed_dim=256)
    assert UNET_PRESETS["maze2d-large"] == dict(down_dims=(256, 512, 1024, 2048), embed_dim=256)
    assert set(UNET_PRESETS) == {"quick", "small", "mujoco", "maze2d-umaze", "maze2d-medium", "maze2d-large"}
    net = make_denoiser_net("small", input_dim=4, global_cond_dim=6, student=True)
    assert net.student
    assert net(torch.randn(1, 128, 4), torch.zeros(1), torch.randn(1, 6), torch.zeros(1)).shape == (1, 128, 4)

"""Networks: the raw denoiser F (teacher and student), the reward model and inverse dynamics.

Everything here is a plain ``nn.Module`` whose constructor takes only JSON-serialisable
keyword arguments; each instance keeps them in ``self.config`` and names its family in the
class attribute ``kind``, so the artifact store can rebuild it with :func:`build_net`.

Denoiser networks share one forward signature, ``net(x, c_noise_t, cond=None, c_noise_s=None)``:

* ``x``          (B, T, D) time-major trajectory window (already scaled by c_in), any T >= 1;
* ``c_noise_t``  (B,) (or a scalar) noise conditioning of the current time, c_noise(t) = log(t)/4;
* ``cond``       (B, global_cond_dim) (any shape flattening to that) or None;
* ``c_noise_s``  (B,) noise conditioning of the CTM target time s; only for ``student=True``.

A *student* network (Kim et al. 2023, CTM) embeds s as well as t.  Its s-embedding is added
to the t-embedding and its final projection is zero-initialised, so a student loaded with the
teacher's weights computes exactly the teacher's function (see :func:`init_student_from_teacher`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import unknown_choice

__all__ = [
    "NOISE_EMBED_SCALE",
    "SinusoidalPosEmb",
    "ConditionalUnet1D",
    "MLPDenoiserNet",
    "RewardMLP",
    "InverseDynamics",
    "UNET_PRESETS",
    "DENOISER_PRESETS",
    "make_denoiser_net",
    "init_student_from_teacher",
    "build_net",
    "NET_KINDS",
]

NOISE_EMBED_SCALE = 1000.0
"""c_noise = log(sigma)/4 lies in about [-1.6, 1.1] on the EDM range; it is multiplied by 1000
before the sinusoidal embedding so that the embedding's frequencies (1 .. 1/10000, as for DDPM
step indices 0..1000) resolve neighbouring noise levels.  The CTM reference code rescales its
times the same way (1000 * 0.25 * log sigma)."""


def _embed_times(embed: nn.Module, v: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``embed`` of a (B,) time, or of a scalar one computed once and broadcast: (B, embed_dim).
    (A frozen graph with a constant time then holds its embedding as a constant.)"""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    if v.ndim == 0:
        return embed(v.reshape(1)).expand(batch, -1)
    return embed(v.reshape(batch))


def _tuple_list(v: Sequence[int]) -> list[int]:
    return [int(x) for x in v]


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a scalar: (B,) -> (B, dim).

    emb = [sin(scale * x * f_k), cos(scale * x * f_k)], f_k = max_period^(-k/(dim/2 - 1)).
    """

    def __init__(self, dim: int, scale: float = 1.0, max_period: float = 10000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb needs an even dim >= 2, got {dim}")
        self.dim, self.scale = dim, float(scale)
        half = dim // 2
        exponent = torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * exponent), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = self.scale * x.reshape(-1, 1).float() * self.freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1).to(x.dtype)


def _noise_embedding(embed_dim: int, zero_out: bool = False, act: type[nn.Module] = nn.Mish) -> nn.Sequential:
    """c_noise (B,) -> (B, embed_dim): sinusoidal features then a 2-layer MLP."""
    mlp = nn.Sequential(
        SinusoidalPosEmb(embed_dim, scale=NOISE_EMBED_SCALE),
        nn.Linear(embed_dim, 4 * embed_dim),
        act(),
        nn.Linear(4 * embed_dim, embed_dim),
    )
    if zero_out:
        nn.init.zeros_(mlp[-1].weight)
        nn.init.zeros_(mlp[-1].bias)
    return mlp


class _DenoiserBase(nn.Module):
    """Shared plumbing of denoiser nets: the t (and student s) embedding and cond checks."""

    kind = ""
    STUDENT_ONLY_PREFIXES = ("s_embed.",)
    """State-dict prefixes that only a student has (absent from a teacher checkpoint)."""

    def _init_embeddings(self, embed_dim: int, student: bool, act: type[nn.Module] = nn.Mish) -> None:
        self.student = bool(student)
        self.t_embed = _noise_embedding(embed_dim, act=act)
        # CTM: the student embeds s too.  Added to the t-embedding with a zero-initialised final
        # projection, so at initialisation a student behaves exactly like the teacher.
        self.s_embed = _noise_embedding(embed_dim, zero_out=True, act=act) if self.student else None

    def _embed(self, c_noise_t, c_noise_s, batch: int, like: torch.Tensor) -> torch.Tensor:
        emb = _embed_times(self.t_embed, c_noise_t, batch, like)
        if self.student:
            if c_noise_s is None:
                raise ValueError("a student network needs c_noise_s (the CTM target time s)")
            emb = emb + _embed_times(self.s_embed, c_noise_s, batch, like)
        elif c_noise_s is not None:
            raise ValueError("c_noise_s given to a teacher network (built with student=False)")
        return emb

    def _global_cond(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.global_cond_dim == 0:
            if cond is not None and cond.numel() > 0:
                raise ValueError("cond given but the network was built with global_cond_dim=0")
            return None
        if cond is None:
            raise ValueError(f"network expects cond of size {self.global_cond_dim}, got None")
        cond = cond.reshape(batch, -1)
        if cond.shape[1] != self.global_cond_dim:
            raise ValueError(f"cond has {cond.shape[1]} features, network expects {self.global_cond_dim}")
        return cond


# --------------------------------------------------------------------------------------------
# Conditional 1-D U-Net (Diffusion Policy, Chi et al. 2023; Diffuser's temporal U-Net)
# --------------------------------------------------------------------------------------------


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish.  (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with FiLM in between: h = gamma(c) * conv1(x) + beta(c); out = conv2(h) + res(x).

    x (B, C_in, T), c (B, cond_dim) -> (B, C_out, T).
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.conv1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.conv2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.residual = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(c).unsqueeze(-1).chunk(2, dim=1)
        h = gamma * self.conv1(x) + beta
        return self.conv2(h) + self.residual(x)


class ConditionalUnet1D(_DenoiserBase):
    """Temporal U-Net over a (B, T, D) window, FiLM-conditioned on [noise embedding, global cond].

    Layout (Diffusion Policy style): for each width in ``down_dims`` two conditional residual
    blocks (Conv1d kernel ``kernel_size``, GroupNorm(``n_groups``), Mish) then a stride-2
    down-sampling (not after the last); two middle blocks; the mirrored up path with skip
    connections and transposed-conv up-sampling; a final Conv1dBlock and 1x1 conv back to D.

    Lengths: the path halves T ``len(down_dims) - 1`` times, so T is padded at the end (edge
    replication) to a multiple of m = 2^(len(down_dims)-1) and the output cropped back to T.
    Any T >= 1 works (e.g. 8, 16, 128, or odd T); for T a multiple of m nothing is padded.

    The noise embedding is emb(c_noise_t) [+ emb_s(c_noise_s) for a student]; FiLM sees
    concat(emb, cond) of size ``embed_dim + global_cond_dim``.
    """

    kind = "unet1d"

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int = 0,
        down_dims: Sequence[int] = (64, 128, 256),
        embed_dim: int = 64,
        kernel_size: int = 5,
        n_groups: int = 8,
        student: bool = False,
    ):
        super().__init__()
        down_dims = _tuple_list(down_dims)
        self.config: dict[str, Any] = dict(
            input_dim=int(input_dim),
            global_cond_dim=int(global_cond_dim),
            down_dims=down_dims,
            embed_dim=int(embed_dim),
            kernel_size=int(kernel_size),
            n_groups=int(n_groups),
            student=bool(student),
        )
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd (same-length convolutions)")
        self.input_dim, self.global_cond_dim = int(input_dim), int(global_cond_dim)
        self._init_embeddings(embed_dim, student)
        cond_dim = embed_dim + self.global_cond_dim

        def block(c_in: int, c_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(c_in, c_out, cond_dim, kernel_size, n_groups)

        widths = [self.input_dim] + down_dims
        in_out = list(zip(widths[:-1], widths[1:]))
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(in_out):
            is_last = i == len(in_out) - 1
            self.down.append(nn.ModuleList([
                block(c_in, c_out),
                block(c_out, c_out),
                nn.Conv1d(c_out, c_out, 3, stride=2, padding=1) if not is_last else nn.Identity(),
            ]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(in_out[1:]):
            self.up.append(nn.ModuleList([
                block(2 * c_out, c_in),
                block(c_in, c_in),
                nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], self.input_dim, 1),
        )
        self.length_multiple = 2 ** (len(down_dims) - 1)

    def forward(self, x: torch.Tensor, c_noise_t, cond=None, c_noise_s=None) -> torch.Tensor:
        """x (B, T, D), c_noise_t (B,), cond (B, global_cond_dim) | None, c_noise_s (B,) -> (B, T, D)."""
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected x of shape (B, T, {self.input_dim}), got {tuple(x.shape)}")
        batch, horizon, _ = x.shape
        c = self._embed(c_noise_t, c_noise_s, batch, x)
        g = self._global_cond(cond, batch)
        if g is not None:
            c = torch.cat([c, g.to(c.dtype)], dim=-1)

        h = x.transpose(1, 2)  # (B, D, T): channels = features, length = time
        pad = -horizon % self.length_multiple
        if pad:
            h = F.pad(h, (0, pad), mode="replicate")
        skips = []
        for res1, res2, downsample in self.down:
            h = res2(res1(h, c), c)
            skips.append(h)
            h = downsample(h)
        for res in self.mid:
            h = res(h, c)
        for res1, res2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(res2(res1(h, c), c))
        h = self.final(h)
        return h[..., :horizon].transpose(1, 2)


# --------------------------------------------------------------------------------------------
# Small MLP denoiser (toy problems, tiny tasks, fast tests)
# --------------------------------------------------------------------------------------------


class MLPDenoiserNet(_DenoiserBase):
    """MLP on the flattened window: concat(x.flatten(1), emb, cond) -> SiLU MLP -> x's shape.

    ``in_features`` = T * D, the flattened size of one sample of x (any trailing shape).
    SiLU rather than Mish: same role, several times cheaper on CPU, and this net exists for
    fast toy problems and tiny tasks.
    """

    kind = "mlp_denoiser"

    def __init__(
        self,
        in_features: int,
        global_cond_dim: int = 0,
        hidden: Sequence[int] = (256, 256, 256),
        embed_dim: int = 32,
        student: bool = False,
    ):
        super().__init__()
        hidden = _tuple_list(hidden)
        self.config: dict[str, Any] = dict(
            in_features=int(in_features),
            global_cond_dim=int(global_cond_dim),
            hidden=hidden,
            embed_dim=int(embed_dim),
            student=bool(student),
        )
        self.in_features, self.global_cond_dim = int(in_features), int(global_cond_dim)
        self._init_embeddings(embed_dim, student, act=nn.SiLU)
        layers: list[nn.Module] = []
        width = self.in_features + embed_dim + self.global_cond_dim
        for w in hidden:
            layers += [nn.Linear(width, w), nn.SiLU()]
            width = w
        layers.append(nn.Linear(width, self.in_features))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c_noise_t, cond=None, c_noise_s=None) -> torch.Tensor:
        """x (B, ...) with prod(...) == in_features -> same shape as x."""
        batch = x.shape[0]
        flat = x.reshape(batch, -1)
        if flat.shape[1] != self.in_features:
            raise ValueError(f"x has {flat.shape[1]} features per sample, network expects {self.in_features}")
        parts = [flat, self._embed(c_noise_t, c_noise_s, batch, x)]
        g = self._global_cond(cond, batch)
        if g is not None:
            parts.append(g.to(x.dtype))
        return self.mlp(torch.cat(parts, dim=-1)).reshape(x.shape)


# --------------------------------------------------------------------------------------------
# Reward model and inverse dynamics
# --------------------------------------------------------------------------------------------


def _mish_mlp(in_dim: int, widths: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for w in widths:
        layers += [nn.Linear(width, w), nn.Mish()]
        width = w
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class RewardMLP(nn.Module):
    """R_psi: (B, in_dim) (or anything flattening to it) -> (B,) return-to-go estimate.

    Linear + Mish hidden layers of ``widths`` (RACTD uses e.g. [32, 64, 128, 256]), linear head.
    """

    kind = "reward_mlp"

    def __init__(self, in_dim: int, widths: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        widths = _tuple_list(widths)
        self.config: dict[str, Any] = dict(in_dim=int(in_dim), widths=widths)
        self.in_dim = int(in_dim)
        self.mlp = _mish_mlp(self.in_dim, widths, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.reshape(x.shape[0], -1)).squeeze(-1)


class InverseDynamics(nn.Module):
    """a_t = f(s_t, s_{t+1}) in [-1, 1]: (..., obs_dim), (..., obs_dim) -> (..., act_dim), tanh head."""

    kind = "inverse_dynamics"

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        hidden = _tuple_list(hidden)
        self.config: dict[str, Any] = dict(obs_dim=int(obs_dim), act_dim=int(act_dim), hidden=hidden)
        self.mlp = _mish_mlp(2 * int(obs_dim), hidden, int(act_dim))

    def forward(self, s_t: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mlp(torch.cat([s_t, s_next], dim=-1)))


# --------------------------------------------------------------------------------------------
# Presets and factories
# --------------------------------------------------------------------------------------------

UNET_PRESETS: dict[str, dict[str, Any]] = {
    # Small enough to train on a laptop CPU in minutes; for smoke tests and demos.
    "quick": dict(down_dims=(64, 128, 256), embed_dim=64),
    # For long state plans on a CPU (Maze2d's 128-384 states on ``--preset quick``): the cost of a
    # U-Net grows with the plan length, so the widths are a quarter of ``quick``'s.
    "small": dict(down_dims=(16, 32, 64), embed_dim=32),
    # The RACTD paper's MuJoCo U-Net (Table 7: step embedding 128, kernel 5; Diffusion Policy's
    # default low-dim U-Net), also used for the Kitchen action chunks.
    "mujoco": dict(down_dims=(512, 1024, 2048), embed_dim=128),
    # The RACTD paper's Maze2d U-Nets (Table 6: step embedding 256, kernel 5), one per maze.
    "maze2d-umaze": dict(down_dims=(256, 512, 1024), embed_dim=256),
    "maze2d-medium": dict(down_dims=(512, 1024, 2048), embed_dim=256),
    "maze2d-large": dict(down_dims=(256, 512, 1024, 2048), embed_dim=256),
}

MLP_PRESET: dict[str, Any] = dict(hidden=(256, 256, 256), embed_dim=32)

DENOISER_PRESETS: tuple[str, ...] = (*UNET_PRESETS, "mlp")
"""Every name :func:`make_denoiser_net` builds."""


def make_denoiser_net(
    preset: str,
    input_dim: int,
    global_cond_dim: int = 0,
    student: bool = False,
    *,
    horizon: int | None = None,
) -> nn.Module:
    """A denoiser network by preset name: a key of UNET_PRESETS, or ``"mlp"`` (needs ``horizon``)."""
    if preset == "mlp":
        if horizon is None:
            raise ValueError("preset 'mlp' flattens the window and needs horizon=T")
        return MLPDenoiserNet(horizon * input_dim, global_cond_dim, student=student, **MLP_PRESET)
    if preset not in UNET_PRESETS:
        raise ValueError(unknown_choice("preset", preset, [*UNET_PRESETS, "mlp"]))
    return ConditionalUnet1D(input_dim, global_cond_dim, student=student, **UNET_PRESETS[preset])


def init_student_from_teacher(student_net: nn.Module, teacher_net: nn.Module) -> nn.Module:
    """Copy the teacher's weights into a student network (in place) and check the fit.

    The teacher's state dict is loaded with ``strict=False``; the only keys allowed to be
    missing are the student's s-embedding (``STUDENT_ONLY_PREFIXES``), and none may be
    unexpected.  Because the s-embedding's last layer is zero, the student then computes the
    teacher's function for every s.
    """
    if not getattr(student_net, "student", False):
        raise ValueError("init_student_from_teacher: target network was not built with student=True")
    try:
        result = student_net.load_state_dict(teacher_net.state_dict(), strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(f"teacher weights do not fit the student: {err}") from err
    prefixes = getattr(student_net, "STUDENT_ONLY_PREFIXES", ())
    bad_missing = [k for k in result.missing_keys if not k.startswith(tuple(prefixes))]
    if bad_missing or result.unexpected_keys:
        raise ValueError(
            "teacher weights do not fit the student: "
            f"missing {bad_missing}, unexpected {list(result.unexpected_keys)}"
        )
    return student_net


NET_KINDS: dict[str, type[nn.Module]] = {
    cls.kind: cls for cls in (ConditionalUnet1D, MLPDenoiserNet, RewardMLP, InverseDynamics)
}



def build_net(kind: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its ``kind`` and ``config`` (as stored next to its weights)."""
    if kind not in NET_KINDS:
        raise ValueError(unknown_choice("network kind", kind, NET_KINDS))
    return NET_KINDS[kind](**config)

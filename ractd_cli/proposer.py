"""The Trajectory Diffuser proposer: a small causal transformer that writes a plan token by token.

Huang et al., "Diffusion Models as Optimizers for Efficient Planning in Offline RL": an
autoregressive model proposes a feasible trajectory fast, and the diffusion model only refines
it with a few denoising steps (see :class:`ractd_cli.trajdiffuser_planner.TrajDiffuserPlanner`).

The proposer models the same quantity the teacher diffuses, x (T, D): the action chunk of a
``chunk`` task, the state sequence of a ``states`` task, conditioned on the same normalised cond
vector (layout in :mod:`ractd_cli.planner`). The sequence it reads is

    [cond, x_0, x_1, ..., x_{T-2}]   ->   predictions   [x_0, x_1, ..., x_{T-1}]

so position i sees cond and x_{<i} and predicts x_i. It is deterministic (trained with MSE under
teacher forcing); generation feeds its own predictions back, with a key/value cache so each new
element costs one forward over a single token.

Like the networks of :mod:`ractd_cli.nets`, the constructor takes JSON-serialisable keyword
arguments only, kept in ``self.config``, and :func:`build_proposer` rebuilds it from them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import unknown_choice

__all__ = ["CausalTransformerProposer", "PROPOSER_PRESETS", "PROPOSER_KINDS", "make_proposer", "build_proposer"]

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class _Block(nn.Module):
    """Pre-LayerNorm GPT block: causal multi-head self-attention, then a GELU MLP, both residual."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(approximate="tanh"), nn.Linear(ff_mult * d_model, d_model))

    def forward(self, h: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        """h (B, L, d) -> (B, L, d) and this layer's keys/values (B, heads, L_past + L, d/heads).

        With ``cache`` (the keys/values of the L_past earlier positions) the L new positions
        attend to every cached one and causally among themselves.
        """
        # Functional calls on the modules' parameters: generation runs this once per token and
        # layer, where the per-module call overhead would otherwise dominate a small model.
        B, L, d = h.shape
        x = F.layer_norm(h, (d,), self.ln1.weight, self.ln1.bias, self.ln1.eps)
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        if L == 1:
            mask = None  # one new query attends to everything before it and itself
        else:
            past = k.shape[2] - L
            mask = torch.ones(L, k.shape[2], dtype=torch.bool, device=h.device).tril(diagonal=past)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        a = F.linear(a.transpose(1, 2).reshape(B, L, d), self.proj.weight, self.proj.bias)
        h = h + (F.dropout(a, p, True) if p else a)
        fc1, fc2 = self.mlp[0], self.mlp[2]
        x = F.layer_norm(h, (d,), self.ln2.weight, self.ln2.bias, self.ln2.eps)
        x = F.linear(F.gelu(F.linear(x, fc1.weight, fc1.bias), approximate="tanh"), fc2.weight, fc2.bias)
        return h + (F.dropout(x, p, True) if p else x), (k, v)


class CausalTransformerProposer(nn.Module):
    """Deterministic autoregressive model of a plan x (B, T, D) given cond (B, cond_dim).

    - ``forward(x, cond)`` (teacher forcing): (B, T, D) predictions, row i from cond and x[:, :i].
    - ``generate(cond)``: (B, T, D) plan, each element fed back as the next input.

    Tokens: cond and each x_t are embedded by their own linear layers, plus a learned position
    embedding over the T positions (position 0 is the cond token).
    """

    kind = "causal_transformer"

    def __init__(
        self,
        x_dim: int,
        cond_dim: int,
        horizon: int,
        d_model: int = 128,
        n_layers: int = 3,
        n_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.config: dict[str, Any] = dict(
            x_dim=int(x_dim), cond_dim=int(cond_dim), horizon=int(horizon), d_model=int(d_model),
            n_layers=int(n_layers), n_heads=int(n_heads), ff_mult=int(ff_mult), dropout=float(dropout),
        )
        self.x_dim, self.cond_dim, self.horizon = int(x_dim), int(cond_dim), int(horizon)
        self.cond_in = nn.Linear(max(self.cond_dim, 1), d_model)
        self.x_in = nn.Linear(self.x_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, self.horizon, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, ff_mult, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.x_dim)

    def _cond_token(self, cond: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
        if self.cond_dim == 0 or cond is None:
            cond = like.new_zeros(batch, max(self.cond_dim, 1))
        return self.cond_in(cond.reshape(batch, -1)).unsqueeze(1)  # (B, 1, d)

    def _run(self, tokens: torch.Tensor, start: int, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        h = self.drop(tokens + self.pos[:, start : start + tokens.shape[1]])
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.ln_f(h)), new_cache

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), cond (B, cond_dim) -> next-element predictions (B, T, D) (teacher forcing)."""
        B, T, _ = x.shape
        if T > self.horizon:
            raise ValueError(f"sequence of length {T} exceeds the proposer's horizon {self.horizon}")
        tokens = torch.cat([self._cond_token(cond, B, x), self.x_in(x[:, : T - 1])], dim=1)
        out, _ = self._run(tokens, 0, None)
        return out

    @torch.no_grad()
    def generate(self, cond: torch.Tensor | None, batch: int | None = None) -> torch.Tensor:
        """cond (B, cond_dim) -> a proposed plan (B, T, D), one element per (cached) step."""
        B = batch if cond is None else cond.shape[0]
        like = self.pos if cond is None else cond
        token = self._cond_token(cond, B, like)
        cache: KVCache | None = None
        xs = []
        for t in range(self.horizon):
            out, cache = self._run(token, t, cache)
            x_t = out[:, -1:]
            xs.append(x_t)
            token = self.x_in(x_t)
        return torch.cat(xs, dim=1)


PROPOSER_PRESETS: dict[str, dict[str, Any]] = {
    # Sized by the training preset (ractd_cli.presets.PRESETS). "paper" is the Trajectory Diffuser
    # authors' transformer (policy.py: d_model 256, d_ff 512, 4 heads, 4 layers, dropout 0.1);
    # "quick" and "tiny" are ours, cheaper for a CPU.
    "tiny": dict(d_model=32, n_layers=2, n_heads=2),
    "quick": dict(d_model=128, n_layers=3, n_heads=4),
    "paper": dict(d_model=256, n_layers=4, n_heads=4, ff_mult=2, dropout=0.1),
}

PROPOSER_KINDS: dict[str, type[nn.Module]] = {CausalTransformerProposer.kind: CausalTransformerProposer}



def make_proposer(preset: str, *, x_dim: int, cond_dim: int, horizon: int) -> CausalTransformerProposer:
    """A proposer of a preset size (a key of :data:`PROPOSER_PRESETS`)."""
    if preset not in PROPOSER_PRESETS:
        raise ValueError(unknown_choice("proposer preset", preset, PROPOSER_PRESETS))
    return CausalTransformerProposer(x_dim, cond_dim, horizon, **PROPOSER_PRESETS[preset])


def build_proposer(config: dict[str, Any], kind: str = CausalTransformerProposer.kind) -> nn.Module:
    """Rebuild a proposer from the ``kind`` and ``config`` stored in its artifact."""
    if kind not in PROPOSER_KINDS:
        raise ValueError(unknown_choice("proposer kind", kind, PROPOSER_KINDS))
    return PROPOSER_KINDS[kind](**config)

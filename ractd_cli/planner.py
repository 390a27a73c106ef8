"""From artifacts to actions: rebuild networks, sample plans, turn plans into actions.

Everything here is env-agnostic: the adapter's :class:`~ractd_cli.adapters.TaskSpec` says
whether a plan is an action chunk (closed loop: execute the first action, replan) or a state
sequence (open loop: follow it with the inverse-dynamics model or the adapter's controller).

Conditioning layout (normalised to [-1, 1]):
- ``chunk``:  cond = s_{n-h+1..n} flattened, shape (B, h*obs_dim); x = actions (B, c, act_dim).
- ``states``: cond = [s_n, goal], shape (B, obs_dim+goal_dim);     x = states (B, H, obs_dim).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .adapters import EnvAdapter, TaskSpec
from .artifacts import Artifact, load_artifact
from .diffusion import (
    SAMPLERS,
    CTMPrecond,
    EDMPrecond,
    append_zero,
    ctm_sample,
    karras_sigmas,
    student_sigmas,
)
from .errors import UsageError
from .nets import build_net
from .train.common import normalizers_from

TEACHER_SAMPLERS = ("heun", "euler", "ancestral")
STUDENT_SAMPLERS = ("onestep", "multistep")
DEFAULT_NFE = {"heun": 159, "euler": 15, "ancestral": 15, "onestep": 1, "multistep": 2}


def cond_dim(spec: TaskSpec) -> int:
    return spec.history * spec.obs_dim if spec.planning == "chunk" else spec.obs_dim + spec.goal_dim


def x_shape(spec: TaskSpec) -> tuple[int, int]:
    """(T, D) of one plan."""
    return (spec.horizon, spec.act_dim) if spec.planning == "chunk" else (spec.horizon, spec.obs_dim)


def load_net(art: Artifact, prefix: str = "net") -> nn.Module:
    """Rebuild the network stored in an artifact (config ``<prefix>_kind``/``<prefix>``) with its weights."""
    cfg = art.config
    net = build_net(cfg[f"{prefix}_kind"], cfg[prefix])
    net.load_state_dict(art.group(prefix))
    return net.eval()


def denoiser_from(art: Artifact) -> EDMPrecond:
    return EDMPrecond(load_net(art), sigma_data=art.config["sigma_data"]).eval()


def student_from(art: Artifact) -> CTMPrecond:
    return CTMPrecond(load_net(art), sigma_data=art.config["sigma_data"]).eval()


def sigma_grid(sampler: str, nfe: int, cfg: dict, device: torch.device | None = None) -> torch.Tensor:
    """The sigma grid a sampler walks for a given NFE budget (ends in 0).

    Heun over N bins costs 2N-1 evaluations, so N = (nfe+1)//2; Euler and ancestral cost one per
    step; the student takes k = nfe jumps.
    """
    smin, smax = cfg["sigma_min"], cfg["sigma_max"]
    if sampler == "heun":
        return append_zero(karras_sigmas(max(1, (nfe + 1) // 2), smin, smax, device=device))
    if sampler in ("euler", "ancestral"):
        return append_zero(karras_sigmas(nfe, smin, smax, device=device))
    return student_sigmas(nfe, sigma_min=smin, sigma_max=smax, device=device)


class Planner:
    """Samples normalised plans from a teacher or student artifact with one of the samplers.

    ``plan(cond)``: cond (B, cond_dim) normalised -> x0 (B, T, D) normalised, plus NFE.
    """

    def __init__(self, art: Artifact, spec: TaskSpec, *, sampler: str | None = None, nfe: int | None = None, device: str | torch.device = "cpu", seed: int = 0):
        self.art, self.spec = art, spec
        self.device = torch.device(device)
        is_student = art.kind == "student"
        sampler = sampler or ("onestep" if is_student else "heun")
        allowed = STUDENT_SAMPLERS if is_student else TEACHER_SAMPLERS
        if sampler not in allowed:
            raise UsageError(f"sampler {sampler!r} does not apply to a {art.kind}; use one of {', '.join(allowed)}")
        if sampler == "onestep":
            nfe = 1
        nfe = nfe or DEFAULT_NFE[sampler]
        if nfe < 1:
            raise UsageError(f"--nfe must be at least 1, got {nfe}")
        self.sampler_name, self.nfe_budget = sampler, nfe
        self.model = (student_from(art) if is_student else denoiser_from(art)).to(self.device)
        self.sample_fn: Callable = ctm_sample if is_student else SAMPLERS[sampler]
        self.sigmas = sigma_grid(sampler, nfe, art.config, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.norms = normalizers_from(art.tensors)
        self.T, self.D = x_shape(spec)
        self.nfe_per_plan: int | None = None

    @torch.inference_mode()
    def plan(self, cond: torch.Tensor) -> tuple[torch.Tensor, int]:
        B = cond.shape[0]
        x = torch.randn(B, self.T, self.D, generator=self.generator, device=self.device) * self.sigmas[0]
        x0, self.nfe_per_plan = self.sample_fn(self.model, x, self.sigmas, cond=cond.to(self.device), generator=self.generator)
        return x0, self.nfe_per_plan


class PlannerPolicy:
    """A :class:`~ractd_cli.evaluate.Policy` that plans with a :class:`Planner`.

    ``chunk`` tasks replan every step and execute the first action. ``states`` tasks plan H
    states, execute them open loop with the inverse-dynamics model a_t = f(s_t, plan_{t+1})
    (or ``adapter.controller_action`` when ``follow="controller"``), and replan when the plan
    runs out.
    """

    def __init__(self, planner: Planner, adapter: EnvAdapter, *, inverse: nn.Module | None = None, follow: str = "inverse"):
        self.planner, self.adapter, self.spec = planner, adapter, planner.spec
        self.norm_s = planner.norms["state"]
        self.norm_a = planner.norms.get("action")
        self.goal_norm = planner.norms.get("goal")
        self.inverse = inverse.to(planner.device).eval() if inverse is not None else None
        self.follow = follow
        if self.spec.planning == "states" and follow == "inverse" and inverse is None:
            raise UsageError("this task plans states: it needs an inverse-dynamics model (train-teacher makes one)")
        self.nfe_calls = 0

    def reset(self, n: int) -> None:
        self.history: list[collections.deque] = [collections.deque(maxlen=self.spec.history) for _ in range(n)]
        self.plans: np.ndarray | None = None  # (n, H, obs_dim) normalised, for states planning
        self.t_in_plan = 0

    def _cond(self, states: np.ndarray, goals: np.ndarray | None, rows: np.ndarray) -> torch.Tensor:
        s = self.norm_s.normalize(states[rows])
        if self.spec.planning == "chunk":
            for i, r in enumerate(rows):
                h = self.history[r]
                h.append(s[i])
                while len(h) < h.maxlen:
                    h.appendleft(s[i])
            return torch.as_tensor(np.stack([np.concatenate(self.history[r]) for r in rows]), dtype=torch.float32)
        g = self.goal_norm.normalize(goals[rows]) if self.goal_norm is not None else goals[rows]
        return torch.as_tensor(np.concatenate([s, g], axis=-1), dtype=torch.float32)

    def act(self, states: np.ndarray, goals: np.ndarray | None, active: np.ndarray) -> np.ndarray:
        n = states.shape[0]
        actions = np.zeros((n, self.spec.act_dim), dtype=np.float32)
        rows = np.flatnonzero(active)
        if self.spec.planning == "chunk":
            x0, _ = self.planner.plan(self._cond(states, goals, rows))
            actions[rows] = self.norm_a.unnormalize(x0[:, 0].cpu().numpy())
            return actions
        if self.plans is None or self.t_in_plan >= self.spec.horizon - 1:
            x0, _ = self.planner.plan(self._cond(states, goals, np.arange(n)))
            self.plans = x0.cpu().numpy()
            self.t_in_plan = 0
        target = self.plans[:, self.t_in_plan + 1]
        self.t_in_plan += 1
        if self.follow == "controller":
            return np.stack([self.adapter.controller_action(self.spec.name, states[i], self.norm_s.unnormalize(target[i])) for i in range(n)])
        with torch.inference_mode():
            s = torch.as_tensor(self.norm_s.normalize(states), dtype=torch.float32, device=self.planner.device)
            a = self.inverse(s, torch.as_tensor(target, dtype=torch.float32, device=self.planner.device))
        return self.norm_a.unnormalize(a.cpu().numpy())


@dataclass
class Loaded:
    """A planning artifact with what it needs: its teacher (for students) and inverse dynamics."""

    art: Artifact
    teacher: Artifact
    inverse: nn.Module | None


def load_for_planning(ref: str, spec: TaskSpec) -> Loaded:
    """Resolve ``ref`` (id, path, ``student``/``teacher`` = latest of that kind) for ``spec``."""
    if ref in ("student", "teacher"):
        art = load_artifact("latest", kind=ref, task=spec.name)
    else:
        art = load_artifact(ref, task=spec.name)
        if art.kind not in ("student", "teacher"):
            raise UsageError(f"artifact {art.id} is a {art.kind}; pass a teacher or a student")
    teacher = art if art.kind == "teacher" else load_artifact(art.meta["parents"][0], kind="teacher", task=spec.name)
    inverse = None
    inv_id = teacher.meta.get("inverse_dynamics")
    if inv_id:
        inv = load_artifact(inv_id, kind="inverse-dynamics", task=spec.name)
        inverse = load_net(inv)
    return Loaded(art=art, teacher=teacher, inverse=inverse)

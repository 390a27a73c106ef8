"""``ractd train-teacher``: the EDM diffusion teacher D(x; sigma | cond) on the task's dataset.

For ``states`` (open-loop) tasks the inverse-dynamics model a_t = f(s_t, s_{t+1}) is trained
first, through the same loop, as its own artifact; the teacher records its id.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact
from ..diffusion import (
    DISTANCES,
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    EDMPrecond,
    denoising_distance,
    edm_loss,
    reward_loss,
    training_denoise,
)
from ..errors import UsageError, unknown_choice
from ..layouts import WINDOWS
from ..models import TeacherConfig, normalizer_tensors, prefixed
from ..nets import DENOISER_PRESETS, InverseDynamics, make_denoiser_net
from .common import TrainOptions, check_keep
from .data import TaskData, load_task_data
from .fit import Method, fit, train_method, with_last_weights
from .loop import TrainConfig, TrainResult
from .reward import frozen_reward


class InverseDynamicsMethod(Method):
    """a_t = f(s_t, s_{t+1}) on normalised ``transitions`` (MSE): the teacher's and the Trajectory
    Diffuser's way from a state plan to actions. Saved as its own artifact, without the user's --name
    (that names the teacher)."""

    kind, named = "inverse-dynamics", False

    def __init__(self, spec: TaskSpec, transitions, cfg: TrainConfig, *, dataset: str | None = None, normalizers=None,
                 fingerprint: str | None = None):
        self.model = self.net = InverseDynamics(spec.obs_dim, spec.act_dim)
        self.cfg, self.normalizers = cfg, normalizers
        self.task, self.dataset, self.source, self.fingerprint = spec.name, dataset, transitions, fingerprint
        self.run_extra = {"dataset": dataset}

    def loss(self, model, ema, batch, gen):
        return {"loss": ((model(batch["s"], batch["s_next"]) - batch["a"]) ** 2).mean()}

    def config(self, **more):
        return {"net_kind": self.net.kind, "net": self.net.config, "train": self.cfg.record(), **more}

    def tensors(self, model, ema):
        return {**prefixed(ema.state_dict(), "net"), **normalizer_tensors(self.normalizers)}


def fit_inverse_dynamics(spec: TaskSpec, transitions, opts: TrainOptions, *, name: str, run_extra: dict,
                         fingerprint: str | None = None) -> tuple[InverseDynamics, TrainResult, TrainConfig]:
    """Inverse dynamics (:class:`InverseDynamicsMethod`) through the one training loop, not saved: the
    network, the loop's result and its config (the Trajectory Diffuser keeps it inside its artifact)."""
    opts.seed_init()
    method = InverseDynamicsMethod(spec, transitions, opts.config("inverse-dynamics", spec), fingerprint=fingerprint)
    method.run_name, method.run_extra = name, dict(run_extra)
    return method.net, train_method(method, method.cfg, opts), method.cfg


def train_inverse_dynamics(spec: TaskSpec, data: TaskData, opts: TrainOptions) -> Artifact:
    """Fit inverse dynamics on the task's transitions and save it as its own artifact."""
    opts.seed_init()
    method = InverseDynamicsMethod(spec, data.transitions, opts.config("inverse-dynamics", spec), dataset=data.dataset_id,
                                   normalizers=data.normalizers, fingerprint=data.windows.fingerprint)
    return fit(method, method.cfg, opts)


def train_teacher(
    adapter: EnvAdapter, spec: TaskSpec, opts: TrainOptions, *, distance: str = "huber",
    reward_weight: float = 0.0, reward_ref: str = "latest", plan_stride: int | None = None, net_name: str | None = None,
    windows: str | None = None, evaluator: Callable[[Artifact], dict] | None = None, eval_every: int = 0, eval_label: dict | None = None,
    keep: str = "last", horizon: int | None = None,
) -> list[Artifact]:
    """Train (inverse dynamics and) the teacher; return the artifacts written, teacher last.

    ``distance``: d of the EDM loss (eq. 4), ``huber`` (the paper's pseudo-Huber) or ``l2``.
    ``reward_weight`` w > 0 makes a *reward-aware* teacher (the paper's Table 4 ablation): its loss
    adds w * L_Reward = -w R_psi(D(x_sigma; sigma)) on the same denoised estimates the EDM loss
    regresses, with the frozen reward model ``reward_ref``. The paper does not give its formula;
    this is the teacher-side twin of RACTD's reward term on the student's jumps. w = 0 (default) is
    the paper's unconditioned teacher, unchanged. ``plan_stride`` k > 1 (state plans only): the
    teacher plans every k-th state (``TaskSpec.plan_stride``), recorded in its config and inherited
    by its students; 1 is the paper's; None: the preset's (``Preset.plan_stride``, a task's CPU sizing). ``net_name``: the denoiser network (a key of
    ``ractd_cli.nets.DENOISER_PRESETS``) instead of the preset's, for sizing studies. ``windows``: the
    training windows (``TaskSpec.windows``; None: the task's, ``full`` as RACTD's code), recorded in
    the config and inherited by the students.
    ``evaluator(teacher)`` (every ``eval_every`` steps and at the end) scores an unsaved teacher of the
    current EMA weights (the ones saved); the results become the artifact's ``eval_curve`` (a learning
    curve, to size presets), with ``eval_label`` (sampler, episodes) recorded beside it and joining
    the run's identity. Training is the same with or without evaluation. ``keep="best"`` saves the
    EMA weights of the best-scoring evaluation instead of the last (``selection`` in the artifact).
    """
    if net_name is not None and net_name not in DENOISER_PRESETS:
        raise UsageError(unknown_choice("--net", net_name, DENOISER_PRESETS))
    task_horizon, preset = spec.horizon, opts.preset_for(spec)
    if horizon is None:
        horizon = preset.horizon
    if horizon is not None and horizon != spec.horizon:
        if not spec.layout.open_loop:
            raise UsageError(f"--horizon applies to state-planning tasks; {spec.name} plans action chunks of {spec.horizon}")
        if horizon < 2:
            raise UsageError(f"--horizon must be at least 2 states, got {horizon}")
        spec = dataclasses.replace(spec, horizon=horizon)
    if plan_stride is None:
        plan_stride = preset.plan_stride
    if plan_stride != 1:
        if not spec.layout.open_loop:
            raise UsageError(f"--plan-stride applies to state-planning tasks; {spec.name} plans action chunks")
        if plan_stride < 1 or spec.horizon % plan_stride:
            raise UsageError(f"--plan-stride must be a divisor of the horizon {spec.horizon}"
                             f"{'' if spec.horizon == task_horizon else ' (--horizon)'} of {spec.name}, got {plan_stride}")
        spec = dataclasses.replace(spec, plan_stride=plan_stride)
    if windows is not None and windows != spec.windows:
        if windows not in WINDOWS:
            raise UsageError(unknown_choice("--windows", windows, WINDOWS))
        spec = dataclasses.replace(spec, windows=windows)
    if distance not in DISTANCES:
        raise UsageError(f"unknown --distance {distance!r}; use one of {', '.join(DISTANCES)}")
    check_keep(keep, eval_every if evaluator is not None else 0)
    if not (math.isfinite(reward_weight) and reward_weight >= 0):
        raise UsageError(f"--teacher-reward-weight must be a finite number >= 0, got {reward_weight}")
    data = load_task_data(adapter, spec, opts.dataset)
    cfg = opts.config("teacher", spec)
    reward_art, reward_fn = None, None
    if reward_weight > 0:
        reward_art, reward_fn = frozen_reward(spec, reward_ref, dataset=data.dataset_id, normalizers=data.normalizers,
                                              user="the teacher's data", device=cfg.device)
    written: list[Artifact] = []
    extra = {}
    if spec.layout.open_loop:  # its plans are states: actions come from inverse dynamics
        inv = train_inverse_dynamics(spec, data, opts)
        written.append(inv)
        extra["inverse_dynamics"] = inv.id
    opts.seed_init()
    teacher = TeacherMethod(spec, data, cfg, opts, net_name=net_name, distance=distance, reward_weight=reward_weight,
                            reward=(reward_art, reward_fn), meta=extra, plan_stride=plan_stride)
    written += with_last_weights(fit(teacher, cfg, opts, evaluator=evaluator, eval_every=eval_every, eval_label=eval_label, keep=keep))
    return written


class TeacherMethod(Method):
    """The EDM teacher D(x; sigma | cond) (eq. 4), optionally reward-aware (``reward_weight`` w > 0,
    the paper's Table 4 ablation: + w L_Reward on the same denoised estimates). Saves its EMA weights."""

    kind = "teacher"

    def __init__(self, spec: TaskSpec, data: TaskData, cfg: TrainConfig, opts: TrainOptions, *, net_name: str | None,
                 distance: str, reward_weight: float, reward: tuple[Artifact | None, Callable | None], meta: dict,
                 plan_stride: int = 1):
        T, D = spec.x_shape
        self.net = make_denoiser_net(net_name or opts.net_preset(spec), input_dim=D, global_cond_dim=spec.cond_dim, horizon=T)
        self.model = EDMPrecond(self.net, sigma_data=SIGMA_DATA)
        self.spec, self.data, self.cfg, self.preset = spec, data, cfg, opts.preset
        self.task, self.dataset, self.source, self.fingerprint = spec.name, data.dataset_id, data.diffusion, data.windows.fingerprint
        self.distance, self.reward_weight = distance, reward_weight
        reward_art, self.reward_fn = reward
        self.parents = [reward_art.id] if reward_art is not None else []
        self.meta = meta
        self.typed_config = TeacherConfig(
            sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, planning=spec.planning, horizon=T, plan_stride=plan_stride,
            windows=spec.windows, teacher_reward_weight=reward_weight if reward_art is not None else 0.0,
            reward_id=reward_art.id if reward_art is not None else None, reward_scale=spec.reward_scale)
        # everything its header records identifies its run for --resume (windows, horizon, plan stride, reward), so a
        # run with other options never resumes, overwrites or releases this one's checkpoint
        self.run_extra = {"dataset": data.dataset_id, "net": self.net.config, "distance": distance, **self.typed_config.stored()}

    def loss(self, model, ema, batch, gen):
        if self.reward_fn is None:
            return {"loss": edm_loss(model, batch["x"], batch["cond"], generator=gen, distance=self.distance).mean()}
        sigma, x0_hat = training_denoise(model, batch["x"], batch["cond"], generator=gen)
        l_edm = denoising_distance(x0_hat, batch["x"], sigma, sigma_data=SIGMA_DATA, distance=self.distance).mean()
        l_reward = reward_loss(self.reward_fn, x0_hat, batch["cond"])
        return {"loss": l_edm + self.reward_weight * l_reward.mean(), "edm": l_edm, "reward": l_reward.mean(),
                "reward_abs": l_reward.abs().mean()}

    def config(self, **more) -> dict:
        return {
            "net_kind": self.net.kind,
            "net": self.net.config,
            **self.typed_config.stored(),
            "distance": self.distance,
            "train": self.cfg.record(),
            "preset": self.preset,
            **more,
        }

    def tensors(self, model, ema) -> dict:
        return {**prefixed(ema.net.state_dict(), "net"), **normalizer_tensors(self.data.normalizers)}

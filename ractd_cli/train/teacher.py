"""``ractd train-teacher``: the EDM diffusion teacher D(x; sigma | cond) on the task's dataset.

For ``states`` (open-loop) tasks the inverse-dynamics model a_t = f(s_t, s_{t+1}) is trained
first, through the same loop, as its own artifact; the teacher records its id.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact, save_artifact
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
from ..models import normalizer_tensors, prefixed
from ..nets import DENOISER_PRESETS, InverseDynamics, make_denoiser_net
from .common import BestWeights, TrainOptions, check_keep
from .data import TaskData, load_task_data
from .loop import TrainConfig, TrainResult, saved, train
from .reward import frozen_reward


def fit_inverse_dynamics(spec: TaskSpec, transitions, opts: TrainOptions, *, name: str, run_extra: dict,
                         fingerprint: str | None = None) -> tuple[InverseDynamics, TrainResult, TrainConfig]:
    """Fit a_t = f(s_t, s_{t+1}) on normalised ``transitions`` (MSE) through the one training loop:
    the network, the loop's result and its config. The teacher's and the Trajectory Diffuser's."""
    opts.seed_init()
    net = InverseDynamics(spec.obs_dim, spec.act_dim)

    def loss_fn(model, ema, batch, gen):
        return {"loss": ((model(batch["s"], batch["s_next"]) - batch["a"]) ** 2).mean()}

    cfg = opts.config("inverse-dynamics", spec)
    res = train(net, loss_fn, transitions, cfg, name=name, run_extra=run_extra, resume=opts.resume, show_progress=opts.show_progress,
                fingerprint=fingerprint)
    return net, res, cfg


def train_inverse_dynamics(spec: TaskSpec, data: TaskData, opts: TrainOptions) -> Artifact:
    """Fit inverse dynamics on the task's transitions and save it as its own artifact."""
    net, res, cfg = fit_inverse_dynamics(spec, data.transitions, opts, name=f"inverse-dynamics-{spec.name}",
                                         run_extra={"dataset": data.dataset_id}, fingerprint=data.windows.fingerprint)
    return saved(save_artifact(
        {**prefixed(res.ema.state_dict(), "net"), **normalizer_tensors(data.normalizers)},
        kind="inverse-dynamics",
        task=spec.name,
        dataset=data.dataset_id,
        config={"net_kind": net.kind, "net": net.config, "train": cfg.record()},
        losses=res.losses,
        loss_curve=res.loss_curve,
        speed=res.speed,
        runs=[res.run],
        data_fingerprint=data.windows.fingerprint,
    ), res)


def train_teacher(
    adapter: EnvAdapter, spec: TaskSpec, opts: TrainOptions, *, distance: str = "huber",
    reward_weight: float = 0.0, reward_ref: str = "latest", plan_stride: int | None = None, net_name: str | None = None,
    windows: str | None = None, evaluator: Callable[[Artifact], dict] | None = None, eval_every: int = 0, eval_label: dict | None = None,
    keep: str = "last",
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
    if plan_stride is None:
        plan_stride = opts.preset_for(spec).plan_stride
    if plan_stride != 1:
        if not spec.layout.open_loop:
            raise UsageError(f"--plan-stride applies to state-planning tasks; {spec.name} plans action chunks")
        if plan_stride < 1 or spec.horizon % plan_stride:
            raise UsageError(f"--plan-stride must be a divisor of {spec.name}'s horizon {spec.horizon}, got {plan_stride}")
        spec = dataclasses.replace(spec, plan_stride=plan_stride)
    if windows is not None and windows != spec.windows:
        if windows not in WINDOWS:
            raise UsageError(unknown_choice("--windows", windows, WINDOWS))
        if spec.layout.full_windows:
            raise UsageError(f"{spec.name} plans from a window's first to its last state: it trains on full windows only")
        spec = dataclasses.replace(spec, windows=windows)
    if distance not in DISTANCES:
        raise UsageError(f"unknown --distance {distance!r}; use one of {', '.join(DISTANCES)}")
    check_keep(keep, eval_every if evaluator is not None else 0)
    best = BestWeights() if keep == "best" else None
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
    T, D = spec.x_shape
    opts.seed_init()
    net = make_denoiser_net(net_name or opts.net_preset(spec), input_dim=D, global_cond_dim=spec.cond_dim, horizon=T)
    denoiser = EDMPrecond(net, sigma_data=SIGMA_DATA)

    def loss_fn(model, ema, batch, gen):
        if reward_fn is None:
            return {"loss": edm_loss(model, batch["x"], batch["cond"], generator=gen, distance=distance).mean()}
        sigma, x0_hat = training_denoise(model, batch["x"], batch["cond"], generator=gen)
        l_edm = denoising_distance(x0_hat, batch["x"], sigma, sigma_data=SIGMA_DATA, distance=distance).mean()
        l_reward = reward_loss(reward_fn, x0_hat, batch["cond"])
        return {"loss": l_edm + reward_weight * l_reward.mean(), "edm": l_edm, "reward": l_reward.mean(),
                "reward_abs": l_reward.abs().mean()}

    # the teacher's deviations from the paper's, recorded only when taken (so default ids do not change)
    variant = {**({"reward_weight": reward_weight, "reward_id": reward_art.id} if reward_art is not None else {}),
               **({"plan_stride": plan_stride} if plan_stride != 1 else {})}
    eval_cfg = {"every": eval_every, **(eval_label or {})} if evaluator is not None and eval_every else None
    parents = {"parents": [reward_art.id]} if reward_art is not None else {}

    def config(**more) -> dict:
        return {
            "net_kind": net.kind,
            "net": net.config,
            "sigma_data": SIGMA_DATA,
            "sigma_min": SIGMA_MIN,
            "sigma_max": SIGMA_MAX,
            "planning": spec.planning,
            "horizon": T,
            "windows": spec.windows,
            "distance": distance,
            "train": cfg.record(),
            "preset": opts.preset,
            **variant,
            **more,
        }

    def tensors_of(ema: EDMPrecond) -> dict:
        return {**prefixed(ema.net.state_dict(), "net"), **normalizer_tensors(data.normalizers)}

    def evaluate(model, ema) -> dict:
        meta = {"id": "unsaved", "kind": "teacher", "task": spec.name, "dataset": data.dataset_id, "config": config(), **parents, **extra}
        tensors = tensors_of(ema)
        result = evaluator(Artifact(path=Path(), meta=meta, tensors=tensors))
        if best is not None:
            best.offer(result, tensors)
        return result

    res = train(
        denoiser,
        loss_fn,
        data.diffusion,
        cfg,
        name=f"teacher-{spec.name}",
        run_extra={"dataset": data.dataset_id, "net": net.config, "distance": distance, **variant, **({"eval": eval_cfg} if eval_cfg else {})},
        resume=opts.resume,
        show_progress=opts.show_progress,
        evaluate=evaluate if eval_cfg else None,
        eval_every=eval_every,
        fingerprint=data.windows.fingerprint,
    )
    curve = {"eval": eval_cfg, "eval_curve": res.curve} if eval_cfg else {}
    tensors = tensors_of(res.ema)
    if best is not None:
        tensors, selection = best.choose(res.curve, res.resumed_from)
        curve["selection"] = selection
    written.append(
        saved(save_artifact(
            tensors,
            kind="teacher",
            task=spec.name,
            dataset=data.dataset_id,
            config=config(**curve),
            losses=res.losses,
            loss_curve=res.loss_curve,
            speed=res.speed,
            runs=[res.run],
            data_fingerprint=data.windows.fingerprint,
            **parents,
            **extra,
            **opts.named(),
        ), res)
    )
    return written

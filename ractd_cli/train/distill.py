"""``ractd distill``: the one-step RACTD student, L = alpha L_CTM + beta L_DSM + sigma L_Reward (eq. 9).

The student G(x_t, t, s) is initialised from the teacher's weights (its new s-embedding starts
at zero, so at step 0 it equals a DDIM step of the teacher). The CTM target is the student
itself under a stop-gradient (eq. 5-6). The reward model is frozen; its gradient flows into the
student through the one-step jumps x0_hat = G(x_t, t, 0) that L_DSM also regresses (eq. 7-8; see
``ractd_cli.diffusion.ctm.ractd_loss``). The saved weights are the student's own at the last step
(``weights="raw"``, as RACTD's code samples ``self.model``), or the training loop's EMA of them
(``weights="ema"``, an option).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import nn

from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact, load_artifact
from ..diffusion import DISTANCES, MAX_TEACHER_STEPS, NUM_BINS, STUDENT_SIGMA_MIN, heun_sample, ractd_loss, student_from_teacher, teacher_sigmas
from ..errors import RactdError, UsageError
from ..models import DiffusionConfig, StudentConfig, denoiser_from, normalizers_from, prefixed, spec_for
from ..ui import progress
from .common import TrainOptions, check_keep, stale
from .fit import Method, fit
from .reward import frozen_reward

SAVED_WEIGHTS = ("raw", "ema")
"""What ``distill`` saves: the student's weights at the last step (``raw``, as RACTD's code) or the
training loop's EMA of them (``ema``)."""


def loss_terms(losses: dict[str, float], alpha: float, beta: float, sigma_r: float) -> dict[str, float]:
    """The three weighted terms' mean magnitudes over the last stretch of training:
    alpha L_CTM, beta L_DSM and sigma |L_Reward| (the paper keeps them within one order of magnitude)."""
    return {"ctm": alpha * losses.get("ctm", 0.0), "dsm": beta * losses.get("dsm", 0.0),
            "reward": sigma_r * losses.get("reward_abs", 0.0)}


def distill_student(
    adapter: EnvAdapter,
    spec: TaskSpec,
    opts: TrainOptions,
    *,
    teacher_ref: str = "latest",
    reward_ref: str = "latest",
    alpha: float | None = None,
    beta: float | None = None,
    reward_weight: float | None = None,
    distance: str = "huber",
    weights: str = "raw",
    evaluator: Callable[[Artifact], dict] | None = None,
    eval_every: int = 0,
    eval_label: dict | None = None,
    keep: str = "last",
    teacher_steps: int = MAX_TEACHER_STEPS,
    n_pairs: int = 0,
    pair_weight: float = 1.0,
) -> Artifact:
    """Distill a student (see the module docstring); the saved artifact.

    ``teacher_steps``: the most Heun steps of the teacher from t to u behind each CTM target (the
    step count drawn uniformly in [1, teacher_steps]; RACTD's code: ``ode_steps_max: 1``).
    ``n_pairs`` > 0 (not in RACTD): also regress the one-step jump onto ``n_pairs`` plans of the
    teacher solved from the same x_T before training (:func:`teacher_pairs`), weighted ``pair_weight``.

    ``evaluator(student)`` (every ``eval_every`` steps and at the end) scores an unsaved student
    artifact of the current weights (the ones ``weights`` would save); the results become the
    artifact's ``eval_curve`` (paper Figure 4). ``eval_label`` (e.g. the episode count) is recorded
    with it and joins the run's identity. Training is the same with or without evaluation.
    ``keep="best"`` saves the weights of the best-scoring evaluation instead of the last
    (:class:`~ractd_cli.train.common.BestWeights`), recorded as the artifact's ``selection``.
    """
    from .data import load_task_data

    for name, v in (("--ctm-weight", alpha), ("--dsm-weight", beta), ("--reward-weight", reward_weight)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, got {v}")
    if distance not in DISTANCES:
        raise UsageError(f"unknown --distance {distance!r}; use one of {', '.join(DISTANCES)}")
    if weights not in SAVED_WEIGHTS:
        raise UsageError(f"unknown --weights {weights!r}; use one of {', '.join(SAVED_WEIGHTS)}")
    check_keep(keep, eval_every if evaluator is not None else 0)
    if n_pairs < 0 or not (math.isfinite(pair_weight) and pair_weight >= 0):
        raise UsageError(f"--ode-pairs must be >= 0 and --pair-weight a finite number >= 0, got {n_pairs} and {pair_weight}")
    if not 1 <= teacher_steps <= NUM_BINS:
        raise UsageError(f"--teacher-steps must be between 1 and {NUM_BINS} (the grid's bins), got {teacher_steps}")
    d_alpha, d_beta, d_sigma = spec.loss_weights
    alpha = d_alpha if alpha is None else alpha
    beta = d_beta if beta is None else beta
    sigma_r = d_sigma if reward_weight is None else reward_weight
    teacher_art = load_artifact(teacher_ref, kind="teacher", task=spec.name)
    spec = spec_for(teacher_art, spec)  # the student plans as its teacher does (its plan stride)
    dataset = teacher_art.meta.get("dataset")
    # The student lives in its teacher's normalised space (it ships the teacher's normalisers), and
    # R_psi reads plans in the space of the data it was fitted on: all three must be one dataset.
    if opts.dataset and opts.dataset != dataset:
        raise UsageError(f"teacher {teacher_art.id} was trained on {dataset}, not {opts.dataset}; the student is distilled "
                         f"on its teacher's data: drop --dataset, or train a teacher on {opts.dataset} first")
    # The data are normalised with the teacher's own normalisers: the student trains in the space it
    # ships (the teacher's) by construction. R_psi must read plans in that same space.
    teacher_norms = normalizers_from(teacher_art.tensors)
    cfg = opts.config("student", spec)
    device = torch.device(cfg.device)
    data = load_task_data(adapter, spec, dataset, normalizers=teacher_norms)
    fingerprint = data.windows.fingerprint
    if stale(teacher_art, fingerprint):
        raise RactdError(f"teacher {teacher_art.id} was trained on an earlier version of {dataset} (it was fetched again since); "
                         f"run `ractd train-teacher --env {spec.name}` again")
    reward_art, reward_fn = None, None
    if sigma_r > 0:
        reward_art, reward_fn = frozen_reward(spec, reward_ref, dataset=dataset, normalizers=teacher_norms,
                                              user=f"teacher {teacher_art.id}", device=device, fingerprint=fingerprint)
    teacher = denoiser_from(teacher_art)
    teacher.requires_grad_(False)
    opts.seed_init()
    student = student_from_teacher(teacher)
    teacher.to(device)
    # The student's 80-bin CTM grid, sigma in [0.02, 80] (paper App. B.1; RACTD's code).
    noise = DiffusionConfig.of(teacher_art)
    sigmas = teacher_sigmas(NUM_BINS, STUDENT_SIGMA_MIN, noise.sigma_max, device=device)

    pairs = teacher_pairs(teacher, data.diffusion, n_pairs, sigma_max=noise.sigma_max,
                          sigma_min=noise.sigma_min, seed=cfg.seed, device=device,
                          show_progress=opts.show_progress) if n_pairs else None
    method = StudentMethod(spec, teacher_art, teacher, student, data, cfg, opts, reward=(reward_art, reward_fn), sigmas=sigmas,
                           alpha=alpha, beta=beta, sigma_r=sigma_r, distance=distance, weights=weights, teacher_steps=teacher_steps,
                           pairs=pairs, pair_weight=pair_weight)
    return fit(method, cfg, opts, evaluator=evaluator, eval_every=eval_every, eval_label=eval_label, keep=keep)


class StudentMethod(Method):
    """The CTM student G(x_t, t, s) of a teacher, trained on L = alpha L_CTM + beta L_DSM + sigma L_Reward
    (eq. 9; :func:`~ractd_cli.diffusion.ctm.ractd_loss`). It ships its teacher's normalisers."""

    kind = "student"

    def __init__(self, spec: TaskSpec, teacher_art: Artifact, teacher: nn.Module, student: nn.Module, data, cfg, opts: TrainOptions, *,
                 reward: tuple[Artifact | None, Callable | None], sigmas: torch.Tensor, alpha: float, beta: float, sigma_r: float,
                 distance: str, weights: str, teacher_steps: int, pairs: tuple[torch.Tensor, ...] | None = None,
                 pair_weight: float = 1.0):
        self.teacher_art, self.teacher, self.model = teacher_art, teacher, student
        reward_art, self.reward_fn = reward
        self.sigmas, self.alpha, self.beta, self.sigma_r = sigmas, alpha, beta, sigma_r
        self.distance, self.weights, self.teacher_steps = distance, weights, teacher_steps
        self.pairs, self.pair_weight = pairs, pair_weight
        self.ode_pairs = {"n": len(pairs[0]), "weight": pair_weight, "sampler": "heun", "bins": NUM_BINS,
                          "init_noise": "unit", "clamp": True} if pairs is not None else None
        self.cfg, self.preset = cfg, opts.preset
        self.task, self.dataset = spec.name, teacher_art.meta.get("dataset")
        self.source, self.fingerprint = data.diffusion, data.windows.fingerprint
        self.parents = [teacher_art.id] + ([reward_art.id] if reward_art is not None else [])
        self.norm = {k: v for k, v in teacher_art.tensors.items() if k.startswith("norm.")}
        self.typed_config = StudentConfig(**dataclasses.asdict(DiffusionConfig.of(teacher_art)), ctm_weight=alpha, dsm_weight=beta,
                                          reward_weight=sigma_r, eval=None, selection=None, reward_scale=spec.reward_scale,
                                          seed=cfg.seed)
        self.run_extra = {"parents": self.parents, "weights": [alpha, beta, sigma_r], "distance": distance,
                          **({"reward_scale": spec.reward_scale} if "reward_scale" in self.typed_config.stored() else {}),
                          **({"teacher_steps": teacher_steps} if teacher_steps != MAX_TEACHER_STEPS else {}),
                          **({"ode_pairs": self.ode_pairs} if pairs is not None else {})}

    def loss(self, model, ema, batch, gen):  # the CTM target is sg(model), not the EMA
        pairs = None
        if self.pairs is not None:  # a minibatch of the teacher's pairs, drawn by the loop's generator
            idx = torch.randint(0, len(self.pairs[0]), (batch["x"].shape[0],), generator=gen, device=gen.device)
            pairs = tuple(p[idx.to(p.device)] for p in self.pairs)
        out = ractd_loss(
            model, self.teacher, self.reward_fn, batch["x"], batch["cond"],
            alpha=self.alpha, beta=self.beta, sigma_r=self.sigma_r, sigmas=self.sigmas, max_teacher_steps=self.teacher_steps,
            generator=gen, distance=self.distance, pairs=pairs, gamma=self.pair_weight,
        )
        return {"loss": out["total"], **{k: v.mean() for k, v in out.items() if k != "total"},
                "reward_abs": out["reward"].abs().mean()}

    def tensors(self, model: nn.Module, ema: nn.Module) -> dict[str, torch.Tensor]:
        chosen = model if self.weights == "raw" else ema
        return {**prefixed({k: v.detach().cpu() for k, v in chosen.net.state_dict().items()}, "net"), **self.norm}

    def config(self, **more) -> dict:
        t = self.teacher_art.config
        return {
            **self.typed_config.stored(),
            "net_kind": t["net_kind"],
            "net": {**t["net"], "student": True},
            "distance": self.distance,
            "weights": self.weights,
            "ctm_target": "stop-gradient student",
            "dsm_target": "G(x_t, t, 0)",
            "max_teacher_steps": self.teacher_steps,
            **({"ode_pairs": self.ode_pairs} if self.ode_pairs else {}),
            "student_sigma_min": STUDENT_SIGMA_MIN,
            "train": self.cfg.record(),
            "preset": self.preset,
            **more,
        }

    def finish(self, res):
        terms = loss_terms(res.losses, self.alpha, self.beta, self.sigma_r)
        if self.ode_pairs:
            terms["pair"] = self.pair_weight * res.losses.get("pair", 0.0)
        return {"loss_terms": terms}, {}


PAIR_BATCH = 256
"""Plans per batch of the teacher's ODE solves behind ``--ode-pairs``."""


@torch.no_grad()
def teacher_pairs(teacher: nn.Module, source, n: int, *, sigma_max: float, sigma_min: float, seed: int, device,
                  show_progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` teacher plans to regress the one-step jump onto: (x_T (n, T, D), cond (n, C), x_0 (n, T, D)).
    The conditions are those of ``n`` training windows drawn with ``seed``; x_T ~ N(0, I), the authors'
    unit initial noise, as planning draws it; x_0 the teacher's Heun solve over 80 bins with every
    estimate clamped to [-1, 1] (the default sampling). Row i's noise comes from (seed, i) alone, so the
    pairs do not depend on :data:`PAIR_BATCH`."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(source), (n,), generator=gen)
    sigmas = teacher_sigmas(NUM_BINS, sigma_min, sigma_max, device=device)

    def clamped(x, sigma, cond):
        return teacher(x, sigma, cond).clamp(-1.0, 1.0)

    xs, conds, x0s = [], [], []
    with progress("teacher ODE pairs", n, disable=not show_progress) as advance:
        for start in range(0, n, PAIR_BATCH):
            batch = source.gather(rows[start:start + PAIR_BATCH])
            shape = batch["x"].shape[1:]
            x_T = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + start + i))
                               for i in range(batch["x"].shape[0])]).to(device)
            cond = batch["cond"].to(device)
            x0, _ = heun_sample(clamped, x_T, sigmas, cond=cond)
            xs.append(x_T), conds.append(cond), x0s.append(x0.clamp(-1.0, 1.0))
            advance(x_T.shape[0])
    return torch.cat(xs), torch.cat(conds), torch.cat(x0s)

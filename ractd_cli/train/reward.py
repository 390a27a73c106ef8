"""``ractd train-reward``: the return-to-go model R_psi, trained independently of the teacher.

``chunk`` tasks: R_psi(s_n, a_n) regresses the normalised discounted return-to-go of (s_n, a_n)
(gamma and the termination penalty: the task's, or ``--gamma`` / ``--termination-penalty``); with
``--reads state_action_chunk`` (not in RACTD) R_psi(s_n, a_n..a_{n+c-1}) regresses the same target. ``states`` tasks: R_psi(s_t, goal)
regresses the return-to-go from s_t under the episode's goal; a plan is scored by the mean of
R_psi over its states (so the term stays O(1) whatever the horizon).

A tenth of the episodes is held out, as RACTD's reward configs do (``val_ratio: 0.1``): R_psi is
fitted on the rest, and its fit on the held-out episodes (MSE and R^2 = 1 - MSE / Var[rtg]) goes
into the artifact, and every ``eval_every`` steps into its ``fit_curve``. R_psi's gradient is what
steers the student, so a poor fit (low held-out R^2) is worth knowing before distilling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import torch

from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact, load_artifact
from ..data.windows import Normalizer
from ..errors import RactdError, UsageError
from ..models import RewardConfig, check_reward_input, load_net, normalizer_tensors, normalizers_from, prefixed
from ..nets import RewardMLP
from .common import TrainOptions, stale
from .data import Source, held_out_episodes, load_task_data
from .fit import Method, fit

VAL_FRACTION = 0.1
"""Share of episodes held out to measure R_psi's fit (RACTD's reward configs: ``val_ratio: 0.1``)."""


@torch.no_grad()
def fit_on(net: torch.nn.Module, source: Source, batch: int = 4096) -> dict[str, float]:
    """R_psi's fit on every row of ``source``: ``mse`` and ``r2`` = 1 - MSE / Var[rtg] (0: no better
    than predicting the mean return-to-go; 1: exact), in the normalised units it is trained in."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    sq, y, y2, n = 0.0, 0.0, 0.0, 0
    for start in range(0, len(source), batch):
        b = source.gather(torch.arange(start, min(start + batch, len(source))))
        target = b["rtg"].to(device, torch.float64)
        sq += float(((net(b["input"].to(device)).double() - target) ** 2).sum())
        y, y2, n = y + float(target.sum()), y2 + float((target**2).sum()), n + len(target)
    net.train(was_training)
    var = y2 / n - (y / n) ** 2
    return {"mse": sq / n, "r2": 1.0 - (sq / n) / var if var > 0 else float("nan")}

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""R(x0_hat, cond) -> (B,): the frozen reward model scoring normalised plans."""


def frozen_reward(
    spec: TaskSpec, reward_ref: str, *, dataset: str | None, normalizers: Mapping[str, Normalizer], user: str,
    device: torch.device | str = "cpu", fingerprint: str | None = None,
) -> tuple[Artifact, RewardFn]:
    """The reward model ``reward_ref``, frozen, as R(x0_hat, cond) for plans in the space of
    ``normalizers`` (those of ``user``, the model whose loss it joins, trained on ``dataset``).

    R is in the reward model's units, the return-to-go normalised to [-1, 1], times the task's
    ``reward_scale`` kappa (1 unless the task declares its reference weighting; recorded in the model
    whose loss it joins). How a plan is read is the task's layout's
    (``ractd_cli.layouts``): R_psi(s_n, a_hat_n) for action chunks (eq. 8), the mean over the plan of
    R_psi(s_t, goal) for state plans. The plan is not clamped: a clamp would zero the gradient of any
    element outside [-1, 1], exactly where the plan most needs pulling back. A reward model fitted on
    another dataset, or normalising plans otherwise, is refused with what to run.
    """
    art = load_artifact(reward_ref, kind="reward", task=spec.name)
    reads = check_reward_input(art, spec)
    if art.meta.get("dataset") != dataset:
        raise UsageError(f"reward model {art.id} was fitted on {art.meta.get('dataset')} and {user} on {dataset}; "
                         f"run `ractd train-reward --env {spec.name} --dataset {dataset}` (or pass --reward)")
    if fingerprint is not None and stale(art, fingerprint):
        raise RactdError(f"reward model {art.id} was fitted on an earlier version of {dataset} (it was fetched again since); "
                         f"run `ractd train-reward --env {spec.name}` again")
    own = normalizers_from(art.tensors)
    if any(not own[k].same_as(n) for k, n in normalizers.items() if k in own and k != "rtg"):
        raise RactdError(f"reward model {art.id} normalises plans otherwise than {user} (the dataset changed between "
                         f"them); run `ractd train-reward --env {spec.name}` again")
    net = load_net(art).to(device)
    net.requires_grad_(False)
    read = spec.layout.reward(spec, net, reads)
    if spec.reward_scale == 1.0:
        return art, read
    kappa = float(spec.reward_scale)
    return art, lambda x0_hat, cond: kappa * read(x0_hat, cond)


def train_reward(adapter: EnvAdapter, spec: TaskSpec, opts: TrainOptions, *, val_fraction: float = VAL_FRACTION, eval_every: int = 0,
        gamma: float | None = None, termination_penalty: float | None = None, reads: str | None = None) -> Artifact:
    """Fit R_psi on all but ``val_fraction`` of the episodes; its held-out fit is measured at the end
    (and every ``eval_every`` steps, the artifact's ``fit_curve``). ``gamma`` and
    ``termination_penalty`` (None: the task's, ``TaskSpec.gamma`` and ``.termination_penalty``) define
    the return-to-go it regresses, ``reads`` (None: the task's, ``TaskSpec.reward_input``) what it
    reads of a plan (``Layout.reward_inputs``); all are recorded in its config."""
    if gamma is not None and not (math.isfinite(gamma) and 0 < gamma <= 1):
        raise UsageError(f"--gamma must be in (0, 1], got {gamma}")
    if termination_penalty is not None and not math.isfinite(termination_penalty):
        raise UsageError(f"--termination-penalty must be a finite number, got {termination_penalty}")
    try:
        reads = spec.layout.reads(spec, reads)
    except ValueError as e:
        raise UsageError(f"--reads: {e}") from None
    spec = dataclasses.replace(spec, gamma=spec.gamma if gamma is None else gamma,
                               termination_penalty=spec.termination_penalty if termination_penalty is None else termination_penalty,
                               reward_input=reads)
    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if eval_every < 0:
        raise UsageError(f"--eval-every must be >= 0, got {eval_every}")
    data = load_task_data(adapter, spec, opts.dataset)
    train_rows, val_rows = held_out_episodes(data.windows.episode, val_fraction, opts.seed)
    opts.seed_init()
    method = RewardMethod(spec, data, opts.config("reward", spec), opts, fit_rows=data.reward.subset(train_rows),
                          held_out=data.reward.subset(val_rows), val_rows=val_rows, val_fraction=val_fraction, eval_every=eval_every)
    return fit(method, method.cfg, opts, eval_every=eval_every if len(method.held_out) else 0)


class RewardMethod(Method):
    """R_psi(input) -> the return-to-go normalised to [-1, 1] (MSE; the layout says what ``input`` is),
    fitted on ``fit_rows``; its held-out fit is measured on ``held_out`` (whole episodes never seen)."""

    kind = "reward"

    def __init__(self, spec: TaskSpec, data, cfg, opts: TrainOptions, *, fit_rows, held_out, val_rows, val_fraction: float, eval_every: int):
        self.model = self.net = RewardMLP(spec.layout.reward_input_dim(spec, data.reward_input))
        self.spec, self.data, self.cfg, self.preset = spec, data, cfg, opts.preset
        self.task, self.dataset, self.source, self.fingerprint = spec.name, data.dataset_id, fit_rows, data.windows.fingerprint
        self.held_out, self.val_rows, self.val_fraction = held_out, val_rows, val_fraction
        self.typed_config = RewardConfig.fitted_as(spec)
        # what its header records (the return-to-go it regresses) identifies its run for --resume, as a teacher's does
        self.run_extra = {"dataset": data.dataset_id, "net": self.net.config, "val_fraction": val_fraction, "eval_every": eval_every,
                          **self.typed_config.stored()}

    def loss(self, model, ema, batch, gen):
        return {"loss": ((model(batch["input"]) - batch["rtg"]) ** 2).mean()}

    def evaluate(self, model, ema):  # the saved (EMA) weights on the held-out episodes
        return {f"val_{k}": v for k, v in fit_on(ema, self.held_out).items()}

    def tensors(self, model, ema):
        return {**prefixed(ema.state_dict(), "net"), **normalizer_tensors(self.data.normalizers)}

    def finish(self, res):
        validation = {"episodes": int(len(set(self.data.windows.episode[self.val_rows.numpy()].tolist()))), "rows": len(self.held_out),
                      **(self.evaluate(res.model, res.ema) if len(self.held_out) else {})}
        more = {"validation": validation, **({"fit_curve": res.curve} if res.curve else {})}
        return more, {k: v for k, v in validation.items() if k.startswith("val_")}

    def config(self, **more):
        return {"net_kind": self.net.kind, "net": self.net.config, **self.typed_config.stored(), "train": self.cfg.record(), "preset": self.preset,
                "val_fraction": self.val_fraction, **more}

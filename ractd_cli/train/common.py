"""What the training pipelines share: presets and the options every training command takes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..adapters import TaskSpec
from ..artifacts import Artifact
from ..errors import UsageError, check_seed
from ..models import resolve_device
from ..presets import PRESETS, Preset
from .loop import TrainConfig


@dataclass(frozen=True)
class TrainOptions:
    """The options every training command accepts (``--preset --steps --batch-size --lr --seed --device --resume``)."""

    preset: str = "quick"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    show_progress: bool = True
    dataset: str | None = None
    precision: str = "fp32"
    log_dir: str | None = None
    name: str | None = None
    """The user's name for the model made (``--name``), recorded in its header outside its content id."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        check_seed(self.seed)
        from .loop import PRECISIONS

        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown --precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.name is not None:
            from ..artifacts import check_name

            check_name(self.name)

    def named(self) -> dict:
        """``{"name": ...}`` for ``save_artifact`` when the user named the model, else ``{}``."""
        return {"name": self.name} if self.name else {}

    def preset_for(self, spec: TaskSpec | None = None) -> Preset:
        """The preset with the task's overrides (``spec.presets[preset]``) applied."""
        overrides = spec.presets.get(self.preset, {}) if spec is not None else {}
        try:
            return PRESETS[self.preset].override(overrides)
        except ValueError as e:  # plugins are checked on load; an in-process spec may not be
            raise UsageError(f"{e}; fix the task's presets (see `ractd envs`)") from e

    def config(self, kind: str, spec: TaskSpec | None = None) -> TrainConfig:
        p = self.preset_for(spec)
        steps = self.steps or p.steps[kind]
        weight_decay = p.of(kind, "weight_decay")
        return TrainConfig(
            steps=steps,
            batch_size=self.batch_size or p.of(kind, "batch_size"),
            lr=self.lr or p.of(kind, "lr"),
            **({"weight_decay": weight_decay} if weight_decay is not None else {}),
            betas=p.betas,
            ema_power=p.ema_power,
            ema_decay=p.ema_decay,
            seed=self.seed,
            warmup=min(500, max(1, steps // 20)),
            checkpoint_every=max(50, steps // 10),
            device=str(resolve_device(self.device)),
            precision=self.precision,
            log_dir=self.log_dir,
        )

    def net_preset(self, spec: TaskSpec) -> str:
        """The denoiser network to build for ``spec``: the preset's, else the task's paper-size one."""
        return self.preset_for(spec).net_for(spec.model_preset)

    def seed_init(self) -> None:
        """Seed torch before building a network, so its initial weights (and the artifact) depend on --seed only."""
        torch.manual_seed(self.seed)


def stale(art: Artifact, fingerprint: str) -> bool:
    """``art`` was trained on other contents of its dataset than ``fingerprint`` names (the dataset
    was fetched again since). Artifacts from before fingerprints were recorded are never stale."""
    return art.meta.get("data_fingerprint") not in (None, fingerprint)


KEEP = ("last", "best", "both")
"""What a trainer with ``--eval-every`` saves: ``last``, the weights at the last step (the default),
``best``, those of the evaluation with the highest online score (``--keep best``), or ``both``, the
two as two artifacts from one run (training is the same either way), the selected one naming its
last-weights twin (``selection["last_weights"]``)."""

SELECTION_PROTOCOL = "selected on online score (the RACTD authors' protocol, monitor_key test_mean_scores; optimistic)"


class BestWeights:
    """``--keep best``: the saved weights of the best-scoring evaluation during training, as the
    RACTD authors keep their top checkpoints by online test score. Each evaluation offers its
    ``result`` (with ``score_mean``) and the tensors it scored; the first highest score wins.

    Not checkpointed: a run resumed with ``--resume`` chooses among the evaluations made after it
    resumed, and says so (``selection["resumed_from"]``)."""

    def __init__(self) -> None:
        self.offered = 0
        self.best: tuple[int, float, dict[str, torch.Tensor]] | None = None

    def offer(self, result: dict, tensors: dict[str, torch.Tensor]) -> None:
        score = result.get("score_mean")
        if score is not None and math.isfinite(score) and (self.best is None or score > self.best[1]):
            self.best = (self.offered, float(score), {k: v.detach().cpu().clone() for k, v in tensors.items()})
        self.offered += 1

    def choose(self, curve: list[dict], resumed_from: int) -> tuple[dict[str, torch.Tensor], dict]:
        """(the tensors to save, the artifact's ``selection`` record): the best evaluation's, whose
        step is read off ``curve`` (the run's evaluations; those offered here are its last ones)."""
        if self.best is None:
            raise UsageError("--keep best needs at least one scored evaluation (--eval-every N with N at most --steps)")
        index, score, tensors = self.best
        step = curve[len(curve) - self.offered + index]["step"]
        return tensors, {"keep": "best", "step": step, "score_mean": score, "protocol": SELECTION_PROTOCOL,
                         **({"resumed_from": resumed_from} if resumed_from else {})}


def check_keep(keep: str, eval_every: int) -> None:
    """A one-line UsageError for an unknown ``--keep`` or ``--keep best`` without evaluations."""
    from ..errors import unknown_choice

    if keep not in KEEP:
        raise UsageError(unknown_choice("--keep", keep, KEEP))
    if keep in ("best", "both") and not eval_every:
        raise UsageError(f"--keep {keep} chooses among the evaluations during training: give --eval-every N as well")

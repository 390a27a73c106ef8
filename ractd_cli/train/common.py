"""What the training pipelines share: presets and the options every training command takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..adapters import TaskSpec
from ..errors import UsageError
from ..models import resolve_device
from .loop import TrainConfig

# Steps per model kind, batch size, learning rate and network preset. ``quick`` is sized for a
# laptop CPU (minutes per model); ``paper`` uses the paper's network sizes and is meant for a
# GPU; ``tiny`` exists for tests and smoke runs (seconds). A task may override any of these
# values per preset (``TaskSpec.presets``): Maze2d's long state plans use a smaller network and
# fewer steps on ``quick``.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"net": "mlp", "teacher": 3000, "reward": 1000, "inverse-dynamics": 1000, "student": 1000, "proposer": 1000, "batch_size": 64, "lr": 1e-3},
    "quick": {"net": "quick", "teacher": 4000, "reward": 2000, "inverse-dynamics": 2000, "student": 2000, "proposer": 3000, "batch_size": 64, "lr": 5e-4},
    "paper": {"net": None, "teacher": 200_000, "reward": 50_000, "inverse-dynamics": 50_000, "student": 100_000, "proposer": 100_000, "batch_size": 256, "lr": 2e-4},
}


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

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UsageError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.lr is not None and not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")

    def values(self, spec: TaskSpec | None = None) -> dict[str, Any]:
        """The preset's values, with the task's overrides (``spec.presets[preset]``) applied."""
        overrides = spec.presets.get(self.preset, {}) if spec is not None else {}
        unknown = set(overrides) - set(PRESETS[self.preset])
        if unknown:
            raise UsageError(f"task {spec.name} overrides unknown preset keys {sorted(unknown)}")
        return {**PRESETS[self.preset], **overrides}

    def config(self, kind: str, spec: TaskSpec | None = None) -> TrainConfig:
        p = self.values(spec)
        steps = self.steps or p[kind]
        return TrainConfig(
            steps=steps,
            batch_size=self.batch_size or p["batch_size"],
            lr=self.lr or p["lr"],
            seed=self.seed,
            warmup=min(500, max(1, steps // 20)),
            checkpoint_every=max(50, steps // 10),
            device=str(resolve_device(self.device)),
        )

    def net_preset(self, spec: TaskSpec) -> str:
        return self.values(spec)["net"] or spec.model_preset

    def seed_init(self) -> None:
        """Seed torch before building a network, so its initial weights (and the artifact) depend on --seed only."""
        torch.manual_seed(self.seed)

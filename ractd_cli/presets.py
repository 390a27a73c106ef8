"""Training presets as typed, validated values (``--preset tiny|quick|paper``).

A :class:`Preset` names the denoiser network size and, per model kind, the gradient steps, with the
batch size and learning rate. ``quick`` is sized for a laptop CPU (minutes per model); ``paper``
builds the paper's networks (Tables 6-7, through ``TaskSpec.model_preset``) and is meant for a GPU;
``tiny`` exists for tests and smoke runs (seconds). A task may override any value of a preset
(``TaskSpec.presets``, e.g. Maze2d's ``quick``: a smaller U-Net, fewer steps); the overrides are
checked when the plugin loads (:func:`task_preset_problems`), so ``ractd envs`` shows a bad one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .errors import unknown_choice
from .nets import DENOISER_PRESETS

MODEL_KINDS = ("teacher", "reward", "inverse-dynamics", "student", "proposer")
"""The models a preset gives step counts for (one per training command)."""


@dataclass(frozen=True)
class Preset:
    """One training preset. Validated on construction (a ValueError says what is wrong)."""

    name: str
    net: str | None
    """Denoiser network preset (``ractd_cli.nets.DENOISER_PRESETS``); None: the task's paper-size
    network, ``TaskSpec.model_preset``."""
    steps: Mapping[str, int] = field(default_factory=dict)
    """Gradient steps per model kind, every one of :data:`MODEL_KINDS`."""
    batch_size: int = 64
    lr: float = 5e-4
    plan_stride: int = 1
    """State-planning tasks: the teacher plans every k-th state (``train-teacher --plan-stride``); 1,
    every state, is the paper's. A task's ``quick`` override may choose a larger k as a CPU sizing
    (like its network size); it is recorded in the artifact and in every result."""

    def __post_init__(self) -> None:
        if self.net is not None and self.net not in DENOISER_PRESETS:
            raise ValueError(unknown_choice(f"preset {self.name!r}: network", self.net, DENOISER_PRESETS))
        missing = [k for k in MODEL_KINDS if k not in self.steps]
        extra = [k for k in self.steps if k not in MODEL_KINDS]
        if missing or extra:
            raise ValueError(f"preset {self.name!r}: steps needs exactly {', '.join(MODEL_KINDS)} (missing {missing}, unknown {extra})")
        for kind, n in self.steps.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"preset {self.name!r}: steps[{kind!r}] must be a positive integer, got {n!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"preset {self.name!r}: batch_size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"preset {self.name!r}: lr must be positive, got {self.lr!r}")
        if not isinstance(self.plan_stride, int) or isinstance(self.plan_stride, bool) or self.plan_stride < 1:
            raise ValueError(f"preset {self.name!r}: plan_stride must be a positive integer, got {self.plan_stride!r}")

    def override(self, overrides: Mapping[str, Any]) -> "Preset":
        """This preset with a task's overrides: keys ``net``, ``batch_size``, ``lr``, ``plan_stride`` or
        a model kind (its step count). Unknown keys and bad values raise ValueError."""
        allowed = ("net", "batch_size", "lr", "plan_stride", *MODEL_KINDS)
        for key in overrides:
            if key not in allowed:
                raise ValueError(unknown_choice(f"preset {self.name!r}: override", key, allowed))
        steps = {**self.steps, **{k: v for k, v in overrides.items() if k in MODEL_KINDS}}
        plain = {k: v for k, v in overrides.items() if k not in MODEL_KINDS}
        return replace(self, steps=steps, **plain)

    def net_for(self, model_preset: str) -> str:
        """The denoiser network preset to build: this preset's, else the task's paper-size one."""
        return self.net or model_preset


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", "mlp", dict(teacher=3000, reward=1000, student=1000, proposer=1000, **{"inverse-dynamics": 1000}), 64, 1e-3),
        Preset("quick", "quick", dict(teacher=4000, reward=2000, student=2000, proposer=3000, **{"inverse-dynamics": 2000}), 64, 5e-4),
        Preset("paper", None, dict(teacher=200_000, reward=50_000, student=100_000, proposer=100_000, **{"inverse-dynamics": 50_000}), 256, 2e-4),
    )
}


def task_preset_problems(name: str, model_preset: str, presets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What is wrong with a task's network preset and preset overrides ([] when nothing is)."""
    problems = []
    if model_preset not in DENOISER_PRESETS:
        problems.append(unknown_choice(f"task {name}: model_preset", model_preset, DENOISER_PRESETS))
    for preset, overrides in presets.items():
        if preset not in PRESETS:
            problems.append(unknown_choice(f"task {name}: overrides of preset", preset, PRESETS))
            continue
        try:
            PRESETS[preset].override(overrides)
        except ValueError as e:
            problems.append(f"task {name}: {e}")
    return problems


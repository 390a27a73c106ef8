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
    horizon: int | None = None
    """State-planning tasks: states per plan (``train-teacher --horizon``); None, the task's
    (``TaskSpec.horizon``, the paper's). A task's ``quick`` override may choose another where a
    measurement shows the paper's horizon shorter than the data's trips to the goal; recorded in the
    artifact and in every result."""
    kinds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per model kind, values that differ from the preset's: ``batch_size``, ``lr``, ``weight_decay``
    (the ``paper`` preset: each model's own recipe from the RACTD authors' configs)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's betas (``TrainConfig.betas``)."""
    ema_power: float | None = None
    """The EMA's warm-up power (``TrainConfig.ema_power``; None: the usual (1+n)/(10+n))."""
    ema_decay: float = 0.999
    """The EMA's largest decay (``TrainConfig.ema_decay``)."""

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
        if self.horizon is not None and (not isinstance(self.horizon, int) or isinstance(self.horizon, bool) or self.horizon < 2
                                         or self.horizon % self.plan_stride):
            raise ValueError(f"preset {self.name!r}: horizon must be an integer >= 2 that plan_stride {self.plan_stride} divides, "
                             f"got {self.horizon!r}")
        for kind, values in self.kinds.items():
            if kind not in MODEL_KINDS:
                raise ValueError(unknown_choice(f"preset {self.name!r}: kinds", kind, MODEL_KINDS))
            for key, v in values.items():
                if key not in KIND_KEYS:
                    raise ValueError(unknown_choice(f"preset {self.name!r}: kinds[{kind!r}]", key, KIND_KEYS))
                ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 1) if key == "batch_size" else (
                    isinstance(v, (int, float)) and not isinstance(v, bool) and (v > 0 if key == "lr" else v >= 0))
                if not ok:
                    raise ValueError(f"preset {self.name!r}: kinds[{kind!r}][{key!r}] must be {KIND_KEYS[key]}, got {v!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"preset {self.name!r}: betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.ema_power is not None and not self.ema_power > 0:
            raise ValueError(f"preset {self.name!r}: ema_power must be positive, got {self.ema_power!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"preset {self.name!r}: ema_decay must be in [0, 1), got {self.ema_decay!r}")

    def of(self, kind: str, key: str) -> Any:
        """``key`` (``batch_size``, ``lr`` or ``weight_decay``) for a model of ``kind``: its own value
        (:attr:`kinds`), else the preset's (``weight_decay``: the training loop's default, None)."""
        return self.kinds.get(kind, {}).get(key, getattr(self, key, None))

    def override(self, overrides: Mapping[str, Any]) -> "Preset":
        """This preset with a task's overrides: keys ``net``, ``batch_size``, ``lr``, ``plan_stride``, ``horizon``, a
        model kind (its step count) or ``kinds`` (per-kind values, merged into :attr:`kinds`). Unknown
        keys and bad values raise ValueError."""
        allowed = ("net", "batch_size", "lr", "plan_stride", "horizon", "kinds", *MODEL_KINDS)
        for key in overrides:
            if key not in allowed:
                raise ValueError(unknown_choice(f"preset {self.name!r}: override", key, allowed))
        steps = {**self.steps, **{k: v for k, v in overrides.items() if k in MODEL_KINDS}}
        plain = {k: v for k, v in overrides.items() if k not in MODEL_KINDS and k != "kinds"}
        kinds = {k: {**self.kinds.get(k, {}), **overrides.get("kinds", {}).get(k, {})}
                 for k in {*self.kinds, *overrides.get("kinds", {})}}
        return replace(self, steps=steps, kinds=kinds, **plain)

    def net_for(self, model_preset: str) -> str:
        """The denoiser network preset to build: this preset's, else the task's paper-size one."""
        return self.net or model_preset


KIND_KEYS = {"batch_size": "a positive integer", "lr": "a positive number", "weight_decay": "a number >= 0"}
"""What :attr:`Preset.kinds` may set per model kind."""

PAPER_KINDS = {
    # The RACTD authors' configs (Ddduanxt/RACTD configs/*.yaml): edm_d4rl_*/edm_maze2d_* (teacher),
    # guided_ctmp_* (student; batch 4800 on MuJoCo, 320/1400 on the mazes: the Maze2d adapter's
    # override), reward_* (R_psi). weight_decay: teacher 1e-6 (MuJoCo; 1e-4 on the mazes), student
    # 1e-4 (MuJoCo; 1e-6 on the mazes), reward 1e-3.
    "teacher": {"batch_size": 1024, "lr": 1e-4, "weight_decay": 1e-6},
    "student": {"batch_size": 4800, "lr": 1e-4, "weight_decay": 1e-4},
    "reward": {"batch_size": 64, "lr": 2e-4, "weight_decay": 1e-3},
}
"""The ``paper`` preset's per-kind recipe (AdamW betas (0.95, 0.999) and an EMA of power 0.75, max
0.9999, in every one of those configs). Not taken from them: the student's dropout 0.2 (our U-Net
has no dropout) and their epoch counts (steps here)."""

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", "mlp", dict(teacher=3000, reward=1000, student=1000, proposer=1000, **{"inverse-dynamics": 1000}), 64, 1e-3),
        Preset("quick", "quick", dict(teacher=4000, reward=2000, student=2000, proposer=3000, **{"inverse-dynamics": 2000}), 64, 5e-4),
        Preset("paper", None, dict(teacher=200_000, reward=50_000, student=100_000, proposer=100_000, **{"inverse-dynamics": 50_000}), 256, 2e-4,
               kinds=PAPER_KINDS, betas=(0.95, 0.999), ema_power=0.75, ema_decay=0.9999),
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


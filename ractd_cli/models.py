"""From artifacts to modules and back: the one place that knows how a model is stored.

Below both training (``train/``) and planning (``planner.py``, ``evaluate.py``, ``bench.py``), so
neither imports the other: rebuilding a network from its artifact, the normalisers' tensor form in
an artifact, the ``prefix.`` naming of a state dict inside an artifact, and the choice of device.

A model and the normalisers it was trained with travel together: every artifact stores its own
(``norm.<name>.min/max``), and the modules that face the environment (:class:`PlanIO`,
:class:`RawInverse`) hold them as buffers, so raw env units go in and come out and no caller
normalises anything by hand.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .adapters import TaskSpec
from .artifacts import Artifact, load_artifact
from .data.windows import Normalizer
from .diffusion import CTMPrecond, EDMPrecond
from .errors import RactdError, UsageError
from .layouts import LAYOUTS
from .nets import build_net
from .proposer import build_proposer


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def prefixed(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A state dict's tensors under ``prefix.`` in an artifact (read back with ``Artifact.group``)."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def normalizer_tensors(normalizers: Mapping[str, Normalizer]) -> dict[str, torch.Tensor]:
    """Flatten normalisers into artifact tensors ``norm.<name>.<field>``."""
    out = {}
    for name, n in normalizers.items():
        for k, v in n.state_dict().items():
            out[f"norm.{name}.{k}"] = torch.as_tensor(np.asarray(v), dtype=torch.float32)
    return out


def normalizers_from(tensors: Mapping[str, torch.Tensor]) -> dict[str, Normalizer]:
    """Inverse of :func:`normalizer_tensors`."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for k, v in tensors.items():
        if k.startswith("norm."):
            _, name, fld = k.split(".", 2)
            groups.setdefault(name, {})[fld] = v.numpy()
    return {name: Normalizer.from_state_dict(d) for name, d in groups.items()}


class Normalize(nn.Module):
    """A :class:`~ractd_cli.data.windows.Normalizer` as a module: buffers ``centre`` and ``half_range`` (D,).

    ``forward``: raw x (..., D) -> (x - centre) / half_range, in [-1, 1] on the data; ``inverse`` undoes it.
    The same float32 arithmetic as the numpy normaliser, so either gives bit-identical values.
    """

    def __init__(self, n: Normalizer):
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(n.centre, dtype=torch.float32))
        self.register_buffer("half_range", torch.as_tensor(n.half_range, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.centre) / self.half_range

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.half_range + self.centre


class PlanIO(nn.Module):
    """The raw-units boundary of a planning model (teacher, student or proposer): its normalisers.

    - ``cond(past (B, h, obs_dim), goal (B, goal_dim) or None)`` -> the normalised conditioning
      vector (B, cond_dim), laid out by the task's layout (a zero-width goal counts as none);
    - ``goal_block(goal)``: the raw goal as the normalised goal block of that vector (the goal, or
      for endpoint plans the goal state at rest, ``Layout.goal_state``);
    - ``x(x (B, T, D))``: a raw plan into the model's space; ``plan(x0)``: back to env units
      (actions or states: ``layout.x_source``).
    """

    def __init__(self, spec: TaskSpec, norms: Mapping[str, Normalizer]):
        super().__init__()
        self.layout = spec.layout
        missing = {"state", self.layout.x_source} - set(norms)
        if missing:
            raise UsageError(f"this artifact lacks the {', '.join(sorted(missing))} normaliser(s) that {spec.name} plans with; retrain it")
        self.state = Normalize(norms["state"])
        source = self.layout.goal_source
        self.goal = Normalize(norms[source]) if source in norms else nn.Identity()
        self.x = Normalize(norms[self.layout.x_source])
        goal_to_block = self.layout.goal_state(spec, torch.eye(spec.goal_dim)) if spec.goal_dim else torch.zeros(0, 0)
        self.register_buffer("goal_to_block", goal_to_block.to(torch.float32))  # (goal_dim, goal width), linear

    def goal_block(self, goal: torch.Tensor) -> torch.Tensor:
        return self.goal(goal @ self.goal_to_block)

    def cond(self, past: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        has_goal = goal is not None and goal.shape[-1] > 0
        return self.layout.cond(self.state(past), self.goal_block(goal) if has_goal else None)

    def plan(self, x0: torch.Tensor) -> torch.Tensor:
        return self.x.inverse(x0)


def trained_seed(art: Artifact) -> int:
    """The ``--seed`` a model was trained with (its training record ``train.seed``; 0 where none)."""
    return int((art.config.get("train") or {}).get("seed", 0))


def model_summary(art: Artifact) -> dict[str, Any]:
    """What tells one model from another in ``cache list``: its reward weight (a student's sigma; a
    reward-aware teacher's w), preset, gradient steps and last evaluation (the final point of an
    ``--eval-every`` curve; with ``--keep best`` the selected one, ``selected`` True; or a reward
    model's held-out R^2), each None where it has none."""
    c = art.config
    train = c.get("train") or {}
    steps = train.get("steps") if "steps" in train else (train.get("teacher") or {}).get("steps")  # a proposer: its refiner's
    curve = c.get("eval_curve") or []
    last = curve[-1] if curve else None
    selection = c.get("selection")
    if selection is not None:  # --keep best: the evaluation whose weights were saved
        evaluation = {"step": selection["step"], "score_mean": selection["score_mean"], "score_stderr": None, "selected": True}
    elif last is not None and last.get("score_mean") is not None:
        evaluation = {"step": last.get("step"), "score_mean": last["score_mean"], "score_stderr": last.get("score_stderr")}
    elif (c.get("validation") or {}).get("val_r2") is not None:
        evaluation = {"val_r2": c["validation"]["val_r2"]}
    else:
        evaluation = None
    return {"reward_weight": c.get("reward_weight"), "preset": c.get("preset"), "steps": steps, "evaluation": evaluation}


def curve_summary(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An ``--eval-every`` curve in a few numbers: how many evaluations scored, their mean and its
    standard error across them (every checkpoint's score counted once: a lower-variance estimate of
    what the run's weights score than its last or best point, on the same starts), and its best and
    last points. None for a curve without scores."""
    points = [c for c in curve if c.get("score_mean") is not None]
    if not points:
        return None
    scores = [float(c["score_mean"]) for c in points]
    n, mean = len(scores), sum(scores) / len(scores)
    stderr = (sum((x - mean) ** 2 for x in scores) / (n - 1) / n) ** 0.5 if n > 1 else None
    best = max(points, key=lambda c: c["score_mean"])
    return {"evaluations": n, "mean": mean, "stderr": stderr, "best": float(best["score_mean"]), "best_step": best.get("step"),
            "last": scores[-1], "last_step": points[-1].get("step")}


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """What a teacher or student artifact's header says about its noise and its plans, read back
    typed (the ``config`` dict the trainers write; no caller reads those keys by name). Fields a model
    from before they were recorded lacks are None, or 1 for the plan stride."""

    sigma_data: float
    sigma_min: float
    sigma_max: float
    planning: str | None
    horizon: int | None
    plan_stride: int
    windows: str | None

    KINDS = ("teacher", "student")

    @classmethod
    def of(cls, art: Artifact) -> DiffusionConfig:
        return cls(**cls._fields(art))

    def stored(self) -> dict[str, Any]:
        """The ``config`` fields this value owns, as an artifact stores them (what :meth:`of` reads
        back): fields without a value are left out, and the plan stride when it is 1, so a model
        trained without them keeps its id."""
        out = {"sigma_data": self.sigma_data, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
               "planning": self.planning, "horizon": self.horizon, "windows": self.windows}
        out = {k: v for k, v in out.items() if v is not None}
        return {**out, **({"plan_stride": self.plan_stride} if self.plan_stride != 1 else {})}

    @classmethod
    def _fields(cls, art: Artifact) -> dict[str, Any]:
        if art.kind not in cls.KINDS:
            raise UsageError(f"artifact {art.id[:8]} is a {art.kind}, not a {' or '.join(cls.KINDS)}")
        c = art.config
        return {"sigma_data": float(c["sigma_data"]), "sigma_min": float(c["sigma_min"]), "sigma_max": float(c["sigma_max"]),
                "planning": c.get("planning"), "horizon": c.get("horizon"), "plan_stride": int(c.get("plan_stride", 1)),
                "windows": c.get("windows")}


@dataclasses.dataclass(frozen=True)
class TeacherConfig(DiffusionConfig):
    """A teacher's header, typed. ``teacher_reward_weight``: w of a reward-aware teacher (the paper's
    Table 4 ablation, ``train-teacher --teacher-reward-weight``; stored as ``reward_weight``), 0 for
    the paper's unconditioned teacher; ``reward_id`` its reward model."""

    teacher_reward_weight: float
    reward_id: str | None
    reward_scale: float = 1.0
    """kappa of the reward term (``TaskSpec.reward_scale``); 1 where not recorded."""

    KINDS = ("teacher",)

    @classmethod
    def of(cls, art: Artifact) -> TeacherConfig:
        c = art.config
        return cls(**cls._fields(art), teacher_reward_weight=float(c.get("reward_weight", 0.0)), reward_id=c.get("reward_id"),
                   reward_scale=float(c.get("reward_scale", 1.0)))

    def stored(self) -> dict[str, Any]:
        """As stored: w, its reward model and (when not 1) kappa only for a reward-aware teacher."""
        rewarded = {"reward_weight": self.teacher_reward_weight, "reward_id": self.reward_id} if self.reward_id is not None else {}
        if self.reward_id is not None and self.reward_scale != 1.0:
            rewarded["reward_scale"] = self.reward_scale
        return {**super().stored(), **rewarded}


def sigma_label(sigma: float, kappa: float = 1.0) -> str:
    """A reward weight as results show it: ``1``, or with a reward scale kappa not 1, ``1 (x kappa)``."""
    return f"{sigma:g}" + (f" (x {kappa:g})" if kappa != 1.0 else "")


@dataclasses.dataclass(frozen=True)
class StudentConfig(DiffusionConfig):
    """A student's header, typed: the weights of eq. 9 (alpha L_CTM + beta L_DSM + sigma L_Reward;
    sigma = ``reward_weight``, 0 for a plain CTD student; ``reward_scale`` kappa of L_Reward, 1 where
    not recorded: ``TaskSpec.reward_scale``), the evaluation during training
    (``distill --eval-every``: ``{"every", "episodes"}``) and, with ``--keep best``, the ``selection``
    whose weights it holds (None: the last step's). ``seed``: the distill seed (``distill --seed``, the
    training loop's record ``train.seed``; 0 where not recorded), read back only: the loop stores it."""

    ctm_weight: float
    dsm_weight: float
    reward_weight: float
    eval: dict[str, Any] | None
    selection: dict[str, Any] | None
    reward_scale: float = 1.0
    seed: int = 0

    KINDS = ("student",)

    @classmethod
    def of(cls, art: Artifact) -> StudentConfig:
        c = art.config
        return cls(**cls._fields(art), ctm_weight=float(c.get("ctm_weight", 1.0)), dsm_weight=float(c.get("dsm_weight", 1.0)),
                   reward_weight=float(c.get("reward_weight", 0.0)), eval=c.get("eval") or None, selection=c.get("selection") or None,
                   reward_scale=float(c.get("reward_scale", 1.0)), seed=trained_seed(art))

    def stored(self) -> dict[str, Any]:
        """As stored; ``eval`` and ``selection`` only where training recorded them, ``reward_scale``
        only for a RACTD student whose kappa is not 1 (so that every other model keeps its id)."""
        more = {k: v for k, v in (("eval", self.eval), ("selection", self.selection)) if v is not None}
        if self.rewarded and self.reward_scale != 1.0:
            more["reward_scale"] = self.reward_scale
        return {**super().stored(), "ctm_weight": self.ctm_weight, "dsm_weight": self.dsm_weight, "reward_weight": self.reward_weight, **more}

    def describe(self) -> dict[str, Any]:
        """For results (every bench row and rollout of a student): sigma (``reward_weight``, 0 for CTD)
        and a RACTD student's kappa (``reward_scale``), the ``selection`` where its weights were chosen
        on online score, and the ``distill_seed``."""
        return {"reward_weight": self.reward_weight, **({"reward_scale": self.reward_scale} if self.rewarded else {}),
                **({"selection": self.selection} if self.selection else {}), "distill_seed": self.seed}

    @property
    def sigma_label(self) -> str:
        """sigma as results show it (:func:`sigma_label`)."""
        return sigma_label(self.reward_weight, self.reward_scale)

    @property
    def rewarded(self) -> bool:
        """A RACTD student (sigma > 0), not a plain CTD one."""
        return self.reward_weight > 0


@dataclasses.dataclass(frozen=True)
class ProposerConfig:
    """A Trajectory Diffuser's header (a ``proposer`` artifact of ``train-proposer``), typed: its
    refiner's noise range, the plans it proposes, and the best return-to-go of its training data (the
    default target return)."""

    sigma_data: float
    sigma_min: float
    sigma_max: float
    horizon: int
    planning: str | None
    windows: str | None
    best_return: float

    @classmethod
    def of(cls, art: Artifact) -> ProposerConfig:
        c = art.config
        if art.kind != "proposer" or c.get("method") != "trajdiffuser":
            raise UsageError(f"artifact {art.id} is not a Trajectory Diffuser; run `ractd train-proposer --env {art.task}`")
        return cls(sigma_data=float(c["sigma_data"]), sigma_min=float(c["sigma_min"]), sigma_max=float(c["sigma_max"]),
                   horizon=int(c["horizon"]), planning=c.get("planning"), windows=c.get("windows"), best_return=float(c["best_return"]))

    def stored(self) -> dict[str, Any]:
        """The ``config`` fields this value owns, as stored (with ``method``, which :meth:`of` checks)."""
        return {"method": "trajdiffuser", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """A reward model's header (``train-reward``), typed: the plan it reads (``input``, the layout's
    ``reward_input``) and the return-to-go it was fitted to (discount ``gamma``, ``termination_penalty``
    added at a true termination). Fields a model from before they were recorded lacks are None."""

    input: str | None
    gamma: float | None
    termination_penalty: float | None

    @classmethod
    def of(cls, art: Artifact) -> RewardConfig:
        if art.kind != "reward":
            raise UsageError(f"artifact {art.id[:8]} is a {art.kind}, not a reward model")
        c = art.config
        return cls(input=c.get("input"), gamma=c.get("gamma"), termination_penalty=c.get("termination_penalty"))

    @classmethod
    def fitted_as(cls, spec: TaskSpec) -> RewardConfig:
        """The header of a reward model fitted as ``spec`` says: its reading, gamma and penalty."""
        return cls(input=spec.layout.reads(spec), gamma=spec.gamma, termination_penalty=spec.termination_penalty)

    def stored(self) -> dict[str, Any]:
        """The ``config`` fields this value owns, as stored (what :meth:`of` reads back)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def describe(self) -> dict[str, Any]:
        """For results: the return-to-go a RACTD student's R_psi regressed (``rtg_gamma``,
        ``rtg_termination_penalty``) and what it read of a plan (``reward_input``; None: the
        layout's default, recorded since)."""
        return {"rtg_gamma": self.gamma, "rtg_termination_penalty": self.termination_penalty, "reward_input": self.input}


def reward_of(student: Artifact) -> Artifact | None:
    """The reward model R_psi a RACTD student was distilled with (its second parent), where the cache
    holds it; None for a CTD student, a teacher or another kind."""
    if student.kind != "student" or not StudentConfig.of(student).rewarded or len(student.meta.get("parents", [])) < 2:
        return None
    try:
        return load_artifact(student.meta["parents"][1], kind="reward", task=student.task)
    except RactdError:
        return None


def spec_for(art: Artifact, spec: TaskSpec) -> TaskSpec:
    """``spec`` as ``art`` was trained: with the plan stride its config records (1 when absent), its
    horizon (state plans: knots x stride; the task's unless trained with ``--horizon``), its
    training windows (``padded`` when absent, ractd's choice before it was recorded) and its
    planning kind, where that is another open-loop one (a Maze2d model from before the ``endpoints``
    conditioning keeps planning from the current state and the goal, ``states``)."""
    header = DiffusionConfig.of(art)
    k, planning = header.plan_stride, header.planning or spec.planning
    if planning != spec.planning:
        if planning not in LAYOUTS or not (LAYOUTS[planning].open_loop and spec.layout.open_loop):
            raise UsageError(f"artifact {art.id} plans {planning!r} but {spec.name} plans {spec.planning!r}; retrain it")
    # models from before the choice was recorded trained on padded windows, except endpoint plans
    windows = header.windows or ("full" if LAYOUTS[planning].full_windows else "padded")
    # state plans of T knots every k-th state span T k states: the task's horizon unless trained with --horizon
    H = header.horizon * k if header.horizon is not None and spec.layout.open_loop else spec.horizon
    if (k, planning, windows, H) == (spec.plan_stride, spec.planning, spec.windows, spec.horizon):
        return spec
    return dataclasses.replace(spec, plan_stride=k, planning=planning, windows=windows, horizon=H)


def check_reward_input(art: Artifact, spec: TaskSpec) -> str:
    """What the reward model ``art`` reads (its ``input``; the layout's default for a model from before
    it was recorded), or a one-line UsageError where ``spec``'s layout has no such reading (e.g. a
    Maze2d reward model from before the ``endpoints`` conditioning)."""
    reads, layout = RewardConfig.of(art).input, spec.layout
    if reads is not None and reads not in layout.reward_inputs:
        raise UsageError(f"reward model {art.id} reads {reads} but {spec.name} plans are scored on {' or '.join(layout.reward_inputs)}; "
                         f"run `ractd train-reward --env {spec.name}` again")
    return reads or layout.reward_input


def plan_io(art: Artifact, spec: TaskSpec) -> PlanIO:
    """The normalisers stored in ``art`` as the :class:`PlanIO` of ``spec``."""
    return PlanIO(spec, normalizers_from(art.tensors))


class RawInverse(nn.Module):
    """Inverse dynamics a_t = f(s_t, s_{t+1}) in env units: the network between the normalisers it
    was trained with. s, s_next (B, obs_dim) raw -> a (B, act_dim) raw."""

    def __init__(self, net: nn.Module, norms: Mapping[str, Normalizer]):
        super().__init__()
        self.net, self.state, self.action = net, Normalize(norms["state"]), Normalize(norms["action"])

    def forward(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return self.action.inverse(self.net(self.state(s), self.state(s_next)))


def inverse_from(art: Artifact, prefix: str = "net") -> RawInverse:
    """The raw-units inverse-dynamics model stored in ``art`` under ``prefix``: an
    ``inverse-dynamics`` artifact's ``net``, or a Trajectory Diffuser's ``inverse``."""
    return RawInverse(load_net(art, prefix), normalizers_from(art.tensors)).eval()


def load_net(art: Artifact, prefix: str = "net") -> nn.Module:
    """Rebuild the network stored in an artifact (config ``<prefix>_kind``/``<prefix>``) with its weights."""
    cfg = art.config
    net = build_net(cfg[f"{prefix}_kind"], cfg[prefix])
    _load_weights(net, art, prefix)
    return net.eval()


def _load_weights(net: nn.Module, art: Artifact, prefix: str) -> None:
    """``net``'s weights from ``art``; an artifact whose weights do not fit the network its header
    describes (edited or mixed up files) is one line naming it."""
    try:
        net.load_state_dict(art.group(prefix))
    except RuntimeError as e:
        raise RactdError(f"artifact {art.id} ({art.path.name}) holds weights that do not fit the network its header describes; "
                         f"delete it with `ractd cache rm {art.path.name}` and train it again") from e


def denoiser_from(art: Artifact) -> EDMPrecond:
    """The teacher D(x; sigma) of a ``teacher`` artifact."""
    return EDMPrecond(load_net(art), sigma_data=DiffusionConfig.of(art).sigma_data).eval()


def student_from(art: Artifact) -> CTMPrecond:
    """The student G(x_t, t, s) of a ``student`` artifact."""
    return CTMPrecond(load_net(art), sigma_data=StudentConfig.of(art).sigma_data).eval()


def proposer_from(art: Artifact) -> nn.Module:
    """Rebuild the Trajectory Diffuser proposer stored in a ``proposer`` artifact."""
    net = build_proposer(art.config["net"], art.config["net_kind"])
    _load_weights(net, art, "net")
    return net.eval()

"""From a model reference to a planner: which artifact ``--model``/``--proposer`` mean, what it needs
beside it (its teacher, inverse dynamics), and the one factory, :func:`build_planner`, that makes a
:class:`~ractd_cli.planner.Planner` (teacher or student) or a
:class:`~ractd_cli.trajdiffuser_planner.TrajDiffuserPlanner` of it for ``rollout`` and ``bench``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .adapters import TaskSpec
from .artifacts import Artifact, list_artifacts, load_artifact
from .errors import UsageError
from .models import StudentConfig, inverse_from, sigma_label
from .planner import Planner, Sampling
from .trajdiffuser_planner import TrajDiffuserOptions, TrajDiffuserPlanner

PLANNERS = ("diffusion", "trajdiffuser")

__all__ = ["PLANNERS", "Loaded", "TrajDiffuserOptions", "build_planner", "load_for_planning", "load_trajdiffuser", "loaded_from",
           "newest_student", "student_choice"]


@dataclass
class Loaded:
    """A planning artifact with what it needs: its teacher (for students; None for a Trajectory
    Diffuser) and inverse dynamics."""

    art: Artifact
    teacher: Artifact | None
    inverse: nn.Module | None
    """Inverse dynamics in env units (:class:`~ractd_cli.models.RawInverse`), for ``states`` tasks."""


def newest_student(spec: TaskSpec, *, rewarded: bool = False) -> Artifact | None:
    """The student a user means by "the student": the newest of ``spec``'s task at the task's own
    reward weight sigma on its reward scale kappa (``TaskSpec.loss_weights``, ``reward_scale``: what
    ``distill`` uses by default), else the newest at any weight > 0, else (unless ``rewarded``) the
    newest CTD student. None when there is none."""
    found = [a for a in list_artifacts() if a.kind == "student" and a.task == spec.name]
    own = (spec.loss_weights[2], spec.reward_scale)
    weighted = [(a, StudentConfig.of(a)) for a in found]
    weighted = [(a, h) for a, h in weighted if h.rewarded]
    pick = next((a for a, h in weighted if (h.reward_weight, h.reward_scale) == own), weighted[0][0] if weighted else None)
    return pick if pick is not None or rewarded else (found[0] if found else None)


def student_choice(art: Artifact, spec: TaskSpec) -> str:
    """One line saying which student :func:`newest_student` chose, and why."""
    h = StudentConfig.of(art)
    own = (spec.loss_weights[2], spec.reward_scale)
    why = ("the task's default reward weight" if (h.reward_weight, h.reward_scale) == own else
           f"no student at the task's reward weight {sigma_label(*own)}" if h.rewarded else "a CTD student: no RACTD student in the cache")
    return f"model: student {art.id[:8]} (reward weight {h.sigma_label}, {why}; --model ID picks another)"


def load_for_planning(ref: str, spec: TaskSpec) -> Loaded:
    """Resolve ``ref`` (id, path, ``teacher`` = the latest teacher, ``student`` = :func:`newest_student`)
    for ``spec``."""
    if ref in ("student", "teacher"):
        chosen = newest_student(spec) if ref == "student" else None
        art = load_artifact(chosen.path if chosen is not None else "latest", kind=ref, task=spec.name)
    else:
        art = load_artifact(ref, task=spec.name)
        if art.kind not in ("student", "teacher"):
            raise UsageError(f"artifact {art.id} is a {art.kind}; pass a teacher or a student")
    return loaded_from(art, spec)


def loaded_from(art: Artifact, spec: TaskSpec) -> Loaded:
    """A teacher or student artifact (saved, or in memory during training) with its teacher and
    inverse dynamics, which are looked up in the cache."""
    teacher = art if art.kind == "teacher" else load_artifact(art.meta["parents"][0], kind="teacher", task=spec.name)
    inverse = None
    inv_id = teacher.meta.get("inverse_dynamics")
    if inv_id:
        inv = load_artifact(inv_id, kind="inverse-dynamics", task=spec.name)
        inverse = inverse_from(inv)
    return Loaded(art=art, teacher=teacher, inverse=inverse)


def load_trajdiffuser(ref: str | None, spec: TaskSpec) -> Loaded:
    """A Trajectory Diffuser artifact (``ref`` id/path; None or ``latest``: the task's newest) with
    its own inverse dynamics (which follows its state plans on ``states`` tasks)."""
    art = load_artifact(ref or "latest", kind="proposer", task=spec.name)
    if art.config.get("method") != "trajdiffuser":
        raise UsageError(f"proposer {art.id} predates the Trajectory Diffuser of its paper; run `ractd train-proposer --env {spec.name}` again")
    return Loaded(art=art, teacher=None, inverse=inverse_from(art, "inverse"))


def build_planner(
    loaded: Loaded,
    spec: TaskSpec,
    *,
    sampler: str | None = None,
    nfe: int | None = None,
    trajdiffuser: TrajDiffuserOptions | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    jit: bool = True,
    cuda_graphs: bool = True,
    sampling: Sampling | None = None,
) -> Planner | TrajDiffuserPlanner:
    """The one way ``rollout`` and ``bench`` make a planner: a Trajectory Diffuser artifact (kind
    ``proposer``) with ``trajdiffuser`` options, or a teacher or student sampled by ``sampler`` at
    ``nfe`` with ``sampling`` (its initial noise and clamping; the Trajectory Diffuser starts from
    its proposal and ignores it)."""
    if loaded.art.kind == "proposer":
        if nfe is not None:
            raise UsageError("--nfe does not apply to --planner trajdiffuser; set --refine-steps (and --sampler euler|heun)")
        opts = trajdiffuser or TrajDiffuserOptions()
        reward = load_artifact(opts.reward or "latest", kind="reward", task=spec.name) if opts.candidates > 1 else None
        return TrajDiffuserPlanner(loaded.art, spec, **opts.given(), reward=reward, sampler=sampler, device=device, seed=seed)
    if trajdiffuser is not None:
        raise UsageError("--proposer, --refine-steps, --refine-sigma, --guidance, --target-return and --candidates need --planner trajdiffuser")
    return Planner(loaded.art, spec, sampler=sampler, nfe=nfe, device=device, seed=seed, jit=jit, cuda_graphs=cuda_graphs, sampling=sampling)

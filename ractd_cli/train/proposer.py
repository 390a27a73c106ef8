"""``ractd train-proposer``: the Trajectory Diffuser's autoregressive proposer (Huang et al.).

A causal transformer (:mod:`ractd_cli.proposer`) learns to write the plan the teacher diffuses,
element by element, from the same cond vector: teacher forcing, MSE on the next element. It is
trained on the same dataset as the task's latest teacher (when there is one), so the two share
normalisers, and the artifact names that teacher as its parent so `bench` can pair them.
"""

from __future__ import annotations

from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact, list_artifacts, save_artifact
from ..models import normalizer_tensors, prefixed, spec_for
from ..proposer import make_proposer
from .common import TrainOptions
from .data import load_task_data
from .loop import train


def latest_teacher(task: str) -> Artifact | None:
    """Header of the newest teacher of ``task`` in the cache, or None."""
    return next((a for a in list_artifacts() if a.kind == "teacher" and a.task == task), None)


def run(adapter: EnvAdapter, spec: TaskSpec, opts: TrainOptions) -> Artifact:
    """Train the proposer for ``spec`` and save it as a ``proposer`` artifact."""
    teacher = latest_teacher(spec.name)
    if teacher is not None:
        spec = spec_for(teacher, spec)  # plans as the teacher's: its plan stride
    data = load_task_data(adapter, spec, opts.dataset or (teacher.meta.get("dataset") if teacher else None))
    T, D = spec.x_shape
    opts.seed_init()
    net = make_proposer(opts.preset, x_dim=D, cond_dim=spec.cond_dim, horizon=T)

    def loss_fn(model, ema, batch, gen):
        return {"loss": ((model(batch["x"], batch["cond"]) - batch["x"]) ** 2).mean()}

    cfg = opts.config("proposer", spec)
    res = train(
        net,
        loss_fn,
        data.diffusion,
        cfg,
        name=f"proposer-{spec.name}",
        run_extra={"dataset": data.dataset_id, "net": net.config},
        resume=opts.resume,
        show_progress=opts.show_progress,
    )
    parents = [teacher.id] if teacher is not None else []
    return save_artifact(
        {**prefixed(res.ema.state_dict(), "net"), **normalizer_tensors(data.normalizers)},
        kind="proposer",
        task=spec.name,
        dataset=data.dataset_id,
        parents=parents,
        config={
            "net_kind": net.kind,
            "net": net.config,
            "planning": spec.planning,
            "horizon": T,
            "train": vars(cfg),
            "preset": opts.preset,
        },
        losses=res.losses,
        teacher=teacher.id if teacher is not None else None,
    )

"""``ractd train-reward``: the return-to-go model R_psi, trained independently of the teacher.

``chunk`` tasks: R_psi(s_n, a_n) regresses the normalised discounted return-to-go of (s_n, a_n)
(gamma and the termination penalty from the adapter). ``states`` tasks: R_psi(s_t, goal)
regresses the return-to-go from s_t under the episode's goal; a plan is scored by the mean of
R_psi over its states (so the term stays O(1) whatever the horizon).
"""

from __future__ import annotations

from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact, save_artifact
from ..models import normalizer_tensors, prefixed
from ..nets import RewardMLP
from .common import TrainOptions
from .data import load_task_data
from .loop import train


def run(adapter: EnvAdapter, spec: TaskSpec, opts: TrainOptions) -> Artifact:
    data = load_task_data(adapter, spec, opts.dataset)
    opts.seed_init()
    net = RewardMLP(spec.layout.reward_input_dim(spec))

    def loss_fn(model, ema, batch, gen):
        return {"loss": ((model(batch["input"]) - batch["rtg"]) ** 2).mean()}

    cfg = opts.config("reward", spec)
    res = train(net, loss_fn, data.reward, cfg, name=f"reward-{spec.name}", run_extra={"dataset": data.dataset_id, "net": net.config},
                resume=opts.resume, show_progress=opts.show_progress)
    return save_artifact(
        {**prefixed(res.ema.state_dict(), "net"), **normalizer_tensors(data.normalizers)},
        kind="reward",
        task=spec.name,
        dataset=data.dataset_id,
        config={"net_kind": net.kind, "net": net.config, "input": data.reward_input, "gamma": spec.gamma, "train": vars(cfg), "preset": opts.preset},
        losses=res.losses,
    )

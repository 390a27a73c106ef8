"""``ractd train-reward``: the return-to-go model R_psi, trained independently of the teacher.

``chunk`` tasks: R_psi(s_n, a_n) regresses the normalised discounted return-to-go of (s_n, a_n)
(gamma and the termination penalty from the adapter). ``states`` tasks: R_psi(s_t, goal)
regresses the return-to-go from s_t under the episode's goal; a plan is scored by the mean of
R_psi over its states (so the term stays O(1) whatever the horizon).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact, load_artifact, save_artifact
from ..data.windows import Normalizer
from ..errors import RactdError, UsageError
from ..models import load_net, normalizer_tensors, normalizers_from, prefixed
from ..nets import RewardMLP
from .common import TrainOptions
from .data import load_task_data
from .loop import train

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""R(x0_hat, cond) -> (B,): the frozen reward model scoring normalised plans."""


def frozen_reward(
    spec: TaskSpec, reward_ref: str, *, dataset: str | None, normalizers: Mapping[str, Normalizer], user: str,
    device: torch.device | str = "cpu",
) -> tuple[Artifact, RewardFn]:
    """The reward model ``reward_ref``, frozen, as R(x0_hat, cond) for plans in the space of
    ``normalizers`` (those of ``user``, the model whose loss it joins, trained on ``dataset``).

    R is in the reward model's units: the return-to-go normalised to [-1, 1], so a reward weight is
    the paper's sigma with no hidden scale. How a plan is read is the task's layout's
    (``ractd_cli.layouts``): R_psi(s_n, a_hat_n) for action chunks (eq. 8), the mean over the plan of
    R_psi(s_t, goal) for state plans. The plan is not clamped: a clamp would zero the gradient of any
    element outside [-1, 1], exactly where the plan most needs pulling back. A reward model fitted on
    another dataset, or normalising plans otherwise, is refused with what to run.
    """
    art = load_artifact(reward_ref, kind="reward", task=spec.name)
    if art.meta.get("dataset") != dataset:
        raise UsageError(f"reward model {art.id} was fitted on {art.meta.get('dataset')} and {user} on {dataset}; "
                         f"run `ractd train-reward --env {spec.name} --dataset {dataset}` (or pass --reward)")
    own = normalizers_from(art.tensors)
    if any(not own[k].same_as(n) for k, n in normalizers.items() if k in own and k != "rtg"):
        raise RactdError(f"reward model {art.id} normalises plans otherwise than {user} (the dataset changed between "
                         f"them); run `ractd train-reward --env {spec.name}` again")
    net = load_net(art).to(device)
    net.requires_grad_(False)
    return art, spec.layout.reward(spec, net)


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

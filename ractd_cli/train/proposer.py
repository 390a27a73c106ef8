"""``ractd train-proposer``: the Trajectory Diffuser (Huang et al.), its three networks in one artifact.

On the task's state view (:func:`ractd_cli.trajdiffuser.state_view`: plans of H states, whatever
the task's own planning), through the one training loop, in turn:

1. inverse dynamics a_t = f(s_t, s_{t+1}) (MSE), which turns a state plan into actions;
2. the refiner: an EDM state-plan denoiser conditioned on [goal, g_0, 1], the return dropped for
   half the batch (classifier-free guidance), the first state kept clean
   (:func:`ractd_cli.trajdiffuser.refiner_loss`);
3. the proposer: a causal transformer over (state, return-to-go) tokens from [s_0, g_0, goal],
   teacher forcing, MSE on the next token (state and return-to-go), as the authors train it.

Returns-to-go are undiscounted and normalised to [-1, 1] (normaliser ``return``). The artifact
(kind ``proposer``) holds the three networks (prefixes ``net`` proposer, ``refiner``, ``inverse``)
and the normalisers; ``rollout --planner trajdiffuser`` needs nothing else. Each network's steps
come from the preset (``proposer``, ``teacher``, ``inverse-dynamics``); ``--steps`` sets all three.
"""

from __future__ import annotations

import torch

from .. import trajdiffuser as td
from ..adapters import EnvAdapter, TaskSpec
from ..artifacts import Artifact, save_artifact
from ..data.load import load_episodes
from ..data.windows import Normalizer, make_windows
from ..diffusion import DISTANCES, SIGMA_DATA, SIGMA_MAX, SIGMA_MIN, EDMPrecond
from ..errors import UsageError
from ..models import ProposerConfig, normalizer_tensors, prefixed
from ..nets import make_denoiser_net
from ..proposer import make_proposer
from .common import TrainOptions
from .data import Source, build_task_data, default_dataset
from .fit import Method, train_method
from .loop import saved
from .teacher import fit_inverse_dynamics


class RefinerMethod(Method):
    """The Trajectory Diffuser's refiner: an EDM state-plan denoiser D(x; sigma | [goal, g_0, 1]), the
    return dropped for :data:`~ractd_cli.trajdiffuser.COND_DROPOUT` of the batch, the first state kept
    clean (:func:`ractd_cli.trajdiffuser.refiner_loss`). A part of the ``proposer`` artifact."""

    kind = "proposer"

    def __init__(self, view: TaskSpec, plans: Source, net_preset: str, *, distance: str, run_extra: dict, fingerprint: str | None):
        self.net = make_denoiser_net(net_preset, input_dim=view.obs_dim, global_cond_dim=td.refiner_cond_dim(view), horizon=view.horizon)
        self.model = EDMPrecond(self.net, sigma_data=SIGMA_DATA)
        self.distance, self.task, self.source, self.fingerprint = distance, view.name, plans, fingerprint
        self.run_name = f"trajdiffuser-refiner-{view.name}"
        self.run_extra = {**run_extra, "net": self.net.config, "distance": distance, "p_uncond": td.COND_DROPOUT}

    def loss(self, model, ema, batch, gen):
        cond = td.refiner_cond(batch["goal"], batch["g"][:, 0])
        return {"loss": td.refiner_loss(model, batch["x"], cond, generator=gen, distance=self.distance).mean()}


class ProposerMethod(Method):
    """The Trajectory Diffuser's proposer: a causal transformer over (state, return-to-go) tokens from
    [s_0, g_0, goal], teacher forcing, MSE on the next token, as its authors train it. A part of the
    ``proposer`` artifact."""

    kind = "proposer"

    def __init__(self, view: TaskSpec, plans: Source, preset: str, *, run_extra: dict, fingerprint: str | None):
        cond_dim = view.obs_dim + 1 + view.layout.goal_width(view)
        self.model = make_proposer(preset, x_dim=view.obs_dim + 1, cond_dim=cond_dim, horizon=view.horizon - 1)
        self.task, self.source, self.fingerprint = view.name, plans, fingerprint
        self.run_name = f"trajdiffuser-proposer-{view.name}"
        self.run_extra = {**run_extra, "net": self.model.config}

    def loss(self, model, ema, batch, gen):
        tok = td.tokens(batch["x"], batch["g"])
        return {"loss": ((model(tok, td.proposer_cond(batch["x"][:, 0], batch["g"][:, 0], batch["goal"])) - tok) ** 2).mean()}


def train_trajdiffuser(adapter: EnvAdapter, spec: TaskSpec, opts: TrainOptions, *, distance: str = "huber") -> Artifact:
    """Train the Trajectory Diffuser for ``spec`` and save it as one ``proposer`` artifact."""
    if distance not in DISTANCES:
        raise UsageError(f"unknown --distance {distance!r}; use one of {', '.join(DISTANCES)}")
    view = td.state_view(spec)
    dataset = opts.dataset or default_dataset(spec)
    windows = make_windows(load_episodes(adapter, spec, dataset), view)
    data = build_task_data(view, windows, dataset)
    returns = td.state_returns(windows)
    norms = {**data.normalizers, "return": Normalizer.fit(returns.reshape(-1, 1))}
    G = torch.as_tensor(norms["return"].normalize(returns.reshape(-1, 1))).reshape(-1)
    H, obs = view.horizon, view.obs_dim

    def gather(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        b = data.diffusion.gather(idx)  # x (B, H, obs) states, cond [s_0, goal block]
        goal = b["cond"][:, obs:]
        g = G[torch.as_tensor(windows.x_rows(data.diffusion_rows[idx].numpy())[0])]  # (B, H) the return-to-go at each planned state
        return {"x": b["x"], "g": g, "goal": goal}

    plans = Source(len(data.diffusion), gather)
    written_by = {"dataset": dataset, "view": {"horizon": H}}
    cfg = {kind: opts.config(kind, view) for kind in ("inverse-dynamics", "teacher", "proposer")}

    # 1. inverse dynamics
    fingerprint = data.windows.fingerprint
    inverse, res_inv, _ = fit_inverse_dynamics(view, data.transitions, opts, name=f"trajdiffuser-inverse-{spec.name}", run_extra=written_by,
                                               fingerprint=fingerprint)

    # 2. the return-guided refiner
    opts.seed_init()
    refiner = RefinerMethod(view, plans, opts.net_preset(view), distance=distance, run_extra=written_by, fingerprint=fingerprint)
    refiner_net = refiner.net
    res_ref = train_method(refiner, cfg["teacher"], opts)

    # 3. the proposer over (state, return-to-go) tokens
    opts.seed_init()
    prop = ProposerMethod(view, plans, opts.preset, run_extra=written_by, fingerprint=fingerprint)
    proposer = prop.model
    res_prop = train_method(prop, cfg["proposer"], opts)

    best = float(returns.max())
    return saved(save_artifact(
        {
            **prefixed(res_prop.ema.state_dict(), "net"),
            **prefixed(res_ref.ema.net.state_dict(), "refiner"),
            **prefixed(res_inv.ema.state_dict(), "inverse"),
            **normalizer_tensors(norms),
        },
        kind="proposer",
        task=spec.name,
        dataset=dataset,
        config={
            **ProposerConfig(sigma_data=SIGMA_DATA, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, horizon=H, planning=view.planning,
                             windows=view.windows, best_return=best).stored(),
            "net_kind": proposer.kind, "net": proposer.config,
            "refiner_kind": refiner_net.kind, "refiner": refiner_net.config,
            "inverse_kind": inverse.kind, "inverse": inverse.config,
            "p_uncond": td.COND_DROPOUT, "distance": distance,
            "train": {"proposer": cfg["proposer"].record(), "refiner": cfg["teacher"].record(), "inverse": cfg["inverse-dynamics"].record()},
            "preset": opts.preset,
        },
        losses={"proposer": res_prop.losses.get("loss", float("nan")), "refiner": res_ref.losses.get("loss", float("nan")),
                "inverse": res_inv.losses.get("loss", float("nan"))},
        loss_curve={"proposer": res_prop.loss_curve, "refiner": res_ref.loss_curve, "inverse": res_inv.loss_curve},
        speed={"proposer": res_prop.speed, "refiner": res_ref.speed, "inverse": res_inv.speed},
        runs=[res_inv.run, res_ref.run, res_prop.run],
        **opts.named(),
        data_fingerprint=fingerprint,
    ), res_prop, res_ref, res_inv)


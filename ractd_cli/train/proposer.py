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
from ..models import normalizer_tensors, prefixed
from ..nets import make_denoiser_net
from ..proposer import make_proposer
from .common import TrainOptions
from .data import Source, build_task_data, default_dataset
from .loop import saved, train
from .teacher import fit_inverse_dynamics


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
    x_index = torch.as_tensor(windows.x_index)[data.diffusion_rows]  # the windows the refiner trains on
    H, obs = view.horizon, view.obs_dim

    def gather(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        b = data.diffusion.gather(idx)  # x (B, H, obs) states, cond [s_0, goal block]
        goal = b["cond"][:, obs:]
        g = G[x_index[idx]]  # (B, H) the return-to-go at each planned state
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
    refiner_net = make_denoiser_net(opts.net_preset(view), input_dim=obs, global_cond_dim=td.refiner_cond_dim(view), horizon=H)
    refiner = EDMPrecond(refiner_net, sigma_data=SIGMA_DATA)

    def refiner_loss(model, ema, b, gen):
        cond = td.refiner_cond(b["goal"], b["g"][:, 0])
        return {"loss": td.refiner_loss(model, b["x"], cond, generator=gen, distance=distance).mean()}

    res_ref = train(refiner, refiner_loss, plans, cfg["teacher"], name=f"trajdiffuser-refiner-{spec.name}",
                    run_extra={**written_by, "net": refiner_net.config, "distance": distance, "p_uncond": td.COND_DROPOUT},
                    resume=opts.resume, show_progress=opts.show_progress, fingerprint=fingerprint)

    # 3. the proposer over (state, return-to-go) tokens
    opts.seed_init()
    cond_dim = obs + 1 + view.layout.goal_width(view)
    proposer = make_proposer(opts.preset, x_dim=obs + 1, cond_dim=cond_dim, horizon=H - 1)

    def proposer_loss(model, ema, b, gen):
        tok = td.tokens(b["x"], b["g"])
        return {"loss": ((model(tok, td.proposer_cond(b["x"][:, 0], b["g"][:, 0], b["goal"])) - tok) ** 2).mean()}

    res_prop = train(proposer, proposer_loss, plans, cfg["proposer"], name=f"trajdiffuser-proposer-{spec.name}",
                     run_extra={**written_by, "net": proposer.config}, resume=opts.resume, show_progress=opts.show_progress,
                     fingerprint=fingerprint)

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
            "method": "trajdiffuser",
            "net_kind": proposer.kind, "net": proposer.config,
            "refiner_kind": refiner_net.kind, "refiner": refiner_net.config,
            "inverse_kind": inverse.kind, "inverse": inverse.config,
            "horizon": H, "planning": view.planning, "windows": view.windows,
            "sigma_data": SIGMA_DATA, "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX,
            "p_uncond": td.COND_DROPOUT, "distance": distance,
            "best_return": best,
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


"""What a planner's first action looks like beside the data's, at the data's own states.

    python scripts/first_actions.py halfcheetah-medium-replay 4a5b0e2c c28486b9 19befaac
    python scripts/first_actions.py hopper-medium-replay 4a5b0e2c --sampler euler --nfe 15

For tasks that plan actions (MuJoCo; the planner executes the first action of each plan). States
s_n are drawn from the dataset (``--states``, uniform over its transitions, ``--seed``); each
planner (teacher or student artifact ids; a teacher uses ``--sampler``/``--nfe``, default its Heun
80) plans ``--draws`` times from each, with its own noise. Per planner, over states and action
dimensions:

- ``abs_mean``: mean |a| of the first planned action; ``saturated``: share with |a| > 0.95;
- ``mse_to_data``: mean (a - a_data)^2, a_data the action the data took at s_n;
- ``spread``: standard deviation of a across the draws at the same state (0: the noise is ignored,
  the planner is deterministic; a teacher that samples the data's spread of behaviour is not).

The data row gives the data actions' ``abs_mean`` and ``saturated``. Prints a table on stderr and
one JSON document on stdout. Seeded: the same arguments give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from ractd_cli.data.load import load_episodes
from ractd_cli.errors import RactdError, UsageError
from ractd_cli.registry import get_task
from ractd_cli.resolve import build_planner, load_for_planning
from ractd_cli.train.data import default_dataset

SATURATED = 0.95
"""|a| above which an action component counts as saturated (actions live in [-1, 1])."""


def data_states(adapter, spec, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` states of the task's dataset with their histories and the actions taken there:
    (past (n, h, obs_dim) in env units, a_data (n, act_dim))."""
    episodes = load_episodes(adapter, spec, default_dataset(spec))
    rng = np.random.default_rng(seed)
    sizes = np.array([len(e.actions) for e in episodes])
    flat = rng.choice(sizes.sum(), size=n, replace=True)
    ends = np.cumsum(sizes)
    past, actions = [], []
    for i in flat:
        k = int(np.searchsorted(ends, i, side="right"))
        t = int(i - (ends[k] - sizes[k]))
        rows = [max(t - j, 0) for j in range(spec.history - 1, -1, -1)]  # padded by the first state
        past.append(episodes[k].states[rows])
        actions.append(episodes[k].actions[t])
    return torch.as_tensor(np.stack(past)), np.stack(actions)


def first_action_stats(planner, past: torch.Tensor, a_data: np.ndarray, draws: int) -> dict:
    """The planner's first actions at ``past`` (``draws`` plans per state) against ``a_data``."""
    n = past.shape[0]
    x0, _ = planner.plan(past.repeat(draws, 1, 1), None)  # draw d of state i at row d * n + i
    a = x0[:, 0].cpu().numpy().reshape(draws, n, -1)
    return {
        "abs_mean": float(np.abs(a).mean()),
        "saturated": float((np.abs(a) > SATURATED).mean()),
        "mse_to_data": float(((a - a_data[None]) ** 2).mean()),
        "spread": float(a.std(axis=0).mean()) if draws > 1 else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task")
    ap.add_argument("models", nargs="+", help="teacher or student artifact ids")
    ap.add_argument("--sampler", default=None, help="a teacher's sampler (heun|euler|ancestral; default heun)")
    ap.add_argument("--nfe", type=int, default=None, help="a teacher's network calls per plan (default: the sampler's)")
    ap.add_argument("--states", type=int, default=256)
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        if args.states < 1 or args.draws < 1:
            raise UsageError("--states and --draws must be at least 1")
        adapter, spec = get_task(args.task)
        if spec.layout.open_loop:
            raise UsageError(f"{args.task} plans states, not actions; this script compares first actions (MuJoCo tasks)")
        torch.manual_seed(args.seed)
        past, a_data = data_states(adapter, spec, args.states, args.seed)
        rows = [{"model": "data", "abs_mean": float(np.abs(a_data).mean()), "saturated": float((np.abs(a_data) > SATURATED).mean())}]
        for ref in args.models:
            loaded = load_for_planning(ref, spec)
            student = loaded.art.kind == "student"
            planner = build_planner(loaded, spec, sampler=None if student else args.sampler, nfe=None if student else args.nfe,
                                    seed=args.seed, jit=False)
            rows.append({"model": loaded.art.id, "kind": loaded.art.kind, "sampler": planner.sampler_name,
                         "nfe": planner.nfe_paper, **first_action_stats(planner, past, a_data, args.draws)})
    except RactdError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"{'model':<18}{'sampler':<10}{'|a|':>7}{'|a|>0.95':>10}{'MSE to data':>13}{'spread':>9}", file=sys.stderr)
    for r in rows:
        cols = [f"{r[k]:.3f}" if k in r else "" for k in ("abs_mean", "saturated", "mse_to_data", "spread")]
        print(f"{r['model']:<18}{r.get('sampler', ''):<10}{cols[0]:>7}{cols[1]:>10}{cols[2]:>13}{cols[3]:>9}", file=sys.stderr)
    print(json.dumps({"task": args.task, "states": args.states, "draws": args.draws, "seed": args.seed, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

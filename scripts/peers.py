"""Standard offline RL on a task's own dataset, scored on the same episodes as `ractd rollout`.

Trains behaviour cloning, behaviour cloning on the best 10% of episodes, TD3+BC and IQL with d3rlpy
(its defaults; a well-kept library, not ours) on the Minari dataset `ractd fetch` made, then plays
each in the task's environment with the episode seeds `ractd rollout --seed S` uses (episode e
resets with seed S + e) and scores it on the task's scale. The JSON it writes is read by
`ractd bench --peers FILE`, which puts the peers beside the planners in the same table.

d3rlpy pins its own gymnasium, so this runs in an environment of its own, never ractd's:

    python -m venv .venv-peers
    .venv-peers/bin/pip install torch==2.13.0 d3rlpy==2.8.1 "gymnasium[mujoco]==1.0.0" h5py
    ractd envs --json > out/specs.json
    .venv-peers/bin/python scripts/peers.py hopper-medium-replay --specs out/specs.json \
        --dataset "$(ractd fetch hopper-medium-replay --source local --json | python -c 'import json,sys; print(json.load(sys.stdin)["path"])')" \
        --episodes 30 --seed 7 --out out/peers-hopper-medium-replay.json

Steps per method (`--steps-bc`, `--steps-rl`) default to the issue's comparable CPU budget: 20,000
for the two behaviour clonings, 50,000 for TD3+BC and IQL. One thread unless OMP_NUM_THREADS says.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

METHODS = {
    "bc": "BC",
    "bc-top10": "BC, best 10% of episodes",
    "td3+bc": "TD3+BC",
    "iql": "IQL",
}
TOP_FRACTION = 0.1


def load_episodes(dataset: Path) -> list[dict[str, np.ndarray]]:
    """The episodes of a Minari dataset folder (its data/main_data.hdf5), in order."""
    import h5py

    path = dataset / "data" / "main_data.hdf5"
    if not path.is_file():
        sys.exit(f"error: {path} not found; pass the folder `ractd fetch TASK --json` prints as path")
    with h5py.File(path, "r") as f:
        names = sorted(f.keys(), key=lambda n: int(n.split("_")[-1]))
        return [{k: np.asarray(f[n][k]) for k in ("observations", "actions", "rewards", "terminations", "truncations")} for n in names]


def mdp_dataset(episodes: list[dict[str, np.ndarray]]):
    """d3rlpy's dataset of transitions: each episode's T actions after its first T observations; an
    episode that neither terminates nor is truncated at its end (a cut-off recording) counts as a timeout."""
    import d3rlpy

    obs = np.concatenate([e["observations"][: len(e["actions"])] for e in episodes]).astype(np.float32)
    act = np.concatenate([e["actions"] for e in episodes]).astype(np.float32)
    rew = np.concatenate([e["rewards"] for e in episodes]).astype(np.float32)
    term = np.concatenate([e["terminations"] for e in episodes]).astype(np.float32)
    timeout = np.concatenate([np.r_[np.zeros(len(e["actions"]) - 1), 0.0 if e["terminations"][-1] else 1.0] for e in episodes])
    return d3rlpy.dataset.MDPDataset(obs, act, rew, term, timeouts=timeout.astype(np.float32))


def make_algo(method: str):
    import d3rlpy

    config = {"bc": d3rlpy.algos.BCConfig, "bc-top10": d3rlpy.algos.BCConfig,
              "td3+bc": d3rlpy.algos.TD3PlusBCConfig, "iql": d3rlpy.algos.IQLConfig}[method]
    return config().create(device="cpu:0")


def score_of(ret: float, scale: dict) -> float:
    return 100.0 * (ret - scale["min"]) / (scale["max"] - scale["min"])


def play(algo, spec: dict, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` episodes, episode e reset with seed ``seed + e`` (as `ractd rollout`)."""
    import gymnasium as gym

    returns = []
    for e in range(episodes):
        env = gym.make(spec["env_id"], max_episode_steps=spec["max_episode_steps"])
        obs, _ = env.reset(seed=seed + e)
        env.action_space.seed(seed + e)
        total, done = 0.0, False
        while not done:
            action = algo.predict(np.asarray(obs, np.float32)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        env.close()
    return returns


def task_spec(specs_file: Path, task: str) -> dict:
    doc = json.loads(specs_file.read_text())
    for adapter in doc.get("adapters", []):
        if task in adapter.get("specs", {}):
            return adapter["specs"][task]
    sys.exit(f"error: {specs_file} has no task {task}; write it with `ractd envs --json > {specs_file}`")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task")
    p.add_argument("--specs", type=Path, required=True, help="`ractd envs --json` written to a file")
    p.add_argument("--dataset", type=Path, required=True, help="the dataset folder (`ractd fetch TASK --json`'s path)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--steps-bc", type=int, default=20_000)
    p.add_argument("--steps-rl", type=int, default=50_000)
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=7, help="episode e resets with seed + e (ractd rollout's --seed)")
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"error: unknown method(s) {', '.join(unknown)}; use {', '.join(METHODS)}")
    spec = task_spec(args.specs, args.task)
    scale_name = spec.get("default_score_scale") or "d4rl"
    scale = spec["score_scales"][scale_name]
    import d3rlpy
    import torch

    episodes = load_episodes(args.dataset)
    meta = json.loads((args.dataset / "data" / "metadata.json").read_text())
    ep_returns = np.array([float(e["rewards"].sum()) for e in episodes])
    top = np.argsort(-ep_returns)[: max(1, math.ceil(TOP_FRACTION * len(episodes)))]
    rows = []
    for m in methods:
        d3rlpy.seed(args.train_seed)
        torch.manual_seed(args.train_seed)
        data = mdp_dataset([episodes[i] for i in sorted(top)] if m == "bc-top10" else episodes)
        steps = args.steps_bc if m.startswith("bc") else args.steps_rl
        algo = make_algo(m)
        start = time.perf_counter()
        algo.fit(data, n_steps=steps, n_steps_per_epoch=steps, show_progress=False, save_interval=10**9,
                 logger_adapter=d3rlpy.logging.NoopAdapterFactory())
        train_s = time.perf_counter() - start
        returns = play(algo, spec, args.episodes, args.seed)
        scores = np.array([score_of(r, scale) for r in returns])
        rows.append({"key": m, "method": f"{METHODS[m]} (d3rlpy, {steps} steps)", "steps": steps, "train_s": round(train_s, 1),
                     "score_mean": float(scores.mean()),
                     "score_stderr": float(scores.std(ddof=1) / math.sqrt(len(scores))) if len(scores) > 1 else 0.0,
                     "return_mean": float(np.mean(returns))})
        print(f"{rows[-1]['method']}: {rows[-1]['score_mean']:.1f} ± {rows[-1]['score_stderr']:.1f} ({train_s:.0f} s)", file=sys.stderr)
    doc = {"task": args.task, "dataset_id": meta.get("dataset_id"), "episodes": args.episodes, "seed": args.seed,
           "score_scale": scale_name, "library": f"d3rlpy {d3rlpy.__version__}", "torch_threads": torch.get_num_threads(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()

"""The paper's Figure 4 from nothing: `make sweep TASK=hopper-medium-replay` (score against training
steps of the RACTD student, one curve per reward weight).

Runs the chain a user would type, printing each `ractd` command before it runs, and skips every
step whose output the cache already holds:

    ractd fetch TASK --source local                 (a no-op when the dataset exists)
    ractd train-teacher --env TASK                  (unless an unconditioned teacher exists)
    ractd train-reward --env TASK                   (unless a reward model exists)
    ractd distill --env TASK --teacher T --reward R --reward-weight W --eval-every N --eval-episodes K
                                                    (per weight W, unless a student of T, R, W with
                                                     that evaluation exists)

then draws the curves (out/sweep-TASK.png), writes them as JSON beside it and prints a markdown
table: each weight's score at every evaluation. Each evaluation scores the student's saved weights
(its EMA) over K episodes of `ractd rollout --seed 0`; training is the same with or without it.
Extra arguments after `--` go to every training command (e.g. `-- --preset tiny`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from results import parse_with_extra, student, teacher_and_reward  # scripts/results.py: command runner and cache lookups

WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0, 1.5)
"""The reward weights of the paper's Figure 4."""


def markdown(curves: dict[str, list[dict]]) -> str:
    steps = sorted({p["step"] for c in curves.values() for p in c})
    lines = ["| reward weight | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for w, c in curves.items():
        at = {p["step"]: f"{p['score_mean']:.1f} ± {p['score_stderr']:.1f}" for p in c}
        lines.append(f"| {w} | " + " | ".join(at.get(s, "") for s in steps) + " |")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], task: str, scale: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for w, c in curves.items():
        steps = [p["step"] for p in c]
        mean = [p["score_mean"] for p in c]
        err = [p["score_stderr"] for p in c]
        ax.errorbar(steps, mean, yerr=err, marker="o", capsize=3, label=f"w = {w}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"normalised score ({scale})")
    ax.set_title(f"{task}: score by reward weight (paper Fig. 4)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS))
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--teacher", default=None, help="teacher id (default: the newest unconditioned one, trained if none)")
    p.add_argument("--reward", default=None, help="reward model id (default: the newest, trained if none)")
    p.add_argument("--out", type=Path, default=Path("out"))
    a, extra = parse_with_extra(p)
    task = a.task
    if a.eval_every < 1 or a.eval_episodes < 1:
        sys.exit("--eval-every and --eval-episodes must be at least 1")
    teacher, reward = teacher_and_reward(task, extra, a.teacher, a.reward)
    curves: dict[str, list[dict]] = {}
    scale = "d4rl"
    for w in a.weights:
        meta = student(task, teacher, reward, w, ["--reward", reward, "--reward-weight", str(w), "--eval-every", str(a.eval_every),
                                                  "--eval-episodes", str(a.eval_episodes), *extra], (a.eval_every, a.eval_episodes))
        curves[f"{w:g}"] = meta["config"]["eval_curve"]
        scale = curves[f"{w:g}"][-1].get("score_scale", scale)
    a.out.mkdir(parents=True, exist_ok=True)
    png, js = a.out / f"sweep-{task}.png", a.out / f"sweep-{task}.json"
    js.write_text(json.dumps({"task": task, "teacher": teacher, "reward": reward, "eval_every": a.eval_every,
                              "eval_episodes": a.eval_episodes, "curves": curves}, indent=2))
    plot(curves, task, scale, png)
    print(f"{task}: RACTD students of teacher {teacher} and reward model {reward}, {a.eval_episodes} episodes per point ({png}):\n")
    print(markdown(curves))


if __name__ == "__main__":
    main()

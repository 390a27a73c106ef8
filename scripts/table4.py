"""The paper's Table 4 from nothing: `make table4 TASK=hopper-medium-replay` (where the reward model
enters: unconditioned or reward-aware teacher, crossed with unconditioned or reward-aware student).

Runs the chain a user would type, printing each `ractd` command before it runs, and skips every
step whose output the cache already holds:

    ractd fetch TASK --source local                 (a no-op when the dataset exists)
    ractd train-teacher --env TASK                  (the unconditioned teacher, unless one exists)
    ractd train-reward --env TASK                   (unless a reward model exists)
    ractd train-teacher --env TASK --teacher-reward-weight V --reward R
                                                    (the reward-aware teacher, unless one of R and V exists)
    ractd distill --env TASK --teacher T --reward-weight 0          (per teacher T: the unconditioned student)
    ractd distill --env TASK --teacher T --reward R --reward-weight W   (per teacher T: the RACTD student)
    ractd rollout --env TASK --model S --episodes N --json          (each of the four students, one step)

then writes out/table4-TASK.json and prints the 2x2 table as markdown, each cell beside the paper's
figure (Table 4 for hopper-medium-replay, Table 10 for walker2d-medium). W is the task's reward weight
(Table 9) unless --student-weight says otherwise; the paper does not give the teacher's weight, so V
defaults to W. Extra arguments after `--` go to every training command (e.g. `-- --preset tiny`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from results import (  # scripts/results.py: the command runner, cache listing, id prefixes, the task's spec, the cached-or-distilled student
    artifacts,
    parse_with_extra,
    ractd,
    student,
    task_spec,
    teacher_and_reward,
)

from ractd_cli.artifacts import read_header

CELLS = (("unconditioned", "ctd"), ("unconditioned", "ractd"), ("reward-aware", "ctd"), ("reward-aware", "ractd"))
"""(teacher, student) of each cell, in the paper's reading order."""


def aware_teacher(task: str, reward: str, weight: float) -> str | None:
    """The id of a cached reward-aware teacher of ``reward`` at ``weight``, or None."""
    for t in artifacts(task, "teacher"):
        if t["parents"] == [reward] and read_header(Path(t["path"])).get("config", {}).get("reward_weight") == weight:
            return t["id"]
    return None


def markdown(cells: list[dict], scale: str) -> str:
    lines = ["| student \\ teacher | unconditioned teacher | reward-aware teacher |", "|---|---|---|"]
    for kind, label in (("ctd", "unconditioned student (CTD)"), ("ractd", "reward-aware student (RACTD)")):
        row = [label]
        for teacher in ("unconditioned", "reward-aware"):
            c = next(c for c in cells if c["teacher"] == teacher and c["student"] == kind)
            text = f"{c['score_mean']:.1f} ± {c['score_stderr']:.1f}"
            if c.get("paper"):
                text += f" (paper {c['paper']})"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + f"\n\nScores on the {scale} scale, mean ± standard error over the episodes."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--student-weight", type=float, default=None, help="the RACTD students' reward weight (default: the task's, Table 9)")
    p.add_argument("--teacher-weight", type=float, default=None, help="the reward-aware teacher's weight (default: the students')")
    p.add_argument("--teacher", default=None, help="unconditioned teacher id (default: the newest, trained if none)")
    p.add_argument("--reward", default=None, help="reward model id (default: the newest, trained if none)")
    p.add_argument("--out", type=Path, default=Path("out"))
    a, extra = parse_with_extra(p)
    task = a.task
    if a.episodes < 1:
        sys.exit("--episodes must be at least 1")
    spec = task_spec(task)
    w = spec["loss_weights"]["reward"] if a.student_weight is None else a.student_weight
    v = w if a.teacher_weight is None else a.teacher_weight
    if w <= 0 or v <= 0:
        sys.exit(f"the reward-aware weights must be > 0 (student {w:g}, teacher {v:g}); pass --student-weight / --teacher-weight")
    plain, reward = teacher_and_reward(task, extra, a.teacher, a.reward)
    if aware_teacher(task, reward, v) is None:
        ractd("train-teacher", "--env", task, "--teacher-reward-weight", f"{v:g}", "--reward", reward, *extra)
    aware = aware_teacher(task, reward, v)
    if aware is None:
        sys.exit("the reward-aware teacher was not found in the cache after its training")
    teachers = {"unconditioned": plain, "reward-aware": aware}
    scale = spec.get("default_score_scale") or "d4rl"
    cells = []
    for teacher_kind, kind in CELLS:
        weight = 0.0 if kind == "ctd" else w
        sid = student(task, teachers[teacher_kind], reward, weight, ["--reward", reward, "--reward-weight", f"{weight:g}", *extra])["id"]
        res = json.loads(ractd("rollout", "--env", task, "--model", sid, "--episodes", str(a.episodes), "--json", capture=True))
        key = f"{kind}-1" if teacher_kind == "unconditioned" else f"aware-teacher-{kind}-1"
        cells.append({"teacher": teacher_kind, "student": kind, "teacher_id": teachers[teacher_kind], "student_id": sid,
                      "reward_weight": weight, "score_mean": res["score_mean"], "score_stderr": res["score_stderr"],
                      "episodes": res["episodes"], "paper": spec["paper_scores"].get(key)})
        scale = res.get("score_scale", scale)
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / f"table4-{task}.json"
    out.write_text(json.dumps({"task": task, "reward": reward, "student_weight": w, "teacher_weight": v,
                               "episodes": a.episodes, "score_scale": scale, "cells": cells}, indent=2))
    print(f"{task}: where the reward model enters (paper Table 4), reward model {reward}, student weight {w:g}, "
          f"teacher weight {v:g}, {a.episodes} episodes per cell ({out}):\n")
    print(markdown(cells, scale))


if __name__ == "__main__":
    main()

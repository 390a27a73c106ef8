"""One task's results table from nothing: `make results TASK=hopper-medium-replay` (EPISODES=100).

Runs the chain a user would type, printing each `ractd` command before it runs, and skips every
step whose output the cache already holds:

    ractd fetch TASK --source local                 (a no-op when the dataset exists)
    ractd train-teacher --env TASK                  (unless a teacher exists)
    ractd train-reward --env TASK                   (unless a reward model exists)
    ractd distill --env TASK --reward-weight 0      (CTD, unless the latest teacher has one)
    ractd distill --env TASK                        (RACTD at the task's default weight, likewise)
    ractd bench --env TASK --episodes N --json      (-> out/results-TASK.json, plot beside it)

then prints the table as markdown, with the paper's figure for each row (`ractd envs --json`).
Extra arguments after `--` go to every training command (e.g. `-- --preset tiny`); `--teacher-args`
to train-teacher alone, `--bench-args` to bench (e.g. `--teacher-args "--plan-stride 8"
--bench-args "--follow track --replan"`, the maze2d-large recipe in docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from ractd_cli.artifacts import read_header
from ractd_cli.bench import data_rows, models_line  # the data's rows and the footer naming the models, as bench prints them
from ractd_cli.evaluate import PLAN_CHECK_RATES  # the adapter's checks of first plans (Maze2d), as bench names them

RACTD = os.environ.get("RACTD", "ractd")


def ractd(*args: str, capture: bool = False) -> str:
    """Run one `ractd` command, shown first; its JSON (stdout) when ``capture``."""
    print("$ " + shlex.join(["ractd", *args]), file=sys.stderr, flush=True)
    out = subprocess.run([RACTD, *args], stdout=subprocess.PIPE if capture else None, text=True)
    if out.returncode != 0:
        sys.exit(out.returncode)
    return out.stdout or ""


def artifacts(task: str, kind: str) -> list[dict]:
    """What the cache holds of ``kind`` for ``task``, newest first (not shown: it only looks)."""
    out = subprocess.run([RACTD, "cache", "list", "--env", task, "--kind", kind, "--json"], capture_output=True, text=True)
    return json.loads(out.stdout)["artifacts"] if out.returncode == 0 else []


def task_spec(task: str) -> dict:
    """The task's spec as `ractd envs --json` gives it."""
    for adapter in json.loads(ractd("envs", "--json", capture=True))["adapters"]:
        if task in (adapter.get("specs") or {}):
            return adapter["specs"][task]
    sys.exit(f"unknown task {task!r}; list the tasks with `ractd envs`")


def full_id(task: str, kind: str, prefix: str | None) -> str | None:
    """The full id of the cached ``kind`` artifact whose id starts with ``prefix`` (None: none asked)."""
    if prefix is None:
        return None
    found = [x["id"] for x in artifacts(task, kind) if x["id"].startswith(prefix)]
    if len(found) != 1:
        sys.exit(f"--{kind} {prefix}: {len(found)} cached {kind} artifacts of {task} match; list them with `ractd cache list --env {task}`")
    return found[0]


def cached_student(task: str, teacher: str, reward: str, weight: float, evaluation: tuple[int, int] | None = None) -> dict | None:
    """The header of a cached student of ``teacher`` (and ``reward`` when ``weight`` > 0) at reward
    ``weight``, trained with the evaluation ``evaluation`` = (every, episodes) (None: without one), or None."""
    for s in artifacts(task, "student"):
        if s["parents"] != ([teacher] if weight == 0 else [teacher, reward]):
            continue
        meta = read_header(Path(s["path"]))
        cfg = meta.get("config", {})
        ev = cfg.get("eval") or {}
        if cfg.get("reward_weight") == weight and ((ev.get("every"), ev.get("episodes")) if ev else None) == evaluation:
            return meta
    return None


def student(task: str, teacher: str, reward: str, weight: float, distill_args: Sequence[str],
            evaluation: tuple[int, int] | None = None) -> dict:
    """The header of the cached student :func:`cached_student` finds, made first by `ractd distill
    --env TASK --teacher TEACHER *distill_args` when the cache has none (the args must ask for
    ``weight`` and ``evaluation``)."""
    meta = cached_student(task, teacher, reward, weight, evaluation)
    if meta is None:
        ractd("distill", "--env", task, "--teacher", teacher, *distill_args)
        meta = cached_student(task, teacher, reward, weight, evaluation)
        if meta is None:
            sys.exit(f"the student of teacher {teacher} at reward weight {weight:g} was not found in the cache after its distill")
    return meta


def parse_with_extra(p: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
    """The script's own options, and what follows `--` (extra options of every training command)."""
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    return p.parse_args(argv[:cut]), argv[cut + 1 :]


def teacher_and_reward(task: str, extra: list[str], teacher: str | None = None, reward: str | None = None,
                       teacher_extra: Sequence[str] = ()) -> tuple[str, str]:
    """The task's data, unconditioned teacher and reward model, each made unless the cache holds one
    (or an id prefix is given): their full ids (newest first). ``teacher_extra``: options of
    train-teacher alone, after ``extra`` (so they win)."""
    ractd("fetch", task, "--source", "local")
    if teacher is None and not any(not t["parents"] for t in artifacts(task, "teacher")):
        ractd("train-teacher", "--env", task, *extra, *teacher_extra)
    if reward is None and not artifacts(task, "reward"):
        ractd("train-reward", "--env", task, *extra)
    return (full_id(task, "teacher", teacher) or [t for t in artifacts(task, "teacher") if not t["parents"]][0]["id"],
            full_id(task, "reward", reward) or artifacts(task, "reward")[0]["id"])


def settings_line(doc: dict) -> str:
    """The choices behind every row, for the table's header: planning kind, training windows, plan
    stride, initial noise and clamping (each as the bench JSON records it)."""
    keys = (("planning", "planning"), ("windows", "windows"), ("plan stride", "plan_stride"), ("x_T", "init_noise"), ("clamp", "clamp"))
    return "settings: " + ", ".join(f"{label} {doc[k]}" for label, k in keys if doc.get(k) is not None)


def markdown(doc: dict) -> str:
    success = any(r.get("success_rate") is not None for r in doc["rows"])
    checks = [k for k in PLAN_CHECK_RATES if any(r.get(k) is not None for r in doc["rows"])]
    head = ["method", "NFE", "ms / decision", "speed-up", f"score ({doc['score_scale']})"] + ["success"] * success
    head += [PLAN_CHECK_RATES[k] for k in checks] + ["paper"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["rows"]:
        score = "-" if r["score_mean"] is None else f"{r['score_mean']:.1f} ± {r['score_stderr']:.1f}"
        if r["score_mean"] is not None and r["episodes"] != doc["episodes"]:
            score += f" ({r['episodes']} episodes)"
        cells = [r["method"], str(r["nfe_paper"]), f"{r['ms_per_action']:.2f}", f"{r['speedup_vs_teacher']:.0f}x", score]
        cells += ["-" if r.get("success_rate") is None else f"{100 * r['success_rate']:.0f}%"] * success
        cells += ["-" if r.get(k) is None else f"{100 * r[k]:.0f}%" for k in checks]
        lines.append("| " + " | ".join(cells + [r.get("paper") or ""]) + " |")
    for label, score in data_rows(doc.get("data")):  # the data's own scores
        lines.append("| " + " | ".join([label, "-", "-", "-", score] + ["-"] * (success + len(checks)) + [""]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--teacher-episodes", type=int, default=None, help="episodes of the Heun teacher row (default: --episodes)")
    p.add_argument("--out", type=Path, default=Path("out"))
    p.add_argument("--teacher-args", default="", help='options of train-teacher alone, e.g. "--plan-stride 8 --batch-size 128 --steps 8000"')
    p.add_argument("--bench-args", default="", help='options of bench, e.g. "--follow track --replan" (Maze2d)')
    a, extra = parse_with_extra(p)
    task = a.task
    teacher, reward = teacher_and_reward(task, extra, teacher_extra=shlex.split(a.teacher_args))
    ctd = student(task, teacher, reward, 0.0, ["--reward-weight", "0", *extra])
    sigma = task_spec(task)["loss_weights"]["reward"]
    ractd_student = student(task, teacher, reward, sigma, ["--reward", reward, *extra])  # RACTD at the task's weight
    a.out.mkdir(parents=True, exist_ok=True)
    teacher_episodes = [] if a.teacher_episodes is None else ["--teacher-episodes", str(a.teacher_episodes)]
    doc = json.loads(ractd("bench", "--env", task, "--student", ractd_student["id"], "--ctd", ctd["id"], "--episodes", str(a.episodes), *teacher_episodes,
                           *shlex.split(a.bench_args), "--plot", str(a.out / f"results-{task}.png"), "--json", capture=True))
    (a.out / f"results-{task}.json").write_text(json.dumps(doc, indent=2))
    print(f"{task}, {doc['episodes']} episodes, on {doc['device']}" + (f", bench {a.bench_args}" if a.bench_args.strip() else "") + ":")
    print(settings_line(doc) + "\n")
    print(markdown(doc))
    print(f"\n{models_line(doc['rows'])}")


if __name__ == "__main__":
    main()

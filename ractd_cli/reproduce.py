"""``ractd reproduce``: the paper's chains from nothing, as a user would type them.

Each chain prints every ``ractd`` command before it runs it (in a child process: the same program,
``python -m ractd_cli``) and skips every step whose output the cache already holds; training
commands run with ``--resume``, so a stopped chain continues where it stopped when run again, also
inside a model's training:

    ractd fetch TASK --source local                 (a no-op when the dataset exists)
    ractd train-teacher --env TASK                  (unless an unconditioned teacher of the task's
                                                     windows and horizon exists)
    ractd train-reward --env TASK                   (unless a reward model exists)

then, by what is reproduced:

- ``table`` (the paper's Tables 1-2 and 11 for one task, :func:`results_table`): CTD (reward weight
  0) and RACTD at the task's weight (``TaskSpec.loss_weights``), then ``ractd bench --episodes N`` beside the paper's
  figures, written to out/results-TASK.json, .png and .md;
- ``sweep`` (Figure 4, :func:`reward_sweep`): one RACTD student per reward weight, each scored every
  ``--eval-every`` steps during training, plotted to out/sweep-TASK.png;
- ``table4`` (Table 4, :func:`where_reward_enters`): an unconditioned and a reward-aware teacher,
  crossed with a CTD and a RACTD student, each rolled out, to out/table4-TASK.json.

``train_args`` go to every training command (e.g. ``--preset tiny``); ``teacher_args`` to
train-teacher alone (after ``train_args``, so they win). With ``--jobs N`` the independent trainings
(the teacher beside R_psi, then the students) run N at a time (:meth:`Chain.train_all`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import stopping
from .adapters import spec_dict
from .artifacts import Artifact, list_artifacts
from .bench import markdown as bench_markdown
from .bench import models_line, settings_line
from .bench import table as bench_table
from .diffusion.ctm import MAX_TEACHER_STEPS
from .errors import RactdError, UsageError
from .models import RewardConfig, StudentConfig, TeacherConfig, spec_for, trained_seed
from .ui import err, progress, say_last

WHAT = ("table", "sweep", "table4")
"""What ``ractd reproduce`` makes."""

SWEEP_WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0, 1.5)
"""The reward weights of the paper's Figure 4."""

TABLE4_CELLS = (("unconditioned", "ctd"), ("unconditioned", "ractd"), ("reward-aware", "ctd"), ("reward-aware", "ractd"))
"""(teacher, student) of each cell of Table 4, in the paper's reading order."""


class ChainStopped(RactdError):
    """A command of the chain failed; its own error is printed above. Exit code: the command's."""

    def __init__(self, args: Sequence[str], code: int):
        super().__init__(f"`ractd {args[0]}` failed (its error is above); fix that and run the same `ractd reproduce` "
                         "command again: it continues where it stopped")
        self.exit_code = code


@dataclass
class Chain:
    """One task's chain: runs `ractd` commands and looks in the cache for what they made."""

    task: str
    train_args: list[str] = field(default_factory=list)
    jobs: int = 1
    """How many of the chain's independent trainings run at once (teacher and R_psi; the students),
    each process with an equal share of torch's threads (:meth:`train_all`)."""
    logs: Path = Path("out") / "logs"
    """Where the trainings that run side by side (``jobs`` > 1) write their output, one file each."""
    seed: int = field(init=False)
    """The seed ``train_args`` give every training command (``--seed K``, the last one winning; 0, the
    trainers' default, where they give none): the chain's teacher, R_psi and table students have it."""

    def __post_init__(self) -> None:
        self.seed = _number(self.train_args, "--seed", int) or 0

    def recipe(self, kind: str, extra_args: Sequence[str] = ()) -> dict[str, Any]:
        """The training recipe the chain's command for ``kind`` (``teacher``, ``reward``, ``student``)
        records (``config.train`` less device, checkpoint cadence and seed, and ``config.preset``),
        from the preset, ``--steps``, ``--batch-size``, ``--lr`` and ``--precision`` of ``train_args``
        then ``extra_args`` (the last one winning; the trainers' defaults where none is given)."""
        from .registry import get_task
        from .train.common import TrainOptions

        args = [*self.train_args, *extra_args]
        opts = TrainOptions(preset=_option(args, "--preset") or "quick", steps=_number(args, "--steps", int),
                            batch_size=_number(args, "--batch-size", int), lr=_number(args, "--lr", float),
                            precision=_option(args, "--precision") or "fp32", device="cpu")
        train = {k: v for k, v in opts.config(kind, get_task(self.task)[1]).record().items() if k not in RECIPE_FREE}
        return {"preset": opts.preset, "train": train}

    def ractd(self, *args: str, capture: bool = False) -> str:
        """Run one `ractd` command, shown first; its JSON (stdout) when ``capture``."""
        child = stopping.start(_shown(args), stdout=subprocess.PIPE if capture else None, text=True)
        try:
            out, _ = child.communicate()
        except KeyboardInterrupt:
            stopping.stop([child])
            raise
        if child.returncode != 0:
            raise ChainStopped(args, child.returncode)
        return out or ""

    def train_all(self, commands: Sequence[Sequence[str]]) -> None:
        """Run independent training commands on the task, each ``(command, *args)``, with
        ``--resume``: a model whose training was stopped continues from its checkpoint (one with none
        starts from scratch). One after the other, or ``jobs`` at a time, each with 1/``jobs`` of
        torch's threads, its output in a file of :attr:`logs` and one progress bar for all. When one
        fails the others still finish (their models are kept), then the chain stops with the failed
        one's error; on Ctrl-C every running training keeps its checkpoint, as a single one does."""
        argvs = [[c[0], "--env", self.task, "--resume", *c[1:]] for c in commands]
        if self.jobs == 1 or len(argvs) < 2:
            for argv in argvs:
                self.ractd(*argv)
            return
        _side_by_side(argvs, self.jobs, self.logs, self.task)

    def artifacts(self, kind: str) -> list[Artifact]:
        """What the cache holds of ``kind`` for the task (headers only), newest first (not shown: it only looks)."""
        return [a for a in list_artifacts() if a.kind == kind and a.task == self.task]

    def spec(self) -> dict[str, Any]:
        """The task's spec as `ractd envs --json` gives it (:func:`~ractd_cli.adapters.spec_dict`)."""
        from .registry import get_task

        return spec_dict(get_task(self.task)[1])

    def full_id(self, kind: str, prefix: str | None) -> str | None:
        """The full id of the cached ``kind`` artifact whose id starts with ``prefix`` (None: none asked)."""
        if prefix is None:
            return None
        found = [x.id for x in self.artifacts(kind) if x.id.startswith(prefix)]
        if len(found) != 1:
            raise UsageError(f"--{kind} {prefix}: {len(found)} cached {kind} artifacts of {self.task} match; "
                             f"list them with `ractd cache list --env {self.task}`")
        return found[0]

    def teacher_and_reward(self, teacher: str | None = None, reward: str | None = None,
                           teacher_args: Sequence[str] = ()) -> tuple[str, str]:
        """The task's data, unconditioned teacher and reward model, each made unless the cache holds
        one (or an id prefix is given): their full ids (newest first)."""
        self.ractd("fetch", self.task, "--source", "local")
        todo = []
        if teacher is None and not self.plain_teachers(teacher_args):
            todo.append(("train-teacher", *self.train_args, *teacher_args))
        if reward is None and not self.task_rewards():
            todo.append(("train-reward", *self.train_args))
        self.train_all(todo)
        plain = [] if teacher is not None else self.plain_teachers(teacher_args)
        rewards = [] if reward is not None else self.task_rewards()
        if (teacher is None and not plain) or (reward is None and not rewards):
            raise RactdError(f"no teacher or reward model of {self.task} in the cache after training them; "
                             f"see `ractd cache list --env {self.task}`")
        return self.full_id("teacher", teacher) or plain[0].id, self.full_id("reward", reward) or rewards[0].id

    def plain_teachers(self, teacher_args: Sequence[str] = ()) -> list[Artifact]:
        """The task's cached unconditioned teachers trained with the chain's recipe and
        ``teacher_args`` (:meth:`recipe`), newest first; without ``teacher_args``, only those
        that also plan as the task does by default (its training windows, and its horizon or a
        preset's) and were trained with the chain's :attr:`seed`: a teacher trained with another
        ``--steps``, ``--windows``, ``--horizon`` or ``--seed`` is an experiment, not the table's."""
        from .registry import get_task

        spec = get_task(self.task)[1]
        recipe = self.recipe("teacher", teacher_args)
        plain = [t for t in self.artifacts("teacher") if not t.meta.get("parents") and _trained_with(t, recipe)]
        if teacher_args:
            return plain

        # the task's horizon, or one a preset of the task sizes it to (Preset.horizon)
        horizons = {spec.horizon, *(o["horizon"] for o in spec.presets.values() if o.get("horizon") is not None)}

        def default_plans(t: Artifact) -> bool:
            try:
                trained = spec_for(t, spec)
            except UsageError:  # plans otherwise than the task now does (retrain it)
                return False
            return trained.windows == spec.windows and trained.horizon in horizons and trained_seed(t) == self.seed

        return [t for t in plain if default_plans(t)]

    def task_rewards(self) -> list[Artifact]:
        """The task's cached reward models fitted to its own return-to-go and reading it as its plans
        are read (``TaskSpec.gamma``, ``termination_penalty``, ``reward_input``) with the chain's
        :attr:`seed`, newest first: one trained with another ``--gamma``, ``--termination-penalty``,
        ``--reads`` or ``--seed`` is an experiment, not the table's (nor one from before these were
        recorded)."""
        from .registry import get_task

        own, recipe = RewardConfig.fitted_as(get_task(self.task)[1]), self.recipe("reward")
        return [r for r in self.artifacts("reward")
                if RewardConfig.of(r) == own and trained_seed(r) == self.seed and _trained_with(r, recipe)]

    def cached_student(self, teacher: str, reward: str, weight: float, evaluation: tuple[int, int] | None = None,
                       selected: bool = False, seed: int | None = None) -> dict[str, Any] | None:
        """The header of a cached student of ``teacher`` (and ``reward`` when ``weight`` > 0) at reward
        ``weight``, trained with the evaluation ``evaluation`` = (every, episodes) (None: without one)
        and distill ``seed`` (None: :attr:`seed`), holding its last weights or (``selected``) those
        chosen on online score (``--keep best``)."""
        seed = self.seed if seed is None else seed
        spec, recipe = self.spec(), self.recipe("student")
        scale = spec["reward_scale"] if weight > 0 else 1.0  # a student of today's weighting
        alpha, beta = spec["loss_weights"]["ctm"], spec["loss_weights"]["dsm"]
        for a in self.artifacts("student"):
            if list(a.meta.get("parents") or []) != ([teacher] if weight == 0 else [teacher, reward]):
                continue
            header, c = StudentConfig.of(a), a.config
            ev = header.eval or {}
            if (header.reward_weight == weight and header.reward_scale == scale and (header.selection is not None) == selected
                    and ((ev.get("every"), ev.get("episodes")) if ev else None) == evaluation and header.seed == seed
                    and (header.ctm_weight, header.dsm_weight) == (alpha, beta) and _trained_with(a, recipe)
                    and c.get("max_teacher_steps", MAX_TEACHER_STEPS) == MAX_TEACHER_STEPS and "ode_pairs" not in c
                    and c.get("weights", "raw") == "raw"):
                return a.meta
        return None

    def students(self, wanted: Sequence["Wanted"]) -> list[dict[str, Any]]:
        """The headers of the students :meth:`cached_student` finds for ``wanted``, each made first
        by `ractd distill --env TASK --teacher TEACHER *distill_args *train_args [--seed SEED]` when
        the cache has none (:meth:`train_all`, ``jobs`` at a time; a command two students share, as
        the two of a ``--keep both`` run do, runs once). A student's args must ask for its ``weight``,
        ``evaluation`` and, when ``selected``, ``--keep best`` or ``both``; ``seed`` None is
        :attr:`seed`, which ``train_args`` already give."""
        def cached(w: Wanted) -> dict[str, Any] | None:
            return self.cached_student(w.teacher, w.reward, w.weight, w.evaluation, w.selected, w.seed)

        todo = [w for w in wanted if cached(w) is None]
        commands = [("distill", "--teacher", w.teacher, *w.distill_args, *self.train_args,
                     *(["--seed", str(w.seed)] if w.seed is not None and w.seed != self.seed else [])) for w in todo]
        self.train_all(list(dict.fromkeys(commands)))  # a `--keep both` run makes two wanted students
        found = []
        for w in wanted:
            meta = cached(w)
            if meta is None:
                raise RactdError(f"the student of teacher {w.teacher[:8]} at reward weight {w.weight:g}, seed "
                                 f"{self.seed if w.seed is None else w.seed}, is not in the cache after its distill; see `ractd cache list`")
            found.append(meta)
        return found


@dataclass(frozen=True)
class Wanted:
    """A student a chain needs (:meth:`Chain.students`): of ``teacher`` (and ``reward`` when
    ``weight`` > 0), distilled by ``distill_args``, with the online evaluation ``evaluation`` =
    (every, episodes) or None, its selected weights (``--keep best``) when ``selected``, and distill
    ``seed`` (None: the chain's)."""

    teacher: str
    reward: str
    weight: float
    distill_args: tuple[str, ...]
    evaluation: tuple[int, int] | None = None
    selected: bool = False
    seed: int | None = None


def _shown(argv: Sequence[str]) -> list[str]:
    """Print ``$ ractd <argv>`` (what the chain runs next, as a user would type it) and return the
    command line that runs it in a child process: this program, ``python -m ractd_cli``."""
    err.print("$ " + shlex.join(["ractd", *argv]), markup=False, highlight=False, soft_wrap=True)
    return [sys.executable, "-m", "ractd_cli", *argv]


def _side_by_side(argvs: Sequence[Sequence[str]], jobs: int, logs: Path, task: str) -> None:
    """Run the `ractd` commands ``argvs`` as child processes, ``jobs`` at a time, each with
    1/``jobs`` of torch's threads and its output (progress, errors) in its own file under ``logs``;
    one progress bar counts them (:meth:`Chain.train_all`)."""
    import os
    import time

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    logs.mkdir(parents=True, exist_ok=True)
    waiting = list(enumerate(argvs, 1))
    running: dict[subprocess.Popen, tuple[Sequence[str], Path, Any]] = {}
    failed: list[tuple[Sequence[str], Path, int]] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with progress(f"{len(argvs)} trainings, {jobs} at a time, {threads} thread(s) each", len(argvs)) as advance:
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    k, argv = waiting.pop(0)
                    log = logs / f"{task}-{stamp}-{k}-{argv[0]}.log"
                    command = _shown(argv)
                    err.print(f"  its output: {log}", markup=False, highlight=False, soft_wrap=True)
                    out = open(log, "w")  # noqa: SIM115 (closed when the process ends)
                    child = stopping.start(command, env, stdout=subprocess.DEVNULL, stderr=out)
                    running[child] = (argv, log, out)
                time.sleep(0.5)
                for child in [c for c in running if c.poll() is not None]:
                    argv, log, out = running.pop(child)
                    out.close()
                    if child.returncode:
                        failed.append((argv, log, child.returncode))
                    advance(1)
        except KeyboardInterrupt:  # passed on to every child: each keeps its checkpoint
            stopping.stop(list(running))
            for _, _, out in running.values():
                out.close()
            raise
    if failed:
        argv, log, code = failed[0]
        said = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(("error:", "interrupted"))]
        say_last(said[-1] if said else f"error: `ractd {argv[0]}` failed with exit code {code}; its output is in {log}")
        raise ChainStopped(argv, code)


def _option(args: Sequence[str], name: str) -> str | None:
    """The value of the last ``name X`` or ``name=X`` in ``args`` (None: not there)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def _number(args: Sequence[str], name: str, kind: type) -> Any:
    """:func:`_option` as an int or float; a one-line UsageError when it is not one."""
    value = _option(args, name)
    try:
        return None if value is None else kind(value)
    except ValueError:
        raise UsageError(f"--train-args: {name} {value} is not {'an integer' if kind is int else 'a number'}") from None


RECIPE_FREE = ("device", "checkpoint_every", "seed")
"""What a model's ``config.train`` records that does not tell its recipe apart: where it trained,
how often it was checkpointed, and its seed (matched on its own)."""


def _trained_with(art: Artifact, recipe: dict[str, Any]) -> bool:
    """``art`` was trained with ``recipe`` (:meth:`Chain.recipe`, the chain's own command's): a model
    trained with other ``--steps``, ``--batch-size``, ``--lr`` or preset is an experiment."""
    c = art.meta.get("config") or {}
    recorded = {k: v for k, v in (c.get("train") or {}).items() if k not in RECIPE_FREE}
    return {"preset": c.get("preset"), "train": recorded} == recipe


# --------------------------------------------------------------------------------------- table


def results_table(chain: Chain, *, episodes: int, teacher_episodes: int | None, out: Path,
                  teacher_args: Sequence[str] = (), bench_args: Sequence[str] = (),
                  selection: tuple[int, int] | None = None, seeds: int = 1) -> dict[str, Any]:
    """The task's table from nothing: teacher, reward model, CTD and RACTD at the task's weight, then
    bench over ``episodes`` (the Heun teacher row over ``teacher_episodes``). Writes out/results-TASK.json
    (bench's JSON), its plot and markdown, and prints the table; returns the JSON document.

    ``seeds`` > 1: CTD and RACTD are each distilled with ``--seed`` K to K + ``seeds`` - 1 (K: the
    chain's :attr:`Chain.seed`, 0 by default) from the same teacher and reward model; seed K's are the
    table's students (their multi-step rows too), the
    others one row each, and bench adds each kind's mean and standard error across the seeds and
    RACTD - CTD (:func:`~ractd_cli.bench.across_seeds`): how much of a difference training's own
    randomness makes, which the episodes' standard errors do not show.

    ``selection`` = (every, episodes): every student (each seed's CTD and RACTD) is distilled scored
    online every ``every`` steps on ``episodes`` episodes and saved twice from that one run
    (``distill --keep both``): its last weights, the table's rows as without selection, and those of
    its best evaluation (the RACTD authors' protocol), benched as rows of their own beside them."""
    teacher, reward = chain.teacher_and_reward(teacher_args=teacher_args)
    sigma = chain.spec()["loss_weights"]["reward"]  # RACTD at the task's weight
    ctd_args, ractd_args = ("--reward-weight", "0"), ("--reward", reward)
    select = () if selection is None else ("--eval-every", str(selection[0]), "--eval-episodes", str(selection[1]), "--keep", "both")
    kinds = [(0.0, (*ctd_args, *select)), (sigma, (*ractd_args, *select))]
    seeded = [(None, *k) for k in kinds] + [(seed, *k) for seed in range(chain.seed + 1, chain.seed + seeds) for k in kinds]
    wanted = [Wanted(teacher, reward, weight, args, selection, seed=seed) for seed, weight, args in seeded]
    if selection is not None:  # the same runs' selected weights
        wanted += [Wanted(teacher, reward, weight, args, selection, selected=True, seed=seed) for seed, weight, args in seeded]
    ctd, ractd_student, *others = chain.students(wanted)  # made `jobs` at a time where the cache lacks them
    more = [] if teacher_episodes is None else ["--teacher-episodes", str(teacher_episodes)]
    more += [arg for meta in others for arg in ("--also", meta["id"])]
    out.mkdir(parents=True, exist_ok=True)
    doc = json.loads(chain.ractd("bench", "--env", chain.task, "--student", ractd_student["id"], "--ctd", ctd["id"],
                                 "--episodes", str(episodes), *more, *bench_args,
                                 "--plot", str(out / f"results-{chain.task}.png"), "--json", capture=True))
    (out / f"results-{chain.task}.json").write_text(json.dumps(doc, indent=2))
    extra = f", bench {shlex.join(bench_args)}" if bench_args else ""
    print(f"{chain.task}, {doc['episodes']} episodes, on {doc['device']}{extra}:")
    print(settings_line(doc) + "\n")
    print(bench_markdown(*bench_table(doc)))
    print(f"\n{models_line(doc['rows'])}")
    return doc


# --------------------------------------------------------------------------------------- sweep


SWEEP_STEP_COLUMNS = 12
"""The most evaluation steps the sweep's markdown shows as columns; longer curves are in its JSON and plot."""


def sweep_markdown(curves: dict[str, list[dict]]) -> str:
    """Each reward weight's curve summed up (:func:`~ractd_cli.models.curve_summary`: evaluations,
    their mean ± its standard error across them, best and last point) and, for curves of at most
    :data:`SWEEP_STEP_COLUMNS` evaluations, its score at every step, as markdown tables."""
    from .models import curve_summary

    lines = ["| reward weight | evaluations | mean over them | best (step) | last (step) |", "|---|---|---|---|---|"]
    for w, c in curves.items():
        e = curve_summary(c)
        if e is None:
            continue
        spread = f" ± {e['stderr']:.1f}" if e["stderr"] is not None else ""
        lines.append(f"| {w} | {e['evaluations']} | {e['mean']:.1f}{spread} | {e['best']:.1f} ({e['best_step']}) | {e['last']:.1f} ({e['last_step']}) |")
    steps = sorted({p["step"] for c in curves.values() for p in c})
    if len(steps) > SWEEP_STEP_COLUMNS:
        return "\n".join(lines)
    lines += ["", "| reward weight | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for w, c in curves.items():
        at = {p["step"]: f"{p['score_mean']:.1f} ± {p['score_stderr']:.1f}" for p in c}
        lines.append(f"| {w} | " + " | ".join(at.get(s, "") for s in steps) + " |")
    return "\n".join(lines)


def reward_sweep(chain: Chain, *, weights: Sequence[float], eval_every: int, eval_episodes: int, out: Path,
                 teacher: str | None = None, reward: str | None = None) -> dict[str, Any]:
    """The paper's Figure 4: one RACTD student per reward weight, scored every ``eval_every`` steps over
    ``eval_episodes`` episodes of `ractd rollout --seed 0` (its EMA weights; training is the same
    with or without the evaluations). Writes out/sweep-TASK.png and .json, prints the table."""
    from .models import curve_summary
    from .plots import plot_sweep

    teacher, reward = chain.teacher_and_reward(teacher, reward)
    curves: dict[str, list[dict]] = {}
    scale = "d4rl"
    evaluation = (eval_every, eval_episodes)
    made = chain.students([Wanted(teacher, reward, w, ("--reward", reward, "--reward-weight", str(w), "--eval-every", str(eval_every),
                                                       "--eval-episodes", str(eval_episodes)), evaluation) for w in weights])
    for w, meta in zip(weights, made):
        curves[f"{w:g}"] = meta["config"]["eval_curve"]
        scale = curves[f"{w:g}"][-1].get("score_scale", scale)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"sweep-{chain.task}.png", out / f"sweep-{chain.task}.json"
    doc = {"task": chain.task, "teacher": teacher, "reward": reward, "eval_every": eval_every, "eval_episodes": eval_episodes,
           "score_scale": scale, "curves": curves, "summaries": {w: curve_summary(c) for w, c in curves.items()}}
    js.write_text(json.dumps(doc, indent=2))
    plot_sweep(curves, chain.task, scale, png)
    print(f"{chain.task}: RACTD students of teacher {teacher[:8]} and reward model {reward[:8]}, {eval_episodes} episodes per point ({png}):\n")
    print(sweep_markdown(curves))
    return doc


# -------------------------------------------------------------------------------------- table4


def aware_teacher(chain: Chain, reward: str, weight: float) -> str | None:
    """The id of a cached reward-aware teacher of ``reward`` at ``weight``, or None."""
    recipe = chain.recipe("teacher")
    for t in chain.artifacts("teacher"):
        if (list(t.meta.get("parents") or []) == [reward] and TeacherConfig.of(t).teacher_reward_weight == weight
                and _trained_with(t, recipe)):
            return t.id
    return None


def table4_markdown(cells: list[dict], scale: str) -> str:
    """The 2x2 table, each cell beside the paper's figure where it has one."""
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


def where_reward_enters(chain: Chain, *, episodes: int, out: Path, student_weight: float | None = None,
                        teacher_weight: float | None = None, teacher: str | None = None,
                        reward: str | None = None) -> dict[str, Any]:
    """The paper's Table 4 (Table 10 for walker2d-medium): an unconditioned and a reward-aware teacher
    (`train-teacher --teacher-reward-weight V`), each distilled to a CTD and a RACTD student at weight
    W (the task's, ``TaskSpec.loss_weights``, unless ``student_weight``; the paper does not give V, so it defaults to
    W), each rolled out over ``episodes``. Writes out/table4-TASK.json, prints the table."""
    spec = chain.spec()
    w = spec["loss_weights"]["reward"] if student_weight is None else student_weight
    v = w if teacher_weight is None else teacher_weight
    if w <= 0 or v <= 0:
        raise UsageError(f"the reward-aware weights must be > 0 (student {w:g}, teacher {v:g}); pass --student-weight / --teacher-weight")
    plain, reward = chain.teacher_and_reward(teacher, reward)
    if aware_teacher(chain, reward, v) is None:
        chain.train_all([("train-teacher", "--teacher-reward-weight", f"{v:g}", "--reward", reward, *chain.train_args)])
    aware = aware_teacher(chain, reward, v)
    if aware is None:
        raise RactdError("the reward-aware teacher is not in the cache after its training; see `ractd cache list`")
    teachers = {"unconditioned": plain, "reward-aware": aware}
    scale = spec.get("default_score_scale") or "d4rl"
    cells = []
    weights = [0.0 if kind == "ctd" else w for _, kind in TABLE4_CELLS]
    made = chain.students([Wanted(teachers[t], reward, weight, ("--reward", reward, "--reward-weight", f"{weight:g}"))
                           for (t, _), weight in zip(TABLE4_CELLS, weights)])
    for (teacher_kind, kind), weight, student in zip(TABLE4_CELLS, weights, made):
        sid = student["id"]
        res = json.loads(chain.ractd("rollout", "--env", chain.task, "--model", sid, "--episodes", str(episodes), "--json", capture=True))
        key = f"{kind}-1" if teacher_kind == "unconditioned" else f"aware-teacher-{kind}-1"
        cells.append({"teacher": teacher_kind, "student": kind, "teacher_id": teachers[teacher_kind], "student_id": sid,
                      "reward_weight": weight, "score_mean": res["score_mean"], "score_stderr": res["score_stderr"],
                      "episodes": res["episodes"], "paper": spec["paper_scores"].get(key)})
        scale = res.get("score_scale", scale)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"table4-{chain.task}.json"
    doc = {"task": chain.task, "reward": reward, "student_weight": w, "teacher_weight": v, "episodes": episodes,
           "score_scale": scale, "cells": cells}
    path.write_text(json.dumps(doc, indent=2))
    print(f"{chain.task}: where the reward model enters (paper Table 4), reward model {reward[:8]}, student weight {w:g}, "
          f"teacher weight {v:g}, {episodes} episodes per cell ({path}):\n")
    print(table4_markdown(cells, scale))
    return doc

"""``ractd bench``: every planner of a task side by side, same teacher, same machine, one run.

Rows: the EDM teacher (Heun, 80 bins), Euler/DDIM and ancestral/DDPM at 15 steps, the CTD
student (reward weight 0) if one exists, the RACTD student at 1-4 steps, and, if the task has a
Trajectory Diffuser, its latest: the proposal alone (K=0) and refined by K=1 and K=5 guided Euler
steps of its refiner. Per row: NFE,
per-decision latency at batch 1 (median of >= 50 timed calls and >= 1 s of calls after warm-up,
with min and max), speed-up over the teacher, and the normalised score over rollouts. The bare
network forward time is reported too, timed alternately with the one-step student so that their
ratio (the sampler's overhead) is not moved by the machine's speed drifting during the run.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .accel import CudaGraphs, frozen
from .adapters import EnvAdapter, TaskSpec, make_env, resolve_score_scale
from .artifacts import Artifact, list_artifacts, load_artifact
from .errors import UsageError
from .evaluate import PLAN_CHECK_RATES, Execution, PolicyRecipe, RolloutResult, check_workers, run_episodes
from .models import StudentConfig, resolve_device, sigma_label
from .planner import Planner, Sampling
from .resolve import TrajDiffuserOptions, newest_student


@dataclass
class Row:
    key: str
    """Stable name of the row (``ractd-1``), for the paper's figure (``TaskSpec.paper_scores``)."""
    method: str
    model_id: str
    sampler: str
    nfe_budget: int
    refine_steps: int | None = None
    """Set for Trajectory Diffuser rows (``model_id`` is then the ``proposer`` artifact)."""


def pick_students(spec: TaskSpec, student: str | None = None, ctd: str | None = None) -> tuple[Artifact | None, Artifact | None]:
    """The RACTD and the CTD student to bench (either None when the cache has none).

    RACTD: ``student`` (an id, prefix or path) when given, else the newest student of the task at
    the task's own reward weight sigma (``TaskSpec.loss_weights``, what ``distill`` uses by
    default), else the newest at any weight > 0. CTD (reward weight 0): ``ctd`` when given, else
    the newest distilled from the RACTD student's teacher. Both must share one teacher (a
    UsageError says which to pass when they do not)."""
    found = [a for a in list_artifacts() if a.kind == "student" and a.task == spec.name]
    if student is not None:
        ractd = load_artifact(student, kind="student", task=spec.name)
        if not StudentConfig.of(ractd).rewarded:
            raise UsageError(f"--student {ractd.id[:8]} has reward weight 0 (a CTD student); pass it as --ctd, and a RACTD student as --student")
    else:
        ractd = newest_student(spec, rewarded=True)
    if ctd is not None:
        plain = load_artifact(ctd, kind="student", task=spec.name)
        if (header := StudentConfig.of(plain)).rewarded:
            raise UsageError(f"--ctd {plain.id[:8]} has reward weight {header.reward_weight:g} (a RACTD student); "
                             "pass one distilled with --reward-weight 0")
        if ractd is not None and plain.meta["parents"][0] != ractd.meta["parents"][0]:
            raise UsageError(f"--ctd {plain.id[:8]} and the RACTD student {ractd.id[:8]} come from different teachers "
                             f"({plain.meta['parents'][0][:8]}, {ractd.meta['parents'][0][:8]}); bench compares the students of one teacher")
    else:
        plain = next((a for a in found if not StudentConfig.of(a).rewarded
                      and (ractd is None or a.meta["parents"][0] == ractd.meta["parents"][0])), None)
    return ractd, plain


def _latest_trajdiffuser(task: str) -> Artifact | None:
    """The newest Trajectory Diffuser of ``task`` (a ``proposer`` artifact of the paper's method)."""
    return next((a for a in list_artifacts() if a.kind == "proposer" and a.task == task and a.config.get("method") == "trajdiffuser"), None)


def student_label(art: Artifact, *, name_seed: bool = False) -> str:
    """A student row's name from its artifact: CTD or RACTD with its reward weight sigma, its distill
    seed (where it is not 0, or always with ``name_seed``), and which weights it holds: the last
    step's, or (``--keep best``) those selected on online score."""
    header = StudentConfig.of(art)
    name = f"RACTD student, sigma {header.sigma_label}" if header.rewarded else "CTD student"
    seed = f", distill seed {header.seed}" if header.seed or name_seed else ""
    sel = header.selection
    if sel:
        return f"{name}{seed}, selected on online score at step {sel['step']} (the authors' protocol; optimistic)"
    return f"{name}{seed}, last weights"


def bench_rows(spec: TaskSpec, student: str | None = None, ctd: str | None = None, also: Sequence[str] = ()) -> list[Row]:
    """The methods to compare, all on one teacher: the RACTD student's parent when there is one,
    else the CTD student's, else the newest teacher (students chosen by :func:`pick_students`).
    ``also``: more students of that teacher (ids or paths), one one-step row each after the others,
    named by :func:`student_label` (e.g. the same student selected on online score, or one distilled
    with another ``--seed``: :func:`across_seeds` then adds their mean)."""
    ractd, plain = pick_students(spec, student, ctd)
    parent = ractd or plain
    teacher_id = parent.meta["parents"][0] if parent else load_artifact("latest", kind="teacher", task=spec.name).id
    extra = [load_artifact(ref, kind="student", task=spec.name) for ref in also]
    for art in extra:
        if art.meta["parents"][0] != teacher_id:
            raise UsageError(f"--also {art.id[:8]} comes from teacher {art.meta['parents'][0][:8]}, not {teacher_id[:8]}; "
                             "bench compares the students of one teacher")
    # where the students span several distill seeds, every student row names its own
    several = len({StudentConfig.of(a).seed for a in (plain, ractd, *extra) if a is not None}) > 1

    def seed_of(art: Artifact) -> str:
        return f", distill seed {StudentConfig.of(art).seed}" if several else ""

    rows = [
        Row("teacher-heun", "EDM teacher (Heun, 80 bins)", teacher_id, "heun", 159),
        Row("euler-15", "Euler / DDIM (15 steps)", teacher_id, "euler", 15),
        Row("ancestral-15", "ancestral / DDPM (15 steps)", teacher_id, "ancestral", 15),
    ]
    if plain is not None:
        rows.append(Row("ctd-1", f"CTD student (reward weight 0){seed_of(plain)}", plain.id, "onestep", 1))
    if ractd is not None:
        rows.append(Row("ractd-1", f"RACTD student (1 step){seed_of(ractd)}", ractd.id, "onestep", 1))
        rows += [Row(f"ractd-{k}", f"RACTD student ({k} steps){seed_of(ractd)}", ractd.id, "multistep", k) for k in (2, 3, 4)]
    rows += [Row(f"also-{art.id[:8]}", student_label(art, name_seed=several), art.id, "onestep", 1) for art in extra]
    trajdiffuser = _latest_trajdiffuser(spec.name)
    if trajdiffuser is not None:
        rows.append(Row("trajdiffuser-0", "Trajectory Diffuser proposal (K=0)", trajdiffuser.id, "euler", 0, 0))
        rows += [Row(f"trajdiffuser-{k}", f"Trajectory Diffuser (K={k} Euler)", trajdiffuser.id, "euler", k, k) for k in (1, 5)]
    return rows


def models_line(rows: list[dict[str, Any]]) -> str:
    """One line naming the models behind bench's rows (its JSON ``rows``): the teacher, and each
    student with its reward weight sigma, by 8-character id."""
    names = {"teacher-heun": "teacher", "ctd-1": "CTD student", "ractd-1": "RACTD student", "trajdiffuser-0": "Trajectory Diffuser"}
    parts = []
    for r in rows:
        if r["key"] in names:
            sigma = "" if r.get("reward_weight") is None else f" (reward weight sigma {sigma_label(r['reward_weight'], r.get('reward_scale', 1.0))})"
            parts.append(f"{names[r['key']]} {r['model_id'][:8]}{sigma}")
    return "models: " + "; ".join(parts)


DATA_TOP_FRACTION = 0.1
"""The data's "best episodes" row: the mean score of this share of its episodes, the best ones."""


def data_ceiling(adapter: EnvAdapter, spec: TaskSpec, dataset: str, score_scale: str) -> dict[str, Any] | None:
    """The data's own scores beside the planners' (closed-loop tasks, whose dataset episodes are
    episodes of the evaluated kind): the mean episode, the best :data:`DATA_TOP_FRACTION` of episodes
    and the best episode, each on ``score_scale`` (means with their standard errors). None for open-
    loop tasks, whose data are cut at every goal reached (Maze2d): no episode there is comparable
    with an evaluation episode."""
    if spec.layout.open_loop:
        return None
    from .data.load import load_episodes

    # an episode's return as make_env's env would pay it: the adapter's ``episode_return`` where it has one
    # (FrankaKitchen: its data record the raw env's reward, its evaluation env pays first completions)
    ret = getattr(adapter, "episode_return", None) or (lambda task, ep: float(np.sum(ep.rewards)))
    scores = np.sort([float(adapter.normalized_score(spec.name, float(ret(spec.name, ep)), scale=score_scale))
                      for ep in load_episodes(adapter, spec, dataset) if len(ep)])[::-1]
    top = scores[: max(1, int(round(DATA_TOP_FRACTION * len(scores))))]

    def stderr(a: np.ndarray) -> float:
        return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0

    return {"dataset": dataset, "made": data_made(dataset), "episodes": len(scores), "score_scale": score_scale,
            "mean": float(scores.mean()), "mean_stderr": stderr(scores),
            "top_fraction": DATA_TOP_FRACTION, "top_mean": float(top.mean()), "top_stderr": stderr(top),
            "max": float(scores[0])}


def data_made(dataset: str) -> dict[str, Any]:
    """What a results table says of how its data were made (a local dataset's seed, torch threads
    and, for SAC-made data, the medium checkpoint's step and return; ``fetch --threads`` changes
    SAC's data); {} for a download or where the dataset does not say."""
    from .data.store import local_recipe, recipe_threads

    made = local_recipe(dataset)
    generator = made.get("generator") or {}
    out = {"seed": made.get("seed"), "threads": recipe_threads(made),
           **{k: generator[k] for k in ("sac_medium_step", "sac_medium_return") if k in generator}}
    return {k: v for k, v in out.items() if v is not None}


def data_rows(ceiling: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(label, score) rows of :func:`data_ceiling` for a results table; [] where there is none."""
    if not ceiling:
        return []
    share = f"{100 * ceiling['top_fraction']:.0f}%"
    made = ceiling.get("made") or {}
    how = [f"SAC's medium checkpoint at step {made['sac_medium_step']:,}"] if "sac_medium_step" in made else []
    how += [f"generated on {made['threads']} thread{'s' if made['threads'] != 1 else ''}"] if "threads" in made else []
    return [(f"data: mean of its {ceiling['episodes']} episodes" + (f" ({', '.join(how)})" if how else ""),
             f"{ceiling['mean']:.1f} ± {ceiling['mean_stderr']:.1f}"),
            (f"data: mean of its best {share} of episodes", f"{ceiling['top_mean']:.1f} ± {ceiling['top_stderr']:.1f}"),
            ("data: its best episode", f"{ceiling['max']:.1f}")]


def read_peers(paths: Path | Sequence[Path], spec: TaskSpec, *, seed: int, score_scale: str, dataset: str | None) -> dict[str, Any]:
    """Standard offline RL trained on the same dataset and scored on the same episodes, from the JSON
    ``scripts/peers.py`` writes (d3rlpy in an environment of its own; docs/commands/bench.md), one
    file or several (e.g. ``--methods`` run as halves side by side), their rows joined in order: each
    checked to be of this task, dataset, episode seed and score scale, the files to agree on their
    episode count and to name each method once; a one-line error otherwise. ``file``: the first
    file, ``files``: every one."""
    import json

    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_peers needs at least one file")
    rows: list[dict[str, Any]] = []
    named: dict[str, Path] = {}  # method -> the file that scores it
    libraries: list[str] = []
    episodes: int | None = None
    for path in paths:
        try:
            doc = json.loads(path.read_text())
            its_rows = [{"method": str(r["method"]), "score_mean": float(r["score_mean"]), "score_stderr": float(r["score_stderr"])}
                        for r in doc["rows"]]
            its_episodes, peer_seed = int(doc["episodes"]), int(doc["seed"])
        except FileNotFoundError:
            raise UsageError(f"--peers {path}: no such file; write it with scripts/peers.py (docs/commands/bench.md)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--peers {path} is not a peers file of scripts/peers.py ({type(e).__name__}: {e})") from None
        for what, theirs, ours in (("task", doc.get("task"), spec.name), ("episode seed", peer_seed, seed),
                                   ("score scale", doc.get("score_scale"), score_scale),
                                   ("dataset", doc.get("dataset_id"), dataset)):
            if ours is not None and theirs != ours:
                raise UsageError(f"--peers {path} was scored with {what} {theirs}, this bench with {ours}; "
                                 "run scripts/peers.py again with this bench's task, --seed and dataset")
        if episodes is not None and its_episodes != episodes:
            raise UsageError(f"--peers {path} scored {its_episodes} episodes, {paths[0]} {episodes}; "
                             "give files scored on the same episodes (scripts/peers.py --episodes)")
        episodes = its_episodes
        for r in its_rows:
            if r["method"] in named:
                raise UsageError(f"--peers {path} and {named[r['method']]} both score {r['method']}; give each method once")
            named[r["method"]] = path
        rows += its_rows
        if doc.get("library") and doc["library"] not in libraries:
            libraries.append(doc["library"])
    return {"file": str(paths[0]), "files": [str(p) for p in paths], "library": " / ".join(libraries) or None,
            "episodes": episodes, "seed": seed, "rows": rows}


def peer_rows(peers: dict[str, Any] | None, episodes: int) -> list[tuple[str, str]]:
    """(label, score) rows of :func:`read_peers` for a results table (the episode count where it differs)."""
    if not peers:
        return []
    more = f" ({peers['episodes']} episodes)" if peers["episodes"] != episodes else ""
    return [(f"peer: {r['method']}", f"{r['score_mean']:.1f} ± {r['score_stderr']:.1f}{more}") for r in peers["rows"]]


def across_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The one-step student rows of one kind (reward weight sigma and kappa; last weights, or those
    selected on online score, `distill --keep best|both`, pooled apart) distilled with different
    seeds, as one summary each where there are at least two seeds: the mean of their scores and its
    standard error across seeds (the spread of training, which the episodes' standard errors do not
    show), then, when both CTD and one RACTD weight have summaries of the same weights, RACTD - CTD
    with the two standard errors combined (independent students: the seeds pair nothing). The last
    weights' summaries come first."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("sampler") == "onestep" and r.get("distill_seed") is not None and r.get("score_mean") is not None:
            groups.setdefault((bool(r.get("selection")), r["reward_weight"], r.get("reward_scale", 1.0)), []).append(r)
    out = []
    for selected in (False, True):
        which, flag = (", selected on online score", {"selected": True}) if selected else ("", {})
        pooled = []
        for (chosen, sigma, kappa), members in sorted(groups.items()):
            by_seed = {r["distill_seed"]: r for r in members}  # one row per seed (the same student twice counts once)
            if chosen != selected or len(by_seed) < 2:
                continue
            seeds = sorted(by_seed)
            scores = np.array([by_seed[k]["score_mean"] for k in seeds])
            name = f"RACTD student, sigma {sigma_label(sigma, kappa)}" if sigma else "CTD student"
            pooled.append({"method": f"{name}{which}, mean over distill seeds {'/'.join(map(str, seeds))}", "reward_weight": sigma,
                           **({"reward_scale": kappa} if sigma else {}), **flag,
                           "seeds": seeds, "scores": scores.tolist(), "model_ids": [by_seed[k]["model_id"] for k in seeds],
                           "score_mean": float(scores.mean()), "score_stderr": float(scores.std(ddof=1) / np.sqrt(len(scores)))})
        ctd = next((g for g in pooled if not g["reward_weight"]), None)
        for g in [g for g in pooled if g["reward_weight"]] if ctd else []:
            pooled.append({"method": f"RACTD student, sigma {sigma_label(g['reward_weight'], g.get('reward_scale', 1.0))} - CTD{which}, across seeds",
                           "difference": True, "reward_weight": g["reward_weight"], **flag,
                           "score_mean": g["score_mean"] - ctd["score_mean"],
                           "score_stderr": float(np.hypot(g["score_stderr"], ctd["score_stderr"]))})
        out += pooled
    return out


def table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Bench's table as text cells, (header, rows), from its JSON document ``doc``: the terminal's
    table, the markdown beside the plot and `ractd reproduce` all print this one. Columns: method,
    NFE (paper), network calls, median ms per decision, min-max, speed-up, score, then success and
    the plan checks where a row has them, then the paper's figure where a row has one; the data's own
    rows (:func:`data_rows`) come last, after the students' means across distill seeds where it has
    several (:func:`across_seeds`)."""
    rows = doc["rows"]
    success = any(r.get("success_rate") is not None for r in rows)
    checks = [k for k in PLAN_CHECK_RATES if any(r.get(k) is not None for r in rows)]
    paper = any(r.get("paper") for r in rows)
    head = ["method", "NFE (paper)", "network calls", "ms/decision (median)", "min-max", "speed-up", f"score ({doc['score_scale']})"]
    head += ["success"] * success + [PLAN_CHECK_RATES[k] for k in checks] + ["paper"] * paper
    body = []
    for r in rows:
        score = "-" if r["score_mean"] is None else f"{r['score_mean']:.1f} ± {r['score_stderr']:.1f}"
        if r["score_mean"] is not None and r["episodes"] != doc["episodes"]:
            score += f" ({r['episodes']} episodes)"
        cells = [r["method"], str(r["nfe_paper"]), str(r["nfe"]), f"{r['ms_per_action']:.2f}", f"{r['ms_min']:.2f}-{r['ms_max']:.2f}",
                 f"{r['speedup_vs_teacher']:.1f}x", score]
        cells += ["-" if r.get("success_rate") is None else f"{100 * r['success_rate']:.0f}%"] * success
        cells += ["-" if r.get(k) is None else f"{100 * r[k]:.0f}%" for k in checks]
        body.append(cells + [r.get("paper") or ""] * paper)
    seeds = [(g["method"], f"{g['score_mean']:+.1f} ± {g['score_stderr']:.1f}" if g.get("difference")
              else f"{g['score_mean']:.1f} ± {g['score_stderr']:.1f} (across seeds)") for g in doc.get("across_seeds") or []]
    # the data's own scores (what the planners learn from) and standard offline RL on the same data
    for label, score in seeds + data_rows(doc.get("data")) + peer_rows(doc.get("peers"), doc["episodes"]):
        body.append([label] + [""] * 5 + [score] + [""] * (len(head) - 7))
    return head, body


def markdown(head: list[str], body: list[list[str]]) -> str:
    """Bench's :func:`table` ``(head, body)`` as a markdown table (a log file or a narrow terminal cuts
    no cell of it)."""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(c) + " |" for c in body])


def return_to_go(row: dict[str, Any]) -> str:
    """'gamma 0.99, termination penalty 0': the return-to-go a RACTD row's R_psi was fitted to (and
    ', read on every planned action' where R_psi reads the whole chunk, an option)."""
    chunk = ", read on every planned action" if row.get("reward_input") == "state_action_chunk" else ""
    return f"gamma {row['rtg_gamma']:g}, termination penalty {row.get('rtg_termination_penalty') or 0:g}{chunk}"


def _across_rows(rows: list[dict[str, Any]], name: str, key=None) -> str | None:
    """The distinct values of ``name`` over the rows that have one, sorted (by ``key``) and joined
    by "/" (e.g. "8" or "1/8"); None where no row has one."""
    return "/".join(sorted({str(r[name]) for r in rows if r.get(name)}, key=key)) or None


def settings_line(doc: dict[str, Any]) -> str:
    """The choices behind every row, for a table's header: planning kind, training windows, horizon, plan
    stride, initial noise and clamping, and the RACTD rows' return-to-go (each as the bench JSON
    records it)."""
    keys = (("planning", "planning"), ("windows", "windows"), ("horizon", "horizon"), ("plan stride", "plan_stride"), ("x_T", "init_noise"), ("clamp", "clamp"),
            ("R_psi's return-to-go", "return_to_go"))
    return "settings: " + ", ".join(f"{label} {doc[k]}" for label, k in keys if doc.get(k) is not None)


@dataclass
class BenchResult:
    """What ``bench`` measured: ``doc`` is the JSON document (rows and run-wide fields), the rest
    feeds the plot."""

    doc: dict[str, Any]
    results: dict[str, RolloutResult]
    """Each scored row's rollouts, by method name."""
    plans: dict[str, np.ndarray]
    """State tasks: each row's plan from the first evaluation start, in env units, by method name."""
    background: Callable[[Any], None] | None = None
    """Draws the task's map on a matplotlib axis (the adapter's ``draw``), when it has one."""


def time_calls(fn, *, repeats: int, warmup: int, sync, min_seconds: float = 1.0, max_calls: int = 20_000) -> dict[str, float]:
    """Median/min/max wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls.

    Calls until both ``repeats`` calls and ``min_seconds`` have passed (at most ``max_calls``), so a
    sub-millisecond planner is timed over as long a window as a slow one and a short burst of
    machine noise cannot move its median.
    """
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        times.append(_ms(fn, sync))
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "calls": len(times)}


def time_paired(fa, fb, *, repeats: int, warmup: int, sync, min_seconds: float = 1.0) -> tuple[float, float, float]:
    """Median ms of ``fa`` and of ``fb`` timed alternately, and the median of the per-pair ratios a/b.

    Alternating the two makes their ratio immune to the machine getting faster or slower over the
    run, which timing them one after the other is not.
    """
    for _ in range(warmup):
        fa(), fb()
    sync()
    ta: list[float] = []
    tb: list[float] = []
    start = time.perf_counter()
    while len(ta) < repeats or time.perf_counter() - start < min_seconds:
        ta.append(_ms(fa, sync))
        tb.append(_ms(fb, sync))
    return statistics.median(ta), statistics.median(tb), statistics.median(a / b for a, b in zip(ta, tb))


def _ms(fn, sync) -> float:
    """Wall time of one ``fn()`` in milliseconds, device work included (``sync``)."""
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1000.0


def _sync_for(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def bench_planners(
    adapter: EnvAdapter,
    spec: TaskSpec,
    *,
    episodes: int = 20,
    teacher_episodes: int | None = None,
    seed: int = 0,
    repeats: int = 50,
    latency_only: bool = False,
    device: str = "auto",
    jit: bool = True,
    cuda_graphs: bool = True,
    show_progress: bool = True,
    execution: Execution | None = None,
    score_scale: str | None = None,
    runtime: str = "torch",
    student: str | None = None,
    ctd: str | None = None,
    workers: int = 1,
    sampling: Sampling | None = None,
    also: Sequence[str] = (),
    peers: Path | Sequence[Path] | None = None,
) -> BenchResult:
    """Time and score every row of :func:`bench_rows`. Every row's ``states`` plans are executed the
    same way (``execution``, default the task's: :class:`~ractd_cli.evaluate.Execution`) and
    scored on ``score_scale`` (default ``d4rl``); each row records both. ``teacher_episodes``: the
    Heun teacher row's episode count (default ``episodes``), the first ones of the same seed; every
    row records its ``episodes``. ``runtime="onnxruntime"`` adds a latency row for the one-step
    RACTD student exported to ONNX (``ractd export``) and run by onnxruntime, timed in the same run
    as its frozen in-process graph. ``student``, ``ctd``: the students to bench (default: see
    :func:`pick_students`); ``also``: more student rows (:func:`bench_rows`); each student row records
    its ``reward_weight`` and, when it was chosen on online score, its ``selection``. ``peers``: one file or
    several of standard offline RL scores on the same data and episodes (:func:`read_peers`), rows after the data's. ``workers`` > 1 runs
    each row's episodes in that many CPU processes (:func:`~ractd_cli.evaluate.run_episodes`): the
    same scores; the latencies are timed in this process as always. ``sampling``: the teacher and
    student rows' initial noise and clamping (default the authors', :class:`~ractd_cli.planner.Sampling`)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown --runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    execution = execution or Execution.of(adapter, spec)
    score_scale = resolve_score_scale(spec, score_scale)
    dev = resolve_device(device)
    check_workers(workers, dev)
    sync = _sync_for(dev)
    rows = bench_rows(spec, student, ctd, also)
    teacher_dataset = load_artifact(rows[0].model_id, kind="teacher", task=spec.name).meta.get("dataset")
    peer_doc = None
    if peers:  # checked before anything runs: the teacher's dataset is the peers'
        peer_doc = read_peers(peers, spec, seed=seed, score_scale=score_scale, dataset=teacher_dataset)
    # the data's own scores before any rollout, so that a dataset they cannot be read from fails at once
    ceiling = None if latency_only or not teacher_dataset else data_ceiling(adapter, spec, teacher_dataset, score_scale)
    cond1 = torch.zeros(1, spec.cond_dim, device=dev)  # the bare network's input
    past1 = torch.zeros(1, spec.history, spec.obs_dim, device=dev)  # the planners' raw inputs at batch 1
    goal1 = torch.zeros(1, spec.goal_dim, device=dev) if spec.goal_dim else None
    out_rows: list[dict[str, Any]] = []
    results: dict[str, RolloutResult] = {}
    plans: dict[str, np.ndarray] = {}
    first = _first_start(adapter, spec, seed) if spec.layout.x_source == "state" else None  # plans to draw
    forward_ms = overhead = None
    for row in rows:
        trajdiffuser = row.refine_steps is not None
        recipe = PolicyRecipe(spec.name, row.model_id, "trajdiffuser" if trajdiffuser else "diffusion", sampler=row.sampler,
                              nfe=None if trajdiffuser else row.nfe_budget,
                              trajdiffuser=TrajDiffuserOptions(refine_steps=row.refine_steps) if trajdiffuser else None,
                              seed=seed, jit=jit, cuda_graphs=cuda_graphs, sampling=sampling, execution=execution)
        loaded, planner, policy = recipe.build(adapter, spec, dev)
        plan1 = functools.partial(planner.plan, past1, goal1)  # this row's planner at batch 1, for the timers
        lat = time_calls(plan1, repeats=repeats, warmup=5, sync=sync)
        if first is not None:
            policy.reset(1, [0])  # episode 0's own noise stream: the plan its rollout follows
            x0, _ = planner.plan(*policy.inputs(first[0][None], None if first[1] is None else first[1][None], np.arange(1)), policy.noise)
            plans[row.method] = x0[0].cpu().numpy()
        if forward_ms is None and loaded.art.kind == "student" and planner.nfe_budget == 1:
            _, forward_ms, overhead = time_paired(
                plan1, _bare_forward(planner, cond1), repeats=repeats, warmup=5, sync=sync
            )
        rec: dict[str, Any] = {
            "key": row.key,
            "method": row.method,
            "planner": "diffusion",
            "model_id": loaded.art.id,
            "reward_weight": None,  # a student's sigma, kappa, selection and seed: policy.describe() below
            "sampler": planner.sampler_name,
            "nfe": planner.nfe_per_plan,
            "nfe_paper": planner.nfe_paper,
            "jit": planner.jit,
            "jit_error": planner.jit_error,
            "cuda_graphs": planner.cuda_graphs,
            "cuda_graphs_error": planner.cuda_graphs_error,
            "ms_per_action": lat["median"],
            "ms_min": lat["min"],
            "ms_max": lat["max"],
            "timed_calls": lat["calls"],
            "score_mean": None,
            "score_stderr": None,
            "success_rate": None,
            "episodes": 0,
            "paper": spec.paper_scores.get(row.key),
        }
        rec.update(policy.describe(), score_scale=score_scale)
        if trajdiffuser:
            rec.update(planner.describe())
        if not latency_only:
            # each episode plans from its own (seed, episode) noise stream, however many timing calls
            # ran: the same episodes as `ractd rollout --seed`
            n = teacher_episodes if teacher_episodes is not None and row.key == "teacher-heun" else episodes
            res = run_episodes(adapter, spec, policy, episodes=n, seed=seed, show_progress=show_progress, score_scale=score_scale,
                               workers=workers, recipe=recipe.resolved(loaded), label=row.method)
            rec["episodes"] = n
            s = res.summary()
            rec.update(score_mean=s["score_mean"], score_stderr=s["score_stderr"], success_rate=s["success_rate"],
                       **{k: v for k, v in s.items() if k in PLAN_CHECK_RATES})
            results[row.method] = res
        out_rows.append(rec)
    if runtime == "onnxruntime":
        out_rows += _onnxruntime_rows(spec, rows, out_rows, repeats=repeats, seed=seed)
    teacher_ms = out_rows[0]["ms_per_action"]
    for r in out_rows:
        r["speedup_vs_teacher"] = teacher_ms / r["ms_per_action"] if r["ms_per_action"] > 0 else math.nan
    doc = {
        "task": spec.name,
        "device": _device_name(dev),
        "episodes": 0 if latency_only else episodes,
        "score_scale": score_scale,
        "planning": _across_rows(out_rows, "planning"),
        **(sampling or Sampling()).describe(),
        "horizon": _across_rows(out_rows, "horizon", key=int),
        "plan_stride": _across_rows(out_rows, "plan_stride", key=int),
        "windows": _across_rows(out_rows, "windows"),
        "return_to_go": "/".join(sorted({return_to_go(r) for r in out_rows if r.get("rtg_gamma") is not None})) or None,
        **execution.describe(),
        "rows": out_rows,
        **({"across_seeds": seeds} if (seeds := across_seeds(out_rows)) else {}),
        "data": ceiling,
        **({"peers": peer_doc} if peer_doc else {}),
        "forward_ms": forward_ms,
        "forward_overhead": overhead,
        "workers": workers,
    }
    background = (lambda ax: adapter.draw(spec.name, ax)) if hasattr(adapter, "draw") else None
    return BenchResult(doc=doc, results=results, plans=plans, background=background)


RUNTIMES = ("torch", "onnxruntime")


def _onnxruntime_rows(spec: TaskSpec, rows: list[Row], out_rows: list[dict], *, repeats: int, seed: int) -> list[dict]:
    """The one-step RACTD student exported to ONNX and run by onnxruntime on the CPU, timed at batch 1
    (latency only; its plans equal the frozen graph's within 1e-4, tested)."""
    import tempfile

    from .export import OnnxPlanner, export

    row = next((r for r in rows if r.key == "ractd-1"), None)
    if row is None:
        raise UsageError("--runtime onnxruntime times the one-step RACTD student; distill one first (`ractd distill`)")
    art = load_artifact(row.model_id, kind="student", task=spec.name)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "student.onnx"
        export(art, spec, path, fmt="onnx")
        planner = OnnxPlanner(path, Planner(art, spec, device="cpu", seed=seed, jit=False), threads=torch.get_num_threads())
        past1, goal1 = torch.zeros(1, spec.history, spec.obs_dim), torch.zeros(1, spec.goal_dim) if spec.goal_dim else None
        lat = time_calls(functools.partial(planner.plan, past1, goal1), repeats=repeats, warmup=5, sync=lambda: None)
    frozen_ms = next(r["ms_per_action"] for r in out_rows if r["key"] == "ractd-1")
    return [{
        "key": "ractd-1-onnxruntime", "method": "RACTD student (1 step), ONNX on onnxruntime", "planner": "onnxruntime",
        "model_id": art.id, "sampler": "onestep", "nfe": 1, "nfe_paper": 1, "jit": False, "jit_error": None,
        "ms_per_action": lat["median"], "ms_min": lat["min"], "ms_max": lat["max"], "timed_calls": lat["calls"],
        "score_mean": None, "score_stderr": None, "success_rate": None, "episodes": 0, "paper": None,
        "vs_frozen_torch": lat["median"] / frozen_ms,
    }]


def _first_start(adapter: EnvAdapter, spec: TaskSpec, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """State and goal of the first evaluation episode (as ``run_episodes`` resets it)."""
    env = make_env(adapter, spec.name, seed=seed)
    try:
        obs, _ = env.reset(seed=seed, options=adapter.reset_options(spec.name, 0, np.random.default_rng(seed)))
        goal = adapter.goal(spec.name, obs)
        return adapter.state(spec.name, obs).astype(np.float32), None if goal is None else np.asarray(goal, np.float32)
    finally:
        env.close()


def _bare_forward(planner: Planner, cond1: torch.Tensor):
    """One bare network forward F(x, c_noise_t, cond, c_noise_s) of the student at batch 1: no
    sampler, no scalings, no noise draw. Frozen like the planners when they are (``--jit``)."""
    net = planner.model.net
    x = torch.zeros(1, planner.T, planner.D, device=planner.device)
    t = torch.full((1,), 1.0, device=planner.device)
    if planner.jit:
        net = frozen(net, (x, t, cond1, t))
    if planner.cuda_graphs:
        net = CudaGraphs(net)

    @torch.inference_mode()
    def fwd():
        return net(x, t, cond1, t)

    return fwd


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    from .artifacts import cpu_name

    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def require_models(spec: TaskSpec) -> None:
    """A one-line error naming the command to run when the task has no teacher yet."""
    load_artifact("latest", kind="teacher", task=spec.name)

"""`ractd reproduce TASK` (`make results`): one task's table from nothing on the toy task, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _results(tmp_path: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RACTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ractd_cli", "reproduce", "bimodal", "--episodes", "4", "--teacher-episodes", "2",
         "--out", str(tmp_path / "out"), "--teacher-args", "--steps 120", "--bench-args", "--seed 3",
         "--train-args", "--preset tiny --steps 100", *extra],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )


def test_results_runs_the_chain_once_prints_the_table_and_adds_selected_students(tmp_path, _tmp_cache):
    first = _results(tmp_path, _tmp_cache)
    assert first.returncode == 0, first.stderr[-2000:]
    for step in ("$ ractd fetch bimodal", "$ ractd train-teacher", "$ ractd train-reward", "--reward-weight 0", "$ ractd bench"):
        assert step in first.stderr
    assert first.stderr.count("$ ractd distill") == 2
    lines = {line.split()[2]: line for line in first.stderr.splitlines() if line.startswith("$ ractd ")}
    assert lines["train-teacher"].endswith("--steps 100 --steps 120")  # --teacher-args: the teacher's alone, last
    assert all("--resume" in lines[c] for c in ("train-teacher", "train-reward", "distill"))  # a stopped model continues
    assert "120" not in lines["train-reward"] and "120" not in lines["distill"]
    assert "--seed 3" in lines["bench"] and ", bench --seed 3:" in first.stdout  # --bench-args
    doc = json.loads((tmp_path / "out" / "results-bimodal.json").read_text())
    episodes = {r["method"]: r["episodes"] for r in doc["rows"] if r["score_mean"] is not None}
    assert 2 in episodes.values() and 4 in episodes.values()  # the Heun teacher's row at --teacher-episodes
    assert "| method | NFE (paper) |" in first.stdout and "(2 episodes)" in first.stdout
    assert (tmp_path / "out" / "results-bimodal.md").read_text().count("| data: ") == 3  # bench's markdown beside its plot
    # the data's own rows and the settings behind every row
    data = doc["data"]
    assert data["episodes"] > 0 and data["mean"] <= data["top_mean"] <= data["max"]
    assert "| data: its best episode |" in first.stdout and "settings: planning chunk, windows full" in first.stdout
    again = _results(tmp_path, _tmp_cache)  # everything cached: only the bench runs again
    assert again.returncode == 0, again.stderr[-2000:]
    assert "$ ractd distill" not in again.stderr and "$ ractd train-" not in again.stderr
    assert "$ ractd bench" in again.stderr
    doc = json.loads((tmp_path / "out" / "results-bimodal.json").read_text())
    last = {row["model_id"] for row in doc["rows"] if row["key"] in ("ctd-1", "ractd-1")}  # trained without evaluations
    # `--select-every N`: CTD and RACTD distilled once each with online scoring and `--keep both`:
    # their last weights are the table's rows, their selected weights (the authors' protocol) rows of
    # their own, labelled as selected
    selection = _results(tmp_path, _tmp_cache, "--select-every", "50", "--select-episodes", "2")
    assert selection.returncode == 0, selection.stderr[-2000:]
    distills = [line for line in selection.stderr.splitlines() if line.startswith("$ ractd distill")]
    assert len(distills) == 2 and all("--keep both" in d for d in distills), distills  # one run per student
    bench = next(line for line in selection.stderr.splitlines() if line.startswith("$ ractd bench"))
    assert bench.count("--also") == 2
    doc = json.loads((tmp_path / "out" / "results-bimodal.json").read_text())
    selected = [row for row in doc["rows"] if row["key"].startswith("also-")]
    assert len(selected) == 2 and all(row["selection"]["step"] in (50, 100) for row in selected)
    assert all("selected on online score at step" in row["method"] for row in selected)
    assert {row["reward_weight"] for row in selected} == {0.0, 1.0}
    twins = {row["model_id"] for row in doc["rows"] if row["key"] in ("ctd-1", "ractd-1")}
    assert twins == {row["selection"]["last_weights"] for row in selected} and not twins & last
    assert "selected on online score" in selection.stdout
    # `--seeds 2`: CTD and RACTD distilled again with --seed 1 (seed 0's are cached), benched as rows of
    # their own, and each kind's mean across the seeds and RACTD - CTD added to the table
    seeded = _results(tmp_path, _tmp_cache, "--seeds", "2")
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    distills = [line for line in seeded.stderr.splitlines() if line.startswith("$ ractd distill")]
    assert len(distills) == 2 and all(d.endswith("--seed 1") for d in distills), distills
    doc = json.loads((tmp_path / "out" / "results-bimodal.json").read_text())
    ctd, ractd, diff = doc["across_seeds"]
    assert ctd["seeds"] == ractd["seeds"] == [0, 1] and ctd["reward_weight"] == 0 and ractd["reward_weight"] == 1
    by_id = {row["model_id"]: row for row in doc["rows"]}
    assert ctd["model_ids"][0] in last and ractd["model_ids"][0] in last  # seed 0's are the table's students
    assert [by_id[m]["distill_seed"] for m in ractd["model_ids"]] == [0, 1]
    assert abs(diff["score_mean"] - (ractd["score_mean"] - ctd["score_mean"])) < 1e-9
    assert "mean over distill seeds 0/1" in seeded.stdout and "distill seed 1, last weights" in seeded.stdout
    # with several seeds in the table every student row names its own, seed 0's too
    by_key = {row["key"]: row["method"] for row in doc["rows"]}
    assert by_key["ractd-1"] == "RACTD student (1 step), distill seed 0" and by_key["ractd-3"] == "RACTD student (3 steps), distill seed 0"
    assert by_key["ctd-1"] == "CTD student (reward weight 0), distill seed 0"
    # both: seed 1 distilled once more with `--keep both` (seed 0's runs are cached), and the
    # selected students pooled across seeds apart from the last weights
    both = _results(tmp_path, _tmp_cache, "--seeds", "2", "--select-every", "50", "--select-episodes", "2")
    assert both.returncode == 0, both.stderr[-2000:]
    distills = [line for line in both.stderr.splitlines() if line.startswith("$ ractd distill")]
    assert len(distills) == 2 and all(d.endswith("--seed 1") and "--keep both" in d for d in distills), distills
    pools = json.loads((tmp_path / "out" / "results-bimodal.json").read_text())["across_seeds"]
    assert [bool(g.get("selected")) for g in pools] == [False] * 3 + [True] * 3
    assert pools[0]["model_ids"][0] in twins and pools[3]["seeds"] == [0, 1]
    methods = [row["method"] for row in json.loads((tmp_path / "out" / "results-bimodal.json").read_text())["rows"]]
    assert sum("distill seed 0, selected on online score" in m for m in methods) == 2, methods
    bad = _results(tmp_path, _tmp_cache, "--train-args", "--seed one")
    assert bad.returncode == 2 and "--seed one is not an integer" in bad.stderr and "Traceback" not in bad.stderr


def test_results_distills_the_task_weight_even_beside_students_of_other_weights(tmp_path, _tmp_cache):
    """A RACTD student at another reward weight (a user's sweep) is not the table's RACTD row:
    results distills one at the task's own weight."""
    env = {**os.environ, "RACTD_CACHE_DIR": str(_tmp_cache), "OMP_NUM_THREADS": "1"}
    ractd = str(Path(sys.executable).parent / "ractd")
    for args in (["fetch", "bimodal", "--source", "local", "--steps", "600"], ["train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "100"],
                 ["train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "100"],
                 ["distill", "--env", "bimodal", "--preset", "tiny", "--steps", "100", "--reward-weight", "0.123"]):
        subprocess.run([ractd, *args], env=env, check=True, capture_output=True, timeout=600)
    r = _results(tmp_path, _tmp_cache)
    assert r.returncode == 0, r.stderr[-2000:]
    distills = [line for line in r.stderr.splitlines() if line.startswith("$ ractd distill")]
    assert len(distills) == 2 and "--reward-weight 0 " in distills[0] and "--reward-weight" not in distills[1], distills
    # a newer student of another weight (the sweep goes on): the table still benches the task's own
    subprocess.run([ractd, "distill", "--env", "bimodal", "--preset", "tiny", "--steps", "100", "--reward-weight", "0.123"],
                   env=env, check=True, capture_output=True, timeout=600)
    again = _results(tmp_path, _tmp_cache)
    assert again.returncode == 0 and "$ ractd distill" not in again.stderr, again.stderr[-2000:]
    doc = json.loads((tmp_path / "out" / "results-bimodal.json").read_text())
    assert {r["reward_weight"] for r in doc["rows"] if r["key"].startswith("ractd-")} == {1.0}
    assert "RACTD student" in again.stdout and "(reward weight sigma 1)" in again.stdout


def test_the_chain_takes_a_teacher_of_the_task_s_windows_and_horizon(_tmp_cache, ractd_ok):
    """A cached teacher trained with another `--windows`, `--horizon`, `--seed` or `--steps` is an
    experiment: the chain's default teacher is one that plans as the task does, trained with the
    chain's own recipe (and a newer experiment does not replace it)."""
    from ractd_cli.registry import get_task
    from ractd_cli.reproduce import Chain

    pytest.importorskip("gymnasium_robotics")
    _, spec = get_task("maze2d-umaze")
    other = "full" if spec.windows == "padded" else "padded"
    ractd_ok("fetch", "maze2d-umaze", "--source", "local", "--steps", "3000")
    tiny = ("train-teacher", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "2")
    default = ractd_ok(*tiny)["artifacts"][-1]["id"]
    experiments = [ractd_ok(*tiny, *args)["artifacts"][-1]["id"]
                   for args in (["--windows", other], ["--horizon", str(2 * spec.horizon)], ["--seed", "1"])]
    longer = ractd_ok(*tiny, "--steps", "3")["artifacts"][-1]["id"]  # the newest
    chain = Chain("maze2d-umaze", ["--preset", "tiny", "--steps", "2"])
    assert [t.id for t in chain.plain_teachers()] == [default]
    # with --teacher-args the user's options choose; the recipe must still be the chain's
    assert {t.id for t in chain.plain_teachers(["--windows", other])} == {default, *experiments}
    assert [t.id for t in chain.plain_teachers(["--steps", "3"])] == [longer]
    assert Chain("maze2d-umaze").plain_teachers() == []  # the quick preset's recipe: none cached
    # a chain of another seed (`--train-args "--seed 1"`) takes that seed's teacher
    assert [t.id for t in Chain("maze2d-umaze", ["--preset", "tiny", "--steps=2", "--seed", "1"]).plain_teachers()] == [experiments[-1]]


def test_the_chain_takes_a_reward_model_of_the_task_s_return_to_go_and_reading(_tmp_cache, ractd_ok):
    """A cached R_psi fitted with another `--gamma`, `--termination-penalty` or `--reads` is an
    experiment: the chain's reward model is one fitted as the task's defaults say, even when older."""
    from ractd_cli.reproduce import Chain

    ractd_ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    tiny = ("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "2")
    default = ractd_ok(*tiny)["id"]
    experiments = [ractd_ok(*tiny, *args)["id"] for args in (["--gamma", "0.5"], ["--termination-penalty", "-7"],
                                                             ["--reads", "state_action_chunk"], ["--seed", "2"])]
    longer = ractd_ok(*tiny, "--steps", "3")["id"]
    chain = Chain("bimodal", ["--preset", "tiny", "--steps", "2"])
    assert len({default, *experiments, longer}) == 6 and chain.artifacts("reward")[0].id == longer
    assert [r.id for r in chain.task_rewards()] == [default]
    assert [r.id for r in Chain("bimodal", ["--preset", "tiny", "--steps", "2", "--seed=2"]).task_rewards()] == [experiments[-1]]
    assert [r.id for r in Chain("bimodal", ["--preset", "tiny", "--steps", "3"]).task_rewards()] == [longer]


def test_the_chain_takes_a_student_of_its_own_recipe(_tmp_cache, ractd_ok):
    """A cached student distilled with other `--steps` (or `--lr`, another preset) is an experiment,
    not the table's: once, `reproduce kitchen-mixed --seeds 3` benched a user's 4000-step seed-1
    student as the chain's 2000-step one."""
    from ractd_cli.reproduce import Chain

    ractd_ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    tiny = ("--env", "bimodal", "--preset", "tiny", "--steps", "2")
    teacher, reward = ractd_ok("train-teacher", *tiny)["id"], ractd_ok("train-reward", *tiny)["id"]
    own = ractd_ok("distill", *tiny, "--seed", "1")["id"]
    others = [ractd_ok("distill", *tiny, *args)["id"] for args in (["--seed", "1", "--steps", "3"], ["--seed", "1", "--lr", "0.01"])]
    assert len({own, *others}) == 3
    chain = Chain("bimodal", ["--preset", "tiny", "--steps", "2"])
    assert chain.cached_student(teacher, reward, 1.0, seed=1)["id"] == own
    assert chain.cached_student(teacher, reward, 1.0, seed=0) is None
    assert Chain("bimodal", ["--preset", "tiny", "--steps", "3"]).cached_student(teacher, reward, 1.0, seed=1)["id"] == others[0]
    assert Chain("bimodal", ["--preset", "tiny", "--steps", "2", "--lr", "0.01"]).cached_student(teacher, reward, 1.0, seed=1)["id"] == others[1]
    assert Chain("bimodal").cached_student(teacher, reward, 1.0, seed=1) is None  # the quick preset's recipe


def test_jobs_train_the_chain_s_independent_models_side_by_side_with_the_same_results(tmp_path, _tmp_cache):
    """`--jobs 2`: the teacher beside R_psi, then the four students two at a time, each in its own
    process with its output in out/logs/. On one thread each (the test's OMP_NUM_THREADS=1), every
    model is bit for bit the one the same command makes alone."""
    r = _results(tmp_path, _tmp_cache, "--seeds", "2", "--jobs", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("$ ractd distill") == 4 and r.stderr.count("its output: ") == 6
    assert "4 trainings, 2 at a time, 1 thread(s) each" in r.stderr
    logs = sorted((tmp_path / "out" / "logs").glob("bimodal-*.log"))
    assert [log.name.rsplit("-", 1)[1] for log in logs].count("distill.log") == 4 and len(logs) == 6
    doc = json.loads((tmp_path / "out" / "results-bimodal.json").read_text())
    ctd, ractd, _ = doc["across_seeds"]
    assert ctd["seeds"] == ractd["seeds"] == [0, 1]
    lines = [line for line in r.stderr.splitlines() if line.startswith("$ ractd distill") and line.endswith("--seed 1")]
    env = {**os.environ, "RACTD_CACHE_DIR": str(_tmp_cache), "OMP_NUM_THREADS": "1"}
    alone = subprocess.run([sys.executable, "-m", "ractd_cli", *lines[-1].split()[2:], "--json"], capture_output=True, text=True,
                           env=env, timeout=600)  # the same distill alone, on one thread: the same artifact
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert json.loads(alone.stdout)["id"] in ctd["model_ids"] + ractd["model_ids"]


def _processes_of(cache: Path) -> list[int]:
    """The processes running with ``RACTD_CACHE_DIR`` = ``cache`` (Linux /proc)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"RACTD_CACHE_DIR={cache}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig, jobs", [("SIGINT", "1"), ("SIGTERM", "2")])
def test_stopping_the_chain_stops_the_training_it_runs_at_a_checkpoint(tmp_path, _tmp_cache, sig, jobs):
    """Ctrl-C (SIGINT) or a `kill` (SIGTERM) of `ractd reproduce` alone is passed on to the command
    it runs: the teacher writes its checkpoint and says so, the chain exits 130, no process is left.
    Before, a child had 0.25 s after a Ctrl-C before Python killed it, and a `kill` left it running."""
    import signal
    import time

    env = {**os.environ, "RACTD_CACHE_DIR": str(_tmp_cache), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "ractd_cli", "reproduce", "bimodal", "--episodes", "4", "--out", str(tmp_path / "out"),
            "--teacher-args", "--steps 20000", "--train-args", "--preset tiny --steps 100", "--jobs", jobs]
    # started as from a terminal, with Ctrl-C's SIGINT taken, whatever this test process ignores (a
    # background CI job ignores SIGINT, and its children inherit that)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    ckpts = _tmp_cache / "checkpoints"
    try:
        while not (ckpts.is_dir() and any(ckpts.glob("teacher-*.safetensors"))):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        os.kill(proc.pid, getattr(signal, sig))  # the chain's process alone, as a `kill` sends it
        _, stderr = proc.communicate(timeout=300)
        left = _processes_of(_tmp_cache)
    finally:
        for pid in _processes_of(_tmp_cache):  # nothing left running, whatever failed
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.splitlines()[-1].startswith("interrupted; "), stderr[-2000:]
    said = stderr if jobs == "1" else "".join(log.read_text() for log in (tmp_path / "out" / "logs").glob("*-train-teacher.log"))
    assert "interrupted; the last checkpoint (if any) is kept, rerun with --resume" in said, said[-2000:]
    assert left == []
    assert not list((_tmp_cache / "models").glob("teacher-*"))  # stopped before its end, its checkpoint kept
    assert list(ckpts.glob("teacher-*.safetensors"))


def test_a_command_run_by_the_chain_takes_sigint_even_where_the_chain_ignores_it():
    """A chain started with SIGINT ignored (`ractd reproduce ... &` in a script: the shell ignores
    SIGINT in background jobs, and children inherit it) stops its commands with SIGINT all the same:
    each command it runs takes SIGINT as Ctrl-C; a command run otherwise keeps what it was given."""
    code = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); from ractd_cli import stopping; "
            "stopping.take_stop_signals(); print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
            "signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN))")
    from ractd_cli import stopping

    for chained, expected in ((True, "True True"), (False, "False True")):
        env = {k: v for k, v in os.environ.items() if k != stopping.CHAIN_CHILD_ENV}
        if chained:
            env[stopping.CHAIN_CHILD_ENV] = "1"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.stdout.strip() == expected, out.stderr

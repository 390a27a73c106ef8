"""Data-parallel training under torchrun (gloo on CPU): the commands' `--nproc N`, what rank 0 alone
writes, reproducibility by seed and world size, and `--resume` after a rank dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ractd_cli import distributed

pytestmark = pytest.mark.slow


def _tmp(cache: Path) -> Path:
    """The runs' own temporary directory (TMPDIR), to see what they leave in it."""
    (cache.parent / "tmp").mkdir(parents=True, exist_ok=True)
    return cache.parent / "tmp"


def _ractd(*args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RACTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "TMPDIR": str(_tmp(cache))}
    env.pop(distributed.LAUNCH_ENV, None)
    return subprocess.run([sys.executable, "-m", "ractd_cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _ok(*args: str, cache: Path) -> dict:
    r = _ractd(*args, "--json", cache=cache)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture
def cache(tmp_path):
    pytest.importorskip("ractd_bimodal")
    c = tmp_path / "cache"
    _ok("fetch", "bimodal", "--source", "local", "--steps", "2000", cache=c)
    return c


TEACHER = ("train-teacher", "--env", "bimodal", "--preset", "tiny", "--device", "cpu")


def test_two_processes_train_an_artifact_that_plans_and_reproduces(cache):
    two = _ok(*TEACHER, "--steps", "120", "--nproc", "2", cache=cache)
    again = _ok(*TEACHER, "--steps", "120", "--nproc", "2", cache=cache)
    assert two["id"] == again["id"]  # same seed, same world size: the same artifact
    first_step = _ok(*TEACHER, "--steps", "1", "--nproc", "2", cache=cache)
    assert two["losses"]["loss"] < first_step["losses"]["loss"]  # it learns
    models = list((cache / "models").glob("teacher-bimodal-*.safetensors"))
    assert len(models) == 2  # rank 0 alone wrote each (two runs were the same artifact)
    # torchrun's log folders went with the runs (torch's compile cache, torchinductor_<user>, is one per user and stays)
    assert list(_tmp(cache).glob("torchelastic_*")) == []
    from ractd_cli.artifacts import load_artifact
    from ractd_cli.planner import Planner
    from ractd_cli.registry import get_task

    os.environ["RACTD_CACHE_DIR"] = str(cache)
    art = load_artifact(two["id"])
    assert art.meta["made_on"]["world_size"] == 2
    x0, _ = Planner(art, get_task("bimodal")[1], sampler="euler", nfe=4).plan(torch.zeros(3, 1, 2))
    assert x0.shape[0] == 3 and torch.isfinite(x0).all()
    # each rank drew its own batches: not the plain run's artifact
    plain = _ok(*TEACHER, "--steps", "120", cache=cache)
    assert plain["id"] != two["id"]


def test_one_process_under_torchrun_is_a_plain_run(cache):
    plain = _ok(*TEACHER, "--steps", "60", cache=cache)
    env = {**os.environ, "RACTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "TMPDIR": str(_tmp(cache))}
    r = subprocess.run(distributed.torchrun_argv([*TEACHER, "--steps", "60", "--json"], 1), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["id"] == plain["id"]


def _workers(pid: int) -> dict[int, int]:
    """{rank: pid} of the torchrun workers below process ``pid``."""
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            env = Path(f"/proc/{p}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
        if ranks and any(e.startswith(distributed.LAUNCH_ENV.encode()) for e in env):
            out[int(ranks[0])] = p
        todo += [int(c) for c in children]
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the workers")
def test_a_stopped_or_dead_rank_leaves_no_artifact_and_resume_finishes_the_same(cache):
    """Ctrl-C of one rank (SIGINT: every rank checkpoints at the same step and stops) and the death
    of one (SIGKILL: torchrun stops the others; the last periodic checkpoint remains): no artifact,
    and `--resume` ends with the artifact of an uninterrupted run."""
    steps = ("--steps", "600", "--nproc", "2")
    whole = _ok(*TEACHER, *steps, cache=cache)
    (cache / "models" / Path(whole["path"]).name).unlink()
    env = {**os.environ, "RACTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop(distributed.LAUNCH_ENV, None)
    ckpts = cache / "checkpoints"
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-m", "ractd_cli", *TEACHER, *steps, "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (ckpts.is_dir() and any(ckpts.glob("teacher-*.safetensors"))):  # the run ends by itself
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            time.sleep(0.2)
        workers = _workers(proc.pid)
        assert set(workers) == {0, 1}
        os.kill(workers[1], sig)  # one rank is stopped, or dies, mid-run
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == (130 if sig == signal.SIGINT else 1), (sig, stderr[-2000:])
        said = _said(stderr)
        assert said and all("--resume" in line for line in said), said  # one-line messages, no traceback
        if sig == signal.SIGKILL:
            assert said[-1] == ("error: training process 1 of 2 was stopped by SIGKILL; the last checkpoint (if any) "
                                "is kept, rerun the same command with --resume"), said
        assert not list((cache / "models").glob("teacher-*.safetensors")), sig  # nothing half-done in the cache
        resumed = _ok(*TEACHER, *steps, "--resume", cache=cache)
        assert resumed["id"] == whole["id"], sig  # every rank's generators came back: the same artifact
        (cache / "models" / Path(resumed["path"]).name).unlink()


@pytest.mark.stress
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the workers")
def test_stress_identical_runs_and_stops_end_cleanly_on_every_rank(cache):
    """`make stress`: RACTD_STRESS_ROUNDS times (20), two identical `--nproc 2` runs in a row (the
    second rewrites an artifact that already exists) end with exit 0 and the same artifact, and a
    Ctrl-C of rank 1 ends with exit 130 and the one interrupted line. Before the workers left with
    :func:`distributed.leave`, about one run in eight on a loaded 2-core machine ended in a SIGABRT
    of a worker at interpreter exit."""
    rounds = int(os.environ.get("RACTD_STRESS_ROUNDS", "20"))
    env = {**os.environ, "RACTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop(distributed.LAUNCH_ENV, None)
    ckpts, ids, stops = cache / "checkpoints", set(), []
    for _ in range(rounds):
        ids |= {_ok(*TEACHER, "--steps", "60", "--nproc", "2", cache=cache)["id"] for _ in range(2)}
        for old in ckpts.glob("*"):
            old.unlink()
        proc = subprocess.Popen([sys.executable, "-m", "ractd_cli", *TEACHER, "--steps", "1500", "--nproc", "2", "--json"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (ckpts.is_dir() and any(ckpts.glob("teacher-*.safetensors"))):
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            time.sleep(0.2)
        os.kill(_workers(proc.pid)[1], signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
        stops.append((proc.returncode, _said(stderr)[-1:]))
    assert len(ids) == 1  # every run, the same artifact
    assert stops == [(130, ["interrupted; the last checkpoint (if any) is kept, rerun with --resume"])] * rounds, stops


def _said(stderr: str) -> list[str]:
    """The lines a run printed on stderr, progress bars left out; none may be part of a traceback."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("teacher-bimodal")]
    assert not any("Traceback" in line for line in lines), lines
    return lines


def test_bad_input_under_nproc_is_one_line_from_rank_0(tmp_path):
    """A training command with --nproc that fails on every rank (here: no dataset) says why once, in
    one line, with the command's exit code: no launcher log, no traceback."""
    pytest.importorskip("ractd_bimodal")
    r = _ractd(*TEACHER, "--steps", "10", "--nproc", "2", cache=tmp_path / "empty")
    assert r.returncode == 1, r.stderr[-2000:]
    assert _said(r.stderr) == ["error: no dataset for bimodal in the cache; run `ractd fetch bimodal` (or `ractd fetch bimodal "
                               "--source local` to generate one here)"], r.stderr[-2000:]


def test_nproc_is_split_off_and_checked():
    assert distributed.split_nproc(["train-teacher", "--env", "x", "--nproc", "3"]) == (3, ["train-teacher", "--env", "x"])
    assert distributed.split_nproc(["distill", "--nproc=2", "--env", "x"]) == (2, ["distill", "--env", "x"])
    assert distributed.split_nproc(["distill", "--env", "x"]) == (1, ["distill", "--env", "x"])
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 1) != distributed.rank_seed(7, 2)
    from typer.testing import CliRunner

    from ractd_cli.cli import app

    r = CliRunner().invoke(app, ["train-teacher", "--env", "bimodal", "--nproc", "0"])
    assert r.exit_code == 2 and "--nproc must be at least 1" in r.output

"""Faults never cost a user their work (docs/reliability.md): what a failed step leaves behind, and
that the next run continues. Each case runs the command as a user would (in-process CLI)."""

from __future__ import annotations

import errno
import json

import pytest
from typer.testing import CliRunner

from ractd_cli import artifacts
from ractd_cli.cli import app

runner = CliRunner()
TEACHER = ("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "60", "--device", "cpu")


def _run(*args: str):
    return runner.invoke(app, [*args, "--json"])


@pytest.fixture
def bimodal(_tmp_cache):
    pytest.importorskip("ractd_bimodal")
    r = _run("fetch", "bimodal", "--source", "local", "--steps", "2000")
    assert r.exit_code == 0, r.output
    return _tmp_cache


def test_a_failed_final_save_keeps_the_run_and_resume_writes_the_same_artifact(bimodal, monkeypatch):
    whole = json.loads(_run(*TEACHER).stdout)
    (bimodal / "models" / whole["path"].rsplit("/", 1)[-1]).unlink()
    write = artifacts.atomic_save_tensors

    def full_disk(path, tensors, metadata):
        if path.parent.name == "models" and path.name.startswith("teacher-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, tensors, metadata)

    monkeypatch.setattr(artifacts, "atomic_save_tensors", full_disk)
    r = _run(*TEACHER)
    assert r.exit_code == 1
    said = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "No space left on device" in said[0] and "--resume" in said[0], r.stderr
    assert not list((bimodal / "models").glob("teacher-*")) and not list((bimodal / "models").glob(".teacher-*"))
    assert list((bimodal / "checkpoints").glob("teacher-*.safetensors"))  # every step's work is kept
    monkeypatch.setattr(artifacts, "atomic_save_tensors", write)
    resumed = json.loads(_run(*TEACHER, "--resume").stdout)
    assert resumed["id"] == whole["id"]  # straight to the save: the uninterrupted run's artifact
    assert not list((bimodal / "checkpoints").glob("teacher-*"))  # released once written


def test_a_damaged_artifact_is_named_never_skipped(bimodal):
    first = json.loads(_run(*TEACHER).stdout)
    second = json.loads(_run(*TEACHER, "--seed", "1").stdout)
    newest = bimodal / "models" / second["path"].rsplit("/", 1)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated: its header cannot be read
    listed = json.loads(_run("cache", "list").stdout)
    assert [a["id"] for a in listed["artifacts"]] == [first["id"]] and listed["damaged"] == [str(newest)]
    r = _run("rollout", "--env", "bimodal", "--model", "latest", "--episodes", "1")
    assert r.exit_code == 1 and newest.name in r.stderr and "cache rm" in r.stderr  # not the older model, silently
    r = _run("rollout", "--env", "bimodal", "--model", second["id"][:8], "--episodes", "1")
    assert r.exit_code == 1 and "damaged" in r.stderr


def test_out_of_memory_is_one_line_with_the_remedy(bimodal, monkeypatch):
    from ractd_cli.train import loop

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    monkeypatch.setattr(loop, "sample_batch", no_memory)
    r = _run(*TEACHER)
    said = [line for line in r.stderr.splitlines() if not line.startswith("teacher-bimodal")]  # the progress bar aside
    assert r.exit_code == 1 and len(said) == 1 and "out of memory" in said[0] and "--batch-size" in said[0], r.stderr


@pytest.mark.parametrize("option", [("--seed", "-1"), ("--seed", str(2**40)), ("--steps", "0"), ("--steps", str(10**12)), ("--batch-size", str(2**31))])
def test_numeric_options_are_bounded(option):
    r = runner.invoke(app, [*TEACHER[:-4], *option])
    assert r.exit_code == 2 and option[0] in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGTERM"), reason="no SIGTERM")
def test_sigterm_checkpoints_like_ctrl_c(bimodal):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "RACTD_CACHE_DIR": str(bimodal), "OMP_NUM_THREADS": "1"}
    whole = json.loads(_run(*TEACHER[:-4], "--steps", "800").stdout)
    (bimodal / "models" / whole["path"].rsplit("/", 1)[-1]).unlink()
    proc = subprocess.Popen([sys.executable, "-m", "ractd_cli", *TEACHER[:-4], "--steps", "800", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = bimodal / "checkpoints"
    while not (ckpts.is_dir() and any(ckpts.glob("teacher-*.safetensors"))):
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "--resume" in stderr.splitlines()[-1], stderr
    assert not list((bimodal / "models").glob("teacher-*"))
    resumed = json.loads(_run(*TEACHER[:-4], "--steps", "800", "--resume").stdout)
    assert resumed["id"] == whole["id"]


def _interrupted_run(bimodal, monkeypatch, command: tuple[str, ...] = TEACHER[:-4]) -> None:
    """A run (by default the teacher's) stopped by Ctrl-C after its first checkpoint (step 500 of 1000)."""
    from ractd_cli.train import loop

    save = loop._save_checkpoint

    def stop_after_saving(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", stop_after_saving)
    r = _run(*command, "--steps", "1000")
    assert r.exit_code == 130, r.output
    monkeypatch.setattr(loop, "_save_checkpoint", save)


@pytest.mark.parametrize("command, other", [
    (TEACHER[:-4], ("--windows", "padded")),  # other training windows
    (("train-reward", "--env", "bimodal", "--preset", "tiny"), ("--gamma", "0.9")),  # another return-to-go
], ids=["teacher-windows", "reward-gamma"])
def test_a_run_with_other_options_leaves_an_interrupted_runs_checkpoint_alone(bimodal, monkeypatch, command, other):
    """Runs that differ only in an option their model records are different runs: finishing one
    neither reuses nor releases the other's checkpoint, and the interrupted run resumes where it stopped."""
    whole = json.loads(_run(*command, "--steps", "1000").stdout)
    (bimodal / "models" / whole["path"].rsplit("/", 1)[-1]).unlink()
    _interrupted_run(bimodal, monkeypatch, command)
    (ckpt,) = (bimodal / "checkpoints").glob("*.safetensors")
    kept = ckpt.read_bytes()
    r = _run(*command, *other, "--steps", "1000")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["id"] != whole["id"]
    assert ckpt.read_bytes() == kept  # not overwritten at its step 500, nor released at its end
    resumed = json.loads(_run(*command, "--steps", "1000", "--resume").stdout)
    assert resumed["id"] == whole["id"] and not list((bimodal / "checkpoints").glob("*.safetensors"))


def test_resume_refuses_a_damaged_checkpoint(bimodal, monkeypatch):
    _interrupted_run(bimodal, monkeypatch)
    (ckpt,) = (bimodal / "checkpoints").glob("teacher-*.safetensors")
    raw = bytearray(ckpt.read_bytes())
    raw[-1000] ^= 0x10  # one bit of a tensor flipped
    ckpt.write_bytes(bytes(raw))
    r = _run(*TEACHER[:-4], "--steps", "1000", "--resume")
    assert r.exit_code == 1 and "is damaged (its checksum does not match)" in r.stderr, r.stderr


def test_resume_refuses_a_checkpoint_of_other_data(bimodal, monkeypatch):
    _interrupted_run(bimodal, monkeypatch)
    r = _run("fetch", "bimodal", "--source", "local", "--steps", "2000", "--seed", "1", "--force")  # regenerated
    assert r.exit_code == 0, r.output
    r = _run(*TEACHER[:-4], "--steps", "1000", "--resume")
    assert r.exit_code == 1 and "was made on other data" in r.stderr and "without --resume" in r.stderr, r.stderr


def test_a_truncated_dataset_is_named_and_fetch_repairs_it(bimodal):
    data = bimodal / "datasets" / "ractd" / "bimodal" / "local-v0" / "data"
    whole = json.loads(_run(*TEACHER).stdout)
    h5 = data / "main_data.hdf5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])  # half of it
    r = _run(*TEACHER)
    assert r.exit_code == 1 and "is damaged: main_data.hdf5 has changed" in r.stderr and "ractd fetch" in r.stderr, r.stderr
    r = _run("fetch", "bimodal", "--source", "local")  # no --force needed, nor the recipe: it is read back
    assert r.exit_code == 0 and "damaged" in r.stderr, r.output
    assert json.loads(_run(*TEACHER).stdout)["id"] == whole["id"]  # the same data again
    h5.unlink()
    r = _run(*TEACHER)
    assert r.exit_code == 1 and "main_data.hdf5 is missing" in r.stderr
    assert _run("fetch", "bimodal", "--source", "local").exit_code == 0 and h5.exists()


def test_the_folders_of_a_killed_fetch_are_cleaned_by_the_next(bimodal):
    from ractd_cli.data import store

    base = bimodal / "datasets"
    dead = base / ".staging-999999999-0123456789ab"  # no such process
    (dead / "half").mkdir(parents=True)
    trash = base / ".trash-0123456789ab"
    trash.mkdir()
    mine = base / f".staging-{__import__('os').getpid()}-0123456789ab"  # a live run's: kept
    mine.mkdir()
    assert store.stale_folders() == sorted([dead]) + [trash]
    assert _run("fetch", "bimodal", "--source", "local", "--steps", "2000", "--force").exit_code == 0
    assert not dead.exists() and not trash.exists() and mine.exists()


@pytest.mark.parametrize("ref", ["..", "/", ".", "", "  "])
def test_cache_rm_of_a_folder_is_a_usage_error(ref, _tmp_cache):
    (_tmp_cache / "models").mkdir(parents=True)
    r = runner.invoke(app, ["cache", "rm", ref])
    assert r.exit_code == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
    assert (_tmp_cache / "models").is_dir()


def test_an_artifact_whose_weights_do_not_fit_its_header_is_one_line(bimodal):
    """A file edited consistently (its content hash rewritten) is still refused when its weights do
    not fit the network its header describes, in one line (a tampered file fails the hash first)."""
    from ractd_cli.artifacts import Artifact, load_artifact
    from ractd_cli.errors import RactdError
    from ractd_cli.models import denoiser_from

    art = load_artifact(json.loads(_run(*TEACHER).stdout)["id"])
    key = next(k for k in art.tensors if k.startswith("net.") and art.tensors[k].ndim == 2)
    wrong = Artifact(path=art.path, meta=art.meta, tensors={**art.tensors, key: art.tensors[key][:, :1].contiguous()})
    with pytest.raises(RactdError, match="do not fit the network its header describes") as e:
        denoiser_from(wrong)
    assert "\n" not in str(e.value) and "cache rm" in str(e.value)


def test_export_to_a_folder_is_a_usage_error(tmp_path):
    r = runner.invoke(app, ["export", "--env", "bimodal", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = runner.invoke(app, ["export", "--env", "bimodal", "-o", str(tmp_path / "no" / "plan.onnx")])
    assert r.exit_code == 2 and "does not exist" in r.stderr, r.stderr


def test_ctrl_c_during_fetch_leaves_nothing_and_says_to_rerun(_tmp_cache, monkeypatch):
    pytest.importorskip("ractd_bimodal")
    from ractd_cli.registry import get_task

    adapter, _ = get_task("bimodal")

    def interrupted(task, *, steps, seed, progress=None):
        if progress:
            progress(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(adapter, "generate", interrupted)
    r = runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "100"])
    said = [line for line in r.stderr.splitlines() if not line.startswith("generating")]
    assert r.exit_code == 130 and said == ["interrupted; nothing half-written is left in the cache, rerun the same command"], r.stderr
    assert not list((_tmp_cache / "datasets").rglob("*.hdf5"))


def test_fetch_refuses_data_the_disk_or_the_file_limit_cannot_hold(_tmp_cache, monkeypatch):
    pytest.importorskip("ractd_bimodal")
    import resource
    import shutil

    from ractd_cli.data import store

    usage = shutil.disk_usage(str(_tmp_cache.parent))
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    r = runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "500"])
    assert r.exit_code == 1 and "not enough disk space" in r.stderr, r.stderr
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: usage)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1000, resource.RLIM_INFINITY))
    r = runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "500"])
    assert r.exit_code == 1 and "ulimit -f" in r.stderr, r.stderr
    assert not list((_tmp_cache / "datasets").rglob("*.hdf5"))  # nothing written, nothing left


def test_a_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("ractd_bimodal")
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(not_a_folder))
    r = runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "100"])
    said = [line for line in r.stderr.splitlines() if not line.startswith("generating")]  # the bar aside
    assert r.exit_code == 1 and len(said) == 1 and "Not a directory" in said[0] and "RACTD_CACHE_DIR" in said[0], r.stderr


def test_after_the_data_are_fetched_again_distill_names_the_stale_model(bimodal):
    tiny = ("--preset", "tiny", "--steps", "30", "--device", "cpu")
    assert _run("train-teacher", "--env", "bimodal", *tiny).exit_code == 0
    assert _run("train-reward", "--env", "bimodal", *tiny).exit_code == 0
    assert _run("fetch", "bimodal", "--source", "local", "--steps", "2000", "--seed", "1", "--force").exit_code == 0
    r = _run("distill", "--env", "bimodal", *tiny)
    assert r.exit_code == 1 and "teacher" in r.stderr and "earlier version" in r.stderr and "train-teacher" in r.stderr, r.stderr
    assert _run("train-teacher", "--env", "bimodal", *tiny).exit_code == 0
    r = _run("distill", "--env", "bimodal", *tiny)  # now the reward model is the stale one
    assert r.exit_code == 1 and "reward model" in r.stderr and "train-reward" in r.stderr, r.stderr
    assert _run("train-reward", "--env", "bimodal", *tiny).exit_code == 0
    assert _run("distill", "--env", "bimodal", *tiny).exit_code == 0


def test_written_files_follow_the_umask(tmp_path):
    import os

    from ractd_cli.artifacts import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


def test_a_second_process_training_the_same_run_stops_with_what_to_do(bimodal):
    """Two shells starting the same training (same recipe, same data) once both wrote one checkpoint.
    The second now stops at once with a one-line error; the first is untouched, and once it is
    stopped (Ctrl-C) its run continues with --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    long_run = [*TEACHER[:-4], "--steps", "100000", "--device", "cpu"]
    first = subprocess.Popen([sys.executable, "-m", "ractd_cli", *long_run], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not list((bimodal / "checkpoints").glob("teacher-*.lock")):  # the first run has begun training
            assert first.poll() is None, first.stderr.read()  # it ended without ever holding the lock
            time.sleep(0.2)
        r = _run(*long_run, "--resume")
        said = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.exit_code == 1 and len(said) == 1, r.stderr
        assert "another ractd process is training this same run" in said[0] and "--resume" in said[0]
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=300)
    assert not list((bimodal / "checkpoints").glob("*.lock"))  # freed and removed when the run stops
    assert list((bimodal / "checkpoints").glob("teacher-*.safetensors"))  # Ctrl-C kept its work


def test_a_second_fetch_of_the_same_dataset_stops_with_what_to_do(_tmp_cache):
    """Two shells generating one dataset once did the same work twice over the same files (a MuJoCo
    task's SAC run). While one process makes it (holds its lock), another stops with one line and
    writes nothing; once it is free, the same command makes the dataset and leaves no lock behind."""
    pytest.importorskip("ractd_bimodal")
    from filelock import FileLock

    from ractd_cli.data import store

    args = ("fetch", "bimodal", "--source", "local", "--steps", "2000")
    lock = store.fetch_lock("ractd/bimodal/local-v0", _tmp_cache)
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock), timeout=0):  # another process making it (an open file of its own)
        r = _run(*args)
    said = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.exit_code == 1 and len(said) == 1, r.stderr
    assert "another ractd process is making this dataset now" in said[0] and "run the same command again" in said[0]
    assert not store.dataset_exists("ractd/bimodal/local-v0", _tmp_cache)
    assert _run(*args).exit_code == 0
    assert store.dataset_exists("ractd/bimodal/local-v0", _tmp_cache) and not lock.exists()


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGTERM"), reason="no SIGTERM")
def test_sigterm_during_fetch_is_ctrl_c_too(_tmp_cache):
    """Every command, not training alone, takes SIGTERM (a `kill`, a batch scheduler's stop) as Ctrl-C:
    one line, exit 130, nothing half-written. Before, `fetch` died at once without a word."""
    pytest.importorskip("ractd_bimodal")
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "RACTD_CACHE_DIR": str(_tmp_cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ractd_cli", "fetch", "bimodal", "--source", "local", "--steps", "5000000"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # the first progress line: generation is under way
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert first.startswith("generating bimodal: "), first + rest
    assert proc.returncode == 130 and rest.splitlines()[-1] == "interrupted; nothing half-written is left in the cache, rerun the same command", rest
    assert not list((_tmp_cache / "datasets").rglob("*.hdf5"))

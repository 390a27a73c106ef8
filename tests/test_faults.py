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

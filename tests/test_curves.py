"""Training curves: every trainer writes TensorBoard event files (each loss term and the learning rate
per step), `ractd curves` reads them back without a server, and the artifact keeps a coarse curve."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ractd_cli.cli import app

runner = CliRunner()


def _ok(*args: str) -> dict:
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_event_files_hold_every_term_and_the_learning_rate(tmp_path):
    pytest.importorskip("ractd_bimodal")
    pytest.importorskip("tensorboard")
    _ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    _ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "30")
    _ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "30")
    student = _ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "40", "--log-dir", str(tmp_path / "tb"))
    doc = _ok("curves", "--env", "bimodal", "--log-dir", str(tmp_path / "tb"), "--plot", str(tmp_path / "curves.png"))
    (name, tags), = doc["runs"].items()
    assert name.startswith("student-bimodal-")
    assert {"loss/loss", "loss/ctm", "loss/dsm", "loss/reward", "lr"} <= set(tags)
    assert tags["loss/loss"]["step"] == list(range(1, 41)) and len(tags["lr"]["value"]) == 40
    tail = tags["loss/loss"]["value"][-4:]  # the artifact's loss: the mean over the last 10% of the steps
    assert sum(tail) / 4 == pytest.approx(student["losses"]["loss"], rel=1e-5)
    assert (tmp_path / "curves.png").stat().st_size > 0
    # the default folder is the cache's runs/: the teacher and reward runs are there
    default = _ok("curves", "--env", "bimodal")
    assert sorted(n.split("-")[0] for n in default["runs"]) == ["reward", "teacher"]
    from ractd_cli.artifacts import load_artifact

    curve = load_artifact(student["id"]).meta["loss_curve"]
    assert curve["step"][-1] == 40 and len(curve["step"]) == len(curve["loss"]) == 20


def test_curves_says_when_there_is_nothing_to_draw():
    pytest.importorskip("ractd_bimodal")
    r = runner.invoke(app, ["curves", "--env", "bimodal"])
    assert r.exit_code == 1 and "no training runs of bimodal" in r.output


def test_evaluations_during_training_go_to_the_event_files(tmp_path):
    """`--eval-every`: each evaluation's numbers are scalars `eval/<name>` at its step, the same as the
    artifact's eval_curve; `curves` lists the last one and draws them beside the losses."""
    pytest.importorskip("ractd_bimodal")
    pytest.importorskip("tensorboard")
    _ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    _ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "6")
    _ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "6")
    student = _ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "6", "--eval-every", "3", "--eval-episodes", "2",
                  "--log-dir", str(tmp_path / "tb"))
    doc = _ok("curves", "--env", "bimodal", "--log-dir", str(tmp_path / "tb"), "--plot", str(tmp_path / "curves.png"))
    (tags,) = doc["runs"].values()
    assert tags["eval/score_mean"]["step"] == [3, 6]
    assert tags["eval/score_mean"]["value"] == pytest.approx([p["score_mean"] for p in student["eval_curve"]], rel=1e-6)
    assert "eval/score_stderr" in tags and (tmp_path / "curves.png").stat().st_size > 0
    r = runner.invoke(app, ["curves", "--env", "bimodal", "--log-dir", str(tmp_path / "tb")])
    last = f"{student['eval_curve'][-1]['score_mean']:.1f}"
    assert r.exit_code == 0 and "evaluation" in r.stderr and last in r.stderr  # (a narrow table may wrap "at step 6")
    # the artifact names its run: `curves --model ID` finds it, `cache show` says so
    from ractd_cli.artifacts import load_artifact

    (run,) = load_artifact(student["id"]).meta["runs"]
    assert list(doc["runs"]) == [run]
    assert list(_ok("curves", "--env", "bimodal", "--log-dir", str(tmp_path / "tb"), "--model", student["id"][:8])["runs"]) == [run]
    assert _ok("cache", "show", student["id"])["runs"] == [run]
    teacher_run = _ok("curves", "--env", "bimodal", "--model", load_artifact("latest", kind="teacher").id)["runs"]
    assert len(teacher_run) == 1 and next(iter(teacher_run)).startswith("teacher-bimodal-")

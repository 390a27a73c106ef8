"""The paper's ablations as commands: `distill --eval-every N` (Figure 4's score-vs-training curve, which
leaves training alone), `train-teacher --eval-every N` (the teacher's learning curve) and
`train-teacher --teacher-reward-weight w` (Table 4's reward-aware teacher)."""

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


def test_eval_curve_is_recorded_and_leaves_training_alone(tmp_path, monkeypatch):
    pytest.importorskip("ractd_bimodal")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    _ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    _ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "40")
    _ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "40")
    common = ("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "25")
    with_curve = _ok(*common, "--eval-every", "10", "--eval-episodes", "3")
    plain = _ok(*common)
    curve = with_curve["eval_curve"]
    assert [p["step"] for p in curve] == [10, 20, 25]  # every 10 steps and after the last
    assert all(0 <= p["success_rate"] <= 1 and p["score_stderr"] >= 0 for p in curve)
    assert "eval_curve" not in plain

    from ractd_cli.artifacts import load_artifact

    a, b = load_artifact(with_curve["id"]), load_artifact(plain["id"])
    assert a.config["eval"] == {"every": 10, "episodes": 3, "seed": 0} and a.config["eval_curve"] == curve
    assert a.tensors.keys() == b.tensors.keys()
    assert all((a.tensors[k] == b.tensors[k]).all() for k in a.tensors)  # same weights: evaluation changed nothing
    # the last point scores the saved student: `rollout` of it on the same episodes agrees
    roll = _ok("rollout", "--env", "bimodal", "--model", with_curve["id"], "--episodes", "3", "--no-jit")
    assert (roll["score_mean"], roll["success_rate"]) == (curve[-1]["score_mean"], curve[-1]["success_rate"])


def test_teacher_learning_curve_is_recorded_and_leaves_training_alone(tmp_path, monkeypatch):
    """`train-teacher --eval-every N`: the EMA teacher scored during training (a learning curve for
    sizing presets), with the cheap sampler asked for; the saved weights are those of a plain run."""
    pytest.importorskip("ractd_bimodal")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    _ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    common = ("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "30")
    with_curve = _ok(*common, "--eval-every", "20", "--eval-episodes", "3", "--eval-sampler", "euler", "--eval-nfe", "4")
    plain = _ok(*common)
    curve = with_curve["eval_curve"]
    assert [p["step"] for p in curve] == [20, 30] and "eval_curve" not in plain

    from ractd_cli.artifacts import load_artifact

    a, b = load_artifact(with_curve["id"]), load_artifact(plain["id"])
    assert a.config["eval"] == {"every": 20, "episodes": 3, "seed": 0, "sampler": "euler", "nfe": 4}
    assert all((a.tensors[k] == b.tensors[k]).all() for k in b.tensors)  # same weights
    # the last point scores the saved teacher: `rollout` with that sampler agrees
    roll = _ok("rollout", "--env", "bimodal", "--model", with_curve["id"], "--episodes", "3", "--no-jit", "--sampler", "euler", "--nfe", "4")
    assert (roll["score_mean"], roll["success_rate"]) == (curve[-1]["score_mean"], curve[-1]["success_rate"])


@pytest.mark.parametrize("command, extra", [("distill", []), ("train-teacher", []), ("train-teacher", ["--eval-nfe", "0"]),
                                            ("train-reward", [])])
def test_bad_eval_options_are_usage_errors(command, extra):
    r = runner.invoke(app, [command, "--env", "bimodal", "--eval-every", "-1" if not extra else "5", *extra])
    assert r.exit_code == 2 and ("--eval-every" in r.output or "--eval-nfe" in r.output)


def test_reward_aware_teacher_records_its_reward_model_and_distills(tmp_path, monkeypatch):
    """`train-teacher --teacher-reward-weight w` (Table 4's reward-aware teacher): the reward term joins the
    teacher's loss and changes its weights; w = 0 is the unconditioned teacher, bit for bit."""
    pytest.importorskip("ractd_bimodal")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    _ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    reward = _ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "40")
    common = ("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "30")
    plain = _ok(*common)
    zero = _ok(*common, "--teacher-reward-weight", "0")
    aware = _ok(*common, "--teacher-reward-weight", "1.0", "--reward", reward["id"])
    assert zero["id"] == plain["id"] and plain["parents"] == []
    assert aware["id"] != plain["id"] and aware["parents"] == [reward["id"]]
    assert {"edm", "reward", "reward_abs"} <= aware["losses"].keys() and aware["losses"]["reward_abs"] > 0

    from ractd_cli.artifacts import load_artifact

    art = load_artifact(aware["id"])
    assert (art.config["reward_weight"], art.config["reward_id"]) == (1.0, reward["id"])
    assert any(not (art.tensors[k] == load_artifact(plain["id"]).tensors[k]).all() for k in art.tensors if k.startswith("net."))
    student = _ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "5", "--teacher", aware["id"], "--reward-weight", "0")
    assert student["parents"] == [aware["id"]]
    r = runner.invoke(app, [*common, "--teacher-reward-weight", "inf"])
    assert r.exit_code == 2 and "--teacher-reward-weight" in r.output
    # the option's old name still works, and says it is deprecated
    old = runner.invoke(app, [*common, "--reward-weight", "1.0", "--reward", reward["id"], "--json"])
    assert old.exit_code == 0 and json.loads(old.stdout)["id"] == aware["id"], old.output
    assert "deprecated: `train-teacher --reward-weight` is now `--teacher-reward-weight`" in old.stderr
    both = runner.invoke(app, [*common, "--reward-weight", "1.0", "--teacher-reward-weight", "2.0"])
    assert both.exit_code == 2 and "give --teacher-reward-weight alone" in both.output

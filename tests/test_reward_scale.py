"""The reward term's scale kappa (``TaskSpec.reward_scale``): L_Reward = -kappa R(plan), so that sigma
(``--reward-weight``) counts in a task's reference weighting (Maze2d: the RACTD authors' per-state
weight summed over the plan). Recorded in the student, shown beside sigma; 1 changes nothing."""

from __future__ import annotations

import dataclasses

import pytest

from ractd_cli.adapters import TaskSpec


def test_reward_scale_is_checked():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reward_scale"):
            TaskSpec(name="toy", env_id="Toy-v0", obs_dim=2, act_dim=1, planning="chunk", horizon=2, reward_scale=bad)


def test_maze_tasks_weight_the_reward_term_as_the_authors_code():
    """kappa = H x the authors' per-state weight (1e-4 umaze and medium, 1e-5 large), sigma 1 by default."""
    from ractd_cli.registry import get_task

    for maze, horizon, per_state in (("umaze", 128, 1e-4), ("medium", 256, 1e-4), ("large", 384, 1e-5)):
        spec = get_task(f"maze2d-{maze}")[1]
        assert spec.loss_weights[2] == 1.0
        assert spec.reward_scale == pytest.approx(horizon * per_state, rel=1e-12)
    assert get_task("hopper-medium-replay")[1].reward_scale == 1.0  # MuJoCo: Table 9's sigma as it is
    from ractd_cli.adapters import spec_dict

    assert spec_dict(get_task("maze2d-large")[1])["reward_scale"] == pytest.approx(384e-5)  # `ractd envs --json`


def test_students_record_kappa_and_their_reward_term_scales_with_it(tmp_path, monkeypatch, ractd_ok):
    """One distillation step from the same teacher and seed: the weighted reward term at kappa 0.25 is
    a quarter of kappa 1's (the student's first plan is the same); the student records kappa, results
    name it beside sigma; a CTD student records none and keeps its id; a reward-aware teacher records it."""
    from ractd_cli import registry
    from ractd_cli.artifacts import load_artifact
    from ractd_cli.models import StudentConfig

    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ok = ractd_ok
    ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "3")
    ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "3")
    distill = ("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "1", "--reward-weight")
    plain = load_artifact(ok(*distill, "1")["id"])
    ctd = ok(*distill, "0")["id"]

    adapter, spec = registry.get_task("bimodal")
    monkeypatch.setitem(adapter.tasks, "bimodal", dataclasses.replace(spec, reward_scale=0.25))
    scaled = load_artifact(ok(*distill, "1")["id"])
    assert ok(*distill, "0")["id"] == ctd  # kappa does not enter a CTD student
    assert "reward_scale" not in plain.config and scaled.config["reward_scale"] == 0.25
    assert StudentConfig.of(scaled).reward_scale == 0.25 and StudentConfig.of(plain).reward_scale == 1.0
    assert scaled.id != plain.id
    assert scaled.config["loss_terms"]["reward"] == pytest.approx(0.25 * plain.config["loss_terms"]["reward"], rel=1e-5)
    assert scaled.config["loss_terms"]["dsm"] == pytest.approx(plain.config["loss_terms"]["dsm"], rel=1e-5)
    doc = ok("rollout", "--env", "bimodal", "--model", scaled.id, "--episodes", "1")
    assert (doc["reward_weight"], doc["reward_scale"], doc["distill_seed"]) == (1.0, 0.25, 0)
    plain_ctd = ok("rollout", "--env", "bimodal", "--model", ctd, "--episodes", "1")  # a CTD rollout names its sigma 0 too
    assert (plain_ctd["reward_weight"], plain_ctd["distill_seed"]) == (0.0, 0) and "reward_scale" not in plain_ctd
    assert StudentConfig.of(scaled).sigma_label == "1 (x 0.25)"
    # "the student" is the newest at the task's own (sigma, kappa): not a newer one at sigma 1 on kappa 1
    monkeypatch.setitem(adapter.tasks, "bimodal", spec)
    newer = ok(*distill, "1", "--seed", "1")["id"]
    monkeypatch.setitem(adapter.tasks, "bimodal", dataclasses.replace(spec, reward_scale=0.25))
    from ractd_cli.resolve import newest_student, student_choice

    chosen = newest_student(registry.get_task("bimodal")[1])
    assert chosen.id == scaled.id != newer
    assert "reward weight 1 (x 0.25), the task's default" in student_choice(chosen, registry.get_task("bimodal")[1])
    # a reward-aware teacher (Table 4's ablation) records the kappa of its own reward term too
    aware = load_artifact(ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "3", "--teacher-reward-weight", "1")["id"])
    assert aware.config["reward_scale"] == 0.25

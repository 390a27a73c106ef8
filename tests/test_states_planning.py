"""State-planning details: rest padding of training plans, per-task preset overrides, plan followers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ractd_cli.adapters import TaskSpec
from ractd_cli.data import Episode, make_windows
from ractd_cli.errors import UsageError
from ractd_cli.evaluate import DEFAULT_FOLLOW, Execution
from ractd_cli.presets import PRESETS
from ractd_cli.train.common import TrainOptions
from ractd_cli.train.data import build_task_data


def _spec(**kw) -> TaskSpec:
    base = dict(name="toy", env_id="Toy-v0", obs_dim=3, act_dim=1, planning="states", horizon=6, goal_dim=1)
    return TaskSpec(**{**base, **kw})


def _episode(T: int) -> Episode:
    states = np.stack([np.arange(T + 1), np.arange(T + 1) + 0.5, np.full(T + 1, 2.0)], axis=1).astype(np.float32)
    states[:, 2] += np.arange(T + 1) % 2  # the "velocity" column: 2 or 3, never 0
    return Episode(states, np.zeros((T, 1), np.float32), np.zeros(T, np.float32), np.zeros(T, bool),
                   np.eye(T, dtype=bool)[-1], np.full((T + 1, 1), 9.0, np.float32))


def test_states_padding_rests_in_rest_dims():
    eps = [_episode(4), _episode(7)]
    spec = _spec(rest_dims=(2,), windows="padded")  # padding is what this tests
    w = make_windows(eps, spec)
    data = build_task_data(spec, w, "toy")
    idx = torch.arange(len(w))
    x = data.normalizers["state"].unnormalize(data.diffusion.gather(idx)["x"])
    pad = torch.as_tensor(w.x_mask)
    assert (~pad).any() and pad.any()
    # past an episode's end: the last position, velocity 0; real rows untouched
    np.testing.assert_allclose(x[~pad][:, 2], 0.0, atol=1e-5)
    np.testing.assert_allclose(x[pad].numpy(), w.x_source[w.x_index][w.x_mask], atol=1e-5)
    np.testing.assert_allclose(x[~pad][:, :2].numpy(), w.x_source[w.x_index][~w.x_mask][:, :2], atol=1e-5)
    # without rest_dims the padding repeats the last state as it is
    plain = build_task_data(_spec(windows="padded"), w, "toy")
    xp = plain.normalizers["state"].unnormalize(plain.diffusion.gather(idx)["x"])
    np.testing.assert_allclose(xp.numpy(), w.x_source[w.x_index], atol=1e-5)


def test_task_preset_overrides():
    spec = _spec(presets={"quick": {"net": "small", "teacher": 7, "batch_size": 3}})
    opts = TrainOptions(preset="quick", device="cpu")
    cfg = opts.config("teacher", spec)
    assert (cfg.steps, cfg.batch_size, cfg.lr) == (7, 3, PRESETS["quick"].lr)
    assert opts.net_preset(spec) == "small"
    assert opts.config("reward", spec).steps == PRESETS["quick"].steps["reward"]
    # other presets and command-line values are not affected
    assert TrainOptions(preset="tiny", device="cpu").config("teacher", spec).steps == PRESETS["tiny"].steps["teacher"]
    assert TrainOptions(preset="quick", steps=5, batch_size=2, device="cpu").config("teacher", spec).batch_size == 2
    assert opts.config("teacher").steps == PRESETS["quick"].steps["teacher"]
    with pytest.raises(UsageError):
        opts.config("teacher", replace(spec, presets={"quick": {"teachr": 1}}))


def test_default_follow_is_inverse_dynamics_also_when_the_adapter_has_a_controller():
    class WithController:
        def controller_action(self, state, target_state, goal=None):
            return np.zeros(2)

        def track_action(self, state, target_state):
            return np.zeros(2)

    assert DEFAULT_FOLLOW == "inverse"
    assert Execution.of(WithController(), _spec()) == Execution("inverse")
    assert Execution.of(object(), _spec()).follow == "inverse"
    assert Execution.of(WithController(), _spec(), "controller", replan=True, snap_goal=True) == Execution("controller", True, True)
    assert Execution.of(WithController(), _spec(planning="chunk", goal_dim=0)).follow is None


def test_states_policy_without_controller_or_inverse_model_is_refused():
    """The default follower of an adapter without a controller is the inverse-dynamics model, so
    a states planner with neither must be refused up front, also when ``follow`` is left unset."""
    from types import SimpleNamespace

    from ractd_cli.evaluate import planner_policy

    planner = SimpleNamespace(spec=_spec(), device=torch.device("cpu"))
    for follow in (None, "inverse"):
        with pytest.raises(UsageError, match="inverse-dynamics"):
            planner_policy(planner, object(), inverse=None, execution=None if follow is None else Execution.of(object(), _spec(), follow))


def test_task_spec_refuses_what_it_could_only_plan_wrongly():
    """A chunk task with a goal would silently drop the goal; other impossible specs are refused too."""
    with pytest.raises(ValueError, match="goal"):
        TaskSpec(name="t", env_id="E", obs_dim=3, act_dim=2, planning="chunk", horizon=4, goal_dim=2)
    with pytest.raises(ValueError, match="none of"):
        TaskSpec(name="t", env_id="E", obs_dim=3, act_dim=2, planning="actions", horizon=4)
    with pytest.raises(ValueError, match="history 1"):
        TaskSpec(name="t", env_id="E", obs_dim=3, act_dim=2, planning="states", horizon=4, history=2)
    with pytest.raises(ValueError, match="horizon"):
        TaskSpec(name="t", env_id="E", obs_dim=3, act_dim=2, planning="states", horizon=0)
    with pytest.raises(ValueError, match="rest_dims"):
        TaskSpec(name="t", env_id="E", obs_dim=3, act_dim=2, planning="states", horizon=4, rest_dims=(3,))


# ------------------------------------------------------------------- strided state plans (--plan-stride)


def test_strided_plans_hold_every_kth_state_and_are_followed_along_straight_lines():
    spec = _spec(horizon=6, plan_stride=3)
    assert spec.x_shape == (2, 3)
    w = make_windows([_episode(7)], spec)
    x = w.batch(np.arange(len(w)))["x"]
    assert x.shape == (len(w), 2, 3)
    np.testing.assert_array_equal(x[0, :, 0], [0, 3])  # s_0, s_3
    np.testing.assert_array_equal(x[2, :, 0], [2, 5])  # s_2, s_5
    knots = torch.tensor([[[0.0, 10.0], [3.0, 4.0], [6.0, 1.0]]])  # (1, T=3, D=2), stride 3
    dense = spec.layout.dense(replace(spec, horizon=9, plan_stride=3), knots)
    assert dense.shape == (1, 7, 2)
    torch.testing.assert_close(dense[0, :, 0], torch.arange(7.0))  # a straight line through the knots
    torch.testing.assert_close(dense[0, [0, 3, 6]], knots[0])  # which it passes exactly
    assert spec.layout.dense(_spec(), knots) is knots  # stride 1: the plan itself


def test_plan_stride_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="divide the horizon"):
        _spec(horizon=6, plan_stride=4)
    with pytest.raises(ValueError, match="plan_stride applies to state plans"):
        TaskSpec(name="t", env_id="E", obs_dim=3, act_dim=2, planning="chunk", horizon=4, plan_stride=2)


def test_plan_stride_through_the_commands(tmp_path, monkeypatch, ractd_ok):
    """`train-teacher --plan-stride 4` on Maze2d: the teacher, its students and their rollouts plan
    H/4 knots; the stride is recorded and inherited; impossible strides are usage errors."""

    from typer.testing import CliRunner

    from ractd_cli.artifacts import load_artifact
    from ractd_cli.cli import app

    pytest.importorskip("ractd_maze2d")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    runner, ok = CliRunner(), ractd_ok
    ok("fetch", "maze2d-umaze", "--source", "local", "--steps", "3000")
    teacher = ok("train-teacher", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "20", "--plan-stride", "4")
    t = load_artifact(teacher["artifacts"][-1]["id"])
    assert t.config["plan_stride"] == 4 and t.config["horizon"] == 128 // 4 and t.config["net"]["in_features"] == 32 * 4
    ok("train-reward", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "10")
    student = ok("distill", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "5", "--eval-every", "5", "--eval-episodes", "2")
    assert load_artifact(student["id"]).config["plan_stride"] == 4
    roll = ok("rollout", "--env", "maze2d-umaze", "--model", student["id"], "--episodes", "2")
    assert roll["episodes"] == 2 and roll["ms_per_action"] > 0
    # the learning curve checks the same first plans as the rollout of the saved student does
    end = student["eval_curve"][-1]
    assert end["step"] == 5 and {k: end[k] for k in ("plan_reaches_goal_rate", "plan_hits_wall_rate", "score_mean")} == {
        k: roll[k] for k in ("plan_reaches_goal_rate", "plan_hits_wall_rate", "score_mean")}
    # the adapter's check of each episode's first plan comes with the rollout
    checks = [{k: e[k] for k in ("plan_reaches_goal", "plan_hits_wall")} for e in roll["per_episode"]]
    for k in ("plan_reaches_goal", "plan_hits_wall"):
        assert roll[f"{k}_rate"] == sum(c[k] for c in checks) / 2
    # a video of both episodes: the maze, the plan and the path, one frame per step and the reset's
    pytest.importorskip("imageio_ffmpeg")
    video = tmp_path / "out" / "umaze.mp4"
    doc = ok("rollout", "--env", "maze2d-umaze", "--model", student["id"], "--episodes", "3", "--video", str(video), "--video-episodes", "2")
    assert doc["video"]["frames_per_episode"] == [e["length"] + 1 for e in doc["per_episode"][:2]]
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(video))
    meta = next(frames)
    assert meta["size"] == (480, 480) and sum(1 for _ in frames) == doc["video"]["frames"]
    assert [p.name for p in video.parent.iterdir()] == ["umaze.mp4"]  # no temporary parts left
    bench = ok("bench", "--env", "maze2d-umaze", "--episodes", "2", "--repeats", "3")
    student_row = next(r for r in bench["rows"] if r["model_id"] == student["id"] and r["nfe"] == 1)
    assert student_row["plan_reaches_goal_rate"] == roll["plan_reaches_goal_rate"]  # the same episodes, the same plans
    assert all("plan_hits_wall_rate" in r for r in bench["rows"])
    for task, stride, says in (("maze2d-umaze", "3", "divisor"), ("bimodal", "2", "state-planning")):
        r = runner.invoke(app, ["train-teacher", "--env", task, "--plan-stride", stride])
        assert r.exit_code == 2 and says in r.output, r.output


def test_a_preset_may_size_the_plan_stride():
    spec = _spec(horizon=8, presets={"quick": {"plan_stride": 4}})
    assert TrainOptions(preset="quick", device="cpu").preset_for(spec).plan_stride == 4
    assert TrainOptions(preset="paper", device="cpu").preset_for(spec).plan_stride == 1  # the paper's: every state
    with pytest.raises(UsageError, match="plan_stride must be a positive integer"):
        TrainOptions(preset="quick", device="cpu").preset_for(_spec(presets={"quick": {"plan_stride": 0}}))

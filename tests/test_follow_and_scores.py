"""Executing state plans (``--follow inverse|track|controller``, ``--replan``, ``--snap-goal``) and
score scales (``--score-scale``): the policy on a fake planner, the CLI's refusals, and (with the
maze2d plugin) rollout/bench results that record how plans were executed and scored."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ractd_cli.adapters import TaskSpec, normalize_return, resolve_score_scale
from ractd_cli.cli import app
from ractd_cli.errors import UsageError
from ractd_cli.evaluate import ChunkReplanner, Execution, PlanFollower, planner_policy

runner = CliRunner()
H = 4


def _spec(**kw) -> TaskSpec:
    base = dict(name="toy", env_id="Toy-v0", obs_dim=4, act_dim=2, planning="states", horizon=H, goal_dim=2, rest_dims=(2, 3))
    if kw.get("planning") == "chunk":  # action chunks condition on past states, never on a goal
        base.update(goal_dim=0, rest_dims=())
    return TaskSpec(**{**base, **kw})


class FakePlanner:
    """Returns a fixed plan (n, H, 4) in env units: state k of row i is (10 i + k, k, 1, 1). Counts its calls."""

    def __init__(self, spec: TaskSpec):
        self.spec, self.device, self.calls = spec, torch.device("cpu"), 0

    def noise_streams(self, episodes):
        return list(episodes)

    def plan(self, past: torch.Tensor, goal=None, generator=None):
        self.calls += 1
        n = past.shape[0]
        k = np.arange(H, dtype=np.float32)
        x = np.stack([np.stack([10 * i + k, k, np.ones(H), np.ones(H)], -1) for i in range(n)]).astype(np.float32)
        return torch.as_tensor(x), 1


class Difference(nn.Module):
    """A fake inverse-dynamics model: (s, s') in env units -> the first two dims of s' - s."""

    def forward(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return (s_next - s)[:, :2]


class Followers:
    """An adapter with both optional followers, recording what they were given."""

    def __init__(self):
        self.seen: list[tuple] = []

    def track_action(self, state, target_state):
        self.seen.append(("track", np.array(target_state)))
        return np.asarray(target_state)[:, :2] - np.asarray(state)[:, :2]

    def controller_action(self, state, target_state, goal=None):
        self.seen.append(("controller", np.array(target_state), goal))
        return np.zeros((len(state), 2), np.float32)


def _run(policy: PlanFollower, goals_per_step, steps: int = 2 * H) -> np.ndarray:
    """Actions (steps, n, 2) for a fixed state, with the goals given at each step."""
    n = 2
    policy.reset(n)
    states = np.zeros((n, 4), np.float32)
    return np.stack([policy.act(states, goals_per_step(t), np.ones(n, bool)) for t in range(steps)])


@pytest.mark.parametrize("follow", ["inverse", "track"])
def test_one_open_loop_plan_per_episode_that_never_reads_the_goal(follow):
    """Same start, goals that differ (or are NaN) once the plan is made: identical actions; one
    plan per episode; past its end the target is the last planned state at rest."""
    spec = _spec()
    real = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    actions = []
    for later in (lambda t: real, lambda t: np.full((2, 2), np.nan, np.float32), lambda t: real + 7 * t):
        planner = FakePlanner(spec)
        policy = planner_policy(planner, Followers(), inverse=Difference(), execution=Execution.of(Followers(), spec, follow))
        actions.append(_run(policy, lambda t, later=later: real if t == 0 else later(t)))
        assert planner.calls == 1  # one plan, however long the episode runs
    np.testing.assert_array_equal(actions[0], actions[1])
    np.testing.assert_array_equal(actions[0], actions[2])
    assert np.isfinite(actions[0]).all()
    # targets: plan[1..H-1], then the last planned state with velocity 0, held (both followers get env units)
    x = np.array([[1, 2, 3, 3, 3, 3, 3, 3], [11, 12, 13, 13, 13, 13, 13, 13]], np.float32).T
    np.testing.assert_allclose(actions[0][:, :, 0], x, rtol=1e-5)


def test_track_and_controller_get_the_plan_then_its_last_state_at_rest():
    spec = _spec()
    adapter = Followers()
    policy = planner_policy(FakePlanner(spec), adapter, execution=Execution.of(adapter, spec, "controller"))
    _run(policy, lambda t: np.ones((2, 2), np.float32), steps=H + 1)
    targets = [s[1] for s in adapter.seen]
    np.testing.assert_array_equal(targets[0][0], [1, 1, 1, 1])
    np.testing.assert_array_equal(targets[H - 1][1], [13, 3, 0, 0])  # hold: rest dims (vx, vy) = 0
    np.testing.assert_array_equal(targets[H][1], [13, 3, 0, 0])
    assert all(s[2] is None for s in adapter.seen)  # no goal without --snap-goal


def test_snap_goal_hands_the_goal_to_the_controller():
    adapter = Followers()
    policy = planner_policy(FakePlanner(_spec()), adapter, execution=Execution.of(adapter, _spec(), "controller", snap_goal=True))
    goals = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    _run(policy, lambda t: goals, steps=2)
    np.testing.assert_array_equal(adapter.seen[-1][2], goals)
    assert policy.describe() == {"planning": "states", "horizon": H, "plan_stride": 1, "windows": "full", "init_noise": None, "clamp": None,
                                 "follow": "controller", "replan": False, "snap_goal": True}


def test_replan_plans_again_when_the_plan_runs_out():
    planner = FakePlanner(_spec())
    policy = planner_policy(planner, Followers(), inverse=Difference(), execution=Execution.of(Followers(), _spec(), replan=True))
    _run(policy, lambda t: np.zeros((2, 2), np.float32), steps=2 * (H - 1) + 1)
    assert planner.calls == 3
    assert policy.describe() == {"planning": "states", "horizon": H, "plan_stride": 1, "windows": "full", "init_noise": None, "clamp": None,
                                 "follow": "inverse", "replan": True, "snap_goal": False}


def test_followers_the_adapter_lacks_and_misplaced_flags_are_refused():
    spec = _spec()
    with pytest.raises(UsageError, match="track_action") as e:
        Execution.of(object(), spec, "track")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="controller_action"):
        Execution.of(object(), spec, "controller")
    for follow in ("inverse", "track"):
        with pytest.raises(UsageError, match="--snap-goal"):
            Execution.of(Followers(), spec, follow, snap_goal=True)
    with pytest.raises(UsageError, match="unknown --follow"):
        Execution.of(Followers(), spec, "pd")
    with pytest.raises(UsageError, match="state-planning"):
        Execution.of(Followers(), _spec(planning="chunk"), "inverse")
    with pytest.raises(UsageError, match="state-planning"):
        Execution.of(Followers(), _spec(planning="chunk"), replan=True)
    chunk_policy = planner_policy(FakePlanner(_spec(planning="chunk")), object())
    assert isinstance(chunk_policy, ChunkReplanner) and chunk_policy.execution == Execution()
    chunk = chunk_policy.describe()
    assert {k: chunk[k] for k in ("planning", "follow", "replan", "snap_goal")} == {"planning": "chunk", "follow": None, "replan": None, "snap_goal": None}


def test_score_scales():
    spec = _spec(ref_scores={"minari": (1.0, 3.0), "d4rl": (0.0, 2.0)})
    assert resolve_score_scale(spec) == "d4rl"
    assert normalize_return(spec, 1.0) == 50.0 and normalize_return(spec, 1.0, "minari") == 0.0
    assert resolve_score_scale(_spec(ref_scores={"own": (0.0, 1.0)})) == "own"
    with pytest.raises(UsageError, match="its scales: minari, d4rl") as e:
        normalize_return(spec, 1.0, "d5rl")
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------- through the CLI


def _one_line_usage_error(args: list[str], match: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert match in r.output and r.output.strip().count("\n") == 0, r.output


def test_cli_refuses_unknown_scale_and_misplaced_follow_options():
    pytest.importorskip("ractd_maze2d")
    _one_line_usage_error(["rollout", "--env", "maze2d-umaze", "--score-scale", "d5rl"], "d4rl, minari")
    _one_line_usage_error(["bench", "--env", "maze2d-umaze", "--score-scale", "d5rl"], "d4rl, minari")
    _one_line_usage_error(["rollout", "--env", "maze2d-umaze", "--snap-goal"], "--follow controller")
    _one_line_usage_error(["bench", "--env", "maze2d-umaze", "--follow", "track", "--snap-goal"], "--follow controller")
    _one_line_usage_error(["rollout", "--env", "maze2d-umaze", "--follow", "pd"], "unknown --follow")
    pytest.importorskip("ractd_bimodal")
    _one_line_usage_error(["rollout", "--env", "bimodal", "--score-scale", "d4rl"], "its scales: bimodal")
    _one_line_usage_error(["rollout", "--env", "bimodal", "--follow", "track"], "state-planning")


@pytest.fixture(scope="module")
def maze_teacher(tmp_path_factory):
    """A few-step teacher and inverse-dynamics model on a small local umaze dataset: enough to run
    the evaluation loop (the plans are poor; nothing here judges them)."""
    pytest.importorskip("ractd_maze2d")
    old = os.environ.get("RACTD_CACHE_DIR")
    os.environ["RACTD_CACHE_DIR"] = str(tmp_path_factory.mktemp("maze-cache"))
    try:
        for args in (["fetch", "maze2d-umaze", "--source", "local", "--steps", "3000"],
                     ["train-teacher", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "20"]):
            r = runner.invoke(app, [*args, "--json"])
            assert r.exit_code == 0, r.output
        yield os.environ["RACTD_CACHE_DIR"]
    finally:
        if old is None:
            os.environ.pop("RACTD_CACHE_DIR", None)
        else:
            os.environ["RACTD_CACHE_DIR"] = old


def _json(args: list[str]) -> dict:
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


ROLL = ["rollout", "--env", "maze2d-umaze", "--model", "teacher", "--sampler", "euler", "--nfe", "2", "--episodes", "2", "--batch", "2"]


def test_rollout_records_follower_and_scale(maze_teacher, monkeypatch):
    from ractd_maze2d.adapter import _REF_SCORES

    monkeypatch.setenv("RACTD_CACHE_DIR", maze_teacher)
    doc = _json(ROLL)
    assert (doc["follow"], doc["replan"], doc["snap_goal"], doc["score_scale"]) == ("inverse", False, False, "d4rl")
    lo, hi = _REF_SCORES["d4rl"]["umaze"]
    for e in doc["per_episode"]:
        assert e["score"] == pytest.approx(100 * (e["return"] - lo) / (hi - lo))
    minari = _json([*ROLL, "--score-scale", "minari", "--follow", "controller", "--snap-goal", "--replan"])
    assert (minari["follow"], minari["replan"], minari["snap_goal"], minari["score_scale"]) == ("controller", True, True, "minari")
    lo, hi = _REF_SCORES["minari"]["umaze"]
    for e in minari["per_episode"]:
        assert e["score"] == pytest.approx(100 * (e["return"] - lo) / (hi - lo))
    track = _json([*ROLL, "--follow", "track"])
    assert track["follow"] == "track" and track["score_scale"] == "d4rl"
    r = runner.invoke(app, [*ROLL, "--follow", "track"])
    line = " ".join(r.output.split())  # the console wraps lines
    assert r.exit_code == 0 and "follow track, one plan per episode" in line and "d4rl score" in line


def test_bench_rows_record_follower_and_scale(maze_teacher, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", maze_teacher)
    doc = _json(["bench", "--env", "maze2d-umaze", "--episodes", "1", "--repeats", "1", "--follow", "track", "--replan",
                 "--score-scale", "minari"])
    assert doc["rows"] and (doc["follow"], doc["replan"], doc["snap_goal"], doc["score_scale"]) == ("track", True, False, "minari")
    for row in doc["rows"]:
        assert (row["follow"], row["replan"], row["snap_goal"], row["score_scale"]) == ("track", True, False, "minari")
        assert row["score_mean"] is not None


class FirstStates:
    """A policy that does nothing and records each episode's first state (its start) by episode index."""

    def __init__(self):
        self.first: dict[int, list[float]] = {}

    def reset(self, n, episodes=None):
        self.episodes, self.fresh = list(episodes), True

    def act(self, states, goals, active):
        if self.fresh:
            self.first.update({e: states[i].tolist() for i, e in enumerate(self.episodes)})
            self.fresh = False
        return np.zeros((len(states), 2), dtype=np.float32)


def test_a_part_of_the_episodes_starts_where_the_whole_run_does():
    """What a rollout worker runs (``episode_ids``): Maze2d draws each episode's start cell from one
    generator in episode order, so episodes 3-5 alone must start where they start in a run of all six,
    not where episodes 0-2 do."""
    pytest.importorskip("ractd_maze2d")
    from ractd_cli.evaluate import run_episodes
    from ractd_cli.registry import get_task

    adapter, spec = get_task("maze2d-umaze")
    spec = dataclasses.replace(spec, max_episode_steps=2)
    whole, part = FirstStates(), FirstStates()
    run_episodes(adapter, spec, whole, episodes=6, seed=5, batch=2, show_progress=False)
    res = run_episodes(adapter, spec, part, episodes=6, seed=5, batch=2, show_progress=False, episode_ids=[3, 4, 5])
    assert len(res.episodes) == 3 and sorted(part.first) == [3, 4, 5]
    assert all(part.first[e] == whole.first[e] for e in (3, 4, 5))
    assert [whole.first[e] for e in (0, 1, 2)] != [part.first[e] for e in (3, 4, 5)]


def test_maze_models_record_their_conditioning_and_old_goal_conditioned_ones_still_plan(maze_teacher, monkeypatch):
    """Maze2d's default is the authors' endpoint conditioning, recorded in the teacher and in every
    result; a teacher from before it (conditioned on the current state and the goal, ``states``)
    still loads and plans as it was trained; a reward model that reads plans otherwise is refused."""
    from ractd_cli.registry import get_task
    from ractd_cli.train import reward as reward_train
    from ractd_cli.train import teacher as teacher_train
    from ractd_cli.train.common import TrainOptions

    monkeypatch.setenv("RACTD_CACHE_DIR", maze_teacher)
    doc = _json(ROLL)
    assert (doc["planning"], doc["plan_stride"]) == ("endpoints", 1)
    new_teacher = doc["model_id"]
    adapter, spec = get_task("maze2d-umaze")
    old = dataclasses.replace(spec, planning="states", goal_dims=())
    opts = TrainOptions(preset="tiny", steps=5, device="cpu", show_progress=False)
    old_teacher = teacher_train.train_teacher(adapter, old, opts)[-1]
    assert old_teacher.config["planning"] == "states"
    doc = _json([*ROLL[:4], old_teacher.id, *ROLL[5:]])
    assert doc["planning"] == "states" and len(doc["per_episode"]) == 2
    old_reward = reward_train.train_reward(adapter, old, opts)
    assert old_reward.config["input"] == "state_goal"
    r = runner.invoke(app, ["distill", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "2", "--teacher", new_teacher, "--reward", old_reward.id])
    assert r.exit_code == 2 and f"reward model {old_reward.id} reads state_goal" in " ".join(r.output.split())

"""Maze2d plugin: planner, local generation by the Minari recipe, evaluation options, scores, controller."""

from __future__ import annotations

import numpy as np
import pytest

from ractd_cli.adapters import EnvAdapter
from ractd_cli.data import fetch, load_episodes, make_windows, read_metadata

ractd_maze2d = pytest.importorskip("ractd_maze2d")
from ractd_maze2d.planner import GridPlanner  # noqa: E402

UMAZE = [
    [1, 1, 1, 1, 1],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 0, 1],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 1, 1],
]


def test_specs():
    a = ractd_maze2d.adapter
    assert isinstance(a, EnvAdapter)
    assert sorted(a.tasks) == ["maze2d-large", "maze2d-medium", "maze2d-umaze"]
    for maze, horizon, steps in [("umaze", 128, 300), ("medium", 256, 600), ("large", 384, 800)]:
        s = a.tasks[f"maze2d-{maze}"]
        assert s.planning == "endpoints" and s.horizon == horizon and s.max_episode_steps == steps
        assert s.goal_dims == (0, 1) and s.rest_dims == (2, 3)  # the goal state: (x, y) at rest
        assert s.presets["quick"].get("plan_stride", 1) == (1 if maze == "umaze" else 8)  # a CPU sizing
        assert s.presets["quick"].get("horizon") == (512 if maze == "large" else None)  # measured: the data's far trips
        assert s.obs_dim == 4 and s.act_dim == 2 and s.goal_dim == 2
        assert s.minari_ids == (f"D4RL/pointmaze/{maze}-v2",)
        # training windows: padded on every maze, chosen by measurement (docs/results.md; the authors' are full)
        assert s.windows == "padded"


def test_grid_planner_finds_the_way_round_the_u():
    p = GridPlanner(UMAZE)
    assert p.path((3, 1), (1, 1)) == [(3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    assert p.path((1, 1), (1, 1)) == []
    assert p.path((1, 3), (3, 3)) == [(2, 3), (3, 3)]


D4RL_REFS = {"umaze": (23.85, 161.86), "medium": (13.13, 277.39), "large": (6.7, 273.99)}
MINARI_REFS = {"umaze": (13.49, 218.70), "medium": (17.66, 361.05), "large": (3.55, 462.26)}


@pytest.mark.parametrize("maze", ["umaze", "medium", "large"])
def test_normalized_score_uses_d4rl_references_by_default(maze):
    """D4RL's maze2d-v1 reference returns (the paper's scale) map to exactly 0 and 100."""
    a, task = ractd_maze2d.adapter, f"maze2d-{maze}"
    lo, hi = D4RL_REFS[maze]
    assert a.tasks[task].ref_scores == {"d4rl": D4RL_REFS[maze], "minari": MINARI_REFS[maze]}
    assert a.normalized_score(task, lo) == 0.0
    assert a.normalized_score(task, hi) == 100.0
    assert a.normalized_score(task, lo, scale="d4rl") == 0.0 and a.normalized_score(task, hi, "d4rl") == 100.0
    assert a.normalized_score(task, (lo + hi) / 2) == pytest.approx(50.0)


@pytest.mark.parametrize("maze", ["umaze", "medium", "large"])
def test_normalized_score_on_minari_scale_differs(maze):
    a, task = ractd_maze2d.adapter, f"maze2d-{maze}"
    lo, hi = MINARI_REFS[maze]
    assert a.normalized_score(task, lo, scale="minari") == pytest.approx(0.0, abs=1e-9)
    assert a.normalized_score(task, hi, scale="minari") == pytest.approx(100.0)
    assert a.normalized_score(task, 100.0, scale="minari") != pytest.approx(a.normalized_score(task, 100.0))
    # Minari's references stay the ones written into local datasets' metadata
    assert (a.tasks[task].ref_min_score, a.tasks[task].ref_max_score) == (lo, hi)


def test_unknown_score_scale_is_a_one_line_usage_error():
    from ractd_cli.errors import UsageError

    with pytest.raises(UsageError, match="its scales: d4rl, minari") as e:
        ractd_maze2d.adapter.normalized_score("maze2d-umaze", 50.0, scale="d5rl")
    assert "\n" not in str(e.value)


def test_success():
    a = ractd_maze2d.adapter
    assert a.success("maze2d-umaze", 0.0, {}) is False
    assert a.success("maze2d-umaze", 3.0, {}) is True


def test_eval_env_keeps_a_fixed_goal_and_draws_starts():
    a = ractd_maze2d.adapter
    env = a.make_env("maze2d-umaze", seed=0)
    rng = np.random.default_rng(0)
    starts = set()
    for ep in range(12):
        opts = a.reset_options("maze2d-umaze", ep, rng)
        assert tuple(opts["goal_cell"]) == (1, 1)
        assert tuple(opts["reset_cell"]) != (1, 1) and UMAZE[opts["reset_cell"][0]][opts["reset_cell"][1]] == 0
        starts.add(tuple(opts["reset_cell"]))
        obs, _ = env.reset(options=opts)
        goal = a.goal("maze2d-umaze", obs)
        np.testing.assert_allclose(goal, env.unwrapped.maze.cell_rowcol_to_xy(np.array([1, 1])), atol=0.26)
        assert a.state("maze2d-umaze", obs).shape == (4,)
    assert len(starts) > 2
    assert env.spec.max_episode_steps == 300 and env.unwrapped.reset_target is False
    env.close()


def test_controller_reaches_the_goal_in_eval_env():
    """The noise-free waypoint controller succeeds on the evaluation env and earns a sensible score."""
    a = ractd_maze2d.adapter
    ref = a.estimate_reference_scores("maze2d-umaze", episodes=2, seed=0)
    assert ref["controller"] > 100  # stays at the goal for most of the 300 steps
    assert a.normalized_score("maze2d-umaze", ref["controller"], scale="minari") > 40


def test_local_generation_reaches_goals_and_minari_reads_it(tmp_path, monkeypatch):
    import tempfile

    import minari

    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where gymnasium-robotics writes its MJCF files
    a = ractd_maze2d.adapter
    spec = a.tasks["maze2d-umaze"]
    reported: list[int] = []
    did = fetch(a, spec, source="local", steps=3000, seed=0, force=False, progress=reported.append)
    assert did == "ractd/maze2d-umaze/local-v0"
    assert sum(reported) == 3000  # the progress bar ends full
    meta = read_metadata(did)
    assert meta["ractd"]["generator"]["goals_reached"] >= 15  # ~242 per 20k steps on umaze
    assert meta["ref_min_score"] == 13.49 and meta["ref_max_score"] == 218.70
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    ds = minari.load_dataset(did)
    assert ds.total_steps == 3000
    assert ds.total_episodes == meta["ractd"]["generator"]["goals_reached"] + 1  # + the unfinished tail
    env = ds.recover_environment(eval_env=True)
    assert env.unwrapped.reset_target is False
    env.close()
    a.make_env("maze2d-umaze", seed=0).close()
    # gymnasium-robotics' own make (minari's recover_environment) leaves its ant_maze<time>.xml; the
    # adapter's generator and eval env leave none
    assert len(list((tmp_path / "tmp").glob("ant_maze*.xml"))) == 1

    eps = load_episodes(a, spec, did)
    for e in eps[:-1]:  # every finished episode ends at its goal, paying exactly once, truncated there
        assert e.rewards[-1] == 1.0 and e.rewards[:-1].sum() == 0 and e.truncations[-1]
        assert not e.terminations.any()
        assert np.linalg.norm(e.states[-1, :2] - e.goals[-1]) <= 0.45
        assert np.allclose(e.goals, e.goals[0])  # one goal per episode, also in row 0
    for prev, nxt in zip(eps[:-1], eps[1:]):  # the run continues without resets
        np.testing.assert_array_equal(prev.states[-1], nxt.states[0])
    w = make_windows(eps, spec)
    b = w.batch(np.arange(0, len(w), 97))
    assert b["x"].shape[1:] == (128, 4) and b["goal"].shape[1:] == (2,)
    # padding past an episode's end repeats its last state (the agent waits at the goal)
    last = b["x"][~b["x_mask"]]
    assert len(last) > 0


def test_controller_action_follows_a_recorded_trajectory():
    """Replaying a recorded state sequence with controller_action stays close to it."""
    import gymnasium as gym
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    a = ractd_maze2d.adapter
    buffers, _ = a.generate("maze2d-umaze", steps=300, seed=3)
    states = np.concatenate([b.observations["observation"][:-1] for b in buffers] +
                            [buffers[-1].observations["observation"][-1:]])
    from ractd_maze2d.adapter import _point_maze

    env = _point_maze("PointMaze_UMaze-v3", continuing_task=True, reset_target=False)  # leaves no MJCF file behind
    env.reset(seed=0)
    u = env.unwrapped
    u.point_env.set_state(states[0, :2].copy(), states[0, 2:].copy())
    s, errs = states[0], []
    for t in range(1, len(states)):
        act = a.controller_action(s, states[t])
        assert act.shape == (2,) and act.dtype == np.float32 and np.all(np.abs(act) <= 1)
        obs, *_ = u.step(act)
        s = obs["observation"]
        errs.append(np.linalg.norm(s[:2] - states[t, :2]))
    assert np.mean(errs) < 0.1 and max(errs) < 0.3
    # batched use
    assert a.controller_action(states[:5], states[1:6]).shape == (5, 2)
    env.close()


def test_track_action_is_the_ractd_tracking_rule():
    """a = (p* - p) + (v* - v), batched, unclipped (the env loop clips)."""
    a = ractd_maze2d.adapter
    s = np.array([[0.5, 0.5, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    t = np.array([[0.7, 0.1, 0.0, 2.0], [3.0, -1.0, 0.5, 0.5]])
    got = a.track_action(s, t)
    assert got.dtype == np.float32 and got.shape == (2, 2)
    np.testing.assert_allclose(got, [[0.2 - 1.0, -0.4 + 2.0], [3.5, -0.5]], rtol=1e-6)
    np.testing.assert_allclose(a.track_action(s[0], t[0]), got[0])


def test_goals_fixes_the_stale_first_row_of_minari_episodes():
    a = ractd_maze2d.adapter
    obs = {"observation": np.zeros((3, 4)), "desired_goal": np.array([[9.0, 9.0], [1.0, 2.0], [1.0, 2.0]])}
    np.testing.assert_array_equal(a.goals("maze2d-umaze", obs), [[1, 2], [1, 2], [1, 2]])
    assert a.states("maze2d-umaze", obs).shape == (3, 4)


def test_controller_settles_on_the_goal_once_the_plan_arrives():
    a = ractd_maze2d.adapter
    s = np.array([[0.5, 0.5, 1.0, 0.0], [0.5, 0.5, 1.0, 0.0]])
    goal = np.array([[1.0, 1.0], [1.0, 1.0]])
    inside = np.array([0.7, 0.8, 2.0, 0.0])  # within 0.45 of the goal, moving
    outside = np.array([-0.5, 0.5, -1.0, 0.0])
    targets = np.stack([inside, outside])
    got = a.controller_action(s, targets, goal)
    # inside: as if the target were the goal at rest; outside: the plan's own target
    np.testing.assert_allclose(got[0], a.controller_action(s[0], np.array([1.0, 1.0, 0.0, 0.0])))
    np.testing.assert_allclose(got[1], a.controller_action(s[1], outside))
    np.testing.assert_allclose(a.controller_action(s, targets)[0], a.controller_action(s[0], inside))


def test_plan_check_sees_plans_through_walls_and_at_the_goal():
    """umaze: row 2 is wall but for its last free cell (2, 3); cell (r, c) is centred at (c - 2, 2 - r)."""
    a = ractd_maze2d.adapter
    line = lambda p, q: np.stack([np.linspace(p[0], q[0], 50), np.linspace(p[1], q[1], 50), np.zeros(50), np.zeros(50)], -1)  # noqa: E731
    round_the_u = np.concatenate([line((-1, 1), (1, 1)), line((1, 1), (1, -1)), line((1, -1), (-1, -1))])[None]
    straight_down = np.concatenate([line((-1, 1), (-1, -1)), np.repeat(line((-1, -1), (-1, -1)), 3, 0)])[None]
    goal = np.array([[-1.0, -1.0]])
    go_round = a.plan_check("maze2d-umaze", round_the_u, goal)
    cut = a.plan_check("maze2d-umaze", straight_down, goal)
    assert go_round["plan_reaches_goal"].tolist() == [True] and go_round["plan_hits_wall"].tolist() == [False]
    assert cut["plan_reaches_goal"].tolist() == [True] and cut["plan_hits_wall"].tolist() == [True]
    short = a.plan_check("maze2d-umaze", round_the_u[:, :60], goal)  # stops at the U's far side
    assert short["plan_reaches_goal"].tolist() == [False] and short["plan_hits_wall"].tolist() == [False]
    off_the_map = a.plan_check("maze2d-umaze", line((-1, 1), (-4, 1))[None], goal)
    assert off_the_map["plan_hits_wall"].tolist() == [True]


def test_draw_shows_walls_and_goal():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ractd_maze2d.adapter.draw("maze2d-umaze", ax)
    assert len(ax.patches) == sum(v == 1 for row in UMAZE for v in row) + 1  # walls + goal
    assert ax.get_xlim() == (-2.5, 2.5)
    plt.close(fig)


def test_gymnasium_robotics_import_notice_is_not_shown(tmp_path):
    """gymnasium-robotics prints an Adroit notice on import; a maze command must not show it."""
    import subprocess
    import sys

    code = "from ractd_maze2d import adapter; adapter.make_env('maze2d-umaze', seed=0).close()"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Adroit" not in res.stderr


def test_paper_preset_takes_the_authors_maze_recipe():
    """configs/guided_ctmp_maze_{sm,med,lg}.yaml: student batch 1400 / 320 / 320, weight decay 1e-6;
    edm_maze2d_*.yaml: teacher weight decay 1e-4."""
    from ractd_cli.registry import get_task
    from ractd_cli.train.common import TrainOptions

    for task, batch in (("maze2d-umaze", 1400), ("maze2d-medium", 320), ("maze2d-large", 320)):
        _, spec = get_task(task)
        student = TrainOptions(preset="paper", device="cpu").config("student", spec)
        teacher = TrainOptions(preset="paper", device="cpu").config("teacher", spec)
        assert (student.batch_size, student.lr, student.weight_decay) == (batch, 1e-4, 1e-6)
        assert (teacher.batch_size, teacher.weight_decay, teacher.betas, teacher.ema_power) == (1024, 1e-4, (0.95, 0.999), 0.75)

"""Endpoint plans (``planning="endpoints"``, Maze2d's default): the RACTD authors' conditioning.

Training windows are conditioned on their own first and last state, are full (never padded past an
episode's end; ``--windows padded`` is an option) and may run across the cut between episodes that
continue one another; evaluation
conditions on the goal at rest. A model trained this way makes plans that end at the last state
they are given, with every teacher sampler and with the one-step student.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ractd_cli.adapters import TaskSpec
from ractd_cli.data import Episode, make_windows
from ractd_cli.data.fetch import torch_threads
from ractd_cli.data.windows import continuation_runs
from ractd_cli.diffusion import (
    SAMPLERS,
    SIGMA_MAX,
    SIGMA_MIN,
    EDMPrecond,
    ctm_sample,
    edm_loss,
    karras_sigmas,
    ractd_loss,
    student_from_teacher,
    student_sigmas,
    teacher_sigmas,
)
from ractd_cli.diffusion.edm import append_zero
from ractd_cli.models import PlanIO
from ractd_cli.nets import make_denoiser_net
from ractd_cli.train.data import build_task_data


def _spec(**kw) -> TaskSpec:
    """A 1-D point: state (position, velocity), goal = the position, horizon H."""
    base = dict(name="line", env_id="Line-v0", obs_dim=2, act_dim=1, planning="endpoints", horizon=4, goal_dim=1,
                goal_dims=(0,), rest_dims=(1,))
    return TaskSpec(**{**base, **kw})


def _episode(p0: float, v: float, T: int, goal: float) -> Episode:
    """T steps of constant velocity v from position p0."""
    p = p0 + v * np.arange(T + 1)
    states = np.stack([p, np.full(T + 1, v)], axis=1).astype(np.float32)
    rewards = np.zeros(T, np.float32)
    rewards[-1] = 1.0
    return Episode(states, np.full((T, 1), v, np.float32), rewards, np.zeros(T, bool), np.eye(T, dtype=bool)[-1],
                   np.full((T + 1, 1), goal, np.float32))


def test_spec_needs_goal_dims_and_rest_dims_covering_the_state():
    with pytest.raises(ValueError, match="goal_dims"):
        _spec(goal_dims=())
    with pytest.raises(ValueError, match="each of the 2 state dimensions once"):
        _spec(rest_dims=())
    with pytest.raises(ValueError, match="each of the 2 state dimensions once"):
        _spec(rest_dims=(0, 1))
    assert _spec().cond_dim == 4  # [s_n, goal state]


def test_continuing_episodes_are_joined_and_only_full_windows_train():
    a = _episode(0.0, 1.0, 3, goal=3.0)  # positions 0..3
    b = _episode(3.0, 1.0, 2, goal=5.0)  # starts where a ends: positions 3..5
    c = _episode(10.0, 1.0, 3, goal=13.0)  # starts elsewhere: positions 10..13
    assert continuation_runs([a, b, c]) == [[0, 1], [2]]
    spec = _spec()
    w = make_windows([a, b, c], spec)
    # the joined run keeps the shared state once, with the goal of the episode that starts there
    np.testing.assert_array_equal(w.states[:6, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(w.goals[:6, 0], [3, 3, 3, 5, 5, 5])
    # returns-to-go stay within each dataset episode; episode and t name the dataset's episode
    np.testing.assert_allclose(w.rtg[:5], [spec.gamma**2, spec.gamma, 1, spec.gamma, 1], rtol=1e-6)
    np.testing.assert_array_equal(w.episode, [0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(w.t, [0, 1, 2, 0, 1, 0, 1, 2])

    data = build_task_data(spec, w, "line")
    rows = data.diffusion_rows.numpy()
    assert w.x_mask[rows].all() and not w.x_mask[np.setdiff1d(np.arange(len(w)), rows)].all(axis=1).any()
    assert len(data.diffusion) == 3 + 1  # 4 states from t = 0, 1, 2 of the joined run (6 states), t = 0 of c (4 states)
    batch = data.diffusion.gather(torch.arange(len(data.diffusion)))
    x = data.normalizers["state"].unnormalize(batch["x"])
    # every training plan is 4 consecutive positions of one run (a jump from 5 to 10 would cross runs)
    np.testing.assert_allclose(np.diff(x[..., 0].numpy(), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [0, 1, 2, 10], atol=1e-5)
    # its condition is its own first and last state
    np.testing.assert_allclose(batch["cond"][:, :2].numpy(), batch["x"][:, 0].numpy())
    np.testing.assert_allclose(batch["cond"][:, 2:].numpy(), batch["x"][:, -1].numpy())


def test_padded_windows_are_not_joined_and_end_at_rest():
    """``windows="padded"`` (train-teacher --windows padded): episodes are not joined, every transition
    starts a window, and a window that runs past its episode's end ends at the last state at rest
    (the velocity 0), which is also its conditioning's last state: "arrive there and stop"."""
    a = _episode(0.0, 1.0, 3, goal=3.0)  # positions 0..3
    b = _episode(3.0, 1.0, 2, goal=5.0)  # continues a
    spec = _spec(windows="padded")
    w = make_windows([a, b], spec)
    assert len(w.states) == 4 + 3  # not joined: each episode keeps its own states
    data = build_task_data(spec, w, "line")
    assert len(data.diffusion) == 3 + 2  # a window from every transition
    batch = data.diffusion.gather(torch.arange(len(data.diffusion)))
    x = data.normalizers["state"].unnormalize(batch["x"]).numpy()
    # positions stop at the episode's end (3 for a, 5 for b) and never run into the next episode
    np.testing.assert_allclose(x[:, :, 0], [[0, 1, 2, 3], [1, 2, 3, 3], [2, 3, 3, 3], [3, 4, 5, 5], [4, 5, 5, 5]], atol=1e-5)
    # the padded rows are at rest; real rows keep their velocity
    np.testing.assert_allclose(x[:, :, 1], [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]], atol=1e-5)
    np.testing.assert_allclose(batch["cond"][:, 2:].numpy(), batch["x"][:, -1].numpy())
    # the same data whatever the windows: a reward model fitted beside a full-window teacher still fits
    assert w.fingerprint == make_windows([a, b], _spec()).fingerprint
    assert w.fingerprint != make_windows([a], spec).fingerprint


def test_full_windows_with_a_plan_stride_end_at_their_last_knot():
    eps = [_episode(0.0, 1.0, 20, goal=20.0)]
    spec = _spec(horizon=8, plan_stride=4)
    data = build_task_data(spec, make_windows(eps, spec), "line")
    x = data.normalizers["state"].unnormalize(data.diffusion.gather(torch.arange(len(data.diffusion)))["x"])
    assert x.shape[1:] == (2, 2)
    np.testing.assert_allclose((x[:, 1, 0] - x[:, 0, 0]).numpy(), 4.0, atol=1e-5)
    assert len(data.diffusion) == 20 - 4 + 1  # knots at t and t + 4 <= 20


def test_no_full_window_is_a_one_line_error():
    from ractd_cli.errors import RactdError

    spec = _spec(horizon=8)
    with pytest.raises(RactdError, match="no stretch of 8 steps"):
        build_task_data(spec, make_windows([_episode(0.0, 1.0, 3, goal=3.0)], spec), "line")


def test_reward_pairs_read_the_goal_state():
    a = _episode(0.0, 1.0, 6, goal=6.0)
    spec = _spec()
    data = build_task_data(spec, make_windows([a], spec), "line")
    b = data.reward.gather(torch.arange(3))
    assert b["input"].shape == (3, 4)
    goal_state = data.normalizers["state"].normalize(np.array([[6.0, 0.0]], np.float32))
    np.testing.assert_allclose(b["input"][:, 2:].numpy(), np.repeat(goal_state, 3, 0), atol=1e-6)


def test_the_reward_scores_each_planned_state_against_the_goal_state():
    spec = _spec()
    seen = []

    def net(inp):  # R(s, g) = s_position - g_position, one row per planned state
        seen.append(inp)
        return inp[:, 0] - inp[:, 2]

    assert spec.layout.reward_input_dim(spec) == 4
    x0 = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [3.0, 0.0]]])
    cond = torch.tensor([[0.0, 1.0, 5.0, 0.0]])
    r = spec.layout.reward(spec, net)(x0, cond)
    assert seen[0].shape == (4, 4) and (seen[0][:, 2:] == torch.tensor([5.0, 0.0])).all()
    assert r.item() == pytest.approx((0 + 1 + 2 + 3) / 4 - 5)


def test_evaluation_conditions_on_the_goal_at_rest():
    spec = _spec()
    data = build_task_data(spec, make_windows([_episode(0.0, 1.0, 6, goal=6.0), _episode(-3.0, 2.0, 5, goal=7.0)], spec), "line")
    io = PlanIO(spec, data.normalizers)
    past = torch.tensor([[[1.0, 1.5]], [[2.0, -0.5]]])
    goal = torch.tensor([[4.0], [-2.0]])
    norm = data.normalizers["state"]
    want = np.concatenate([norm.normalize(past[:, -1].numpy()), norm.normalize(np.array([[4.0, 0.0], [-2.0, 0.0]], np.float32))], 1)
    np.testing.assert_allclose(io.cond(past, goal).numpy(), want, atol=1e-6)


@pytest.fixture(scope="module")
def line_models():
    """A teacher and a one-step student trained on 1-D constant-velocity lines, H = 4 states."""
    with torch_threads(1):
        rng = np.random.default_rng(0)
        eps = [_episode(float(rng.uniform(-4, 4)), float(rng.uniform(-1, 1)), 12, goal=0.0) for _ in range(200)]
        spec = _spec()
        data = build_task_data(spec, make_windows(eps, spec), "line")
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        T, D = spec.x_shape
        teacher = EDMPrecond(make_denoiser_net("mlp", input_dim=D, global_cond_dim=spec.cond_dim, horizon=T))
        opt = torch.optim.Adam(teacher.parameters(), lr=2e-3)
        for _ in range(1500):
            b = data.diffusion.gather(torch.randint(len(data.diffusion), (128,), generator=g))
            loss = edm_loss(teacher, b["x"], b["cond"], generator=g).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        teacher.requires_grad_(False).eval()
        student = student_from_teacher(teacher)
        opt = torch.optim.Adam(student.parameters(), lr=1e-3)
        for _ in range(300):
            b = data.diffusion.gather(torch.randint(len(data.diffusion), (128,), generator=g))
            losses = ractd_loss(student, teacher, None, b["x"], b["cond"], sigmas=teacher_sigmas(18), max_teacher_steps=4, generator=g)
            opt.zero_grad()
            losses["total"].backward()
            opt.step()
    held = data.diffusion.gather(torch.arange(0, len(data.diffusion), 17))
    return teacher, student.requires_grad_(False).eval(), held


def _end_error(x: torch.Tensor, held: dict) -> float:
    """Mean distance between each plan's last state and the last state it was conditioned on (normalised)."""
    return float((x[:, -1] - held["cond"][:, 2:]).abs().mean())


@pytest.mark.parametrize("sampler", ["heun", "euler", "ancestral", "onestep"])
def test_a_plan_ends_at_the_last_state_it_is_conditioned_on(line_models, sampler):
    teacher, student, held = line_models
    g = torch.Generator().manual_seed(3)
    z = torch.randn(held["x"].shape, generator=g)
    if sampler == "onestep":
        x, nfe = ctm_sample(student, z * SIGMA_MAX, student_sigmas(1), cond=held["cond"])
        assert nfe == 1
    else:
        sigmas = append_zero(karras_sigmas(18, SIGMA_MIN, SIGMA_MAX))
        x, _ = SAMPLERS[sampler](teacher, z * SIGMA_MAX, sigmas, cond=held["cond"], generator=g)
    ends = _end_error(x, held)
    # the same plans scored against the end states of other rows: what not using the condition gives
    shuffled = {"cond": held["cond"].roll(7, 0)}
    assert ends < 0.1, ends
    assert ends < 0.25 * _end_error(x, shuffled)
    # and the plan starts where it is told to
    assert float((x[:, 0] - held["cond"][:, :2]).abs().mean()) < 0.1


def test_padded_endpoint_windows_through_the_commands(tmp_path, monkeypatch, ractd_ok):
    """`train-teacher --windows padded` on a maze, then the documented chain: the reward model fitted
    by `train-reward` (on the task's full windows) is the student's without a "fetched again" error,
    and the student plans and reports padded windows."""
    pytest.importorskip("gymnasium_robotics")
    from ractd_cli.artifacts import load_artifact

    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ok = ractd_ok
    ok("fetch", "maze2d-umaze", "--source", "local", "--steps", "3000")
    teacher = ok("train-teacher", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "2", "--windows", "padded")["artifacts"][-1]
    ok("train-reward", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "2")
    student = ok("distill", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "1", "--reward-weight", "1")
    assert load_artifact(teacher["id"]).config["windows"] == load_artifact(student["id"]).config["windows"] == "padded"
    assert ok("rollout", "--env", "maze2d-umaze", "--model", student["id"], "--episodes", "1")["windows"] == "padded"


def test_horizon_flag_through_the_commands(tmp_path, monkeypatch, ractd_ok):
    """`train-teacher --horizon` on a maze: the teacher plans H/k knots of the new horizon, its student
    inherits it, and the rollout plans (and reports) that many states; a horizon the plan stride does
    not divide, or one for a task of action chunks, is a one-line error."""
    pytest.importorskip("gymnasium_robotics")
    from typer.testing import CliRunner

    from ractd_cli.artifacts import load_artifact
    from ractd_cli.cli import app
    from ractd_cli.models import spec_for
    from ractd_cli.registry import get_task

    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ok = ractd_ok
    _, spec = get_task("maze2d-umaze")
    H = spec.horizon + 32
    ok("fetch", "maze2d-umaze", "--source", "local", "--steps", "3000")
    teacher = ok("train-teacher", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "2", "--horizon", str(H), "--plan-stride", "4")
    teacher = load_artifact(teacher["artifacts"][-1]["id"])
    assert teacher.config["horizon"] == H // 4 and spec_for(teacher, spec).horizon == H
    ok("train-reward", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "2")
    student = ok("distill", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "1", "--teacher", teacher.id)
    assert spec_for(load_artifact(student["id"]), spec).horizon == H
    rolled = ok("rollout", "--env", "maze2d-umaze", "--model", student["id"], "--episodes", "1")
    assert rolled["horizon"] == H and rolled["plan_stride"] == 4
    # the task's own horizon keeps the default teacher's header (and so its id) as before
    default = [ok("train-teacher", "--env", "maze2d-umaze", "--preset", "tiny", "--steps", "2", *extra)["artifacts"][-1]["id"]
               for extra in ([], ["--horizon", str(spec.horizon)])]
    assert default[0] == default[1] != teacher.id and spec_for(load_artifact(default[0]), spec).horizon == spec.horizon

    # a task's preset may size the horizon (Preset.horizon), as the quick preset of maze2d-large does
    import dataclasses

    from ractd_cli.presets import PRESETS
    from ractd_cli.train import teacher as teacher_train
    from ractd_cli.train.common import TrainOptions

    adapter, _ = get_task("maze2d-umaze")
    sized = dataclasses.replace(spec, presets={"tiny": {"horizon": H, "plan_stride": 4}})
    made = teacher_train.train_teacher(adapter, sized, TrainOptions(preset="tiny", steps=2, device="cpu", show_progress=False))[-1]
    assert made.id == teacher.id  # the same teacher as `--horizon H --plan-stride 4`
    with pytest.raises(ValueError, match="horizon must be"):
        PRESETS["tiny"].override({"horizon": H + 1, "plan_stride": 4})

    runner = CliRunner()
    for args, says in ((["--env", "maze2d-umaze", "--horizon", str(H + 1), "--plan-stride", "4"], "divisor of the horizon"),
                       (["--env", "hopper-medium-replay", "--horizon", "32"], "state-planning tasks")):
        r = runner.invoke(app, ["train-teacher", "--preset", "tiny", "--steps", "1", *args])
        assert r.exit_code != 0 and says in r.output and "Traceback" not in r.output, r.output

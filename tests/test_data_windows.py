"""Returns-to-go and windowing on tiny hand-made episodes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ractd_cli.adapters import TaskSpec
from ractd_cli.data import Episode, make_windows, returns_to_go


def test_returns_to_go_hand_computed():
    r = np.array([1.0, 2.0, 3.0])
    none = np.zeros(3, bool)
    np.testing.assert_allclose(returns_to_go(r, none, 0.5), [2.75, 3.5, 3.0])
    # a true termination at the end gets the penalty: last reward 3 - 100 = -97
    term = np.array([False, False, True])
    np.testing.assert_allclose(returns_to_go(r, term, 0.5, -100.0), [1 + 1 - 97 / 4, 2 - 97 / 2, -97.0])
    # no termination (a time-out is a truncation): no penalty whatever its value
    np.testing.assert_allclose(returns_to_go(r, none, 0.5, -100.0), [2.75, 3.5, 3.0])
    assert returns_to_go(r, none, 0.5).dtype == np.float32
    with pytest.raises(ValueError):
        returns_to_go(r, np.zeros(2, bool), 0.5)


def _episode(T: int, base: float, goal: float | None = None) -> Episode:
    states = (base + 10.0 * np.arange(T + 1, dtype=np.float32))[:, None].repeat(2, axis=1)
    actions = (base + np.arange(T, dtype=np.float32))[:, None]
    rewards = np.ones(T, np.float32)
    terms = np.zeros(T, bool)
    terms[-1] = True
    goals = None if goal is None else np.full((T + 1, 1), goal, np.float32)
    return Episode(states, actions, rewards, terms, np.zeros(T, bool), goals)


def _spec(planning: str, horizon: int, history: int = 1, goal_dim: int = 0) -> TaskSpec:
    return TaskSpec(
        name="toy", env_id="Toy-v0", obs_dim=2, act_dim=1, planning=planning, horizon=horizon,
        history=history, goal_dim=goal_dim, gamma=0.5, termination_penalty=-10.0,
    )


def test_chunk_windows_pad_at_episode_end_and_history_at_start():
    eps = [_episode(3, 0.0), _episode(2, 100.0)]
    w = make_windows(eps, _spec("chunk", horizon=4, history=2))
    assert len(w) == 5  # one window per transition
    b = w.arrays()
    assert b["x"].shape == (5, 4, 1) and b["x_mask"].shape == (5, 4)
    assert b["cond"].shape == (5, 2, 2) and b["s"].shape == (5, 2) and b["a"].shape == (5, 1)
    assert b["rtg"].shape == (5,) and "goal" not in b
    # episode 0, n = 0: a0 a1 a2 then the last action repeated; history starts with s0 twice
    np.testing.assert_array_equal(b["x"][0, :, 0], [0, 1, 2, 2])
    np.testing.assert_array_equal(b["x_mask"][0], [True, True, True, False])
    np.testing.assert_array_equal(b["cond"][0, :, 0], [0, 0])
    # episode 0, n = 2: only a2 is real
    np.testing.assert_array_equal(b["x"][2, :, 0], [2, 2, 2, 2])
    np.testing.assert_array_equal(b["x_mask"][2], [True, False, False, False])
    np.testing.assert_array_equal(b["cond"][2, :, 0], [10, 20])
    # episode 1 never sees episode 0's data
    np.testing.assert_array_equal(b["x"][3, :, 0], [100, 101, 101, 101])
    np.testing.assert_array_equal(b["cond"][3, :, 0], [100, 100])
    np.testing.assert_array_equal(b["cond"][4, :, 0], [100, 110])
    np.testing.assert_array_equal(b["s"][:, 0], [0, 10, 20, 100, 110])
    np.testing.assert_array_equal(b["a"][:, 0], [0, 1, 2, 100, 101])
    # rtg per episode, penalty on the final (terminating) step
    np.testing.assert_allclose(b["rtg"][:3], returns_to_go(np.ones(3), [0, 0, 1], 0.5, -10.0))
    np.testing.assert_allclose(b["rtg"][3:], returns_to_go(np.ones(2), [0, 1], 0.5, -10.0))
    assert w.episode.tolist() == [0, 0, 0, 1, 1] and w.t.tolist() == [0, 1, 2, 0, 1]


def test_states_windows_pad_with_last_state_and_carry_goal():
    eps = [_episode(3, 0.0, goal=7.0), _episode(1, 100.0, goal=8.0)]
    w = make_windows(eps, _spec("states", horizon=3, goal_dim=1))
    b = w.batch(np.arange(len(w)))
    assert b["x"].shape == (4, 3, 2) and b["cond"].shape == (4, 1, 2) and b["goal"].shape == (4, 1)
    np.testing.assert_array_equal(b["x"][0, :, 0], [0, 10, 20])
    np.testing.assert_array_equal(b["x_mask"][0], [True, True, True])
    np.testing.assert_array_equal(b["x"][2, :, 0], [20, 30, 30])  # s2 s3 then s3 repeated
    np.testing.assert_array_equal(b["x_mask"][2], [True, True, False])
    np.testing.assert_array_equal(b["x"][3, :, 0], [100, 110, 110])
    np.testing.assert_array_equal(b["cond"][:, 0, 0], [0, 10, 20, 100])
    np.testing.assert_array_equal(b["goal"][:, 0], [7, 7, 7, 8])
    inv = w.inverse_dynamics()
    assert inv["inv_s"].shape == (4, 2) and inv["inv_a"].shape == (4, 1)
    np.testing.assert_array_equal(inv["inv_s"][:, 0], [0, 10, 20, 100])
    np.testing.assert_array_equal(inv["inv_s_next"][:, 0], [10, 20, 30, 110])
    np.testing.assert_array_equal(inv["inv_a"][:, 0], [0, 1, 2, 100])


def test_batch_accepts_slices_and_skips_empty_episodes():
    empty = Episode(np.zeros((1, 2), np.float32), np.zeros((0, 1), np.float32), np.zeros(0, np.float32),
                    np.zeros(0, bool), np.zeros(0, bool))
    w = make_windows([empty, _episode(3, 0.0)], _spec("chunk", horizon=2))
    assert len(w) == 3
    np.testing.assert_array_equal(w.batch(slice(1, 3))["x"][:, :, 0], [[1, 2], [2, 2]])
    with pytest.raises(ValueError):
        make_windows([empty], _spec("chunk", horizon=2))


@pytest.mark.parametrize("planning", ["chunk", "states"])
def test_full_windows_never_cross_an_episode_end(planning):
    """The default (RACTD's code: pad_before 0, pad_after 0): the diffusion models train only on
    windows whose rows are all real; ``padded`` keeps one window per transition."""
    import torch

    from ractd_cli.train.data import build_task_data

    chunk = planning == "chunk"
    eps = [_episode(T, base, goal=None if chunk else 1.0) for T, base in ((5, 0.0), (2, 100.0), (4, 200.0))]
    spec = _spec(planning, horizon=3, history=2 if chunk else 1, goal_dim=0 if chunk else 1)
    assert spec.windows == "full"
    w = make_windows(eps, spec)
    full = build_task_data(spec, w, "toy")
    padded = build_task_data(dataclasses.replace(spec, windows="padded"), w, "toy")
    assert len(padded.diffusion) == len(w) == 11
    rows = full.diffusion_rows.numpy()
    # chunk: a_n..a_{n+2} inside the episode (n <= T - 3) and s_{n-1} too (n >= 1); states: s_n..s_{n+2} (n <= T - 2)
    expected = {"chunk": [1, 2, 8], "states": [0, 1, 2, 3, 5, 7, 8, 9]}[planning]
    assert rows.tolist() == expected
    assert w.x_mask[rows].all() and (w.t[rows] >= spec.history - 1).all()
    x = full.diffusion.gather(torch.arange(len(full.diffusion)))["x"]
    raw = full.normalizers[spec.layout.x_source].unnormalize(x)[..., 0].numpy()
    step = 1.0 if planning == "chunk" else 10.0  # consecutive actions / states of one episode
    np.testing.assert_allclose(np.diff(raw, axis=1), step, atol=1e-3)


def test_plan_rows_are_computed_per_batch_never_held_for_every_window():
    """``x_rows`` of any subset equals those rows of the whole index, strided state plans step by the
    stride inside their episode and repeat its last state past the end, and the windows keep no
    (N, L) array: the reward and inverse-dynamics models never pay for the plan index."""
    eps = [_episode(T, base, goal=1.0) for T, base in ((9, 0.0), (4, 100.0))]
    spec = dataclasses.replace(_spec("states", horizon=6, goal_dim=1), plan_stride=2)
    w = make_windows(eps, spec)
    held = [getattr(w, f.name) for f in dataclasses.fields(w) if isinstance(getattr(w, f.name), np.ndarray)]
    assert not [a.shape for a in held if a.shape == (len(w), len(w.slots))]
    assert w.slots.tolist() == [0, 2, 4]
    idx = np.array([12, 0, 7, 3])
    index, mask = w.x_rows(idx)
    np.testing.assert_array_equal(index, w.x_index[idx])
    np.testing.assert_array_equal(mask, w.x_mask[idx])
    # episode 0 (states 0, 10, ..., 90), window at n = 7: s_7, s_9, then s_9 again (padding)
    np.testing.assert_array_equal(w.states[index[2], 0], [70, 90, 90])
    np.testing.assert_array_equal(mask[2], [True, True, False])
    # episode 1 (states 100..140), window at n = 3 (row 12): s_3 then its last state s_4, padded
    np.testing.assert_array_equal(w.states[index[0], 0], [130, 140, 140])
    np.testing.assert_array_equal(mask[0], [True, False, False])
    # full windows: the last slot (4 steps on) still inside the episode
    assert w.full_rows().tolist() == [0, 1, 2, 3, 4, 5, 9]
    assert w.x_mask[w.full_rows()].all() and not w.x_mask[np.setdiff1d(np.arange(len(w)), w.full_rows())].all(axis=1).any()


def test_windows_choice_is_checked():
    with pytest.raises(ValueError, match="windows"):
        TaskSpec(name="toy", env_id="Toy-v0", obs_dim=2, act_dim=1, planning="chunk", horizon=2, windows="some")


def test_windows_through_the_commands(tmp_path, monkeypatch, ractd_ok):
    """`train-teacher --windows padded`: recorded in the teacher, inherited by its student, stated by
    `rollout`; the default is full; an unknown choice is a usage error."""
    from typer.testing import CliRunner

    from ractd_cli.artifacts import load_artifact
    from ractd_cli.cli import app

    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ok = ractd_ok
    ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    full = ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "3")
    padded = ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "3", "--windows", "padded")
    assert load_artifact(full["id"]).config["windows"] == "full"
    assert load_artifact(padded["id"]).config["windows"] == "padded" and padded["id"] != full["id"]
    student = ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "2", "--reward-weight", "0", "--teacher", padded["id"])
    assert load_artifact(student["id"]).config["windows"] == "padded"
    assert ok("rollout", "--env", "bimodal", "--model", student["id"], "--episodes", "1")["windows"] == "padded"
    runner = CliRunner()
    r = runner.invoke(app, ["train-teacher", "--env", "bimodal", "--windows", "some"])
    assert r.exit_code == 2 and "--windows" in r.output, r.output


def test_return_to_go_options_of_train_reward(tmp_path, monkeypatch, ractd_ok):
    """`train-reward --gamma G --termination-penalty P` regresses that return-to-go and records it;
    out-of-range values are usage errors."""
    from typer.testing import CliRunner

    from ractd_cli.artifacts import load_artifact
    from ractd_cli.cli import app
    from ractd_cli.models import RewardConfig, load_net, normalizers_from

    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ok = ractd_ok
    ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    base = load_artifact(ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "2")["id"])
    other = load_artifact(ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "2", "--gamma", "0.5",
                             "--termination-penalty", "-3")["id"])
    assert (base.config["gamma"], base.config["termination_penalty"]) == (0.99, 0.0)  # the bimodal task's
    assert (other.config["gamma"], other.config["termination_penalty"]) == (0.5, -3.0)
    # a shorter discount gives smaller returns-to-go: the fitted target range shrinks
    hi = lambda art: float(np.asarray(normalizers_from(art.tensors)["rtg"].max).reshape(-1)[0])  # noqa: E731
    assert hi(other) < hi(base)
    assert load_net(other) is not None
    assert RewardConfig.of(other).stored() == {k: other.config[k] for k in ("input", "gamma", "termination_penalty")}
    # a RACTD student's results name the return-to-go its R_psi regressed; a CTD student's do not
    ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "2")
    ractd = ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "2", "--reward", other.id)
    ctd = ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "2", "--reward-weight", "0")
    doc = ok("rollout", "--env", "bimodal", "--model", ractd["id"], "--episodes", "1")
    assert (doc["rtg_gamma"], doc["rtg_termination_penalty"]) == (0.5, -3.0)
    assert "rtg_gamma" not in ok("rollout", "--env", "bimodal", "--model", ctd["id"], "--episodes", "1")
    runner = CliRunner()
    for args in (["--gamma", "1.5"], ["--gamma", "0"], ["--termination-penalty", "nan"]):
        r = runner.invoke(app, ["train-reward", "--env", "bimodal", *args])
        assert r.exit_code == 2 and args[0] in r.output, r.output


def test_data_ceiling_scores_the_datasets_own_episodes(monkeypatch):
    """bench's data rows: the mean episode, the best tenth and the best episode, on the score scale."""
    from ractd_cli import bench
    from ractd_cli.adapters import EnvAdapter
    from ractd_cli.data import load

    spec = TaskSpec(name="toy", env_id="Toy-v0", obs_dim=2, act_dim=1, planning="chunk", horizon=2,
                    ref_scores={"toy": (0.0, 10.0)})
    # 20 episodes with returns 1..20 (one step each): scores 10, 20, ..., 200
    eps = [Episode(np.zeros((2, 2), np.float32), np.zeros((1, 1), np.float32), np.array([r], np.float32),
                   np.zeros(1, bool), np.ones(1, bool)) for r in range(1, 21)]
    monkeypatch.setattr(load, "load_episodes", lambda adapter, spec, dataset: eps)

    class Toy(EnvAdapter):
        tasks = {"toy": spec}

        def make_env(self, task, **kw): ...

        def state(self, obs): ...

        def states(self, obs): ...

    d = bench.data_ceiling(Toy(), spec, "toy/local-v0", "toy")
    assert d["episodes"] == 20 and d["max"] == 200.0
    assert d["mean"] == pytest.approx(105.0) and d["top_mean"] == pytest.approx(195.0)  # the best 2: 200 and 190
    assert [label for label, _ in bench.data_rows(d)][1] == "data: mean of its best 10% of episodes"
    assert d["made"] == {} and bench.data_rows(d)[0][0] == "data: mean of its 20 episodes"  # no such dataset on disk
    assert bench.data_ceiling(Toy(), dataclasses.replace(spec, planning="states"), "x", "toy") is None  # open loop: none
    # a SAC-made dataset: the table says which checkpoint and thread count made it (fetch --threads)
    from ractd_cli.data import store

    monkeypatch.setattr(store, "local_recipe", lambda dataset: {"seed": 0, "made_on": {"threads": 2, "torch": "x"}, "generator": {
        "sac_medium_step": 95000, "sac_medium_return": 4117.1, "sac_run": "halfcheetah-seed0"}})
    d = bench.data_ceiling(Toy(), spec, "toy/local-v0", "toy")
    assert d["made"] == {"seed": 0, "threads": 2, "sac_medium_step": 95000, "sac_medium_return": 4117.1}
    assert bench.data_rows(d)[0][0] == "data: mean of its 20 episodes (SAC's medium checkpoint at step 95,000, generated on 2 threads)"

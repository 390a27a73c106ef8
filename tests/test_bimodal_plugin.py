"""The bimodal toy task: env, scores, generated data with two equal, separable modes."""

from __future__ import annotations

import numpy as np
import pytest

from ractd_cli.adapters import EnvAdapter
from ractd_cli.data import fetch, load_episodes, make_windows

ractd_bimodal = pytest.importorskip("ractd_bimodal")
from ractd_bimodal import env as benv  # noqa: E402


def test_adapter_and_registration():
    import gymnasium as gym

    a = ractd_bimodal.adapter
    assert isinstance(a, EnvAdapter)
    spec = a.tasks["bimodal"]
    assert spec.planning == "chunk" and spec.history == 1 and spec.horizon == 8
    assert spec.max_episode_steps <= 32 and spec.termination_penalty == 0.0
    assert benv.ENV_ID in gym.registry
    env = gym.make(benv.ENV_ID)
    assert env.spec.max_episode_steps == spec.max_episode_steps
    env.close()


@pytest.mark.parametrize("goal,reward,reached", [(benv.GOAL_A, 1.0, "A"), (benv.GOAL_B, 0.5, "B")])
def test_reaching_a_goal_pays_and_ends(goal, reward, reached):
    a = ractd_bimodal.adapter
    env = a.make_env("bimodal", seed=0)
    obs, _ = env.reset(options={"start": [0.0, 0.0]})
    total, term, trunc, steps = 0.0, False, False, 0
    while not (term or trunc):
        d = goal - obs
        obs, r, term, trunc, info = env.step(d / np.abs(d).max())
        total += r
        steps += 1
    assert term and not trunc and info["reached"] == reached and total == reward
    assert steps < 32
    assert a.success("bimodal", total, info) == (reached == "A")
    assert a.normalized_score("bimodal", total) == pytest.approx(100 * reward)


def test_time_out_pays_nothing():
    a = ractd_bimodal.adapter
    env = a.make_env("bimodal", seed=0)
    env.reset(seed=0)
    total, n = 0.0, 0
    while True:
        _, r, term, trunc, info = env.step(np.zeros(2))
        total += r
        n += 1
        if term or trunc:
            break
    assert trunc and not term and n == 32 and total == 0.0
    assert a.success("bimodal", total, info) is False
    assert a.normalized_score("bimodal", total) == 0.0


def test_generated_data_has_two_equal_separable_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    a = ractd_bimodal.adapter
    spec = a.tasks["bimodal"]
    counted: list[int] = []
    did = fetch(a, spec, source="local", steps=1000, seed=0, force=False, progress=counted.append)
    eps = load_episodes(a, spec, did)
    # the bar counts to the steps asked for, though the last episode runs on to its end
    assert sum(counted) == 1000 and sum(len(e) for e in eps) >= 1000
    ends_x = np.array([e.states[-1, 0] for e in eps])
    returns = np.array([e.episode_return for e in eps])
    assert all(e.terminations[-1] for e in eps)  # every scripted path reaches its goal
    to_a, to_b = returns == 1.0, returns == 0.5
    assert to_a.sum() + to_b.sum() == len(eps) and abs(int(to_a.sum()) - int(to_b.sum())) <= 1
    assert np.all(ends_x[to_a] > 0.5) and np.all(ends_x[to_b] < -0.5)
    # the first action already tells the mode apart
    first_ax = np.array([e.actions[0, 0] for e in eps])
    assert np.mean(first_ax[to_a] > 0) > 0.9 and np.mean(first_ax[to_b] < 0) > 0.9
    assert max(len(e) for e in eps) <= 32
    w = make_windows(eps, spec)
    b = w.batch(np.arange(len(w)))
    assert b["x"].shape == (len(w), 8, 2) and b["cond"].shape == (len(w), 1, 2)
    assert b["rtg"][w.t == 0][to_a].min() > b["rtg"][w.t == 0][to_b].max()  # A is worth more from the start

"""The ractd-kitchen plugin: task table, score from return/info, env construction, smoke data."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points

import numpy as np
import pytest
from ractd_kitchen import adapter

from ractd_cli.adapters import EnvAdapter

TARGETS = {
    "kitchen-complete": {"microwave", "kettle", "light switch", "slide cabinet"},
    "kitchen-partial": {"microwave", "kettle", "light switch", "slide cabinet"},
    "kitchen-mixed": {"microwave", "kettle", "bottom burner", "light switch"},
}
MAX_STEPS = {"kitchen-complete": 280, "kitchen-partial": 450, "kitchen-mixed": 450}


@pytest.fixture(scope="module")
def env():
    """One evaluation env for kitchen-complete (constructing FrankaKitchen takes ~1 s)."""
    e = adapter.make_env("kitchen-complete", seed=0)
    yield e
    e.close()


def test_entry_point_loads_the_adapter():
    (ep,) = [e for e in entry_points(group="ractd.envs") if e.name == "kitchen"]
    assert ep.value == "ractd_kitchen:adapter"
    assert ep.load() is adapter
    assert isinstance(adapter, EnvAdapter)


def test_task_names_and_specs():
    assert sorted(adapter.tasks) == sorted(TARGETS)
    for name, spec in adapter.tasks.items():
        dataset = name.removeprefix("kitchen-")
        assert spec.name == name and spec.env_id == "FrankaKitchen-v1"
        assert (spec.obs_dim, spec.act_dim, spec.goal_dim) == (59, 9, 0)
        assert (spec.planning, spec.history, spec.horizon) == ("chunk", 1, 16)
        assert spec.gamma == 0.99 and spec.max_episode_steps == MAX_STEPS[name]
        assert spec.minari_ids == (f"D4RL/kitchen/{dataset}-v2",)
        assert set(spec.extra["targets"]) == TARGETS[name]
        assert spec.ref_min_score is None and spec.ref_max_score is None
        assert "scripted demonstrations" in spec.local_generation


def test_score_from_return():
    task = "kitchen-mixed"
    assert adapter.normalized_score(task, 0.0) == 0.0
    assert adapter.normalized_score(task, 2.0) == 50.0
    assert adapter.normalized_score(task, 4.0) == 100.0
    assert adapter.success(task, 4.0, {}) is True
    assert adapter.success(task, 3.0, {}) is False
    # A raw FrankaKitchen return (tasks in their goal region summed over steps) is refused,
    # not silently turned into a score above 100.
    with pytest.raises(ValueError, match="not a count"):
        adapter.normalized_score(task, 37.0)


def test_score_from_info():
    task = "kitchen-mixed"
    info = {"episode_task_completions": ["microwave", "kettle", "slide cabinet"]}  # slide cabinet: not a target here
    assert adapter.normalized_score(task, 0.0, info=info) == 50.0
    assert adapter.success(task, 0.0, info) is False
    info = {"episode_task_completions": ["microwave", "kettle", "bottom burner", "light switch"]}
    assert adapter.normalized_score(task, 123.0, info=info) == 100.0  # info wins over the return
    assert adapter.success(task, 123.0, info) is True


def test_env_is_built_as_specified(env):
    raw = env.unwrapped
    assert set(raw.goal) == TARGETS["kitchen-complete"]
    assert raw.remove_task_when_completed is False and raw.terminate_on_tasks_completed is False
    assert env.spec.max_episode_steps == 280
    obs, _ = env.reset(seed=0)
    s = adapter.state("kitchen-complete", obs)
    assert s.shape == (59,) and s.dtype == np.float32
    assert env.action_space.shape == (9,)
    mixed = adapter.make_env("kitchen-mixed")
    try:
        assert set(mixed.unwrapped.goal) == TARGETS["kitchen-mixed"]
        assert mixed.spec.max_episode_steps == 450
    finally:
        mixed.close()


def test_rollout_steps_warn_nothing_and_states_are_copies(env):
    """FrankaKitchen-v1 returns one observation object from step to step; gymnasium's env checker
    printed four warnings about it in every rollout. The adapter builds the env without it, and its
    state() is a copy, so a later step cannot change a state already read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = adapter.make_env("kitchen-mixed", seed=0)
        try:
            obs, _ = e.reset(seed=0)
            before = adapter.state("kitchen-mixed", obs)
            kept = before.copy()
            for _ in range(2):
                obs, *_ = e.step(e.action_space.sample())
        finally:
            e.close()
    assert not [w for w in caught if "share an object" in str(w.message)]
    np.testing.assert_array_equal(before, kept)
    f32 = np.zeros(59, dtype=np.float32)
    assert adapter.state("kitchen-mixed", f32) is not f32


def test_evaluation_reward_counts_each_task_once(env):
    """Put two task objects at their goals: the raw reward counts them on every step, the
    evaluation reward once, so the return is the number of tasks completed."""
    import mujoco
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

    env.reset(seed=0)
    raw = env.unwrapped
    for name in ("microwave", "slide cabinet"):
        raw.data.qpos[OBS_ELEMENT_INDICES[name]] = OBS_ELEMENT_GOALS[name]
    mujoco.mj_forward(raw.model, raw.data)
    ret = raw_ret = 0.0
    for _ in range(4):
        _, r, terminated, truncated, info = env.step(np.zeros(9))
        ret += r
        raw_ret += info["env_reward"]
        assert not terminated and not truncated
    assert ret == 2.0 and raw_ret == 8.0
    assert sorted(info["episode_task_completions"]) == ["microwave", "slide cabinet"]
    assert adapter.normalized_score("kitchen-complete", ret) == 50.0
    assert adapter.normalized_score("kitchen-complete", ret, info=info) == 50.0
    assert adapter.success("kitchen-complete", ret, info) is False


def test_generate_random_smoke_data():
    task = "kitchen-complete"
    seen = []
    buffers, meta = adapter.generate(task, steps=300, seed=0, progress=seen.append, behaviour="random")
    assert sum(seen) == 300
    assert meta["smoke_test_only"] is True and meta["behaviour"] == "random"
    assert "ref_min_score" not in meta and "ref_max_score" not in meta
    assert meta["env_kwargs"]["remove_task_when_completed"] is False
    # 280-step time limit: one full episode, then 20 steps cut at the budget.
    assert [len(ep.rewards) for ep in buffers] == [280, 20]
    for i, ep in enumerate(buffers):
        t = len(ep.rewards)
        assert ep.id == i
        assert ep.observations["observation"].shape == (t + 1, 59)
        assert set(ep.observations["achieved_goal"]) == TARGETS[task]
        assert ep.observations["achieved_goal"]["kettle"].shape == (t + 1, 7)
        assert ep.actions.shape == (t, 9)
        assert not np.any(ep.terminations) and ep.truncations[-1] and not np.any(ep.truncations[:-1])
        s = adapter.states(task, ep.observations)
        assert s.shape == (t + 1, 59) and s.dtype == np.float32
    with pytest.raises(ValueError):
        adapter.generate(task, steps=10, seed=0, behaviour="sac")


def test_states_accepts_minari_dict_form(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    task = "kitchen-mixed"
    buffers, meta = adapter.generate(task, steps=40, seed=1, behaviour="random")
    with warnings.catch_warnings():  # minari nags about author / code permalink
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "ractdtest/kitchen/mixed-v2", buffers, env=adapter.make_raw_env(task), algorithm_name=meta["algorithm_name"]
        )
    ep = next(iter(minari.load_dataset("ractdtest/kitchen/mixed-v2").iterate_episodes()))
    assert isinstance(ep.observations, dict) and set(ep.observations) >= {"observation", "achieved_goal"}
    np.testing.assert_allclose(
        adapter.states(task, ep.observations), buffers[0].observations["observation"].astype(np.float32)
    )
    # A list of per-step dict observations works too.
    obs_list = [{"observation": row} for row in buffers[0].observations["observation"]]
    assert adapter.states(task, obs_list).shape == (41, 59)


def test_gymnasium_robotics_import_notice_is_not_shown():
    """gymnasium-robotics prints an Adroit notice on its first import; bench's data rows read the
    kitchen env's constants (ractd_kitchen.quality), and showed it before the env was ever made."""
    import subprocess
    import sys

    code = ("import numpy as np; from ractd_kitchen import quality; "
            "print(quality.completed_subtasks(np.zeros((3, 59), dtype=np.float32)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Adroit" not in res.stderr

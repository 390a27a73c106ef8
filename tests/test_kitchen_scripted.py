"""The ractd-kitchen scripted demonstrations: a controller reaches its goal, the episode plans follow
D4RL's three datasets, the data-quality statistics count right, and local generation records
Minari episodes with the recipe and success statistics in their metadata (resumable from cache).

Short runs with fixed seeds; no timing assertions. The scripted controllers are noisy but succeed
in >= 90% of episodes (docs/kitchen.md); the seeds here are ones they succeed on.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

import importlib  # noqa: E402

from ractd_kitchen import adapter as kitchen  # noqa: E402  (the adapter instance)
from ractd_kitchen import quality, scripted  # noqa: E402
from ractd_kitchen.adapter import TARGETS, episode_tasks  # noqa: E402

adapter_module = importlib.import_module("ractd_kitchen.adapter")  # the module (the package's `adapter` is the instance)


def _targets_done(buf, targets) -> set:
    return set(quality.completed_subtasks(buf.observations["observation"])) & set(targets)


# -- one controller ------------------------------------------------------------------------------


@pytest.mark.parametrize("subtask", ["light switch", "microwave"])
def test_a_scripted_subtask_reaches_its_goal(subtask):
    """The controller alone, with the generator's action noise: the env itself reports the subtask
    completed, and the controller finished well inside the step cap."""
    r = scripted.run_subtask_trials(subtask, episodes=1, noise=adapter_module.ACTION_NOISE, seed=0, max_steps=150)
    assert r["successes"] == 1 and r["failed_episodes"] == []
    assert 0 < r["mean_steps"] < 150


def test_policy_chains_subtasks_and_then_holds():
    import gymnasium as gym

    from ractd_cli.adapters import quiet_import

    gym.register_envs(quiet_import("gymnasium_robotics"))
    env = gym.make("FrankaKitchen-v1", tasks_to_complete=["light switch", "slide cabinet"], remove_task_when_completed=False,
                   terminate_on_tasks_completed=False, max_episode_steps=200, disable_env_checker=True)
    try:
        env.reset(seed=3)
        policy = scripted.ScriptedPolicy(env, ["light switch", "slide cabinet"], noise=0.1, rng=np.random.default_rng(3))
        seen = []
        for _ in range(200):
            a = policy()
            assert a.shape == (9,) and np.all(np.abs(a) <= 1.0)
            seen.append(policy.current)
            _, _, _, _, info = env.step(a)
            if policy.finished:
                break
        assert policy.finished and policy.current is None
        assert [o[0] for o in policy.outcomes] == ["light switch", "slide cabinet"]
        assert seen.index("slide cabinet") > seen.index("light switch")
        assert set(info["episode_task_completions"]) == {"light switch", "slide cabinet"}
    finally:
        env.close()


def test_unknown_subtask_is_refused():
    with pytest.raises(ValueError, match="unknown subtask"):
        scripted.run_subtask_trials("dishwasher", episodes=1)


# -- plans ---------------------------------------------------------------------------------------


def test_episode_plans_follow_the_dataset_recipes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert episode_tasks("complete", rng) == (list(TARGETS["complete"]), True)
    mixed = [episode_tasks("mixed", rng) for _ in range(300)]
    assert all(len(set(p)) == 4 and not full for p, full in mixed)
    assert not any(set(TARGETS["mixed"]) <= set(p) for p, _ in mixed)
    assert {t for p, _ in mixed for t in p} == set(scripted.SUBTASKS)  # every subtask appears
    partial = [episode_tasks("partial", rng) for _ in range(300)]
    full = [p for p, f in partial if f]
    assert all(p == list(TARGETS["partial"]) for p in full)
    assert 0.35 < len(full) / len(partial) < 0.65  # PARTIAL_FULL_SHARE = 0.5
    assert not any(set(TARGETS["partial"]) <= set(p) for p, f in partial if not f)


def test_the_hinge_cabinet_waits_for_what_its_door_would_block():
    order = ["hinge cabinet", "kettle", "slide cabinet", "microwave", "light switch"]
    assert scripted.feasible_order(order) == ["kettle", "slide cabinet", "microwave", "light switch", "hinge cabinet"]
    assert scripted.feasible_order(["kettle", "hinge cabinet", "microwave"]) == ["kettle", "hinge cabinet", "microwave"]
    assert scripted.feasible_order(["slide cabinet", "hinge cabinet"]) == ["slide cabinet", "hinge cabinet"]


# -- data quality --------------------------------------------------------------------------------


def _episode_reaching(done_at: dict[str, int], steps: int = 10) -> np.ndarray:
    """(steps+1, 59) observations at the env's start state, each subtask of ``done_at`` put at its
    goal from the given step on."""
    indices, goals, _ = scripted._env_constants()
    start = np.zeros(59)
    start[32:39] = [-0.269, 0.35, 1.62, 1.0, 0.0, 0.0, 0.0]  # the kettle (qpos 23..29 -> columns 32..38)
    obs = np.tile(start, (steps + 1, 1))
    for name, t in done_at.items():
        obs[t:, np.asarray(indices[name]) + quality.OBJECT_COLUMN] = goals[name]
    return obs


def test_quality_counts_completions_per_subtask_and_per_episode():
    assert quality.completed_subtasks(_episode_reaching({})) == []
    assert quality.completed_subtasks(_episode_reaching({"kettle": 7, "microwave": 2})) == ["microwave", "kettle"]
    eps = [
        _episode_reaching({}),
        _episode_reaching({"microwave": 1, "kettle": 2, "light switch": 3, "slide cabinet": 4}),
        _episode_reaching({"microwave": 1, "hinge cabinet": 5}),
    ]
    q = quality.dataset_quality(eps, TARGETS["complete"])
    assert q["episodes"] == 3 and q["steps"] == 30
    assert q["subtask_share"]["microwave"] == pytest.approx(2 / 3)
    assert q["subtask_share"]["hinge cabinet"] == pytest.approx(1 / 3)
    assert q["subtask_share"]["top burner"] == 0.0
    assert q["tasks_completed"] == {"0": 1, "1": 0, "2": 1, "3": 0, "4": 1, "5": 0, "6": 0, "7": 0}
    assert q["targets_completed"] == {"0": 1, "1": 1, "2": 0, "3": 0, "4": 1}
    assert q["all_targets_share"] == pytest.approx(1 / 3)
    assert "all four: 33.3%" in quality.format_report(q)
    with pytest.raises(ValueError):
        quality.subtask_distances(np.zeros((5, 30)))


def test_a_dataset_episode_returns_its_distinct_targets_completed(monkeypatch):
    """bench's data rows score a dataset episode as the evaluation env would pay it (each target task
    once), not by its recorded raw rewards (a task held for k steps adds k): `episode_return`."""
    from ractd_cli import bench
    from ractd_cli.data import Episode
    from ractd_cli.registry import get_task

    obs = _episode_reaching({"microwave": 1, "kettle": 2, "hinge cabinet": 3})  # hinge cabinet: not a mixed target
    raw = np.full(len(obs) - 1, 2.0, np.float32)  # what the raw env records: 2 tasks held at every step
    ep = Episode(obs.astype(np.float32), np.zeros((len(obs) - 1, 9), np.float32), raw, np.zeros(len(raw), bool),
                 np.zeros(len(raw), bool), None)
    assert kitchen.episode_return("kitchen-mixed", ep) == 2.0 and kitchen.episode_return("kitchen-complete", ep) == 2.0
    adapter, spec = get_task("kitchen-mixed")
    monkeypatch.setattr("ractd_cli.data.load.load_episodes", lambda *a, **k: [ep, ep])
    ceiling = bench.data_ceiling(adapter, spec, "ractd/kitchen-mixed/local-v0", "d4rl")
    assert (ceiling["mean"], ceiling["max"]) == (50.0, 50.0)  # 2 of 4 targets, not a return of 20


# -- local generation ----------------------------------------------------------------------------


def _check_buffers(buffers, targets):
    for i, ep in enumerate(buffers):
        t = len(ep.rewards)
        assert ep.id == i
        assert ep.observations["observation"].shape == (t + 1, 59)
        assert set(ep.observations["achieved_goal"]) == set(targets)
        assert ep.actions.shape == (t, 9) and np.all(np.abs(ep.actions) <= 1.0)
        assert not np.any(ep.terminations) and ep.truncations[-1] and not np.any(ep.truncations[:-1])


def test_generate_complete_records_scripted_episodes_with_recipe_and_statistics():
    task = "kitchen-complete"
    seen = []
    buffers, meta = kitchen.generate(task, steps=300, seed=0, progress=seen.append, cache=False)
    assert sum(seen) == 300 == meta["total_steps"] == sum(len(b.rewards) for b in buffers)
    assert meta["behaviour"] == "scripted" and meta["smoke_test_only"] is False
    assert meta["seed"] == 0 and meta["total_episodes"] == len(buffers) == 2
    _check_buffers(buffers, TARGETS["complete"])
    assert buffers[0].seed == 0 and buffers[1].seed == 1  # episode k resets with seed + k
    # the first episode ends TAIL_STEPS after its fourth subtask, well inside the 280-step limit
    assert len(buffers[0].rewards) < 280
    assert _targets_done(buffers[0], TARGETS["complete"]) == set(TARGETS["complete"])
    recipe = meta["recipe"]
    assert recipe["dataset"] == "complete" and recipe["targets"] == list(TARGETS["complete"])
    assert recipe["action_noise_std"] == adapter_module.ACTION_NOISE and recipe["max_episode_steps"] == 280
    assert meta["plans"]["episodes_with_target_plan"] == 2
    s = meta["success"]
    assert s["episodes"] == 2 and s["steps"] == 300 and s["targets"] == list(TARGETS["complete"])
    assert set(s["subtask_share"]) == set(scripted.SUBTASKS)
    assert s["targets_completed"]["4"] >= 1
    json.dumps(meta["recipe"]), json.dumps(meta["success"]), json.dumps(meta["plans"])  # JSON-ready
    with pytest.raises(ValueError, match="behaviour"):
        kitchen.generate(task, steps=10, seed=0, behaviour="sac")


def test_mixed_episodes_never_complete_all_four_targets(monkeypatch):
    """Force a plan of the four mixed targets (the recipe never draws one): the episode is cut just
    before the step that would complete the fourth, and the metadata counts the cut."""
    monkeypatch.setattr(adapter_module, "episode_tasks", lambda dataset, rng: (list(TARGETS["mixed"]), False))
    buffers, meta = kitchen.generate("kitchen-mixed", steps=450, seed=0, cache=False)
    _check_buffers(buffers, TARGETS["mixed"])
    first = buffers[0]
    assert len(_targets_done(first, TARGETS["mixed"])) == 3
    assert meta["plans"]["cut_before_fourth_target"] >= 1
    assert meta["success"]["targets_completed"]["4"] == 0 and meta["success"]["all_targets_share"] == 0.0
    assert first.truncations[-1] and len(first.rewards) < 450


def test_random_behaviour_is_still_available():
    buffers, meta = kitchen.generate("kitchen-mixed", steps=50, seed=1, behaviour="random")
    assert meta["behaviour"] == "random" and meta["smoke_test_only"] is True
    assert [len(b.rewards) for b in buffers] == [50]


def test_an_interrupted_generation_resumes_from_its_cache(monkeypatch, _tmp_cache):
    """Chunks of finished episodes are written to the cache; a second run reads them back and makes
    exactly the same data (the first run's episodes are not generated again)."""
    monkeypatch.setattr(adapter_module, "EPISODES_PER_CHUNK", 1)
    first, _ = kitchen.generate("kitchen-complete", steps=270, seed=5)
    chunks = sorted((_tmp_cache / "kitchen-scripted").rglob("chunk-*.npz"))
    assert len(chunks) == 1  # episode 0 ended on its own; episode 1 was cut by the budget: not cached

    loaded = []
    real_load = adapter_module._ChunkStore.load

    def spy(self, first_episode):
        out = real_load(self, first_episode)
        loaded.append((first_episode, out is not None))
        return out

    monkeypatch.setattr(adapter_module._ChunkStore, "load", spy)
    again, meta = kitchen.generate("kitchen-complete", steps=270, seed=5)
    assert loaded == [(0, True), (1, False)]  # episode 0 from the cache, episode 1 made again
    assert len(again) == len(first) == 2
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.observations["observation"], b.observations["observation"])
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.truncations, b.truncations)
    assert meta["total_steps"] == 270


def test_fetch_local_then_quality_report(ractd_ok, capsys):
    doc = ractd_ok("fetch", "kitchen-complete", "--source", "local", "--steps", "260")
    assert doc["dataset_id"] == "ractd/kitchen-complete/local-v0" and doc["steps"] == 260
    from ractd_cli.data import read_metadata

    made = read_metadata(doc["dataset_id"])["ractd"]
    assert made["seed"] == 0 and made["steps"] == 260
    assert made["generator"]["recipe"]["dataset"] == "complete"
    assert made["generator"]["success"]["episodes"] == doc["episodes"]
    capsys.readouterr()
    assert quality.main([doc["dataset_id"], "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["targets"] == list(TARGETS["complete"]) and q["steps"] == 260
    assert q["subtask_share"] == made["generator"]["success"]["subtask_share"]

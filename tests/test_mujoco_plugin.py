"""The ractd-mujoco plugin: task table, scores, env construction, local data generation."""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points

import numpy as np
import pytest
from ractd_mujoco import adapter

from ractd_cli.adapters import EnvAdapter

BODIES = {
    # body: (env_id, obs_dim, act_dim, gamma, D4RL ref min, D4RL ref max); gamma 0.99 as RACTD's code
    # (the paper's App. B.2 text: 0.997, 0.99, 0.9, in adapter.PAPER_TEXT_RETURN_TO_GO), except where a
    # measurement chose otherwise (adapter.MEASURED_DEFAULTS, below)
    "hopper": ("Hopper-v5", 11, 3, 0.99, -20.272305, 3234.3),
    "walker2d": ("Walker2d-v5", 17, 6, 0.99, 1.629008, 4592.3),
    "halfcheetah": ("HalfCheetah-v5", 17, 6, 0.99, -280.178953, 12135.0),
}
DATASETS = ("simple", "medium", "medium-replay", "medium-expert", "expert")


def test_entry_point_loads_the_adapter():
    (ep,) = [e for e in entry_points(group="ractd.envs") if e.name == "mujoco"]
    assert ep.value == "ractd_mujoco:adapter"
    assert ep.load() is adapter
    assert isinstance(adapter, EnvAdapter)


def test_task_names():
    assert sorted(adapter.tasks) == sorted(f"{b}-{d}" for b in BODIES for d in DATASETS)
    assert all(name == spec.name for name, spec in adapter.tasks.items())


@pytest.mark.parametrize("body", sorted(BODIES))
def test_specs(body):
    env_id, obs_dim, act_dim, gamma, ref_min, ref_max = BODIES[body]
    for dataset in DATASETS:
        spec = adapter.tasks[f"{body}-{dataset}"]
        # measured: the paper text's return-to-go and padded windows (hopper-medium-replay)
        measured = dataset == "medium-replay" and body == "hopper"
        text_gamma = {"hopper": 0.997}.get(body)
        assert (spec.env_id, spec.obs_dim, spec.act_dim, spec.gamma) == (env_id, obs_dim, act_dim, text_gamma if measured else gamma)
        assert (spec.planning, spec.history, spec.horizon, spec.goal_dim) == ("chunk", 1, 16, 0)
        assert spec.termination_penalty == (-100.0 if measured else 0.0) and spec.max_episode_steps == 1000
        assert spec.windows == ("padded" if measured and body == "hopper" else "full")
        assert importlib.import_module("ractd_mujoco.adapter").PAPER_TEXT_RETURN_TO_GO[body][1] == -100.0
        assert (spec.ref_min_score, spec.ref_max_score) == (ref_min, ref_max)
        assert spec.model_preset == "mujoco" and len(spec.loss_weights) == 3
        assert spec.local_generation
    ids = {d: adapter.tasks[f"{body}-{d}"].minari_ids for d in DATASETS}
    assert ids["simple"] == (f"mujoco/{body}/simple-v0",)
    assert ids["medium"] == (f"mujoco/{body}/medium-v0",)
    assert ids["expert"] == (f"mujoco/{body}/expert-v0",)
    assert ids["medium-expert"] == (f"mujoco/{body}/medium-v0", f"mujoco/{body}/expert-v0")
    assert ids["medium-replay"] == ()


def test_quick_preset_steps_follow_the_measured_learning_curves():
    """R_psi trains 40k steps on every MuJoCo task; only halfcheetah-medium-replay's teacher trains
    12k (its curve still rose past 4k; hopper's was flat), the rest keep the preset's 4000."""
    from ractd_cli.presets import PRESETS

    for name, spec in adapter.tasks.items():
        quick = PRESETS["quick"].override(spec.presets["quick"])
        assert quick.steps["reward"] == 40_000, name
        assert quick.steps["teacher"] == (12_000 if name == "halfcheetah-medium-replay" else PRESETS["quick"].steps["teacher"]), name


@pytest.mark.parametrize("body", sorted(BODIES))
def test_normalized_score_on_reference_returns(body):
    *_, ref_min, ref_max = BODIES[body]
    task = f"{body}-medium"
    assert adapter.normalized_score(task, ref_min) == pytest.approx(0.0, abs=1e-9)
    assert adapter.normalized_score(task, ref_max) == pytest.approx(100.0)
    assert adapter.normalized_score(task, (ref_min + ref_max) / 2) == pytest.approx(50.0)


def test_no_goals_options_or_success():
    task = "hopper-medium"
    assert adapter.goals(task, np.zeros((3, 11))) is None
    assert adapter.goal(task, np.zeros(11)) is None
    assert adapter.reset_options(task, 0, np.random.default_rng(0)) is None
    assert adapter.success(task, 1000.0, {}) is None


@pytest.mark.parametrize("body", sorted(BODIES))
def test_env_constructs_and_state_matches_obs_dim(body):
    task = f"{body}-medium"
    spec = adapter.tasks[task]
    env = adapter.make_env(task, seed=0)
    try:
        obs, _ = env.reset(seed=0)
        s = adapter.state(task, obs)
        assert s.shape == (spec.obs_dim,) and s.dtype == np.float32
        assert env.action_space.shape == (spec.act_dim,)
        assert env.spec.max_episode_steps == spec.max_episode_steps
        obs, *_ = env.step(env.action_space.sample())
        assert adapter.state(task, obs).shape == (spec.obs_dim,)
    finally:
        env.close()


def _check_buffers(buffers, spec, steps):
    assert buffers, "no episodes"
    total = 0
    for i, ep in enumerate(buffers):
        t = len(ep.rewards)
        assert ep.id == i
        assert ep.observations.shape == (t + 1, spec.obs_dim)
        assert ep.actions.shape == (t, spec.act_dim)
        assert len(ep.terminations) == len(ep.truncations) == t
        # Episode boundaries: only the last step ends the episode, and it does end it.
        assert not np.any(ep.terminations[:-1]) and not np.any(ep.truncations[:-1])
        assert bool(ep.terminations[-1]) != bool(ep.truncations[-1])
        total += t
    assert total == steps


@pytest.mark.parametrize("task", ["hopper-medium-replay", "halfcheetah-simple"])
def test_generate_random_is_well_formed(task):
    spec = adapter.tasks[task]
    seen = []
    buffers, meta = adapter.generate(task, steps=300, seed=3, progress=seen.append, behaviour="random")
    _check_buffers(buffers, spec, 300)
    assert sum(seen) == 300
    assert meta["behaviour"] == "random" and meta["total_steps"] == 300
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (spec.ref_min_score, spec.ref_max_score)
    # A random policy is only a stand-in for anything but the simple dataset.
    assert meta["smoke_test_only"] == (task != "halfcheetah-simple")
    if task.startswith("hopper"):
        assert len(buffers) > 1 and any(ep.terminations[-1] for ep in buffers)  # hopper falls over
    else:
        assert len(buffers) == 1 and buffers[0].truncations[-1]  # cheetah never terminates: cut at the budget
    s = adapter.states(task, buffers[0].observations)
    assert s.shape == (len(buffers[0].rewards) + 1, spec.obs_dim) and s.dtype == np.float32


def test_generate_is_reproducible():
    a, _ = adapter.generate("walker2d-expert", steps=120, seed=7, behaviour="random")
    b, _ = adapter.generate("walker2d-expert", steps=120, seed=7, behaviour="random")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)


def test_generate_rejects_unknown_behaviour():
    with pytest.raises(ValueError):
        adapter.generate("hopper-medium", steps=10, seed=0, behaviour="ppo")


def test_buffers_round_trip_through_minari(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    task = "hopper-medium"
    buffers, meta = adapter.generate(task, steps=100, seed=0, behaviour="random")
    env = adapter.make_env(task)
    with warnings.catch_warnings():  # minari nags about author / code permalink
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            "ractdtest/hopper/medium-v0",
            buffers,
            env=env,
            algorithm_name=meta["algorithm_name"],
            ref_min_score=meta["ref_min_score"],
            ref_max_score=meta["ref_max_score"],
        )
    ds = minari.load_dataset("ractdtest/hopper/medium-v0")
    assert ds.total_steps == 100 and ds.total_episodes == len(buffers)
    ep = next(iter(ds.iterate_episodes()))
    np.testing.assert_allclose(adapter.states(task, ep.observations), buffers[0].observations.astype(np.float32))


SMALL_SAC = {"eval_every": 200, "eval_episodes": 1, "learning_starts": 50}
"""A run small enough for a test: evaluations (and checkpoints) every 200 steps."""


@pytest.fixture
def sac_cache(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    return tmp_path


def _run(directory, **kw):
    from ractd_mujoco.sac import SACRun

    return SACRun(lambda: adapter.make_env("hopper-medium"), directory, seed=0, ref_max=3234.3, **{**SMALL_SAC, **kw})


def test_sac_run_interrupted_and_resumed_ends_bit_identical(sac_cache):
    """Stopped after its second checkpoint (a new process would rebuild it from the files) and
    resumed, the run ends with the same networks, optimiser state, replay buffer and evaluations
    as one that was never stopped."""
    import torch

    from ractd_cli.artifacts import made_on
    from ractd_cli.data.recording import ProgressBatcher

    whole = _run(sac_cache / "whole")
    whole.train_to(600, ProgressBatcher(None))
    part = _run(sac_cache / "part")
    part.train_to(400, ProgressBatcher(None))
    del part
    resumed = _run(sac_cache / "part")
    assert resumed.step == 400 and len(resumed.evaluations) == 2
    resumed.train_to(600, ProgressBatcher(None))
    for (k, a), (_, b) in zip(whole.model.policy.state_dict().items(), resumed.model.policy.state_dict().items()):
        assert torch.equal(a, b), k
    assert whole.evaluations == resumed.evaluations
    assert whole.made_on == resumed.made_on == [{"steps": [0, 600], **made_on()}]  # one span: the same machine
    for f in ("observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(whole.model.replay_buffer, f)[:600], getattr(resumed.model.replay_buffer, f)[:600])
    assert torch.equal(whole.model.log_ent_coef, resumed.model.log_ent_coef)
    with pytest.raises(ValueError, match="remove it to start over"):
        _run(sac_cache / "part", eval_every=100)


def test_sac_run_records_which_steps_ran_on_which_thread_count(sac_cache):
    """A run continued on another thread count (which changes its floats) says so: two spans, each
    with its count, kept across a restart."""
    from ractd_cli.data.fetch import torch_threads
    from ractd_cli.data.recording import ProgressBatcher

    run = _run(sac_cache / "run")
    with torch_threads(1):
        run.train_to(200, ProgressBatcher(None))
    with torch_threads(2):
        _run(sac_cache / "run").train_to(400, ProgressBatcher(None))
    spans = _run(sac_cache / "run").made_on
    assert [(s["steps"], s["threads"]) for s in spans] == [([0, 200], 1), ([200, 400], 2)]


def test_sac_datasets_share_one_cached_run(sac_cache):
    """medium-replay is the replay buffer up to the medium checkpoint (here: the best of a short run
    that never reaches a third of the expert's return, which the metadata says); medium and
    medium-expert reuse the run; the bar's fields show SAC's return."""
    shown = []

    def progress(n, **fields):
        shown.append(fields)

    kw = dict(seed=0, behaviour="sac", train_steps=400, sac_settings=SMALL_SAC)
    replay, meta = adapter.generate("hopper-medium-replay", steps=10, progress=progress, **kw)
    assert meta["behaviour"] == "sac" and not meta["smoke_test_only"]
    assert meta["medium_threshold_reached"] is False and meta["sac_medium_step"] in (200, 400)
    assert sum(len(b.rewards) for b in replay) == meta["sac_medium_step"] == meta["total_steps"]
    _check_buffers(replay, adapter.tasks["hopper-medium-replay"], meta["sac_medium_step"])
    assert any("sac_return" in f for f in shown)
    assert [span["steps"] for span in meta["sac_made_on"]] == [[0, 400]]
    run_json = (sac_cache / "sac" / "hopper-seed0" / "run.json").read_text()
    medium, meta_m = adapter.generate("hopper-medium", steps=120, **kw)
    assert (sac_cache / "sac" / "hopper-seed0" / "run.json").read_text() == run_json  # no more training
    _check_buffers(medium, adapter.tasks["hopper-medium"], 120)
    assert meta_m["sac_medium_step"] == meta["sac_medium_step"]
    again, _ = adapter.generate("hopper-medium", steps=120, **kw)  # the same dataset whenever it is made
    for x, y in zip(medium, again):
        np.testing.assert_array_equal(x.actions, y.actions)
    mixed, meta_x = adapter.generate("hopper-medium-expert", steps=80, **kw)
    _check_buffers(mixed, adapter.tasks["hopper-medium-expert"], 80)
    assert meta_x["sac_expert_step"] == 400


def test_sac_run_leaves_no_logger_folders_behind(sac_cache, tmp_path, monkeypatch):
    """stable-baselines3 makes an empty tempdir/SB3-<date-time> folder for each `learn` without a
    logger of its own; the run sets one, so fetching data leaves the temp directory as it was."""
    import tempfile

    from ractd_cli.data.recording import ProgressBatcher

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    _run(sac_cache / "run").train_to(200, ProgressBatcher(None))
    assert list(tmp.iterdir()) == []


def test_one_process_at_a_time_trains_a_bodys_sac_run(sac_cache):
    """`fetch hopper-medium` and `fetch hopper-medium-replay` at once (two shells) share one SAC
    run; while one process trains it, the other stops with one line and trains nothing."""
    from filelock import FileLock

    from ractd_cli.errors import RactdError

    lock = sac_cache / "sac" / "hopper-seed0.lock"
    lock.parent.mkdir(parents=True)
    kw = dict(seed=0, behaviour="sac", train_steps=400, sac_settings=SMALL_SAC)
    with FileLock(str(lock), timeout=0), pytest.raises(RactdError, match="another ractd process is training it now"):
        adapter.generate("hopper-medium", steps=10, **kw)
    assert not (sac_cache / "sac" / "hopper-seed0").exists()
    adapter.generate("hopper-medium", steps=10, **kw)
    assert (sac_cache / "sac" / "hopper-seed0" / "run.json").exists() and not lock.exists()

"""Shared fixtures: every test gets its own empty cache; a fake adapter is available."""

from __future__ import annotations

import pytest

from ractd_cli import registry
from ractd_cli.adapters import TaskSpec


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """make test runs two xdist workers on two cores: one intra-op thread each. With torch's
    default (one per core) the workers oversubscribe the CPU and tiny models run ~100x slower."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path / "cache"))
    yield tmp_path / "cache"


class FakeAdapter:
    """The smallest adapter satisfying the protocol, for registry/CLI tests."""

    tasks = {
        "fake-easy": TaskSpec(name="fake-easy", env_id="Fake-v0", obs_dim=3, act_dim=2, planning="chunk", horizon=4),
        "fake-hard": TaskSpec(name="fake-hard", env_id="Fake-v0", obs_dim=3, act_dim=2, planning="chunk", horizon=4),
    }

    def make_env(self, task, *, seed=None):
        raise NotImplementedError

    def state(self, task, obs):
        return obs

    def states(self, task, observations):
        return observations

    def goals(self, task, observations):
        return None

    def goal(self, task, obs):
        return None

    def reset_options(self, task, episode, rng):
        return None

    def generate(self, task, *, steps, seed, progress=None):
        return [], {}

    def normalized_score(self, task, episode_return, scale=None):
        return 100.0 * episode_return

    def success(self, task, episode_return, info):
        return None


@pytest.fixture
def fake_adapter():
    registry.register("fake", FakeAdapter(), distribution="ractd-fake", version="0.0")
    yield registry.plugins()["fake"].adapter
    registry.reset()


@pytest.fixture
def ractd_ok():
    """``ractd_ok(*args)``: run a ractd command in-process with ``--json``, assert it succeeded, return its JSON."""
    import json

    from typer.testing import CliRunner

    from ractd_cli.cli import app

    runner = CliRunner()

    def ok(*args: str) -> dict:
        r = runner.invoke(app, [*args, "--json"])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    return ok

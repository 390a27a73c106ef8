"""Shared fixtures: every test gets its own empty cache; a fake adapter is available."""

from __future__ import annotations

import pytest

from ractd_cli import registry
from ractd_cli.adapters import EnvAdapter, TaskSpec


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


class FakeAdapter(EnvAdapter):
    """The smallest adapter of the current plugin API, for registry/CLI tests."""

    tasks = {
        name: TaskSpec(name=name, env_id="Fake-v0", obs_dim=3, act_dim=2, planning="chunk", horizon=4, ref_scores={"fake": (0.0, 1.0)})
        for name in ("fake-easy", "fake-hard")
    }

    def make_env(self, task, *, seed=None):
        raise NotImplementedError

    def state(self, task, obs):
        return obs

    def states(self, task, observations):
        return observations

    def generate(self, task, *, steps, seed, progress=None):
        return [], {}


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

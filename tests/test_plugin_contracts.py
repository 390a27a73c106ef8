"""Third-party plugins keep working across releases (docs/plugins.md, "Plugin API changes").

A frozen plugin in the shape of each earlier documented contract (tests/contracts/line_api*.py) runs
the tiny chain as a user would: fetch, train-teacher, train-reward, distill, rollout; `ractd envs`
shows one deprecation line for it. The loader's checks refuse what cannot work at load time, with
one line naming the plugin and the fix, and survive a plugin that exits, is interrupted or prints
while importing."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import pytest
from conftest import FakeAdapter
from typer.testing import CliRunner

from ractd_cli import registry
from ractd_cli.adapters import PLUGIN_API, EnvAdapter, TaskSpec
from ractd_cli.cli import app
from ractd_cli.plugin_api import LEGACY_SCALE, PluginError

runner = CliRunner()


@pytest.fixture
def fresh_registry():
    registry.reset()
    yield
    registry.reset()


def _envs_row(name: str) -> dict:
    r = runner.invoke(app, ["envs", "--json"])
    assert r.exit_code == 0, r.output
    return next(row for row in json.loads(r.stdout)["adapters"] if row["name"] == name)


@pytest.mark.slow
@pytest.mark.parametrize("version, scale", [(1, LEGACY_SCALE), (2, "line")])
def test_a_plugin_of_an_earlier_contract_runs_the_chain(version, scale, fresh_registry, ractd_ok):
    module = importlib.import_module(f"tests.contracts.line_api{version}")
    registry.register(f"line-api{version}", module.adapter, distribution="ractd-line", version="0.1.0")
    task = f"line-api{version}"
    row = _envs_row(task)
    assert row["error"] is None and row["tasks"] == [task] and len(row["deprecations"]) == 1
    assert row["specs"][task]["default_score_scale"] == scale
    ractd_ok("fetch", task, "--source", "local", "--steps", "600")
    ractd_ok("train-teacher", "--env", task, "--preset", "tiny", "--steps", "60")
    ractd_ok("train-reward", "--env", task, "--preset", "tiny", "--steps", "30")
    student = ractd_ok("distill", "--env", task, "--preset", "tiny", "--steps", "30")["id"]
    doc = ractd_ok("rollout", "--env", task, "--model", student, "--episodes", "2", "--seed", "0")
    assert doc["score_scale"] == scale
    # the plugin's own normalized_score scored each episode: 100 * return on its (0, 1) references
    assert [e["score"] for e in doc["per_episode"]] == pytest.approx([100.0 * e["return"] for e in doc["per_episode"]])


def test_the_guides_example_is_a_current_plugin(fresh_registry):
    """docs/plugins.md section 4, as printed: loads without a note, generates and scores."""
    import re
    import sys
    import types
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    code = re.search(r"```python\n(# ractd_line/__init__.py\n.*?)```", guide, re.S).group(1)
    module = types.ModuleType("ractd_line_guide")
    sys.modules[module.__name__] = module  # gym.register's entry point names the module
    try:
        exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
        registry.register("line", module.adapter)
        p = registry.plugins()["line"]
        assert p.notes == [] and p.adapter.api_version == PLUGIN_API
        buffers, meta = p.adapter.generate("line", steps=30, seed=0)
        assert sum(len(b.actions) for b in buffers) >= 30 and meta["env"] == "ractd/Line-v0"
        assert p.adapter.normalized_score("line", 1.0) == pytest.approx(100.0) and p.adapter.goal("line", None) is None
    finally:
        sys.modules.pop(module.__name__, None)


def test_the_shipped_plugins_are_current_and_say_nothing():
    for plugin in registry.plugins().values():
        if plugin.distribution.startswith("ractd-"):
            assert plugin.error is None and plugin.notes == [], plugin
            assert isinstance(plugin.adapter, EnvAdapter) and plugin.adapter.api_version == PLUGIN_API


def test_an_api1_adapter_scores_on_its_one_scale_only(fresh_registry):
    module = importlib.import_module("tests.contracts.line_api1")
    registry.register("old", module.adapter)
    adapter = registry.plugins()["old"].adapter
    assert adapter.normalized_score("line-api1", 0.25) == pytest.approx(25.0)
    assert adapter.normalized_score("line-api1", 0.25, scale=LEGACY_SCALE) == pytest.approx(25.0)
    with pytest.raises(Exception, match="no score scale 'd4rl'"):
        adapter.normalized_score("line-api1", 0.25, scale="d4rl")
    assert adapter.make_env is not None and adapter.inner is module.adapter  # its own methods, reached through


class _Current(FakeAdapter):
    tasks = {"cur": TaskSpec(name="cur", env_id="X-v0", obs_dim=2, act_dim=1, planning="chunk", horizon=4, ref_scores={"s": (0.0, 1.0)})}
    generate = EnvAdapter.generate  # the default


def test_a_subclass_gets_the_defaults_and_no_note(fresh_registry):
    registry.register("cur", _Current())
    p = registry.plugins()["cur"]
    assert p.notes == [] and p.adapter.goal("cur", None) is None and p.adapter.reset_options("cur", 0, None) is None
    assert p.adapter.success("cur", 1.0, {}) is None and p.adapter.normalized_score("cur", 0.5) == pytest.approx(50.0)
    with pytest.raises(NotImplementedError, match="cannot be generated locally"):
        p.adapter.generate("cur", steps=1, seed=0)


@pytest.mark.parametrize("change, says", [
    (dict(state=None), "lacks state()"),
    (dict(api_version=PLUGIN_API + 1), "upgrade ractd"),
    (dict(api_version="2"), "api_version must be a positive integer"),
    (dict(tasks={"cur": TaskSpec(name="cur", env_id="X-v0", obs_dim=2, act_dim=1, planning="chunk", horizon=4)}),
     "task cur has no score scale: set TaskSpec.ref_scores"),
    (dict(normalized_score=lambda task, episode_return: 0.0, api_version=2), "takes no `scale` argument"),
])
def test_what_cannot_work_is_refused_at_load_in_one_line(change, says, fresh_registry):
    cls = type("Broken", (_Current,), {k: v for k, v in change.items() if k != "state"})
    if "state" in change:
        cls.state = EnvAdapter.state  # not overridden
    with pytest.raises(PluginError, match=says) as e:
        registry.register("broken", cls())
    assert "\n" not in str(e.value) and str(e.value).startswith("plugin broken")


@pytest.mark.parametrize("raises, shows", [
    (SystemExit(0), "plugin bad failed to load: SystemExit"),
    (KeyboardInterrupt(), "plugin bad failed to load: KeyboardInterrupt"),
    (ImportError("no module named foo"), "plugin bad failed to load: ImportError: no module named foo"),
])
def test_a_plugin_that_stops_at_import_is_named_and_the_cli_goes_on(raises, shows, monkeypatch, fresh_registry):
    def load():
        print("hello from the plugin")  # must not reach --json output
        raise raises

    ep = SimpleNamespace(name="bad", dist=SimpleNamespace(name="ractd-bad", version="9"), load=load)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
    r = runner.invoke(app, ["envs", "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)["adapters"]  # stdout is JSON only
    assert row["error"].startswith(shows) and row["tasks"] == []


def test_the_guide_documents_every_taskspec_field():
    """docs/plugins.md section 2 has a row for each TaskSpec field, in one of its three groups."""
    import dataclasses
    from pathlib import Path

    from ractd_cli.adapters import TaskSpec

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    section = guide.split("## 2. `TaskSpec`")[1].split("## 3.")[0]
    rows = {name for line in section.splitlines() if line.startswith("| `") for name in line.split("|")[1].replace("`", "").split(", ")}
    fields = {f.name for f in dataclasses.fields(TaskSpec)}
    assert fields == {r.strip() for r in rows}, fields ^ {r.strip() for r in rows}

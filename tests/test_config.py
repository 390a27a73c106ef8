"""`--config FILE`: a recipe in TOML, one table per command; its values are defaults that flags beat."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ractd_cli.cli import _config_first, app
from ractd_cli.config import read_recipe, shipped_recipes

runner = CliRunner()

RECIPE = """
[fetch]
env = "bimodal"
source = "local"
steps = 600

[train-teacher]
env = "bimodal"
preset = "tiny"
steps = 7
clamp = false

[rollout]
env = "bimodal"
episodes = 2
"""


def _json(*args: str) -> dict:
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_a_recipe_sets_defaults_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.replace("clamp = false\n", ""))
    assert _json("--config", str(recipe), "fetch")["dataset_id"] == "ractd/bimodal/local-v0"
    teacher = _json("train-teacher", "--config", str(recipe))  # after the command, as naturally written
    assert teacher["speed"]["steps"] == 7
    again = _json("--config", str(recipe), "train-teacher", "--steps", "5")
    assert again["speed"]["steps"] == 5  # the flag wins
    assert _json("--config", str(recipe), "rollout", "--model", "teacher", "--sampler", "euler", "--nfe", "2")["episodes"] == 2


@pytest.mark.parametrize("text, says", [
    ('[train-teacher]\nstepz = 3\n', "unknown option 'stepz'"),
    ('[trian-teacher]\nsteps = 3\n', "did you mean 'train-teacher'"),
    ('[train-teacher]\nclamp = false\n', "unknown option 'clamp'"),  # not an option of train-teacher
    ('[train-teacher]\nreward-weight = 1.0\n', "unknown option 'reward-weight'"),  # a deprecated name: command line only
    ('steps = 3\n', "must be tables of options"),
    ('x = [', "not a readable TOML file"),
])
def test_a_bad_recipe_is_a_usage_error(tmp_path, text, says):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    r = runner.invoke(app, ["--config", str(bad), "envs"])
    assert r.exit_code == 2 and says in r.output, r.output
    assert "Traceback" not in r.output


def test_no_such_recipe_names_the_shipped_ones():
    r = runner.invoke(app, ["--config", "nope", "envs"])
    assert r.exit_code == 2 and "maze2d-large" in r.output


def test_the_shipped_recipes_are_valid_for_their_commands():
    """Each shipped recipe's every key is an option of its command (checked as `--config` checks)."""
    import typer.main

    from ractd_cli.cli import app as typer_app
    from ractd_cli.config import default_map
    from ractd_cli.registry import get_task
    from ractd_cli.train.common import TrainOptions

    group = typer.main.get_command(typer_app)
    ctx = group.make_context("ractd", ["envs"], resilient_parsing=True)
    commands = {n: group.get_command(ctx, n) for n in group.list_commands(ctx)}
    assert {"maze2d-umaze", "maze2d-medium", "maze2d-large"} <= set(shipped_recipes())
    for name in shipped_recipes():
        mapped = default_map(read_recipe(name), commands, name)
        assert mapped["train-teacher"]["env"] == name
    for name in ("maze2d-umaze", "maze2d-medium", "maze2d-large"):  # each recipe is its task's quick preset, written out
        teacher = default_map(read_recipe(name), commands, name)["train-teacher"]
        opts, spec = TrainOptions(preset="quick", device="cpu"), get_task(name)[1]
        cfg = opts.config("teacher", spec)
        assert (teacher["steps"], teacher["batch_size"], teacher.get("plan_stride", 1)) == (cfg.steps, cfg.batch_size, opts.preset_for(spec).plan_stride)


def test_config_after_the_command_moves_before_it():
    cmds = {"train-teacher", "cache"}
    assert _config_first(["train-teacher", "--env", "x", "--config", "r.toml"], cmds) == ["--config", "r.toml", "train-teacher", "--env", "x"]
    assert _config_first(["cache", "list", "--config=r.toml"], cmds) == ["--config=r.toml", "cache", "list"]
    assert _config_first(["--debug", "train-teacher"], cmds) == ["--debug", "train-teacher"]

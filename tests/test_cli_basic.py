import json
import re

import pytest
import torch
from typer.testing import CliRunner

from ractd_cli import __version__, registry
from ractd_cli.artifacts import save_artifact
from ractd_cli.cli import app
from ractd_cli.errors import UsageError

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.stdout


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("envs", "cache"):
        assert cmd in r.stdout


def test_help_keeps_bracketed_text():
    """Rich markup would swallow "[distill]" in an option's help; it must reach the reader."""
    r = runner.invoke(app, ["--help"], terminal_width=200)
    assert r.exit_code == 0
    assert "([train-teacher], [distill], ...)" in " ".join(r.stdout.replace("│", " ").split())


def test_envs_json_lists_fake_adapter(fake_adapter):
    r = runner.invoke(app, ["envs", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    fake = [a for a in doc["adapters"] if a["name"] == "fake"][0]
    assert fake["distribution"] == "ractd-fake" and fake["tasks"] == ["fake-easy", "fake-hard"]


def test_envs_json_shows_each_tasks_spec_as_data(fake_adapter):
    r = runner.invoke(app, ["envs", "--json"])
    assert r.exit_code == 0
    fake = [a for a in json.loads(r.stdout)["adapters"] if a["name"] == "fake"][0]
    assert {"name", "distribution", "version", "tasks", "error", "specs"} <= fake.keys()
    assert sorted(fake["specs"]) == fake["tasks"]
    s = fake["specs"]["fake-easy"]
    assert (s["name"], s["env_id"], s["obs_dim"], s["act_dim"], s["planning"], s["horizon"]) == ("fake-easy", "Fake-v0", 3, 2, "chunk", 4)
    assert (s["history"], s["goal_dim"], s["gamma"]) == (1, 0, 0.99)
    assert s["loss_weights"] == {"ctm": 1.0, "dsm": 1.0, "reward": 1.0}
    assert s["score_scales"] == {"fake": {"min": 0.0, "max": 1.0}} and s["default_score_scale"] == "fake"
    assert s["model_preset"] == "mujoco" and s["presets"] == {}


def test_envs_json_specs_of_the_installed_plugins():
    registry.reset()
    doc = json.loads(runner.invoke(app, ["envs", "--json"]).stdout)
    specs = {t: s for a in doc["adapters"] for t, s in a.get("specs", {}).items()}
    if "maze2d-umaze" not in specs or "hopper-medium" not in specs:
        pytest.skip("plugins not installed in this environment (make test installs them)")
    maze = specs["maze2d-umaze"]
    assert (maze["planning"], maze["horizon"], maze["goal_dim"], maze["obs_dim"]) == ("endpoints", 128, 2, 4)
    assert maze["score_scales"] == {"d4rl": {"min": 23.85, "max": 161.86}, "minari": {"min": 13.49, "max": 218.70}}
    assert maze["default_score_scale"] == "d4rl"
    assert specs["hopper-medium"]["score_scales"] == {"d4rl": {"min": -20.272305, "max": 3234.3}}
    assert maze["model_preset"] == "maze2d-umaze" and specs["maze2d-large"]["model_preset"] == "maze2d-large"
    # Maze2d's reward term is weighted as the RACTD authors' code weights it: sigma 1 on kappa = H x 1e-4
    assert maze["loss_weights"] == {"ctm": 1.0, "dsm": 1.0, "reward": 1.0} and maze["reward_scale"] == pytest.approx(0.0128)
    assert {specs[f"maze2d-{m}"]["windows"] for m in ("umaze", "medium", "large")} == {"padded"}
    # the authors' configs as the MuJoCo defaults (configs/guided_ctmp_*.yaml), where Table 9 prints 3, 0 and 1
    assert specs["hopper-medium"]["loss_weights"] == {"ctm": 1.0, "dsm": 1.0, "reward": 1.0}
    assert specs["hopper-medium-expert"]["loss_weights"] == {"ctm": 1.0, "dsm": 1.0, "reward": 0.5}
    assert specs["walker2d-medium-replay"]["loss_weights"] == {"ctm": 1.0, "dsm": 1.0, "reward": 0.5}
    assert specs["walker2d-medium-expert"]["loss_weights"] == {"ctm": 1.0, "dsm": 1.0, "reward": 0.2}
    assert specs["halfcheetah-medium-replay"]["loss_weights"] == {"ctm": 1.0, "dsm": 1.0, "reward": 1.0}
    # the paper's figures beside bench's rows (Tables 1-5, 10, 11)
    assert specs["hopper-medium-replay"]["paper_scores"]["ractd-1"] == "104.9 ± 2.1 (T1)"
    assert specs["hopper-medium-replay"]["paper_scores"]["teacher-heun"] == "114.2 (T3)"
    assert specs["walker2d-medium-replay"]["paper_scores"] == {"ractd-1": "91.5 ± 2.6 (T1)"}
    assert specs["maze2d-large"]["paper_scores"]["ractd-1"] == "143.8 ± 0.0 (T2)"
    assert specs["hopper-simple"]["paper_scores"] == {}
    # the Trajectory Diffuser authors' per-task settings
    assert specs["hopper-medium-replay"]["trajdiffuser"] == {"horizon": 16, "guidance": 1.2}
    assert specs["halfcheetah-medium"]["trajdiffuser"] == {"horizon": 8, "guidance": 1.1}
    for task, s in specs.items():  # the data are the specs themselves
        spec = registry.get_task(task)[1]
        assert (s["model_preset"], s["gamma"], s["history"], s["horizon"]) == (spec.model_preset, spec.gamma, spec.history, spec.horizon)
        assert (s["loss_weights"]["ctm"], s["loss_weights"]["dsm"], s["loss_weights"]["reward"]) == tuple(spec.loss_weights)
        assert s["presets"] == {k: dict(v) for k, v in spec.presets.items()}
    if "bimodal" in specs:
        assert specs["bimodal"]["default_score_scale"] == "bimodal"


def test_installed_plugins_come_from_three_distributions():
    registry.reset()
    doc = json.loads(runner.invoke(app, ["envs", "--json"]).stdout)
    by_name = {a["name"]: a for a in doc["adapters"]}
    needed = {"maze2d", "mujoco", "kitchen"}
    if not needed <= by_name.keys():
        pytest.skip("plugins not installed in this environment (make test installs them)")
    assert len({by_name[n]["distribution"] for n in needed}) == 3
    assert all(by_name[n]["error"] is None for n in needed)


def test_unknown_task_did_you_mean(fake_adapter):
    with pytest.raises(UsageError) as e:
        registry.get_task("fake-esy")
    assert "did you mean fake-easy" in str(e.value)
    assert "known tasks" in str(e.value)


def test_broken_plugin_is_reported_not_fatal(monkeypatch, fake_adapter):
    class EP:
        name = "broken"
        dist = None

        def load(self):
            raise ImportError("no module named nonexistent_dep")

    p = registry._load_entry_point(EP())
    assert p.adapter is None and "nonexistent_dep" in p.error
    registry.plugins()["broken"] = p
    r = runner.invoke(app, ["envs", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert any(a["name"] == "broken" and "nonexistent_dep" in a["error"] for a in doc["adapters"])
    assert registry.get_task("fake-easy")[1].name == "fake-easy"


def test_cache_path_list_rm(tmp_path):
    r = runner.invoke(app, ["--cache-dir", str(tmp_path / "c2"), "cache", "path"])
    assert r.exit_code == 0 and str(tmp_path / "c2") in r.stdout
    a = save_artifact({"w": torch.ones(2)}, kind="teacher", task="fake-easy", config={})
    doc = json.loads(runner.invoke(app, ["cache", "list", "--json"]).stdout)
    assert [x["id"] for x in doc["artifacts"]] == [a.id]
    r = runner.invoke(app, ["cache", "rm", a.id[:6], "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["removed"] == [str(a.path)]


def test_runtime_error_is_one_line_exit_1():
    r = runner.invoke(app, ["cache", "rm", "doesnotexist"])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert "ractd cache list" in r.output


def test_error_text_with_square_brackets_is_printed_as_is(tmp_path, monkeypatch):
    """An error quoting the user's input (or a library's message) is text, not rich markup: '[/x]'
    once crashed the printer with a traceback."""
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    r = runner.invoke(app, ["cache", "rm", "[/x]"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.startswith("error: [/x] is not in the cache")


BAD_INPUT = [
    (["fetch", "bimodal", "--source", "local", "--seed", "-1"], "--seed"),
    (["fetch", "bimodal", "--steps", "0"], "--steps"),
    (["fetch", "bimodal", "--source", "remote"], "--source"),
    (["train-teacher", "--env", "bimodal", "--seed", "-3"], "--seed"),
    (["train-teacher", "--env", "bimodal", "--lr", "inf"], "--lr"),
    (["train-teacher", "--env", "bimodal", "--lr", "nan"], "--lr"),
    (["train-teacher", "--env", "bimodal", "--net", "huge"], "--net"),
    (["train-reward", "--env", "bimodal", "--batch-size", "0"], "--batch-size"),
    (["distill", "--env", "bimodal", "--reward-weight", "nan"], "--reward-weight"),
    (["distill", "--env", "bimodal", "--ctm-weight", "inf"], "--ctm-weight"),
    (["distill", "--env", "bimodal", "--dsm-weight", "-1"], "--dsm-weight"),
    (["distill", "--env", "bimodal", "--teacher-steps", "0"], "--teacher-steps"),
    (["distill", "--env", "bimodal", "--teacher-steps", "81"], "--teacher-steps"),
    (["rollout", "--env", "bimodal", "--seed", "-1"], "--seed"),
    (["rollout", "--env", "bimodal", "--episodes", "0"], "--episodes"),
    (["bench", "--env", "bimodal", "--seed", "-1"], "--seed"),
    (["bench", "--env", "bimodal", "--repeats", "0"], "--repeats"),
]


@pytest.mark.parametrize("args,option", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_a_one_line_usage_error_before_any_work(args, option, tmp_path, monkeypatch):
    """Every command refuses bad values up front: exit code 2, one line naming the option, and
    nothing written to the (empty) cache."""
    pytest.importorskip("ractd_bimodal")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert option in r.output and r.output.strip().count("\n") == 0 and "internal error" not in r.output, r.output
    assert not any(p.is_file() for p in tmp_path.rglob("*")), list(tmp_path.rglob("*"))


def test_cache_rm_touches_only_the_cache(tmp_path, monkeypatch):
    """`cache rm PATH` with a path outside the cache is refused and the file stays; a corrupted file
    outside the cache is not sent to `cache rm` by the error message."""
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path / "cache"))
    outside = tmp_path / "mine.safetensors"
    outside.write_text("garbage")
    r = runner.invoke(app, ["cache", "rm", str(outside)])
    assert r.exit_code == 2 and "not in the cache" in r.output and outside.exists()
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--model", str(outside), "--episodes", "1"])
    if "unknown task" not in r.output:  # with the bimodal plugin
        assert r.exit_code == 1 and f"delete {outside}" in r.output.replace("\n", "") and "cache rm" not in r.output


def test_usage_error_exit_2():
    r = runner.invoke(app, ["cache", "list", "--bogus"])
    assert r.exit_code == 2


@pytest.mark.parametrize("args,says", [(["envs", "--bogus"], "No such option: --bogus"), (["nosuch"], "No such command"),
                                       (["rollout", "--env", "bimodal", "--episodes", "abc"], "--episodes")])
def test_click_usage_errors_are_one_line(args, says):
    """Typer's own usage errors (unknown option or command, a value of the wrong type) are one line
    with the command's help to read, exit code 2: no boxed panel."""
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and says in r.output and r.output.strip().count("\n") == 0, r.output
    assert "--help" in r.output


def _entry_point(name: str, adapter, dist: str):
    class Dist:
        version = "0.0"

    Dist.name = dist

    class EP:
        def load(self):
            return adapter

    EP.name, EP.dist = name, Dist()
    return EP()


def test_adapter_missing_a_protocol_method_is_reported_at_load(fake_adapter):
    class NoSuccess(type(fake_adapter)):
        success = None

    p = registry._load_entry_point(_entry_point("nosuccess", NoSuccess(), "ractd-nosuccess"))
    assert p.adapter is None and "success()" in p.error


def test_bad_task_presets_are_reported_at_load(fake_adapter):
    """A task naming an unknown network or a misspelt preset key is caught when plugins load
    (`ractd envs` shows it), not as an internal error mid-training."""
    from dataclasses import replace

    for bad, words in (({"model_preset": "tiny"}, "model_preset 'tiny'"),
                       ({"presets": {"quick": {"teachr": 5}}}, "did you mean 'teacher'"),
                       ({"presets": {"quik": {}}}, "did you mean 'quick'"),
                       ({"presets": {"quick": {"net": "huge"}}}, "network 'huge'")):
        adapter = type(fake_adapter)()
        adapter.tasks = {k: replace(s, **bad) for k, s in fake_adapter.tasks.items()}
        p = registry._load_entry_point(_entry_point("bad", adapter, "ractd-bad"))
        assert p.adapter is None and words in p.error, p.error


def test_every_installed_tasks_presets_build(fake_adapter):
    """Each preset of every installed task resolves (the overrides validate) to a network that builds."""
    from ractd_cli.nets import make_denoiser_net
    from ractd_cli.presets import PRESETS
    from ractd_cli.train.common import TrainOptions

    registry.reset()
    for _, spec in registry.all_tasks().values():
        for name in PRESETS:
            net = TrainOptions(preset=name, device="cpu").net_preset(spec)
            if name != "paper":  # paper-size networks are too large to build in a unit test
                T, D = spec.x_shape
                make_denoiser_net(net, input_dim=D, global_cond_dim=spec.cond_dim, horizon=T)


def test_two_plugins_declaring_one_task_are_both_listed_and_the_name_refused(fake_adapter):
    registry.plugins()["twin"] = registry._load_entry_point(_entry_point("twin", type(fake_adapter)(), "ractd-twin"))
    clash = registry.collisions()
    assert set(clash) == set(fake_adapter.tasks) and any("ractd-twin" in w for w in clash["fake-easy"])
    with pytest.raises(UsageError, match="ractd-fake.*ractd-twin|ractd-twin.*ractd-fake"):
        registry.get_task("fake-easy")
    r = runner.invoke(app, ["envs", "--json"])
    assert r.exit_code == 0 and "fake-easy" in json.loads(r.stdout)["collisions"]
    r = runner.invoke(app, ["train-teacher", "--env", "fake-easy", "--preset", "tiny"])
    assert r.exit_code == 2 and "uninstall one" in r.output


def test_bimodal_paper_preset_builds_its_network():
    """`ractd train-teacher --env bimodal --preset paper` died with "unknown preset 'tiny'"."""
    registry.reset()
    tasks = registry.all_tasks()
    if "bimodal" not in tasks:
        pytest.skip("bimodal plugin not installed")
    from ractd_cli.train.common import TrainOptions

    assert TrainOptions(preset="paper", device="cpu").net_preset(tasks["bimodal"][1]) == "mlp"


def test_no_plugins_says_how_to_get_tasks(monkeypatch, tmp_path):
    """With no plugin installed, `ractd envs` says how to get tasks: this checkout's plugin folders
    when it runs from one, else where the plugins are distributed (a plain `pip install`)."""
    from ractd_cli import cli

    hint = cli.no_adapters_hint()
    assert "plugins" in hint and "\n" not in hint
    assert "pip install -e" in hint and "ractd-maze2d" in hint  # tests run from a checkout
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "ractd_cli" / "cli.py"))
    plain = cli.no_adapters_hint()
    assert "pip install ./plugins/ractd-maze2d" in plain and "this checkout" not in plain


def test_help_shows_the_choices_and_groups_long_commands():
    """`--help` lists each choice option's values (from one table, checked here against the constants
    the commands check with), no `<bool>` after a flag, and long commands' options in panels."""
    from ractd_cli import cli
    from ractd_cli.artifacts import KINDS
    from ractd_cli.bench import RUNTIMES
    from ractd_cli.data.fetch import SOURCES
    from ractd_cli.diffusion import DISTANCES
    from ractd_cli.evaluate import FOLLOWERS
    from ractd_cli.export import FORMATS
    from ractd_cli.layouts import WINDOWS
    from ractd_cli.planner import INIT_NOISES, STUDENT_SAMPLERS, TEACHER_SAMPLERS
    from ractd_cli.presets import PRESETS
    from ractd_cli.reproduce import WHAT
    from ractd_cli.resolve import PLANNERS
    from ractd_cli.train.common import KEEP
    from ractd_cli.train.distill import SAVED_WEIGHTS
    from ractd_cli.train.loop import PRECISIONS

    expected = {"--preset": tuple(PRESETS), "--precision": tuple(PRECISIONS), "--distance": DISTANCES, "--follow": FOLLOWERS,
                "--init-noise": INIT_NOISES, "--sampler": STUDENT_SAMPLERS + TEACHER_SAMPLERS, "--eval-sampler": TEACHER_SAMPLERS,
                "--planner": PLANNERS, "--source": SOURCES, "--format": FORMATS, "--runtime": RUNTIMES, "--weights": SAVED_WEIGHTS,
                "--windows": WINDOWS, "--kind": KINDS, "--keep": KEEP, "--what": WHAT}
    for opt, values in expected.items():
        assert set(cli.CHOICES[opt]) == set(values), opt
    r = runner.invoke(app, ["rollout", "--help"], env={"COLUMNS": "160"})
    assert r.exit_code == 0
    assert "[inverse|track|controller]" in r.output and "[unit|edm]" in r.output
    assert "<bool>" not in r.output and re.search(r"--help\s+-h\s+Show this message", r.output)  # click's own --help too
    for panel in ("Sampling", "Executing state plans (Maze2d)", "Episodes and scores", "Speed"):
        assert f"─ {panel} ─" in r.output, panel
    t = runner.invoke(app, ["train-teacher", "--help"], env={"COLUMNS": "160"})
    assert "[tiny|quick|paper]" in t.output and "[full|padded]" in t.output and "─ Training recipe ─" in t.output


def test_shell_completion_is_offered(monkeypatch):
    import typer.completion

    # `--show-completion` is a flag that detects the calling shell (shellingham), which finds none
    # under some process trees (a detached job, a CI runner): name bash for it.
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    r = runner.invoke(app, ["--show-completion"], prog_name="ractd")
    assert r.exit_code == 0 and "_ractd_completion" in r.output and "complete -o default" in r.output, r.output
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "160"})
    assert "--install-completion" in top.output and "<bool>" not in top.output


def test_fetch_takes_the_task_as_every_command_does(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    r = runner.invoke(app, ["fetch", "--env", "bimodal", "--source", "local", "--steps", "300", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["dataset_id"] == "ractd/bimodal/local-v0", r.output
    for args, says in (([], "name the task"), (["bimodal", "--env", "maze2d-umaze"], "two tasks given")):
        bad = runner.invoke(app, ["fetch", *args])
        assert bad.exit_code == 2 and says in bad.output, bad.output

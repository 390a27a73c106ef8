"""Which model "the student" is: `rollout` and `export` without --model take the newest student at
the task's default reward weight (as `bench` does), not simply the newest, and say which."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ractd_cli.cli import app

runner = CliRunner()


def _run(*args: str):
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), r.stderr


def test_the_default_student_is_the_newest_at_the_tasks_reward_weight(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    tiny = ("--env", "bimodal", "--preset", "tiny")
    _run("fetch", "bimodal", "--source", "local", "--steps", "600")
    _run("train-teacher", *tiny, "--steps", "3")
    _run("train-reward", *tiny, "--steps", "3")
    ctd_first, _ = _run("distill", *tiny, "--steps", "2", "--reward-weight", "0")
    # only a CTD student: it is the one, and the line says so
    doc, err = _run("rollout", "--env", "bimodal", "--episodes", "1")
    assert doc["model_id"] == ctd_first["id"] and f"model: student {ctd_first['id'][:8]}" in err and "CTD student" in err
    ractd, _ = _run("distill", *tiny, "--steps", "2")  # the task's reward weight (bimodal: 1)
    other, _ = _run("distill", *tiny, "--steps", "2", "--reward-weight", "0.5")
    ctd, _ = _run("distill", *tiny, "--steps", "3", "--reward-weight", "0")  # the newest of all
    doc, err = _run("rollout", "--env", "bimodal", "--episodes", "1")
    assert doc["model_id"] == ractd["id"] not in (other["id"], ctd["id"])
    assert f"model: student {ractd['id'][:8]} (reward weight 1, the task's default reward weight" in err
    out = tmp_path / "plan.pt"
    doc, err = _run("export", "--env", "bimodal", "--format", "torchscript", "-o", str(out))
    assert doc["artifact_id"] == ractd["id"] and f"model: student {ractd['id'][:8]}" in err
    # a bad choice is refused before any model is chosen
    for args in (["rollout", "--env", "bimodal", "--sampler", "foo"], ["export", "--env", "bimodal", "--format", "foo", "-o", str(out)]):
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2 and "(choose from" in bad.output and "model: student" not in bad.output, bad.output
    # an explicit --model is taken as given, with no line
    doc, err = _run("rollout", "--env", "bimodal", "--episodes", "1", "--model", ctd["id"])
    assert doc["model_id"] == ctd["id"] and "model: student" not in err


def test_cache_list_tells_models_apart(tmp_path, monkeypatch):
    """`cache list` shows each model's reward weight, preset, steps and last evaluation; a task or
    kind it does not know is a usage error, not an empty table."""
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    tiny = ("--env", "bimodal", "--preset", "tiny")
    _run("fetch", "bimodal", "--source", "local", "--steps", "600")
    teacher, _ = _run("train-teacher", *tiny, "--steps", "3")
    reward, _ = _run("train-reward", *tiny, "--steps", "4")
    student, _ = _run("distill", *tiny, "--steps", "2", "--reward-weight", "0.5", "--eval-every", "2", "--eval-episodes", "2")
    rows = {r["id"]: r for r in _run("cache", "list")[0]["artifacts"]}
    s, t, r = rows[student["id"]], rows[teacher["id"]], rows[reward["id"]]
    assert (s["kind"], s["reward_weight"], s["preset"], s["steps"]) == ("student", 0.5, "tiny", 2)
    assert s["evaluation"]["step"] == 2 and s["evaluation"]["score_mean"] == student["eval_curve"][-1]["score_mean"]
    assert (t["reward_weight"], t["steps"], t["evaluation"]) == (None, 3, None)
    assert r["steps"] == 4 and r["evaluation"]["val_r2"] == reward["validation"]["val_r2"]
    table = runner.invoke(app, ["cache", "list"])
    assert table.exit_code == 0 and "weight" in table.stderr and "R^2" in table.stderr
    # the model card: provenance both ways, the recipe, the curve
    card, _ = _run("cache", "show", student["id"][:8])
    assert card["id"] == student["id"] and card["parents"] == [{"id": teacher["id"], "kind": "teacher"}, {"id": reward["id"], "kind": "reward"}]
    assert card["config"]["train"]["steps"] == 2 and card["eval_curve"][-1]["step"] == 2 and card["reward_weight"] == 0.5
    assert {"id": student["id"], "kind": "student"} in _run("cache", "show", teacher["id"])[0]["children"]
    shown = runner.invoke(app, ["cache", "show", student["id"]])
    assert shown.exit_code == 0 and "reward weight sigma 0.5" in shown.stderr  # sigma of eq. 9, named as such
    shown = runner.invoke(app, ["cache", "show", reward["id"]])
    assert shown.exit_code == 0 and f"made from it: student {student['id']}" in shown.stderr and "held-out fit: R^2" in shown.stderr
    missing = runner.invoke(app, ["cache", "show", "zzzz"])
    assert missing.exit_code == 1 and "ractd cache list" in missing.output
    for args, says in ((["--env", "bimdal"], "did you mean 'bimodal'"), (["--kind", "studnet"], "--kind")):
        bad = runner.invoke(app, ["cache", "list", *args])
        assert bad.exit_code == 2 and says in bad.output, bad.output


def test_the_cache_shows_and_removes_what_is_not_a_model(tmp_path, monkeypatch):
    """`cache list` names the datasets, event files and checkpoints beside the models; `cache rm all`
    says what it kept; `cache rm datasets` (or runs, checkpoints, sac) deletes that folder."""
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    _run("fetch", "bimodal", "--source", "local", "--steps", "600")
    _run("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "3")
    other = _run("cache", "list")[0]["other"]
    assert other["datasets"]["files"] > 0 and other["datasets"]["size_bytes"] > 0 and "checkpoints" not in other
    r = runner.invoke(app, ["cache", "rm", "all"])
    assert r.exit_code == 0 and "removed 1 artifact(s)" in r.stderr and "kept: datasets/" in r.stderr, r.output
    gone = _run("cache", "rm", "datasets")[0]
    assert gone["removed"] == [str(tmp_path / "datasets")] and not (tmp_path / "datasets").exists()
    assert "datasets" not in _run("cache", "list")[0]["other"]
    assert _run("cache", "rm", "sac")[0]["removed"] == []  # nothing there: nothing removed, no error


def test_a_named_model_is_found_by_its_name(tmp_path, monkeypatch):
    """`--name` labels a model outside its content id; --model/--teacher take the name (the newest of
    it); a name that reads as an id or a keyword is refused."""
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    tiny = ("--env", "bimodal", "--preset", "tiny")
    _run("fetch", "bimodal", "--source", "local", "--steps", "600")
    plain, _ = _run("train-teacher", *tiny, "--steps", "3")
    named, err = _run("train-teacher", *tiny, "--steps", "4", "--name", "base-line")
    assert named["name"] == "base-line" and plain["name"] is None
    same, _ = _run("train-teacher", *tiny, "--steps", "3", "--name", "again")
    assert same["id"] == plain["id"]  # the name is outside the content id
    _run("train-reward", *tiny, "--steps", "3")
    student, _ = _run("distill", *tiny, "--steps", "2", "--teacher", "base-line", "--name", "first-try")
    assert student["parents"][0] == named["id"]
    doc, _ = _run("rollout", "--env", "bimodal", "--model", "first-try", "--episodes", "1")
    assert doc["model_id"] == student["id"]
    rows = {r["id"]: r for r in _run("cache", "list")[0]["artifacts"]}
    assert rows[student["id"]]["name"] == "first-try" and _run("cache", "show", "first-try")[0]["id"] == student["id"]
    for bad in ("latest", "abc123", "9lives", "a b"):
        r = runner.invoke(app, ["train-teacher", *tiny, "--steps", "3", "--name", bad])
        assert r.exit_code == 2 and "--name" in r.output, (bad, r.output)

"""`--keep best`: the trainers save the weights of their best-scoring evaluation (the RACTD authors'
model selection) and say so; `--keep last` (the default) saves the last step's; `--keep both` saves
the two from one run."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from ractd_cli.artifacts import cpu_name, load_artifact
from ractd_cli.cli import app

runner = CliRunner()


@pytest.fixture
def bimodal(tmp_path, monkeypatch, ractd_ok):
    """A cache with bimodal data, a teacher and a reward model; the ``ractd_ok`` runner."""
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ractd_ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    ractd_ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "20")
    ractd_ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "5")
    return ractd_ok


def test_keep_best_saves_the_best_evaluated_weights(bimodal):
    _json = bimodal
    common = ("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "8", "--eval-every", "2", "--eval-episodes", "3")
    best = _json(*common, "--keep", "best")
    curve = best["eval_curve"]
    top = max(p["score_mean"] for p in curve)
    first_top = next(p for p in curve if p["score_mean"] == top)
    sel = load_artifact(best["id"]).config["selection"]
    assert (sel["keep"], sel["step"], sel["score_mean"]) == ("best", first_top["step"], top) and "optimistic" in sel["protocol"]
    assert best["selection"] == sel
    # the saved weights are the ones that scored it: the same episodes give the same score
    again = _json("rollout", "--env", "bimodal", "--model", best["id"], "--episodes", "3", "--seed", "0")
    assert again["score_mean"] == pytest.approx(top, abs=1e-9)
    # the default keeps the last step's weights, with no selection
    last = _json(*common)
    assert "selection" not in load_artifact(last["id"]).config
    assert (last["id"] == best["id"]) == (first_top["step"] == 8 and curve[-1]["score_mean"] == top)
    # cache list names the saved evaluation
    row = next(r for r in _json("cache", "list")["artifacts"] if r["id"] == best["id"])
    assert row["evaluation"] == {"step": sel["step"], "score_mean": top, "score_stderr": None, "selected": True}


def test_keep_both_saves_the_last_and_the_selected_weights_of_one_run(bimodal):
    _json = bimodal
    common = ("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "8", "--eval-every", "2", "--eval-episodes", "3")
    last_doc, best_doc = _json(*common, "--keep", "both")["artifacts"]
    last, best = load_artifact(last_doc["id"]), load_artifact(best_doc["id"])
    # `latest` (and a --name) means the selected one, saved second, as after `--keep best`
    assert load_artifact("latest", kind="student", task="bimodal").id == best.id
    # the last weights are exactly those of a `--keep last` run with the same evaluations
    assert last.id == _json(*common, "--keep", "last")["id"] and "selection" not in last.config
    # the selected ones are `--keep best`'s weights, their selection naming the twin
    alone = load_artifact(_json(*common, "--keep", "best")["id"])
    assert best.config["selection"] == {**alone.config["selection"], "last_weights": last.id}
    assert best.tensors.keys() == alone.tensors.keys()
    assert all(best.tensors[k].equal(alone.tensors[k]) for k in best.tensors)
    assert best_doc["selection"]["last_weights"] == last.id
    card = runner.invoke(app, ["cache", "show", best.id])
    assert card.exit_code == 0 and f"the same run's last weights: {last.id}" in card.output
    assert cpu_name() in " ".join(card.output.split())  # the card says which CPU trained it
    # the card sums up the curve: every evaluation once, its mean and spread, best and last points
    shown = json.loads(runner.invoke(app, ["cache", "show", last.id, "--json"]).stdout)
    scores = [c["score_mean"] for c in shown["eval_curve"]]
    summary = shown["eval_summary"]
    assert summary["evaluations"] == len(scores) == 4 and abs(summary["mean"] - sum(scores) / 4) < 1e-9
    assert min(scores) <= summary["mean"] <= max(scores) == summary["best"] and summary["last"] == scores[-1]
    assert summary["best"] == best.config["selection"]["score_mean"] and summary["best_step"] == best.config["selection"]["step"]
    assert abs(summary["stderr"] - statistics.stdev(scores) / 2) < 1e-9
    assert "evaluations: 4, mean" in runner.invoke(app, ["cache", "show", last.id]).output


def test_teacher_keep_best_records_its_selection(bimodal):
    doc = bimodal("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "6", "--eval-every", "3", "--eval-episodes", "2",
                "--eval-nfe", "2", "--keep", "best")
    teacher = load_artifact(doc["id"])
    assert teacher.config["selection"]["step"] in (3, 6)
    both = bimodal("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "6", "--eval-every", "3", "--eval-episodes", "2",
                   "--eval-nfe", "2", "--keep", "both")["artifacts"]
    assert [d["kind"] for d in both] == ["teacher", "teacher"] and "selection" not in both[0]
    assert both[1]["selection"] == {**teacher.config["selection"], "last_weights": both[0]["id"]}


@pytest.mark.parametrize("args, says", [
    (["--keep", "best"], "give --eval-every N as well"),
    (["--keep", "both"], "give --eval-every N as well"),
    (["--keep", "most", "--eval-every", "2"], "unknown --keep 'most'"),
])
def test_keep_needs_evaluations(bimodal, args, says):
    for cmd in ("distill", "train-teacher"):
        r = runner.invoke(app, [cmd, "--env", "bimodal", "--preset", "tiny", "--steps", "4", *args])
        assert r.exit_code == 2 and says in r.output, r.output

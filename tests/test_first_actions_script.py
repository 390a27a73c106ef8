"""scripts/first_actions.py: a planner's first actions beside the data's, on the toy task."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("first_actions", ROOT / "scripts" / "first_actions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_actions_of_a_teacher_and_its_student(tmp_path, monkeypatch, ractd_ok, capsys):
    pytest.importorskip("ractd_bimodal")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ractd_ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    teacher = ractd_ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "60")["id"]
    student = ractd_ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "20", "--reward-weight", "0")["id"]
    fa = _script()

    def run(*args: str) -> dict:
        assert fa.main(["bimodal", teacher, student, "--sampler", "euler", "--nfe", "4", "--states", "32", *args]) == 0
        return json.loads(capsys.readouterr().out)

    doc = run("--draws", "8")
    data, t_row, s_row = doc["rows"]
    assert (t_row["model"], t_row["sampler"], t_row["nfe"]) == (teacher, "euler", 4) and s_row["sampler"] == "onestep"
    for row in (t_row, s_row):
        assert all(math.isfinite(row[k]) and row[k] >= 0 for k in ("abs_mean", "saturated", "mse_to_data", "spread"))
        assert row["saturated"] <= 1
    assert t_row["spread"] > 0  # the teacher samples: its plans differ between draws

    # the data row is the dataset's own actions at the drawn states
    from ractd_cli.registry import get_task

    past, a_data = fa.data_states(*get_task("bimodal"), 32, 0)
    assert past.shape == (32, 1, 2) and data["abs_mean"] == pytest.approx(float(np.abs(a_data).mean()))
    assert run("--draws", "8") == doc  # seeded: the same numbers again
    one = run("--draws", "1")
    assert one["rows"][1]["spread"] == 0 and one["rows"][0] == data


def test_a_task_that_plans_states_is_refused_in_one_line(capsys):
    pytest.importorskip("ractd_maze2d")
    assert _script().main(["maze2d-umaze", "anything"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: maze2d-umaze plans states, not actions; this script compares first actions (MuJoCo tasks)"]

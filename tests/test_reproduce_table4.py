"""`ractd reproduce TASK --what table4` (`make table4`): the paper's Table 4 chain on the toy task, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ractd_cli.artifacts import read_header

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _table4(tmp_path: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RACTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ractd_cli", "reproduce", "bimodal", "--what", "table4", "--episodes", "4", "--out", str(tmp_path / "out"),
         *args, "--train-args", "--preset tiny --steps 100"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )


def test_table4_trains_both_teachers_and_four_students_then_reuses_them(tmp_path, _tmp_cache):
    first = _table4(tmp_path, _tmp_cache)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stderr.count("$ ractd train-teacher") == 2 and "--teacher-reward-weight 1" in first.stderr
    assert first.stderr.count("$ ractd distill") == 4 and first.stderr.count("$ ractd rollout") == 4
    doc = json.loads((tmp_path / "out" / "table4-bimodal.json").read_text())
    cells = {(c["teacher"], c["student"]): c for c in doc["cells"]}
    assert set(cells) == {(t, s) for t in ("unconditioned", "reward-aware") for s in ("ctd", "ractd")}
    plain, aware = cells["unconditioned", "ctd"]["teacher_id"], cells["reward-aware", "ctd"]["teacher_id"]
    assert plain != aware and cells["reward-aware", "ractd"]["teacher_id"] == aware
    teacher_meta = read_header(next((_tmp_cache / "models").glob(f"teacher-bimodal-{aware}.safetensors")))
    assert teacher_meta["parents"] == [doc["reward"]] and teacher_meta["config"]["reward_weight"] == doc["teacher_weight"] == 1.0
    for (_, student), c in cells.items():  # each cell a different student of the right teacher and weight
        meta = read_header(next((_tmp_cache / "models").glob(f"student-bimodal-{c['student_id']}.safetensors")))
        assert meta["parents"][0] == c["teacher_id"]
        assert meta["config"]["reward_weight"] == (0.0 if student == "ctd" else 1.0)
        assert c["episodes"] == 4 and 0 <= c["score_mean"] <= 100
    assert len({c["student_id"] for c in cells.values()}) == 4
    assert "| unconditioned student (CTD) |" in first.stdout and "| reward-aware student (RACTD) |" in first.stdout
    again = _table4(tmp_path, _tmp_cache)  # everything cached: rollouts only, the same scores
    assert again.returncode == 0, again.stderr[-2000:]
    assert "$ ractd distill" not in again.stderr and "$ ractd train-" not in again.stderr
    assert json.loads((tmp_path / "out" / "table4-bimodal.json").read_text())["cells"] == doc["cells"]


def test_table4_refuses_a_zero_reward_aware_weight(tmp_path, _tmp_cache):
    out = _table4(tmp_path, _tmp_cache, "--teacher-weight", "0")
    assert out.returncode != 0 and "must be > 0" in out.stderr and "Traceback" not in out.stderr


def test_reproduce_refuses_an_unknown_task_or_part_in_one_line(tmp_path, _tmp_cache):
    for args, words in ((["reproduce", "bimdal"], "unknown task"), (["reproduce", "bimodal", "--what", "tabel4"], "did you mean 'table4'")):
        out = subprocess.run([sys.executable, "-m", "ractd_cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                             env={**os.environ, "RACTD_CACHE_DIR": str(_tmp_cache)})
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert "$ ractd" not in out.stderr  # nothing ran

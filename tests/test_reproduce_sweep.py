"""`ractd reproduce TASK --what sweep` (`make sweep`): the paper's Figure 4 chain on the toy task, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _sweep(tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RACTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ractd_cli", "reproduce", "bimodal", "--what", "sweep", "--reward-weights", "0 1", "--eval-every", "50",
         "--eval-episodes", "4", "--out", str(tmp_path / "out"), "--train-args", "--preset tiny --steps 100"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )


def test_sweep_trains_one_student_per_weight_plots_and_reuses_them(tmp_path, _tmp_cache):
    first = _sweep(tmp_path, _tmp_cache)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stderr.count("$ ractd distill") == 2
    doc = json.loads((tmp_path / "out" / "sweep-bimodal.json").read_text())
    assert set(doc["curves"]) == {"0", "1"}
    for curve in doc["curves"].values():  # scored at step 50 and at the end
        assert [p["step"] for p in curve] == [50, 100]
        assert all(0 <= p["success_rate"] <= 1 for p in curve)
    assert doc["eval_episodes"] == 4 and doc["eval_every"] == 50
    assert (tmp_path / "out" / "sweep-bimodal.png").stat().st_size > 0
    assert "| 0 |" in first.stdout and "| 1 |" in first.stdout
    again = _sweep(tmp_path, _tmp_cache)  # everything cached: no training, the same curves
    assert again.returncode == 0, again.stderr[-2000:]
    assert "$ ractd distill" not in again.stderr and "$ ractd train-" not in again.stderr
    assert json.loads((tmp_path / "out" / "sweep-bimodal.json").read_text())["curves"] == doc["curves"]

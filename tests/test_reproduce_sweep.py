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
    # each curve summed up: its evaluations' mean, best and last point
    for w, curve in doc["curves"].items():
        scores = [p["score_mean"] for p in curve]
        summary = doc["summaries"][w]
        assert summary["evaluations"] == 2 and abs(summary["mean"] - sum(scores) / 2) < 1e-9 and summary["best"] == max(scores)
        assert f"| {w} | 2 | {summary['mean']:.1f} ± {summary['stderr']:.1f} | {summary['best']:.1f} ({summary['best_step']}) |" in first.stdout
    again = _sweep(tmp_path, _tmp_cache)  # everything cached: no training, the same curves
    assert again.returncode == 0, again.stderr[-2000:]
    assert "$ ractd distill" not in again.stderr and "$ ractd train-" not in again.stderr
    assert json.loads((tmp_path / "out" / "sweep-bimodal.json").read_text())["curves"] == doc["curves"]


def test_sweep_markdown_sums_up_long_curves_without_a_column_per_step():
    from ractd_cli.reproduce import SWEEP_STEP_COLUMNS, sweep_markdown

    long = [{"step": 50 * (i + 1), "score_mean": float(i % 5), "score_stderr": 0.0} for i in range(40)]
    text = sweep_markdown({"1": long})
    assert "| 1 | 40 | 2.0 ± 0.2 | 4.0 (250) | 4.0 (2000) |" in text and "step 50" not in text
    short = long[:SWEEP_STEP_COLUMNS]
    assert "| reward weight | step 50 |" in sweep_markdown({"1": short})

"""bench's means across distill seeds (`reproduce --seeds N`): which rows are pooled, and the arithmetic."""

from __future__ import annotations

import math

import numpy as np

from ractd_cli.bench import across_seeds, table


def _row(key: str, sigma: float | None, seed: int | None, score: float | None, **more) -> dict:
    row = {"key": key, "method": key, "model_id": f"{key}-{seed}", "sampler": "onestep" if key != "teacher-heun" else "heun",
           "reward_weight": sigma, "score_mean": score, "score_stderr": 0.5, "episodes": 10, "nfe": 1, "nfe_paper": 1,
           "ms_per_action": 1.0, "ms_min": 1.0, "ms_max": 1.0, "speedup_vs_teacher": 1.0, **more}
    if seed is not None:
        row["distill_seed"] = seed
    return row


def test_each_kind_is_pooled_over_its_seeds_and_ractd_minus_ctd_combines_both_errors():
    rows = [_row("teacher-heun", None, None, 50.0),
            _row("ctd-1", 0.0, 0, 20.0), _row("ractd-1", 1.0, 0, 48.0), _row("ractd-2", 1.0, 0, 40.0, sampler="multistep"),
            _row("also-a", 0.0, 1, 28.0), _row("also-b", 1.0, 1, 16.0), _row("also-c", 0.0, 2, 24.0), _row("also-d", 1.0, 2, 37.0),
            _row("also-e", 1.0, 0, 99.0, selection={"step": 5}),  # selected on online score: not a seed of the last weights
            _row("also-f", 0.5, 0, 10.0)]  # one seed of another weight: nothing to pool
    groups = across_seeds(rows)
    ctd, ractd, diff = groups
    assert ctd["seeds"] == [0, 1, 2] and ctd["scores"] == [20.0, 28.0, 24.0] and math.isclose(ctd["score_mean"], 24.0)
    assert math.isclose(ctd["score_stderr"], np.std([20, 28, 24], ddof=1) / math.sqrt(3))
    assert ractd["scores"] == [48.0, 16.0, 37.0] and ractd["model_ids"] == ["ractd-1-0", "also-b-1", "also-d-2"]
    assert diff["difference"] and math.isclose(diff["score_mean"], ractd["score_mean"] - 24.0)
    assert math.isclose(diff["score_stderr"], math.hypot(ractd["score_stderr"], ctd["score_stderr"]))
    assert "mean over distill seeds 0/1/2" in ractd["method"] and "sigma 1" in diff["method"]
    # the table prints them after the rows, before the data's own
    doc = {"rows": rows, "episodes": 10, "score_scale": "d4rl", "across_seeds": groups,
           "data": {"episodes": 5, "mean": 1.0, "mean_stderr": 0.1, "top_fraction": 0.1, "top_mean": 2.0, "top_stderr": 0.0, "max": 3.0}}
    _, body = table(doc)
    labels = [cells[0] for cells in body]
    assert labels.index(diff["method"]) == labels.index(ctd["method"]) + 2 < labels.index("data: its best episode")
    assert body[labels.index(ctd["method"])][6] == f"24.0 ± {ctd['score_stderr']:.1f} (across seeds)"
    assert body[labels.index(diff["method"])][6].startswith("+9.7 ± ")


def test_one_seed_or_the_same_student_twice_pools_nothing():
    assert across_seeds([_row("ctd-1", 0.0, 0, 20.0), _row("ractd-1", 1.0, 0, 30.0)]) == []
    same = across_seeds([_row("ctd-1", 0.0, 0, 20.0), _row("also-a", 0.0, 0, 20.0), _row("ractd-1", 1.0, 3, 30.0), _row("also-b", 1.0, 4, 34.0)])
    assert [g["seeds"] for g in same] == [[3, 4]]  # no CTD pool: no difference either


def test_students_selected_on_online_score_are_pooled_apart_from_the_last_weights():
    sel = {"keep": "best", "step": 5}
    rows = [_row("ctd-1", 0.0, 0, 20.0), _row("ractd-1", 1.0, 0, 48.0), _row("also-a", 0.0, 1, 28.0), _row("also-b", 1.0, 1, 16.0),
            _row("also-c", 0.0, 0, 30.0, selection=sel), _row("also-d", 1.0, 0, 50.0, selection=sel),
            _row("also-e", 0.0, 1, 34.0, selection=sel), _row("also-f", 1.0, 1, 36.0, selection=sel)]
    ctd, ractd, diff, s_ctd, s_ractd, s_diff = across_seeds(rows)
    assert (ctd["scores"], ractd["scores"]) == ([20.0, 28.0], [48.0, 16.0]) and not any(g.get("selected") for g in (ctd, ractd, diff))
    assert (s_ctd["scores"], s_ractd["scores"]) == ([30.0, 34.0], [50.0, 36.0]) and all(g["selected"] for g in (s_ctd, s_ractd, s_diff))
    assert math.isclose(s_diff["score_mean"], 43.0 - 32.0) and "selected on online score" in s_diff["method"]
    assert math.isclose(diff["score_mean"], 32.0 - 24.0)
    # selected students of one seed pool nothing, and never join the last weights' pool
    assert [g.get("selected", False) for g in across_seeds(rows[:4] + rows[4:6])] == [False, False, False]

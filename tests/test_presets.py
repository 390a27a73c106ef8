"""Training presets: the ``paper`` preset's per-kind recipe (the RACTD authors' configs), task
overrides merged per kind, bad values refused, and the EMA warm-ups."""

from __future__ import annotations

import pytest
import torch

from ractd_cli.presets import PAPER_KINDS, PRESETS, Preset
from ractd_cli.train.loop import TrainConfig, _ema_with_warmup, ema_decay_at

STEPS = dict(teacher=1, reward=1, student=1, proposer=1, **{"inverse-dynamics": 1})


def test_paper_preset_gives_each_model_its_own_recipe():
    paper = PRESETS["paper"]
    assert (paper.betas, paper.ema_power, paper.ema_decay) == ((0.95, 0.999), 0.75, 0.9999)
    for kind, values in PAPER_KINDS.items():
        for key, v in values.items():
            assert paper.of(kind, key) == v
    assert (paper.of("inverse-dynamics", "batch_size"), paper.of("inverse-dynamics", "lr")) == (paper.batch_size, paper.lr)
    assert paper.of("inverse-dynamics", "weight_decay") is None  # the loop's default
    quick = PRESETS["quick"]
    assert (quick.betas, quick.ema_power, quick.kinds) == ((0.9, 0.999), None, {})


def test_task_overrides_merge_per_kind():
    p = PRESETS["paper"].override({"kinds": {"student": {"batch_size": 320}}, "teacher": 7})
    assert p.of("student", "batch_size") == 320
    assert p.of("student", "lr") == PAPER_KINDS["student"]["lr"]  # the rest of the student's recipe stays
    assert p.of("teacher", "batch_size") == PAPER_KINDS["teacher"]["batch_size"] and p.steps["teacher"] == 7


@pytest.mark.parametrize("kinds, match", [
    ({"studnt": {"lr": 1e-4}}, "did you mean 'student'"),
    ({"student": {"betas": 1}}, "unknown preset 'x': kinds"),
    ({"student": {"batch_size": 0}}, "positive integer"),
    ({"student": {"lr": -1.0}}, "positive number"),
    ({"student": {"weight_decay": -1e-3}}, ">= 0"),
])
def test_bad_per_kind_values_are_refused(kinds, match):
    with pytest.raises(ValueError, match=match):
        Preset("x", None, STEPS, kinds=kinds)


def test_default_recipes_record_nothing_new():
    """Artifacts of the tiny and quick presets keep the ids they had: no betas or EMA power recorded."""
    record = TrainConfig(steps=10).record()
    assert "betas" not in record and "ema_power" not in record and "precision" not in record
    taken = TrainConfig(steps=10, betas=(0.95, 0.999), ema_power=0.75).record()
    assert taken["betas"] == [0.95, 0.999] and taken["ema_power"] == 0.75


def test_ema_warmups_rise_to_their_cap():
    for power in (None, 0.75):
        d = [ema_decay_at(n, 0.9999, power) for n in range(0, 200_000, 997)]
        assert all(0 <= a <= b <= 0.9999 for a, b in zip(d, d[1:]))
        assert d[-1] == pytest.approx(0.9999, abs=2e-4)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)  # (1+0)/(10+0)
    assert ema_decay_at(0, 0.9999, 0.75) == 0.0  # 1 - 1^-p: the first update copies the weights
    assert ema_decay_at(15, 0.9999, 0.75) == pytest.approx(1 - 16 ** -0.75)


def test_ema_update_follows_its_decay():
    """One update from n = 3 moves the average by (1 - decay_3) of the gap, for both warm-ups."""
    for power in (None, 0.75):
        ema, new = [torch.zeros(3)], [torch.ones(3)]
        _ema_with_warmup(0.9999, power)(ema, new, torch.tensor(3))
        torch.testing.assert_close(ema[0], torch.full((3,), 1 - ema_decay_at(3, 0.9999, power)))

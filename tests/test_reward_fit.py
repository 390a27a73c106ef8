"""R_psi's held-out fit: episodes split whole, the fit measure, and `train-reward` reporting it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ractd_cli.cli import app
from ractd_cli.train.data import Source, held_out_episodes
from ractd_cli.train.reward import fit_on

runner = CliRunner()


def test_held_out_episodes_are_whole_disjoint_and_seeded():
    episode = np.repeat(np.arange(40), np.random.default_rng(0).integers(1, 30, 40))
    train, val = held_out_episodes(episode, 0.1, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(len(episode)))  # every row, once
    assert not set(episode[train.numpy()]) & set(episode[val.numpy()])  # an episode is on one side only
    assert len(set(episode[val.numpy()])) == 4  # a tenth of 40 episodes
    again, other = held_out_episodes(episode, 0.1, seed=3)[1], held_out_episodes(episode, 0.1, seed=4)[1]
    assert torch.equal(val, again) and not torch.equal(val, other)


@pytest.mark.parametrize("episodes, fraction, held", [(1, 0.1, 0), (2, 0.1, 1), (10, 0.0, 0), (3, 0.9, 2)])
def test_held_out_episodes_edges(episodes, fraction, held):
    """At least one episode held out when any is asked for, never all of them, none from one episode."""
    episode = np.repeat(np.arange(episodes), 5)
    train, val = held_out_episodes(episode, fraction, seed=0)
    assert len(set(episode[val.numpy()])) == held and len(train) > 0


def test_fit_on_is_one_for_an_exact_model_and_zero_for_the_mean():
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0))
    rtg = x @ torch.tensor([0.5, -1.0, 0.25])
    source = Source(1000, lambda idx: {"input": x[idx], "rtg": rtg[idx]})
    exact = torch.nn.Linear(3, 1, bias=False)
    exact.weight.data = torch.tensor([[0.5, -1.0, 0.25]])
    mean = torch.nn.Linear(3, 1)
    mean.weight.data.zero_()
    mean.bias.data.fill_(float(rtg.double().mean()))
    as_r = lambda lin: torch.nn.Sequential(lin, torch.nn.Flatten(0))  # noqa: E731  (B, 1) -> (B,)
    assert fit_on(as_r(exact), source, batch=128)["r2"] == pytest.approx(1.0, abs=1e-6)
    fit = fit_on(as_r(mean), source, batch=300)  # batches that do not divide the rows
    assert fit["r2"] == pytest.approx(0.0, abs=1e-6)
    assert fit["mse"] == pytest.approx(float(rtg.double().var(unbiased=False)), rel=1e-5)


@pytest.mark.slow
def test_train_reward_reports_its_held_out_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    assert runner.invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "3000"]).exit_code == 0
    r = runner.invoke(app, ["train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "400", "--eval-every", "200", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    val = doc["validation"]
    assert val["episodes"] >= 1 and val["rows"] > 0
    assert [p["step"] for p in doc["fit_curve"]] == [200, 400]
    assert doc["fit_curve"][-1]["val_r2"] == val["val_r2"] == doc["losses"]["val_r2"]
    assert val["val_r2"] > 0.5, val  # bimodal's return-to-go is learnable: goal and distance
    # held out by episode: fitting on everything measures nothing
    r = runner.invoke(app, ["train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "50", "--val-fraction", "0", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["validation"] == {"episodes": 0, "rows": 0}
    r = runner.invoke(app, ["train-reward", "--env", "bimodal", "--preset", "tiny", "--val-fraction", "1"])
    assert r.exit_code == 2 and "--val-fraction must be in [0, 1)" in r.output

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


def test_a_chunk_reading_r_psi_scores_every_planned_action_and_the_default_only_the_first():
    """eq. 8 reads (s_n, a_hat_n): its gradient reaches the first planned action only; the
    ``state_action_chunk`` reading (an option) reads every action of the chunk, so each gets one."""
    from ractd_cli.adapters import TaskSpec

    spec = TaskSpec(name="toy", env_id="Toy-v0", obs_dim=3, act_dim=2, planning="chunk", horizon=4, history=2)
    layout = spec.layout
    assert layout.reward_input_dim(spec) == 3 + 2 and layout.reward_input_dim(spec, "state_action_chunk") == 3 + 4 * 2
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(5, 2 * 3, generator=gen)
    for reads, reached in ((None, [True, False, False, False]), ("state_action_chunk", [True] * 4)):
        net = torch.nn.Sequential(torch.nn.Linear(layout.reward_input_dim(spec, reads), 1), torch.nn.Flatten(0))
        x0_hat = torch.randn(5, 4, 2, generator=gen, requires_grad=True)
        r = layout.reward(spec, net, reads)(x0_hat, cond)
        assert r.shape == (5,)
        r.sum().backward()
        assert [bool(x0_hat.grad[:, k].abs().sum() > 0) for k in range(4)] == reached
    # the state it reads is the last of the history, s_n, whatever the reading
    net = torch.nn.Sequential(torch.nn.Linear(3 + 8, 1, bias=False), torch.nn.Flatten(0))
    x0_hat = torch.randn(5, 4, 2, generator=gen)
    expected = net(torch.cat([cond[:, 3:], x0_hat.flatten(1)], dim=-1))
    assert torch.equal(layout.reward(spec, net, "state_action_chunk")(x0_hat, cond), expected)
    with pytest.raises(ValueError, match="state_action or state_action_chunk"):
        layout.reads(spec, "state_goal")
    with pytest.raises(ValueError, match="reads state_goal, not 'state_action_chunk'"):
        TaskSpec(name="p", env_id="P-v0", obs_dim=2, act_dim=2, planning="states", horizon=4, goal_dim=2, reward_input="state_action_chunk")


def test_chunk_reading_rows_hold_the_window_s_actions_and_the_same_return_to_go():
    """Each R_psi row reading the chunk is [s_n, the diffusion window's actions]: the same actions the
    teacher plans at that window, and the same target as the first-action reading."""
    import dataclasses

    from ractd_cli.data import Episode, make_windows
    from ractd_cli.registry import get_task
    from ractd_cli.train.data import build_task_data

    spec = get_task("bimodal")[1]
    rng = np.random.default_rng(0)
    episodes = [Episode(states=rng.normal(size=(n + 1, spec.obs_dim)).astype(np.float32),
                        actions=rng.uniform(-1, 1, size=(n, spec.act_dim)).astype(np.float32),
                        rewards=rng.normal(size=n).astype(np.float32), terminations=np.zeros(n, bool),
                        truncations=np.r_[np.zeros(n - 1, bool), True], goals=None, id=i) for i, n in enumerate((9, 30, 17))]
    first = build_task_data(spec, make_windows(episodes, spec), "toy")
    chunk_spec = dataclasses.replace(spec, reward_input="state_action_chunk")
    chunk = build_task_data(chunk_spec, make_windows(episodes, chunk_spec), "toy")
    assert (first.reward_input, chunk.reward_input) == ("state_action", "state_action_chunk")
    rows = torch.arange(len(chunk.reward))
    a, b = first.reward.gather(rows), chunk.reward.gather(rows)
    assert b["input"].shape == (len(rows), spec.obs_dim + spec.horizon * spec.act_dim)
    assert torch.equal(a["rtg"], b["rtg"]) and torch.equal(a["input"], b["input"][:, : spec.obs_dim + spec.act_dim])
    full = chunk.diffusion_rows[:5]
    x = chunk.diffusion.gather(torch.arange(5))["x"]  # (5, c, act_dim): the diffusion rows of those windows
    assert torch.equal(chunk.reward.gather(full)["input"][:, spec.obs_dim :], x.flatten(1))


@pytest.mark.slow
def test_train_reward_reads_records_it_and_distill_and_results_follow(tmp_path, monkeypatch, ractd_ok):
    """`train-reward --reads state_action_chunk`: recorded in R_psi, distilled with, named in rollout's
    JSON; a reading the task's plans do not have is a one-line error."""
    from ractd_cli.artifacts import load_artifact

    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    ok = ractd_ok
    ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "3")
    first = load_artifact(ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "3")["id"])
    chunk = load_artifact(ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "3", "--reads", "state_action_chunk")["id"])
    assert (first.config["input"], chunk.config["input"]) == ("state_action", "state_action_chunk")
    assert chunk.id != first.id and chunk.config["net"]["in_dim"] > first.config["net"]["in_dim"]
    student = ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "1", "--reward-weight", "1", "--reward", chunk.id)
    doc = ok("rollout", "--env", "bimodal", "--model", student["id"], "--episodes", "1")
    assert doc["reward_input"] == "state_action_chunk"
    r = runner.invoke(app, ["train-reward", "--env", "bimodal", "--preset", "tiny", "--reads", "state_goal"])
    assert r.exit_code == 2 and "--reads: task bimodal: a reward model of chunk plans reads state_action or state_action_chunk" in r.output
    assert len(r.output.strip().splitlines()) == 1

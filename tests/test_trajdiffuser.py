"""Trajectory Diffuser as its paper describes it: the return-conditioned proposer over (state,
return-to-go) tokens, the return-guided refiner with the first state inpainted, the planner, the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ractd_cli import trajdiffuser as td
from ractd_cli.adapters import TaskSpec
from ractd_cli.artifacts import save_artifact
from ractd_cli.data.windows import Normalizer, make_windows
from ractd_cli.diffusion import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN, EDMPrecond, euler_sample, heun_sample, karras_sigmas, randn_like
from ractd_cli.errors import UsageError
from ractd_cli.models import normalizer_tensors, normalizers_from, prefixed
from ractd_cli.nets import InverseDynamics, RewardMLP, make_denoiser_net
from ractd_cli.planner import Planner
from ractd_cli.proposer import build_proposer, make_proposer
from ractd_cli.train.loop import TrainConfig, train
from ractd_cli.trajdiffuser_planner import TrajDiffuserPlanner, refine_sigmas

CHUNK = TaskSpec(name="fake-easy", env_id="Fake-v0", obs_dim=3, act_dim=2, planning="chunk", horizon=4,
                 trajdiffuser={"horizon": 5, "guidance": 1.5})
STATES = TaskSpec(name="fake-states", env_id="Fake-v0", obs_dim=3, act_dim=2, planning="states", horizon=6, goal_dim=2)


# ------------------------------------------------------------------------------ the proposer network
def test_generation_with_cache_matches_teacher_forcing_and_is_causal():
    torch.manual_seed(0)
    m = make_proposer("tiny", x_dim=3, cond_dim=5, horizon=6).eval()
    cond = torch.randn(4, 5)
    x = m.generate(cond)
    assert x.shape == (4, 6, 3)
    with torch.no_grad():
        torch.testing.assert_close(m(x, cond), x, atol=1e-5, rtol=1e-5)  # the cached KV path = the masked full pass
        x2 = x.clone()
        x2[:, 3] += 1.0  # element 3 only informs predictions 4 and 5
        d = (m(x2, cond) - m(x, cond)).abs().amax(dim=(0, 2))
    assert torch.all(d[:4] == 0) and torch.all(d[4:] > 0)
    rebuilt = build_proposer(m.config, m.kind)
    rebuilt.load_state_dict(m.state_dict())
    torch.testing.assert_close(rebuilt.eval().generate(cond), x)


def test_proposer_overfits_eight_sequences():
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.rand(8, 5, 2, generator=g) * 2 - 1, "cond": torch.randn(8, 3, generator=g)}
    model = make_proposer("tiny", x_dim=2, cond_dim=3, horizon=5)

    def loss_fn(m, ema, batch, gen):
        return {"loss": ((m(batch["x"], batch["cond"]) - batch["x"]) ** 2).mean()}

    cfg = TrainConfig(steps=600, batch_size=8, lr=3e-3, warmup=20, ema_decay=0.0, checkpoint_every=0)
    res = train(model, loss_fn, data, cfg, name="proposer-overfit", show_progress=False)
    m = res.model.eval()
    with torch.no_grad():
        teacher_forced = ((m(data["x"], data["cond"]) - data["x"]) ** 2).mean().item()
        free_running = ((m.generate(data["cond"]) - data["x"]) ** 2).mean().item()
    start = (data["x"] ** 2).mean().item()  # the loss of predicting zeros
    assert teacher_forced < 1e-3 and teacher_forced < start / 100
    assert free_running < 1e-2  # its own predictions fed back still reproduce the data


# ------------------------------------------------------------------------------ the method's pieces
def _refiner(goal_dim: int = 0, T: int = 5, D: int = 3) -> EDMPrecond:
    torch.manual_seed(1)
    return EDMPrecond(make_denoiser_net("mlp", input_dim=D, global_cond_dim=goal_dim + 2, horizon=T), sigma_data=SIGMA_DATA).eval()


def test_guidance_weight_zero_is_the_unconditional_model_and_one_the_conditional():
    d = _refiner(goal_dim=2)
    x, sigma = torch.randn(4, 5, 3), torch.full((4,), 0.7)
    goal, g0 = torch.randn(4, 2), torch.rand(4)
    cond = td.refiner_cond(goal, g0)
    with torch.no_grad():
        d_c = d(x, sigma, cond)
        d_u = d(x, sigma, td.refiner_cond(goal, g0, keep=0.0))  # the return dropped, the goal kept
        assert torch.equal(td.unconditional(cond), td.refiner_cond(goal, g0, keep=0.0))
        w0, w1, w15 = (td.GuidedDenoiser(d, w)(x, sigma, cond) for w in (0.0, 1.0, 1.5))
    assert torch.equal(w0[:, 1:], d_u[:, 1:]) and torch.equal(w1[:, 1:], d_c[:, 1:])
    torch.testing.assert_close(w15[:, 1:], (d_u + 1.5 * (d_c - d_u))[:, 1:])
    for out in (w0, w1, w15):  # the first state is inpainted: the input's
        assert torch.equal(out[:, 0], x[:, 0])


@pytest.mark.parametrize("sample", [euler_sample, heun_sample])
def test_inpainting_keeps_the_first_state_exact_through_refinement(sample):
    d = td.GuidedDenoiser(_refiner(), 1.2)
    s0 = torch.randn(3, 3)
    x = torch.cat([s0[:, None], torch.randn(3, 4, 3)], dim=1)
    sigmas = torch.cat([karras_sigmas(5, SIGMA_MIN, 2.0), torch.zeros(1)])
    with torch.no_grad():
        out, _ = sample(d, x, sigmas, cond=td.refiner_cond(None, torch.rand(3)))
    assert torch.equal(out[:, 0], s0) and (out[:, 1:] - x[:, 1:]).abs().max() > 0


def test_refiner_loss_keeps_the_first_state_clean_and_drops_the_return_at_the_asked_rate():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, sigma, cond):
            seen.update(x=x, cond=cond)
            return torch.zeros_like(x)

    x = torch.rand(4000, 5, 3) * 2 - 1
    cond = td.refiner_cond(None, torch.full((4000,), 0.6))
    for p in (0.0, 0.5, 1.0):
        loss = td.refiner_loss(Spy(), x, cond, generator=torch.Generator().manual_seed(0), p_uncond=p)
        assert loss.shape == (4000,) and torch.equal(seen["x"][:, 0], x[:, 0])  # never noised
        assert (seen["x"][:, 1:] != x[:, 1:]).all()
        kept = seen["cond"][:, -1]
        assert torch.equal(seen["cond"][:, -2], 0.6 * kept)  # a dropped return reads 0, flagged 0
        assert kept.mean().item() == pytest.approx(1 - p, abs=0.03)


def test_state_returns_are_undiscounted_and_zero_at_each_episodes_end():
    from ractd_cli.data.load import Episode

    eps = [Episode(states=np.zeros((4, 3), np.float32), actions=np.zeros((3, 2), np.float32), rewards=np.array([1.0, 2.0, 3.0], np.float32),
                   terminations=np.array([False, False, True]), truncations=np.zeros(3, bool)),
           Episode(states=np.zeros((3, 3), np.float32), actions=np.zeros((2, 2), np.float32), rewards=np.array([5.0, 1.0], np.float32),
                   terminations=np.zeros(2, bool), truncations=np.array([False, True]))]
    w = make_windows(eps, td.state_view(CHUNK))
    assert td.state_returns(w).tolist() == [6.0, 5.0, 3.0, 0.0, 6.0, 1.0, 0.0]  # no discount, no termination penalty


def test_the_state_view_plans_the_authors_horizon_of_states():
    view = td.state_view(CHUNK)
    assert (view.planning, view.horizon, view.history, view.x_shape) == ("states", 5, 1, (5, 3))
    assert td.state_view(STATES).horizon == 6 and td.guidance(STATES) == td.GUIDANCE and td.guidance(CHUNK) == 1.5
    assert td.settings_problems(dataclasses.replace(CHUNK, trajdiffuser={"horizon": 1, "w": 2, "target_return": "high"})) == [
        "task fake-easy: trajdiffuser has unknown key 'w' (known: horizon, guidance, target_return)",
        "task fake-easy: trajdiffuser horizon must be an integer >= 2, got 1",
        "task fake-easy: trajdiffuser target_return must be a finite number, got 'high'",
    ]


# ------------------------------------------------------------------------------ the planner
def _artifact(spec: TaskSpec, reward_bias: float | None = None):
    """A Trajectory Diffuser of random networks for ``spec`` (and a reward model), saved as artifacts."""
    torch.manual_seed(0)
    view = td.state_view(spec)
    H, D = view.horizon, view.obs_dim
    prop = make_proposer("tiny", x_dim=D + 1, cond_dim=D + 1 + spec.goal_dim, horizon=H - 1)
    ref = make_denoiser_net("mlp", input_dim=D, global_cond_dim=td.refiner_cond_dim(spec), horizon=H)
    inv = InverseDynamics(spec.obs_dim, spec.act_dim)
    norms = {"state": Normalizer(-np.ones(D), np.ones(D) * 2), "action": Normalizer(-np.ones(spec.act_dim), np.ones(spec.act_dim)),
             "return": Normalizer([0.0], [10.0]), "rtg": Normalizer([0.0], [1.0])}
    if spec.goal_dim:
        norms["goal"] = Normalizer(-np.ones(spec.goal_dim), np.ones(spec.goal_dim))
    art = save_artifact(
        {**prefixed(prop.state_dict(), "net"), **prefixed(ref.state_dict(), "refiner"), **prefixed(inv.state_dict(), "inverse"),
         **normalizer_tensors(norms)},
        kind="proposer", task=spec.name,
        config={"method": "trajdiffuser", "net_kind": prop.kind, "net": prop.config, "refiner_kind": ref.kind, "refiner": ref.config,
                "inverse_kind": inv.kind, "inverse": inv.config, "horizon": H, "planning": "states",
                "sigma_data": SIGMA_DATA, "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "best_return": 8.0},
    )
    r = RewardMLP(spec.layout.reward_input_dim(spec))
    reward = save_artifact({**prefixed(r.state_dict(), "net"), **normalizer_tensors(norms)}, kind="reward", task=spec.name,
                           config={"net_kind": r.kind, "net": r.config})
    return art, reward


def test_zero_steps_return_the_proposal_and_steps_count_refiner_calls():
    art, _ = _artifact(STATES)
    past, goal = torch.randn(3, 1, 3), torch.randn(3, 2)
    p0 = TrajDiffuserPlanner(art, STATES, refine_steps=0)
    x0, nfe = p0.plan(past, goal)
    s0 = p0.io.state(past[:, -1])
    proposal = p0.io.state.inverse(p0.propose(s0, p0.io.goal(goal)))
    assert nfe == 0 and x0.shape == (3, 6, 3) and torch.equal(x0, proposal)
    torch.testing.assert_close(x0[:, 0], past[:, -1])  # the plan starts at the current state
    assert p0.target_return == 8.0 and p0.g_star == pytest.approx(0.6)  # the data's best return, normalised
    told = dataclasses.replace(STATES, trajdiffuser={"target_return": 5.0})
    assert TrajDiffuserPlanner(art, told).target_return == 5.0  # the task's, when it names one
    assert TrajDiffuserPlanner(art, told, target_return=2.0).g_star == pytest.approx(-0.6)  # the caller's first
    for sampler, k, calls in (("euler", 1, 1), ("euler", 5, 5), ("heun", 3, 5)):
        p = TrajDiffuserPlanner(art, STATES, refine_steps=k, sampler=sampler)
        x, n = p.plan(past, goal)
        assert n == calls and p.nfe_paper == k and len(p.sigmas) == k + 1 and p.sigmas[0] == pytest.approx(td.REFINE_SIGMA)
        assert torch.equal(p.io.state(x)[:, 0], p.io.state(past[:, -1])) and (x - x0).abs().max() > 0
    assert refine_sigmas(0.7, 0, SIGMA_MIN).tolist() == [0.0]


def test_chunk_tasks_get_the_plans_actions_from_inverse_dynamics():
    art, _ = _artifact(CHUNK)
    p = TrajDiffuserPlanner(art, CHUNK, refine_steps=2)
    past = torch.randn(4, 1, 3)
    actions, _ = p.plan(past, None, p.noise_streams(range(4)))
    assert actions.shape == (4, 4, 2)  # the H-1 = 4 transitions of a 5-state plan
    again, _ = p.plan(past, None, p.noise_streams(range(4)))
    assert torch.equal(actions, again)  # per-episode noise streams: the same plans
    assert p.guidance == 1.5  # the task's


def test_candidates_keep_the_plan_the_reward_model_scores_highest():
    art, reward = _artifact(CHUNK)
    past = torch.randn(5, 1, 3)
    best = TrajDiffuserPlanner(art, CHUNK, refine_steps=2, candidates=6, reward=reward)
    one = TrajDiffuserPlanner(art, CHUNK, refine_steps=2, candidates=1)
    picked, _ = best.plan(past, None, best.noise_streams(range(5)))
    with torch.no_grad():  # the same six plans per row by hand, from the same streams, scored by R_psi
        n = randn_like(torch.empty(5, 6 * 5, 3), best.noise_streams(range(5))).reshape(30, 5, 3)
        x, _ = best.refine(best.propose(best.io.state(past[:, -1]).repeat_interleave(6, 0), None), None, n)
        states = best.io.state.inverse(x)
        actions = best.inverse(states[:, :-1], states[:, 1:])
        scores = best.reward(actions, past.repeat_interleave(6, 0), None).reshape(5, 6)
    assert torch.equal(picked, actions.reshape(5, 6, 4, 2)[torch.arange(5), scores.argmax(1)])
    assert one.plan(past)[0].shape == picked.shape


def test_bad_planner_options_are_usage_errors():
    art, reward = _artifact(CHUNK)
    for kw in ({"refine_steps": -1}, {"refine_sigma": -0.1}, {"refine_sigma": 1e3}, {"sampler": "ancestral"},
               {"guidance": -1.0}, {"guidance": float("nan")}, {"candidates": 0}, {"candidates": 3}):
        with pytest.raises(UsageError):
            TrajDiffuserPlanner(art, CHUNK, **kw)
    TrajDiffuserPlanner(art, CHUNK, candidates=3, reward=reward)  # with a reward model it may choose
    with pytest.raises(UsageError, match="is not a Trajectory Diffuser; run `ractd train-proposer"):
        TrajDiffuserPlanner(reward, CHUNK)  # another kind's header is refused, not read
    with pytest.raises(UsageError, match="does not plan; give a teacher or a student"):
        Planner(reward, CHUNK)  # refused by kind before its header is read


# ------------------------------------------------------------------------------ CLI, bimodal task
runner = CliRunner()


def _invoke(*args: str):
    from ractd_cli.cli import app

    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r


def _rollout(*args: str) -> dict:
    return json.loads(_invoke("rollout", "--env", "bimodal", "--planner", "trajdiffuser", "--device", "cpu", "--json", *args).stdout)


@pytest.mark.slow
def test_bimodal_a_higher_target_return_proposes_the_better_mode():
    """bimodal pays 1.0 at goal A and 0.5 at goal B, half the data each: asked for 1.0 the proposals
    go to A, asked for 0.5 to B; the refiner and the bench rows run on the same artifact."""
    pytest.importorskip("ractd_bimodal")
    _invoke("fetch", "bimodal", "--source", "local", "--steps", "3000")
    art = json.loads(_invoke("train-proposer", "--env", "bimodal", "--preset", "tiny", "--steps", "300", "--device", "cpu", "--json").stdout)
    assert art["kind"] == "proposer" and set(art["losses"]) == {"proposer", "refiner", "inverse"}
    from ractd_cli.artifacts import load_artifact
    from ractd_cli.models import ProposerConfig

    saved = load_artifact(art["id"])
    stored = ProposerConfig.of(saved).stored()  # written from the value it reads back as
    assert stored == {k: saved.config[k] for k in stored} and stored["method"] == "trajdiffuser"
    high, low = (_rollout("--refine-steps", "0", "--target-return", r, "--episodes", "20") for r in ("1.0", "0.5"))
    finished = [[e["return"] for e in d["per_episode"] if e["return"] > 0] for d in (high, low)]
    share_a = [sum(r == 1.0 for r in f) / max(len(f), 1) for f in finished]
    assert share_a[0] - share_a[1] >= 0.5, share_a
    doc = _rollout("--refine-steps", "2", "--sampler", "heun", "--guidance", "2", "--proposer", art["id"][:8], "--episodes", "2")
    assert (doc["planner"], doc["proposer_id"], doc["model_id"]) == ("trajdiffuser", art["id"], art["id"])
    assert (doc["refine_steps"], doc["nfe"], doc["nfe_paper"], doc["guidance"], doc["sampler"]) == (2, 3, 2, 2.0, "heun")
    assert doc["target_return"] == pytest.approx(1.0) and doc["candidates"] == 1
    # bench: proposal alone and K = 1, 5 beside the other rows
    _invoke("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "20", "--device", "cpu")
    bench = json.loads(_invoke("bench", "--env", "bimodal", "--latency-only", "--repeats", "2", "--device", "cpu", "--json").stdout)
    rows = [r for r in bench["rows"] if r.get("planner") == "trajdiffuser"]
    assert [(r["key"], r["refine_steps"], r["nfe"]) for r in rows] == [("trajdiffuser-0", 0, 0), ("trajdiffuser-1", 1, 1), ("trajdiffuser-5", 5, 5)]
    assert all(r["model_id"] == art["id"] for r in rows)


def test_cli_usage_errors():
    pytest.importorskip("ractd_bimodal")
    from ractd_cli.cli import app

    for args, says in ((["--planner", "trajdiffuser", "--nfe", "3"], "--refine-steps"),
                       (["--refine-steps", "3"], "--planner trajdiffuser"),
                       (["--guidance", "2"], "--planner trajdiffuser"),
                       (["--planner", "trajdiffuser", "--model", "teacher"], "--proposer"),
                       (["--planner", "nope"], "planner")):
        r = runner.invoke(app, ["rollout", "--env", "bimodal", "--episodes", "1", *args])
        assert r.exit_code == 2 and says in r.output, (args, r.output)


def test_missing_trajdiffuser_says_what_to_run():
    pytest.importorskip("ractd_bimodal")
    from ractd_cli.cli import app

    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--planner", "trajdiffuser", "--episodes", "1"])
    assert r.exit_code == 1 and "ractd train-proposer --env bimodal" in r.output


def test_candidates_scored_by_a_chunk_reading_r_psi_read_the_task_s_chunk_or_are_refused():
    """A reward model reading every planned action (``state_action_chunk``) scores a candidate's first c
    actions; a proposer planning fewer actions than c is refused with what to do."""
    art, _ = _artifact(CHUNK)  # 5 states: 4 actions, the task's c
    norms = normalizers_from(art.tensors)
    r = RewardMLP(CHUNK.layout.reward_input_dim(CHUNK, "state_action_chunk"))
    chunk = save_artifact({**prefixed(r.state_dict(), "net"), **normalizer_tensors(norms)}, kind="reward", task=CHUNK.name,
                          config={"net_kind": r.kind, "net": r.config, "input": "state_action_chunk"})
    p = TrajDiffuserPlanner(art, CHUNK, refine_steps=2, candidates=3, reward=chunk)
    assert p.reward.reads == "state_action_chunk" and p.plan(torch.randn(2, 1, 3))[0].shape == (2, 4, 2)
    longer = dataclasses.replace(CHUNK, horizon=8)  # c = 8 actions: the proposer's 4 are too few
    with pytest.raises(UsageError, match="reads chunks of 8 actions and this proposer plans 4"):
        TrajDiffuserPlanner(art, longer, candidates=3, reward=chunk)

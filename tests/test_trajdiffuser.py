"""Trajectory Diffuser: the causal-transformer proposer, the refining planner, the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ractd_cli.adapters import TaskSpec
from ractd_cli.artifacts import save_artifact
from ractd_cli.data.windows import Normalizer
from ractd_cli.diffusion import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN
from ractd_cli.models import PlanIO, normalizer_tensors, plan_io, proposer_from
from ractd_cli.nets import make_denoiser_net
from ractd_cli.planner import TrajDiffuserPlanner, refine_sigmas
from ractd_cli.proposer import build_proposer, make_proposer
from ractd_cli.train.loop import TrainConfig, train

SPEC = TaskSpec(name="fake-easy", env_id="Fake-v0", obs_dim=3, act_dim=2, planning="chunk", horizon=4)


def _norms(scale: float = 1.0) -> dict[str, Normalizer]:
    return {
        "state": Normalizer(-np.ones(3) * scale, np.ones(3) * 2 * scale),
        "action": Normalizer(-np.ones(2) * scale, np.ones(2) * scale),
        "rtg": Normalizer([0.0], [1.0]),
    }


def _artifacts(proposer_norm_scale: float = 1.0):
    """A random teacher and proposer for SPEC, saved as artifacts (the planner only needs them well formed)."""
    torch.manual_seed(0)
    net = make_denoiser_net("mlp", input_dim=2, global_cond_dim=3, horizon=4)
    teacher = save_artifact(
        {**{f"net.{k}": v for k, v in net.state_dict().items()}, **normalizer_tensors(_norms())},
        kind="teacher", task=SPEC.name,
        config={"net_kind": net.kind, "net": net.config, "sigma_data": SIGMA_DATA, "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX},
    )
    prop = make_proposer("tiny", x_dim=2, cond_dim=3, horizon=4)
    proposer = save_artifact(
        {**{f"net.{k}": v for k, v in prop.state_dict().items()}, **normalizer_tensors(_norms(proposer_norm_scale))},
        kind="proposer", task=SPEC.name, parents=[teacher.id],
        config={"net_kind": prop.kind, "net": prop.config, "horizon": 4},
    )
    return teacher, proposer


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


def test_zero_steps_or_zero_sigma_return_the_proposal():
    teacher, proposer = _artifacts()
    past = torch.randn(3, 1, 3)  # raw states (B, h, obs_dim)
    io = plan_io(teacher, SPEC)
    for k, sigma in ((0, 0.5), (5, 0.0), (0, 0.0)):
        p = TrajDiffuserPlanner(teacher, proposer, SPEC, refine_steps=k, refine_sigma=sigma)
        x0, nfe = p.plan(past)
        assert nfe == 0 and p.nfe_per_plan == 0
        torch.testing.assert_close(x0, io.plan(p.propose(past)))
        torch.testing.assert_close(x0, io.plan(proposer_from(proposer).generate(io.cond(past, None))))


@pytest.mark.parametrize("sampler,k,nfe", [("euler", 1, 1), ("euler", 5, 5), ("heun", 3, 5)])
def test_refinement_counts_teacher_calls(sampler, k, nfe):
    teacher, proposer = _artifacts()
    p = TrajDiffuserPlanner(teacher, proposer, SPEC, refine_steps=k, refine_sigma=0.7, sampler=sampler)
    assert p.sigmas[0] == pytest.approx(0.7) and p.sigmas[-1] == 0 and len(p.sigmas) == k + 1
    past = torch.randn(2, 1, 3)
    x0, n = p.plan(past)
    assert n == nfe and x0.shape == (2, 4, 2) and torch.isfinite(x0).all()
    assert (x0 - p.io.plan(p.propose(past))).abs().max() > 0
    assert refine_sigmas(0.7, 0, SIGMA_MIN).tolist() == [0.0]


def test_bad_refinement_options_are_usage_errors():
    from ractd_cli.errors import UsageError

    teacher, proposer = _artifacts()
    for kw in ({"refine_steps": -1}, {"refine_sigma": -0.1}, {"refine_sigma": 1e3}, {"sampler": "ancestral"}):
        with pytest.raises(UsageError):
            TrajDiffuserPlanner(teacher, proposer, SPEC, **kw)


def test_proposer_with_other_normalisers_is_re_expressed_in_the_teachers():
    """Each model reads and writes env units through its own normalisers: a proposer fitted with other
    ones proposes the same raw plan, which the teacher then reads in its own space."""
    teacher, proposer = _artifacts(proposer_norm_scale=2.0)
    p = TrajDiffuserPlanner(teacher, proposer, SPEC, refine_steps=0)
    assert not p._same_norms
    past = torch.randn(2, 1, 3)
    own = PlanIO(SPEC, _norms(2.0))
    raw_proposal = own.plan(proposer_from(proposer).generate(own.cond(past, None)))
    torch.testing.assert_close(p.plan(past)[0], raw_proposal)
    torch.testing.assert_close(p.propose(past), PlanIO(SPEC, _norms()).x(raw_proposal))


def test_plan_io_round_trips_and_lays_out_the_states_conditioning():
    spec = TaskSpec(name="fake-states", env_id="Fake-v0", obs_dim=3, act_dim=2, planning="states", horizon=4, goal_dim=2)
    norms = {"state": Normalizer(-np.ones(3) * 3, np.ones(3)), "goal": Normalizer(np.zeros(2), np.ones(2) * 4)}
    io = PlanIO(spec, norms)
    past, goal, x = torch.randn(5, 1, 3), torch.randn(5, 2), torch.randn(5, 4, 3)
    cond = io.cond(past, goal)
    torch.testing.assert_close(cond, torch.cat([norms["state"].normalize(past[:, 0]), norms["goal"].normalize(goal)], -1))
    torch.testing.assert_close(io.cond(past, torch.zeros(5, 0)), norms["state"].normalize(past[:, 0]))  # zero width: no goal
    torch.testing.assert_close(io.x(x), norms["state"].normalize(x))
    torch.testing.assert_close(io.plan(io.x(x)), x, atol=1e-5, rtol=1e-5)
    from ractd_cli.errors import UsageError

    with pytest.raises(UsageError, match="normaliser"):
        PlanIO(spec, {"goal": norms["goal"]})


# ------------------------------------------------------------------------------ CLI, bimodal task
runner = CliRunner()


def _invoke(*args: str):
    from ractd_cli.cli import app

    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def bimodal_models():
    pytest.importorskip("ractd_bimodal")
    _invoke("fetch", "bimodal", "--source", "local", "--steps", "600")
    _invoke("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "40", "--device", "cpu")
    return json.loads(_invoke("train-proposer", "--env", "bimodal", "--preset", "tiny", "--steps", "40", "--device", "cpu", "--json").stdout)


def test_bimodal_end_to_end_via_cli(bimodal_models):
    prop = bimodal_models
    assert prop["kind"] == "proposer" and len(prop["parents"]) == 1 and prop["losses"]["loss"] > 0
    teacher_id = prop["parents"][0]
    for k in ("2", "0"):
        doc = json.loads(_invoke("rollout", "--env", "bimodal", "--planner", "trajdiffuser", "--refine-steps", k,
                                 "--episodes", "2", "--device", "cpu", "--json").stdout)
        assert doc["planner"] == "trajdiffuser" and doc["proposer_id"] == prop["id"] and doc["model_id"] == teacher_id
        assert doc["refine_steps"] == int(k) and doc["refine_sigma"] == 0.5 and doc["nfe"] == int(k)
        assert doc["episodes"] == 2 and doc["ms_per_action"] > 0
    doc = json.loads(_invoke("rollout", "--env", "bimodal", "--planner", "trajdiffuser", "--refine-steps", "1",
                             "--refine-sigma", "1.0", "--sampler", "heun", "--proposer", prop["id"][:8],
                             "--model", teacher_id, "--episodes", "1", "--device", "cpu", "--json").stdout)
    assert doc["refine_sigma"] == 1.0 and doc["sampler"] == "heun" and doc["nfe"] == 1

    bench = json.loads(_invoke("bench", "--env", "bimodal", "--latency-only", "--repeats", "2", "--device", "cpu", "--json").stdout)
    td = [r for r in bench["rows"] if r.get("planner") == "trajdiffuser"]
    assert [(r["refine_steps"], r["nfe"]) for r in td] == [(0, 0), (1, 1), (5, 5)]
    assert all(r["model_id"] == teacher_id and r["proposer_id"] == prop["id"] for r in td)
    assert all(r["model_id"] == teacher_id for r in bench["rows"])


def test_cli_usage_errors():
    pytest.importorskip("ractd_bimodal")
    from ractd_cli.cli import app

    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--planner", "trajdiffuser", "--nfe", "3", "--episodes", "1"])
    assert r.exit_code == 2 and "--refine-steps" in r.output
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--refine-steps", "3", "--episodes", "1"])
    assert r.exit_code == 2 and "--planner trajdiffuser" in r.output
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--planner", "nope", "--episodes", "1"])
    assert r.exit_code == 2


def test_missing_proposer_says_what_to_run():
    pytest.importorskip("ractd_bimodal")
    from ractd_cli.cli import app

    _invoke("fetch", "bimodal", "--source", "local", "--steps", "300")
    _invoke("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "5", "--device", "cpu")
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--planner", "trajdiffuser", "--episodes", "1"])
    assert r.exit_code == 1 and "ractd train-proposer --env bimodal" in r.output

import math

import pytest
import torch
from torch import nn

from ractd_cli.errors import RactdError
from ractd_cli.train import loop
from ractd_cli.train.loop import TrainConfig, checkpoint_path, train


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    return {"x": x, "y": x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3}


def _loss(model, ema, batch, gen):
    err = model(batch["x"]).squeeze(-1) - batch["y"]
    return {"loss": (err**2).mean()}


def _cfg(**kw):
    base = dict(steps=60, batch_size=32, lr=1e-2, warmup=5, seed=3, checkpoint_every=20)
    base.update(kw)
    return TrainConfig(**base)


def _count_checkpoints(monkeypatch) -> list[int]:
    """The steps at which the loop writes a checkpoint, from now on."""
    steps, save = [], loop._save_checkpoint

    def counting(path, step, *rest):
        steps.append(step)
        return save(path, step, *rest)

    monkeypatch.setattr(loop, "_save_checkpoint", counting)
    return steps


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def test_loop_learns_and_ema_tracks(monkeypatch):
    written = _count_checkpoints(monkeypatch)
    res = train(_model(), _loss, _data(), _cfg(steps=300, lr=5e-2), name="t", show_progress=False)
    assert res.losses["loss"] < 0.05
    assert res.speed["steps"] == 300 and written == list(range(20, 301, 20))  # every 20 steps and the last
    assert res.checkpoint.exists()  # kept until the artifact is written ...
    res.release()
    assert not res.checkpoint.exists()  # ... then removed
    w = res.ema.weight.detach().squeeze()
    assert torch.allclose(w, torch.tensor([1.0, -2.0, 0.5]), atol=0.1)


def test_same_seed_same_weights():
    a = train(_model(), _loss, _data(), _cfg(), name="t", show_progress=False).ema.state_dict()
    b = train(_model(), _loss, _data(), _cfg(), name="t", show_progress=False).ema.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interrupt_matches_uninterrupted(monkeypatch):
    full = train(_model(), _loss, _data(), _cfg(), name="t", show_progress=False).ema.state_dict()

    calls = {"n": 0}

    def interrupting_loss(model, ema, batch, gen):
        calls["n"] += 1
        if calls["n"] == 45:  # Ctrl-C in the middle of step 45: checkpoint at 40 survives
            raise KeyboardInterrupt
        return _loss(model, ema, batch, gen)

    with pytest.raises(KeyboardInterrupt):
        train(_model(), interrupting_loss, _data(), _cfg(), name="t", show_progress=False)
    assert checkpoint_path("t", _cfg().run_key({})).exists()
    written = _count_checkpoints(monkeypatch)
    res = train(_model(), _loss, _data(), _cfg(), name="t", resume=True, show_progress=False)
    assert res.resumed_from == 40
    # the speed it reports is this process's share: the 20 steps after the checkpoint, and one checkpoint at the end
    assert res.speed["steps"] == 20 and written == [60]
    resumed = res.ema.state_dict()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    res.release()
    assert not checkpoint_path("t", _cfg().run_key({})).exists()  # cleaned up once the artifact is written


def test_interrupt_in_the_last_tenth_then_resume_reports_the_same_losses():
    """The artifact's ``losses`` are means over the last 10% of steps: their running sums are
    checkpointed, so a run stopped and resumed inside that stretch reports the same figures (and
    the same seed gives the same artifact, whatever the interruptions)."""
    cfg = _cfg(checkpoint_every=5)  # 60 steps, the tail starts at step 54, checkpoints at 55
    full = train(_model(), _loss, _data(), cfg, name="tail", show_progress=False)
    calls = {"n": 0}

    def interrupting_loss(model, ema, batch, gen):
        calls["n"] += 1
        if calls["n"] == 58:
            raise KeyboardInterrupt
        return _loss(model, ema, batch, gen)

    with pytest.raises(KeyboardInterrupt):
        train(_model(), interrupting_loss, _data(), cfg, name="tail", show_progress=False)
    res = train(_model(), _loss, _data(), cfg, name="tail", resume=True, show_progress=False)
    assert res.resumed_from == 55
    assert res.losses == full.losses


def test_nan_loss_stops_with_clear_error():
    def nan_loss(model, ema, batch, gen):
        return {"loss": model(batch["x"]).sum() * float("nan")}

    with pytest.raises(RactdError, match="lower --lr"):
        train(_model(), nan_loss, _data(), _cfg(), name="t", show_progress=False)


def test_precision_autocasts_records_itself_and_leaves_fp32_ids_alone(tmp_path, monkeypatch, ractd_ok):
    """`--precision bf16|fp16` trains under autocast (fp16 with a gradient scaler) and says so in the
    artifact; fp32, the default, records nothing new, so its artifacts keep their ids."""
    from typer.testing import CliRunner

    from ractd_cli.artifacts import load_artifact
    from ractd_cli.cli import app

    pytest.importorskip("ractd_bimodal")
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path))
    runner, ok = CliRunner(), ractd_ok
    ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    base = ("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "30")
    plain, fp32 = ok(*base), ok(*base, "--precision", "fp32")
    assert plain["id"] == fp32["id"] and "precision" not in load_artifact(plain["id"]).config["train"]
    for p in ("bf16", "fp16"):
        doc = ok(*base, "--precision", p)
        assert doc["id"] != plain["id"] and load_artifact(doc["id"]).config["train"]["precision"] == p
        assert math.isfinite(doc["losses"]["loss"])
    r = runner.invoke(app, [*base, "--precision", "fp8"])
    assert r.exit_code == 2 and "--precision" in r.output

"""`ractd export`: one graph (past, goal, noise) -> plan with the normalisers inside; onnxruntime and
TorchScript give the in-process planner's plan for the same noise; `bench --runtime onnxruntime`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ractd_cli.cli import app
from ractd_cli.diffusion import StackedRandomGenerator, randn_like

runner = CliRunner()


def _ok(*args: str) -> dict:
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture
def models():
    pytest.importorskip("ractd_bimodal")
    _ok("fetch", "bimodal", "--source", "local", "--steps", "600")
    teacher = _ok("train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "40")["id"]
    _ok("train-reward", "--env", "bimodal", "--preset", "tiny", "--steps", "40")
    student = _ok("distill", "--env", "bimodal", "--preset", "tiny", "--steps", "20")["id"]
    return {"teacher": teacher, "student": student}


def _planner_and_inputs(model_id: str, **kw):
    from ractd_cli.artifacts import load_artifact
    from ractd_cli.planner import Planner
    from ractd_cli.registry import get_task

    spec = get_task("bimodal")[1]
    planner = Planner(load_artifact(model_id), spec, **kw)
    g = torch.Generator().manual_seed(1)
    past = torch.randn(3, spec.history, spec.obs_dim, generator=g) * 3
    goal = torch.zeros(3, spec.goal_dim)
    streams = [11, 12, 13]
    expected, _ = planner.plan(past, None, StackedRandomGenerator("cpu", streams))
    # the noise the planner drew, N(0, I) before its sigma_max scaling: the same streams again
    noise = randn_like(torch.empty(3, planner.T, planner.D), StackedRandomGenerator("cpu", streams))
    return spec, past, goal, noise, expected


@pytest.mark.parametrize("kind, extra, kw", [("student", [], {}), ("teacher", ["--sampler", "euler", "--nfe", "4"], {"sampler": "euler", "nfe": 4})])
def test_onnxruntime_and_torchscript_give_the_planners_plan(models, tmp_path, kind, extra, kw):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    spec, past, goal, noise, expected = _planner_and_inputs(models[kind], **kw)
    onnx_file, ts_file = tmp_path / "plan.onnx", tmp_path / "plan.pt"
    doc = _ok("export", "--env", "bimodal", "--model", models[kind], "--format", "onnx", "-o", str(onnx_file), *extra)
    assert doc["artifact_id"] == models[kind] and doc["task"] == "bimodal" and int(doc["horizon"]) == spec.x_shape[0]
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {"past": past.numpy(), "goal": goal.numpy(), "noise": noise.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    props = {p.key: p.value for p in __import__("onnx").load(str(onnx_file)).metadata_props}
    assert props["artifact_id"] == models[kind] and props["sampler"] == kw.get("sampler", "onestep") and props["plan"] == "action"
    one = session.run(None, {"past": past[:1].numpy(), "goal": goal[:1].numpy(), "noise": noise[:1].numpy()})[0]
    np.testing.assert_allclose(one, expected[:1].numpy(), atol=1e-4)  # any batch size
    _ok("export", "--env", "bimodal", "--model", models[kind], "--format", "torchscript", "-o", str(ts_file), *extra)
    files = {"ractd.json": ""}
    graph = torch.jit.load(str(ts_file), _extra_files=files)
    torch.testing.assert_close(graph(past, goal, noise), expected, atol=1e-4, rtol=0)
    assert json.loads(files["ractd.json"])["artifact_id"] == models[kind]


def test_export_refuses_what_it_cannot_write(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for args, says in ((["--format", "pickle"], "--format"), (["--model", "teacher", "--sampler", "ancestral"], "deterministic"),
                       (["--model", "student", "--sampler", "multistep"], "onestep")):
        r = runner.invoke(app, ["export", "--env", "bimodal", "-o", str(out / "x"), *args])
        assert r.exit_code == 2 and says in r.output, r.output
    assert not list(out.iterdir())  # nothing half-written


def test_bench_times_the_onnx_export_beside_the_frozen_graph(models):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    doc = _ok("bench", "--env", "bimodal", "--latency-only", "--repeats", "3", "--runtime", "onnxruntime")
    row = doc["rows"][-1]
    assert row["key"] == "ractd-1-onnxruntime" and row["model_id"] == models["student"] and row["ms_per_action"] > 0
    assert row["vs_frozen_torch"] > 0


@pytest.mark.parametrize("kind, kw", [("student", {}), ("teacher", {"sampler": "euler", "nfe": 4})])
def test_initial_noise_and_clamp_change_the_sampler_as_stated(models, kind, kw):
    """unit: x_T = z (the authors'), edm: x_T = sigma_max z; clamp keeps every estimate in the data's
    normalised [-1, 1] (so the plan within the normaliser's range) and changes nothing already inside it."""
    from ractd_cli.artifacts import load_artifact
    from ractd_cli.planner import Planner, Sampling
    from ractd_cli.registry import get_task

    spec, art = get_task("bimodal")[1], load_artifact(models[kind])
    p = {name: Planner(art, spec, sampling=Sampling(*s), **kw)
         for name, s in {"unit": ("unit", False), "edm": ("edm", False), "unit+clamp": ("unit", True), "edm+clamp": ("edm", True)}.items()}
    assert p["unit"].noise_scale == 1.0 and p["edm"].noise_scale == pytest.approx(float(p["edm"].sigmas[0])) and p["edm"].noise_scale > 1
    past = torch.randn(64, spec.history, spec.obs_dim, generator=torch.Generator().manual_seed(0)) * 3

    def plan(name):
        return p[name].plan(past, None, StackedRandomGenerator("cpu", range(64)))[0]

    x = {name: plan(name) for name in p}
    assert not torch.allclose(x["unit"], x["edm"])
    norm = p["unit"].io.x  # raw plan -> the model's normalised space
    for name in ("unit+clamp", "edm+clamp"):
        assert norm(x[name]).abs().max() <= 1 + 1e-5
    # the unclamped EDM start strays outside the data's range somewhere; clamping brings it back
    assert norm(x["edm"]).abs().max() > 1
    # the unit start of the one-step student is G(z, T, s_end): the same jump from x_T = z, no other change
    if kind == "student":
        model = p["unit"].model
        z = randn_like(torch.empty(64, p["unit"].T, p["unit"].D), StackedRandomGenerator("cpu", range(64)))
        cond = p["unit"].io.cond(past, None)
        jump = model(z, p["unit"].sigmas[0], p["unit"].sigmas[-1], cond)
        torch.testing.assert_close(x["unit"], p["unit"].io.plan(jump), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_prints_one_line_not_the_exporters_warnings(models, tmp_path, fmt):
    """The tracer's and the exporter's warnings (constants of the trace by design, skipped
    torchvision operators) are not shown: a user sees what was written."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / f"plan.{'onnx' if fmt == 'onnx' else 'pt'}"
    ractd = str(Path(sys.executable).parent / "ractd")
    r = subprocess.run([ractd, "export", "--env", "bimodal", "--model", models["student"], "--format", fmt, "-o", str(out)],
                       capture_output=True, text=True, env=os.environ, timeout=300)
    assert r.returncode == 0 and out.exists(), r.stderr
    assert "Warning" not in r.stderr and "torchvision" not in r.stderr, r.stderr
    assert f"wrote {out}" in r.stderr.replace("\n", "")

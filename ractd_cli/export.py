"""``ractd export``: a planner as one self-contained graph file, ONNX or TorchScript.

The graph maps (past states (B, h, obs_dim), goal (B, goal_dim) when the task has one, noise
(B, T, D) ~ N(0, I)) in env units to the plan x0 (B, T, D) in env units: actions for action-chunk
tasks, states for state-planning ones. The normalisers are inside and the initial noise is an
input, so the caller controls the randomness: the same noise gives the in-process planner's plan.

What can be exported: the one-step student (its frozen graph, :class:`ractd_cli.planner._OneStep`,
the noise scaled inside: by sigma_max, or by 1 with ``--init-noise unit``), and a teacher with a deterministic sampler (``euler`` or
``heun`` at ``nfe`` steps, unrolled into the graph). The file's metadata names the task, its
dimensions, horizon and history, the artifact id and the sampler.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from . import __version__
from .adapters import TaskSpec
from .artifacts import Artifact, atomic_write
from .errors import UsageError
from .planner import Planner, Sampling

FORMATS = ("onnx", "torchscript")
EXPORT_SAMPLERS = {"student": ("onestep",), "teacher": ("euler", "heun")}


class PlanGraph(nn.Module):
    """(past, goal, noise) raw -> plan raw, for one planner, with its randomness as an input."""

    def __init__(self, planner: Planner):
        super().__init__()
        self.spec, self.noise_scale = planner.spec, planner.noise_scale
        if planner.art.kind == "student":
            self.one_step = planner.one_step()
        else:
            self.one_step = None
            self.io, self.model, self.sample_fn = planner.io, planner.model, planner.sample_fn
            self.register_buffer("sigmas", planner.sigmas.clone())

    def forward(self, past: torch.Tensor, goal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.one_step is not None:
            return self.one_step(noise, past, goal)
        x = noise * self.noise_scale
        cond = self.io.cond(past, goal)
        x0, _ = self.sample_fn(self.model, x, self.sigmas, cond=cond)
        return self.io.plan(x0)


def metadata(planner: Planner) -> dict[str, str]:
    """What the exported file says about itself (ONNX ``metadata_props``, TorchScript extra file)."""
    spec, art = planner.spec, planner.art
    T, D = spec.x_shape
    return {
        "ractd_version": __version__, "task": spec.name, "artifact_id": art.id, "artifact_kind": art.kind,
        "sampler": planner.sampler_name, "nfe": str(planner.nfe_budget), "planning": spec.planning,
        "plan": spec.layout.x_source, "obs_dim": str(spec.obs_dim), "act_dim": str(spec.act_dim),
        "goal_dim": str(spec.goal_dim), "history": str(spec.history), "horizon": str(T), "plan_dim": str(D),
        "plan_stride": str(spec.plan_stride), "sigma_max": repr(float(planner.sigmas[0])),
        "init_noise": planner.sampling.init_noise, "noise_scale": repr(planner.noise_scale), "clamp": str(planner.sampling.clamp).lower(),
        "inputs": "past (B, history, obs_dim) env units; goal (B, goal_dim) env units; noise (B, horizon, plan_dim) ~ N(0, I)",
        "output": "plan (B, horizon, plan_dim) env units",
    }


def example_inputs(spec: TaskSpec, batch: int = 2, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(past, goal, noise) of the graph's shapes, random, for tracing and checks."""
    T, D = spec.x_shape
    g = generator or torch.Generator().manual_seed(0)
    return (torch.randn(batch, spec.history, spec.obs_dim, generator=g), torch.randn(batch, spec.goal_dim, generator=g),
            torch.randn(batch, T, D, generator=g))


def export(art: Artifact, spec: TaskSpec, out: Path, *, fmt: str = "onnx", sampler: str | None = None, nfe: int | None = None,
           sampling: Sampling | None = None) -> dict[str, str]:
    """Write ``art``'s planner to ``out`` as ``fmt`` (with ``sampling``'s initial noise scale and
    clamping inside); returns the metadata written with it."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if art.kind not in EXPORT_SAMPLERS:
        raise UsageError(f"artifact {art.id} is a {art.kind}; export a student or a teacher")
    sampler = sampler or EXPORT_SAMPLERS[art.kind][0]
    if sampler not in EXPORT_SAMPLERS[art.kind]:
        raise UsageError(f"a {art.kind} exports with --sampler {' or '.join(EXPORT_SAMPLERS[art.kind])} (a deterministic "
                         f"sampler whose only randomness is the initial noise), not {sampler!r}")
    planner = Planner(art, spec, sampler=sampler, nfe=nfe, device="cpu", jit=False, sampling=sampling)
    graph = PlanGraph(planner).eval()
    meta = metadata(planner)
    example = example_inputs(planner.spec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        buf = io.BytesIO()
        with torch.no_grad(), _quiet_exporters():
            traced = torch.jit.freeze(torch.jit.trace(graph, example, check_trace=False).eval())
            torch.jit.save(traced, buf, _extra_files={"ractd.json": json.dumps(meta)})
        atomic_write(out, buf.getvalue())
        return meta
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export")
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad(), _quiet_exporters():
            program = torch.onnx.export(graph, example, None, input_names=["past", "goal", "noise"], output_names=["plan"],
                                        dynamic_shapes={"past": {0: batch}, "goal": {0: batch}, "noise": {0: batch}}, dynamo=True,
                                        verbose=False)
    except Exception as e:  # the exporter's own failure: one line, nothing written
        raise UsageError(f"the ONNX exporter failed on {art.id} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         f"try --format torchscript") from e
    model = program.model_proto
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    atomic_write(out, model.SerializeToString())
    return meta


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the tracer's and the ONNX exporter's warnings, which are about what the graph holds by
    design: the noise levels and the shape checks are constants of the trace (the exported graph's
    plans equal the eager planner's at several batch sizes: tests/test_export.py), and the exporter
    lists torchvision operators it skips and axis names it merges."""
    import logging
    import warnings

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{what} needs the {module} package: pip install 'ractd[export]' (or `make install`)") from None


class OnnxPlanner:
    """An exported ONNX file run by onnxruntime, with :class:`Planner`'s ``plan(past, goal, generator)``
    (the noise drawn as the in-process planner draws it), for ``bench --runtime onnxruntime``."""

    def __init__(self, path: Path, planner: Planner, threads: int | None = None):
        ort = _require("onnxruntime", "--runtime onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.planner, self.spec = planner, planner.spec
        self.T, self.D = planner.T, planner.D

    def plan(self, past: torch.Tensor, goal: torch.Tensor | None = None, generator=None) -> tuple[torch.Tensor, int]:
        from .diffusion import randn_like

        B = past.shape[0]
        g = goal if goal is not None else torch.zeros(B, self.spec.goal_dim)
        noise = randn_like(torch.empty(B, self.T, self.D), generator if generator is not None else self.planner.generator)
        out = self.session.run(None, {"past": past.numpy(), "goal": g.numpy(), "noise": noise.numpy()})[0]
        return torch.from_numpy(out), self.planner.nfe_budget

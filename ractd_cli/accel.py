"""Acceleration of any plan callable, apart from what it computes: a traced, frozen TorchScript graph
(:func:`frozen`), replayed as CUDA graphs (:class:`CudaGraphs`). The planners (``ractd_cli.planner``)
and ``bench``'s bare-forward row use it; the math they freeze is theirs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["why", "frozen", "frozen_model", "Broadcast", "CudaGraphs"]


def why(e: Exception) -> str:
    """A failure in one line (``jit_error``, ``cuda_graphs_error``): its type and first line."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def frozen(module: nn.Module, example: tuple) -> torch.jit.ScriptModule:
    """``module`` traced on ``example`` and frozen for inference (its weights and constant inputs
    folded in); the tracer's warnings, about what is constant by design, are not shown."""
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


class Broadcast:
    """Calls a frozen graph traced with (B,) times, accepting scalar times as the samplers may pass."""

    def __init__(self, frozen, n_times: int):
        self.frozen, self.n_times = frozen, n_times

    def __call__(self, x, *args):
        times = [torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]) for t in args[: self.n_times]]
        return self.frozen(x, *times, *args[self.n_times :])


def frozen_model(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, n_times: int,
                 cuda_graphs: bool = False) -> Broadcast:
    """A denoiser D(x, sigma, cond) (n_times=1) or student G(x, t, s, cond) (n_times=2) as a frozen
    graph, replayed as CUDA graphs when ``cuda_graphs``. ``example``: batch-1 (x, cond, sigma)."""
    x, cond, sig = example
    graph = frozen(model, (x, *[sig * (1.0 - 0.5 * i) for i in range(n_times)], cond))
    return Broadcast(CudaGraphs(graph) if cuda_graphs else graph, n_times=n_times)


class CudaGraphs:
    """Replays a frozen graph's kernels as one CUDA graph per input shape instead of launching them
    one by one from Python (on an H200 at batch 1 that saved 0.5 of the 3.9 ms of the paper's hopper
    U-Net forward, and 1.33x on the Heun-80 teacher: docs/results.md).

    The first call with a new set of input shapes warms the graph up on a side stream and captures
    it (all captures share one memory pool); later calls copy their inputs into the captured
    buffers, replay, and return a copy of the output. The same plans up to float rounding (tested to
    1e-5; a closed-loop rollout can drift from it in the last digits of its score). The inputs must be
    CUDA tensors; the noise is drawn outside, so its generator is untouched by replays.
    """

    WARMUP = 3
    """Calls before a capture (TorchScript's profiling executor specialises on its first ones)."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        self.pool = None
        self.error: str | None = None
        """Why a capture failed (the graph then runs as it was, launch by launch, from then on)."""

    def _capture(self, args: tuple[torch.Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        static = [a.clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                self.fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.fn(*static)
        self.pool = graph.pool()
        return graph, static, out

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.error is not None:
            return self.fn(*args)
        key = tuple((a.shape, a.dtype) for a in args)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(args)
            except Exception as e:  # a kernel that cannot be captured: plain launches from now on
                self.error = why(e)
                torch.cuda.synchronize()
                return self.fn(*args)
        graph, static, out = self.graphs[key]
        for buffer, a in zip(static, args):
            buffer.copy_(a)
        graph.replay()
        return out.clone()

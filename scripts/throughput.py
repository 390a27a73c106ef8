"""Training throughput of a task's networks: samples per second of one optimiser step.

    python scripts/throughput.py --task hopper-medium-replay --net quick mujoco --batch 64 256 --threads 1 2
    python scripts/throughput.py --task maze2d-large --net small quick --kind teacher --device cuda --dtype fp32 bf16

One step is what `ractd train-teacher` (``--kind teacher``: the EDM loss) or `ractd distill`
(``--kind student``: the CTM + DSM loss with one frozen-teacher Heun step) does per minibatch:
forward, backward, AdamW, on random data of the task's plan shape (T, D) and conditioning width;
no data loading, EMA or logging (what the training loop adds around it is its own cost). Prints one
JSON line per setting: ms per step and samples per second, median of ``--steps`` timed steps after
``--warmup``. For docs/notes/lab-log.md; the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time

import torch

from ractd_cli.diffusion import (
    MAX_TEACHER_STEPS,
    NUM_BINS,
    SIGMA_DATA,
    STUDENT_SIGMA_MIN,
    EDMPrecond,
    edm_loss,
    ractd_loss,
    student_from_teacher,
    teacher_sigmas,
)
from ractd_cli.nets import make_denoiser_net
from ractd_cli.registry import get_task


def measure(spec, net: str, batch: int, kind: str, dtype: str, device: torch.device, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    T, D = spec.x_shape
    teacher = EDMPrecond(make_denoiser_net(net, input_dim=D, global_cond_dim=spec.cond_dim, horizon=T), sigma_data=SIGMA_DATA).to(device)
    x = (torch.rand(batch, T, D, device=device) * 2 - 1)
    cond = torch.rand(batch, spec.cond_dim, device=device) * 2 - 1
    if kind == "teacher":
        model = teacher

        def loss_fn():
            return edm_loss(model, x, cond).mean()
    else:
        teacher.requires_grad_(False)
        model = student_from_teacher(teacher).to(device)
        sigmas = teacher_sigmas(NUM_BINS, STUDENT_SIGMA_MIN, 80.0, device=device)

        def loss_fn():
            return ractd_loss(model, teacher, None, x, cond, alpha=1.0, beta=1.0, sigma_r=0.0, sigmas=sigmas,
                              max_teacher_steps=MAX_TEACHER_STEPS)["total"]

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    ms = 1000 * statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    return {"task": spec.name, "plan_stride": spec.plan_stride, "net": net, "params": params, "kind": kind, "batch": batch, "dtype": dtype,
            "threads": torch.get_num_threads(), "device": str(device), "ms_per_step": round(ms, 3),
            "samples_per_s": round(1000 * batch / ms, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--net", nargs="+", default=["quick"], help="denoiser presets (ractd_cli.nets.DENOISER_PRESETS)")
    p.add_argument("--batch", nargs="+", type=int, default=[64])
    p.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()])
    p.add_argument("--kind", nargs="+", default=["teacher"], choices=["teacher", "student"])
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--plan-stride", type=int, default=1, help="state plans: every k-th state (train-teacher --plan-stride)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    _, spec = get_task(a.task)
    spec = dataclasses.replace(spec, plan_stride=a.plan_stride)
    device = torch.device(a.device)
    for net, batch, threads, kind, dtype in itertools.product(a.net, a.batch, a.threads, a.kind, a.dtype):
        torch.set_num_threads(threads)
        print(json.dumps(measure(spec, net, batch, kind, dtype, device, a.steps, a.warmup)), flush=True)


if __name__ == "__main__":
    main()

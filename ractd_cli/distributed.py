"""Data-parallel training with PyTorch's own engine: ``torchrun`` and ``torch.distributed``.

A trainer started by ``torchrun --nproc-per-node N -m ractd_cli train-teacher ...`` (or by the
commands' ``--nproc N``, which launches that) runs as N processes. Each one:

- joins the process group that torchrun's environment describes (gloo on CPU, nccl on CUDA),
- trains the same model wrapped in ``DistributedDataParallel`` (gradients all-reduced, so every
  rank holds the same weights after every step),
- draws its own minibatches and noise from generators seeded by (seed, rank) (:func:`rank_seed`:
  rank 0 uses the seed itself, so one process under torchrun is a plain run).

Only rank 0 writes checkpoints and artifacts, draws progress bars and prints results
(:func:`is_main`). The effective batch is the per-process batch times the world size.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

LAUNCH_ENV = "TORCHELASTIC_RUN_ID"
"""Set by torchrun in every worker: how a process knows it was launched as one of a group."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        """Launched by torchrun (a group of one included)."""
        return launched()


def launched() -> bool:
    return LAUNCH_ENV in os.environ and "RANK" in os.environ


def world() -> World:
    """This process's rank and the world size (0 and 1 outside torchrun)."""
    if not launched():
        return World()
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))


def is_main() -> bool:
    """Rank 0, or no group at all: the process that writes files and talks to the user."""
    return world().rank == 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s generators: ``seed`` itself on rank 0, a SeedSequence child of
    (seed, rank) elsewhere."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def init(device: str) -> World:
    """Join torchrun's process group (once): gloo for a CPU device, nccl for CUDA (each rank on
    its LOCAL_RANK's GPU). Outside torchrun: nothing, a world of one."""
    w = world()
    if not w.active:
        return w
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return w


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any (an all-reduce; ``flag`` itself outside a group)."""
    if not world().active:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_states(state: "torch.Tensor") -> list["torch.Tensor"]:  # noqa: F821
    """Every rank's ``state`` (a generator state, the same size on every rank), in rank order."""
    import torch
    import torch.distributed as dist

    if not world().active:
        return [state]
    dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    local = state.to(dev)
    out = [torch.empty_like(local) for _ in range(world().size)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def torchrun_argv(argv: list[str], nproc: int) -> list[str]:
    """The command line that runs ``ractd <argv>`` as ``nproc`` torchrun workers on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "ractd_cli", *argv]


def split_nproc(argv: list[str]) -> tuple[int, list[str]]:
    """(N, argv without it) for ``--nproc N`` / ``--nproc=N`` in ``argv``; (1, argv) without one.
    A value that is not an integer is left for the command to refuse."""
    out, n = [], 1
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--nproc" and i + 1 < len(argv) and argv[i + 1].lstrip("-").isdigit():
            n, i = int(argv[i + 1]), i + 2
            continue
        if a.startswith("--nproc=") and a.split("=", 1)[1].lstrip("-").isdigit():
            n, i = int(a.split("=", 1)[1]), i + 1
            continue
        out.append(a)
        i += 1
    return n, out

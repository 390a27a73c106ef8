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


def torchrun_argv(argv: list[str], nproc: int, log_dir: str | None = None) -> list[str]:
    """The command line that runs ``ractd <argv>`` as ``nproc`` torchrun workers on this node."""
    return [sys.executable, "-m", "torch.distributed.run", *_torchrun_args(argv, nproc, log_dir)]


def _torchrun_args(argv: list[str], nproc: int, log_dir: str | None) -> list[str]:
    """torchrun's command line. ``log_dir``: where its agent keeps its per-run folder; without one
    torchrun makes a ``torchelastic_*`` folder in the system's temporary directory and leaves it
    there after every run."""
    logs = [f"--log-dir={log_dir}"] if log_dir else []
    return ["--standalone", f"--nproc-per-node={nproc}", *logs, "-m", "ractd_cli", *argv]


REPORT_ENV = "RACTD_REPORT_DIR"
"""Set by :func:`launch` for its workers: the folder where each rank leaves its last words."""


def report(line: str) -> bool:
    """Under :func:`launch`, leave ``line`` (what this rank would print as it stops: "error: ..." or
    "interrupted; ...") for the launcher to print once, and return True; elsewhere return False
    (print it yourself). torchrun stops the other workers as soon as one fails, so a worker's own
    print could be cut off, or come from several ranks at once."""
    folder = os.environ.get(REPORT_ENV)
    if not (folder and launched()):
        return False
    tmp = os.path.join(folder, f".rank-{world().rank}")
    with open(tmp, "w") as f:
        f.write(line)
    os.replace(tmp, os.path.join(folder, f"rank-{world().rank}"))
    return True


def launch(argv: list[str], nproc: int) -> int:
    """Run ``ractd <argv>`` as ``nproc`` workers on this node, as ``torchrun --standalone`` does
    (its own launcher, in this process); the exit code.

    Rank 0 draws the progress and prints the result. When the run fails, the launcher prints one
    line: the failed worker's own message (:func:`report`), else which worker was stopped by which
    signal or failed with which exit code. torchrun's own log lines and the traceback it ends a failed
    run with are not shown."""
    import logging
    import tempfile

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .ui import say_last

    for name in list(logging.root.manager.loggerDict):  # torch sets each elastic logger's own level
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def said(folder: str, first: int) -> str | None:
        """What the workers left, ``first``'s first, then rank 0's: a rank's own cause before a
        rank that only saw its peer go (:data:`PEER_LOST_LINE`)."""
        lines = []
        for rank in (first, 0, *range(nproc)):
            path = os.path.join(folder, f"rank-{rank}")
            if os.path.exists(path):
                with open(path) as f:
                    lines.append(f.read().strip())
        return next((line for line in lines if line != PEER_LOST_LINE), lines[0] if lines else None)

    with tempfile.TemporaryDirectory(prefix="ractd-run-") as folder:
        os.environ[REPORT_ENV] = folder  # the workers inherit it
        try:
            # torchrun's own folder goes inside ours, so nothing is left behind when the run ends
            torchrun.run(torchrun.parse_args(_torchrun_args(argv, nproc, os.path.join(folder, "torchrun"))))
        except ChildFailedError as e:
            rank, failure = e.get_first_failure()
            # a worker killed by a signal is the cause, whatever the others said or when they stopped
            # (torchrun itself ends the rest with SIGTERM once one has failed)
            killed = sorted(r for r, f in e.failures.items() if f.exitcode < 0 and f.signal_name() != "SIGTERM")
            if killed:
                rank, failure = killed[0], e.failures[killed[0]]
                say_last(f"error: training process {rank} of {nproc} was stopped by {failure.signal_name()}; "
                         "the last checkpoint (if any) is kept, rerun the same command with --resume")
                return 1
            say_last(said(folder, rank) or f"error: training process {rank} of {nproc} failed with exit code {failure.exitcode}")
            return failure.exitcode
        except SignalException as e:  # Ctrl-C or a kill of the launcher: torchrun has stopped the workers
            say_last(said(folder, 0) or "interrupted; the last checkpoint (if any) is kept, rerun with --resume")
            return 128 + int(e.sigval)
        finally:
            os.environ.pop(REPORT_ENV, None)
    return 0


PEER_LOST_LINE = ("error: another training process of this run stopped; the last checkpoint (if any) is kept, "
                  "rerun the same command with --resume")
"""What a worker says when a collective failed because another worker died (:func:`peer_lost`)."""

PEER_LOST = ("closed by peer", "reset by peer", "remote worker crashing", "Broken pipe", "NCCL communicator was aborted")
"""Marks of the error a collective raises when another rank has died (gloo, nccl)."""


def peer_lost(e: BaseException) -> bool:
    """``e`` is a collective's error because another process of this run died or was stopped."""
    return world().size > 1 and isinstance(e, RuntimeError) and any(m in str(e) for m in PEER_LOST)


def shutdown(ok: bool) -> None:
    """Leave the process group before the process exits (PyTorch's advice: a group torn down at
    interpreter exit can abort). ``ok``: the command succeeded on this rank, so every rank is past
    its last collective and a barrier lets none of them close its connections while another still
    works; after a failure the group is only destroyed (a barrier could wait on a rank that is gone)."""
    if not world().active:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:
        if ok:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def leave(code: int) -> None:
    """A torchrun worker whose command has ended (its group left, :func:`shutdown`): flush its output
    and exit with ``code`` at once, skipping the interpreter's teardown. Measured on a loaded 2-core
    machine, a worker ended this way from Python still aborted at exit in about one run in eight
    ("terminate called without an active exception", SIGABRT, with no Python frame left: a C++
    thread of the distributed runtime destroyed during finalization), which turned a clean stop into a
    crash. Outside torchrun: nothing (the caller exits normally)."""
    if not world().active:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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

"""The one training loop every model goes through (teacher, reward, inverse dynamics, student).

AdamW, linear warm-up then cosine decay, an EMA of the weights (``torch.optim.swa_utils``),
a rich progress bar with the running loss, NaN/inf detection, and periodic checkpoints so that
``--resume`` continues exactly where an interrupted run stopped (Ctrl-C also writes one).

Checkpoints are safetensors files (model, EMA, AdamW moments, RNG state) with the small
remaining state as JSON metadata: nothing is ever pickled. Minibatches are drawn with a seeded
``torch.Generator`` whose state is checkpointed, so on CPU a resumed run ends with the same
weights as an uninterrupted one, and the same seed gives the same artifact.

Under ``torchrun`` (:mod:`ractd_cli.distributed`) the loss runs inside ``DistributedDataParallel``
(gradients all-reduced), each rank draws its own batches and noise from generators seeded by
(seed, rank), and only rank 0 shows progress and writes checkpoints, which hold every rank's
generator states, so ``--resume`` continues a group of the same size exactly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import signal
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar, Union

import torch
from safetensors.torch import load_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .. import distributed
from ..artifacts import atomic_save_tensors
from ..errors import RactdError
from ..locks import exclusive
from ..paths import cache_root
from ..ui import progress

Batch = dict[str, torch.Tensor]
Data = Union[Mapping[str, torch.Tensor], Any]
"""A dict of (N, ...) tensors, or any object with ``len()`` and ``gather(idx) -> dict`` (see train.data.Source)."""
LossFn = Callable[[nn.Module, nn.Module, Batch, torch.Generator], Mapping[str, torch.Tensor]]
"""``loss_fn(model, ema_model, batch, generator) -> {"loss": scalar, other scalars...}``."""


T = TypeVar("T")

@dataclass
class TrainConfig:
    steps: int
    batch_size: int = 256
    lr: float = 2e-4
    weight_decay: float = 1e-6
    warmup: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    device: str = "cpu"
    precision: str = "fp32"
    """``fp32``, or autocast to ``bf16`` / ``fp16`` (fp16 with a gradient scaler): :data:`PRECISIONS`."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's betas (the RACTD authors' configs: (0.95, 0.999), the ``paper`` preset's)."""
    ema_power: float | None = None
    """The EMA's warm-up: None, decay_n = min(ema_decay, (1+n)/(10+n)); a power p, the authors'
    ``EMAModel`` (inv_gamma 1): decay_n = min(ema_decay, 1 - (1+n)^-p) (their configs: p = 0.75)."""
    log_dir: str | None = None
    """Where the run's TensorBoard event files go (a subfolder per run); None: the cache's ``runs/``
    when tensorboard is installed, else no event files. Not part of the run's identity."""

    def record(self) -> dict[str, Any]:
        """What an artifact records of its training: every field but ``log_dir``, ``precision`` only
        when it is not fp32, ``betas`` and ``ema_power`` when not the defaults (so artifacts keep the ids
        they had before these options existed)."""
        d = asdict(self)
        del d["log_dir"]
        defaults = {f.name: f.default for f in fields(self)}
        for key in ("precision", "betas", "ema_power"):
            if d[key] == defaults[key]:  # recorded only when taken, so earlier artifacts keep their ids
                del d[key]
        if "betas" in d:
            d["betas"] = list(d["betas"])
        return d

    def run_key(self, extra: Mapping) -> str:
        """Identifies a run for --resume: everything but the device and checkpoint cadence, and the
        world size of a torchrun group of more than one."""
        d = {k: v for k, v in self.record().items() if k not in ("device", "checkpoint_every")}
        world = distributed.world().size
        d.update({"world_size": world} if world > 1 else {})
        return hashlib.sha256(json.dumps({**d, **extra}, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    model: nn.Module
    ema: nn.Module
    """The EMA weights (what gets saved)."""
    losses: dict[str, float] = field(default_factory=dict)
    """Mean of each logged quantity over the last 10% of steps."""
    resumed_from: int = 0
    loss_curve: dict[str, list[float]] = field(default_factory=dict)
    """A coarse learning curve for the artifact header: ``step`` (the end of each of about
    :data:`CURVE_POINTS` equal stretches of steps) and ``loss`` (the mean loss over each stretch)."""
    curve: list[dict] = field(default_factory=list)
    """``evaluate``'s results during training: ``{"step": n, **evaluate(model, ema)}`` (see :func:`train`)."""
    speed: dict[str, float] = field(default_factory=dict)
    """How fast this process's share of the run went (the artifact's unhashed ``speed``): ``steps``
    taken here (after any resume), loop ``seconds`` (set-up excluded), ``samples_per_s`` (the
    effective batch: every rank's), and ``checkpoint_seconds`` and ``eval_seconds`` within them."""
    run: str = ""
    """The run's name, ``<name>-<run key>``: its event files' folder (under ``--log-dir``) and its
    checkpoint's file name. Artifacts record it (``runs``) so that ``ractd curves --model ID`` finds it."""
    checkpoint: Path | None = None
    """The run's last checkpoint (written at the final step too): kept until the artifact is
    written, so a failed save loses nothing and ``--resume`` goes straight to saving."""

    def release(self) -> None:
        """The artifact is written: delete the run's checkpoint (rank 0 owns it)."""
        if self.checkpoint is not None and distributed.is_main():
            self.checkpoint.unlink(missing_ok=True)


def _lr_lambda(warmup: int, steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return f


def ema_decay_at(n: int, decay: float, power: float | None = None) -> float:
    """The EMA's decay at its n-th update (n = 0, 1, ...): min(decay, (1+n)/(10+n)), the usual warm-up,
    so short runs are not dominated by their first weights; with ``power`` p, the RACTD authors'
    ``EMAModel`` (inv_gamma 1, min 0): min(decay, 1 - (1+n)^-p)."""
    warm = (1.0 + n) / (10.0 + n) if power is None else 1.0 - (1.0 + n) ** -power
    return min(decay, max(0.0, warm))


def _ema_with_warmup(decay: float, power: float | None = None):
    """The EMA update :func:`ema_decay_at` describes; ``torch.optim.swa_utils.AveragedModel`` applies it."""

    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        d = ema_decay_at(int(num_averaged), decay, power)
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    return update


def checkpoint_path(name: str, key: str) -> Path:
    return cache_root() / "checkpoints" / f"{name}-{key}.safetensors"


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``--precision``: the autocast dtype of the forward pass (None: plain fp32). Weights, optimiser
state and the EMA stay fp32."""

CURVE_POINTS = 20
"""Points of the coarse loss curve an artifact keeps (``TrainResult.loss_curve``)."""

SYNC_EVERY = 50
"""On a GPU, the loop reads its logged losses back to the host once per this many steps."""

Generators = tuple[torch.Generator, torch.Generator]
"""(minibatch indices, loss noise)."""


def _rng_key(name: str, rank: int) -> str:
    return f"rng.{name}" if rank == 0 else f"rng.{name}.{rank}"


def _checksum(tensors: Mapping[str, torch.Tensor]) -> int:
    """CRC-32 of every tensor's bytes, in key order: a checkpoint damaged on disk does not match."""
    crc = 0
    for k in sorted(tensors):
        crc = zlib.crc32(k.encode(), crc)
        crc = zlib.crc32(tensors[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data, crc)
    return crc


def _save_checkpoint(path: Path, step: int, model: nn.Module, ema: AveragedModel, opt: torch.optim.Optimizer, gens: Generators, tail: dict,
                     fingerprint: str | None = None) -> None:
    """Write a checkpoint (rank 0; every rank must call it, to hand over its generator states)."""
    data_states, noise_states = distributed.gather_states(gens[0].get_state()), distributed.gather_states(gens[1].get_state())
    if not distributed.is_main():
        return
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v
    for k, v in ema.state_dict().items():
        tensors[f"ema.{k}"] = v
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    for rank, (d, n) in enumerate(zip(data_states, noise_states)):
        tensors[_rng_key("data", rank)], tensors[_rng_key("noise", rank)] = d, n
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"step": step, "param_groups": opt_state["param_groups"], "tail": tail, "data": fingerprint, "crc32": _checksum(tensors)}
    atomic_save_tensors(path, tensors, {"ractd_checkpoint": json.dumps(meta)})


def _load_checkpoint(
    path: Path, model: nn.Module, ema: AveragedModel, opt: torch.optim.Optimizer, gens: Generators, device: torch.device,
    fingerprint: str | None = None,
) -> tuple[int, dict]:
    from safetensors import safe_open

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["ractd_checkpoint"])
    except Exception as e:
        raise RactdError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it and rerun without --resume") from e
    if "crc32" in meta and meta["crc32"] != _checksum(tensors):
        raise RactdError(f"checkpoint {path} is damaged (its checksum does not match); delete it and rerun without --resume")
    if fingerprint is not None and meta.get("data") not in (None, fingerprint):
        raise RactdError(f"checkpoint {path} was made on other data (the dataset changed since the run stopped); "
                         f"rerun without --resume to start over on the data now in the cache")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rank = distributed.world().rank
    gens[0].set_state(tensors[_rng_key("data", rank)])
    gens[1].set_state(tensors[_rng_key("noise", rank)])
    return int(meta["step"]), meta.get("tail", {"sums": {}, "count": 0})


@contextlib.contextmanager
def _interrupt_flag():
    """While training, Ctrl-C (and, outside torchrun, SIGTERM: a `kill`, a batch scheduler's stop)
    sets a flag instead of raising mid-step: the loop then writes a checkpoint at a step boundary
    and stops, so an interrupted run loses nothing. Under torchrun SIGTERM stays torchrun's: its
    launcher sends it to stop the other workers once one has failed."""
    hit = {"n": 0}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        hit["n"] += 1
        if hit["n"] > 1:  # a second signal stops at once
            raise KeyboardInterrupt

    signals = (signal.SIGINT,) if distributed.launched() else (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield lambda: hit["n"] > 0
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Loss(nn.Module):
    """The loss as a module, so that ``DistributedDataParallel`` wraps the whole step's forward:
    ``forward(batch, gen)`` is ``loss_fn(model, ema, batch, gen)``. Only ``model`` is a submodule
    (its parameters are the ones all-reduced); the EMA and the loss function are plain attributes."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, ema: nn.Module):
        super().__init__()
        self.model = model
        self.__dict__["loss_fn"], self.__dict__["ema"] = loss_fn, ema

    def forward(self, batch: Batch, gen: torch.Generator) -> Mapping[str, torch.Tensor]:
        return self.loss_fn(self.model, self.ema, batch, gen)


@contextlib.contextmanager
def _exclusive(ckpt: Path, name: str, *, owner: bool):
    """Held while a run trains (rank 0, the ``owner``): a second process starting the same run
    (same name, recipe and data, so the same checkpoint) stops at once with what to do, rather
    than both writing one checkpoint (:func:`~ractd_cli.locks.exclusive`, a lock file beside the
    checkpoint)."""
    if not owner:
        yield
        return
    busy = (f"{name}: another ractd process is training this same run now ({{lock}}); wait for it to finish "
            "(its model then comes from the cache) or stop it (Ctrl-C keeps a checkpoint) and rerun with --resume")
    with exclusive(ckpt.with_suffix(".lock"), busy):
        yield


def sample_batch(data: Data, batch_size: int, gen: torch.Generator, device: torch.device) -> Batch:
    """A minibatch of rows drawn uniformly with replacement (the generator makes it reproducible)."""
    if isinstance(data, Mapping):
        idx = torch.randint(0, next(iter(data.values())).shape[0], (batch_size,), generator=gen)
        batch = {k: v[idx] for k, v in data.items()}
    else:
        batch = data.gather(torch.randint(0, len(data), (batch_size,), generator=gen))
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    cfg: TrainConfig,
    *,
    name: str,
    run_extra: Mapping | None = None,
    resume: bool = False,
    show_progress: bool = True,
    evaluate: Callable[[nn.Module, nn.Module], dict] | None = None,
    eval_every: int = 0,
    fingerprint: str | None = None,
) -> TrainResult:
    """Optimise ``model`` on minibatches of ``data`` with ``loss_fn``; return the model and its EMA.

    ``fingerprint`` (e.g. :attr:`ractd_cli.data.windows.Windows.fingerprint`) names the data's
    content: a checkpoint made on other data refuses ``resume`` with the reason.
    ``name`` labels the progress bar and the checkpoint file; ``run_extra`` (JSON-able) joins
    ``cfg`` in identifying the run, so ``resume=True`` only picks up a checkpoint of the same run.
    ``evaluate(model, ema)`` (JSON-able dict) runs every ``eval_every`` steps and after the last;
    its results form ``TrainResult.curve`` (checkpointed, so a resumed run has the whole curve), and
    their numbers go to the run's event file as ``eval/<name>`` beside ``loss/<term>``. It must leave
    the model and the training generators alone: training is the same with or without it.
    """
    device = torch.device(cfg.device)
    world = distributed.init(cfg.device)
    seed = distributed.rank_seed(cfg.seed, world.rank)  # the seed itself on rank 0 (and in a plain run)
    torch.manual_seed(seed)  # dropout or any module-level randomness
    gen_data = torch.Generator().manual_seed(seed)  # minibatch indices (CPU)
    gen = torch.Generator(device=device).manual_seed(seed)  # noise inside the losses (on the device)
    gens = (gen_data, gen)
    model.to(device).train()
    ema = AveragedModel(model, multi_avg_fn=_ema_with_warmup(cfg.ema_decay, cfg.ema_power), use_buffers=True)
    ema.requires_grad_(False)
    step_loss: Callable[[Batch, torch.Generator], Mapping[str, torch.Tensor]] = functools.partial(loss_fn, model, ema.module)
    if world.active:  # all-reduced gradients: PyTorch's DistributedDataParallel around the whole loss
        from torch.nn.parallel import DistributedDataParallel

        step_loss = DistributedDataParallel(_Loss(model, loss_fn, ema.module), device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
                                            find_unused_parameters=False)
    show_progress = show_progress and world.rank == 0
    if cfg.precision not in PRECISIONS:
        raise RactdError(f"unknown precision {cfg.precision!r}; use one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[cfg.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    lr_lambda = _lr_lambda(cfg.warmup, cfg.steps)
    ckpt = checkpoint_path(name, cfg.run_key(run_extra or {}))
    with _exclusive(ckpt, name, owner=world.rank == 0):
        # Running sums of every logged quantity over the last 10% of steps (the artifact's ``losses``),
        # checkpointed with the rest, so an interrupted run reports what an uninterrupted one does.
        start, tail = 0, {"sums": {}, "count": 0, "curve": []}
        if resume:
            if ckpt.exists():
                start, tail = _load_checkpoint(ckpt, model, ema, opt, gens, device, fingerprint)
                if scaler.is_enabled() and tail.get("scaler"):
                    scaler.load_state_dict(tail["scaler"])
            # no checkpoint of this exact run: start from scratch (said in the progress description)
        sums: dict[str, float] = tail["sums"]
        curve: list[dict] = tail.setdefault("curve", [])
        tail_from = int(cfg.steps * 0.9)
        desc = f"{name}" + (f" (resumed at {start})" if start else "")
        if world.size > 1:
            desc += f" ({world.size} processes, batch {world.size}x{cfg.batch_size} = {world.size * cfg.batch_size})"
        writer = _event_writer(cfg, name, ckpt.stem) if world.rank == 0 else None
        every = max(1, cfg.steps // CURVE_POINTS)
        coarse = tail.setdefault("coarse", {"sums": {}, "counts": {}})  # stretch -> summed loss, steps (checkpointed)
        # The logged values stay on the device until a flush: every step on a CPU, every SYNC_EVERY steps
        # on a GPU (no host sync per step), and always before a checkpoint, an evaluation and the end.
        sync_every = 1 if device.type == "cpu" else SYNC_EVERY
        pending: list[tuple[int, dict[str, torch.Tensor], float]] = []
        timer = {"checkpoint_seconds": 0.0, "eval_seconds": 0.0}
        with _interrupt_flag() as interrupted, progress(desc, cfg.steps, disable=not show_progress) as advance:
            advance(start)
            began = time.perf_counter()

            def flush() -> None:
                if not pending:
                    return
                keys = list(pending[0][1])
                rows = torch.stack([torch.stack([o[k].float() for k in keys]) for _, o, _ in pending]).cpu().tolist()
                for (at, _, lr), row in zip(pending, rows):
                    values = dict(zip(keys, row))
                    if not math.isfinite(values["loss"]):
                        raise RactdError(f"{name}: loss became {values['loss']} at step {at}; lower --lr (now {cfg.lr:g}) or check the dataset")
                    b = str(at // every)
                    coarse["sums"][b] = coarse["sums"].get(b, 0.0) + values["loss"]
                    coarse["counts"][b] = coarse["counts"].get(b, 0) + 1
                    if writer is not None:
                        for k, v in values.items():
                            writer.add_scalar(f"loss/{k}", v, at + 1)
                        writer.add_scalar("lr", lr, at + 1)
                    if at >= tail_from:
                        for k, v in values.items():
                            sums[k] = sums.get(k, 0.0) + v
                        tail["count"] += 1
                advance(len(pending), loss=rows[-1][keys.index("loss")])
                pending.clear()

            for step in range(start, cfg.steps):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_lambda(step)
                batch = sample_batch(data, cfg.batch_size, gen_data, device)
                with autocast():
                    out = step_loss(batch, gen)
                loss = out["loss"]
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                ema.update_parameters(model)
                pending.append((step, {k: v.detach() for k, v in out.items()}, opt.param_groups[0]["lr"]))
                done = step + 1
                evaluating = evaluate is not None and eval_every and (done % eval_every == 0 or done == cfg.steps) and world.rank == 0
                stop = distributed.any_rank(interrupted()) if world.active else interrupted()
                # periodic, and at the last step: the checkpoint outlives the artifact's write (TrainResult.release)
                checkpointing = stop or (cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or done == cfg.steps))
                if len(pending) >= sync_every or evaluating or checkpointing or done == cfg.steps:
                    flush()
                if evaluating:
                    t0 = time.perf_counter()
                    curve.append({"step": done, **evaluate(model, ema.module)})
                    timer["eval_seconds"] += time.perf_counter() - t0
                    if writer is not None:  # the numbers of each evaluation, beside the losses (`ractd curves` draws them)
                        for k, v in curve[-1].items():
                            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                                writer.add_scalar(f"eval/{k}", v, done)
                if checkpointing:
                    t0 = time.perf_counter()
                    if scaler.is_enabled():
                        tail["scaler"] = scaler.state_dict()
                    _save_checkpoint(ckpt, done, model, ema, opt, gens, tail, fingerprint)
                    timer["checkpoint_seconds"] += time.perf_counter() - t0
                    if stop:
                        raise KeyboardInterrupt
            seconds = time.perf_counter() - began
        if writer is not None:
            writer.close()
        losses = {k: v / max(tail["count"], 1) for k, v in sums.items()}
        stretches = sorted(coarse["sums"], key=int)
        loss_curve = {"step": [min((int(b) + 1) * every, cfg.steps) for b in stretches],
                      "loss": [coarse["sums"][b] / coarse["counts"][b] for b in stretches]}
        taken = cfg.steps - start
        speed = {"steps": taken, "seconds": round(seconds, 3), "samples_per_s": round(taken * cfg.batch_size * world.size / max(seconds, 1e-9), 1),
                 **{k: round(v, 3) for k, v in timer.items()}}
        return TrainResult(model=model, ema=ema.module, losses=losses, resumed_from=start, loss_curve=loss_curve, curve=curve, speed=speed,
                           run=ckpt.stem, checkpoint=ckpt if cfg.checkpoint_every else None)


def saved(artifact: T, *results: TrainResult) -> T:
    """``artifact``, written: the checkpoints of the runs in it are no longer needed."""
    for res in results:
        res.release()
    return artifact


def _event_writer(cfg: TrainConfig, name: str, run: str):
    """A TensorBoard ``SummaryWriter`` for this run (``<log_dir>/<run>``), or None: no tensorboard
    installed and no ``log_dir`` asked for (asked for without it: an error saying what to install)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if cfg.log_dir is not None:
            raise RactdError("--log-dir writes TensorBoard event files and needs the tensorboard package: "
                             "pip install 'ractd[watch]' (or `make install`)") from None
        return None
    from ..paths import runs_dir

    return SummaryWriter(log_dir=str(Path(cfg.log_dir or runs_dir()) / run), flush_secs=30)

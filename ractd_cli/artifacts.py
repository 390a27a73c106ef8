"""The artifact store: one ``.safetensors`` file per model, provenance in the header metadata.

File layout: ``<cache>/models/<kind>-<task>-<id>.safetensors``. The header's ``__metadata__``
holds one key, ``ractd``, whose value is a JSON document::

    {"id": ..., "kind": "teacher", "task": "maze2d-umaze", "dataset": ..., "config": {...},
     "parents": [ids...], "ractd_version": ..., "created": ISO-8601, ...extra}

The id is a content hash (sha256 of the tensors and the metadata except ``id``, ``created`` and
``made_on``), so training twice with the same seed gives the same id, and loading re-hashes the
file to detect corruption. Writes are atomic: temporary file in the same directory, fsync,
rename. Nothing is ever unpickled.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save_file

from . import __version__
from .distributed import is_main
from .errors import RactdError, UsageError
from .paths import models_dir

KINDS = ("teacher", "reward", "student", "inverse-dynamics", "proposer")
ID_LEN = 16
_META_KEY = "ractd"


@dataclass
class Artifact:
    """A loaded (or just saved) artifact: its tensors on CPU and its metadata."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return self.meta["id"]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors whose name starts with ``prefix + '.'``, with the prefix stripped (a state dict)."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}


UNHASHED = ("id", "created", "made_on", "loss_curve", "speed", "runs", "name")
"""Metadata outside the content id: when and on what an artifact was made, and how fast, do not
change what it is, and its coarse loss curve and the names of its training runs (``runs``: the
folders of their event files and checkpoints) come from the same training as its weights (so ids
stay as before them); a user's ``name`` (``--name``) labels it."""

RESERVED_NAMES = ("latest", "student", "teacher", "all", "datasets", "runs", "checkpoints", "sac")
"""Words a ``--name`` cannot be: they already mean something where models are named."""


def check_name(name: str) -> str:
    """``name`` if it can name a model, else a one-line UsageError: letters, digits, ``. _ -``, starting
    with a letter, at most 64 characters, not a word that means something else, and not hex alone
    (it would read as an id prefix)."""
    import re

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]{0,63}", name):
        raise UsageError(f"--name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter (at most 64)")
    if name in RESERVED_NAMES or re.fullmatch(r"[0-9a-f]+", name):
        raise UsageError(f"--name {name!r} would read as " + ("a keyword" if name in RESERVED_NAMES else "an artifact id") + "; choose another")
    return name


def _content_id(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    stable = {k: v for k, v in meta.items() if k not in UNHASHED}
    h.update(json.dumps(stable, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:ID_LEN]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file beside it, then a rename)."""
    _atomically(path, lambda f, name: f.write(data))


def atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """:func:`atomic_write` of a safetensors file, streamed from the tensors: no second copy of
    them in memory (a checkpoint of the paper's 248 M-parameter U-Net holds about 4 GB)."""
    _atomically(path, lambda f, name: save_file(dict(tensors), name, metadata=metadata))


def _atomically(path: Path, write: Callable[[Any, str], Any]) -> None:
    """``write(file, its_name)`` into a temporary file beside ``path``, synced, then renamed to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "r+b") as f:
            write(f, tmp)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600: follow the user's umask like any new file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Processor"): Linux's /proc/cpuinfo, else
    what :mod:`platform` knows. Two CPUs of one kernel family (``cpu_capability`` AVX512 on both)
    may still round differently: an Intel Xeon and an AMD EPYC made different SAC data here."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def made_on() -> dict[str, Any]:
    """What decides whether a training run reproduces bit for bit: torch's version, the CPU (its
    model and kernel family) and thread count (CPU kernels sum in a thread-count-dependent order),
    CUDA if used, and the torchrun group's size when there is one of more than one process.
    Recorded in every artifact beside (not inside) its content id."""
    from .distributed import world

    return {
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        **({"world_size": world().size} if world().size > 1 else {}),
    }


def save_artifact(
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    task: str,
    config: Mapping[str, Any],
    dataset: str | None = None,
    parents: list[str] | tuple[str, ...] = (),
    directory: Path | None = None,
    **extra: Any,
) -> Artifact:
    """Write ``tensors`` with their provenance as one safetensors file, atomically; return it.

    ``config`` must be JSON-serialisable: it is what rebuilds the network. ``extra`` adds more
    JSON fields to the metadata (e.g. final losses, hyper-parameters).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {KINDS}")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta: dict[str, Any] = {
        "kind": kind,
        "task": task,
        "dataset": dataset,
        "config": dict(config),
        "parents": list(parents),
        "ractd_version": __version__,
        **extra,
    }
    meta["id"] = _content_id(cpu, meta)
    meta["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta["made_on"] = made_on()
    path = (directory or models_dir()) / f"{kind}-{task}-{meta['id']}.safetensors"
    if is_main():  # in a torchrun group only rank 0 writes (every rank computes the same artifact)
        try:
            atomic_save_tensors(path, cpu, {_META_KEY: json.dumps(meta, sort_keys=True)})
        except OSError as e:  # a full disk, a read-only cache: nothing half-written is left (atomic)
            raise RactdError(f"cannot write the {kind} to {path.parent} ({e.strerror or type(e).__name__}); free space or fix its "
                             f"permissions, then rerun the same command with --resume (the finished run's checkpoint is kept)") from e
    return Artifact(path=path, meta=meta, tensors=cpu)


def read_header(path: Path) -> dict[str, Any]:
    """The ractd metadata of an artifact file, reading only its header. Raises RactdError if unreadable."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
        return json.loads(header["__metadata__"][_META_KEY])
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise RactdError(
            f"{path} is not a readable ractd artifact ({type(e).__name__}); "
            f"delete it with `ractd cache rm {path.name}` and re-create it"
        ) from e


def scan_store(directory: Path | None = None) -> tuple[list[Artifact], list[Path]]:
    """One read of every artifact header in the store: (the readable artifacts, newest first; the
    files whose header cannot be read, truncated or overwritten, by name)."""
    d = directory or models_dir()
    out, bad = [], []
    for p in sorted(d.glob("*.safetensors")) if d.is_dir() else []:
        try:
            out.append(Artifact(path=p, meta=read_header(p)))
        except RactdError:
            bad.append(p)
    out.sort(key=lambda a: (a.meta.get("created", ""), a.path.stat().st_mtime), reverse=True)
    return out, bad


def list_artifacts(directory: Path | None = None) -> list[Artifact]:
    """Every readable artifact in the store (headers only, no tensors), newest first. The files
    whose header cannot be read (:func:`scan_store`) are never silently left out of a choice:
    :func:`resolve` refuses to choose around them."""
    return scan_store(directory)[0]


def _damaged_in_the_way(ref: str, chosen: Artifact | None, kind: str | None, task: str | None, damaged: list[Path]) -> None:
    """Refuse to choose around a damaged file: ``latest`` when a damaged file of that kind and task
    is newer than the choice, an id that only a damaged file's name matches."""
    for p in damaged:
        if ref == "latest":
            prefix = f"{kind}-{task}-" if kind and task else f"{kind}-" if kind else ""
            hit = p.name.startswith(prefix) and (task is None or f"-{task}-" in p.name) and (
                chosen is None or p.stat().st_mtime >= chosen.path.stat().st_mtime)
        else:
            hit = ref in p.name
        if hit:
            raise RactdError(f"{p.name} is damaged (its header cannot be read), so `{ref}` cannot be resolved safely; "
                             f"delete it with `ractd cache rm {p.name}` and re-create it, or pass another model by id")


MADE_BY = {
    "teacher": "train-teacher",
    "inverse-dynamics": "train-teacher",
    "reward": "train-reward",
    "student": "distill",
    "proposer": "train-proposer",
}
"""The command that makes each artifact kind (named when ``latest`` of a kind is missing)."""


def resolve(ref: str | Path, *, kind: str | None = None, task: str | None = None, directory: Path | None = None) -> Path:
    """Find an artifact file by path, by id (or unique id prefix), by ``--name`` (the newest of that
    name), or as ``latest`` of kind for task."""
    p = Path(ref)
    if p.suffix == ".safetensors" and p.exists():
        return p
    ref = str(ref)
    arts, damaged = scan_store(directory)
    if ref == "latest":
        cands = [a for a in arts if (kind is None or a.kind == kind) and (task is None or a.task == task)]
        _damaged_in_the_way(ref, cands[0] if cands else None, kind, task, damaged)
        if not cands:
            what = f"{kind or 'artifact'}" + (f" for {task}" if task else "")
            if kind in MADE_BY and task:
                raise RactdError(f"no {what} in the cache; run `ractd {MADE_BY[kind]} --env {task}` first")
            raise RactdError(f"no {what} in the cache; train one first (see `ractd --help`)")
        return cands[0].path
    matches = [a for a in arts if a.id.startswith(ref) or a.path.name == ref or a.path.stem == ref]
    if not matches:  # a --name: the newest model of that name (of the kind and task asked for)
        named = [a for a in arts if a.meta.get("name") == ref and (kind is None or a.kind == kind) and (task is None or a.task == task)]
        matches = named[:1]
    if not matches:
        _damaged_in_the_way(ref, None, kind, task, damaged)
        raise RactdError(f"no artifact matches {ref!r}; list them with `ractd cache list`")
    if len({a.id for a in matches}) > 1:
        raise RactdError(f"{ref!r} matches {len(matches)} artifacts; give more characters of the id")
    return matches[0].path


def load_artifact(
    ref: str | Path, *, kind: str | None = None, task: str | None = None, directory: Path | None = None
) -> Artifact:
    """Load an artifact, checking its integrity and, if given, its kind and task.

    Raises RactdError with a one-line remedy for a missing, corrupted, truncated or mismatched file.
    """
    path = resolve(ref, kind=kind, task=task, directory=directory)
    in_cache = path.resolve().parent == (directory or models_dir()).resolve()
    delete = f"delete it with `ractd cache rm {path.name}`" if in_cache else f"delete {path}"
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        meta = read_header(path)
    except (OSError, SafetensorError, ValueError) as e:
        raise RactdError(f"artifact {path.name} is corrupted or truncated; {delete} and re-create it") from e
    if _content_id(tensors, meta) != meta.get("id"):
        raise RactdError(f"artifact {path.name} does not match its content hash (corrupted); {delete} and re-create it")
    if kind is not None and meta.get("kind") != kind:
        raise RactdError(f"artifact {meta.get('id')} is a {meta.get('kind')}, not a {kind}; pass a {kind} artifact")
    if task is not None and meta.get("task") != task:
        raise RactdError(
            f"artifact {meta.get('id')} was trained for task {meta.get('task')}, not {task}; "
            f"pass one trained for {task}"
        )
    return Artifact(path=path, meta=meta, tensors=tensors)


def remove(ref: str, directory: Path | None = None) -> list[Path]:
    """Delete artifacts of the cache matching an id prefix or file name (``all`` removes every
    artifact). A path outside the cache is refused: this deletes cached artifacts only."""
    d = directory or models_dir()
    if ref == "all":
        paths = sorted(d.glob("*.safetensors")) if d.is_dir() else []
    else:
        given = Path(ref)
        if not ref.strip() or given.name in ("", ".", "..") or ref.strip("/") == "":
            raise UsageError(f"{ref!r} names no artifact; give an id (or its first characters), a file name from `ractd cache list`, or `all`")
        if len(given.parts) > 1 and given.resolve().parent != d.resolve():
            raise UsageError(f"{ref} is not in the cache ({d}); `ractd cache rm` removes cached artifacts only: give an id or a file name")
        p = d / given.name
        if p.is_file() and p.suffix == ".safetensors":
            paths = [p]
        else:
            paths = [a.path for a in list_artifacts(d) if a.id.startswith(ref)]
            if not paths:
                raise RactdError(f"no artifact matches {ref!r}; list them with `ractd cache list`")
            if len(paths) > 1:
                raise RactdError(f"{ref!r} matches {len(paths)} artifacts; give more characters of the id")
    for p in paths:
        p.unlink()
    return paths

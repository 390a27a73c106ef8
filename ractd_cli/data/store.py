"""Where datasets live: ``<cache_root>/datasets`` is a Minari data path.

A dataset with id ``ns/name-vN`` sits in ``<cache_root>/datasets/ns/name-vN/data/`` (Minari's layout), so
``MINARI_DATASETS_PATH=<cache_root>/datasets python -c "import minari; minari.load_dataset(id)"``
opens it too. Work in progress is staged in hidden sibling folders (``.staging-*``) that Minari ignores
and is moved into place with one rename, so a dataset folder either is complete or does not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from ..adapters import TaskSpec
from ..locks import exclusive
from ..paths import cache_root

LOCAL_DATASET_NAME = "local-v0"
COMBINED_DATASET_NAME = "minari-combined-v0"
_NAMESPACE_METADATA = "namespace_metadata.json"


def datasets_dir(root: Path | str | None = None) -> Path:
    """``<root>/datasets`` (root defaults to :func:`ractd_cli.paths.cache_root`)."""
    return Path(root if root is not None else cache_root()) / "datasets"


def dataset_path(dataset_id: str, root: Path | str | None = None) -> Path:
    """The Minari dataset folder of ``dataset_id`` (its files are under ``data/``)."""
    return datasets_dir(root) / dataset_id


def dataset_exists(dataset_id: str, root: Path | str | None = None) -> bool:
    data = dataset_path(dataset_id, root) / "data"
    return (data / "metadata.json").is_file()


CHECKSUMS = "ractd-checksums.json"
"""Beside a dataset's files in ``data/``: the SHA-256 of each (``metadata.json`` aside), written
when ``fetch`` publishes it, checked before it is read (:func:`dataset_problem`)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(data_dir: Path) -> None:
    """Record the checksum of every data file of a dataset folder (before it is published)."""
    sums = {p.name: _sha256(p) for p in sorted(data_dir.iterdir()) if p.is_file() and p.name not in ("metadata.json", CHECKSUMS)}
    (data_dir / CHECKSUMS).write_text(json.dumps(sums, indent=1, sort_keys=True))


def dataset_problem(dataset_id: str, root: Path | str | None = None) -> str | None:
    """What is wrong with a dataset in the cache (a file missing or changed since ``fetch`` wrote
    it, unreadable metadata), or None. A dataset fetched before checksums were recorded is only
    checked for its metadata."""
    data = dataset_path(dataset_id, root) / "data"
    try:
        json.loads((data / "metadata.json").read_text())
    except (OSError, ValueError) as e:
        return f"its metadata.json is unreadable ({type(e).__name__})"
    try:
        sums = json.loads((data / CHECKSUMS).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return f"its {CHECKSUMS} is unreadable ({type(e).__name__})"
    for name, digest in sums.items():
        f = data / name
        if not f.is_file():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} has changed since it was fetched (truncated or overwritten)"
    return None


def _nbytes(x: Any) -> int:
    if isinstance(x, dict):
        return sum(_nbytes(v) for v in x.values())
    return int(getattr(x, "nbytes", 0))


def check_room(buffers: Any, root: Path | str | None = None) -> None:
    """Refuse to write episodes the disk (or the process's file-size limit, ``ulimit -f``) cannot
    hold: the HDF5 writer does not fail cleanly when a write is cut short (it can crash the
    process). The need is the arrays' size plus a quarter for HDF5's own structures."""
    import resource

    from ..errors import RactdError

    need = int(1.25 * sum(_nbytes(getattr(b, k, None)) for b in buffers
                          for k in ("observations", "actions", "rewards", "terminations", "truncations")))
    base = datasets_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    if need > free:
        raise RactdError(f"not enough disk space for the dataset: it needs about {need / 1e6:,.0f} MB and {base} has "
                         f"{free / 1e6:,.0f} MB free; free some space (`ractd cache rm` old models) or generate fewer --steps")
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and need > soft:
        raise RactdError(f"the dataset needs about {need / 1e6:,.0f} MB but this shell limits files to {soft / 1e6:,.0f} MB "
                         f"(`ulimit -f`); raise the limit or generate fewer --steps")


def local_dataset_id(spec: TaskSpec) -> str:
    """Id of the locally generated dataset of a task: ``ractd/<task>/local-v0``."""
    return f"ractd/{spec.name}/{LOCAL_DATASET_NAME}"


def remote_dataset_id(spec: TaskSpec) -> str:
    """Id under which the task's remote data is used: the Minari id itself, or, where the task lists
    several, ``ractd/<task>/minari-combined-v0`` (their combination)."""
    if not spec.minari_ids:
        raise ValueError(f"task {spec.name} has no remote Minari dataset")
    if len(spec.minari_ids) == 1:
        return spec.minari_ids[0]
    return f"ractd/{spec.name}/{COMBINED_DATASET_NAME}"


def read_metadata(dataset_id_or_path: str | Path, root: Path | str | None = None) -> dict[str, Any]:
    """The raw metadata (``data/metadata.json``) of a dataset given by id or folder."""
    with open(resolve_data_dir(dataset_id_or_path, root) / "metadata.json") as f:
        return json.load(f)


def recipe_in(metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``ractd`` block of a dataset's metadata (:func:`read_metadata`): how a local dataset was
    made (``steps``, ``seed``, ``made_on``, the generator's own record); {} for a download."""
    return dict(metadata.get("ractd") or {})


def local_recipe(dataset_id_or_path: str | Path, root: Path | str | None = None) -> dict[str, Any]:
    """:func:`recipe_in` of a dataset given by id or folder; {} for a download or an unreadable dataset."""
    try:
        return recipe_in(read_metadata(dataset_id_or_path, root))
    except (OSError, ValueError):
        return {}


def recipe_threads(recipe: dict[str, Any]) -> int | None:
    """The torch thread count a local dataset was generated on, from its :func:`local_recipe`; None
    for a dataset made before ractd recorded it (or downloaded)."""
    return (recipe.get("made_on") or {}).get("threads")


def resolve_data_dir(dataset_id_or_path: str | Path, root: Path | str | None = None) -> Path:
    """The ``data/`` folder of a dataset given by id (in our cache) or by a folder path (the dataset
    folder or its ``data/`` folder)."""
    p = Path(dataset_id_or_path)
    if isinstance(dataset_id_or_path, Path) or p.is_absolute() or p.exists():
        if (p / "metadata.json").is_file():
            return p
        return p / "data"
    return dataset_path(str(dataset_id_or_path), root) / "data"


@contextlib.contextmanager
def minari_datapath(path: Path) -> Iterator[Path]:
    """Point Minari (``MINARI_DATASETS_PATH``) at ``path`` for the duration of the block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_folders(root: Path | str | None = None) -> list[Path]:
    """Hidden work folders of ``fetch`` runs that died (``kill -9``, a crash): a staging folder
    whose process is gone, or a replaced dataset not yet deleted."""
    base = datasets_dir(root)
    out = []
    for p in sorted(base.glob(".staging-*")) + sorted(base.glob(".trash-*")) if base.is_dir() else []:
        parts = p.name.split("-")
        pid = int(parts[1]) if p.name.startswith(".staging-") and len(parts) == 3 and parts[1].isdigit() else None
        if pid is None or not _alive(pid):
            out.append(p)
    return out


def fetch_lock(dataset_id: str, root: Path | str | None = None) -> Path:
    """The lock file held while one process makes ``dataset_id`` (:func:`fetching`)."""
    return datasets_dir(root) / f".fetch-{dataset_id.replace('/', '--')}.lock"


@contextlib.contextmanager
def fetching(dataset_id: str, root: Path | str | None = None) -> Iterator[None]:
    """Held while this process generates or downloads ``dataset_id``: a second ``ractd fetch`` of
    the same dataset stops at once with what to do, rather than doing the same work beside it (a
    local MuJoCo dataset's SAC run, Kitchen's episode chunks) and writing the same files."""
    busy = (f"{dataset_id}: another ractd process is making this dataset now ({{lock}}); wait for it to finish "
            "(the dataset then comes from the cache) or stop it (Ctrl-C; a local run continues where it stopped) "
            "and run the same command again")
    with exclusive(fetch_lock(dataset_id, root), busy):
        yield


@contextlib.contextmanager
def staging_area(root: Path | str | None = None) -> Iterator[Path]:
    """A fresh hidden folder next to the datasets (named by this process), removed on exit whatever
    happens; the folders of dead runs (:func:`stale_folders`) are removed first."""
    base = datasets_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    for old in stale_folders(root):
        shutil.rmtree(old, ignore_errors=True)
    stage = base / f".staging-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, dataset_id: str, *, replace: bool, root: Path | str | None = None) -> bool:
    """Move the complete dataset ``stage/<dataset_id>`` into the cache with one rename.

    If the target exists: with ``replace`` the old one is first renamed aside (then deleted), so the
    target is at every moment either the complete old dataset, absent, or the complete new one;
    without ``replace`` nothing is moved and False is returned (someone else finished first).
    Namespace metadata files found in the stage are copied where missing.
    """
    src = stage / dataset_id
    dst = dataset_path(dataset_id, root)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if (src / "data").is_dir():
        write_checksums(src / "data")
    _copy_namespace_metadata(stage, dataset_id, root)
    trash: Path | None = None
    if dst.exists():
        if not replace:
            return False
        trash = datasets_dir(root) / f".trash-{uuid.uuid4().hex[:12]}"
        os.rename(dst, trash)
    try:
        os.rename(src, dst)
    except OSError:
        if trash is not None and not dst.exists():
            os.rename(trash, dst)  # put the old one back
            trash = None
        if replace or not dst.exists():
            raise
        return False  # lost a race to a concurrent fetch of the same dataset
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return True


def _copy_namespace_metadata(stage: Path, dataset_id: str, root: Path | str | None) -> None:
    parts = dataset_id.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        ns = "/".join(parts[:i])
        src = stage / ns / _NAMESPACE_METADATA
        dst = datasets_dir(root) / ns / _NAMESPACE_METADATA
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)

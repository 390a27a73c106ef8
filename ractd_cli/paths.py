"""Where ractd keeps its files: one cache root holding ``models/``, ``datasets/``, ``runs/`` (event
files), ``checkpoints/`` (interrupted and unreleased training runs) and plugins' own folders (the
MuJoCo plugin's ``sac/``)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_VAR = "RACTD_CACHE_DIR"


def cache_root() -> Path:
    """The cache root: ``$RACTD_CACHE_DIR`` if set, else the platform's user cache dir for ractd."""
    override = os.environ.get(ENV_VAR)
    root = Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("ractd"))
    return root


def models_dir() -> Path:
    return cache_root() / "models"


def datasets_dir() -> Path:
    return cache_root() / "datasets"


def runs_dir() -> Path:
    """Where training runs write their TensorBoard event files by default (``--log-dir``)."""
    return cache_root() / "runs"


CACHE_PARTS = {
    "datasets": "datasets (Minari layout), fetched or generated",
    "runs": "TensorBoard event files of training runs",
    "checkpoints": "checkpoints of interrupted training runs (`--resume`)",
    "sac": "the MuJoCo plugin's SAC runs behind `fetch --source local`",
}
"""The cache's folders besides ``models/``, with what each holds (``cache list`` and ``cache rm``)."""


def folder_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path`` (0, 0 where it does not exist)."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)

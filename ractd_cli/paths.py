"""Where ractd keeps its files: one cache root holding ``datasets/`` and ``models/``."""

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

"""The shared data pipeline: fetch a task's Minari dataset, load its episodes, cut training windows.

No task-specific code lives here; everything task-specific comes from the task's adapter
(:mod:`ractd_cli.adapters`).

    dataset_id = fetch(adapter, spec, source="local", steps=20_000, seed=0, force=False)
    episodes = load_episodes(adapter, spec, dataset_id)
    windows = make_windows(episodes, spec)
    batch = windows.batch(np.random.randint(len(windows), size=256))
"""

from .fetch import default_steps, fetch
from .load import Episode, load_episodes, open_dataset
from .store import (
    dataset_exists,
    dataset_path,
    datasets_dir,
    local_dataset_id,
    read_metadata,
    remote_dataset_id,
)
from .windows import Normalizer, Windows, make_windows, returns_to_go

__all__ = [
    "Episode",
    "Normalizer",
    "Windows",
    "dataset_exists",
    "dataset_path",
    "datasets_dir",
    "default_steps",
    "fetch",
    "load_episodes",
    "local_dataset_id",
    "make_windows",
    "open_dataset",
    "read_metadata",
    "remote_dataset_id",
    "returns_to_go",
]

"""PNG figures for ``ractd bench --plot``: the return distribution of every method (the paper's
Figure 3 mode-selection picture) and, for state-planning tasks, each method's planned path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .adapters import TaskSpec
from .evaluate import RolloutResult


def plot_bench(
    out: Mapping[str, Any], results: Mapping[str, RolloutResult], spec: TaskSpec, path: Path,
    plans: Mapping[str, np.ndarray] | None = None, background=None,
) -> Path:
    """Write the bench figure to ``path`` (PNG) atomically enough: into a temp name, then rename."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plans = plans or {}
    ncols = 2 if plans else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols + (2.5 if plans else 0), 4.5), squeeze=False)
    ax = axes[0, 0]
    methods = [r["method"] for r in out["rows"] if r["method"] in results]
    if methods:
        data = [[e.ret for e in results[m].episodes] for m in methods]
        ax.violinplot(data, showmeans=True, showextrema=True) if all(len(set(d)) > 1 for d in data) else ax.boxplot(data)
        rng = np.random.default_rng(0)
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=8, alpha=0.5, color="black")
        ax.set_xticks(range(1, len(methods) + 1), [_short(m) for m in methods], rotation=30, ha="right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "latency only: no rollouts", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("episode return")
    ax.set_title(f"{spec.name}: return distribution per method")
    if plans:
        ax2 = axes[0, 1]
        if background is not None:
            background(ax2)
        colors = plt.get_cmap("tab10" if len(plans) <= 10 else "tab20").colors
        for i, (name, xy) in enumerate(plans.items()):
            ax2.plot(xy[:, 0], xy[:, 1], "-", lw=1.5, color=colors[i % len(colors)], label=_short(name))
            ax2.plot(xy[0, 0], xy[0, 1], "o", color="black", ms=4)
        ax2.set_aspect("equal")
        ax2.set_title("planned paths from the first evaluation start")
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # beside the maze, not on it
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def _short(method: str) -> str:
    return method.replace(" student", "").replace("(reward weight 0)", "").replace("EDM teacher ", "teacher ").strip()


def plot_sweep(curves: Mapping[str, list[dict]], task: str, scale: str, path: Path) -> Path:
    """The paper's Figure 4 (``ractd reproduce TASK --what sweep``): score against training step, one
    curve per reward weight (``curves``: weight -> evaluation points with step, score_mean, score_stderr)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for w, c in curves.items():
        ax.errorbar([p["step"] for p in c], [p["score_mean"] for p in c], yerr=[p["score_stderr"] for p in c],
                    marker="o", capsize=3, label=f"w = {w}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"normalised score ({scale})")
    ax.set_title(f"{task}: score by reward weight (paper Fig. 4)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

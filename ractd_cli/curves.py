"""``ractd curves``: the training curves of a task's runs, read from their TensorBoard event files
(``train.loop`` writes each loss term and the learning rate every step) without a TensorBoard server."""

from __future__ import annotations

from pathlib import Path

from .errors import RactdError, UsageError


def run_dirs(log_dir: Path, task: str) -> list[Path]:
    """The run folders of ``task`` under ``log_dir`` (``<model>-<task>-<key>``), newest first."""
    if not log_dir.is_dir():
        return []
    runs = [d for d in log_dir.iterdir() if d.is_dir() and f"-{task}-" in f"{d.name}" and any(d.glob("events.out.tfevents.*"))]
    return sorted(runs, key=lambda d: max(f.stat().st_mtime for f in d.glob("events.out.tfevents.*")), reverse=True)


def read_run(run: Path) -> dict[str, dict[str, list[float]]]:
    """{tag: {"step": [...], "value": [...]}} of every scalar in the run's event files (all of them,
    resumed runs included), in step order."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise UsageError("reading event files needs the tensorboard package: pip install 'ractd[watch]' (or `make install`)") from None
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    try:
        acc.Reload()
    except Exception as e:  # a corrupt or foreign file
        raise RactdError(f"{run} holds unreadable event files ({type(e).__name__}); delete the folder") from e
    out = {}
    for tag in acc.Tags().get("scalars", []):
        events = sorted(acc.Scalars(tag), key=lambda e: e.step)
        out[tag] = {"step": [e.step for e in events], "value": [e.value for e in events]}
    return out


def _plot_evaluations(ax, run: str, tags: dict[str, dict[str, list[float]]]) -> None:
    """The run's evaluations during training (``--eval-every``): the score with its standard error
    and, where recorded, the success rate (twin axis, %); a note where the run has none."""
    score, err = tags.get("eval/score_mean"), tags.get("eval/score_stderr")
    if score is None:
        ax.text(0.5, 0.5, "no evaluation during training (--eval-every)", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_axis_off()
        return
    ax.errorbar(score["step"], score["value"], yerr=err["value"] if err and len(err["value"]) == len(score["value"]) else None,
                marker="o", ms=3, lw=1, capsize=2, label="score")
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.set_title(f"{run}: evaluations", fontsize=9)
    success = tags.get("eval/success_rate")
    if success is not None:
        ax2 = ax.twinx()
        ax2.plot(success["step"], [100 * v for v in success["value"]], color="tab:green", ls=":", marker=".", lw=0.8)
        ax2.set_ylabel("success %", color="tab:green")


def plot_curves(curves: dict[str, dict[str, dict[str, list[float]]]], path: Path) -> Path:
    """One panel per run: every loss term against the step (log scale), the learning rate on a twin axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(curves), 1)
    evaluated = any(tag.startswith("eval/") for tags in curves.values() for tag in tags)
    fig, axes = plt.subplots(n, 2 if evaluated else 1, figsize=(14 if evaluated else 8, 3.2 * n), squeeze=False)
    for row, (run, tags) in enumerate(curves.items()):
        if evaluated:
            _plot_evaluations(axes[row, 1], run, tags)
    for ax, (run, tags) in zip(axes[:, 0], curves.items()):
        for tag, c in tags.items():
            if tag.startswith("loss/"):
                ax.plot(c["step"], [abs(v) for v in c["value"]], label=tag[5:], lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("|loss term|")
        ax.set_title(run, fontsize=9)
        if "lr" in tags:
            ax2 = ax.twinx()
            ax2.plot(tags["lr"]["step"], tags["lr"]["value"], color="0.6", ls="--", lw=0.8)
            ax2.set_ylabel("learning rate", color="0.4")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path

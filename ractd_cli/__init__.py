"""ractd: Reward-Aware Consistency Trajectory Distillation for offline RL planners."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ractd")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

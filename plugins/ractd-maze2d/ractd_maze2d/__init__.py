"""ractd plugin: Maze2d tasks (gymnasium-robotics PointMaze) for goal-conditioned state planning.

Registered under the entry-point group ``ractd.envs`` as ``maze2d = "ractd_maze2d:adapter"``.
"""

from .adapter import Maze2dAdapter
from .planner import GridPlanner, WaypointController

adapter = Maze2dAdapter()

__all__ = ["GridPlanner", "Maze2dAdapter", "WaypointController", "adapter"]

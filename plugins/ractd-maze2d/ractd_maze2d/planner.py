"""Waypoint planning and control for PointMaze, after the recipe of Minari's pointmaze datasets.

- :class:`GridPlanner`: Q-value iteration over the maze's cells (4-neighbour moves, reward 1 for
  stepping into the goal cell, 50 iterations, discount 0.99) gives, for every free cell, the next cell
  on a shortest path to the goal cell. Tables are cached per goal cell.
- :class:`WaypointController`: follows those cell-to-cell waypoints with a PD law,
  ``clip(10 * (target - pos) - 1.0 * vel, -1, 1)``. It switches to the next waypoint within 0.1 of the
  current one; intermediate waypoints are cell centres shifted by ``-U(0, 1) * 0.2`` on each axis, the
  last one is the goal itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# (d_row, d_col) of the four moves
MOVES = np.array([(0, 1), (0, -1), (-1, 0), (1, 0)], dtype=np.int64)


class GridPlanner:
    """Shortest cell paths on a maze grid by Q-value iteration (cached per goal cell)."""

    def __init__(self, maze_map: Any, iterations: int = 50, discount: float = 0.99):
        grid = np.asarray(maze_map, dtype=object)
        self.free = np.array([[cell != 1 for cell in row] for row in grid.tolist()], dtype=bool)
        self.rows, self.cols = self.free.shape
        self.iterations = int(iterations)
        self.discount = float(discount)
        n = self.rows * self.cols
        r, c = np.divmod(np.arange(n), self.cols)
        nr = r[:, None] + MOVES[None, :, 0]
        nc = c[:, None] + MOVES[None, :, 1]
        inside = (nr >= 0) & (nr < self.rows) & (nc >= 0) & (nc < self.cols)
        nr_c, nc_c = np.clip(nr, 0, self.rows - 1), np.clip(nc, 0, self.cols - 1)
        self.valid = inside & self.free[nr_c, nc_c]  # (S, 4): the move lands in a free cell
        self.next_state = np.where(self.valid, nr_c * self.cols + nc_c, 0)  # (S, 4)
        self._tables: dict[tuple[int, int], np.ndarray] = {}

    def q_values(self, goal_cell: tuple[int, int]) -> np.ndarray:
        """(S, 4) Q-values for reaching ``goal_cell``; invalid moves keep value 0 (they lead nowhere)."""
        goal = goal_cell[0] * self.cols + goal_cell[1]
        reward = (self.valid & (self.next_state == goal)).astype(np.float64)
        q = np.zeros_like(reward)
        for _ in range(self.iterations):
            v = q.max(axis=1)
            q = reward + self.discount * np.where(self.valid, v[self.next_state], 0.0)
        return q

    def next_cells(self, goal_cell: tuple[int, int]) -> np.ndarray:
        """(rows, cols, 2) int: for each cell the next cell on the way to ``goal_cell``."""
        key = (int(goal_cell[0]), int(goal_cell[1]))
        table = self._tables.get(key)
        if table is None:
            q = np.where(self.valid, self.q_values(key), -np.inf)
            best = np.argmax(q, axis=1)
            nxt = self.next_state[np.arange(len(best)), best]
            table = np.stack(np.divmod(nxt, self.cols), axis=-1).reshape(self.rows, self.cols, 2)
            self._tables[key] = table
        return table

    def path(self, start_cell: tuple[int, int], goal_cell: tuple[int, int]) -> list[tuple[int, int]]:
        """Cells from ``start_cell`` (excluded) to ``goal_cell`` (included); [] if already there."""
        table = self.next_cells(goal_cell)
        cell, out = (int(start_cell[0]), int(start_cell[1])), []
        for _ in range(self.rows * self.cols):
            if cell == tuple(goal_cell):
                return out
            cell = (int(table[cell][0]), int(table[cell][1]))
            out.append(cell)
        raise ValueError(f"no path from {start_cell} to {goal_cell}")


class WaypointController:
    """PD controller along the planner's waypoints (see the module docstring).

    ``maze`` is a gymnasium-robotics ``Maze`` (``env.unwrapped.maze``): it converts between cells and
    x/y. ``rng`` draws the waypoint jitter.
    """

    def __init__(
        self,
        maze: Any,
        rng: np.random.Generator,
        *,
        p_gain: float = 10.0,
        d_gain: float = -1.0,
        threshold: float = 0.1,
        jitter: float = 0.2,
        planner: GridPlanner | None = None,
    ):
        self.maze = maze
        self.rng = rng
        self.p_gain, self.d_gain = float(p_gain), float(d_gain)
        self.threshold, self.jitter = float(threshold), float(jitter)
        self.planner = planner or GridPlanner(maze.maze_map)
        self._goal_xy: np.ndarray | None = None
        self._goal_cell: tuple[int, int] = (-1, -1)
        self._table: np.ndarray | None = None
        self._target_cell: tuple[int, int] = (-1, -1)
        self._target_xy = np.zeros(2)

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        i, j = self.maze.cell_xy_to_rowcol(xy)
        return int(i), int(j)

    def _retarget(self, pos: np.ndarray, goal_xy: np.ndarray) -> None:
        self._goal_xy = np.array(goal_xy, dtype=np.float64)
        self._goal_cell = self.cell(goal_xy)
        self._table = self.planner.next_cells(self._goal_cell)
        here = self.cell(pos)
        if here == self._goal_cell:
            self._target_cell, self._target_xy = self._goal_cell, self._goal_xy
        else:
            self._target_cell = tuple(int(v) for v in self._table[here])
            self._target_xy = self._cell_target(self._target_cell, jitter=False)

    def _cell_target(self, cell: tuple[int, int], jitter: bool = True) -> np.ndarray:
        if cell == self._goal_cell:
            return self._goal_xy
        xy = np.asarray(self.maze.cell_rowcol_to_xy(np.array(cell)), dtype=np.float64)
        if jitter:
            xy = xy - self.rng.uniform(size=2) * self.jitter
        return xy

    def action(self, observation: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        """Clipped PD action, shape (2,), for observation (x, y, vx, vy) and goal (x, y)."""
        o, g = observation, goal_xy
        return np.array(self.action_xy(float(o[0]), float(o[1]), float(o[2]), float(o[3]), float(g[0]), float(g[1])))

    def action_xy(self, x: float, y: float, vx: float, vy: float, gx: float, gy: float) -> tuple[float, float]:
        """:meth:`action` on plain floats (the data generator's hot loop: ~3x faster than numpy here)."""
        goal = self._goal_xy
        if goal is None or abs(goal[0] - gx) > 1e-3 or abs(goal[1] - gy) > 1e-3:
            self._retarget(np.array([x, y]), np.array([gx, gy]))
        tx, ty = self._target_xy
        if self._target_cell != self._goal_cell:
            dx, dy = tx - x, ty - y
            if dx * dx + dy * dy <= self.threshold * self.threshold:
                assert self._table is not None
                self._target_cell = (int(self._table[self._target_cell][0]), int(self._table[self._target_cell][1]))
                self._target_xy = self._cell_target(self._target_cell)
                tx, ty = self._target_xy
        ax = self.p_gain * (tx - x) + self.d_gain * vx
        ay = self.p_gain * (ty - y) + self.d_gain * vy
        return (min(1.0, max(-1.0, ax)), min(1.0, max(-1.0, ay)))

"""The ``maze2d`` adapter: goal-conditioned open-loop state planning on gymnasium-robotics PointMaze.

Tasks ``maze2d-umaze`` / ``maze2d-medium`` / ``maze2d-large`` run on ``PointMaze_{UMaze,Medium,Large}-v3``
and use the Minari datasets ``D4RL/pointmaze/{umaze,medium,large}-v2``.

- State: ``obs["observation"]`` = (x, y, vx, vy); goal: ``obs["desired_goal"]`` = (x, y).
- Evaluation env: ``continuing_task=True, reset_target=False`` (the goal stays put; the sparse reward
  pays 1 for every step within 0.45 of it), time limit 300 / 600 / 800 steps, one fixed goal cell per
  task and a uniformly drawn start cell per episode (:meth:`Maze2dAdapter.reset_options`).
- Scores: ``normalized_score`` uses D4RL's maze2d-v1 reference returns by default (scale ``d4rl``, the
  RACTD paper's), or Minari's, computed on this very env (scale ``minari``); see ``_REF_SCORES``.
- Local data (``fetch --source local``): Minari's pointmaze recipe, see :meth:`Maze2dAdapter.generate`.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ractd_cli.adapters import EnvAdapter, TaskSpec, quiet_import
from ractd_cli.data.recording import ProgressBatcher

from .planner import GridPlanner, WaypointController

# Fixed evaluation goal cells: the "g" cells of the evaluation maps in Farama's
# minari-dataset-generation-scripts (scripts/pointmaze), which the reference scores were computed on.
_EVAL_GOAL_CELLS = {"umaze": (1, 1), "medium": (6, 6), "large": (7, 9)}
_ENV_IDS = {"umaze": "PointMaze_UMaze-v3", "medium": "PointMaze_Medium-v3", "large": "PointMaze_Large-v3"}
_HORIZONS = {"umaze": 128, "medium": 256, "large": 384}
_MAX_STEPS = {"umaze": 300, "medium": 600, "large": 800}
# Reference returns (random policy, expert) per score scale:
# - "d4rl": D4RL's maze2d-{umaze,medium,large}-v1 REF_MIN_SCORE / REF_MAX_SCORE, the scale the RACTD
#   paper (and Diffuser) report. Computed on D4RL's mujoco-py maze2d env (other time limits), so a
#   score here is on the paper's scale, not a reproduction of its env.
# - "minari": Minari's published reference scores of D4RL/pointmaze/*-v2 (random policy / waypoint
#   controller on the evaluation env above); also written into locally generated datasets' metadata.
_REF_SCORES = {
    "d4rl": {"umaze": (23.85, 161.86), "medium": (13.13, 277.39), "large": (6.7, 273.99)},
    "minari": {"umaze": (13.49, 218.70), "medium": (17.66, 361.05), "large": (3.55, 462.26)},
}

ACTION_NOISE_STD = 0.5
SUCCESS_RADIUS = 0.45

# Point-mass dynamics of gymnasium-robotics' point.xml (sphere r=0.1, density 1000, gear 100,
# joint damping 1, dt 0.01, Euler with implicit damping): v' = ALPHA v + BETA a, p' = p + DT v'.
DT = 0.01
_MASS = 1000.0 * 4.0 / 3.0 * np.pi * 0.1**3
ALPHA = 1.0 / (1.0 + DT * 1.0 / _MASS)
BETA = DT * 100.0 / _MASS * ALPHA
FOLLOW_GAIN = 5.0

# Loss weights (alpha, beta, sigma) per maze, and the reward term's scale kappa (TaskSpec.reward_scale).
# The paper gives no weights for Maze2d (its Table 9 is MuJoCo's). The RACTD authors' code
# (configs/guided_ctmp_maze_{sm,med,lg}.yaml) weights its reward term 1e-4 (umaze, medium) and 1e-5
# (large) on the SUM over the plan's H states of a per-state reward model r(s) fitted to the
# normalised discounted return-to-go (gamma 0.99; no goal input: their data have one fixed goal).
# Ours is the mean over the plan of R_psi(s_t, goal at rest) in [-1, 1] (the goal as an input: our data
# have many goals), so their weighting is kappa = H x their per-state weight on our mean: 128e-4
# (umaze), 256e-4 (medium), 384e-5 (large). sigma = 1 is then their code's weighting, the default.
# Before 2026-12-06 kappa was 1 and sigma 0.1 (chosen by measurement under the earlier goal
# conditioning, docs/notes/lab-log.md): on maze2d-large that is 26 times the authors' weight, and the
# user's `--reward-weight 1.0` 260 times, which drew 99% of plans through walls (docs/results.md).
LOSS_WEIGHTS = {"umaze": (1.0, 1.0, 1.0), "medium": (1.0, 1.0, 1.0), "large": (1.0, 1.0, 1.0)}
REWARD_SCALE = {"umaze": 0.0128, "medium": 0.0256, "large": 0.00384}  # H x 1e-4, 1e-4, 1e-5

# ``--preset quick`` on a 2-core CPU: a plan is 128-384 states, so the U-Net is the ``small`` one
# (widths 16/32/64) at batch 32. Students take 1600 steps: on umaze under the endpoint conditioning
# the CTD student at 400 steps scored 63.2 ± 7.0 (59% success), at 1600 steps 96.9 ± 5.4 (83%).
QUICK = {"net": "small", "teacher": 3000, "student": 1600, "batch_size": 32, "lr": 1e-3}
# maze2d-large: 384-state plans are too long for that teacher on a CPU (at full resolution its Heun
# plans succeed in 5% of episodes). Plans of every 8th state (48 knots, joined by straight lines) at
# batch 128: a CPU sizing like the network's, recorded in the artifacts and in every result
# (docs/results.md, "Maze2d as the authors plan it"). 24000 teacher steps (about 3 epochs of the
# 1M-step data; the authors train 400): against 8000, its Heun plans crossed a wall in 23% of 100
# episodes instead of 50% (success 71% vs 57%, score 112.1 vs 78.8) and the CTD student scored 53.4
# instead of 29.5. Its inverse dynamics took as many steps (94 s), as measured. The same chain time spent
# as 16000 teacher steps and 3200-step students (2026-12-07, docs/results.md): the teacher scored on par
# (178.9, 8% of plans through a wall), its RACTD student 154.6 against 151.5 but through a wall in 31%
# of episodes against 15%, so the teacher keeps its 24000 steps.
# maze2d-medium takes the same sizing (32 knots for its 256 states): measured under the endpoint
# conditioning (docs/results.md), its Heun teacher scored 119.4 ± 4.7 (88% success, 6% of plans through
# a wall) and the RACTD student 115.9 ± 4.9 (87%), against 5.3 ± 3.5 and 18.7 ± 4.8 with QUICK
# (every state, 3000 steps at batch 32), where every planner planned through walls.
QUICK_LARGE = {**QUICK, "teacher": 24000, "inverse-dynamics": 24000, "batch_size": 128, "plan_stride": 8}
# maze2d-large's quick preset also plans 512 states (64 knots) instead of the paper's 384 (Table 2): the
# local data's trips of 15 cells and more take 450-570 steps, and of its 100 evaluation starts (seed 7)
# the 12 at 15-19 cells had every 384-state plan cross a wall. With 512 (docs/results.md) the Heun
# teacher scored 183.6 ± 7.4 against 168.3 ± 9.4 (success 91% vs 79%, plans through a wall 8% vs 17%)
# and the RACTD student 151.3 ± 9.1 against 137.5 ± 10.4 (80% vs 72%; 16% vs 22%); the teacher trains
# about 1.2 times longer. Recorded in the artifacts and in every result; `--horizon 384` is the paper's.
QUICK_BY_MAZE = {"umaze": QUICK, "medium": QUICK_LARGE, "large": {**QUICK_LARGE, "horizon": 512}}
# Training windows per maze (TaskSpec.windows). The authors' code trains on full windows (pad_after 0) of
# D4RL's one continuing run. Our local data are cut into episodes at every goal reached; ``full`` joins
# them again, so no training window ends at rest, while evaluation asks for a plan that ends at the goal
# at rest. ``padded`` ends a window that runs past a goal reached at that state, at rest. On maze2d-large
# (docs/results.md, 100 episodes) it lifted the Heun teacher from 112.1 to 168.3 and the CTD student from
# 53.4 to 140.1, and plans from starts within 10 cells of the goal stopped crossing walls (0% against 30%);
# on maze2d-umaze the teacher from 120.4 to 136.8 and CTD from 96.9 to 112.7; on maze2d-medium (bench's
# 100 starts) the teacher from 119.4 to 128.7 and CTD from 105.3 to 118.8, CTD's plans through a wall from
# 21% to 9%. So all three take ``padded``.
WINDOWS = {"umaze": "padded", "medium": "padded", "large": "padded"}
# ``--preset paper``: the RACTD authors' maze configs where they differ from ractd's paper preset
# (configs/edm_maze2d_*.yaml: teacher weight decay 1e-4; guided_ctmp_maze_{sm,med,lg}.yaml: student
# batch 1400 / 320 / 320, weight decay 1e-6).
PAPER_STUDENT_BATCH = {"umaze": 1400, "medium": 320, "large": 320}


def _paper(maze: str) -> dict:
    return {"kinds": {"teacher": {"weight_decay": 1e-4}, "student": {"batch_size": PAPER_STUDENT_BATCH[maze], "weight_decay": 1e-6}}}


# The RACTD paper's figures for `bench`'s rows (D4RL scale, mean ± standard error): the EDM teacher
# from Table 11, CTD and RACTD from Table 2 (same numbers in Table 11). The paper's DDIM/DDPM rows
# sample a DDPM-trained model, not the EDM teacher: no figure for our Euler/ancestral rows.
PAPER_SCORES = {
    "umaze": {"teacher-heun": "125.4 ± 0.6 (T11)", "ctd-1": "123.4 ± 1.0 (T2)", "ractd-1": "125.7 ± 0.6 (T2)"},
    "medium": {"teacher-heun": "120.1 ± 4.2 (T11)", "ctd-1": "119.8 ± 4.1 (T2)", "ractd-1": "130.8 ± 1.8 (T2)"},
    "large": {"teacher-heun": "149.0 ± 0.5 (T11)", "ctd-1": "127.1 ± 6.4 (T2)", "ractd-1": "143.8 ± 0.0 (T2)"},
}


def _spec(maze: str) -> TaskSpec:
    lo, hi = _REF_SCORES["minari"][maze]
    env_id = _ENV_IDS[maze]
    return TaskSpec(
        name=f"maze2d-{maze}",
        env_id=env_id,
        obs_dim=4,
        act_dim=2,
        # the RACTD authors' conditioning (their edm_policy_maze.py and Maze2d env runner): a plan of H
        # states given its first and last state; trained on the data's own windows, evaluated with the
        # goal at rest as the last state (ractd_cli.layouts.EndpointPlans)
        planning="endpoints",
        horizon=_HORIZONS[maze],
        history=1,
        goal_dim=2,
        gamma=0.99,
        termination_penalty=0.0,  # the data have no terminations; episodes end (truncate) at the goal
        max_episode_steps=_MAX_STEPS[maze],
        minari_ids=(f"D4RL/pointmaze/{maze}-v2",),
        local_generation=(
            f"Minari pointmaze recipe on {env_id}: one continuing run, new goal on arrival, "
            f"Q-iteration waypoints + PD controller with N(0, {ACTION_NOISE_STD}^2) action noise"
        ),
        loss_weights=LOSS_WEIGHTS[maze],
        reward_scale=REWARD_SCALE[maze],
        windows=WINDOWS[maze],
        model_preset=f"maze2d-{maze}",  # paper Table 6
        presets={"quick": QUICK_BY_MAZE[maze], "paper": _paper(maze)},
        goal_dims=(0, 1),  # the goal is the position (x, y) ...
        rest_dims=(2, 3),  # ... at rest: (vx, vy) = 0
        ref_min_score=lo,  # Minari's, for the dataset metadata
        ref_max_score=hi,
        ref_scores={scale: refs[maze] for scale, refs in _REF_SCORES.items()},
        paper_scores=PAPER_SCORES[maze],
        # The Trajectory Diffuser's guidance, its authors' main.py (maze2d-*: 1.1). It plans the task's
        # horizon open loop like the other planners here (its authors replan 32-128 states every step).
        trajdiffuser={"guidance": 1.1},
        extra={
            "maze": maze,
            "eval_goal_cell": _EVAL_GOAL_CELLS[maze],
            "local_steps": 1_000_000,
            "success_radius": SUCCESS_RADIUS,
        },
    )


def _point_maze(env_id: str, **kwargs: Any) -> Any:
    """``gym.make(env_id, **kwargs)`` for a PointMaze env, less the MJCF file gymnasium-robotics
    writes for it (``ant_maze<time>.xml`` in the system's temporary directory, one per env, never
    removed): MuJoCo has read it by the time the env exists."""
    import gymnasium as gym

    env = gym.make(env_id, **kwargs)
    xml = getattr(env.unwrapped, "tmp_xml_file_path", None)
    if xml and os.path.basename(xml).startswith("ant_maze") and os.path.exists(xml):
        os.remove(xml)
    return env


class Maze2dAdapter(EnvAdapter):
    """:class:`ractd_cli.adapters.EnvAdapter` for PointMaze (see the module docstring).

    Extra, beyond the protocol: :meth:`track_action` and :meth:`controller_action` (follow a planned
    state sequence: ``rollout --follow track|controller``) and :meth:`estimate_reference_scores`.
    """

    name = "maze2d"

    def __init__(self) -> None:
        self.tasks: Mapping[str, TaskSpec] = {s.name: s for s in map(_spec, ("umaze", "medium", "large"))}
        self._free_cells: dict[str, list[tuple[int, int]]] = {}

    # -- env -----------------------------------------------------------------------------------------

    def make_env(self, task: str, *, seed: int | None = None) -> Any:
        """The evaluation env: fixed goal (``reset_target=False``), sparse reward, the task's time limit.

        With ``seed`` the env's RNG is seeded by one ``reset(seed=seed)``; pass per-episode goal and
        start cells through ``reset(options=adapter.reset_options(...))``.
        """
        import gymnasium as gym
        gymnasium_robotics = quiet_import("gymnasium_robotics")

        gym.register_envs(gymnasium_robotics)
        spec = self.spec(task)
        env = _point_maze(spec.env_id, continuing_task=True, reset_target=False, max_episode_steps=spec.max_episode_steps)
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env

    def state(self, task: str, obs: Any) -> np.ndarray:
        return np.asarray(obs["observation"], dtype=np.float32).reshape(4)

    def states(self, task: str, observations: Any) -> np.ndarray:
        return np.asarray(observations["observation"], dtype=np.float32).reshape(-1, 4)

    def goal(self, task: str, obs: Any) -> np.ndarray | None:
        return np.asarray(obs["desired_goal"], dtype=np.float32).reshape(2)

    def goals(self, task: str, observations: Any) -> np.ndarray | None:
        """``desired_goal`` of every row. Row 0 is replaced by row 1: in Minari's pointmaze data an
        episode's first observation still carries the previous episode's goal (the collector starts the
        new episode with the observation returned by the step that reached the old goal).

        Not relabelled in hindsight to the point where an episode ended: episodes end on the rim of
        the goal region, on the side they came from, so in a dead-end goal cell those points never
        reach the cell's middle, and the goals evaluation gives (cell centre +- 0.25) would be outside
        every goal the planner saw. The desired goals cover them; with ``--follow controller
        --snap-goal``, :meth:`controller_action` settles the point on the goal once the plan has arrived."""
        g = np.array(observations["desired_goal"], dtype=np.float32).reshape(-1, 2)
        if len(g) > 1:
            g[0] = g[1]
        return g

    def reset_options(self, task: str, episode: int, rng: np.random.Generator) -> dict | None:
        """The task's fixed goal cell and a start cell drawn uniformly from the other free cells."""
        spec = self.spec(task)
        goal = tuple(spec.extra["eval_goal_cell"])
        cells = [c for c in self._free(task) if c != goal]
        start = cells[int(rng.integers(len(cells)))]
        return {"goal_cell": np.array(goal), "reset_cell": np.array(start)}

    def _grid(self, task: str) -> list[list[Any]]:
        maps = quiet_import("gymnasium_robotics.envs.maze.maps")
        return {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE, "large": maps.LARGE_MAZE}[self.spec(task).extra["maze"]]

    def _free(self, task: str) -> list[tuple[int, int]]:
        if task not in self._free_cells:
            self._free_cells[task] = [
                (i, j) for i, row in enumerate(self._grid(task)) for j, v in enumerate(row) if v != 1
            ]
        return self._free_cells[task]

    @staticmethod
    def _cell_xy(grid: Sequence[Sequence[Any]], cell: Sequence[int]) -> tuple[float, float]:
        """Centre (x, y) of a (row, col) cell; gymnasium-robotics' layout, maze_size_scaling 1."""
        rows, cols = len(grid), len(grid[0])
        return cell[1] + 0.5 - cols / 2.0, rows / 2.0 - cell[0] - 0.5

    def draw(self, task: str, ax: Any) -> None:
        """Draw the maze's walls and the evaluation goal cell on a matplotlib ``ax`` (x/y coordinates of
        the states), for ``ractd bench --plot``."""
        from matplotlib.patches import Circle, Rectangle

        grid = self._grid(task)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == 1:
                    x, y = self._cell_xy(grid, (i, j))
                    ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1.0, 1.0, color="0.75", zorder=0))
        gx, gy = self._cell_xy(grid, self.spec(task).extra["eval_goal_cell"])
        ax.add_patch(Circle((gx, gy), SUCCESS_RADIUS, color="tab:green", alpha=0.25, zorder=0, label="goal"))
        rows, cols = len(grid), len(grid[0])
        ax.set_xlim(-cols / 2.0, cols / 2.0)
        ax.set_ylim(-rows / 2.0, rows / 2.0)

    def plan_check(self, task: str, plans: Any, goals: Any) -> dict[str, np.ndarray]:
        """What open-loop plans promise before a step is taken, for ``rollout`` and ``bench``:
        ``plan_reaches_goal`` (n,) some planned position within ``SUCCESS_RADIUS`` of the goal, and
        ``plan_hits_wall`` (n,) some planned position inside a wall cell. ``plans`` (n, L, 4) in env
        units, one state per env step (``Layout.dense``); ``goals`` (n, 2)."""
        grid = np.asarray(self._grid(task)) == 1  # (rows, cols) True where a wall is
        rows, cols = grid.shape
        p = np.asarray(plans, dtype=np.float64)[..., 0:2]
        col = np.floor(p[..., 0] + cols / 2.0).astype(int)
        row = np.floor(rows / 2.0 - p[..., 1]).astype(int)
        outside = (col < 0) | (col >= cols) | (row < 0) | (row >= rows)
        in_wall = outside | grid[np.clip(row, 0, rows - 1), np.clip(col, 0, cols - 1)]
        near_goal = np.linalg.norm(p - np.asarray(goals, dtype=np.float64)[:, None, :], axis=-1) <= SUCCESS_RADIUS
        return {"plan_reaches_goal": near_goal.any(axis=1), "plan_hits_wall": in_wall.any(axis=1)}

    # -- scores --------------------------------------------------------------------------------------

    def success(self, task: str, episode_return: float, info: Mapping[str, Any]) -> bool | None:
        """Reached the goal at least once: the sparse reward pays only within 0.45 of the goal."""
        return bool(episode_return > 0)

    # -- following a plan ----------------------------------------------------------------------------

    @staticmethod
    def track_action(state: Any, target_state: Any) -> np.ndarray:
        """The RACTD authors' tracking rule (their Maze2d env runner), ``rollout --follow track``:
        a = (p* - p) + (v* - v) for ``state`` (x, y, vx, vy) and the next planned state ``target_state``.
        Works on (..., 4) arrays; returns float32 (..., 2), unclipped (the env loop clips to [-1, 1])."""
        s = np.asarray(state, dtype=np.float64)
        t = np.asarray(target_state, dtype=np.float64)
        return ((t[..., 0:2] - s[..., 0:2]) + (t[..., 2:4] - s[..., 2:4])).astype(np.float32)

    @staticmethod
    def controller_action(state: Any, target_state: Any, goal: Any = None) -> np.ndarray:
        """Action that moves ``state`` (x, y, vx, vy) towards ``target_state``, the next planned state.

        Inverts the point mass's one-step dynamics (``v' = ALPHA v + BETA a``) for the velocity
        ``v* + FOLLOW_GAIN * (p* - p)``: the planned velocity plus a correction towards the planned
        position, then clips to [-1, 1]. Same for every maze. Works on (..., 4) arrays; returns float32
        (..., 2). Feed it ``plan[t+1]`` at step t; past the plan's end, the plan's last state (or the
        goal with zero velocity) makes it a go-to-and-stop PD controller.

        With ``goal`` (..., 2) (``rollout --follow controller --snap-goal``; off by default, since it
        hands the follower goal information the plan never had), a target inside the goal region (within ``SUCCESS_RADIUS``) is replaced by
        the goal itself at rest: once the plan has arrived, the point settles on the goal. The data's
        episodes end on the rim of the goal region, so learnt plans arrive there and stop there, where
        the point drifts in and out of the region that the evaluation reward pays for; Diffuser gets the
        same effect by fixing the plan's last state to the goal at rest.
        """
        s = np.asarray(state, dtype=np.float64)
        t = np.asarray(target_state, dtype=np.float64)
        if goal is not None:
            g = np.asarray(goal, dtype=np.float64)
            inside = np.linalg.norm(t[..., 0:2] - g, axis=-1, keepdims=True) <= SUCCESS_RADIUS
            t = np.where(inside, np.concatenate([np.broadcast_to(g, t[..., 0:2].shape), np.zeros_like(t[..., 2:4])], -1), t)
        v_des = t[..., 2:4] + FOLLOW_GAIN * (t[..., 0:2] - s[..., 0:2])
        return np.clip((v_des - ALPHA * s[..., 2:4]) / BETA, -1.0, 1.0).astype(np.float32)

    # -- data ----------------------------------------------------------------------------------------

    def generate(
        self, task: str, *, steps: int, seed: int, progress: Callable[[int], None] | None = None
    ) -> tuple[Sequence[Any], dict]:
        """Minari's pointmaze recipe.

        One env with ``continuing_task=True, reset_target=True`` is reset once (``seed``) and stepped
        ``steps`` times without resets. Actions: :class:`WaypointController` (Q-iteration waypoints,
        PD law, clipped) plus N(0, 0.5^2) noise, clipped again. Each time the goal is reached the env
        draws a new goal and the episode ends there (a truncation); the next episode starts from the
        same observation with the new goal. The last, unfinished segment is kept, truncated.
        """
        import gymnasium as gym
        gymnasium_robotics = quiet_import("gymnasium_robotics")
        from minari.data_collector import EpisodeBuffer

        gym.register_envs(gymnasium_robotics)
        spec = self.spec(task)
        steps = int(steps)
        env = _point_maze(spec.env_id, continuing_task=True, reset_target=True, max_episode_steps=steps + 1)
        u = env.unwrapped  # stepped directly: no wrapper overhead, no time limit inside the run
        noise_ss, jitter_ss = np.random.SeedSequence(seed).spawn(2)
        noise = np.random.default_rng(noise_ss).normal(0.0, ACTION_NOISE_STD, size=(steps, 2))
        controller = WaypointController(u.maze, np.random.default_rng(jitter_ss), planner=GridPlanner(u.maze.maze_map))

        obs, _ = env.reset(seed=seed)
        obs_vec = np.empty((steps + 1, 4))
        goal_vec = np.empty((steps + 1, 2))
        actions = np.empty((steps, 2), dtype=np.float32)
        rewards = np.empty(steps)
        reached = np.zeros(steps, dtype=bool)
        obs_vec[0], goal_vec[0] = obs["observation"], obs["desired_goal"]
        next_goal: dict[int, np.ndarray] = {}  # step -> goal the next episode starts with

        t0, batcher = time.perf_counter(), ProgressBatcher(progress, every=1000)
        for n in range(steps):
            o, g = obs_vec[n].tolist(), u.goal.tolist()  # u.goal: already the new goal after an arrival
            ax, ay = controller.action_xy(o[0], o[1], o[2], o[3], g[0], g[1])
            actions[n, 0] = min(1.0, max(-1.0, ax + noise[n, 0]))
            actions[n, 1] = min(1.0, max(-1.0, ay + noise[n, 1]))
            obs, rewards[n], _, _, info = u.step(actions[n])
            obs_vec[n + 1] = obs["observation"]
            goal_vec[n + 1] = obs["desired_goal"]
            if info["success"]:
                reached[n] = True
                next_goal[n] = np.array(u.goal, dtype=np.float64)
            batcher.step()
        elapsed = time.perf_counter() - t0
        batcher.flush()

        # cut the run into episodes at every step that reached the goal
        ends = list(np.flatnonzero(reached) + 1)
        if not ends or ends[-1] != steps:
            ends.append(steps)
        buffers, start = [], 0
        for i, end in enumerate(ends):
            goals = goal_vec[start : end + 1].copy()
            if start > 0:
                goals[0] = next_goal[start - 1]  # the new goal, not the one just reached
            achieved = obs_vec[start : end + 1, :2].copy()
            truncs = np.zeros(end - start, dtype=bool)
            truncs[-1] = True
            buffers.append(
                EpisodeBuffer(
                    id=i,
                    seed=int(seed) if i == 0 else None,
                    observations={
                        "observation": obs_vec[start : end + 1].copy(),
                        "achieved_goal": achieved,
                        "desired_goal": goals,
                    },
                    actions=actions[start:end].copy(),
                    rewards=rewards[start:end].copy(),
                    terminations=np.zeros(end - start, dtype=bool),
                    truncations=truncs,
                )
            )
            start = end
        eval_spec = replace(
            gym.spec(spec.env_id),
            kwargs={**gym.spec(spec.env_id).kwargs, "continuing_task": True, "reset_target": False},
        )
        meta = {
            "env": env,  # this env itself, not its spec: Minari would make another (and its MJCF file)
            "eval_env": eval_spec,
            "algorithm_name": "QIteration waypoint controller + N(0, 0.5^2) action noise",
            "requirements": ["gymnasium-robotics>=1.3", "mujoco>=3.1,<4"],
            "ref_min_score": spec.ref_min_score,
            "ref_max_score": spec.ref_max_score,
            "goals_reached": int(reached.sum()),
            "steps_per_second": round(steps / max(elapsed, 1e-9), 1),
        }
        env.close()
        return buffers, meta

    def estimate_reference_scores(self, task: str, *, episodes: int = 20, seed: int = 0) -> dict[str, float]:
        """Mean return of the noise-free waypoint controller and of uniform random actions on the
        evaluation env (same goal and start cells as evaluation). Minari's published values in the
        TaskSpec were made the same way with 100 episodes; this is a check, not used for scoring."""
        spec = self.spec(task)
        rng = np.random.default_rng(seed)
        out: dict[str, float] = {}
        for policy in ("controller", "random"):
            env = self.make_env(task, seed=seed)
            u = env.unwrapped
            returns = []
            for ep in range(episodes):
                obs, _ = env.reset(options=self.reset_options(task, ep, rng))
                controller = WaypointController(u.maze, rng)
                total, done = 0.0, False
                while not done:
                    if policy == "controller":
                        a = controller.action(obs["observation"], obs["desired_goal"]).astype(np.float32)
                    else:
                        a = rng.uniform(-1.0, 1.0, size=2).astype(np.float32)
                    obs, r, term, trunc, _ = env.step(a)
                    total += float(r)
                    done = term or trunc
                returns.append(total)
            env.close()
            out[policy] = float(np.mean(returns))
        out["episodes"] = float(episodes)
        out["max_episode_steps"] = float(spec.max_episode_steps)
        return out

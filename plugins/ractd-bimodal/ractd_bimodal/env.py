"""``ractd/Bimodal-v0``: a point in the plane that can end at one of two goals of unequal value.

The point starts uniformly in [-0.05, 0.05]^2 and moves ``SPEED * action`` per step (actions in
[-1, 1]^2; positions clipped to the arena [-1.5, 1.5]^2). Entering the corner region of goal A
(+1, +1), x >= 1 - RADIUS and y >= 1 - RADIUS, pays 1.0 and ends the episode (terminated); goal B's
corner (-1, +1) pays 0.5 and ends it; nothing else pays.
The time limit (32 steps) truncates. Both goals are equally far from the start, so the two ways to
finish differ only in value: the data hold both, an offline learner should pick A.

``info["reached"]`` is "A", "B" or "" and ``info["success"]`` is True when A was reached.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GOAL_A = np.array([1.0, 1.0], dtype=np.float32)
GOAL_B = np.array([-1.0, 1.0], dtype=np.float32)
REWARD_A = 1.0
REWARD_B = 0.5
SPEED = 0.1
RADIUS = 0.15
START_HALF_WIDTH = 0.05
ARENA = 1.5
MAX_EPISODE_STEPS = 32


def in_goal_region(pos: np.ndarray, goal: np.ndarray) -> bool:
    """The goal's corner region: beyond ``RADIUS`` short of the goal on both axes (away from the
    start). A corner rather than a disc, so a path that overshoots the goal still counts: the task
    measures which mode a planner picks, not how precisely it stops."""
    return bool(pos[1] >= goal[1] - RADIUS and np.sign(goal[0]) * pos[0] >= abs(goal[0]) - RADIUS)


class BimodalEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-ARENA, ARENA, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.pos = np.zeros(2, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options and options.get("start") is not None:
            self.pos = np.asarray(options["start"], dtype=np.float32).reshape(2).copy()
        else:
            self.pos = self.np_random.uniform(-START_HALF_WIDTH, START_HALF_WIDTH, size=2).astype(np.float32)
        return self.pos.copy(), {"reached": "", "success": False}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(2), -1.0, 1.0)
        self.pos = np.clip(self.pos + SPEED * a, -ARENA, ARENA).astype(np.float32)
        reached = ""
        if in_goal_region(self.pos, GOAL_A):
            reached = "A"
        elif in_goal_region(self.pos, GOAL_B):
            reached = "B"
        reward = REWARD_A if reached == "A" else REWARD_B if reached == "B" else 0.0
        return self.pos.copy(), reward, bool(reached), False, {"reached": reached, "success": reached == "A"}


ENV_ID = "ractd/Bimodal-v0"


def register() -> None:
    """Register ``ractd/Bimodal-v0`` with gymnasium (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=f"{__name__}:BimodalEnv", max_episode_steps=MAX_EPISODE_STEPS)

"""ractd plugin: Gym-MuJoCo locomotion tasks. The entry point ``ractd.envs: mujoco`` is ``adapter``."""

from .adapter import MujocoAdapter, adapter

__all__ = ["MujocoAdapter", "adapter"]

"""ractd plugin: FrankaKitchen tasks. The entry point ``ractd.envs: kitchen`` is ``adapter``."""

from .adapter import KitchenAdapter, adapter

__all__ = ["KitchenAdapter", "adapter"]

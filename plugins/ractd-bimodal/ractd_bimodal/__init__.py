"""ractd plugin: ``bimodal``, a tiny two-goal toy task for quick end-to-end runs on CPU.

Importing this package registers the gymnasium env ``ractd/Bimodal-v0``. Registered with ractd under
the entry-point group ``ractd.envs`` as ``bimodal = "ractd_bimodal:adapter"``.
"""

from . import env
from .adapter import SPEC, BimodalAdapter

env.register()
adapter = BimodalAdapter()

__all__ = ["SPEC", "BimodalAdapter", "adapter", "env"]

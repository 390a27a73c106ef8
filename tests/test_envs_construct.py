"""Guard for the mujoco pin: the three env families ractd runs on must construct, reset and step.

FrankaKitchen-v1 fails to construct under mujoco 4.0.0; this catches a resolver that moves past the pin.
"""

from __future__ import annotations

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")


@pytest.mark.parametrize("env_id", ["Hopper-v5", "PointMaze_UMaze-v3", "FrankaKitchen-v1"])
def test_env_constructs_resets_and_steps(env_id, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where gymnasium-robotics leaves a PointMaze's MJCF file
    if env_id != "Hopper-v5":
        gymnasium_robotics = pytest.importorskip("gymnasium_robotics")
        gym.register_envs(gymnasium_robotics)
    env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=0)
        obs2, r, term, trunc, _ = env.step(env.action_space.sample())
        assert np.isfinite(float(r))
        assert env.observation_space.contains(obs2) or isinstance(obs2, dict)
    finally:
        env.close()


def test_an_unloadable_mujoco_gl_is_a_one_line_error(monkeypatch):
    """MUJOCO_GL naming a library the machine lacks breaks `import mujoco` inside PyOpenGL: the
    user gets a usage error naming the variable, not an internal error; other errors pass through."""
    from ractd_cli.adapters import make_env
    from ractd_cli.errors import UsageError

    class Adapter:
        def __init__(self, filename):
            self.code = compile("raise AttributeError(\"'NoneType' object has no attribute 'glGetError'\")", filename, "exec")

        def make_env(self, task, **kwargs):
            exec(self.code, {})

    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    with pytest.raises(UsageError, match="MUJOCO_GL=osmesa is set, but its OpenGL library does not load"):
        make_env(Adapter("/site-packages/OpenGL/platform/baseplatform.py"), "hopper-medium-replay")
    with pytest.raises(AttributeError):  # not from OpenGL: the adapter's own bug stays visible
        make_env(Adapter("/site-packages/ractd_mujoco/adapter.py"), "hopper-medium-replay")
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    with pytest.raises(AttributeError):  # no GL backend chosen: nothing to blame on it
        make_env(Adapter("/site-packages/OpenGL/platform/baseplatform.py"), "hopper-medium-replay")

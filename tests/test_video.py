"""`rollout --video` for tasks that render themselves (MuJoCo): offscreen GL or a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ractd_cli.cli import app
from ractd_cli.errors import UsageError
from ractd_cli.video import GL_HINT, VideoRecorder

runner = CliRunner()


def _offscreen_gl() -> str | None:
    """Why Hopper cannot render offscreen here, or None when it can."""
    try:
        import gymnasium as gym

        env = gym.make("Hopper-v5", render_mode="rgb_array", width=64, height=64)
        env.reset(seed=0)
        frame = env.render()
        env.close()
        return None if frame is not None else "render() returned nothing"
    except Exception as e:
        return f"no offscreen OpenGL ({type(e).__name__}); set MUJOCO_GL=egl or osmesa on a machine that has one"


def test_a_failed_render_is_a_one_line_error_saying_what_to_install(tmp_path):
    pytest.importorskip("ractd_mujoco")
    pytest.importorskip("imageio_ffmpeg")
    from ractd_cli.registry import get_task

    adapter, spec = get_task("hopper-medium-replay")
    rec = VideoRecorder(adapter, spec, tmp_path / "v.mp4", 1)
    assert rec.env_kwargs(0) == {"render_mode": "rgb_array"} and rec.env_kwargs(1) == {}

    class NoGL:
        def render(self):
            raise AttributeError("'NoneType' object has no attribute 'glGetError'")

    with pytest.raises(UsageError) as e:
        rec.capture(0, NoGL(), np.zeros(11), None)
    assert str(e.value) == GL_HINT and "MUJOCO_GL=egl" in GL_HINT
    rec.abort()
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_two_mujoco_episodes_decode_to_their_frames(tmp_path):
    pytest.importorskip("ractd_mujoco")
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    why = _offscreen_gl()
    if why:
        pytest.skip(why)

    def ok(*args):
        r = runner.invoke(app, [*args, "--json"])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    ok("fetch", "hopper-simple", "--source", "local", "--steps", "2000")
    ok("train-teacher", "--env", "hopper-simple", "--preset", "tiny", "--steps", "20")
    video = tmp_path / "hopper.mp4"
    doc = ok("rollout", "--env", "hopper-simple", "--model", "teacher", "--sampler", "euler", "--nfe", "2", "--episodes", "2",
             "--video", str(video), "--video-episodes", "2")
    assert doc["video"]["frames_per_episode"] == [e["length"] + 1 for e in doc["per_episode"]]
    frames = imageio_ffmpeg.read_frames(str(video))
    next(frames)
    assert sum(1 for _ in frames) == doc["video"]["frames"]


def test_a_video_not_named_mp4_is_refused(tmp_path, monkeypatch):
    """The file is an MP4 whatever its name: a .gif name is a usage error naming the .mp4 one, before
    anything runs and with nothing written."""
    monkeypatch.setenv("RACTD_CACHE_DIR", str(tmp_path / "cache"))
    r = runner.invoke(app, ["rollout", "--env", "bimodal", "--video", str(tmp_path / "m.gif")])
    assert r.exit_code == 2 and "name it" in r.output and "m.mp4" in r.output, r.output
    assert not (tmp_path / "m.gif").exists()

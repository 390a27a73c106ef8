"""``ractd rollout --video FILE``: the first episodes as an MP4 (imageio-ffmpeg's H.264 encoder).

Two ways to draw a frame, chosen per task:

- the adapter draws its map (``draw(task, ax)``: Maze2d) and the frame is that map with the
  episode's plan, the path so far and the agent, drawn by matplotlib: no OpenGL needed;
- otherwise the env renders itself (``render_mode="rgb_array"``, MuJoCo's offscreen OpenGL:
  ``MUJOCO_GL=egl`` or ``MUJOCO_GL=osmesa`` on a machine without a display). Without a working
  offscreen GL the command stops with a one-line error saying what to install.

One frame per env step (and one of the reset state), episodes one after another. Episodes run in
lockstep, so each recorded episode streams into its own temporary file; :meth:`VideoRecorder.close`
joins them in episode order.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

FPS = 30
SIZE = (480, 480)
"""Frame size (width, height) in pixels: H.264 wants both even."""

GL_HINT = ("offscreen rendering failed: MuJoCo needs EGL or OSMesa on a machine without a display; "
           "set MUJOCO_GL=egl (an NVIDIA driver or Mesa's libEGL) or MUJOCO_GL=osmesa (apt install libosmesa6)")


def can_render_itself(adapter: Any) -> bool:
    """Whether the adapter's ``make_env`` takes ``render_mode`` (the MuJoCo and Kitchen plugins do)."""
    try:
        return "render_mode" in inspect.signature(adapter.make_env).parameters
    except (TypeError, ValueError):
        return False


class VideoRecorder:
    """Collects frames of the episodes ``episodes`` and writes them to ``path`` on :meth:`close`
    (into a temporary name first: an interrupted rollout leaves no half-written video)."""

    def __init__(self, adapter: Any, spec: Any, path: Path, episodes: int):
        self.adapter, self.spec, self.path, self.episodes = adapter, spec, Path(path), int(episodes)
        self.maps = hasattr(adapter, "draw") and spec.layout.open_loop
        if not self.maps and not can_render_itself(adapter):
            raise UsageError(f"the {spec.name} adapter cannot render: its make_env takes no render_mode and it has no draw()")
        try:
            import imageio_ffmpeg
        except ImportError:
            raise UsageError("--video needs the imageio-ffmpeg package: pip install 'ractd[watch]' (or `make install`)") from None
        self._ffmpeg = imageio_ffmpeg
        self.writers: dict[int, Any] = {}
        self.counts: dict[int, int] = {}
        self.trails: dict[int, list[np.ndarray]] = {}
        self._fig = None

    def env_kwargs(self, episode: int) -> dict:
        """What ``make_env`` needs for this episode to render itself."""
        return {"render_mode": "rgb_array"} if episode < self.episodes and not self.maps else {}

    def capture(self, episode: int, env: Any, state: np.ndarray, plan: np.ndarray | None) -> None:
        """One frame of ``episode`` (ignored beyond the first ``episodes``)."""
        if episode >= self.episodes:
            return
        frame = self._map_frame(episode, state, plan) if self.maps else self._env_frame(env)
        if episode not in self.writers:
            self.writers[episode] = self._writer(self._part(episode))
        self.writers[episode].send(np.ascontiguousarray(frame))
        self.counts[episode] = self.counts.get(episode, 0) + 1

    def _part(self, episode: int) -> Path:
        return self.path.with_name(f".{self.path.name}.episode{episode}.tmp.mp4")

    def _writer(self, path: Path):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        w = self._ffmpeg.write_frames(str(path), SIZE, fps=FPS, codec="libx264", pix_fmt_out="yuv420p", quality=7, macro_block_size=1)
        w.send(None)
        return w

    def _env_frame(self, env: Any) -> np.ndarray:
        try:
            frame = env.render()
        except Exception as e:  # no GL context: mujoco.FatalError, EGLError, AttributeError from PyOpenGL...
            raise UsageError(GL_HINT) from e
        if frame is None:
            raise UsageError(GL_HINT)
        return _fit(np.asarray(frame, dtype=np.uint8))

    def _map_frame(self, episode: int, state: np.ndarray, plan: np.ndarray | None) -> np.ndarray:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if self._fig is None:
            self._fig, self._ax = plt.subplots(figsize=(SIZE[0] / 96, SIZE[1] / 96), dpi=96)
        ax = self._ax
        ax.clear()
        self.adapter.draw(self.spec.name, ax)
        trail = self.trails.setdefault(episode, [])
        trail.append(np.asarray(state[:2], dtype=float))
        if plan is not None:
            ax.plot(plan[:, 0], plan[:, 1], color="tab:blue", lw=1.0, alpha=0.8, label="plan")
        path = np.stack(trail)
        ax.plot(path[:, 0], path[:, 1], color="tab:red", lw=1.5, label="agent")
        ax.plot(path[-1, 0], path[-1, 1], "o", color="tab:red", ms=6)
        ax.set_title(f"{self.spec.name}  episode {episode}  step {len(trail) - 1}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        self._fig.canvas.draw()
        return _fit(np.asarray(self._fig.canvas.buffer_rgba())[..., :3])

    def close(self) -> dict:
        """Join the episodes' parts into ``path``; what it holds (``path``, ``frames``,
        ``frames_per_episode``, ``fps``). Temporary parts are removed whatever happens."""
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
        parts = [self._part(e) for e in sorted(self.writers)]
        tmp = self.path.with_name(f".{self.path.name}.tmp.mp4")
        try:
            for w in self.writers.values():
                w.close()
            if not parts:
                raise UsageError("no frames were recorded")
            if len(parts) == 1:
                parts[0].replace(tmp)
            else:  # one after another: decode each part, encode the whole
                out = self._writer(tmp)
                for part in parts:
                    frames = self._ffmpeg.read_frames(str(part))
                    next(frames)  # the metadata
                    for raw in frames:
                        out.send(np.frombuffer(raw, np.uint8).reshape(SIZE[1], SIZE[0], 3))
                out.close()
            tmp.replace(self.path)
        finally:
            for p in [*parts, tmp]:
                p.unlink(missing_ok=True)
        return {"path": str(self.path), "frames": sum(self.counts.values()),
                "frames_per_episode": [self.counts[e] for e in sorted(self.counts)], "fps": FPS}

    def abort(self) -> None:
        """Drop the parts (the rollout failed): no video, nothing left behind."""
        for w in self.writers.values():
            try:
                w.close()
            except Exception:
                pass
        for e in self.writers:
            self._part(e).unlink(missing_ok=True)


def _fit(frame: np.ndarray) -> np.ndarray:
    """``frame`` (h, w, 3) scaled by nearest neighbour to :data:`SIZE` (so every frame has one size)."""
    h, w = frame.shape[:2]
    W, H = SIZE
    if (w, h) == (W, H):
        return frame
    rows = (np.arange(H) * h / H).astype(int)
    cols = (np.arange(W) * w / W).astype(int)
    return frame[rows][:, cols]

"""The environment-adapter interface: the only place env-specific knowledge lives.

A third-party package makes a task family available to ``ractd`` by exposing an instance of a
subclass of :class:`EnvAdapter` under the entry-point group ``ractd.envs``::

    [project.entry-points."ractd.envs"]
    maze2d = "ractd_maze2d:adapter"

See ``docs/plugins.md`` for the full guide.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import os
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from .errors import UsageError
from .layouts import LAYOUTS, WINDOWS, Layout

Planning = Literal["chunk", "states", "endpoints"]
"""``chunk``: closed loop, x = c future actions given h past states; execute the first action, replan.
``states``: open loop, x = H future states given the current state and the goal; actions come
from an inverse-dynamics model a_t = f(s_t, s_{t+1}) (or from the adapter's optional ``track_action`` /
``controller_action`` following the plan; see :class:`ractd_cli.evaluate.PlanFollower`).
``endpoints``: open loop as ``states``, x = H future states given the first and the last one (trained
on the window's own last state, evaluated with the goal at rest; needs ``goal_dims`` and
``rest_dims``): the RACTD authors' Maze2d conditioning (``ractd_cli.layouts.EndpointPlans``)."""


@dataclass(frozen=True)
class TaskSpec:
    """Everything the pipeline needs to know about one task. Frozen: adapters declare, never mutate."""

    name: str
    """Task name as typed on the command line, e.g. ``maze2d-umaze``."""
    env_id: str
    """gymnasium id of the evaluation env, e.g. ``PointMaze_UMaze-v3``."""
    obs_dim: int
    """Dimension of the flat state vector ``s`` the planner sees."""
    act_dim: int
    planning: Planning
    horizon: int
    """c (action-chunk length) for ``chunk`` planning, H (state-sequence length) for ``states``."""
    history: int = 1
    """h, the number of past states conditioning the planner."""
    goal_dim: int = 0
    """Size of the goal vector appended to the conditioning (0: no goal)."""
    gamma: float = 0.99
    """Discount of the return-to-go regressed by the reward model."""
    termination_penalty: float = -100.0
    """Added to the reward of a true termination (not a time-out) when computing returns-to-go."""
    reward_input: str = ""
    """What the reward model reads of a plan, one of the layout's ``reward_inputs``
    (``ractd_cli.layouts``); '' (the default): the layout's first, the paper's eq. 8 (action chunks:
    (s_n, a_n)). A training option (``train-reward --reads``), recorded in the reward model."""
    max_episode_steps: int = 1000
    minari_ids: tuple[str, ...] = ()
    """Remote Minari dataset ids; more than one are combined (``minari.combine_datasets``)."""
    local_generation: str = ""
    """One line saying what ``fetch --source local`` produces ('' if it cannot generate)."""
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """(alpha, beta, sigma): CTM, DSM and reward weights of the distillation loss (paper Table 9; the
    MuJoCo plugin takes the RACTD authors' configs, which differ from it on three tasks)."""
    reward_scale: float = 1.0
    """kappa, the reward term's own scale: L_Reward = -kappa R(plan) (the plan read by the layout,
    :func:`ractd_cli.train.reward.frozen_reward`), so that sigma (``--reward-weight``, the third of
    ``loss_weights``) counts in the task's reference weighting of that term. 1: the paper's eqs. 8-9
    as written, sigma as it is (MuJoCo). Maze2d: the RACTD authors' weight per planned state
    summed over the plan's H states (their guided_ctmp_maze_*.yaml). Recorded in every model whose
    loss it scales, and shown beside sigma in every result."""
    model_preset: str = "mujoco"
    """Name of the paper-size network preset for ``--preset paper``."""
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    """Minari's reference returns, written into the metadata of a locally generated dataset (what
    ``minari.get_normalized_score`` reads); None: none written. Scoring uses ``ref_scores``."""
    ref_scores: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Score scales: ``{scale: (min, max)}`` reference returns (random, expert) of the normalised score
    100*(R-min)/(max-min), e.g. ``{"d4rl": (23.85, 161.86), "minari": (13.49, 218.70)}``. ``rollout``
    and ``bench`` pick one with ``--score-scale`` (default ``d4rl``, the paper's; a task without it
    uses its first scale). See :func:`resolve_score_scale` and :func:`normalize_return`."""
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-task overrides of the training presets, ``{preset: {key: value}}`` with the keys of
    ``ractd_cli.presets.PRESETS`` (``net``, steps per model kind, ``batch_size``, ``lr``), e.g. a
    smaller network and fewer steps on ``quick`` for tasks whose plans are long."""
    plan_stride: int = 1
    """``states`` planning: a plan holds every k-th state of the H it spans, x = s_n, s_{n+k}, ...
    (H/k knots), and is followed through the straight lines between them. 1 (every state) is the
    paper's; a training option (``train-teacher --plan-stride k``), recorded in the artifacts, never
    an adapter default."""
    windows: str = "full"
    """The training windows of the diffusion models (:data:`ractd_cli.layouts.WINDOWS`): ``full``
    (RACTD's code, the default: no window runs past an episode's end) or ``padded`` (every transition
    starts a window, padded at the end by repeating the last row; the default before issue 27). A training option
    (``train-teacher --windows``), recorded in the artifacts and inherited by students."""
    goal_dims: tuple[int, ...] = ()
    """``endpoints`` planning: the state dimension each goal entry is (e.g. (0, 1): the goal is the
    position); with ``rest_dims`` it makes the goal state the plan is asked to end at."""
    rest_dims: tuple[int, ...] = ()
    """``states`` planning: state dimensions that are 0 when the agent is at rest (velocities). Past an
    episode's end a training plan repeats the last state with these dimensions set to 0, so plans that
    reach the end of their episode (the goal) stop there instead of keeping the last velocity."""
    paper_scores: Mapping[str, str] = field(default_factory=dict)
    """The RACTD paper's figure for a ``bench`` row of this task, with its table, by row key
    (``teacher-heun``, ``euler-15``, ``ancestral-15``, ``ctd-1``, ``ractd-1`` .. ``ractd-4``), e.g.
    ``{"ractd-1": "104.9 ± 2.1 (T1)"}``: ``bench`` shows it beside the measured score."""
    trajdiffuser: Mapping[str, Any] = field(default_factory=dict)
    """The Trajectory Diffuser's per-task settings (``ractd_cli.trajdiffuser``; its authors' table):
    ``horizon`` (states per plan; default the task's horizon for state-planning tasks, else 16),
    ``guidance`` (classifier-free guidance weight w; default 1.2), ``target_return`` (the return, in
    env units, a proposal starts from; default the best return-to-go of the training data)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Adapter-private defaults (anything the pipeline does not interpret)."""

    def __post_init__(self) -> None:
        """A spec checks itself: a task that could only be planned wrongly is refused at once."""
        if self.planning not in LAYOUTS:
            raise ValueError(f"task {self.name}: planning {self.planning!r} is none of {', '.join(repr(k) for k in LAYOUTS)}")
        for field_name in ("obs_dim", "act_dim", "horizon", "history", "max_episode_steps"):
            if int(getattr(self, field_name)) < 1:
                raise ValueError(f"task {self.name}: {field_name} must be at least 1, got {getattr(self, field_name)}")
        if not (math.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise ValueError(f"task {self.name}: reward_scale must be a finite number > 0, got {self.reward_scale}")
        if self.plan_stride < 1 or self.horizon % self.plan_stride:
            raise ValueError(f"task {self.name}: plan_stride {self.plan_stride} must be >= 1 and divide the horizon {self.horizon}")
        if self.windows not in WINDOWS:
            raise ValueError(f"task {self.name}: windows {self.windows!r} is none of {', '.join(WINDOWS)}")
        for dims_name in ("rest_dims", "goal_dims"):
            bad = [d for d in getattr(self, dims_name) if not 0 <= d < self.obs_dim]
            if bad:
                raise ValueError(f"task {self.name}: {dims_name} {bad} are outside the state's {self.obs_dim} dimensions")
        self.layout.validate(self)
        self.layout.reads(self)  # reward_input: one of the layout's readings

    @property
    def layout(self) -> Layout:
        """What this task's planning kind implies (``ractd_cli.layouts``)."""
        return LAYOUTS[self.planning]

    @property
    def x_shape(self) -> tuple[int, int]:
        """(T, D) of one plan x: (c, act_dim) action chunks, or (H, obs_dim) state plans."""
        return self.layout.x_shape(self)

    @property
    def cond_dim(self) -> int:
        """Size of the conditioning vector: h past states (chunks), [s_n, goal] (state plans) or
        [s_n, goal state] (endpoint plans)."""
        return self.layout.cond_dim(self)


PLUGIN_API = 2
"""The version of the adapter contract this ``ractd`` implements (docs/plugins.md, "Plugin API
changes"). An adapter declares the version it was written for (``api_version``; subclasses of
:class:`EnvAdapter` declare this one). 1: scores from ``TaskSpec.ref_min_score``/``ref_max_score``
and ``normalized_score(task, episode_return)``. 2: named score scales (``TaskSpec.ref_scores``,
``normalized_score(task, episode_return, scale=None)``). An adapter of version 1 still works
(:mod:`ractd_cli.plugin_api`), with one deprecation line in ``ractd envs``."""


class EnvAdapter:
    """What an adapter provides; subclass it. All methods take the task name first; none keep
    global state. :meth:`make_env`, :meth:`state` and :meth:`states` must be defined (and
    :meth:`generate` where the task can be generated locally); every other method has a default
    that suits a task without goals. An object that defines the same methods without subclassing
    works too (the registry fills in the defaults, :func:`ractd_cli.plugin_api.adopt`)."""

    api_version: int = PLUGIN_API
    """The plugin API version the adapter was written for (:data:`PLUGIN_API`)."""
    tasks: Mapping[str, TaskSpec] = {}
    """Task name -> :class:`TaskSpec` (each spec's ``name`` is its key)."""

    REQUIRED: tuple[str, ...] = ("make_env", "state", "states")
    """The methods with no default."""

    def spec(self, task: str) -> TaskSpec:
        """The spec of one of this adapter's tasks; a UsageError naming them for another."""
        try:
            return self.tasks[task]
        except KeyError:
            raise UsageError(f"{type(self).__name__} has no task {task!r}; its tasks: {', '.join(sorted(self.tasks))}") from None

    def make_env(self, task: str, *, seed: int | None = None) -> Any:
        """Build the gymnasium env used for evaluation (time limit included). With ``seed`` its RNGs
        are seeded (e.g. one ``reset(seed=seed)``); later resets pass ``reset_options``."""
        raise NotImplementedError(f"{type(self).__name__} defines no make_env()")

    def state(self, task: str, obs: Any) -> np.ndarray:
        """One env observation -> flat state, shape (obs_dim,)."""
        raise NotImplementedError(f"{type(self).__name__} defines no state()")

    def states(self, task: str, observations: Any) -> np.ndarray:
        """A Minari episode's ``observations`` (array or dict of arrays, T+1 rows) -> (T+1, obs_dim)."""
        raise NotImplementedError(f"{type(self).__name__} defines no states()")

    def goals(self, task: str, observations: Any) -> np.ndarray | None:
        """A Minari episode's goals, (T+1, goal_dim), or None if the task has no goal (the default)."""
        return None

    def goal(self, task: str, obs: Any) -> np.ndarray | None:
        """Goal of one env observation, (goal_dim,), or None (the default: no goal)."""
        return None

    def reset_options(self, task: str, episode: int, rng: np.random.Generator) -> dict | None:
        """Options for ``env.reset`` of evaluation episode ``episode`` (e.g. a fixed goal cell);
        default None (the env draws its own start)."""
        return None

    def generate(
        self, task: str, *, steps: int, seed: int, progress: Callable[[int], None] | None = None
    ) -> tuple[Sequence[Any], dict]:
        """Generate a dataset locally: (list of ``minari.data_collector.EpisodeBuffer``, metadata).
        The default refuses: the task's data must be downloaded (``TaskSpec.local_generation`` is "").

        Each buffer is a complete episode: ``observations`` with T+1 rows (an array, or a dict of
        arrays for dict observation spaces), ``actions``/``rewards``/``terminations``/``truncations``
        with T rows; ``id`` counts from 0. ``steps`` is the env-step budget, ``seed`` makes the run
        reproducible. ``progress(n)`` is called with the number of env steps done since the last call.

        Metadata keys that ``fetch`` interprets (all optional): ``env`` (id, ``EnvSpec`` or env the data
        came from; default ``spec.env_id``), ``eval_env``, ``observation_space``, ``action_space``,
        ``algorithm_name``, ``author``, ``author_email``, ``code_permalink``, ``description``,
        ``requirements`` (passed to ``minari.create_dataset_from_buffers``) and ``ref_min_score`` /
        ``ref_max_score`` (stored as Minari's reference scores; default the spec's). Anything else
        (JSON-serialisable) is kept under ``metadata["ractd"]["generator"]``.
        """
        raise NotImplementedError(f"{task} cannot be generated locally; fetch its Minari dataset instead")

    def normalized_score(self, task: str, episode_return: float, scale: str | None = None) -> float:
        """Normalised score x100 of one episode's undiscounted return on the score scale ``scale``
        (a key of the spec's ``ref_scores``; None: ``d4rl``, or the task's first scale without it).
        An unknown scale raises :class:`~ractd_cli.errors.UsageError`. The default is
        :func:`normalize_return` on the task's spec."""
        return normalize_return(self.spec(task), episode_return, scale)

    def success(self, task: str, episode_return: float, info: Mapping[str, Any]) -> bool | None:
        """Whether an evaluation episode succeeded, or None where success is undefined (the
        default). ``info`` is the ``info`` dict of the episode's last step."""
        return None


DEFAULT_SCORE_SCALE = "d4rl"
"""The paper's scale: D4RL's reference returns (random and expert policy)."""


def resolve_score_scale(spec: TaskSpec, scale: str | None = None) -> str:
    """The score scale ``scale`` of ``spec``, checked: a UsageError naming the task's scales if it has
    no such scale. None: ``d4rl`` where the task defines it, else its first scale."""
    scales = list(spec.ref_scores)
    if scale is None:
        if not scales:
            raise UsageError(f"{spec.name} defines no score scale (its TaskSpec.ref_scores is empty)")
        return DEFAULT_SCORE_SCALE if DEFAULT_SCORE_SCALE in scales else scales[0]
    if scale not in scales:
        raise UsageError(f"{spec.name} has no score scale {scale!r}; its scales: {', '.join(scales) or 'none'}")
    return scale


def normalize_return(spec: TaskSpec, episode_return: float, scale: str | None = None) -> float:
    """100 * (R - min) / (max - min) with the reference returns of ``spec`` on ``scale`` (see :func:`resolve_score_scale`)."""
    lo, hi = spec.ref_scores[resolve_score_scale(spec, scale)]
    return 100.0 * (float(episode_return) - lo) / (hi - lo)


def spec_dict(spec: TaskSpec) -> dict[str, Any]:
    """A task's spec as JSON-ready data (``ractd envs --json``): what a script needs to read its defaults."""
    alpha, beta, sigma = spec.loss_weights
    return {
        "name": spec.name,
        "env_id": spec.env_id,
        "obs_dim": spec.obs_dim,
        "act_dim": spec.act_dim,
        "planning": spec.planning,
        "horizon": spec.horizon,
        "history": spec.history,
        "goal_dim": spec.goal_dim,
        "gamma": spec.gamma,
        "termination_penalty": spec.termination_penalty,
        "reward_input": spec.layout.reads(spec),
        "max_episode_steps": spec.max_episode_steps,
        "minari_ids": list(spec.minari_ids),
        "local_generation": spec.local_generation,
        "loss_weights": {"ctm": alpha, "dsm": beta, "reward": sigma},
        "reward_scale": spec.reward_scale,
        "windows": spec.windows,
        "model_preset": spec.model_preset,
        "presets": {name: dict(over) for name, over in spec.presets.items()},
        "score_scales": {name: {"min": float(lo), "max": float(hi)} for name, (lo, hi) in spec.ref_scores.items()},
        "default_score_scale": resolve_score_scale(spec) if spec.ref_scores else None,
        "rest_dims": list(spec.rest_dims),
        "goal_dims": list(spec.goal_dims),
        "paper_scores": dict(spec.paper_scores),
        "trajdiffuser": dict(spec.trajdiffuser),
    }


def quiet_import(module: str) -> ModuleType:
    """Import ``module`` with what it prints to stderr while importing swallowed.

    gymnasium-robotics prints a notice about Adroit reward versions on import, on every command;
    it concerns environments ractd does not use, so adapters import it through this.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module(module)


GL_BACKENDS = ("MUJOCO_GL", "PYOPENGL_PLATFORM")
"""Environment variables that make ``import mujoco`` load an OpenGL library (egl, osmesa, glfw)."""


def make_env(adapter: Any, task: str, **kwargs: Any) -> Any:
    """``adapter.make_env(task, **kwargs)``, with a one-line error where a MuJoCo env cannot even be
    built because ``MUJOCO_GL`` names an OpenGL library this machine lacks (PyOpenGL then fails inside
    ``import mujoco``, whether or not anything is rendered)."""
    try:
        return adapter.make_env(task, **kwargs)
    except (AttributeError, ImportError, OSError) as e:
        chosen = {k: os.environ[k] for k in GL_BACKENDS if os.environ.get(k)}
        in_gl = any("OpenGL" in f.filename or f"mujoco{os.sep}egl" in f.filename or f"mujoco{os.sep}osmesa" in f.filename
                    for f in traceback.extract_tb(e.__traceback__))
        if not (chosen and in_gl):
            raise
        setting = " ".join(f"{k}={v}" for k, v in chosen.items())
        raise UsageError(f"{setting} is set, but its OpenGL library does not load here ({type(e).__name__}: {e}); "
                         f"unset it (a rollout without --video needs no OpenGL), or install that library") from e

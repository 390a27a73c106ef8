"""Planning layouts: the one place that knows an action chunk from a state plan.

A task's :class:`~ractd_cli.adapters.TaskSpec` names its planning kind (``spec.planning``) and
``spec.layout`` is the matching :class:`Layout`. Everything that differs between the kinds (the
plan's shape and what it is made of, the conditioning vector, how the reward model reads a plan,
how plans are executed) is asked of the layout, never switched on elsewhere:

- ``chunk`` (:class:`ActionChunks`; MuJoCo, Kitchen): x = a_n..a_{n+c-1} (c = horizon) given the past
  h states, cond = s_{n-h+1..n} flattened; closed loop: execute the first action, replan. The
  reward model reads (s_n, a_n) (eq. 8), or, as a recorded option, (s_n, a_n..a_{n+c-1}).
- ``states`` (:class:`StatePlans`): x = s_n..s_{n+H-1} given the current state and the goal,
  cond = [s_n, goal]; open loop: one plan per episode, followed by inverse dynamics (or an adapter's
  follower). The reward model reads (s_t, goal) at every planned state.
- ``endpoints`` (:class:`EndpointPlans`; Maze2d, the RACTD authors' conditioning): x = s_n..s_{n+H-1}
  given its first and last state, cond = [s_n, s_{n+H-1}] in training (hindsight: "from here to there
  in H steps", full windows by default); at evaluation the last state is the goal at rest (the goal in
  ``TaskSpec.goal_dims``, 0 in ``rest_dims``). Open loop as ``states``. The reward model reads (s_t,
  goal state) at every planned state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

if TYPE_CHECKING:  # only for annotations: adapters imports this module
    from .adapters import TaskSpec


class Layout:
    """What a planning kind implies. Subclasses set the class attributes and the methods."""

    kind: str = ""
    x_source: str = ""
    """What a plan x is made of, ``"action"`` or ``"state"``: also the name of its normaliser."""
    open_loop: bool = False
    """True: one plan per episode, executed by a follower (needs inverse dynamics); False: execute
    the plan's first action and plan again at every step."""
    reward_input: str = ""
    """What the reward model reads by default, for its artifact: ``"state_action"``, ``"state_goal"``
    or ``"state_goal_state"``."""
    reward_inputs: tuple[str, ...] = ()
    """Every reading a reward model of this layout may have (``TaskSpec.reward_input``,
    ``train-reward --reads``); the first is :attr:`reward_input`."""
    goal_source: str = "goal"
    """The normaliser of the goal block of the conditioning: ``"goal"`` (the goal as the env gives it)
    or ``"state"`` (the goal as a state, :meth:`goal_state`)."""
    full_windows: bool = False
    """True: windows are ``full`` unless a task or artifact says otherwise (models from before the
    choice was recorded trained on full windows), and full windows join episodes that continue one
    another (:func:`ractd_cli.data.windows.continuation_runs`)."""

    def validate(self, spec: TaskSpec) -> None:
        """Raise ValueError for a spec this layout could only plan wrongly."""

    def x_shape(self, spec: TaskSpec) -> tuple[int, int]:
        """(T, D) of one plan: T = horizon / plan_stride knots."""
        return spec.horizon // spec.plan_stride, (spec.act_dim if self.x_source == "action" else spec.obs_dim)

    def dense(self, spec: TaskSpec, x: torch.Tensor) -> torch.Tensor:
        """A plan (B, T, D) at every env step: knots k apart (``spec.plan_stride``) joined by straight
        lines, (B, (T-1) k + 1, D); a plan of every step is returned as is."""
        k = spec.plan_stride
        if k == 1:
            return x
        w = torch.arange(k, dtype=x.dtype, device=x.device).div(k)[None, None, :, None]  # (1, 1, k, 1)
        a, b = x[:, :-1, None], x[:, 1:, None]  # (B, T-1, 1, D)
        between = (a + w * (b - a)).flatten(1, 2)  # (B, (T-1) k, D): knot i, then k-1 points towards i+1
        return torch.cat([between, x[:, -1:]], dim=1)

    def cond_blocks(self, spec: TaskSpec) -> tuple[tuple[str, int], ...]:
        """The conditioning vector as consecutive blocks (normaliser name, width)."""
        raise NotImplementedError

    def cond_dim(self, spec: TaskSpec) -> int:
        return sum(width for _, width in self.cond_blocks(spec))

    def cond(self, past_states: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        """Normalised past states (B, h, obs_dim), oldest first, and goal (B, goal_dim) or None ->
        the conditioning vector (B, cond_dim)."""
        raise NotImplementedError

    def goal_width(self, spec: TaskSpec) -> int:
        """Width of the goal block of the conditioning (0: no goal)."""
        return spec.goal_dim

    def goal_state(self, spec: TaskSpec, goal: Any) -> Any:
        """A raw goal (..., goal_dim) as the raw goal block the model is conditioned on (numpy or
        torch); the goal itself unless a subclass says otherwise."""
        return goal

    def training_goal(self, x: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor | None:
        """The goal block of a training window's conditioning, from the normalised window x (B, T, D)
        and the normalised goal block of its first state (B, goal width) or None."""
        return goal

    def reads(self, spec: TaskSpec, reads: str | None = None) -> str:
        """The reading ``reads`` (None: the task's, ``spec.reward_input``, else this layout's default),
        checked: a ValueError names the readings this layout has."""
        chosen = reads or spec.reward_input or self.reward_input
        if chosen not in self.reward_inputs:
            raise ValueError(f"task {spec.name}: a reward model of {self.kind} plans reads {' or '.join(self.reward_inputs)}, not {chosen!r}")
        return chosen

    def reward_actions(self, spec: TaskSpec, reads: str | None = None) -> int:
        """How many planned actions a reward model reading ``reads`` (None: the task's) reads: 0 for
        state plans."""
        self.reads(spec, reads)
        return 0

    def reward_input_dim(self, spec: TaskSpec, reads: str | None = None) -> int:
        raise NotImplementedError

    def reward_pairs(self, s: torch.Tensor, a: torch.Tensor | None, goal: torch.Tensor | None) -> torch.Tensor:
        """The reward model's training input from a state s (B, obs_dim), its action a (B, act_dim) or
        actions (B, c, act_dim), and the goal."""
        raise NotImplementedError

    def reward(self, spec: TaskSpec, reward_net: Callable[[torch.Tensor], torch.Tensor],
               reads: str | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """R(x0_hat, cond) -> (B,), how the frozen reward model, reading ``reads`` (its artifact's
        ``input``; None: the task's), scores a normalised plan."""
        raise NotImplementedError


class ActionChunks(Layout):
    kind, x_source, open_loop, reward_input = "chunk", "action", False, "state_action"
    reward_inputs = ("state_action", "state_action_chunk")
    """``state_action``: R_psi(s_n, a_n), the paper's eq. 8 and its authors' code; ``state_action_chunk``
    (an option, not in RACTD): R_psi(s_n, a_n..a_{n+c-1}), the return-to-go of the whole planned chunk."""

    def validate(self, spec: TaskSpec) -> None:
        if spec.plan_stride != 1:
            raise ValueError(f"task {spec.name}: action chunks are executed one action per step; plan_stride applies to state plans")
        if spec.goal_dim:
            raise ValueError(f"task {spec.name}: action-chunk planning conditions on past states only; its goal "
                             f"(goal_dim {spec.goal_dim}) would be dropped: use planning='states' or goal_dim=0")

    def cond_blocks(self, spec: TaskSpec) -> tuple[tuple[str, int], ...]:
        return (("state", spec.obs_dim),) * spec.history

    def cond(self, past_states: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        return past_states.flatten(1)

    def reward_actions(self, spec: TaskSpec, reads: str | None = None) -> int:
        """1 (a_n, eq. 8) or, reading ``state_action_chunk``, the chunk's c."""
        return spec.horizon if self.reads(spec, reads) == "state_action_chunk" else 1

    def reward_input_dim(self, spec: TaskSpec, reads: str | None = None) -> int:
        return spec.obs_dim + spec.act_dim * self.reward_actions(spec, reads)

    def reward_pairs(self, s, a, goal):
        return torch.cat([s, a.flatten(1)], dim=-1)

    def reward(self, spec, reward_net, reads=None):
        """R_psi(s_n, a_hat_n): s_n the last state of the history, a_hat_n the first planned action (eq. 8);
        reading ``state_action_chunk``, R_psi(s_n, a_hat_n..a_hat_{n+c-1}), every planned action."""
        k = self.reward_actions(spec, reads)
        actions = slice(0, k) if k > 1 else 0

        def reward(x0_hat: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return reward_net(torch.cat([cond[:, -spec.obs_dim :], x0_hat[:, actions].flatten(1)], dim=-1))

        return reward


class StatePlans(Layout):
    kind, x_source, open_loop, reward_input = "states", "state", True, "state_goal"
    reward_inputs = ("state_goal",)

    def validate(self, spec: TaskSpec) -> None:
        if spec.history != 1:
            raise ValueError(f"task {spec.name}: state plans condition on the current state only (history 1), got {spec.history}")

    def cond_blocks(self, spec: TaskSpec) -> tuple[tuple[str, int], ...]:
        return (("state", spec.obs_dim),) + (((self.goal_source, self.goal_width(spec)),) if spec.goal_dim else ())

    def cond(self, past_states: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        s = past_states[:, -1]
        return s if goal is None else torch.cat([s, goal], dim=-1)

    def reward_input_dim(self, spec: TaskSpec, reads: str | None = None) -> int:
        self.reads(spec, reads)
        return spec.obs_dim + self.goal_width(spec)

    def reward_pairs(self, s, a, goal):
        return s if goal is None else torch.cat([s, goal], dim=-1)

    def reward(self, spec, reward_net, reads=None):
        """The mean over the plan of R_psi(s_t, goal block), in [-1, 1] whatever the horizon: the goal
        (``states``) or the goal state, cond's last block (``endpoints``)."""
        self.reads(spec, reads)
        width = self.goal_width(spec)

        def reward(x0_hat: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            B, H, _ = x0_hat.shape
            goal = cond[:, spec.obs_dim :].unsqueeze(1).expand(B, H, width)
            return reward_net(torch.cat([x0_hat, goal], dim=-1).reshape(B * H, -1)).reshape(B, H).mean(1)

        return reward


class EndpointPlans(StatePlans):
    """State plans conditioned on their first and last state, the RACTD authors' Maze2d conditioning
    (their edm_policy_maze.py: ``global_cond = cat(nobs[:, 0], nobs[:, -1])``; their env runner
    conditions on ``[obs, (target, 0, 0)]``). Diffuser does the same by inpainting both states.

    - training: cond = [s_n, s_{n+(T-1)k}], the window's own first and last knot, both normalised by
      the state normaliser; only windows wholly inside an episode (the authors' ``pad_after: 0``),
      and episodes that continue one another are joined first. With ``padded`` windows (an option,
      ``train-teacher --windows padded``) episodes are not joined: a window that runs past an episode's
      end (Maze2d's local data: a goal reached) ends at its last state at rest, so the last knot is a
      state the agent stopped at;
    - evaluation: cond = [s_now, goal state], the goal state being the goal in ``spec.goal_dims`` and 0
      in ``spec.rest_dims`` (the goal at rest), so the plan is asked to arrive there and stop;
    - reward model: R_psi(s_t, goal state) at every planned state (the authors' r(s) is the same
      function for their one fixed goal), averaged over the plan as for ``states``.
    """

    kind, reward_input, goal_source, full_windows = "endpoints", "state_goal_state", "state", True
    reward_inputs = ("state_goal_state",)

    def validate(self, spec: TaskSpec) -> None:
        super().validate(spec)
        if not spec.goal_dim or len(spec.goal_dims) != spec.goal_dim:
            raise ValueError(f"task {spec.name}: endpoint plans need a goal and goal_dims naming the state dimension of each of "
                             f"its {spec.goal_dim} entries, got goal_dims {tuple(spec.goal_dims)}")
        covered = sorted(set(spec.goal_dims) | set(spec.rest_dims))
        if covered != list(range(spec.obs_dim)) or set(spec.goal_dims) & set(spec.rest_dims):
            raise ValueError(f"task {spec.name}: endpoint plans build the goal state from goal_dims {tuple(spec.goal_dims)} "
                             f"and rest_dims {tuple(spec.rest_dims)}: together they must name each of the {spec.obs_dim} state dimensions once")

    def goal_width(self, spec: TaskSpec) -> int:
        return spec.obs_dim

    def goal_state(self, spec: TaskSpec, goal: Any) -> Any:
        """goal (..., goal_dim) -> the goal at rest (..., obs_dim): the goal in ``goal_dims``, 0 elsewhere
        (``rest_dims``). A matrix product, so that it traces and exports as one op."""
        place = goal_placement(spec)
        if isinstance(goal, torch.Tensor):
            return goal @ torch.as_tensor(place, dtype=goal.dtype, device=goal.device)
        return np.asarray(goal, dtype=np.float32) @ place

    def training_goal(self, x, goal):
        return x[:, -1]


def goal_placement(spec: TaskSpec) -> Any:
    """(goal_dim, obs_dim) float32 0/1 matrix putting goal entry i in state dimension goal_dims[i]."""
    place = np.zeros((spec.goal_dim, spec.obs_dim), dtype=np.float32)
    place[np.arange(spec.goal_dim), list(spec.goal_dims)] = 1.0
    return place


WINDOWS = ("full", "padded")
"""Which training windows the diffusion models see (``TaskSpec.windows``, ``train-teacher --windows``):
``full``, only windows whose rows all lie inside one episode (RACTD's code: ``pad_before: 0``,
``pad_after: 0`` in every config), or ``padded``, every transition starts a window and rows past the
episode's end repeat its last row (state plans: at rest, ``TaskSpec.rest_dims`` set to 0)."""


LAYOUTS: dict[str, Layout] = {layout.kind: layout for layout in (ActionChunks(), StatePlans(), EndpointPlans())}
"""Every planning kind a task may declare (``TaskSpec.planning``)."""

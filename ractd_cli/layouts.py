"""Planning layouts: the one place that knows an action chunk from a state plan.

A task's :class:`~ractd_cli.adapters.TaskSpec` names its planning kind (``spec.planning``) and
``spec.layout`` is the matching :class:`Layout`. Everything that differs between the kinds (the
plan's shape and what it is made of, the conditioning vector, how the reward model reads a plan,
how plans are executed) is asked of the layout, never switched on elsewhere:

- ``chunk`` (:class:`ActionChunks`; MuJoCo, Kitchen): x = a_n..a_{n+c-1} (c = horizon) given the past
  h states, cond = s_{n-h+1..n} flattened; closed loop: execute the first action, replan. The
  reward model reads (s_n, a_n).
- ``states`` (:class:`StatePlans`; Maze2d): x = s_n..s_{n+H-1} given the current state and the goal,
  cond = [s_n, goal]; open loop: one plan per episode, followed by inverse dynamics (or an adapter's
  follower). The reward model reads (s_t, goal) at every planned state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

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
    """What the reward model reads, for its artifact: ``"state_action"`` or ``"state_goal"``."""

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

    def reward_input_dim(self, spec: TaskSpec) -> int:
        raise NotImplementedError

    def reward_pairs(self, s: torch.Tensor, a: torch.Tensor | None, goal: torch.Tensor | None) -> torch.Tensor:
        """The reward model's training input from a state s (B, obs_dim), its action a and the goal."""
        raise NotImplementedError

    def reward(self, spec: TaskSpec, reward_net: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """R(x0_hat, cond) -> (B,), how the frozen reward model scores a normalised plan."""
        raise NotImplementedError


class ActionChunks(Layout):
    kind, x_source, open_loop, reward_input = "chunk", "action", False, "state_action"

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

    def reward_input_dim(self, spec: TaskSpec) -> int:
        return spec.obs_dim + spec.act_dim

    def reward_pairs(self, s, a, goal):
        return torch.cat([s, a], dim=-1)

    def reward(self, spec, reward_net):
        """R_psi(s_n, a_hat_n): s_n the last state of the history, a_hat_n the first planned action (eq. 8)."""

        def reward(x0_hat: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return reward_net(torch.cat([cond[:, -spec.obs_dim :], x0_hat[:, 0]], dim=-1))

        return reward


class StatePlans(Layout):
    kind, x_source, open_loop, reward_input = "states", "state", True, "state_goal"

    def validate(self, spec: TaskSpec) -> None:
        if spec.history != 1:
            raise ValueError(f"task {spec.name}: state plans condition on the current state only (history 1), got {spec.history}")

    def cond_blocks(self, spec: TaskSpec) -> tuple[tuple[str, int], ...]:
        return (("state", spec.obs_dim),) + ((("goal", spec.goal_dim),) if spec.goal_dim else ())

    def cond(self, past_states: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        s = past_states[:, -1]
        return s if goal is None else torch.cat([s, goal], dim=-1)

    def reward_input_dim(self, spec: TaskSpec) -> int:
        return spec.obs_dim + spec.goal_dim

    def reward_pairs(self, s, a, goal):
        return s if goal is None else torch.cat([s, goal], dim=-1)

    def reward(self, spec, reward_net):
        """The mean over the plan of R_psi(s_t, goal), in [-1, 1] whatever the horizon."""

        def reward(x0_hat: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            B, H, _ = x0_hat.shape
            goal = cond[:, spec.obs_dim :].unsqueeze(1).expand(B, H, spec.goal_dim)
            return reward_net(torch.cat([x0_hat, goal], dim=-1).reshape(B * H, -1)).reshape(B, H).mean(1)

        return reward


LAYOUTS: dict[str, Layout] = {layout.kind: layout for layout in (ActionChunks(), StatePlans())}
"""Every planning kind a task may declare (``TaskSpec.planning``)."""

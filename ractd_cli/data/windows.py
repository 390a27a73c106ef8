"""Episodes -> training windows, returns-to-go and normalisers. Pure numpy (torch only for state dicts).

Shapes use these letters: ``N`` windows, ``M`` transitions (all steps of all episodes), ``S`` states
(M + number of episodes), ``h`` history, ``c`` chunk length, ``H`` state horizon, ``Do`` obs_dim,
``Da`` act_dim, ``Dg`` goal_dim.

A :class:`Windows` keeps the episodes' states and actions once, flat, plus integer index arrays that say
which rows make up each window; padding is done by clamping indices, so nothing is copied until a batch
is gathered, and a window's plan rows are computed from its start and its episode's end only when
gathered. (Materialising every window of Maze2d-large, 1M steps x 384 states x 4 dims, would need
6 GB.) ``windows.batch(idx)`` gathers a minibatch; ``windows.arrays()`` materialises all windows, for
small datasets and tests. Trainers that keep data on a GPU can gather themselves with the index rows,
e.g. ``actions_t[torch.as_tensor(w.x_rows(idx)[0])]``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..adapters import TaskSpec
    from .load import Episode


# --------------------------------------------------------------------------------------------------
# Returns-to-go
# --------------------------------------------------------------------------------------------------


def returns_to_go(
    rewards: np.ndarray,
    terminations: np.ndarray,
    gamma: float,
    termination_penalty: float = 0.0,
) -> np.ndarray:
    """Discounted return-to-go of one episode, shape (T,), float32.

    ``rtg[t] = sum_{k >= t} gamma^(k-t) * (r_k + termination_penalty * terminated_k)``.

    The penalty is added only on true terminations (``terminations[k]``), never on time-outs or other
    truncations, and nothing is bootstrapped past the end of the episode.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    term = np.asarray(terminations, dtype=bool).reshape(-1)
    if term.shape != r.shape:
        raise ValueError(f"rewards {r.shape} and terminations {term.shape} differ in length")
    r = r + termination_penalty * term
    out = np.empty_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Normaliser
# --------------------------------------------------------------------------------------------------


class Normalizer:
    """Per-dimension min-max scaling to [-1, 1].

    ``normalize(x) = (x - centre) / half_range`` with ``centre = (max + min) / 2`` and
    ``half_range = (max - min) / 2``. A dimension whose range is below ``eps`` (constant in the data)
    uses ``half_range = 1``: it maps to ``x - centre`` (0 on the data) and round-trips exactly.

    Works on numpy arrays and torch tensors of shape (..., D). ``state_dict()`` gives
    ``{"min": tensor(D), "max": tensor(D)}`` (float32) for a safetensors file;
    :meth:`from_state_dict` rebuilds it.
    """

    def __init__(self, min: Any, max: Any, eps: float = 1e-6):  # noqa: A002 (names match the state dict)
        self.min = np.asarray(min, dtype=np.float32).reshape(-1)
        self.max = np.asarray(max, dtype=np.float32).reshape(-1)
        if self.min.shape != self.max.shape:
            raise ValueError(f"min {self.min.shape} and max {self.max.shape} differ in shape")
        if np.any(self.max < self.min):
            raise ValueError("max < min in some dimension")
        self.eps = float(eps)
        self.centre = ((self.max.astype(np.float64) + self.min) / 2).astype(np.float32)
        half = (self.max.astype(np.float64) - self.min) / 2
        self.half_range = np.where(half < eps / 2, 1.0, half).astype(np.float32)

    @classmethod
    def fit(cls, data: Any, eps: float = 1e-6) -> "Normalizer":
        """Fit to data of shape (..., D) (numpy or torch); the last axis is the feature axis."""
        arr = _to_numpy(data)
        arr = arr.reshape(-1, arr.shape[-1])
        if len(arr) == 0:
            raise ValueError("cannot fit a Normalizer to no data")
        return cls(arr.min(axis=0), arr.max(axis=0), eps=eps)

    @property
    def dim(self) -> int:
        return int(self.min.shape[0])

    def normalize(self, x: Any) -> Any:
        c, s = self._params_like(x)
        return (x - c) / s

    def unnormalize(self, y: Any) -> Any:
        c, s = self._params_like(y)
        return y * s + c

    __call__ = normalize

    def same_as(self, other: "Normalizer") -> bool:
        """Whether both map values identically (same min and max)."""
        return np.array_equal(self.min, other.min) and np.array_equal(self.max, other.max)

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"min": torch.from_numpy(self.min.copy()), "max": torch.from_numpy(self.max.copy())}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], eps: float = 1e-6) -> "Normalizer":
        return cls(_to_numpy(state["min"]), _to_numpy(state["max"]), eps=eps)

    def _params_like(self, x: Any) -> tuple[Any, Any]:
        if _is_torch(x):
            import torch

            c = torch.as_tensor(self.centre, device=x.device, dtype=x.dtype)
            s = torch.as_tensor(self.half_range, device=x.device, dtype=x.dtype)
            return c, s
        dtype = np.asarray(x).dtype
        dtype = dtype if np.issubdtype(dtype, np.floating) else np.float32
        return self.centre.astype(dtype), self.half_range.astype(dtype)

    def __repr__(self) -> str:
        return f"Normalizer(dim={self.dim})"


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------


@dataclass
class Windows:
    """All training windows of a dataset, as flat data plus index arrays (see the module docstring).

    Flat data (episodes concatenated):

    - ``states`` (S, Do) float32; episode ``i`` owns rows ``state_offsets[i] : state_offsets[i+1]``
      (T_i + 1 rows). Where the layout joins continuing episodes (``Layout.full_windows``), "episode"
      in the offsets means a run of joined episodes (:func:`continuation_runs`).
    - ``actions`` (M, Da) float32; episode ``i`` owns rows ``action_offsets[i] : action_offsets[i+1]``.
    - ``goals`` (S, Dg) float32 or None, row-aligned with ``states``.
    - ``rtg`` (M,) float32: discounted return-to-go of each transition (spec.gamma, penalty on true
      terminations only).
    - ``rewards`` (M,) float32, ``terminations`` / ``truncations`` (M,) bool.

    One row per window ``n`` (every transition of every episode starts one window, so N == M):

    - ``x_left`` (N,) int64: how many rows of ``x_source`` follow the window's first one within its
      episode (or run): T - 1 - n for actions, T - n for states. With ``action_index`` or
      ``state_index`` (the first row) it gives the plan's rows, computed by :meth:`x_rows` a minibatch
      at a time, so the (N, L) index is never held: a 4M-step maze dataset at 384 states would need
      12 GB for it, and the reward and inverse-dynamics models never read it.
    - ``x_index`` (N, L) int64 and ``x_mask`` (N, L) bool (:meth:`x_rows` of every window; small data
      only): rows of ``actions`` (chunk: L = c, a_n..a_{n+c-1}) or of ``states`` (states: L = H,
      s_n..s_{n+H-1}, every ``plan_stride``-th); past the episode's end the index repeats the last
      row, and the mask is False there (end-of-episode padding).
    - ``cond_index`` (N, h) int64 rows of ``states``: s_{n-h+1}..s_n, repeating s_0 before the start
      (states planning: h = 1, the current state).
    - ``state_index`` (N,) rows of ``states`` holding s_n; ``action_index`` (N,) rows of ``actions``
      holding a_n (also the row of ``rtg``).
    - ``episode`` (N,) episode number (of the dataset, joined or not), ``t`` (N,) time step n within it.
    """

    x_from: str
    """What ``x_index`` points into: ``"action"`` (action chunks) or ``"state"`` (state plans); the
    task layout's ``x_source``."""
    history: int
    horizon: int
    states: np.ndarray
    actions: np.ndarray
    goals: np.ndarray | None
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    rtg: np.ndarray
    state_offsets: np.ndarray
    action_offsets: np.ndarray
    x_left: np.ndarray
    plan_stride: int
    cond_index: np.ndarray
    state_index: np.ndarray
    action_index: np.ndarray
    episode: np.ndarray
    t: np.ndarray
    same_data_as: str | None = None
    """The fingerprint of the same episodes windowed the way the task's other models window them,
    where these windows differ only in that (endpoint plans on ``padded`` windows do not join
    episodes): the data's identity does not depend on the windows chosen."""

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of the data (states, actions, goals, rewards, ends, offsets), computed once: two
        loads of the same dataset agree; a regenerated or changed dataset differs (checked by
        ``--resume`` and by ``distill``). The same for every choice of windows (``same_data_as``)."""
        if self.same_data_as is not None:
            return self.same_data_as
        return data_fingerprint(self.states, self.actions, self.goals, self.rewards, self.terminations, self.truncations,
                                self.state_offsets, self.action_offsets)

    def __len__(self) -> int:
        return int(self.x_left.shape[0])

    @property
    def slots(self) -> np.ndarray:
        """(L,) the time offsets of the plan's rows within a window: 0, stride, 2 stride, ... < horizon."""
        return np.arange(0, self.horizon, self.plan_stride, dtype=np.int64)

    def x_rows(self, idx: Any) -> tuple[np.ndarray, np.ndarray]:
        """The plan rows of windows ``idx`` (int array or slice): (index (B, L) int64 rows of
        ``x_source``, mask (B, L) bool, False on end-of-episode padding, where the index repeats the
        episode's last row)."""
        idx = _as_index(idx, len(self))
        first = (self.action_index if self.x_from == "action" else self.state_index)[idx, None]
        left = self.x_left[idx, None]
        return first + np.minimum(self.slots[None, :], left), self.slots[None, :] <= left

    @property
    def x_index(self) -> np.ndarray:
        """(N, L) every window's plan rows (:meth:`x_rows`), materialised: small data only."""
        return self.x_rows(slice(None))[0]

    @property
    def x_mask(self) -> np.ndarray:
        """(N, L) every window's padding mask (:meth:`x_rows`), materialised: small data only."""
        return self.x_rows(slice(None))[1]

    def full_rows(self) -> np.ndarray:
        """The windows with no padding, as indices (K,): every plan row inside the episode (or run) and
        the conditioning's h past states inside the episode (``t >= h - 1``)."""
        return np.flatnonzero((self.slots[-1] <= self.x_left) & (self.t >= self.history - 1))

    @property
    def x_source(self) -> np.ndarray:
        """The flat array ``x_index`` points into: ``actions`` (chunk) or ``states`` (states)."""
        return self.actions if self.x_from == "action" else self.states

    def batch(self, idx: Any) -> dict[str, np.ndarray]:
        """Gather windows ``idx`` (int array or slice). Keys and shapes (B = len(idx)):

        - ``x`` (B, L, Da) actions (chunk) or (B, L, Do) states (states planning), padded.
        - ``x_mask`` (B, L) bool.
        - ``cond`` (B, h, Do) past states (states planning: (B, 1, Do), the current state).
        - ``goal`` (B, Dg), only when the task has goals: the goal at s_n.
        - ``s`` (B, Do) s_n; ``a`` (B, Da) a_n; ``rtg`` (B,) return-to-go at n: the reward model's
          input pair and regression target.
        """
        idx = _as_index(idx, len(self))
        x_index, x_mask = self.x_rows(idx)
        out = {
            "x": self.x_source[x_index],
            "x_mask": x_mask,
            "cond": self.states[self.cond_index[idx]],
            "s": self.states[self.state_index[idx]],
            "a": self.actions[self.action_index[idx]],
            "rtg": self.rtg[self.action_index[idx]],
        }
        if self.goals is not None:
            out["goal"] = self.goals[self.state_index[idx]]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every window materialised (``batch`` of all N), plus the inverse-dynamics triples
        ``inv_s`` / ``inv_a`` / ``inv_s_next`` (M, ...). Memory grows as N * L: small datasets only."""
        out = self.batch(np.arange(len(self)))
        out.update(self.inverse_dynamics())
        return out

    def inverse_dynamics(self) -> dict[str, np.ndarray]:
        """All transitions as (s_t, a_t, s_{t+1}) triples: ``inv_s`` (M, Do), ``inv_a`` (M, Da),
        ``inv_s_next`` (M, Do); for the inverse-dynamics model a_t = f(s_t, s_{t+1})."""
        rows = self.transition_state_rows()
        return {
            "inv_s": self.states[rows],
            "inv_a": self.actions,
            "inv_s_next": self.states[rows + 1],
        }

    def transition_state_rows(self) -> np.ndarray:
        """(M,) row of ``states`` holding s_t for each row t of ``actions`` (s_{t+1} is the next row)."""
        lengths = np.diff(self.action_offsets)
        return np.repeat(self.state_offsets[:-1] - self.action_offsets[:-1], lengths) + np.arange(
            len(self.actions)
        )


def data_fingerprint(*arrays: np.ndarray | None) -> str:
    """The hash behind :attr:`Windows.fingerprint`: of the flat data arrays, in order (None skipped)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()[:16]


def _as_index(idx: Any, n: int) -> Any:
    if isinstance(idx, slice):
        return np.arange(n)[idx]
    return np.asarray(idx, dtype=np.int64)


def continuation_runs(episodes: Sequence["Episode"]) -> list[list[int]]:
    """Consecutive episodes grouped into runs: an episode whose first state is exactly the previous
    episode's last state continues it (one continuing run cut into episodes, as Minari's pointmaze
    data is cut at every goal reached). Returns the episode indices of each run, in order."""
    runs: list[list[int]] = []
    for i, ep in enumerate(episodes):
        prev = episodes[i - 1] if i else None
        if prev is not None and np.array_equal(np.asarray(prev.states[-1]), np.asarray(ep.states[0])):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _flat_states(episodes: Sequence["Episode"], runs: list[list[int]]) -> tuple[np.ndarray, ...]:
    """The flat state rows of ``runs`` of episodes: (lengths (R,), action_offsets (R+1,), state_offsets
    (R+1,), states (S, Do), goals (S, Dg) or None). A run's states or goals are each episode's rows
    but its last, then the run's final row."""
    def joined(ids: list[int], rows: str) -> np.ndarray:
        parts = [np.asarray(getattr(episodes[i], rows), np.float32) for i in ids]
        return np.concatenate([p[:-1] for p in parts] + [parts[-1][-1:]])

    lengths = np.array([sum(len(episodes[i]) for i in ids) for ids in runs], dtype=np.int64)
    action_offsets = np.concatenate([[0], np.cumsum(lengths)])
    state_offsets = np.concatenate([[0], np.cumsum(lengths + 1)])
    states = np.concatenate([joined(ids, "states") for ids in runs])
    goals = np.concatenate([joined(ids, "goals") for ids in runs]) if all(ep.goals is not None for ep in episodes) else None
    return lengths, action_offsets, state_offsets, states, goals


def make_windows(episodes: Sequence["Episode"], spec: "TaskSpec") -> Windows:
    """Index every transition of every episode as one window start (see :class:`Windows`).

    x comes from what the task's layout plans (``spec.layout.x_source``): actions give
    x = a_n..a_{n+c-1} (c = spec.horizon), padded at the episode end by repeating a_{T-1}; states give
    x = s_n..s_{n+H-1} (H = spec.horizon), padded at the end by repeating s_T. cond = s_{n-h+1}..s_n
    (h = spec.history, 1 for state plans), padded at the start by repeating s_0.
    Returns-to-go use ``spec.gamma`` and ``spec.termination_penalty``, each within its own episode.

    Where the layout joins episodes (``Layout.full_windows``: endpoint plans) and the task trains on
    ``full`` windows (``spec.windows``), episodes that continue one another (:func:`continuation_runs`) are joined first, so a window may run
    across the point where the data was cut (the state there is kept once, with the goal of the
    episode that starts there); ``x_mask`` then says which windows are full. ``episode`` and ``t``
    still name the original episode and step of each window's first transition.
    """
    x_from = spec.layout.x_source
    episodes = [ep for ep in episodes if len(ep) > 0]
    if not episodes:
        raise ValueError("no non-empty episodes to window")
    L = int(spec.horizon)
    h = int(spec.history)
    if L < 1 or h < 1:
        raise ValueError(f"horizon ({L}) and history ({h}) must be >= 1")

    join = spec.layout.full_windows and spec.windows == "full"
    runs = continuation_runs(episodes) if join else [[i] for i in range(len(episodes))]
    lengths, action_offsets, state_offsets, states, goals = _flat_states(episodes, runs)
    actions = np.concatenate([np.asarray(ep.actions, np.float32) for ep in episodes])
    rewards = np.concatenate([np.asarray(ep.rewards, np.float32) for ep in episodes])
    terms = np.concatenate([np.asarray(ep.terminations, bool) for ep in episodes])
    truncs = np.concatenate([np.asarray(ep.truncations, bool) for ep in episodes])
    same_data_as = None
    if spec.layout.full_windows and not join:  # padded endpoint windows: the data's identity is its joined form's
        _, j_action_offsets, j_state_offsets, j_states, j_goals = _flat_states(episodes, continuation_runs(episodes))
        same_data_as = data_fingerprint(j_states, actions, j_goals, rewards, terms, truncs, j_state_offsets, j_action_offsets)
    rtg = np.concatenate(
        [returns_to_go(ep.rewards, ep.terminations, spec.gamma, spec.termination_penalty) for ep in episodes]
    )
    ep_lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
    episode = np.repeat(np.arange(len(episodes), dtype=np.int64), ep_lengths)
    t_in_episode = np.arange(len(actions), dtype=np.int64) - np.repeat(np.cumsum(ep_lengths) - ep_lengths, ep_lengths)

    run = np.repeat(np.arange(len(runs), dtype=np.int64), lengths)
    t = np.arange(len(actions), dtype=np.int64) - np.repeat(action_offsets[:-1], lengths)  # step within the run
    T = lengths[run]  # (N,) length of each window's run
    a0 = action_offsets[:-1][run]
    s0 = state_offsets[:-1][run]

    # actions exist for 0..T-1, states for 0..T; the plan rows themselves are Windows.x_rows
    last = T - 1 if x_from == "action" else T
    past = t[:, None] + np.arange(-h + 1, 1, dtype=np.int64)[None, :]  # (N, h)
    cond_index = s0[:, None] + np.maximum(past, 0)

    return Windows(
        x_from=x_from,
        history=h,
        horizon=L,
        states=states,
        actions=actions,
        goals=goals,
        rewards=rewards,
        terminations=terms,
        truncations=truncs,
        rtg=rtg,
        state_offsets=state_offsets,
        action_offsets=action_offsets,
        x_left=last - t,
        plan_stride=int(spec.plan_stride),
        cond_index=cond_index,
        state_index=s0 + t,
        action_index=a0 + t,
        episode=episode,
        t=t_in_episode,
        same_data_as=same_data_as,
    )

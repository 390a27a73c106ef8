"""A task's dataset as normalised torch tensors for the three trainers.

Wraps :class:`ractd_cli.data.windows.Windows` (flat data plus index arrays): states, actions,
goals and returns-to-go are normalised once, kept flat, and each minibatch is gathered by
indexing, so Maze2d-sized windows are never materialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from ..adapters import EnvAdapter, TaskSpec
from ..data import store
from ..data.load import load_episodes
from ..data.windows import Normalizer, Windows, make_windows
from ..errors import RactdError

Batch = dict[str, torch.Tensor]


@dataclass
class Source:
    """``len(source)`` rows; ``source.gather(idx)`` -> a dict of (B, ...) tensors (see train.loop)."""

    n: int
    gather: Callable[[torch.Tensor], Batch]

    def __len__(self) -> int:
        return self.n

    def subset(self, rows: torch.Tensor) -> "Source":
        """The rows ``rows`` (K,) of this source, as a source of K rows."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        return Source(len(rows), lambda idx: self.gather(rows[idx]))


def held_out_episodes(episode: np.ndarray, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split rows by episode: (training rows, held-out rows), about ``fraction`` of the episodes held
    out, chosen by ``seed`` (a whole episode is on one side, so held-out rows are unseen behaviour,
    not neighbours of training rows). ``episode`` (N,) is each row's episode number. Fewer than two
    episodes, or ``fraction`` 0: nothing is held out."""
    episodes = np.unique(episode)
    n = len(episodes)
    k = 0 if fraction <= 0 or n < 2 else min(max(1, round(fraction * n)), n - 1)
    chosen = np.random.default_rng(seed).permutation(episodes)[:k]
    val = np.isin(episode, chosen)
    return torch.as_tensor(np.flatnonzero(~val)), torch.as_tensor(np.flatnonzero(val))


def default_dataset(spec: TaskSpec) -> str:
    """The dataset a trainer uses when none is given: the fetched Minari data, else the local one."""
    candidates = [store.local_dataset_id(spec)]
    if spec.minari_ids:
        candidates.insert(0, store.remote_dataset_id(spec))
    for d in candidates:
        if store.dataset_exists(d):
            return d
    raise RactdError(
        f"no dataset for {spec.name} in the cache; run `ractd fetch {spec.name}` "
        f"(or `ractd fetch {spec.name} --source local` to generate one here)"
    )


@dataclass
class TaskData:
    """Normalised training data of one task.

    - ``diffusion``: x (B, T, D) plans and cond (B, cond_dim) (layout: ``TaskSpec.x_shape``, ``TaskSpec.cond_dim``); for
      ``states`` plans the end-of-episode padding has ``spec.rest_dims`` set to 0 (the agent rests);
      ``endpoints`` plans have cond = [x[:, 0], x[:, -1]] (a padded window ends at rest).
    - ``reward``: input (B, obs_dim+act_dim) for ``chunk`` = [s_n, a_n] (reading
      ``state_action_chunk``: (B, obs_dim+c act_dim) = [s_n, a_n..a_{n+c-1}]), (B, obs_dim+goal_dim)
      for ``states`` = [s_t, goal], (B, 2 obs_dim) for ``endpoints`` = [s_t, goal state]; rtg (B,)
      normalised to [-1, 1].
    - ``transitions``: s, s_next (B, obs_dim), a (B, act_dim), for inverse dynamics.
    - ``normalizers``: ``state``, ``action``, ``rtg`` and ``goal`` when the task has one.
    """

    dataset_id: str
    windows: Windows
    normalizers: dict[str, Normalizer]
    diffusion: Source
    reward: Source
    transitions: Source
    reward_input: str
    """What the reward model reads (``Layout.reward_inputs``: ``spec.reward_input``, else the
    layout's default), for its artifact."""
    diffusion_rows: torch.Tensor
    """(len(diffusion),) the row of ``windows`` behind each row of ``diffusion``: every window, or
    (``TaskSpec.windows == "full"``) only those wholly inside an episode."""


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


def build_task_data(spec: TaskSpec, windows: Windows, dataset_id: str, normalizers: Mapping[str, Normalizer] | None = None) -> TaskData:
    """The task's data, normalised by ``normalizers`` (e.g. a teacher's, so that a student trains in
    its teacher's space by construction) or, by default, by normalisers fitted to these windows."""
    norms = {
        "state": Normalizer.fit(windows.states),
        "action": Normalizer.fit(windows.actions),
        "rtg": Normalizer.fit(windows.rtg.reshape(-1, 1)),
    }
    if windows.goals is not None:
        norms["goal"] = Normalizer.fit(windows.goals)
    if normalizers is not None:
        norms.update(normalizers)
    layout = spec.layout
    S = _t(norms["state"].normalize(windows.states))
    A = _t(norms["action"].normalize(windows.actions))
    # the goal block as the model reads it: the goal, or (endpoint plans) the goal state at rest
    G = _t(norms[layout.goal_source].normalize(layout.goal_state(spec, windows.goals))) if windows.goals is not None else None
    R = _t(norms["rtg"].normalize(windows.rtg.reshape(-1, 1))).reshape(-1)
    X = {"action": A, "state": S}[layout.x_source]
    rest = None  # (dims, their normalised 0) for the end-of-episode padding of states plans
    if layout.x_source == "state" and spec.rest_dims:
        dims = torch.as_tensor(list(spec.rest_dims))
        zero = _t(norms["state"].normalize(np.zeros(spec.obs_dim, np.float32)))
        rest = (dims, zero[dims])
    cond_index = torch.as_tensor(windows.cond_index)
    state_index = torch.as_tensor(windows.state_index)
    action_index = torch.as_tensor(windows.action_index)
    n = len(windows)

    def diffusion(idx: torch.Tensor) -> Batch:
        x_index, x_mask = windows.x_rows(idx.numpy())  # (B, L) rows of X, False on padding
        x = X[torch.as_tensor(x_index)]
        if rest is not None:  # past the episode's end: the last state, at rest
            dims, zero = rest
            x[..., dims] = torch.where(~torch.as_tensor(x_mask)[..., None], zero, x[..., dims])
        goal = layout.training_goal(x, G[state_index[idx]] if G is not None else None)
        return {"x": x, "cond": layout.cond(S[cond_index[idx]], goal)}  # cond_index: (B, h) past states

    # the windows the diffusion models train on: only the full ones (spec.windows, the default), or all
    full = spec.windows == "full"
    diffusion_rows = torch.as_tensor(windows.full_rows()) if full else torch.arange(n)
    if len(diffusion_rows) == 0:
        raise RactdError(f"dataset {dataset_id} has no stretch of {spec.horizon} steps without an episode end, "
                         f"which {spec.name}'s plans need; fetch more data (e.g. `ractd fetch {spec.name} --source local --force`)")

    chunk = layout.reward_actions(spec) > 1  # R_psi reads the window's whole action chunk

    def reward(idx: torch.Tensor) -> Batch:
        s, goal = S[state_index[idx]], (G[state_index[idx]] if G is not None else None)
        a = A[torch.as_tensor(windows.x_rows(idx.numpy())[0])] if chunk else A[action_index[idx]]  # (B, c, act_dim) or (B, act_dim)
        return {"input": layout.reward_pairs(s, a, goal), "rtg": R[action_index[idx]]}

    s_rows = torch.as_tensor(windows.transition_state_rows())

    def transitions(idx: torch.Tensor) -> Batch:
        r = s_rows[idx]
        return {"s": S[r], "s_next": S[r + 1], "a": A[idx]}

    if G is None and spec.goal_dim:
        raise RactdError(f"dataset {dataset_id} has no goals but task {spec.name} needs them")
    return TaskData(
        dataset_id=dataset_id,
        windows=windows,
        normalizers=norms,
        diffusion=Source(n, diffusion).subset(diffusion_rows) if full else Source(n, diffusion),
        diffusion_rows=diffusion_rows,
        reward=Source(n, reward),
        transitions=Source(len(s_rows), transitions),
        reward_input=layout.reads(spec),
    )


def load_task_data(
    adapter: EnvAdapter, spec: TaskSpec, dataset: str | None = None, normalizers: Mapping[str, Normalizer] | None = None
) -> TaskData:
    """Load the task's dataset (``dataset`` id/path, default :func:`default_dataset`) for training,
    normalised by ``normalizers`` where given (see :func:`build_task_data`)."""
    dataset = dataset or default_dataset(spec)
    episodes = load_episodes(adapter, spec, dataset)
    return build_task_data(spec, make_windows(episodes, spec), dataset, normalizers)

"""D4RL-style behaviour data from one SAC run per body (stable-baselines3), cached and resumable.

D4RL's recipe (Fu et al. 2020), on this machine: one SAC agent per body trains online.

* ``medium``: rollouts of the policy at the first evaluation scoring at least a third of D4RL's
  expert reference return (``MEDIUM_FRACTION``; D4RL stopped its SAC "at about 1/3 of the expert's
  score");
* ``medium-replay``: every transition SAC collected up to that checkpoint (its replay buffer,
  the random-action warm-up included), in collection order;
* ``expert``: rollouts of the policy at the end of the training budget (``train_steps``, default
  D4RL's 1M steps);
* ``medium-expert``: medium rollouts and expert rollouts, half each.

The run lives in the cache (``<cache>/sac/<body>-seed<seed>``) and is shared by every dataset of
its body: ``fetch hopper-medium-replay`` then ``fetch hopper-medium`` trains once. Every
``EVAL_EVERY`` steps the run evaluates its deterministic policy (``EVAL_EPISODES`` episodes on
fixed seeds) and checkpoints everything that decides its future: the networks and optimisers, the
replay buffer, the global RNG states and the MuJoCo state of the unfinished training episode. A
run stopped at any point (Ctrl-C) resumes from its last checkpoint and ends bit-identical to one
that was never stopped (same machine type and thread count, as for every artifact; ``fetch`` runs it
on one torch thread unless told otherwise). Which steps ran on which torch version, CPU kernels
and thread count is kept in the run (``made_on``) and in every dataset made from it
(``sac_made_on``). Checkpoints are safetensors and JSON: nothing is unpickled (stable-baselines3's
own ``load`` would unpickle).

Rollouts sample the stochastic policy (``deterministic=False``, for state coverage) from a torch
generator seeded by the dataset's seed, so a dataset is the same whenever it is made.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ractd_cli.data.recording import ProgressBatcher, rollout
from ractd_cli.locks import exclusive

KINDS = ("medium", "medium-replay", "expert", "medium-expert")
EVAL_EVERY = 5_000
"""SAC steps between evaluations (and checkpoints)."""
EVAL_EPISODES = 10
MEDIUM_FRACTION = 1 / 3
"""The medium checkpoint: the first evaluation at or above this fraction of D4RL's expert return."""
DEFAULT_TRAIN_STEPS = 1_000_000
"""The expert's training budget: D4RL's 1M SAC steps."""
MEDIUM_MAX_STEPS = 1_000_000
"""Where the search for the medium checkpoint gives up (then the best evaluation so far is medium)."""


def available() -> bool:
    """Whether stable-baselines3 is installed (without paying for its import)."""
    return importlib.util.find_spec("stable_baselines3") is not None


@dataclasses.dataclass(frozen=True)
class Evaluation:
    step: int
    mean_return: float


class SACRun:
    """One SAC run in ``directory``, created fresh or resumed from its last checkpoint there.

    ``make_env()`` builds the body's env (the adapter's, with its 1000-step limit); ``ref_max`` is
    D4RL's expert reference return that defines the medium threshold. ``eval_every``,
    ``eval_episodes`` and ``learning_starts`` are for tests (small runs); a directory remembers
    its settings and refuses others.
    """

    def __init__(
        self,
        make_env: Callable[[], Any],
        directory: Path,
        *,
        seed: int,
        ref_max: float,
        eval_every: int = EVAL_EVERY,
        eval_episodes: int = EVAL_EPISODES,
        learning_starts: int = 100,
    ):
        from stable_baselines3 import SAC

        self.make_env, self.dir, self.seed = make_env, Path(directory), int(seed)
        self.settings = {"seed": self.seed, "eval_every": int(eval_every), "eval_episodes": int(eval_episodes),
                         "learning_starts": int(learning_starts), "ref_max": float(ref_max)}
        self.threshold = MEDIUM_FRACTION * float(ref_max)
        self.model = SAC("MlpPolicy", make_env(), seed=self.seed, device="cpu", verbose=0, learning_starts=learning_starts)
        # A logger of our own, with no outputs: without one, every `learn` call has stable-baselines3
        # make an empty folder tempdir/SB3-<date-time> that nothing removes.
        from stable_baselines3.common.logger import Logger

        self.model.set_logger(Logger(folder=None, output_formats=[]))
        self.evaluations: list[Evaluation] = []
        self.medium_step: int | None = None
        self.made_on: list[dict[str, Any]] = []
        """Spans of steps and what they ran on: ``{"steps": [from, to], **ractd_cli.artifacts.made_on()}``."""
        if (self.dir / "run.json").exists():
            self._restore()

    # -- training ----------------------------------------------------------------------------

    @property
    def step(self) -> int:
        return int(self.model.num_timesteps)

    def train_to(self, step: int, progress: ProgressBatcher, *, until_medium: bool = False) -> None:
        """Train in chunks of ``eval_every`` steps up to ``step`` (or, ``until_medium``, until an
        evaluation reaches the medium threshold), evaluating and checkpointing after each chunk."""
        from ractd_cli.artifacts import made_on

        every = self.settings["eval_every"]
        while self.step < step and not (until_medium and self.medium_step is not None):
            start = self.step
            self.model.learn(total_timesteps=min(every, step - self.step), reset_num_timesteps=False,
                             callback=_progress_callback(progress))
            self._record_span(start, self.step, made_on())
            ev = Evaluation(self.step, self._evaluate())
            if not self.evaluations or ev.mean_return > max(e.mean_return for e in self.evaluations):
                self._save_policy("best")
            self.evaluations.append(ev)
            if self.medium_step is None and ev.mean_return >= self.threshold:
                self.medium_step = ev.step
                self._save_policy("medium")
            progress.step(0, sac_step=self.step, sac_return=round(ev.mean_return, 1))
            self._save()

    def ensure_medium(self, progress: ProgressBatcher, max_steps: int = MEDIUM_MAX_STEPS) -> int:
        """Train until the medium checkpoint exists; its step. Without one by ``max_steps``, the best
        evaluation so far becomes medium (``medium_threshold_reached`` is then False)."""
        if self.medium_step is None:
            self.train_to(max_steps, progress, until_medium=True)
        if self.medium_step is None:  # the threshold was not reached: the best policy so far stands in
            best = max(self.evaluations, key=lambda e: e.mean_return)
            self.medium_step = best.step
            os.replace(self.dir / "best.safetensors", self.dir / "medium.safetensors")
            self._save()
        return self.medium_step

    def _record_span(self, start: int, end: int, machine: dict[str, Any]) -> None:
        """Add steps ``start..end`` run on ``machine`` to :attr:`made_on`, joined to the last span
        when it continues it on the same machine."""
        last = self.made_on[-1] if self.made_on else None
        if last is not None and last["steps"][1] == start and {k: v for k, v in last.items() if k != "steps"} == machine:
            last["steps"][1] = end
        else:
            self.made_on.append({"steps": [start, end], **machine})

    def _evaluate(self) -> float:
        env = self.make_env()
        try:
            returns = []
            for e in range(self.settings["eval_episodes"]):
                obs, _ = env.reset(seed=10_000 + e)
                done, total = False, 0.0
                while not done:
                    action, _ = self.model.predict(obs, deterministic=True)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    done = terminated or truncated
                returns.append(total)
            return float(np.mean(returns))
        finally:
            env.close()

    # -- data ---------------------------------------------------------------------------------

    def replay_episodes(self, upto: int) -> list[Any]:
        """The first ``upto`` collected transitions as EpisodeBuffers (collection order; an episode
        still running at ``upto`` is cut and marked truncated)."""
        from minari.data_collector import EpisodeBuffer

        rb = self.model.replay_buffer
        n = min(int(upto), rb.buffer_size if rb.full else rb.pos)
        obs, nxt = rb.observations[:n, 0], rb.next_observations[:n, 0]
        actions, rewards = rb.actions[:n, 0], rb.rewards[:n, 0].astype(np.float64)
        done, timeout = rb.dones[:n, 0].astype(bool), rb.timeouts[:n, 0].astype(bool)
        terminated = done & ~timeout
        ends = list(np.flatnonzero(done) + 1)
        if not ends or ends[-1] != n:
            ends.append(n)
        episodes, start = [], 0
        for i, end in enumerate(ends):
            trunc = timeout[start:end].copy()
            trunc[-1] = not terminated[end - 1]
            episodes.append(EpisodeBuffer(
                id=i, seed=None,
                observations=np.concatenate([obs[start:end], nxt[end - 1 : end]]).astype(np.float64),
                actions=actions[start:end].astype(np.float32),
                rewards=rewards[start:end],
                terminations=terminated[start:end],
                truncations=trunc,
                infos=None,
            ))
            start = end
        return episodes

    def rollouts(self, which: str, steps: int, seed: int, progress: ProgressBatcher) -> list[Any]:
        """``steps`` env steps of the ``medium`` or ``final`` stochastic policy, episode k reset with
        ``seed + k``; the actions' noise from a torch generator seeded by ``seed``."""
        import torch

        policy = self._policy(which)
        env = self.make_env()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return rollout(env, lambda o: policy.predict(o, deterministic=False)[0], steps=steps, seed=seed, progress=progress)
        finally:
            env.close()

    def _policy(self, which: str) -> Any:
        if which == "final":
            return self.model.policy
        import copy

        from safetensors.torch import load_file

        policy = copy.deepcopy(self.model.policy)
        policy.load_state_dict(load_file(self.dir / f"{which}.safetensors"))
        return policy

    def describe(self) -> dict:
        """What a dataset made from this run records about it."""
        med = next((e for e in self.evaluations if e.step == self.medium_step), None)
        return {
            "sac_run": self.dir.name,
            "sac_steps_trained": self.step,
            "sac_medium_step": self.medium_step,
            "sac_medium_return": None if med is None else med.mean_return,
            "sac_medium_threshold": self.threshold,
            "medium_threshold_reached": med is not None and med.mean_return >= self.threshold,
            "sac_final_return": self.evaluations[-1].mean_return if self.evaluations else None,
            "sac_eval_episodes": self.settings["eval_episodes"],
            "sac_made_on": self.made_on,
        }

    # -- checkpoints ---------------------------------------------------------------------------

    def _save_policy(self, name: str) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.policy.state_dict().items()}
        _atomic(self.dir / f"{name}.safetensors", lambda p: save_file(state, str(p)))

    def _save(self) -> None:
        """Everything that decides the run's future, written atomically (run.json last)."""
        import torch
        from safetensors.numpy import save_file

        m = self.model
        arrays: dict[str, np.ndarray] = {f"policy.{k}": v.detach().cpu().numpy() for k, v in m.policy.state_dict().items()}
        groups = {}
        for name, opt in _optimizers(m).items():
            sd = opt.state_dict()
            groups[name] = sd["param_groups"]
            for idx, st in sd["state"].items():
                for key, v in st.items():
                    arrays[f"opt.{name}.{idx}.{key}"] = torch.as_tensor(v).detach().cpu().numpy()
        arrays["log_ent_coef"] = m.log_ent_coef.detach().cpu().numpy()
        rb = m.replay_buffer
        n = rb.buffer_size if rb.full else rb.pos
        for f in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            arrays[f"replay.{f}"] = np.ascontiguousarray(getattr(rb, f)[:n])
        arrays["rng.torch"] = torch.get_rng_state().numpy()
        np_state = np.random.get_state()
        arrays["rng.numpy"] = np.asarray(np_state[1], dtype=np.uint32)
        env = _single_env(m)
        mj = env.unwrapped
        arrays["env.mujoco"] = _mujoco_state(mj)
        arrays["last_obs"] = np.asarray(m._last_obs)
        meta = {
            "settings": self.settings,
            "num_timesteps": int(m.num_timesteps),
            "n_updates": int(m._n_updates),
            "episode_num": int(m._episode_num),
            "replay_pos": int(rb.pos), "replay_full": bool(rb.full),
            "param_groups": groups,
            "rng_numpy": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "env_np_random": mj.np_random.bit_generator.state,
            "env_elapsed_steps": _time_limit(env)._elapsed_steps,
            "monitor_rewards": [float(r) for r in _monitor(m).rewards],
            "evaluations": [dataclasses.asdict(e) for e in self.evaluations],
            "medium_step": self.medium_step,
            "made_on": self.made_on,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic(self.dir / "state.safetensors", lambda p: save_file(arrays, str(p)))
        _atomic(self.dir / "run.json", lambda p: p.write_text(json.dumps(meta, indent=1)))

    def _restore(self) -> None:
        import torch
        from safetensors.numpy import load_file

        meta = json.loads((self.dir / "run.json").read_text())
        if meta["settings"] != self.settings:
            raise ValueError(f"the SAC run in {self.dir} was made with {meta['settings']}, not {self.settings}; remove it to start over")
        arrays = load_file(str(self.dir / "state.safetensors"))
        m = self.model
        m.policy.load_state_dict({k[len("policy."):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("policy.")})
        for name, opt in _optimizers(m).items():
            state: dict[int, dict[str, torch.Tensor]] = {}
            prefix = f"opt.{name}."
            for k, v in arrays.items():
                if k.startswith(prefix):
                    idx, key = k[len(prefix):].split(".", 1)
                    state.setdefault(int(idx), {})[key] = torch.from_numpy(v.copy())
            opt.load_state_dict({"state": state, "param_groups": meta["param_groups"][name]})
        with torch.no_grad():
            m.log_ent_coef.copy_(torch.from_numpy(arrays["log_ent_coef"]))
        rb = m.replay_buffer
        for f in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            saved = arrays[f"replay.{f}"]
            getattr(rb, f)[: len(saved)] = saved
        rb.pos, rb.full = meta["replay_pos"], meta["replay_full"]
        m.num_timesteps, m._n_updates, m._episode_num = meta["num_timesteps"], meta["n_updates"], meta["episode_num"]
        m._last_obs = arrays["last_obs"].copy()
        torch.set_rng_state(torch.from_numpy(arrays["rng.torch"].copy()))
        pos, has_gauss, cached = meta["rng_numpy"]
        np.random.set_state(("MT19937", arrays["rng.numpy"].copy(), pos, has_gauss, cached))
        env = _single_env(m)
        env.reset(seed=self.seed)  # builds the env's internals; everything that matters is overwritten below
        mj = env.unwrapped
        _set_mujoco_state(mj, arrays["env.mujoco"])
        mj.np_random.bit_generator.state = meta["env_np_random"]
        _time_limit(env)._elapsed_steps = meta["env_elapsed_steps"]
        mon = _monitor(m)
        mon.rewards, mon.needs_reset = list(meta["monitor_rewards"]), False
        self.evaluations = [Evaluation(**e) for e in meta["evaluations"]]
        self.medium_step = meta["medium_step"]
        self.made_on = list(meta.get("made_on", []))  # [] in a run made before ractd recorded it


def _progress_callback(progress: ProgressBatcher) -> Any:
    """A stable-baselines3 callback advancing ``progress`` by one per env step (stable-baselines3 is
    imported only when SAC data are made)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Progress(BaseCallback):
        def _on_step(self) -> bool:
            progress.step()
            return True

    return Progress()


def _optimizers(model: Any) -> dict[str, Any]:
    return {"actor": model.actor.optimizer, "critic": model.critic.optimizer, "ent_coef": model.ent_coef_optimizer}


def _single_env(model: Any) -> Any:
    return model.env.envs[0]


def _wrapper(env: Any, name: str) -> Any:
    while env is not None:
        if type(env).__name__ == name:
            return env
        env = getattr(env, "env", None)
    raise RuntimeError(f"SAC's training env has no {name} wrapper")


def _time_limit(env: Any) -> Any:
    return _wrapper(env, "TimeLimit")


def _monitor(model: Any) -> Any:
    return _wrapper(_single_env(model), "Monitor")


def _mujoco_state(env: Any) -> np.ndarray:
    """The simulator's integration state (time, qpos, qvel, act, warm start, controls...), float64."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(env.model, spec), dtype=np.float64)
    mujoco.mj_getState(env.model, env.data, state, spec)
    return state


def _set_mujoco_state(env: Any, state: np.ndarray) -> None:
    import mujoco

    mujoco.mj_setState(env.model, env.data, np.ascontiguousarray(state, dtype=np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def generate(
    make_env: Callable[[], Any],
    kind: str,
    *,
    directory: Path,
    steps: int,
    seed: int,
    ref_max: float,
    progress: ProgressBatcher,
    train_steps: int | None = None,
    **run_settings: Any,
) -> tuple[list[Any], dict]:
    """Buffers for ``kind`` (one of :data:`KINDS`) from the body's cached SAC run, plus metadata.

    ``medium-replay`` holds every transition up to the medium checkpoint (``steps`` does not
    apply); rollout datasets hold ``steps`` transitions (medium-expert: half from each policy).
    ``train_steps``: the expert's budget (default :data:`DEFAULT_TRAIN_STEPS`).
    """
    if kind not in KINDS:
        raise ValueError(f"SAC behaviour has no dataset kind {kind!r}")
    busy = (f"SAC run {directory.name}: another ractd process is training it now ({{lock}}), fetching another "
            "dataset of the same body; wait for it to finish (this dataset then reuses its run) or stop it (Ctrl-C) "
            "and run the same command again")
    with exclusive(directory.with_suffix(".lock"), busy):  # one process at a time trains and reads a run
        run = SACRun(make_env, directory, seed=seed, ref_max=ref_max, **run_settings)
        budget = int(train_steps or DEFAULT_TRAIN_STEPS)
        expert = kind in ("expert", "medium-expert")
        progress.step(0, total=None)  # how long SAC takes to reach medium is not known in advance
        medium = run.ensure_medium(progress, max_steps=min(budget, MEDIUM_MAX_STEPS))
        rollout_steps = 0 if kind == "medium-replay" else steps
        progress.step(0, total=progress.done + max(0, budget - run.step) * expert + rollout_steps)
        if expert:
            run.train_to(budget, progress)
        if kind == "medium-replay":
            buffers = run.replay_episodes(medium)
        elif kind == "medium":
            buffers = run.rollouts("medium", steps, seed + 1_000_000, progress)
        elif kind == "expert":
            buffers = run.rollouts("final", steps, seed + 2_000_000, progress)
        else:
            half = steps // 2
            buffers = (run.rollouts("medium", half, seed + 1_000_000, progress) if half else []) + run.rollouts(
                "final", steps - half, seed + 2_000_000, progress)
        progress.flush()
        meta = {"algorithm_name": "SAC (stable-baselines3)", **run.describe()}
        if kind in ("expert", "medium-expert"):
            meta["sac_expert_step"] = run.step
    return buffers, meta

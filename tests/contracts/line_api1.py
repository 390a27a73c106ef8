# ruff: noqa  (frozen third-party code: kept as it was written)
"""Frozen: the minimal plugin of docs/plugins.md as plugin API 1 documented it (do not modernise; it
stands for the third-party plugins written then). tests/test_plugin_contracts.py runs it through a chain."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer
from ractd_cli.adapters import TaskSpec


class LineEnv(gym.Env):
    """Start at 0, move by 0.1 * action, reaching +1 pays 1 and ends the episode."""

    def __init__(self):
        self.observation_space = spaces.Box(-2, 2, (1,), np.float32)
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = np.zeros(1, np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.x = np.clip(self.x + 0.1 * np.clip(action, -1, 1), -2, 2).astype(np.float32)
        done = bool(self.x[0] >= 1.0)
        return self.x.copy(), float(done), done, False, {}


if "ractd/LineApi1-v0" not in gym.registry:
    gym.register("ractd/LineApi1-v0", entry_point=f"{__name__}:LineEnv", max_episode_steps=50)

SPEC = TaskSpec(
    name="line-api1", env_id="ractd/LineApi1-v0", obs_dim=1, act_dim=1, planning="chunk", horizon=4,
    gamma=0.99, termination_penalty=0.0, max_episode_steps=50,
    local_generation="noisy walks towards +1", ref_min_score=0.0, ref_max_score=1.0,
)


class LineAdapter:
    tasks = {"line-api1": SPEC}

    def make_env(self, task, *, seed=None):
        env = gym.make(SPEC.env_id)
        if seed is not None:
            env.reset(seed=seed)
        return env

    def state(self, task, obs):
        return np.asarray(obs, np.float32).reshape(1)

    def states(self, task, observations):
        return np.asarray(observations, np.float32).reshape(-1, 1)

    def goal(self, task, obs):
        return None

    def goals(self, task, observations):
        return None

    def reset_options(self, task, episode, rng):
        return None

    def generate(self, task, *, steps, seed, progress=None):
        rng, env, buffers, total = np.random.default_rng(seed), self.make_env(task), [], 0
        while total < steps:
            obs, _ = env.reset(seed=seed + len(buffers))
            o, a, r, te, tr = [obs], [], [], [], []
            done = False
            while not done:
                act = np.clip(0.5 + rng.normal(0, 0.5, 1), -1, 1).astype(np.float32)
                obs, rew, term, trunc, _ = env.step(act)
                o.append(obs); a.append(act); r.append(rew); te.append(term); tr.append(trunc)
                done = term or trunc
            buffers.append(EpisodeBuffer(
                id=len(buffers), observations=np.array(o), actions=np.array(a),
                rewards=np.array(r), terminations=np.array(te), truncations=np.array(tr)))
            total += len(a)
            if progress:
                progress(len(a))
        return buffers, {"env": SPEC.env_id}

    def normalized_score(self, task, episode_return):
        return 100.0 * (episode_return - SPEC.ref_min_score) / (SPEC.ref_max_score - SPEC.ref_min_score)

    def success(self, task, episode_return, info):
        return episode_return > 0


adapter = LineAdapter()

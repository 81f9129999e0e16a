"""Domains for metatrace: mountain car with tile coding, drifting mountain car (docs/algorithms.md §6.1-6.2),
Atari and MinAtar games (§6.3).

`make(name, seed=..., **options)` returns a gymnasium environment.  The learner's fast loop
(`metatrace.run_linear_episode`) calls the Numba kernels below directly, one episode per call;
the gymnasium classes wrap the same kernels, so both see identical dynamics and features.

Mountain car kernels (Numba, float64 state as in gymnasium):
    mc_reset(rng) -> (p, v)                 gymnasium MountainCar-v0 reset, same Generator draws
    mc_step(p, v, a) -> (p, v, terminated)  gymnasium MountainCar-v0 step, same float operations
    tile_indices(p, v, idx)                 16 tilings of 10x10 over (p, v) -> 16 indices in [0, 1600)
    drift_flip(signs, nxt, drift, rng)      one environment step of the sign drift -> new nxt
    linear_features(p, v, signs, n_noise, rng, idx, val) -> k   sparse features of one state

The features of a state are computed from the float32 observation that gymnasium returns.

Atari (docs/algorithms.md §6.3; needs `ale-py` and `opencv-python-headless`, imported on first use):
    asterix, beam_rider, freeway, seaquest, space_invaders -> `make_atari`, gymnasium's ALE v5 env
    (ROMs ship inside ale-py) under gymnasium's own wrappers; observation float32 (4, 84, 84) in
    [0, 1], channels first. Every choice is an option of `make(name, ...)`:
    repeat_action_probability=0.25  sticky actions [P], drawn by ALE on every emulator frame; read
                                    back: env.unwrapped.ale.getFloat("repeat_action_probability")
    frame_skip=4                    the agent acts every 4th emulator frame, rewards summed [P]
    max_pool=True                   observation = max of the last two emulator frames [R, DQN];
                                    False: ALE skips internally and only the last frame is seen
    frame_stack=4                   last 4 observations, 84x84 grayscale (INTER_AREA resize) [P]
    full_action_space=False         minimal action set [R] (asterix 9, beam_rider 9, freeway 3,
                                    seaquest 18, space_invaders 6)
    terminal_on_life_loss=False     a lost life is not terminal [R]
    max_frames=108_000              emulator frames per episode (30 min), reported as `truncated`
                                    [R]; the learner treats it per docs/algorithms.md §1.6; None = no cap
    noop_max=0                      no random no-op starts [R]: sticky actions already randomize
                                    the start (Machado et al. 2018, source of the paper's 0.25)
    clip_rewards=True               reward clipped to [-1, 1] for learning [R]; the unclipped game
                                    score of the step is always info["score"]
    fast=True                       `FastAtari` computes what AtariPreprocessing and
                                    FrameStackObservation compute (tested equal step for step)
                                    with preallocated buffers; False: gymnasium's wrappers

MinAtar (needs `minatar`, imported on first use):
    minatar-asterix, minatar-breakout, minatar-freeway, minatar-seaquest, minatar-space_invaders ->
    `MinAtarEnv`; observation float32 (C, 10, 10) in {0, 1}, channels first;
    info["score"] = reward.
    Options: repeat_action_probability=0.1 (MinAtar's sticky default), difficulty_ramping=True
    (MinAtar's default), minimal_action_set=False: all 6 actions, as in the MinAtar paper's results
    (Young & Tian 2019, README: "results ... use the full action set of 6 actions").
    MinAtar has no frame cap; its Freeway ends (terminated) after 2500 frames by its own rule.

Any other registered gymnasium id with a Discrete action space (a softmax policy) or a 1-D Box
one with finite bounds (a diagonal Gaussian policy, its actions clipped to the bounds by
`ClipToBounds`, as gymnasium's ClipAction does; MuJoCo's HalfCheetah-v5, Hopper-v5, ...) (`make_gym`): a Box vector
observation as float32 (`VectorObs`, for an MLP) or an H x W x C image as float32 C x H x W
(`ImageObs`, integer pixels scaled to [0, 1]); `gym_net` gives its network and `agent_for(env,
config)` a NetAgent. Its checkpoints keep the env's np_random between episodes. `TileCoder(low,
high, tilings, tiles)` turns a bounded Box observation into LinearAgent features.

`obs_shape(name, **options)` and `n_actions(name, **options)` give a learner its input and output
sizes. Seeding: `make(name, seed=s)` seeds the first `reset()`; `reset(seed=s)` reseeds; either
way the same seed and the same actions give the same observations and rewards.
"""
import importlib
import json
import math
import re
import sys
from typing import NamedTuple

import gymnasium as gym
import numba as nb
import numpy as np

import metatrace as mt

N_TILINGS = 16
TILES = 10
N_TILE_FEATURES = N_TILINGS * TILES * TILES  # 1600
N_NOISE = 32
MC_LOW = np.array([-1.2, -0.07])
MC_HIGH = np.array([0.6, 0.07])
MC_TIME_LIMIT = 200
MC_ACTIONS = 3
_FORCE, _GRAVITY, _MAX_SPEED, _GOAL = 0.001, 0.0025, 0.07, 0.5

LINEAR_DOMAINS = ("mountaincar", "drifting_mountaincar")


@nb.njit(cache=True)
def mc_reset(rng):
    """gymnasium MountainCar-v0 reset: p ~ U[-0.6, -0.4], v = 0."""
    return rng.uniform(-0.6, -0.4), 0.0


@nb.njit(cache=True)
def mc_step(p, v, a):
    """gymnasium MountainCar-v0 step, in gymnasium's order of floating-point operations."""
    v = v + ((a - 1) * _FORCE + math.cos(3 * p) * (-_GRAVITY))
    v = min(max(v, -_MAX_SPEED), _MAX_SPEED)
    p = p + v
    p = min(max(p, -1.2), 0.6)
    if p == -1.2 and v < 0:
        v = 0.0
    return p, v, (p >= _GOAL and v >= 0.0)


@nb.njit(cache=True)
def tile_indices(p, v, idx):
    """Spec §6.1 tile coder: scale to [0, 9], tiling k offset (k(2j+1) mod 16)/16, index 100k+10c0+c1."""
    x0 = 9.0 * (p - (-1.2)) / (0.6 - (-1.2))
    x1 = 9.0 * (v - (-0.07)) / (0.07 - (-0.07))
    for k in range(N_TILINGS):
        c0 = int(math.floor(x0 + (k % 16) / 16.0))
        c1 = int(math.floor(x1 + ((3 * k) % 16) / 16.0))
        c0 = min(max(c0, 0), TILES - 1)
        c1 = min(max(c1, 0), TILES - 1)
        idx[k] = TILES * TILES * k + TILES * c0 + c1


@nb.njit(cache=True)
def drift_flip(signs, nxt, drift, rng):
    """Spec §6.2: every sign flips independently with probability `drift` on each environment step.

    The Bernoulli trials of all steps form one stream; `nxt` is the position of the next success
    relative to the start of this step, drawn by geometric gaps (same law, one draw per flip).
    """
    if drift <= 0.0:
        return nxt
    n = signs.shape[0]
    while nxt < n:
        signs[nxt] = -signs[nxt]
        nxt += rng.geometric(drift)
    return nxt - n


@nb.njit(cache=True)
def first_flip(drift, rng):
    """Position of the first flip in the trial stream (see `drift_flip`)."""
    if drift <= 0.0:
        return 0
    return rng.geometric(drift) - 1


@nb.njit(cache=True)
def linear_features(p, v, signs, n_noise, rng, idx, val):
    """Sparse features of the state with observation (p, v): 16 tiles signed by `signs`, then noise.

    Noise features (§6.2) are i.i.d. Bernoulli(0.5), redrawn on every call; only the active ones
    are listed. Returns k, the number of entries written to idx/val.
    """
    tile_indices(np.float64(np.float32(p)), np.float64(np.float32(v)), idx)
    for k in range(N_TILINGS):
        val[k] = signs[idx[k]]
    k = N_TILINGS
    if n_noise > 0:
        bits = np.uint64(rng.random() * 4294967296.0)  # 32 fair bits from 53 uniform bits
        for j in range(n_noise):
            if (bits >> np.uint64(j)) & np.uint64(1):
                idx[k] = N_TILE_FEATURES + j
                val[k] = 1.0
                k += 1
    return k


def check_drift(drift):
    """Validate a drift rate: a probability per feature per step."""
    if not (0.0 <= drift <= 1.0):
        raise ValueError(f"drift {drift} is outside the accepted range [0, 1]")
    return float(drift)


class LinearMountainCar(gym.Env):
    """Mountain car (drifting or not) as a gymnasium env; observation = dense feature vector.

    Same kernels as the learner's fast loop. `drift`=0 and `noise`=False give plain tile-coded
    mountain car; the 200-step time limit is reported as `truncated`.
    """

    metadata = {"render_modes": []}

    def __init__(self, drift=0.0, noise=False, seed=None):
        self.drift = check_drift(drift)
        self.n_noise = N_NOISE if noise else 0
        self.n_features = N_TILE_FEATURES + self.n_noise
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (self.n_features,), np.float64)
        self.action_space = gym.spaces.Discrete(MC_ACTIONS)
        self.signs = np.ones(N_TILE_FEATURES)
        self._idx = np.zeros(N_TILINGS + N_NOISE, np.int64)
        self._val = np.zeros(N_TILINGS + N_NOISE)
        self.rng = np.random.default_rng(seed)
        self.nxt = -1              # drift stream position; drawn on the first step
        self.state = (0.0, 0.0)
        self.t = 0

    def _obs(self):
        k = linear_features(*self.state, self.signs, self.n_noise, self.rng, self._idx, self._val)
        x = np.zeros(self.n_features)
        x[self._idx[:k]] = self._val[:k]
        return x

    def reset(self, *, seed=None, options=None):
        """Start an episode; signs persist, except that `seed` starts a fresh run (reseeded, signs +1)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self.signs[:] = 1.0
            self.nxt = -1
        self.state = mc_reset(self.rng)
        self.t = 0
        return self._obs(), {"state": np.array(self.state)}

    def step(self, action):
        """One gymnasium step, then the sign drift, then the next state's features."""
        if not (isinstance(action, (int, np.integer)) and 0 <= action < MC_ACTIONS):
            raise ValueError(f"action {action!r} is outside the accepted range integers 0..{MC_ACTIONS - 1}")
        p, v, term = mc_step(*self.state, int(action))
        self.state = (p, v)
        self.t += 1
        if self.nxt < 0:
            self.nxt = first_flip(self.drift, self.rng)
        self.nxt = drift_flip(self.signs, self.nxt, self.drift, self.rng)
        truncated = (not term) and self.t >= MC_TIME_LIMIT
        return self._obs(), -1.0, bool(term), bool(truncated), {"state": np.array(self.state)}


# ------------------------------------------------------------------------------------------------
# The fused mountain-car loop: environment, features, AC(lambda) and tuner in one Numba call
# ------------------------------------------------------------------------------------------------

class MCStream(NamedTuple):
    """The environment side of a mountain-car run: drift signs, next flip position, noise, drift.
    (Its generator travels on its own: Numba types a Generator inside a tuple 3x slower.)"""
    signs: np.ndarray
    env_state: np.ndarray     # [position of the next flip in the drift stream]
    n_noise: int
    drift: float


class MCLoop(NamedTuple):
    """The fixed settings of the loop: time limit, gamma and the time-limit rule (§1.6)."""
    time_limit: int
    gamma: float
    timeout_bootstrap: bool


@nb.njit(cache=True)
def mc_episode(st, sc, hp, lm, f0, f1, rng_agent, rng_env, env, loop):
    """One mountain-car episode (docs/algorithms.md §6.1-6.2): env, features, AC(lambda) and
    tuner, in Numba (metatrace.linear_step on the features of `linear_features`).
    -> (return, length, ok, sum of |delta_t|, sum of the policy entropy H(S_t))."""
    # fresh copies of the bundles: values of this function, not loads through the caller's
    # memory that a store to any array might alias (measured 10% faster)
    st, sc, hp, lm = mt.State(*st), mt.Scratch(*sc), mt.Hyper(*hp), mt.LinearModel(*lm)
    time_limit, gamma, timeout_bootstrap = loop
    signs, env_state, n_noise, drift = env
    idx0, val0, _ = f0
    idx1, val1, _ = f1
    p, v = mc_reset(rng_env)
    k0 = linear_features(p, v, signs, n_noise, rng_env, idx0, val0)
    ret = abs_delta = entropy = 0.0
    t = 0
    ok = True
    nxt = np.int64(env_state[0])
    while True:
        V0, H0 = mt.linear_policy_arrays(mt.weights(st), lm.nf, lm.n_actions, idx0, val0, k0, lm.pi, lm.logpi)
        A = mt.sample(lm.pi, rng_agent)
        p, v, term = mc_step(p, v, A)
        t += 1
        R = -1.0
        nxt = drift_flip(signs, nxt, drift, rng_env)
        k1 = linear_features(p, v, signs, n_noise, rng_env, idx1, val1)
        trunc = (not term) and t >= time_limit
        boot = (not term) and (timeout_bootstrap or not trunc)
        gamma1 = gamma if boot else 0.0
        delta, ok = mt.linear_step(st, sc, hp, lm, mt.Features(idx0, val0, k0),
                                   mt.Features(idx1, val1, k1), mt.Transition(A, R, gamma1, V0, H0))
        ret += R
        abs_delta += abs(delta)
        entropy += H0
        if not ok or term or trunc:
            break
        idx0, idx1 = idx1, idx0
        val0, val1 = val1, val0
        k0 = k1
    mt.end_episode(st, False)
    env_state[0] = nxt
    return ret, t, ok, abs_delta, entropy


@nb.njit(cache=True)
def mc_eval_episode(w, lm, f0, rng_agent, rng_env, env, time_limit, greedy):
    """One mountain-car episode with fixed weights w, no learning: A ~ pi (or its most probable
    action when greedy) -> return."""
    signs, env_state, n_noise, drift = env
    idx, val, _ = f0
    p, v = mc_reset(rng_env)
    nxt = np.int64(env_state[0])
    ret, t = 0.0, 0
    while True:
        k = linear_features(p, v, signs, n_noise, rng_env, idx, val)
        mt.linear_policy_arrays(w, lm.nf, lm.n_actions, idx, val, k, lm.pi, lm.logpi)
        A = np.argmax(lm.pi) if greedy else mt.sample(lm.pi, rng_agent)
        p, v, term = mc_step(p, v, A)
        nxt = drift_flip(signs, nxt, drift, rng_env)
        t += 1
        ret -= 1.0
        if term or t >= time_limit:
            break
    env_state[0] = nxt
    return ret


def mc_evaluate(agent, signs, drift, episodes, greedy, seed):
    """Returns of `episodes` mountain-car episodes of a trained LinearAgent without learning, on
    environment and action streams of their own (SeedSequence `seed`); drifting when the agent
    has noise features, from a copy of `signs` (the run's own are not touched)."""
    n_noise = agent.nf - N_TILE_FEATURES
    ss_env, ss_act = np.random.SeedSequence(seed).spawn(2)
    rng_env, rng_act = np.random.default_rng(ss_env), np.random.default_rng(ss_act)
    stream = MCStream(np.array(signs, np.float64), np.array([first_flip(drift, rng_env)],
                                                             np.int64), n_noise, float(drift))
    lm = mt.LinearModel(agent.nf, agent.n_actions, np.zeros(agent.n_actions),
                        np.zeros(agent.n_actions))
    f = mt.Features(np.zeros(agent.max_active, np.int64), np.zeros(agent.max_active), 0)
    return [mc_eval_episode(agent.learner.w, lm, f, rng_act, rng_env, stream, MC_TIME_LIMIT,
                            bool(greedy)) for _ in range(episodes)]


class EpisodeStats(NamedTuple):
    """Per-episode means of the learner's TD error magnitude and of its policy's entropy."""
    abs_delta: float = 0.0
    entropy: float = 0.0


class MountainCarTask:
    """A linear agent on mountain car (drifting or not), run an episode at a time in Numba.

    `seed` spawns two SeedSequence children: the first drives the environment (resets, drift,
    noise features), the second the agent's actions (metatrace.LinearAgent's convention)."""

    def __init__(self, config, drifting=False, drift=0.0, seed=0):
        self.n_noise = N_NOISE if drifting else 0
        self.drift = check_drift(drift)
        self.n_features = N_TILE_FEATURES + self.n_noise
        self.agent = mt.LinearAgent(config, self.n_features, MC_ACTIONS,
                                    max_active=N_TILINGS + self.n_noise, seed=seed)
        self.signs = np.ones(N_TILE_FEATURES)
        self.rng_env = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
        self.env_state = np.array([first_flip(self.drift, self.rng_env)], np.int64)
        self.loop = MCLoop(MC_TIME_LIMIT, float(config.gamma), bool(config.timeout_bootstrap))
        self.stream = MCStream(self.signs, self.env_state, self.n_noise, self.drift)
        self.last = EpisodeStats()

    @property
    def learner(self):
        return self.agent.learner

    def episode(self):
        """Run one episode; returns (return, length, ok).  self.last holds the episode's mean
        |delta| and mean policy entropy."""
        a, L = self.agent, self.agent.learner
        ret, length, ok, abs_delta, entropy = mc_episode(
            L.bundle, a.scratch, L.hyper, a.model, a.f[0], a.f[1], a.rng, self.rng_env,
            self.stream, self.loop)
        self.last = EpisodeStats(abs_delta / length, entropy / length)
        return ret, length, ok

    def get_state(self):
        """Everything the next episode depends on: learner arrays, drift signs, both RNG states."""
        arrays = {f"learner_{k}": v.copy() for k, v in self.learner.state().items()}
        arrays.update(signs=self.signs.copy(), env_state=self.env_state.copy())
        rngs = {"rng_env": self.rng_env.bit_generator.state,
                "rng_agent": self.agent.rng.bit_generator.state}
        return arrays, rngs

    def set_state(self, arrays, rngs):
        """Restore a state from `get_state` (between episodes), in place."""
        for k, v in self.learner.state().items():
            v[...] = arrays[f"learner_{k}"]
        self.signs[...] = arrays["signs"]
        self.env_state[...] = arrays["env_state"]
        self.rng_env.bit_generator.state = rngs["rng_env"]
        self.agent.rng.bit_generator.state = rngs["rng_agent"]


ATARI_DOMAINS = ("asterix", "beam_rider", "freeway", "seaquest", "space_invaders")
MINATAR_PREFIX = "minatar-"
MINATAR_DOMAINS = tuple(MINATAR_PREFIX + g for g in
                        ("asterix", "breakout", "freeway", "seaquest", "space_invaders"))


def check_number(option, value, low, high=None, integer=False):
    """Validate a numeric option, low <= value (<= high); else a one-line ValueError naming both."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, (bool, np.bool_))
    if not (ok and value >= low and (high is None or value <= high)):
        accepted = f"[{low}, {high}]" if high is not None else f">= {low}"
        kind = "integers " if integer else ""
        raise ValueError(f"{option} {value!r} is outside the accepted range {kind}{accepted}")
    return int(value) if integer else float(value)


def seed32(seed):
    """A seed for a generator that takes 32 bits: itself below 2^32, else SeedSequence's first
    32-bit word of it (distinct large seeds may then share a stream)."""
    return seed if 0 <= seed < 2**32 else int(np.random.SeedSequence(seed).generate_state(1)[0])


class SeedAndScore(gym.Wrapper):
    """Seed the first `reset()` with the `make` seed; put the step's raw reward in info["score"].

    Sits below any reward clipping, so info["score"] is the unclipped game score of the step.
    """

    def __init__(self, env, seed=None):
        super().__init__(env)
        self._first_seed = seed
        if seed is not None:
            self.action_space.seed(seed)

    def reset(self, *, seed=None, options=None):
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        else:
            self._first_seed = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, score=float(reward))
        return obs, reward, terminated, truncated, info


class FastAtari(gym.Wrapper):
    """AtariPreprocessing + FrameStackObservation (max_pool, grayscale, 84x84 INTER_AREA, scaled)
    computed with preallocated buffers straight from the ALE of a frameskip=1 AtariEnv.

    Same observations, rewards and flags as gymnasium's two wrappers over the same env, seed and
    actions (tests/test_envs_atari.py checks it step for step); about 0.3 ms less per step, because
    gymnasium's AtariEnv copies an RGB screen on every emulator frame.
    """

    def __init__(self, env, frame_skip=4, frame_stack=4, noop_max=0,
                 terminal_on_life_loss=False):
        super().__init__(env)
        import cv2

        self._resize, self._area = cv2.resize, cv2.INTER_AREA
        inner = env.unwrapped
        self.ale, self.actions = inner.ale, inner._action_set
        h, w = self.ale.getScreenDims()
        self.skip, self.noop_max, self.life_loss = frame_skip, noop_max, terminal_on_life_loss
        self.screens = np.zeros((2, h, w), np.uint8)
        self.small = np.zeros((84, 84), np.uint8)
        self.stack = np.zeros((frame_stack, 84, 84), np.float32)
        self.lives = 0
        self.observation_space = gym.spaces.Box(0.0, 1.0, (frame_stack, 84, 84), np.float32)

    def _frame(self, out):
        """out = max of the two screens, resized to 84x84, scaled to [0, 1] (AtariPreprocessing)."""
        np.maximum(self.screens[0], self.screens[1], out=self.screens[0])
        self._resize(self.screens[0], (84, 84), dst=self.small, interpolation=self._area)
        np.divide(self.small, np.float32(255.0), out=out)

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        noops = (self.env.unwrapped.np_random.integers(1, self.noop_max + 1)
                 if self.noop_max > 0 else 0)
        for _ in range(noops):
            _, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                _, info = self.env.reset(seed=seed, options=options)
        self.lives = self.ale.lives()
        self.ale.getScreenGrayscale(self.screens[0])
        self.screens[1].fill(0)
        self._frame(self.stack[-1])
        self.stack[:-1] = self.stack[-1]
        return self.stack.copy(), info

    def step(self, action):
        ale, a, skip = self.ale, self.actions[action], self.skip
        reward, terminated, truncated = 0.0, False, False
        for t in range(skip):
            reward += ale.act(a, 1.0)
            terminated, truncated = ale.game_over(with_truncation=False), ale.game_truncated()
            if self.life_loss:
                lives = ale.lives()
                terminated = terminated or lives < self.lives
                self.lives = lives
            if terminated or truncated:
                break
            if t == skip - 2:
                ale.getScreenGrayscale(self.screens[1])
            elif t == skip - 1:
                ale.getScreenGrayscale(self.screens[0])
        obs = self.stack
        obs[:-1] = obs[1:]
        self._frame(obs[-1])
        return obs.copy(), reward, terminated, truncated, {"lives": ale.lives()}


class AtariOptions(NamedTuple):
    """The options of an ALE game (the module docstring says what each does)."""
    repeat_action_probability: float = 0.25
    frame_skip: int = 4
    max_pool: bool = True
    frame_stack: int = 4
    full_action_space: bool = False
    terminal_on_life_loss: bool = False
    max_frames: object = 108_000
    noop_max: int = 0
    clip_rewards: bool = True
    fast: bool = True


def make_atari(game, seed=None, **options):
    """docs/algorithms.md §6.3 ALE game: ALE v5 env under AtariPreprocessing and
    FrameStackObservation; `options` are AtariOptions fields.

    Observation float32 (frame_stack, 84, 84) in [0, 1]. With max_pool the ALE env runs one
    emulator frame per call (frameskip=1) and AtariPreprocessing repeats the action frame_skip
    times, max-pooling the last two frames. fast=True (with max_pool) computes exactly that with
    `FastAtari` instead of the two wrappers.
    """
    unknown = sorted(set(options) - set(AtariOptions._fields))
    if unknown:
        raise ValueError(f"unknown ALE option {unknown[0]!r}; accepted: "
                         f"{', '.join(AtariOptions._fields)}")
    o = AtariOptions(**options)
    (repeat_action_probability, frame_skip, max_pool, frame_stack, full_action_space,
     terminal_on_life_loss, max_frames, noop_max, clip_rewards, fast) = o
    if game not in ATARI_DOMAINS:
        raise ValueError(f"unknown Atari game {game!r}; accepted: {', '.join(ATARI_DOMAINS)}")
    repeat_action_probability = check_number("repeat_action_probability",
                                             repeat_action_probability, 0.0, 1.0)
    frame_skip = check_number("frame_skip", frame_skip, 1, integer=True)
    frame_stack = check_number("frame_stack", frame_stack, 1, integer=True)
    noop_max = check_number("noop_max", noop_max, 0, integer=True)
    if max_frames is not None:
        max_frames = check_number("max_frames", max_frames, 1, integer=True)
    import ale_py

    gym.register_envs(ale_py)
    env_id = "ALE/" + "".join(w.capitalize() for w in game.split("_")) + "-v5"
    env = gym.make(env_id, frameskip=1 if max_pool else frame_skip,
                   repeat_action_probability=repeat_action_probability,
                   full_action_space=bool(full_action_space),
                   max_num_frames_per_episode=0 if max_frames is None else max_frames)
    if fast and max_pool:
        env = FastAtari(env.unwrapped, frame_skip, frame_stack, noop_max,
                        bool(terminal_on_life_loss))
    else:
        env = gym.wrappers.AtariPreprocessing(
            env, noop_max=noop_max, frame_skip=frame_skip if max_pool else 1, screen_size=84,
            terminal_on_life_loss=bool(terminal_on_life_loss), grayscale_obs=True,
            scale_obs=True)
        env = gym.wrappers.FrameStackObservation(env, frame_stack)
    env = SeedAndScore(env, seed)
    if clip_rewards:
        env = gym.wrappers.ClipReward(env, -1.0, 1.0)
    return env


class MinAtarEnv(gym.Env):
    """A MinAtar game as a gymnasium env; observation float32 (C, 10, 10) in {0, 1}.

    Sticky actions are MinAtar's own (per step, `repeat_action_probability`); the sticky memory is
    cleared to no-op at every reset, as ALE does, so a seeded reset does not depend on the past.
    """

    metadata = {"render_modes": []}

    def __init__(self, game, repeat_action_probability=0.1, difficulty_ramping=True,
                 minimal_action_set=False):
        games = tuple(d[len(MINATAR_PREFIX):] for d in MINATAR_DOMAINS)
        if game not in games:
            raise ValueError(f"unknown MinAtar game {game!r}; accepted: {', '.join(games)}")
        p = check_number("repeat_action_probability", repeat_action_probability, 0.0, 1.0)
        from minatar import Environment

        self.game = Environment(game, sticky_action_prob=p,
                                difficulty_ramping=bool(difficulty_ramping))
        self.actions = (self.game.minimal_action_set() if minimal_action_set
                        else list(range(self.game.num_actions())))
        h, w, c = self.game.state_shape()
        self.observation_space = gym.spaces.Box(0.0, 1.0, (c, h, w), np.float32)
        self.action_space = gym.spaces.Discrete(len(self.actions))

    def _obs(self):
        return np.ascontiguousarray(np.moveaxis(self.game.state(), 2, 0), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        """Start an episode; `seed` reseeds MinAtar's RandomState (game and sticky actions), whose
        seeds are 32-bit: a larger seed is first hashed to 32 bits (seed32)."""
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(seed32(int(seed)))
        self.game.reset()
        self.game.last_action = 0
        return self._obs(), {}

    def step(self, action):
        """One MinAtar step; MinAtar has no time limit, so `truncated` is always False."""
        if not 0 <= int(action) < len(self.actions):
            raise ValueError(f"action {action} is outside the accepted range "
                             f"0..{len(self.actions) - 1}")
        reward, terminal = self.game.act(self.actions[int(action)])
        return self._obs(), float(reward), bool(terminal), False, {"score": float(reward)}


class ClipToBounds(gym.ActionWrapper):
    """Continuous actions clipped to the action space's bounds before the env sees them, as
    gymnasium's ClipAction does, with the bounded space kept (ClipAction widens it to
    (-inf, inf)), so that the policy head and a saved agent see the real bounds (§10)."""

    def action(self, action):
        return np.clip(action, self.action_space.low, self.action_space.high)


class VectorObs(gym.ObservationWrapper):
    """A Box vector observation as a contiguous float32 array (the MLP's input)."""

    def __init__(self, env):
        super().__init__(env)
        s = env.observation_space
        self.observation_space = gym.spaces.Box(s.low.astype(np.float32),
                                                s.high.astype(np.float32), s.shape, np.float32)

    def observation(self, obs):
        return np.ascontiguousarray(obs, dtype=np.float32)


class ImageObs(gym.ObservationWrapper):
    """An H x W x C image observation as float32 C x H x W (the conv net's input); integer pixels
    are scaled to [0, 1] by their Box's upper bound."""

    def __init__(self, env):
        super().__init__(env)
        s = env.observation_space
        h, w, c = s.shape
        self.scale = (np.float32(1.0 / float(np.max(s.high)))
                      if np.issubdtype(s.dtype, np.integer) else np.float32(1.0))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (c, h, w), np.float32)

    def observation(self, obs):
        return np.ascontiguousarray(np.moveaxis(obs, 2, 0), dtype=np.float32) * self.scale


class RunningMoments:
    """Running mean and sample variance of a stream, one update per sample (Welford's
    recurrences, as streaming-drl's SampleMeanStd): var is 1 until two samples are in."""

    def __init__(self, shape=()):
        self.mean, self.p, self.count = np.zeros(shape), np.zeros(shape), 0

    def update(self, x):
        """Take in one sample x (float64 arithmetic)."""
        x = np.asarray(x, np.float64)
        self.count += 1
        d = x - self.mean
        self.mean += d / self.count               # in place: no new arrays per step
        self.p += d * (x - self.mean)

    @property
    def var(self):
        """The sample variance (divisor count - 1), or 1 before the second sample."""
        return self.p / (self.count - 1) if self.count >= 2 else np.ones_like(self.p)

    def get_state(self):
        """The statistics as float64 arrays (checkpoints)."""
        return {"mean": self.mean.copy(), "p": self.p.copy(), "count": np.array(float(self.count))}

    def prepare_state(self, a):
        """Validate a `get_state` result -> a function that applies it; ValueError if malformed."""
        if (set(a) != {"mean", "p", "count"} or a["mean"].shape != self.mean.shape
                or a["p"].shape != self.p.shape or a["count"].shape != ()
                or not all(np.isfinite(v).all() for v in a.values())
                or a["count"] < 0 or a["count"] != int(a["count"]) or (a["p"] < 0).any()):
            raise ValueError("normalization state: malformed running statistics")

        def apply():
            self.mean, self.p = a["mean"].astype(np.float64), a["p"].astype(np.float64)
            self.count = int(a["count"])
        return apply


class NormalizeObservation(gym.Wrapper):
    """Observations standardized by their running mean and variance, each observation taken
    into the statistics before it is standardized: (o - mean) / sqrt(var + eps), in the
    observation's dtype (streaming-drl's NormalizeObservation; docs/algorithms.md §9).
    frozen: fixed statistics (a RunningMoments) that are used and never updated (evaluation)."""

    def __init__(self, env, eps=1e-8, frozen=None):
        super().__init__(env)
        self.moments, self.eps = frozen or RunningMoments(env.observation_space.shape), eps
        self.frozen = frozen is not None
        o = env.observation_space
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, o.shape, o.dtype)

    def _normalize(self, obs):
        if not self.frozen:
            self.moments.update(obs)
        m = self.moments
        return ((obs - m.mean) / np.sqrt(m.var + self.eps)).astype(obs.dtype)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._normalize(obs), info

    def step(self, action):
        obs, R, term, trunc, info = self.env.step(action)
        return self._normalize(obs), R, term, trunc, info


class ScaleReward(gym.Wrapper):
    """Rewards divided by the running standard deviation of the discounted return trace
    G <- gamma (1 - done) G + R, where done ends the episode at this very step (as
    streaming-drl's ScaleReward has it): R / sqrt(var(G) + eps).  info["score"] keeps the
    unscaled reward."""

    def __init__(self, env, gamma=0.99, eps=1e-8):
        super().__init__(env)
        self.moments, self.gamma, self.eps, self.trace = RunningMoments(), gamma, eps, 0.0

    def step(self, action):
        obs, R, term, trunc, info = self.env.step(action)
        self.trace = self.trace * self.gamma * (1.0 - float(term or trunc)) + R
        self.moments.update(self.trace)
        info = {**info, "score": info.get("score", R)}
        return obs, float(R / np.sqrt(self.moments.var + self.eps)), term, trunc, info


def saved_moments(extra, shape):
    """The observation statistics an agent file keeps (NetRunner.save_agent) -> RunningMoments;
    ValueError if they are missing or malformed."""
    m = RunningMoments(shape)
    arrays = {k[len("norm_obs_"):]: v for k, v in extra.items() if k.startswith("norm_obs_")}
    if not arrays:
        raise ValueError("its observation statistics (--normalize-obs) are missing")
    m.prepare_state(arrays)()
    return m


def normalizers(env):
    """The NormalizeObservation and ScaleReward wrappers around env, by name ('obs', 'reward')."""
    out = {}
    while isinstance(env, gym.Wrapper):
        if isinstance(env, NormalizeObservation):
            out["obs"] = env
        elif isinstance(env, ScaleReward):
            out["reward"] = env
        env = env.env
    return out


def get_wrapper_state(env):
    """The running statistics of env's normalization wrappers as float64 arrays, keyed
    'norm_<name>_<field>' (and the reward wrapper's return trace)."""
    out = {}
    for name, w in normalizers(env).items():
        out.update({f"norm_{name}_{k}": v for k, v in w.moments.get_state().items()})
        if name == "reward":
            out["norm_reward_trace"] = np.array(float(w.trace))
    return out


def prepare_wrapper_state(env, arrays):
    """Validate `get_wrapper_state` arrays for env -> a function that applies them."""
    ws, applies = normalizers(env), []
    want = set(get_wrapper_state(env))
    if set(arrays) != want:
        raise ValueError("normalization state: its arrays are not those of this run's wrappers")
    for name, w in ws.items():
        pre = f"norm_{name}_"
        applies.append(w.moments.prepare_state(
            {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre) and k != pre + "trace"}))
        if name == "reward":
            t = arrays["norm_reward_trace"]
            if t.shape != () or not np.isfinite(t):
                raise ValueError("normalization state: malformed return trace")
            applies.append(lambda w=w, t=float(t): setattr(w, "trace", t))

    def apply():
        for f in applies:
            f()
    return apply


class TileCoder:
    """Tile coding of a bounded Box observation for LinearAgent: `tilings` grids of `tiles` tiles
    per dimension, each offset by Sutton's asymmetric displacement (1, 3, 5, ...) / tilings of a
    tile; coder(x) -> one feature index per tiling (values 1), in [0, coder.n_features).
    Each grid has tiles + 1 tiles per dimension, so that every offset grid covers [low, high];
    x is clipped to [low, high]."""

    def __init__(self, low, high, tilings=8, tiles=8):
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if (self.low.ndim != 1 or self.low.shape != self.high.shape
                or not (np.isfinite(self.low).all() and np.isfinite(self.high).all())
                or not (self.high > self.low).all()):
            raise ValueError(f"low and high must be finite 1-D bounds with high > low; got "
                             f"{self.low} and {self.high} (give bounds for an unbounded Box)")
        if int(tilings) < 1 or int(tiles) < 1:
            raise ValueError(f"tilings and tiles must be >= 1, got {tilings} and {tiles}")
        d, self.tilings, self.tiles = self.low.size, int(tilings), int(tiles)
        self.width = self.high - self.low
        self.offsets = (np.arange(self.tilings)[:, None] * np.arange(1, 2 * d, 2)[None, :]
                        / self.tilings) % 1.0
        per = (self.tiles + 1) ** d
        self.strides = (self.tiles + 1) ** np.arange(d, dtype=np.int64)
        self.base = np.arange(self.tilings, dtype=np.int64) * per
        self.n_features = self.tilings * per
        self.values = np.ones(self.tilings)

    def __call__(self, x):
        """The active feature indices of observation x (one per tiling)."""
        x = np.clip(np.asarray(x, np.float64), self.low, self.high)
        u = (x - self.low) / self.width * self.tiles
        cells = np.floor(u[None, :] + self.offsets).astype(np.int64)
        return self.base + cells @ self.strides


MODULE_ID = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(\S+)")   # gymnasium's "module:id"
ALLOWED_MODULES = set()    # modules a domain may import: named by the user in this process


def split_domain(name):
    """'pkg.module:EnvId-v0' -> ('pkg.module', 'EnvId-v0'); a plain id -> (None, id)."""
    m = MODULE_ID.fullmatch(name)
    return (m.group(1), m.group(2)) if m else (None, name)


def allow_module(name):
    """Let domain `name` import its module: for a name the user gave (the command line, a sweep's
    grid, the Python API), never for one read from a file (nothing read from disk runs code)."""
    module, _ = split_domain(name)
    if module is not None:
        ALLOWED_MODULES.add(module)


def _gym_registered(name):
    """The gymnasium id of `name` if it is registered, importing its module (module:id, an
    allowed one) or ale_py (ALE/...) first; None if it is not; ValueError for a module this
    process may not import or cannot."""
    module, env_id = split_domain(name)
    if module is None and env_id.startswith("ALE/") and env_id not in gym.registry:
        module = "ale_py"                         # registers every ALE id on import
    if module is not None and module not in sys.modules:
        if module != "ale_py" and module not in ALLOWED_MODULES:
            raise ValueError(f"domain {name!r} imports module {module!r}, which was not named "
                             "on this command line (a stored setting never imports code; give "
                             "the domain with --domain)")
        try:
            importlib.import_module(module)
        except Exception as e:      # anything its import raises
            why = str(e).splitlines()[0][:100] if str(e) else ""
            raise ValueError(f"domain {name!r}: importing module {module!r} failed "
                             f"({type(e).__name__}: {why})") from None
    return env_id if env_id in gym.registry else None


def is_gym_id(name):
    """Whether `name` is a registered gymnasium id (and not one of the built-in domains): an id,
    a gymnasium 'module:id' whose module registers it, or any ALE id (ALE/Pong-v5, ...)."""
    if name in DOMAINS:
        return False
    try:
        return _gym_registered(name) is not None
    except ValueError:
        return False


def check_env_kwargs(text):
    """--env-kwargs: a JSON object of keyword arguments for gymnasium.make -> dict; ValueError
    naming the value and the accepted form."""
    try:
        kw = json.loads(text)
    except (ValueError, RecursionError):
        kw = None
    if not isinstance(kw, dict) or not kw:
        raise ValueError(f"--env-kwargs {text!r} is not a JSON object of keyword arguments, "
                         "e.g. '{\"sutton_barto_reward\": true}'")
    for k in kw:
        if not k.isidentifier():
            raise ValueError(f"--env-kwargs: key {k!r} is not a keyword argument name")
    return kw


def policy_of(space):
    """(policy, size) for an action space: ("softmax", number of actions) for Discrete,
    ("gaussian", dimensions) for a 1-D Box with finite bounds (docs/algorithms.md §10)."""
    if isinstance(space, gym.spaces.Discrete):
        return "softmax", int(space.n)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and space.shape[0] > 0 \
            and np.isfinite(space.low).all() and np.isfinite(space.high).all():
        return "gaussian", int(space.shape[0])
    raise ValueError(f"a {space} action space; metatrace's policies are a softmax over a Discrete "
                     "space or a diagonal Gaussian over a 1-D Box with finite bounds")


def head_size(space):
    """The policy head's outputs for an action space: logits, or a mean and a std per dimension."""
    policy, n = policy_of(space)
    return 2 * n if policy == "gaussian" else n


def check_gym_id(name, **kwargs):
    """ValueError unless `name` is a registered gymnasium id with a Discrete or 1-D Box action
    space and a Box observation of 1 (vector) or 3 (H x W x C image) dimensions ->
    (obs_shape, policy head outputs) of the wrapped env."""
    if name in DOMAINS or _gym_registered(name) is None:
        raise ValueError(f"unknown domain {name!r}; accepted: {', '.join(DOMAINS)}, a "
                         "registered gymnasium id such as CartPole-v1 or ALE/Pong-v5, or "
                         "gymnasium's module:id form (pkg.module:EnvId-v0)")
    return _gym_sizes(name, **kwargs)[:2]


_SIZES = {}


def _gym_sizes(name, **kwargs):
    """(obs_shape, policy head outputs, policy) of a gymnasium id as make_gym wraps it (one env
    built per id and keyword arguments)."""
    key = (name, json.dumps(kwargs, sort_keys=True))
    if key not in _SIZES:
        env = make_gym(name, **kwargs)
        _SIZES[key] = (env.observation_space.shape, head_size(env.action_space),
                       policy_of(env.action_space)[0])
        env.close()
    return _SIZES[key]


def gym_policy(name, **kwargs):
    """'softmax' or 'gaussian': the policy a registered gymnasium id's action space takes."""
    return _gym_sizes(name, **kwargs)[2]


def _mujoco_warning(text):
    """MuJoCo's warnings to stderr, one line each, but for the deprecation notice that gymnasium's
    own model files raise on every make (settotalmass), which says nothing about the run."""
    if "settotalmass" not in text:
        print(f"MuJoCo: {text}", file=sys.stderr, flush=True)


def _mujoco_warnings():
    """Route MuJoCo's warnings through _mujoco_warning (instead of stderr and MUJOCO_LOG.TXT)."""
    import mujoco
    if mujoco.get_mju_user_warning() is not _mujoco_warning:
        mujoco.set_mju_user_warning(_mujoco_warning)


def make_gym(name, seed=None, **kwargs):
    """A registered gymnasium env, wrapped for the network learner: a float32 vector (VectorObs)
    or channels-first image (ImageObs) observation, continuous actions clipped to their bounds
    (ClipToBounds; the learner's log pi is of the unclipped action, §10), the first
    reset seeded with `seed`, and info["score"] = reward (SeedAndScore)."""
    env_id = _gym_registered(name)
    if env_id is None:
        raise ValueError(f"{name!r} is not a registered gymnasium id")
    if "mujoco" in str(gym.spec(env_id).entry_point):
        _mujoco_warnings()
    try:
        env = gym.make(env_id, **kwargs)
    except Exception as e:   # gymnasium raises many kinds (missing dependency, bad kwargs)
        raise ValueError(f"gymnasium cannot make {name!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:100] if str(e) else ''})") from None
    a, o = env.action_space, env.observation_space
    try:
        policy, _ = policy_of(a)
    except ValueError as e:
        env.close()
        raise ValueError(f"{name} has {e}") from None
    if policy == "gaussian":
        env = ClipToBounds(env)
    elif int(a.start) != 0:
        env.close()
        raise ValueError(f"{name}'s actions start at {int(a.start)}; expected 0")
    if not (isinstance(o, gym.spaces.Box) and len(o.shape) in (1, 3)):
        env.close()
        raise ValueError(f"{name} has a {o} observation space; accepted: a Box vector or an "
                         "H x W x C image")
    env = VectorObs(env) if len(o.shape) == 1 else ImageObs(env)
    return SeedAndScore(env, seed)


def gym_net(obs_shape, n_actions, hidden, layer_norm=False, act=None):
    """The network of a gymnasium id: an MLP with SiLU `hidden` layers on a vector; on a C x H x W
    image the Atari net's conv layers (H, W >= 36) or MinAtar's (smaller), then `hidden` (act:
    one activation for every hidden layer instead)."""
    import nets
    if len(obs_shape) == 1:
        return nets.MLP(obs_shape[0], tuple(hidden), n_actions, layer_norm=layer_norm,
                        act=nets.SILU if act is None else act)
    convs = ((16, 8, 4), (32, 4, 2)) if min(obs_shape[1:]) >= 36 else ((16, 3, 1),)
    return nets.make_net(obs_shape, convs, tuple(hidden), n_actions, layer_norm=layer_norm,
                         **nets._acts(act))


def agent_for(env, config, hidden=(64, 64), seed=0):
    """A metatrace.NetAgent for a `make_gym` (or built-in network) environment: a softmax policy
    for discrete actions, a diagonal Gaussian for continuous ones (§10)."""
    return mt.NetAgent(gym_net(env.observation_space.shape, head_size(env.action_space), hidden),
                       config, seed=seed, policy=policy_of(env.action_space)[0])


def make(name, seed=None, **options):
    """Build domain `name` as a gymnasium environment; `options` are the domain's settings.
    A registered gymnasium id (not a built-in name) goes through `make_gym`."""
    if name == "mountaincar":
        return LinearMountainCar(seed=seed, **options)
    if name == "drifting_mountaincar":
        options.setdefault("drift", 6e-6)
        return LinearMountainCar(noise=True, seed=seed, **options)
    if name in ATARI_DOMAINS:
        return make_atari(name, seed=seed, **options)
    if name in MINATAR_DOMAINS:
        return SeedAndScore(MinAtarEnv(name[len(MINATAR_PREFIX):], **options), seed)
    allow_module(name)             # a name given in Python is the user's own
    check_gym_id(name, **options)
    return make_gym(name, seed, **options)


_STATE_DTYPES = "biuf"          # array and scalar kinds a saved game state may hold (no objects)


def _encode(x, arrays, rngs):
    """A MinAtar game value as JSON, its arrays and random generators moved into `arrays`.

    Every non-scalar is tagged ({"list": ...}, {"array": name}, ...), so that decoding can accept
    exactly these shapes of data and nothing else."""
    if x is None or type(x) in (bool, int, float, str):
        return x
    if isinstance(x, np.generic) and x.dtype.kind in _STATE_DTYPES:
        return {"np": x.dtype.str, "v": x.item()}
    if isinstance(x, np.ndarray) and x.dtype.kind in _STATE_DTYPES:
        name = f"env_{len(arrays)}"
        arrays[name] = np.ascontiguousarray(x).copy()
        return {"array": name}
    if isinstance(x, (list, tuple)):
        return {type(x).__name__: [_encode(v, arrays, rngs) for v in x]}
    if isinstance(x, dict) and all(type(k) is str for k in x):
        return {"dict": {k: _encode(v, arrays, rngs) for k, v in x.items()}}
    if isinstance(x, np.random.RandomState):
        if id(x) not in rngs:                 # one generator shared by two owners stays shared
            name, (_, key, pos, has_gauss, gauss) = f"env_{len(arrays)}", x.get_state()
            arrays[name] = key.copy()
            rngs[id(x)] = {"random": name, "pos": int(pos), "has_gauss": int(has_gauss),
                           "gauss": float(gauss)}
        return dict(rngs[id(x)])
    raise TypeError(f"cannot save a game value of type {type(x).__name__}")


def _decode(j, arrays, rngs, used):
    """Inverse of `_encode`; anything but the tagged shapes it writes raises ValueError."""
    if j is None or type(j) in (bool, int, float, str):
        return j
    if not (isinstance(j, dict) and len(j) >= 1):
        raise ValueError(f"unexpected value {str(j)[:40]!r}")
    tag = next(iter(j))
    if tag == "np" and set(j) == {"np", "v"}:
        dt = np.dtype(str(j["np"]))
        if dt.kind not in _STATE_DTYPES or type(j["v"]) not in (bool, int, float):
            raise ValueError(f"numpy scalar of dtype {j['np']!r}")
        try:
            return dt.type(j["v"])
        except (OverflowError, ValueError):
            raise ValueError(f"{j['v']!r} does not fit dtype {dt}") from None
    if tag == "array" and set(j) == {"array"}:
        a = arrays.get(j["array"])
        if a is None or a.dtype.kind not in _STATE_DTYPES:
            raise ValueError(f"missing or non-numeric array {j['array']!r}")
        used.add(j["array"])
        return a.copy()
    if tag in ("list", "tuple") and set(j) == {tag} and isinstance(j[tag], list):
        out = [_decode(v, arrays, rngs, used) for v in j[tag]]
        return out if tag == "list" else tuple(out)
    if tag == "dict" and set(j) == {"dict"} and isinstance(j["dict"], dict):
        return {str(k): _decode(v, arrays, rngs, used) for k, v in j["dict"].items()}
    if tag == "random" and set(j) == {"random", "pos", "has_gauss", "gauss"}:
        name = j["random"]
        if name not in rngs:
            key = arrays.get(name)
            if key is None or key.dtype != np.uint32 or key.shape != (624,):
                raise ValueError(f"random state {name!r} is not a uint32 array of 624 words")
            if not (type(j["pos"]) is int and 0 <= j["pos"] <= 624
                    and j["has_gauss"] in (0, 1) and type(j["gauss"]) in (int, float)):
                raise ValueError(f"random state {name!r} has a bad position or cached value")
            r = np.random.RandomState()
            r.set_state(("MT19937", key.copy(), j["pos"], j["has_gauss"], float(j["gauss"])))
            rngs[name] = r
            used.add(name)
        return rngs[name]
    raise ValueError(f"unexpected value {str(j)[:40]!r}")


def _same_kind(new, old):
    """A restored attribute may replace the live one: same type, or both numbers, or both None."""
    num = (int, float, np.integer, np.floating)
    if isinstance(old, bool) or isinstance(new, bool):
        return type(new) is type(old)
    if isinstance(old, num) and isinstance(new, num):
        return True
    if isinstance(old, np.ndarray):
        return isinstance(new, np.ndarray) and new.shape == old.shape and new.dtype == old.dtype
    return type(new) is type(old)


MINATAR_CONSTANTS = {"env_name", "n_channels", "sticky_action_prob", "visualized", "closed",
                     "channels", "action_map", "ramping"}    # fixed for a game's life


def _equal(a, b):
    """Equal values, arrays compared element-wise."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def _trial_minatar(game, new, steps=16):
    """Play `steps` steps (every action in turn) on a copy of `game` holding the state `new`;
    ValueError if the game fails on it (an index out of range, an overflow, ...)."""
    import copy
    probe = copy.deepcopy(game)
    for k, v in copy.deepcopy(new["outer"]).items():
        setattr(probe, k, v)
    for k, v in copy.deepcopy(new["game"]).items():
        setattr(probe.env, k, v)
    try:
        for t in range(steps):
            probe.act(t % probe.num_actions())
            s = probe.state()
            if s.shape != tuple(game.state_shape()) or not np.isfinite(s).all():
                raise ValueError("its frame is malformed")
    except Exception as e:   # whatever the game's own code raises on a state it cannot play
        raise ValueError(f"MinAtar state: the game fails when run from it "
                         f"({type(e).__name__})") from None


def get_env_state(env):
    """(arrays, meta) that restore an ALE or MinAtar env between episodes, with no pickle:
    ALE's own serialization of its emulator and random state (cloneState(include_rng=True)) as
    bytes in arrays["env"]; a MinAtar game's attributes as tagged JSON in meta, its arrays and
    random generators' words in arrays["env_*"]."""
    inner = env.unwrapped
    if not isinstance(inner, MinAtarEnv) and not hasattr(inner, "ale"):
        return {}, {"np_random": inner.np_random.bit_generator.state}
    if isinstance(inner, MinAtarEnv):
        arrays, rngs, game = {}, {}, inner.game
        meta = {"outer": {k: _encode(v, arrays, rngs) for k, v in vars(game).items() if k != "env"},
                "game": {k: _encode(v, arrays, rngs) for k, v in vars(game.env).items()}}
        return arrays, meta
    blob = inner.ale.cloneState(include_rng=True).serialize()
    return {"env": np.frombuffer(blob, np.uint8).copy()}, None


def prepare_env_state(env, arrays, meta):
    """Validate a state from `get_env_state` completely, without touching env; returns a function
    of no arguments that applies it (and cannot fail).  ValueError says what is wrong."""
    inner = env.unwrapped
    if not isinstance(inner, MinAtarEnv) and not hasattr(inner, "ale"):
        return _prepare_gym_state(env, inner, arrays, meta)
    if isinstance(inner, MinAtarEnv):
        game = inner.game
        if not (isinstance(meta, dict) and set(meta) == {"outer", "game"}
                and all(isinstance(meta[k], dict) for k in meta)):
            raise ValueError("MinAtar state: expected the two attribute tables 'outer' and 'game'")
        rngs, used, new = {}, set(), {}
        for part, obj in (("outer", game), ("game", game.env)):
            live = {k: v for k, v in vars(obj).items() if not (part == "outer" and k == "env")}
            if set(meta[part]) != set(live):
                diff = sorted(set(meta[part]) ^ set(live))
                raise ValueError(f"MinAtar state: attributes differ from the game's ({diff[0]})")
            vals = {k: _decode(v, arrays, rngs, used) for k, v in meta[part].items()}
            for k, v in vals.items():
                if not _same_kind(v, live[k]):
                    raise ValueError(f"MinAtar state: attribute {k} has type {type(v).__name__}, "
                                     f"the game's has {type(live[k]).__name__}")
            new[part] = vals
        extra = sorted(set(arrays) - used)
        if extra:
            raise ValueError(f"MinAtar state: array {extra[0]} is not part of the game state")
        for part, obj in (("outer", game), ("game", game.env)):
            for k in MINATAR_CONSTANTS & set(new[part]):
                if not _equal(new[part][k], getattr(obj, k)):
                    raise ValueError(f"MinAtar state: {k} is {new[part][k]!r}, this game's is "
                                     f"{getattr(obj, k)!r}")
        _trial_minatar(game, new)

        def apply():
            for k, v in new["outer"].items():
                setattr(game, k, v)
            for k, v in new["game"].items():
                setattr(game.env, k, v)
            _forget_first_seed(env)
        return apply
    import ale_py
    if meta is not None or set(arrays) != {"env"}:
        raise ValueError("ALE state: expected exactly one byte array 'env' and no game table")
    blob = arrays["env"]
    if blob.dtype != np.uint8 or blob.ndim != 1 or not 0 < blob.size < 1 << 24:
        raise ValueError("ALE state: 'env' is not a byte string of a plausible length")
    try:
        state = ale_py.ALEState(blob.tobytes())
    except Exception as e:   # ALE's own parser refused it
        raise ValueError(f"ALE state: ALE cannot read it ({type(e).__name__})") from None
    backup = inner.ale.cloneState(include_rng=True)   # a trial restore: ALE refuses another
    try:                                              # game's state only when restoring it
        inner.ale.restoreState(state)
    except Exception:
        raise ValueError("ALE state: it is not a state of this game (ALE refuses to restore "
                         "it)") from None
    finally:
        inner.ale.restoreState(backup)

    def apply():
        inner.ale.restoreState(state)
        _forget_first_seed(env)
    return apply


def _prepare_gym_state(env, inner, arrays, meta):
    """prepare_env_state for a gymnasium id: its np_random generator's state (all that
    gymnasium's own environments draw from between episodes)."""
    if arrays or not (isinstance(meta, dict) and set(meta) == {"np_random"}):
        raise ValueError("gymnasium env state: expected only the table of its np_random")
    live = inner.np_random.bit_generator
    probe = type(live)()
    try:
        if not (isinstance(meta["np_random"], dict) and meta["np_random"].get("bit_generator")
                == live.state["bit_generator"]):
            raise ValueError("another kind of generator")
        probe.state = meta["np_random"]
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise ValueError(f"gymnasium env state: np_random is malformed ({e})") from None
    state = probe.state

    def apply():
        inner.np_random.bit_generator.state = state
        _forget_first_seed(env)
    return apply


def set_env_state(env, arrays, meta):
    """Restore `get_env_state`'s state; the next reset() continues the saved random streams."""
    prepare_env_state(env, arrays, meta)()


def _forget_first_seed(env):
    """The `make` seed was used by the run's first reset: a restored env must not reseed."""
    e = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, SeedAndScore):
            e._first_seed = None
        e = e.env


def obs_shape(name, **options):
    """Observation shape of domain `name` (builds and closes one env)."""
    env = make(name, **options)
    shape = env.observation_space.shape
    env.close()
    return shape


def n_actions(name, **options):
    """Number of actions (or action dimensions) of domain `name` (builds and closes one env)."""
    env = make(name, **options)
    n = policy_of(env.action_space)[1]
    env.close()
    return n


DOMAINS = LINEAR_DOMAINS + ATARI_DOMAINS + MINATAR_DOMAINS

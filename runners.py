"""Runners: one run's domain and agent behind the run loop's interface.

`LinearRunner` (mountain car, metatrace.LinearAgent in its Numba episode loop) and `NetRunner` (a
gymnasium, ALE or MinAtar env with a metatrace.NetAgent, stepped in Python) each give run.py the
same methods: `warm_up`, `next_row` (one episode), `fields`/`stats` (episodes.csv), `get_state` /
`prepare_state` (checkpoints, validated whole before anything is touched), `save_agent` and
`policy_of` (evaluation).  `make_env` builds a network run's environment in its normalization
wrappers; `LayerLog` writes layers.csv.
"""
import numpy as np

import envs
import metatrace as mt
from schema import config_of
from store import CheckpointError, check_arrays, check_learner, check_rng, restart_csv, rows_until


def make_env(s, seed=None, moments=None):
    """The gymnasium environment of a network run (seeded with the run's seed by default), in
    the normalization wrappers the run asks for.  moments: an evaluation's environment, whose
    observations are standardized by these frozen statistics (envs.RunningMoments) and whose
    rewards are not scaled."""
    opts = ({"clip_rewards": s["clip_rewards"]} if s["domain"] in envs.ATARI_DOMAINS
            else dict(s.get("env_kwargs") or {}))
    if s.get("minimal_actions"):
        opts["minimal_action_set"] = True
    env = envs.make(s["domain"], seed=s["seed"] if seed is None else seed, **opts)
    if s.get("normalize_obs"):
        env = envs.NormalizeObservation(env, frozen=moments)
    if s.get("scale_reward") and moments is None:
        env = envs.ScaleReward(env, gamma=s["gamma"])
    return env


def make_net(s, env, A=None):
    """The network of a run: the paper's Atari net, MinAtar's, or envs.gym_net for a gymnasium id
    (A: its number of action outputs, by default the action space's)."""
    import nets
    shape, ln = env.observation_space.shape, bool(s.get("layer_norm"))
    A = envs.head_size(env.action_space) if A is None else A
    act = nets.LEAKY_RELU if s.get("activation") == "leaky_relu" else None
    if envs.is_gym_id(s["domain"]):
        return envs.gym_net(shape, A, s["hidden"], layer_norm=ln, act=act)
    if s["domain"] in envs.MINATAR_DOMAINS:
        return nets.MINATAR(shape[0], A, layer_norm=ln, act=act)
    return nets.ATARI(A, layer_norm=ln, act=act)


LAYER_EVERY = 10_000      # agent steps between two rows of layers.csv
SPARSITY = 0.9            # --sparse-init: streaming-drl's sparsity


class LayerLog:
    """OUT/layers.csv of a network run: beta per layer at the end of the first episode after
    every LAYER_EVERY agent steps (and of the first episode); a resumed run writes the same rows."""

    def __init__(self, runner, path, done, resume):
        self.runner = runner
        rows = rows_until(path, done) if resume else []
        self.next = (int(rows[-1]["steps"]) // LAYER_EVERY + 1) * LAYER_EVERY if rows else 0
        self.writer = restart_csv(path, runner.layer_fields(), rows)

    def after(self, episodes, steps):
        """After an episode: a row if `steps` reached the next multiple of LAYER_EVERY."""
        if steps >= self.next:
            self.writer.write({"episode": episodes, "steps": steps,
                               **self.runner.layer_stats()})
            self.next = (steps // LAYER_EVERY + 1) * LAYER_EVERY

    def close(self):
        self.writer.close()


def net_agent(s, env, seed):
    """The agent of a network run: a NetAgent, or with --towers 2 a TwoTowerAgent (a critic net
    with no action outputs beside an actor net, §11)."""
    kw = dict(seed=seed, sparsity=SPARSITY if s.get("sparse_init") else 0.0,
              policy=envs.policy_of(env.action_space)[0])
    if s.get("towers", 1) == 2:
        return mt.TwoTowerAgent(make_net(s, env, 0), make_net(s, env), config_of(s), **kw)
    return mt.NetAgent(make_net(s, env), config_of(s), **kw)


def layer_slices(agent):
    """(name, start, end) of each layer's weights and biases in the learner's w: conv1..,
    dense1.., head (two towers: V.conv1.., pi.conv1..); `agent` may be a network itself."""
    if isinstance(agent, mt.TwoTowerAgent):
        n = agent.critic.n_params
        return [(f"V.{k}", a, e) for k, a, e in layer_slices_of(agent.critic)] + \
            [(f"pi.{k}", n + a, n + e) for k, a, e in layer_slices_of(agent.actor)]
    return layer_slices_of(getattr(agent, "net", agent))


def layer_slices_of(net):
    """layer_slices of one network."""
    import nets
    out, counts = [], {nets.CONV: 0, nets.DENSE: 0}
    for i, ly in enumerate(net.layers):
        counts[ly.kind] += 1
        name = ("head" if i == len(net.layers) - 1 else
                f"{'conv' if ly.kind == nets.CONV else 'dense'}{counts[ly.kind]}")
        out.append((name, ly.w_off, ly.b_off + ly.fan_out))
    return out


class NetRunner:
    """A network-domain run (docs/algorithms.md §6.3): gymnasium env + NetAgent, stepped in Python."""

    def __init__(self, s):
        self.env = make_env(s)
        self.obs, _ = self.env.reset(seed=s["seed"])
        self.settings = s
        self.agent = net_agent(s, self.env, s["seed"])
        self.learner = self.agent.learner
        self.gamma, self.boot_at_limit = s["gamma"], s["timeout_bootstrap"]
        self.last = envs.EpisodeStats()
        self.layers = layer_slices(self.agent)

    def policy_of(self):
        """(agent, start) for an evaluation: the NetAgent, and the observation statistics of
        --normalize-obs (None without it)."""
        w = envs.normalizers(self.env).get("obs")
        return self.agent, None if w is None else w.moments

    def save_agent(self, path, run):
        """The trained NetAgent to `path`, with the running statistics of its normalization
        wrappers (an evaluation standardizes observations with them) and the record `run`."""
        self.agent.save(path, run=run, **envs.get_wrapper_state(self.env))

    def warm_up(self):
        """Compile (or load) the step's kernels on a throwaway agent: no state of this run."""
        agent = net_agent(self.settings, self.env, 0)
        obs = np.zeros(agent.net.obs_shape, agent.dtype)
        for gamma1 in (self.gamma, 0.0):
            agent.learn(agent.policy(obs), 0.0, obs, gamma1)
        agent.end_episode()
        agent.act(obs, greedy=True)
        agent.act(obs)

    def get_state(self):
        """Learner arrays, agent RNG and emulator state, between episodes -> (arrays, meta)."""
        arrays = {f"learner_{k}": v.copy() for k, v in self.learner.state().items()}
        env_arrays, env_meta = envs.get_env_state(self.env)
        arrays.update(env_arrays)
        arrays.update(envs.get_wrapper_state(self.env))
        return arrays, {"rng_agent": self.agent.rng.bit_generator.state, "env": env_meta}

    def prepare_state(self, arrays, meta):
        """Validate a `get_state` result completely; returns a function that applies it."""
        learner = {k: v for k, v in arrays.items() if k.startswith("learner_")}
        check_learner(self.learner, learner)
        if not (isinstance(meta, dict) and set(meta) == {"rng_agent", "env"}):
            raise CheckpointError("the state's table is not that of a network run")
        rng = check_rng(meta["rng_agent"], self.agent.rng)
        try:
            apply_env = envs.prepare_env_state(
                self.env, {k: v for k, v in arrays.items() if not k.startswith(("learner_", "norm_"))},
                meta["env"])
            apply_norm = envs.prepare_wrapper_state(
                self.env, {k: v for k, v in arrays.items() if k.startswith("norm_")})
        except ValueError as e:
            raise CheckpointError(str(e)) from None

        def apply():
            for k, v in self.learner.state().items():
                v[...] = learner[f"learner_{k}"]
            self.agent.rng.bit_generator.state = rng
            apply_env()
            apply_norm()
            self.obs = None
        return apply

    def fields(self):
        """Columns of episodes.csv."""
        return ["episode", "return", "score", "length", "steps", "complete", "diverged",
                *self.stats()]

    def stats(self):
        """The logged statistics: mean beta over all weights, the last episode's mean |delta|
        and policy entropy."""
        return {"beta_mean": float(self.learner.beta().mean()), "abs_delta": self.last.abs_delta,
                "entropy": self.last.entropy}

    def layer_fields(self):
        """Columns of layers.csv."""
        return ["episode", "steps", *self.layer_stats()]

    def layer_stats(self):
        """beta per layer: its mean and 10/50/90 % quantiles (the lower order statistic)."""
        L = self.learner
        beta, cols = L.beta(), {}
        for name, lo, hi in self.layers:
            cols[f"beta_{name}_mean"] = float(beta[lo:hi].mean())
            qs = L.beta_quantiles(beta, lo, hi, (0.1, 0.5, 0.9))
            for q, v in zip((10, 50, 90), qs):
                cols[f"beta_{name}_q{q}"] = float(v)
        return cols


    def next_row(self, steps_left, tick):
        """One episode, cut at the step budget -> (CSV row without episode/steps/stats, ok)."""
        ret, score, length, ok, complete = self.episode(steps_left, tick)
        return {"return": ret, "score": score, "length": length, "complete": int(complete),
                "diverged": int(not ok)}, ok

    def episode(self, max_steps, tick=None):
        """Up to max_steps agent steps of one episode -> (return, score, length, ok, complete)."""
        agent, env = self.agent, self.env
        obs = self.obs if self.obs is not None else env.reset()[0]
        self.obs = None
        ret = score = abs_delta = entropy = 0.0
        t, ok, done = 0, True, False
        while t < max_steps:
            A = agent.policy(obs)
            entropy += agent.H0
            obs1, R, term, trunc, info = env.step(A)
            boot = not term and (self.boot_at_limit or not trunc)
            ok = agent.learn(A, float(R), obs1, self.gamma if boot else 0.0)
            abs_delta += abs(agent.delta)
            ret += R
            score += info.get("score", R)
            t += 1
            if tick is not None and t % 256 == 0:
                tick(256)
            done = term or trunc
            if not ok or done:
                break
            obs = obs1
        if tick is not None:
            tick(t % 256)
        agent.end_episode()
        self.last = envs.EpisodeStats(abs_delta / max(t, 1), entropy / max(t, 1))
        return ret, score, t, ok, done or not ok


def make_agent(s):
    """The linear agent on its mountain-car domain (envs.MountainCarTask)."""
    return envs.MountainCarTask(config_of(s), drifting=s["domain"] == "drifting_mountaincar",
                                drift=s["drift"], seed=s["seed"])


class LinearRunner:
    """A mountain-car run: the Numba episode loop of metatrace.LinearAgent."""

    def __init__(self, s):
        self.s, self.agent = s, make_agent(s)
        self.learner = self.agent.learner

    def get_state(self):
        """See metatrace.LinearAgent.get_state -> (arrays, meta)."""
        arrays, rngs = self.agent.get_state()
        return arrays, {"rngs": rngs}

    def prepare_state(self, arrays, meta):
        """Validate a `get_state` result completely; returns a function that applies it."""
        live, _ = self.agent.get_state()
        check_arrays(live, arrays)
        check_learner(self.learner, arrays)
        if not np.isin(arrays["signs"], (-1.0, 1.0)).all() or arrays["env_state"][0] < 0:
            raise CheckpointError("the drift state is out of range")
        if not (isinstance(meta, dict) and set(meta) == {"rngs"} and isinstance(meta["rngs"], dict)
                and set(meta["rngs"]) == {"rng_env", "rng_agent"}):
            raise CheckpointError("the state's table is not that of a mountain-car run")
        like = {"rng_env": self.agent.rng_env, "rng_agent": self.agent.agent.rng}
        rngs = {k: check_rng(v, like[k]) for k, v in meta["rngs"].items()}
        return lambda: self.agent.set_state(arrays, rngs)

    def fields(self):
        """Columns of episodes.csv."""
        return ["episode", "return", "length", "steps", "diverged"] + list(self.stats())

    def stats(self):
        """Mean log step-size over groups of weights (docs/algorithms.md §6.2 Fig. 7 groups on the
        drifting domain), and the last episode's mean |delta| and policy entropy."""
        s, beta = self.s, self.learner.beta()
        nf = envs.N_TILE_FEATURES + (envs.N_NOISE if s["domain"] == "drifting_mountaincar" else 0)
        critic, actor = beta[:nf], beta[nf:].reshape(envs.MC_ACTIONS, nf)
        cols = {"beta_critic": critic[:envs.N_TILE_FEATURES].mean(),
                "beta_actor": actor[:, :envs.N_TILE_FEATURES].mean()}
        if nf > envs.N_TILE_FEATURES:
            cols["beta_critic_noise"] = critic[envs.N_TILE_FEATURES:].mean()
            cols["beta_actor_noise"] = actor[:, envs.N_TILE_FEATURES:].mean()
        cols.update(abs_delta=self.agent.last.abs_delta, entropy=self.agent.last.entropy)
        return cols

    def policy_of(self):
        """(agent, drift signs) for an evaluation: the LinearAgent and the signs it meets now."""
        return self.agent.agent, self.agent.signs

    def save_agent(self, path, run):
        """The trained LinearAgent to `path`, with the drift signs at the end of the run and the
        record `run`."""
        self.agent.agent.save(path, run=run, drift_signs=self.agent.signs)

    def warm_up(self):
        """Compile (or load) the episode loop on a throwaway task: no state of this run."""
        task = make_agent(self.s)
        task.episode()
        envs.mc_evaluate(task.agent, task.signs, self.s["drift"], 1, True, 0)

    def next_row(self, steps_left, tick):
        """One episode -> (CSV row without episode/steps/stats, ok)."""
        ret, length, ok = self.agent.episode()
        tick(1)
        return {"return": ret, "length": length, "diverged": int(not ok)}, ok

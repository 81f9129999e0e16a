"""ObGD and adaptive ObGD (docs/algorithms.md §9): the step against a plain NumPy transcription of
O1-O6, clipped and unclipped, in both kernel forms; untuned AC(lambda) as ObGD with kappa = 0;
the bias correction on a hand-computed example."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import algorithms as ref
import envs
import metatrace as mt
import nets


def numpy_obgd(w, z0, vv0, gU, gH, delta, alpha, kappa, gl, psi, beta2, t, adaptive):
    """O1-O6 written out: -> (w, z, v, M)."""
    z = gl * z0 + gU
    v, s = vv0, np.ones_like(z)
    if adaptive:
        v = beta2 * vv0 + (1 - beta2) * (delta * z) ** 2
        s = 1 / np.sqrt(v / (1 - beta2 ** t) + 1e-8)
    M = alpha * kappa * max(abs(delta), 1.0) * np.sum(np.abs(z * s))
    step = alpha / M if M > 1 else alpha
    return w + step * (delta * z + psi * gH) * s, z, v, M


def learner(n, cfg, rng, step):
    """A Learner with random weights, trace and RMS state, every weight live, at step `step`."""
    L = mt.Learner(n, cfg)
    L.W[mt.W_] = rng.normal(0, 1, n)
    L.W[mt.Z_] = rng.normal(0, 1, n)
    L.W[mt.VV_] = rng.uniform(0.01, 1, n)
    L.act[:] = np.arange(n)
    L.in_act[:] = 1
    L.ist[mt.N_ACT] = n
    L.ist[mt.STEP] = L.vt[:] = step
    return L


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), adaptive=st.booleans(), clipped=st.booleans(),
       dense=st.booleans())
def test_step_equals_numpy_formula(seed, adaptive, clipped, dense):
    """One step of either kernel form equals O1-O6 in NumPy; kappa is chosen so that the bound
    M lands on the drawn side of 1 (clipped: M in [1.01, 50], else [0.05, 0.99], log-uniform)."""
    rng = np.random.default_rng(seed)
    n, tuner = int(rng.integers(3, 40)), "adaptive_obgd" if adaptive else "obgd"
    alpha, gl, psi = math.exp(rng.uniform(-6, 0)), rng.uniform(0, 0.99), rng.uniform(0, 0.1)
    beta2, t = rng.uniform(0.5, 0.9999), int(rng.integers(0, 50))
    gU, gH = rng.normal(0, 1, n), rng.normal(0, 1, n)
    delta = rng.normal(0, 2) or 0.3
    L0 = learner(n, mt.Config(tuner=tuner, alpha=alpha, beta2=beta2, gamma=1.0, lam=gl, psi=psi),
                 rng, t)
    W0 = L0.W.copy()
    _, _, _, M1 = numpy_obgd(W0[mt.W_], W0[mt.Z_], W0[mt.VV_], gU, gH, delta, alpha, 1.0, gl, psi,
                             beta2, t + 1, adaptive)
    target = math.exp(rng.uniform(math.log(1.01), math.log(50)) if clipped
                      else rng.uniform(math.log(0.05), math.log(0.99)))
    kappa = target / M1                                       # M is linear in kappa
    w, z, v, M = numpy_obgd(W0[mt.W_], W0[mt.Z_], W0[mt.VV_], gU, gH, delta, alpha, kappa, gl,
                            psi, beta2, t + 1, adaptive)
    cfg = L0.config._replace(kappa=kappa)
    L = learner(n, cfg, np.random.default_rng(seed), t)
    L.W[...] = W0
    if dense:
        ok = mt.dense_step(L.bundle, mt.materialized(gU, gH, np.zeros(n)), delta, 0.0, L.hyper)
    else:
        sc = mt.Scratch(gU.copy(), gH.copy(), np.zeros(n), np.zeros(n, np.uint8), np.arange(n))
        ok = mt.tuner_step(L.bundle, sc, n, delta, 0.0, L.hyper)
    assert ok
    assert (M > 1) == clipped
    assert math.isclose(L.s[mt.OBGD_M], M, rel_tol=1e-12)
    np.testing.assert_allclose(L.W[mt.Z_], z, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(L.W[mt.W_], w, rtol=1e-12, atol=1e-14)
    if adaptive:
        np.testing.assert_allclose(L.W[mt.VV_], v, rtol=1e-13)
    else:
        np.testing.assert_array_equal(L.W[mt.VV_], W0[mt.VV_])
    step = alpha / M if clipped else alpha
    s = 1 / np.sqrt(v / (1 - beta2 ** (t + 1)) + 1e-8) if adaptive else 1.0
    np.testing.assert_allclose(L.beta(), np.log(step * s) + np.zeros(n), rtol=1e-12, atol=1e-12)


def test_reference_transcription_agrees():
    """algorithms.obgd_step (the readable definition) is the same formula."""
    rng = np.random.default_rng(5)
    for adaptive in (False, True):
        n = 9
        S = ref.new_state(n, "obgd", 0.3)
        S["w"], S["z"] = rng.normal(0, 1, n), rng.normal(0, 1, n)
        S["vvec"], S["t"] = rng.uniform(0.1, 1, n), 4
        gU, gH = rng.normal(0, 1, n), rng.normal(0, 1, n)
        want = numpy_obgd(S["w"], S["z"], S["vvec"], gU, gH, 1.7, 0.3, 2.0, 0.8, 0.05, 0.9, 5,
                          adaptive)
        ref.obgd_step(S, ref.Grads(gU, gH, np.zeros(n), 1.7),
                      ref.Params(gl=0.8, psi=0.05, kappa=2.0, beta2=0.9), adaptive)
        np.testing.assert_allclose(S["w"], want[0], rtol=1e-15)


def test_adaptive_bias_correction_by_hand():
    """Two steps of adaptive ObGD on two weights, beta2 = 1/2, gamma lambda = 1/2, alpha = 1:
    step 1, g = (1, 2), delta = 2: z = (1, 2), v = (2, 8), v-hat = v / (1 - 1/2) = (4, 16),
    so w moves by delta z / sqrt(v-hat) = (1, 1); with kappa = 1, M = 1 * 1 * 2 * (1/2 + 2/4) = 2,
    so w moves by (1/2, 1/2).  Step 2, g = 0, delta = 1: z = (1/2, 1), v = (1.125, 4.5),
    v-hat = v / (1 - 1/4) = (1.5, 6): w moves by (0.5 / sqrt 1.5, 1 / sqrt 6) (M = 0.816 < 1)."""
    for kappa, first in ((0.0, [1.0, 1.0]), (1.0, [0.5, 0.5])):
        cfg = mt.Config(tuner="adaptive_obgd", alpha=1.0, kappa=kappa, beta2=0.5, gamma=1.0,
                        lam=0.5)
        L = mt.Learner(2, cfg, dense=True)
        for g, delta, want in (((1.0, 2.0), 2.0, first),
                               ((0.0, 0.0), 1.0, [0.5 / math.sqrt(1.5), 1 / math.sqrt(6.0)])):
            w0 = L.w.copy()
            assert mt.dense_step(L.bundle, mt.materialized(np.array(g), np.zeros(2), np.zeros(2)),
                                 delta, 0.0, L.hyper)
            np.testing.assert_allclose(L.w - w0, want, rtol=1e-7)
        np.testing.assert_allclose(L.W[mt.VV_], [1.125, 4.5], rtol=1e-15)
    assert not np.allclose(0.5 / math.sqrt(1.125), want[0], rtol=1e-3)    # uncorrected differs


def mountaincar_weights(tuner, kappa, episodes=3):
    cfg = mt.Config(tuner=tuner, alpha=2.0 ** -6, kappa=kappa, psi=0.01, timeout_bootstrap=True)
    task = envs.MountainCarTask(cfg, drifting=True, drift=1e-3, seed=3)
    rets = [task.episode()[:2] for _ in range(episodes)]
    return rets, task.learner.w.copy()


def net_weights(tuner, kappa, steps=300):
    net = nets.make_net((2, 6, 6), ((4, 3, 1),), (8,), 3)
    cfg = mt.Config(tuner=tuner, alpha=2.0 ** -6, kappa=kappa, psi=0.01)
    ag = mt.NetAgent(net, cfg, seed=4, dtype=np.float64)
    rng = np.random.default_rng(9)
    obs, actions = rng.uniform(0, 1, net.obs_shape), []
    for t in range(steps):
        A = ag.policy(obs)
        actions.append(A)
        obs1 = rng.uniform(0, 1, net.obs_shape)
        term = t % 50 == 49
        assert ag.learn(A, float(A == 1) - 0.3, obs1, 0.0 if term else 0.99)
        if term:
            ag.end_episode()
        obs = obs1
    return actions, ag.w.copy()


@pytest.mark.parametrize("run", [mountaincar_weights, net_weights])
def test_untuned_is_obgd_with_kappa_zero(run):
    """kappa = 0 never bounds the step: the same episodes and weights as `none` to 1e-12; the
    paper's kappa = 2 does bound it here (the check is not vacuous)."""
    out0, w0 = run("none", 2.0)
    out1, w1 = run("obgd", 0.0)
    assert out0 == out1
    np.testing.assert_allclose(w1, w0, rtol=0, atol=1e-12 * np.max(np.abs(w0)))
    _, w2 = run("obgd", 2.0)
    assert np.max(np.abs(w2 - w0)) > 1e-3 * np.max(np.abs(w0))


# ------------------------------------------------------------------------------------------------
# Stream AC's stabilizers: normalization wrappers, their checkpoints and evaluation; flags

def scripted_env(obs, rewards, dones):
    import gymnasium as gym

    class Env(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, obs.shape[1:], np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return obs[0], {}

        def step(self, action):
            self.t += 1
            return obs[self.t], float(rewards[self.t - 1]), bool(dones[self.t - 1]), False, {}
    return Env()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60))
def test_wrappers_running_statistics_equal_numpy(seed, n):
    """After n steps, NormalizeObservation's mean and variance are NumPy's mean and sample
    variance (ddof 1) of the n + 1 observations seen, and the last observation comes out as
    (o - mean) / sqrt(var + 1e-8); ScaleReward's statistics are those of the return trace
    G_t = gamma (1 - done_t) G_{t-1} + R_t, and it divides R_t by sqrt(var + 1e-8)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(3, 2, (n + 1, 3, 2)).astype(np.float32)
    rewards, dones = rng.normal(0, 5, n), rng.random(n) < 0.2
    env = envs.ScaleReward(envs.NormalizeObservation(scripted_env(obs, rewards, dones)), 0.9)
    env.reset()
    trace, G = 0.0, []
    for t in range(n):
        o, R, *_ = env.step(0)
        trace = trace * 0.9 * (1 - dones[t]) + rewards[t]
        G.append(trace)
        want = rewards[t] / np.sqrt((np.var(G, ddof=1) if t else 1.0) + 1e-8)
        assert math.isclose(R, want, rel_tol=1e-12)
    m = envs.normalizers(env)["obs"].moments
    seen = obs.astype(np.float64)
    np.testing.assert_allclose(m.mean, seen.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.var, seen.var(axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(o, ((obs[-1] - seen.mean(axis=0)) / np.sqrt(seen.var(axis=0, ddof=1)
                                                                          + 1e-8)), rtol=1e-5, atol=1e-6)
    r = envs.normalizers(env)["reward"].moments
    assert math.isclose(float(r.mean), np.mean(G), rel_tol=1e-12, abs_tol=1e-12)


def test_wrapper_state_round_trips_and_is_validated():
    rng = np.random.default_rng(1)
    obs = rng.normal(0, 1, (11, 4)).astype(np.float32)
    make = lambda: envs.ScaleReward(envs.NormalizeObservation(
        scripted_env(obs, rng.normal(0, 1, 10), np.zeros(10, bool))))
    a, b = make(), make()
    a.reset()
    for _ in range(5):
        a.step(0)
    state = envs.get_wrapper_state(a)
    assert set(state) == {"norm_obs_mean", "norm_obs_p", "norm_obs_count", "norm_reward_mean",
                          "norm_reward_p", "norm_reward_count", "norm_reward_trace"}
    envs.prepare_wrapper_state(b, state)()
    assert all(np.array_equal(v, envs.get_wrapper_state(b)[k]) for k, v in state.items())
    for bad in ({**state, "norm_obs_count": np.array(-1.0)},
                {**state, "norm_obs_mean": np.zeros(3)},
                {k: v for k, v in state.items() if k != "norm_reward_trace"},
                {**state, "norm_reward_p": np.array(np.nan)}):
        with pytest.raises(ValueError, match="normalization state"):
            envs.prepare_wrapper_state(make(), bad)


def test_frozen_statistics_are_used_and_not_updated():
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    m = envs.RunningMoments((2,))
    for x in ([0.0, 1.0], [2.0, 5.0]):
        m.update(np.array(x))
    env = envs.NormalizeObservation(scripted_env(obs, np.zeros(5), np.zeros(5, bool)), frozen=m)
    o, _ = env.reset()
    env.step(0)
    assert m.count == 2
    np.testing.assert_allclose(o, (obs[0] - [1.0, 3.0]) / np.sqrt([2.0, 8.0]), rtol=1e-6)


def test_stabilizer_and_obgd_flags_are_refused_where_they_do_not_apply_and_stored_only_when_on():
    import run
    import schema
    p = run.run_parser()
    s = run.settings(p.parse_args(["--domain", "minatar-breakout"]))
    assert not set(s) & {"kappa", "beta2", *schema.STABILIZERS}       # old runs keep their hash
    s = run.settings(p.parse_args(["--domain", "minatar-breakout", "--tuner", "adaptive_obgd",
                                   "--kappa", "3", "--beta2", "0.99", "--layer-norm"]))
    assert (s["kappa"], s["beta2"], s["layer_norm"]) == (3.0, 0.99, True)
    assert run.config_of(s).kappa == 3.0 and run.config_of(s).beta2 == 0.99
    for argv, words in ((["--tuner", "obgd", "--mu", "0.1"], "--mu does not apply to tuner obgd"),
                        (["--tuner", "obgd", "--beta2", "0.9"], "--beta2 does not apply"),
                        (["--tuner", "mixed", "--kappa", "1"], "--kappa does not apply"),
                        (["--tuner", "obgd", "--kappa", "-1"], "outside the accepted range"),
                        (["--layer-norm"], "--layer-norm does not apply to domain mountaincar"),
                        (["--normalize-obs"], "--normalize-obs does not apply")):
        with pytest.raises(run.UsageError, match=words):
            run.settings(p.parse_args(run.join_numbers(argv)))


def test_stream_ac_stabilizers_change_the_run_and_off_changes_nothing():
    """Each option changes a short MinAtar run; a run with all of them off is the default run."""
    import run
    p = run.run_parser()

    def weights(*flags):
        s = run.settings(p.parse_args(["--domain", "minatar-breakout", "--tuner", "obgd",
                                       "--alpha", "0.5", "--steps", "1500", *flags]))
        r, left = run.NetRunner(s), 1500
        while left > 0:                  # several episodes, so that some rewards are non-zero
            left -= r.episode(left)[2]
        return r.agent.w.copy()
    base = weights()
    assert np.array_equal(base, weights())
    for f in ("--sparse-init", "--layer-norm", "--normalize-obs", "--scale-reward"):
        assert not np.array_equal(weights(f), base), f

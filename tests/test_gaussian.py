"""The diagonal Gaussian policy (docs/algorithms.md §10): its log-prob and entropy against
scipy.stats.norm, its head's VJP and JVP and the network's g^U, g^H against float64 finite
differences, the §3.2 identities for a Gaussian-policy MLP with scalar, vector and mixed, and a
saved agent that continues exactly."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

import algorithms as alg
import metatrace as mt
import nets
from tests.test_netagent import check_hvec, rel_err

D = 3                                           # action dimensions
NET = nets.MLP(5, (8, 8), 2 * D)                # small, so finite differences are cheap


def head(out, action):
    """g rows (MEAN, STD, DSTD, ACTION) and H from the kernel, for outputs `out`."""
    g = np.zeros((4, D))
    H = mt.gaussian_policy(np.asarray(out, np.float64), g)
    g[mt.ACTION] = action
    return g, H


def central(f, x, eps=1e-6):
    return (f(x + eps) - f(x - eps)) / (2 * eps)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_log_prob_and_entropy_match_scipy(seed, scale):
    rng = np.random.default_rng(seed)
    out, a = rng.normal(0, scale, 2 * D), rng.normal(0, 2, D)
    g, H = head(out, a)
    sigma = mt.SIGMA_MIN + np.logaddexp(0.0, out[D:])            # softplus, computed another way
    np.testing.assert_allclose(g[mt.STD], sigma, rtol=1e-14)
    assert H == pytest.approx(stats.norm.entropy(scale=sigma).sum(), rel=1e-12, abs=1e-12)
    lp = stats.norm.logpdf(a, loc=out[:D], scale=sigma).sum()
    assert alg.gaussian_log_prob(out, a) == pytest.approx(lp, rel=1e-12, abs=1e-12)
    assert alg.gaussian_entropy(out) == pytest.approx(H, rel=1e-14)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rH=st.sampled_from([0, 1]))
def test_head_vjp_and_jvp_against_finite_differences(seed, rH):
    """The cotangent rows (the head's VJP) of ½ log pi(A) and of H on (mu, rho), and their
    products with a direction (the head's JVP), against central differences in float64."""
    rng = np.random.default_rng(seed)
    out, a, v = rng.normal(0, 1, 2 * D), rng.normal(0, 1, D), rng.normal(0, 1, 2 * D)
    g, _ = head(out, a)
    cot = np.zeros((2, 1 + 2 * D))
    mt.gaussian_cotangents(g, cot, rH)
    half_lp = lambda o: 0.5 * alg.gaussian_log_prob(o, a)
    fd = np.array([central(lambda x: half_lp(out + x * e), 0.0) for e in np.eye(2 * D)])
    np.testing.assert_allclose(cot[0, 1:], fd, rtol=1e-6, atol=1e-9)
    assert cot[0, 1:] @ v == pytest.approx(central(lambda x: half_lp(out + x * v), 0.0), rel=1e-6)
    if rH:
        fdH = np.array([central(lambda x: alg.gaussian_entropy(out + x * e), 0.0)
                        for e in np.eye(2 * D)])
        np.testing.assert_allclose(cot[1, 1:], fdH, rtol=1e-6, atol=1e-9)
        assert cot[1, 1:] @ v == pytest.approx(
            central(lambda x: alg.gaussian_entropy(out + x * v), 0.0), rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(cot[0, 1:], alg.gaussian_cotangents(out, a)[0], rtol=1e-14)


def random_agent(seed, tuner, norm, psi):
    """A float64 Gaussian-policy NetAgent with random non-zero learner state."""
    rng = np.random.default_rng(seed)
    cfg = mt.Config(tuner=tuner, normalized=norm, alpha=math.exp(rng.uniform(-5, -3)),
                    mu=2.0 ** -5, gamma=0.9, lam=0.7, psi=psi)
    ag = mt.NetAgent(NET, cfg, seed=seed, dtype=np.float64, policy="gaussian")
    W, n = ag.learner.W, NET.n_params
    for row in (mt.Z_, mt.H_, mt.HV_, mt.ZBV_):
        W[row] = rng.normal(0, 1, n)
    if tuner in ("vector", "mixed"):
        ag.learner.set_beta_vec(rng.normal(0, 0.5, n))
    W[mt.VV_] = rng.uniform(0.1, 1, n)
    ag.learner.s[mt.V], ag.learner.s[mt.ZB], ag.learner.s[mt.U] = rng.uniform(0.1, 1), rng.normal(), 0.5
    return ag, rng


def one_step(seed, tuner, norm, psi, term):
    """One policy + learn step of a Gaussian agent; what the identities need."""
    ag, rng = random_agent(seed, tuner, norm, psi)
    obs0, obs1 = rng.normal(0, 1, (2, 5))
    R, gamma1 = rng.normal(), 0.0 if term else 0.9
    W0 = ag.learner.W.copy()
    A = ag.policy(obs0)
    assert ag.learn(A, R, obs1, gamma1)
    ws = nets.workspace(NET, np.float64, k=1)

    def outputs(w, obs):
        V, out = nets.forward(NET, w, obs, ws)
        return np.concatenate([[V], out])

    def delta(w):
        V1 = outputs(w, obs1)[0] if gamma1 else 0.0
        return R + gamma1 * V1 - outputs(w, obs0)[0]

    return ag, W0, A, obs0, outputs, delta


@pytest.mark.parametrize("tuner", ["none", "mixed", "obgd"])
def test_network_gradients_against_finite_differences(tuner):
    """g^U = grad(V + ½ log pi(A)) and g^H = grad H at S_t, on every weight of the Gaussian MLP."""
    ag, W0, A, obs0, outputs, _ = one_step(7, tuner, True, 0.1, False)
    gU, gH = ag.gradients()[:2]
    w = W0[mt.W_]
    U = lambda x: outputs(x, obs0)[0] + 0.5 * alg.gaussian_log_prob(outputs(x, obs0)[1:], A)
    H = lambda x: alg.gaussian_entropy(outputs(x, obs0)[1:])
    for f, g in ((U, gU), (H, gH)):
        fd = np.array([central(lambda e: f(w + e * u), 0.0, 1e-6) for u in np.eye(len(w))])
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), norm=st.booleans(), psi=st.sampled_from([0.0, 0.2]),
       term=st.booleans(), tuner=st.sampled_from(["scalar", "vector", "mixed"]))
def test_identities_gaussian_network(seed, norm, psi, term, tuner):
    """§3.2 on a Gaussian-policy MLP: Phi(beta*) = w_{t+1} and Phi'(beta*) = h_{t+1} (scalar h,
    mixed h-hat), and per coordinate for h-vec (vector, mixed)."""
    ag, W0, _, _, _, delta = one_step(seed, tuner, norm, psi, term)
    z, gH, L = ag.learner.W[mt.Z_].copy(), ag.gradients()[1], ag.learner
    w, hh, hv = W0[mt.W_], W0[mt.H_], W0[mt.HV_]
    bh = L.s[mt.BETA]
    bvec = L.beta_vec() if tuner != "scalar" else np.zeros(NET.n_params)
    if tuner != "vector":
        Phi = lambda b: w + (b - bh) * hh + np.exp(b + bvec) * (z * delta(w + (b - bh) * hh)
                                                                  + psi * gH)
        assert rel_err(Phi(bh), ag.w) < 1e-12
        assert rel_err(central(Phi, bh), L.W[mt.H_]) < 1e-6
    if tuner != "scalar":
        check_hvec(ag, w, hv, bh, bvec, z, gH, psi, delta, seed)


def test_policy_samples_mean_plus_std_normal_and_greedy_is_the_mean():
    ag = mt.NetAgent(NET, mt.Config(tuner="mixed", alpha=2.0 ** -6, mu=1e-3), seed=3,
                     policy="gaussian", dtype=np.float64)
    obs = np.linspace(-1, 1, 5)
    draws = np.array([ag.act(obs, rng=np.random.default_rng(k)) for k in range(4000)])
    out = nets.forward(NET, ag.w, obs, nets.workspace(NET, np.float64, k=1))[1]
    mu, sigma = out[:D], mt.SIGMA_MIN + np.logaddexp(0.0, out[D:])
    np.testing.assert_allclose(draws.mean(0), mu, atol=4 * sigma.max() / math.sqrt(4000))
    np.testing.assert_allclose(draws.std(0), sigma, rtol=0.05)
    np.testing.assert_allclose(ag.act(obs, greedy=True), mu, rtol=1e-15)


def test_saved_gaussian_agent_continues_exactly(tmp_path):
    cfg = mt.Config(tuner="mixed", alpha=2.0 ** -6, mu=1e-3, psi=0.01)
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 1, (40, 5)).astype(np.float32)
    ag = mt.NetAgent(NET, cfg, seed=1, policy="gaussian")
    for t in range(10):
        assert ag.learn(ag.policy(obs[t]), 0.1, obs[t + 1], 0.99)
    ag.save(tmp_path / "a.npz")
    twin = mt.NetAgent.load(tmp_path / "a.npz")
    assert twin.gaussian
    for t in range(10, 30):
        a, b = ag.policy(obs[t]), twin.policy(obs[t])
        np.testing.assert_array_equal(a, b)
        assert ag.learn(a, 0.1, obs[t + 1], 0.99) and twin.learn(b, 0.1, obs[t + 1], 0.99)
    np.testing.assert_array_equal(ag.learner.W, twin.learner.W)


def test_bad_gaussian_input_is_refused():
    with pytest.raises(ValueError, match="mean and a std"):
        mt.NetAgent(nets.MLP(5, (8,), 3), mt.Config(), policy="gaussian")
    with pytest.raises(ValueError, match="policy 'beta'"):
        mt.NetAgent(NET, mt.Config(), policy="beta")
    ag = mt.NetAgent(NET, mt.Config(), policy="gaussian")
    obs = np.zeros(5, np.float32)
    ag.policy(obs)
    with pytest.raises(ValueError, match="expected 3 numbers"):
        ag.learn(np.array([0.0, 1.0]), 0.0, obs, 0.9)
    ag.policy(obs)
    assert ag.learn(np.array([0.0, np.nan, 1.0]), 0.0, obs, 0.9) is False    # diverged, not raised


@pytest.mark.parametrize("tuner", ["none", "scalar", "vector", "mixed", "obgd", "adaptive_obgd"])
def test_every_network_tuner_takes_gaussian_steps(tuner):
    """Each network tuner's step on a Gaussian-policy MLP changes the weights and keeps them
    finite, float32 following float64 to float32 precision."""
    cfg = mt.Config(tuner=tuner, alpha=2.0 ** -6 if tuner not in ("obgd", "adaptive_obgd") else 1.0,
                    mu=1e-3, psi=0.01, kappa=2.0)
    rng = np.random.default_rng(11)
    obs = rng.normal(0, 1, (31, 5))
    agents = [mt.NetAgent(NET, cfg, seed=2, dtype=dt, policy="gaussian")
              for dt in (np.float32, np.float64)]
    w0 = agents[1].w.copy()
    for t in range(30):
        acts = [ag.policy(obs[t].astype(ag.dtype)) for ag in agents]
        for ag in agents:
            assert ag.learn(acts[1], 0.5 * np.sin(t), obs[t + 1].astype(ag.dtype), 0.99)
    w32, w64 = agents[0].w.astype(np.float64), agents[1].w
    assert np.isfinite(w64).all() and not np.array_equal(w64, w0)
    assert np.max(np.abs(w32 - w64)) <= 1e-3 * np.max(np.abs(w64))

"""Layer norm in its eps regime, and Metatrace on it (docs/algorithms.md §2.5).

With --normalize-obs the first observation of a run standardizes to exactly 0, so every
layer-normalized pre-activation is constant (variance 0) and layer norm's gain 1 / sqrt(var + eps)
is set by eps alone.  These tests hold the pieces to independent computations: layer norm's
Jacobian against float64 finite differences at zero and near-zero variance, the observation
normalizer against np.mean / np.var on a constant stream, the eps-regime step of the kernels
against algorithms.py, d w / d beta by finite differences through such a step, and the runs of
issue 27 that used to diverge within 9 steps.
"""
import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import algorithms as ref
import envs
import metatrace as mt
import nets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET_LN = nets.make_net((2, 6, 6), ((4, 3, 1),), (8,), 3, layer_norm=True)
NET = nets.make_net((2, 6, 6), ((4, 3, 1),), (8,), 3)


def layer_norm(a):
    """(a - mean a) / sqrt(var a + eps), float64, the biased variance (PyTorch's layer_norm)."""
    return (a - a.mean()) / np.sqrt(a.var() + nets.LN_EPS)


def central4(f, e):
    """Fourth-order central difference of f at 0 with step e."""
    return (f(-2 * e) - 8 * f(-e) + 8 * f(e) - f(2 * e)) / (12 * e)


@pytest.mark.parametrize("spread", [0.0, 1e-6, 1e-4, 3e-3])
def test_layer_norm_jacobian_matches_finite_differences_near_zero_variance(spread):
    """_layer_norm_t (layer norm's symmetric Jacobian, its vjp and jvp) against float64 central
    differences of layer_norm, at std 0 (the zero observation), 1e-6, 1e-4 and 3e-3 = sqrt(eps)."""
    rng = np.random.default_rng(7)
    a = 0.3 + spread * rng.standard_normal(24)
    yhat, r = a.copy(), np.zeros(1)
    nets._layer_norm(yhat, r)
    assert np.allclose(yhat, layer_norm(a), rtol=0, atol=1e-12)
    assert r[0] == pytest.approx(1 / math.sqrt(a.var() + nets.LN_EPS), rel=1e-12)
    step = 1e-3 * math.sqrt(a.var() + nets.LN_EPS)     # the scale the function curves on
    for _ in range(3):
        v = rng.standard_normal(24)
        g = v.copy()
        nets._layer_norm_t(g, yhat, r[0])
        fd = central4(lambda e: layer_norm(a + e * v), step)
        assert np.max(np.abs(g - fd)) <= 1e-8 * np.max(np.abs(fd))


def zero_bias_theta(net, seed):
    """The init with every bias 0 (sparse init's and this project's init), float64."""
    theta = nets.init_params(net, np.random.default_rng(seed), np.float64)
    for ly in net.layers:
        theta[ly.b_off:ly.b_off + ly.fan_out] = 0.0
    return theta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_net_jvp_and_vjp_match_finite_differences_at_the_zero_observation(seed):
    """At the zero observation every layer-normed pre-activation of NET_LN is constant (variance
    0, gain 1/sqrt(eps) = 316): nets.jvp against float64 central differences of nets.forward,
    and nets.vjp as its transpose."""
    theta, obs = zero_bias_theta(NET_LN, seed), np.zeros(NET_LN.obs_shape)
    rng = np.random.default_rng(seed)
    ws = nets.workspace(NET_LN, np.float64, 1)

    def out(th):
        value, logits = nets.forward(NET_LN, th, obs, ws)
        return np.concatenate([[value], logits])

    out(theta)
    assert nets.layer_norm_flat(NET_LN.table, ws.table, ws.buf)
    v = rng.standard_normal(NET_LN.n_params)
    e = 1e-5 * math.sqrt(nets.LN_EPS) / np.max(np.abs(v))   # two layers of gain 316
    fd = central4(lambda s: out(theta + s * v), e)
    out(theta)
    dv, dl = nets.jvp(NET_LN, theta, ws, v)
    jv = np.concatenate([[dv], dl])
    assert np.max(np.abs(jv - fd)) <= 1e-9 * np.max(np.abs(fd))
    assert np.max(np.abs(jv)) > 100.0          # the eps-regime gain is really there
    cot = rng.standard_normal((1, 1 + NET_LN.n_actions))
    g = nets.vjp(NET_LN, theta, ws, cot, np.zeros((1, NET_LN.n_params)))
    assert cot[0] @ jv == pytest.approx(g[0] @ v, rel=1e-12)


def test_layer_norm_flat_only_in_the_eps_regime():
    """layer_norm_flat: true at the zero observation with zero biases (variance 0), false at a
    random observation, and never for a net without layer norm."""
    for net, flat_at_zero in ((NET_LN, True), (NET, False)):
        theta = zero_bias_theta(net, 0)
        ws = nets.workspace(net, np.float64, 1)
        nets.forward(net, theta, np.zeros(net.obs_shape), ws)
        assert nets.layer_norm_flat(net.table, ws.table, ws.buf) == flat_at_zero
        nets.forward(net, theta, np.random.default_rng(1).uniform(0, 1, net.obs_shape), ws)
        assert not nets.layer_norm_flat(net.table, ws.table, ws.buf)


def test_observation_normalizer_on_a_constant_observation():
    """RunningMoments and NormalizeObservation on a constant stream, then one change, against
    np.mean and np.var(ddof=1) of the samples: mean exact, variance 1 before the second sample
    and 0 after, output exactly 0 (finite), and the change standardized as the formula says."""
    c = np.array([0.25, -3.0, 7.5], np.float32)
    m = envs.RunningMoments(c.shape)
    seen = []
    for k in range(1, 12):
        m.update(c)
        seen.append(c.astype(np.float64))
        assert m.count == k
        assert np.array_equal(m.mean, c.astype(np.float64))
        assert np.array_equal(m.var, np.ones(3) if k < 2 else np.zeros(3))
        out = ((c - m.mean) / np.sqrt(m.var + 1e-8)).astype(np.float32)
        assert np.array_equal(out, np.zeros(3, np.float32))
    x = np.array([1.25, -3.0, 8.5], np.float32)
    m.update(x)
    seen.append(x.astype(np.float64))
    assert np.allclose(m.mean, np.mean(seen, axis=0), rtol=1e-15, atol=0)
    assert np.allclose(m.var, np.var(seen, axis=0, ddof=1), rtol=1e-12, atol=0)

    class Constant:
        observation_space = envs.gym.spaces.Box(-10, 10, (3,), np.float32)

        def reset(self, **kw):
            return c.copy(), {}

        def step(self, a):
            return c.copy(), 0.0, False, False, {}
    norm = envs.NormalizeObservation.__new__(envs.NormalizeObservation)
    norm.env, norm.moments, norm.eps, norm.frozen = Constant(), envs.RunningMoments((3,)), 1e-8, False
    obs, _ = norm.reset()
    assert np.array_equal(obs, np.zeros(3, np.float32))
    for _ in range(5):
        assert np.array_equal(norm.step(0)[0], np.zeros(3, np.float32))


def random_learner(tuner, seed, n=12):
    """A float64 dense Learner and algorithms.py state, equal and random (u > 1 so S6 would fire)."""
    rng = np.random.default_rng(seed)
    cfg = mt.Config(tuner=tuner, alpha=math.exp(rng.uniform(-3, -1)), mu=2.0 ** -4, gamma=0.9,
                    lam=0.8, psi=0.1)
    L = mt.Learner(n, cfg, dense=True)
    S = ref.new_state(n, tuner, cfg.alpha)
    for row, key in ((mt.W_, "w"), (mt.Z_, "z"), (mt.H_, "h"), (mt.HV_, "hv"), (mt.VV_, "vvec"),
                     (mt.ZBV_, "zbvec")):
        S[key] = rng.normal(0, 1, n) if key != "vvec" else rng.uniform(0.1, 1, n)
        L.W[row] = S[key]
    if tuner in ("vector", "mixed"):
        bv = rng.normal(0, 0.3, n)
        L.set_beta_vec(bv)
        S["bvec"] = S["bvec"] + bv
    L.s[mt.V], L.s[mt.ZB], L.s[mt.U] = S["v"], S["zb"], S["u"] = 0.5, rng.normal(), 3.0
    return L, S, cfg, rng


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tuner=st.sampled_from(["scalar", "vector", "mixed"]))
def test_flat_step_equals_algorithms_py(seed, tuner):
    """dense_step with and without `flat` against ref_step over 6 steps (flat on steps 0, 1, 4):
    w, h, h-vec, beta (every beta_i) and u agree to 1e-12, and a flat step leaves u as it was."""
    L, S, cfg, rng = random_learner(tuner, seed)
    gl = cfg.gamma * cfg.lam
    for t in range(6):
        flat = t in (0, 1, 4)
        gU, gH, d = rng.normal(0, 2, (3, L.n))
        delta = rng.normal()
        u0 = L.s[mt.U]
        assert mt.dense_step(L.bundle, mt.materialized(gU, gH, d), delta, 0.0, L.hyper, flat)
        ref.ref_step(S, tuner, ref.Grads(gU, gH, d, delta, 0.0, flat), ref.Params(gl, cfg.psi, cfg.mu))
        if flat:
            assert L.s[mt.U] == u0
        beta = (L.s[mt.BETA] + L.beta_vec() if tuner == "vector" else
                L.s[mt.BETA] + (L.beta_vec() if tuner == "mixed" else 0.0))
        want = S["bvec"] + (S["beta"] if tuner == "mixed" else 0.0) if tuner != "scalar" else S["beta"]
        assert np.allclose(beta, want, rtol=0, atol=1e-12)
        assert np.allclose(L.W[mt.W_], S["w"], rtol=1e-12, atol=1e-12)
        assert np.allclose(L.W[mt.H_], S["h"], rtol=1e-12, atol=1e-12)
        assert np.allclose(L.W[mt.HV_], S["hv"], rtol=1e-12, atol=1e-12)
        assert L.s[mt.U] == pytest.approx(S["u"], rel=1e-12)


@pytest.mark.parametrize("tuner", ["scalar", "mixed"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dw_dbeta_through_a_flat_layer_norm(tuner, seed):
    """Spec §3.2 through layer norm at variance 0: with alpha_t = e^beta / max(x, 1) the step
    actually taken (x = e^beta ||g^U||^2, S5), Phi(log alpha_t) = w_{t+1} and
    Phi'(log alpha_t) = h_{t+1} (h-hat for mixed) by float64 central differences; beta and u are
    not lowered by the bound."""
    rng = np.random.default_rng(seed)
    cfg = mt.Config(tuner=tuner, alpha=2.0 ** -6, mu=1e-3, gamma=0.9, lam=0.8, psi=0.01)
    ag = mt.NetAgent(NET_LN, cfg, seed=seed, dtype=np.float64)
    L = ag.learner
    L.W[mt.W_] = zero_bias_theta(NET_LN, seed)
    L.W[mt.H_] = 1e-3 * rng.normal(0, 1, NET_LN.n_params)
    obs0, obs1 = np.zeros(NET_LN.obs_shape), rng.uniform(0, 1, NET_LN.obs_shape)
    R, gamma1 = 0.5, 0.9
    W0, beta0 = L.W.copy(), L.s[mt.BETA]
    A = ag.policy(obs0)
    assert ag.learn(A, R, obs1, gamma1)
    gU, gH = ag.gradients()[:2]
    bvec = L.beta_vec() if tuner == "mixed" else np.zeros(NET_LN.n_params)
    x = np.exp(L.s[mt.BETA] + bvec) @ gU ** 2
    assert x > 1e3                              # the bound is active: without §2.5, beta -= log x
    assert abs(L.s[mt.BETA] - beta0) <= cfg.mu + 1e-15 and L.s[mt.U] == 0.0
    bs = L.s[mt.BETA] - math.log(x)
    w, h, z = W0[mt.W_], W0[mt.H_], L.W[mt.Z_]
    ws = nets.workspace(NET_LN, np.float64, k=1)

    def delta(w):
        return R + gamma1 * nets.forward(NET_LN, w, obs1, ws)[0] - nets.forward(NET_LN, w, obs0, ws)[0]

    Phi = lambda b: w + (b - bs) * h + np.exp(b + bvec) * (z * delta(w + (b - bs) * h) + cfg.psi * gH)
    scale = np.max(np.abs(L.W[mt.W_] - w))
    assert np.max(np.abs(Phi(bs) - L.W[mt.W_])) <= 1e-12 * max(scale, np.max(np.abs(w)))
    e = 1e-5
    dPhi = (Phi(bs + e) - Phi(bs - e)) / (2 * e)
    hn = L.W[mt.H_]
    assert np.max(np.abs(dPhi - hn)) <= 1e-6 * np.max(np.abs(hn))


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("args", [
    ["--domain", "minatar-freeway", "--tuner", "mixed", "--alpha", "2^-6"],
    ["--domain", "CartPole-v1", "--tuner", "mixed"],
    ["--domain", "CartPole-v1", "--tuner", "scalar", "--sparse-init", "--scale-reward"],
    ["--domain", "minatar-space_invaders", "--tuner", "vector", "--mu", "1e-4"],
])
def test_issue_27_runs_finish(args, tmp_path):
    """The runs of issue 27 (--layer-norm --normalize-obs, 3000 steps), which diverged at steps
    8-9 with beta near -108, finish without divergence and keep beta within 10 of log alpha0."""
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "run.py", *args, "--layer-norm", "--normalize-obs",
                        "--steps", "3000", "--seed", "0", "--quiet", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    rows = read_rows(out / "episodes.csv")
    assert int(rows[-1]["steps"]) == 3000
    assert all(r["diverged"] == "0" for r in rows)
    alpha0 = 2.0 ** -6 if "2^-6" in args else 2.0 ** -8
    assert min(float(r["beta_mean"]) for r in rows) > math.log(alpha0) - 10

"""The network learner: docs/algorithms.md §3.2 identities with the network as the model, learning, bad input."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import metatrace as mt
import nets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = nets.make_net((2, 6, 6), ((4, 3, 1),), (8,), 3)       # small, so FD is cheap


def random_agent(seed, tuner, norm, psi):
    """A float64 NetAgent with random non-zero state (w from the init, the rest random)."""
    rng = np.random.default_rng(seed)
    cfg = mt.Config(tuner=tuner, normalized=norm, alpha=math.exp(rng.uniform(-5, -3)), mu=2.0 ** -5,
                    gamma=0.9, lam=0.7, psi=psi)
    ag = mt.NetAgent(NET, cfg, seed=seed, dtype=np.float64)
    W, n = ag.learner.W, NET.n_params
    W[mt.Z_] = rng.normal(0, 1, n)
    W[mt.H_] = rng.normal(0, 1, n)
    W[mt.HV_] = rng.normal(0, 1, n)
    if tuner in ("vector", "mixed"):
        ag.learner.set_beta_vec(rng.normal(0, 0.5, n))
    W[mt.VV_] = rng.uniform(0.1, 1, n)
    W[mt.ZBV_] = rng.normal(0, 1, n)
    ag.learner.s[mt.V], ag.learner.s[mt.ZB], ag.learner.s[mt.U] = rng.uniform(0.1, 1), rng.normal(), 0.5
    return ag, rng


def one_step(seed, tuner, norm, psi, term):
    """One policy + learn step; returns what the identities need."""
    ag, rng = random_agent(seed, tuner, norm, psi)
    obs0, obs1 = rng.uniform(0, 1, (2, *NET.obs_shape))
    R, gamma1 = rng.normal(), 0.0 if term else 0.9
    W0 = ag.learner.W.copy()
    A = ag.policy(obs0)
    assert ag.learn(A, R, obs1, gamma1)
    ws = nets.workspace(NET, np.float64, k=1)

    def delta(w):
        V1 = nets.forward(NET, w, obs1, ws)[0] if gamma1 else 0.0
        return R + gamma1 * V1 - nets.forward(NET, w, obs0, ws)[0]

    gH = ag.gradients()[1]                  # g^H at w_t (its dense block factored in the learner)
    return ag, W0, ag.learner.W[mt.Z_].copy(), gH, delta


def check_hvec(ag, w, hv, bh, bvec, z, gH, psi, delta, seed, k=4):
    """Spec §3.2 for h-vec on k random coordinates i: with only beta_i perturbed,
    Phi_i(bvec_i) = w_{t+1,i} and Phi_i'(bvec_i) = hv_{t+1,i} (central differences, float64)."""
    n = len(w)
    alpha = np.exp(bh + bvec)
    for i in np.random.default_rng(seed).choice(n, k, replace=False):
        e = np.zeros(n)
        e[i] = 1.0

        def Phi_i(b):
            a = alpha.copy()
            a[i] = math.exp(bh + b)
            wp = w + (b - bvec[i]) * hv[i] * e
            return wp + a * (z * delta(wp) + psi * gH)

        assert abs(Phi_i(bvec[i])[i] - ag.w[i]) <= 1e-12 * max(1.0, abs(ag.w[i]))
        assert abs(central(Phi_i, bvec[i])[i] - ag.learner.W[mt.HV_][i]) <= \
            1e-6 * max(abs(ag.learner.W[mt.HV_][i]), 1e-3 * np.max(np.abs(hv)))


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def central(f, b, eps=1e-6):
    return (f(b + eps) - f(b - eps)) / (2 * eps)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), norm=st.booleans(), psi=st.sampled_from([0.0, 0.2]),
       term=st.booleans())
def test_scalar_identity_network(seed, norm, psi, term):
    """Spec §3.2 scalar on the network: Phi(beta*) = w_{t+1}, Phi'(beta*) = h_{t+1}."""
    ag, W0, z, gH, delta = one_step(seed, "scalar", norm, psi, term)
    bs, w, h = ag.learner.s[mt.BETA], W0[mt.W_], W0[mt.H_]
    Phi = lambda b: w + (b - bs) * h + math.exp(b) * (z * delta(w + (b - bs) * h) + psi * gH)
    assert rel_err(Phi(bs), ag.w) < 1e-12
    assert rel_err(central(Phi, bs), ag.learner.W[mt.H_]) < 1e-6


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), norm=st.booleans(), psi=st.sampled_from([0.0, 0.2]),
       term=st.booleans())
def test_mixed_identities_network(seed, norm, psi, term):
    """Spec §3.2 mixed h-hat (every component) and h-vec (random coordinates) on the network."""
    ag, W0, z, gH, delta = one_step(seed, "mixed", norm, psi, term)
    bh, bvec = ag.learner.s[mt.BETA], ag.learner.beta_vec()
    w, hh, hv = W0[mt.W_], W0[mt.H_], W0[mt.HV_]
    Phi = lambda b: w + (b - bh) * hh + np.exp(b + bvec) * (z * delta(w + (b - bh) * hh) + psi * gH)
    assert rel_err(Phi(bh), ag.w) < 1e-12
    assert rel_err(central(Phi, bh), ag.learner.W[mt.H_]) < 1e-6
    check_hvec(ag, w, hv, bh, bvec, z, gH, psi, delta, seed)


def test_float32_learner_tracks_float64():
    """The float32 hot path follows the float64 path to float32 precision over a few steps."""
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, (6, *NET.obs_shape))
    cfg = mt.Config(tuner="mixed", alpha=2.0 ** -6, mu=1e-3, psi=0.01)
    agents = [mt.NetAgent(NET, cfg, seed=1, dtype=dt) for dt in (np.float32, np.float64)]
    for t in range(5):
        for ag in agents:
            ag.policy(obs[t].astype(ag.w.dtype))
            assert ag.learn(1, 0.5, obs[t + 1].astype(ag.w.dtype), 0.99)
    w32, w64 = agents[0].w.astype(np.float64), agents[1].w
    assert np.max(np.abs(w32 - w64)) <= 1e-4 * np.max(np.abs(w64))
    assert np.max(np.abs(w32 - w64)) > 0


@pytest.mark.parametrize("args,words", [
    (["--domain", "pong"], "pong"), (["--domain", "seaquest", "--frames", "0"], ">= 1"),
    (["--domain", "minatar-breakout", "--steps", "-5"], ">= 1"),
    (["--domain", "minatar-breakout", "--frames", "400"], "--frames"),
    (["--domain", "mountaincar", "--steps", "100"], "--steps")])
def test_bad_network_input_is_one_line_error(args, words, tmp_path):
    r = subprocess.run([sys.executable, "run.py", *args, "--out", str(tmp_path / "x"), "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_minatar_learning_beats_random_policy():
    """Untuned AC(lambda) (alpha = 2^-6) on MinAtar Space Invaders, 30k steps, fixed seed: the last 100 episodes
    score clearly above a uniformly random policy on the same game (and above its own start)."""
    import envs
    import run
    env = envs.make("minatar-space_invaders", seed=0)
    env.reset(seed=0)
    rng, scores, score = np.random.default_rng(0), [], 0.0
    for _ in range(20000):
        _, r, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        score += r
        if term or trunc:
            scores.append(score)
            score = 0.0
            env.reset()
    random_mean = np.mean(scores)
    s = run.settings(run.run_parser().parse_args(
        ["--domain", "minatar-space_invaders", "--tuner", "none", "--alpha", "2^-6", "--seed", "0",
         "--steps", "30000"]))
    runner, n, learned = run.NetRunner(s), 0, []
    while n < 30000:
        _, score, t, ok, _ = runner.episode(30000 - n)
        assert ok
        n += t
        learned.append(score)
    assert np.mean(learned[-100:]) > random_mean + 0.7
    assert np.mean(learned[-100:]) > np.mean(learned[:100]) + 0.5


@pytest.mark.parametrize("tuner", ["none", "mixed"])
def test_network_trace_and_entropy_gradient_match_finite_differences(tuner):
    """From a zero trace, one step leaves z = g^U = grad(V + log pi(A)/2) at w_t, and the step
    used g^H = grad H: both checked against central differences of the network's own outputs."""
    rng = np.random.default_rng(7)
    cfg = mt.Config(tuner=tuner, alpha=2.0 ** -6, mu=1e-3, psi=0.05, gamma=0.9, lam=0.7)
    ag = mt.NetAgent(NET, cfg, seed=3, dtype=np.float64)
    obs0, obs1 = rng.uniform(0, 1, (2, *NET.obs_shape))
    w0 = ag.w.copy()
    A = ag.policy(obs0)
    assert ag.learn(A, 0.3, obs1, 0.9)
    ws = nets.workspace(NET, np.float64, k=1)

    def UH(w):
        V, logits = nets.forward(NET, w, obs0, ws)
        lp = logits - logits.max()
        lp = lp - np.log(np.exp(lp).sum())
        return np.array([V + 0.5 * lp[A], -(np.exp(lp) * lp).sum()])

    layers = NET.layers
    idx = list(rng.choice(NET.n_params, 40, replace=False)) + [layers[-1].b_off, layers[-1].w_off]
    for i in idx:
        e = np.zeros(NET.n_params)
        e[i] = 1e-6
        fd = (UH(w0 + e) - UH(w0 - e)) / 2e-6
        assert abs(ag.learner.W[mt.Z_][i] - fd[0]) <= 1e-6 * max(1.0, abs(fd[0]))
        assert abs(ag.gradients()[1][i] - fd[1]) <= 1e-6 * max(1.0, abs(fd[1]))
    assert abs(ag.learner.W[mt.Z_][layers[-1].b_off] - 1.0) < 1e-12      # dV/d(value bias) = 1


@pytest.mark.parametrize("tuner", [t for t in mt.TUNERS if not mt.TUNER[t].two_tower])
def test_factored_step_equals_materialized_step(tuner):
    """The network learner keeps the big dense layer's gradients as outer products; the same step
    with every gradient materialized (dense_step on materialized vectors) gives the same state."""
    ag, rng = random_agent(11, tuner, True, 0.2)
    obs0, obs1 = rng.uniform(0, 1, (2, *NET.obs_shape))
    L = ag.learner
    W, s, ist = L.W.copy(), L.s.copy(), L.ist.copy()
    A = ag.policy(obs0)
    V0 = ag.V0
    assert ag.learn(A, 0.7, obs1, 0.9)
    gU, gH, gV, gV1 = ag.gradients()
    V1 = nets.forward(NET, W[mt.W_], obs1, nets.workspace(NET, np.float64, 1))[0]
    c = ag.config
    ok = mt.dense_step(mt.State(W, s, ist, L.vt, L.act, L.in_act),
                       mt.materialized(gU, gH, 0.9 * gV1 - gV), 0.7 + 0.9 * V1 - V0, gV @ gV,
                       mt.hyper(c))
    assert ok
    rows = [mt.W_, mt.Z_, mt.H_, mt.HV_, mt.EB_, mt.VV_, mt.ZBV_]
    np.testing.assert_allclose(L.W[rows], W[rows], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(L.s, s, rtol=1e-10, atol=1e-13)


def test_patch_reuse_is_bit_identical():
    """policy(S_{t+1}) after learn(..., S_{t+1}) reuses the first layer's patches: same results,
    bit for bit, as recomputing them (float32, the Atari-like first layer of kernel 8)."""
    net = nets.make_net((4, 20, 20), ((4, 8, 4),), (16,), 3)
    cfg = mt.Config(tuner="mixed", alpha=2.0 ** -6, mu=1e-3, psi=0.01)
    a, b = mt.NetAgent(net, cfg, seed=2), mt.NetAgent(net, cfg, seed=2)
    obs = np.random.default_rng(0).uniform(0, 1, (8, *net.obs_shape)).astype(np.float32)
    reused = 0
    for t in range(7):
        b.fresh1 = False                      # b recomputes everything
        before = a.cur
        assert a.policy(obs[t]) == b.policy(obs[t].copy())
        reused += a.cur != before             # a switched to the workspace of S_{t+1}
        assert a.learn(t % 3, 0.5, obs[t + 1], 0.99) and b.learn(t % 3, 0.5, obs[t + 1], 0.99)
    assert reused == 6 and b.cur == 0
    assert np.array_equal(a.learner.W, b.learner.W) and np.array_equal(a.learner.s, b.learner.s)


def test_agent_rejects_observations_of_the_wrong_shape_or_dtype():
    ag = mt.NetAgent(NET, mt.Config(tuner="mixed", alpha=2.0 ** -6, mu=1e-3, psi=0.01))
    good = np.zeros(NET.obs_shape, np.float32)
    for bad in (np.zeros((3, 6, 6), np.float32), np.zeros(NET.obs_shape, np.float64)):
        with pytest.raises(ValueError, match="expected shape"):
            ag.policy(bad)
        A = ag.policy(good)
        with pytest.raises(ValueError, match="expected shape"):
            ag.learn(A, 0.0, bad, 0.99)


def test_learn_needs_its_one_policy_call_and_act_changes_nothing():
    """An evaluation `policy` between policy(S_t) and learn is refused; `act` (sampled or greedy)
    leaves learning bit-identical to a run without it."""
    net = nets.MINATAR(4, 6)
    cfg = mt.Config(tuner="mixed", alpha=2.0 ** -8, mu=0.001, psi=0.01)
    rng = np.random.default_rng(3)
    obs = (rng.uniform(0, 1, (6, *net.obs_shape)) < 0.2).astype(np.float32)
    a, b = mt.NetAgent(net, cfg, seed=4), mt.NetAgent(net, cfg, seed=4)
    for t in range(5):
        A = a.policy(obs[t])
        b.act(obs[t], greedy=t % 2 == 0, rng=np.random.default_rng(t))
        assert b.policy(obs[t]) == A
        b.act(obs[t + 1])
        assert a.learn(A, 0.5, obs[t + 1], 0.99) and b.learn(A, 0.5, obs[t + 1], 0.99)
    assert np.array_equal(a.learner.W, b.learner.W) and np.array_equal(a.learner.s, b.learner.s)
    A = a.policy(obs[0])
    a.policy(obs[1])                          # an evaluation call in the wrong place
    with pytest.raises(mt.HandoffError, match="act"):
        a.learn(A, 0.5, obs[1], 0.99)
    with pytest.raises(mt.HandoffError):
        a.learn(A, 0.5, obs[1], 0.99)         # and no learn without a policy call at all


def test_linear_agent_handoff_and_act():
    cfg = mt.Config(tuner="scalar", alpha=2.0 ** -4, mu=2.0 ** -6)
    a, b = mt.LinearAgent(cfg, 8, 3, seed=1), mt.LinearAgent(cfg, 8, 3, seed=1)
    for t in range(20):
        idx, idx1 = [t % 8, (t + 3) % 8], [(t + 1) % 8]
        A = a.policy(idx, [1.0, 0.5])
        b.act(idx, [1.0, 0.5])
        b.act(idx, [1.0, 0.5], greedy=True)
        assert b.policy(idx, [1.0, 0.5]) == A
        assert a.learn(-1.0, idx1, [1.0], 0.9) and b.learn(-1.0, idx1, [1.0], 0.9)
    assert np.array_equal(a.learner.W, b.learner.W) and a.learner.s[mt.BETA] != math.log(2 ** -4)
    a.policy([0], [1.0])
    a.policy([1], [1.0])
    with pytest.raises(mt.HandoffError):
        a.learn(0.0, [1], [1.0], 0.9)
    with pytest.raises(ValueError, match="distinct"):
        a.policy([0, 0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        a.policy([8], [1.0])

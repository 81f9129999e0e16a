"""The two-tower learner (metatrace.TwoTowerAgent, docs/algorithms.md §11-§12) against
algorithms.py step by step in float64: its gradients come from the networks' own forward and
vjp with cotangents written here from §10 and §1.5 (not the learner's), its updates from
algorithms.stream_ac_step, intentional_step and ref_step; the actor's traced gradient against
float64 finite differences of log pi and H; the identities of §11-§12; save and load."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import algorithms as ref
import metatrace as mt
import nets

GAMMA, LAM = 0.99, 0.8


def towers(kind, policy, ln=False):
    """(critic, actor) of one small architecture: an MLP, or a conv net (MinAtar-like)."""
    A = 4 if policy == "gaussian" else 3
    if kind == "mlp":
        return nets.MLP(5, (6, 4), 0, layer_norm=ln), nets.MLP(5, (6, 4), A, layer_norm=ln)
    mk = lambda a: nets.make_net((2, 5, 5), ((3, 3, 1),), (5,), a, layer_norm=ln)   # noqa: E731
    return mk(0), mk(A)


def observe(net, rng):
    return rng.standard_normal(net.obs_shape)


def actor_cotangents(out, A, policy):
    """d log pi(A) and dH on the actor's outputs (column 0: its unused value output)."""
    if policy == "gaussian":
        G4, G5 = ref.gaussian_cotangents(out, A)
        glog, gH = 2.0 * G4, G5
    else:
        logits = np.asarray(out, float)
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        logpi = np.log(pi)
        glog, gH = np.eye(len(pi))[A] - pi, -pi * (logpi + -(pi * logpi).sum())
    return np.concatenate([[0.0], glog]), np.concatenate([[0.0], gH])


def reference_grads(critic, actor, wV, th, obs, A, R, obs1, gamma1, policy):
    """(grad V(S_t), grad log pi(A|S_t), grad H(S_t), grad V(S_{t+1}), delta) at (wV, th)."""
    wsV, wsP = nets.workspace(critic, np.float64, k=1), nets.workspace(actor, np.float64, k=2)
    V0, _ = nets.forward(critic, wV, obs, wsV)
    gV = nets.vjp(critic, wV, wsV, np.ones((1, 1)), np.zeros((1, len(wV))))[0]
    _, out = nets.forward(actor, th, obs, wsP)
    cot = np.stack(actor_cotangents(np.array(out), A, policy))
    gP = nets.vjp(actor, th, wsP, cot, np.zeros((2, len(th))))
    V1, gV1 = 0.0, np.zeros_like(wV)
    if gamma1:
        V1, _ = nets.forward(critic, wV, obs1, wsV)
        gV1 = nets.vjp(critic, wV, wsV, np.ones((1, 1)), np.zeros((1, len(wV))))[0]
    return gV, gP[0], gP[1], gV1, R + gamma1 * V1 - V0


def run_pair(tuner, kind, policy, steps=40, psi=0.01, ln=False, seed=0, **cfg):
    """The agent and the reference side by side for `steps` steps (episodes of 9) -> the largest
    |w_agent - w_ref| and |z_agent - z_ref| over the run."""
    critic, actor = towers(kind, policy, ln)
    c = mt.Config(tuner=tuner, psi=psi, gamma=GAMMA, lam=LAM, **cfg)
    ag = mt.TwoTowerAgent(critic, actor, c, seed=seed, dtype=np.float64, policy=policy)
    nV, W = critic.n_params, ag.learner.W
    p = ref.TowerParams(gl=GAMMA * LAM, psi=psi, alpha=c.alpha, kappa_v=c.kappa,
                        kappa_pi=c.kappa_pi, eta_v=c.eta_v, eta_pi=c.eta_pi, beta2=c.beta2)
    per_tower = mt.TUNER[tuner].two_tower
    if per_tower:
        S = ref.new_towers(nV, actor.n_params)
        S["V"]["w"], S["pi"]["w"] = W[0, :nV].copy(), W[0, nV:].copy()
    else:
        S = ref.new_state(W.shape[1], tuner, c.alpha)
        S["w"] = W[0].copy()
        pm = ref.Params(gl=GAMMA * LAM, psi=psi, mu=c.mu, norm=c.normalized)
    rng = np.random.default_rng(seed + 100)
    obs = observe(actor, rng)
    err = 0.0
    for t in range(steps):
        A = ag.policy(obs)
        obs1, R, done = observe(actor, rng), float(rng.standard_normal()), t % 9 == 8
        gamma1 = 0.0 if done else GAMMA
        wV, th = ((S["V"]["w"], S["pi"]["w"]) if per_tower else (S["w"][:nV], S["w"][nV:]))
        gV, glog, gH, gV1, delta = reference_grads(critic, actor, wV.copy(), th.copy(), obs, A, R,
                                                   obs1, gamma1, policy)
        assert ag.learn(A, R, obs1, gamma1)
        assert math.isclose(ag.delta, delta, rel_tol=1e-12, abs_tol=1e-12)
        if per_tower:
            step = ref.stream_ac_step if tuner == "stream_ac" else ref.intentional_step
            step(S, ref.TowerGrads(gV, glog, gH, delta, done), p)
            w_ref = np.concatenate([S["V"]["w"], S["pi"]["w"]])
            z_ref = np.concatenate([S["V"]["z"], S["pi"]["z"]])
        else:
            z0 = np.zeros(actor.n_params)
            g = ref.Grads(np.concatenate([gV, 0.5 * glog]), np.concatenate([0 * gV, gH]),
                          np.concatenate([gamma1 * gV1 - gV, z0]), delta)
            ref.ref_step(S, tuner, g, pm)
            if done:
                ref.end_episode(S)
            w_ref, z_ref = S["w"], S["z"]
        if done:
            ag.end_episode()
            obs = observe(actor, rng)
        else:
            obs = obs1
        scale = 1.0 + np.abs(w_ref).max()
        err = max(err, np.abs(W[0] - w_ref).max() / scale, np.abs(W[1] - z_ref).max() / scale)
    return err


@pytest.mark.parametrize("policy", ["softmax", "gaussian"])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("tuner,cfg", [("stream_ac", dict(alpha=1.0)),
                                       ("stream_ac", dict(alpha=0.5, kappa=0.5, kappa_pi=0.7)),
                                       ("intentional", {}),
                                       ("intentional", dict(eta_v=0.3, eta_pi=0.2, beta2=0.9))])
def test_two_tower_tuners_equal_their_reference(tuner, cfg, kind, policy):
    """Every step of stream_ac and intentional, on MLP and conv towers with a softmax and a
    Gaussian actor, equals algorithms.py's §11 / §12 update to 1e-12."""
    assert run_pair(tuner, kind, policy, **cfg) < 1e-12


@pytest.mark.parametrize("tuner", ["none", "scalar", "vector", "mixed", "obgd", "adaptive_obgd"])
def test_one_tuner_over_both_towers_equals_ref_step(tuner):
    """Metatrace (and untuned AC(lambda), ObGD) on two towers: w is both towers' weights, and
    every step equals algorithms.ref_step on the joined gradients (§1.5 with g^U = (grad V,
    ½ grad log pi), g^H = (0, grad H), d = (gamma grad V' - grad V, 0))."""
    cfg = dict(alpha=2.0 ** -6, mu=0.01) if tuner != "obgd" else dict(alpha=1.0)
    assert run_pair(tuner, "mlp", "softmax", **cfg) < 1e-12
    assert run_pair(tuner, "conv", "gaussian", steps=20, **cfg) < 1e-12


@pytest.mark.parametrize("policy", ["softmax", "gaussian"])
def test_actor_trace_gradient_matches_finite_differences(policy):
    """§11 A2: the actor's traced gradient is grad log pi(A|S) + psi sign(delta) grad H, checked
    against central differences of log pi and H (float64, algorithms.py's formulas)."""
    critic, actor = towers("mlp", policy)
    psi = 0.3
    ag = mt.TwoTowerAgent(critic, actor, mt.Config(tuner="stream_ac", alpha=1e-9, psi=psi),
                          seed=3, dtype=np.float64, policy=policy)
    rng = np.random.default_rng(5)
    obs, obs1 = observe(actor, rng), observe(actor, rng)
    theta = ag.learner.W[0, critic.n_params:].copy()
    A = ag.policy(obs)
    ag.learn(A, 2.0, obs1, GAMMA)
    g = ag.gradients()[1][0]
    ws = nets.workspace(actor, np.float64, k=1)

    def logpi_and_H(th):
        _, out = nets.forward(actor, th, obs, ws)
        out = np.array(out)
        if policy == "gaussian":
            return ref.gaussian_log_prob(out, A), ref.gaussian_entropy(out)
        lp = out - out.max() - np.log(np.exp(out - out.max()).sum())
        return lp[A], -(np.exp(lp) * lp).sum()
    fd = np.zeros_like(theta)
    h = 1e-6
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = h
        (lp1, H1), (lp0, H0) = logpi_and_H(theta + e), logpi_and_H(theta - e)
        fd[i] = (lp1 - lp0 + psi * np.sign(ag.delta) * (H1 - H0)) / (2 * h)
    assert ag.delta != 0.0
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    assert not g[actor.layers[-1].w_off::actor.layers[-1].fan_out].any()   # the unused V output


def test_stream_ac_with_kappa_zero_is_untuned_two_tower_ac():
    """§11 identity: kappa_V = kappa_pi = 0 never bounds the step, so stream_ac is AC(lambda)
    with step alpha on both towers: z^pi traces grad log pi + psi sign(delta) grad H.  Checked
    against algorithms.py's untuned step on two towers written as that plain rule."""
    critic, actor = towers("mlp", "softmax")
    c = mt.Config(tuner="stream_ac", alpha=0.01, kappa=0.0, kappa_pi=0.0, psi=0.05)
    ag = mt.TwoTowerAgent(critic, actor, c, seed=1, dtype=np.float64)
    nV = critic.n_params
    wV, th = ag.learner.W[0, :nV].copy(), ag.learner.W[0, nV:].copy()
    zV, zP = np.zeros_like(wV), np.zeros_like(th)
    rng = np.random.default_rng(2)
    obs = observe(actor, rng)
    for t in range(30):
        A = ag.policy(obs)
        obs1, R = observe(actor, rng), float(rng.standard_normal())
        gV, glog, gH, _, delta = reference_grads(critic, actor, wV, th, obs, A, R, obs1, GAMMA,
                                                 "softmax")
        ag.learn(A, R, obs1, GAMMA)
        zV = GAMMA * LAM * zV + gV
        zP = GAMMA * LAM * zP + glog + 0.05 * np.sign(delta) * gH
        wV, th = wV + 0.01 * delta * zV, th + 0.01 * delta * zP
        obs = obs1
    np.testing.assert_allclose(ag.learner.W[0], np.concatenate([wV, th]), rtol=0, atol=1e-12)


def test_intentional_with_adaptive_parts_off_is_the_plain_rule():
    """§12 identity: no RMSProp, no sigma, no adaptive clip and no delta normalization leave
    w <- w + eta clip(delta, -1, 1) z / ||z||^2 on each tower (their base algorithm)."""
    critic, actor = towers("mlp", "softmax")
    ag = mt.TwoTowerAgent(critic, actor, mt.Config(tuner="intentional", psi=0.02), seed=4,
                          dtype=np.float64)
    L = ag.learner
    hp = L.hyper._replace(adaptive_clip=False, rmsprop=False, sigma=False)
    L.hyper = hp
    nV = critic.n_params
    wV, th = L.W[0, :nV].copy(), L.W[0, nV:].copy()
    zV, zP = np.zeros_like(wV), np.zeros_like(th)
    rng = np.random.default_rng(6)
    obs = observe(actor, rng)
    norm_off = []
    for t in range(25):
        A = ag.policy(obs)
        obs1, R = observe(actor, rng), 3.0 * float(rng.standard_normal())
        gV, glog, gH, _, delta = reference_grads(critic, actor, wV, th, obs, A, R, obs1, GAMMA,
                                                 "softmax")
        ag.learn(A, R, obs1, GAMMA)
        dc = min(max(delta, -1.0), 1.0)
        zV = GAMMA * LAM * zV + gV
        zP = GAMMA * LAM * zP + glog + 0.02 * np.sign(delta) * gH
        wV = wV + 0.5 * dc * zV / (zV @ zV)
        norm_off.append(dc)
        # the actor still normalizes delta (P14-P15 are not an adaptive part: §12)
        j = t + 1
        abar = sum(0.9998 ** (j - 1 - i) * (1 - 0.9998) * abs(d) for i, d in enumerate(norm_off))
        th = th + 0.05 * (dc / max(abar / (1 - 0.9998 ** j), 1e-12)) * zP / (zP @ zP)
        obs = obs1
    np.testing.assert_allclose(L.W[0], np.concatenate([wV, th]), rtol=0, atol=1e-11)


@settings(max_examples=40, deadline=None)
@given(delta=st.floats(-1e4, 1e4), clip2=st.floats(0.0, 1e3), t=st.integers(1, 10**6),
       abar=st.floats(0.0, 10.0), normalize=st.booleans())
def test_delta_clip_and_normalization_both_branches(delta, clip2, t, abar, normalize):
    """I11-I13, P14-P15 in the kernel against algorithms.intentional_delta over draws that clip
    and draws that do not."""
    c = mt.Config(tuner="intentional")
    hp = mt.hyper(c)
    s = np.zeros(mt.N_SCALARS)
    s[mt.CLIP2_S], s[mt.ABAR_S] = clip2, abar
    got = mt._intentional_delta(s, hp, delta, t, normalize)
    T = dict(k=t - 1, clip_sq=1.0 if t == 1 else clip2, j=t - 1, abar=abar)
    want = ref.intentional_delta(T, delta, ref.TowerParams(gl=0.792, psi=0.0), normalize)
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300)
    assert math.isclose(s[mt.CLIP2_S], T["clip_sq"], rel_tol=1e-12)


def test_bias_corrections_by_hand():
    """§12 worked example (two steps, hand arithmetic): a one-weight linear critic and actor
    through the kernel's tower pass, with gamma lambda = 0.25, beta2 = beta_clip = beta_norm =
    0.5, C = 2, eta = 0.5: critic dw = 0.75, -0.21392654; actor 0.25, -0.16044491."""
    hp = mt.hyper(mt.Config(tuner="intentional"))._replace(
        gl=0.25, beta2=0.5, clip_mult=2.0, beta_clip=0.5, beta_norm=0.5)
    for normalize, want in ((False, (0.75, -0.21392654)), (True, (0.25, -0.16044491))):
        w, z, v, s = np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(mt.N_SCALARS)
        got = []
        for t, (x, delta) in enumerate(((2.0, 3.0), (1.0, -0.5)), start=1):
            w0 = w[0]
            mt._intentional_tower(w, z, v, np.zeros(1), np.array([x]), s, hp, delta, 0.5, t,
                                  normalize)
            got.append(w[0] - w0)
        np.testing.assert_allclose(got, want, atol=2e-8)


@pytest.mark.parametrize("tuner", ["stream_ac", "intentional", "mixed"])
def test_save_load_continues_bit_identically(tuner, tmp_path):
    """A saved TwoTowerAgent continues exactly as the original, through an episode end."""
    critic, actor = towers("conv", "softmax", ln=True)
    c = mt.Config(tuner=tuner, alpha=1.0 if tuner == "stream_ac" else 2.0 ** -8, psi=0.01)
    ag = mt.TwoTowerAgent(critic, actor, c, seed=7)
    rng = np.random.default_rng(8)
    obs = [observe(actor, rng).astype(np.float32) for _ in range(40)]
    for t in range(10):
        ag.learn(ag.policy(obs[t]), 1.0, obs[t + 1], GAMMA)
    ag.save(tmp_path / "a.npz")
    bg = mt.load(tmp_path / "a.npz")
    assert type(bg) is mt.TwoTowerAgent
    for agent in (ag, bg):
        for t in range(10, 30):
            agent.learn(agent.policy(obs[t]), 1.0, obs[t + 1], 0.0 if t == 20 else GAMMA)
            if t == 20:
                agent.end_episode()
    np.testing.assert_array_equal(ag.learner.W, bg.learner.W)
    np.testing.assert_array_equal(ag.learner.s, bg.learner.s)


def test_per_tower_tuners_refuse_one_tower():
    """stream_ac and intentional keep a state per tower: NetAgent refuses them."""
    net = nets.MLP(5, (4,), 3)
    for tuner in ("stream_ac", "intentional"):
        with pytest.raises(ValueError, match="two"):
            mt.NetAgent(net, mt.Config(tuner=tuner))


def test_float32_two_towers_track_float64():
    """The float32 kernels follow the float64 ones over 200 steps of each per-tower tuner."""
    critic, actor = towers("mlp", "gaussian")
    for tuner, alpha in (("stream_ac", 1.0), ("intentional", 1.0)):
        out = []
        for dtype in (np.float32, np.float64):
            ag = mt.TwoTowerAgent(critic, actor, mt.Config(tuner=tuner, alpha=alpha), seed=9,
                                  dtype=dtype, policy="gaussian")
            rng = np.random.default_rng(10)
            for t in range(200):
                obs = rng.standard_normal(5).astype(dtype)
                A = ag.policy(obs)
                ag.learn(A, float(rng.standard_normal()), rng.standard_normal(5).astype(dtype),
                         GAMMA)
            out.append(ag.learner.W[0].astype(np.float64))
        np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-3 * np.abs(out[1]).max())


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args,words", [
    (["--domain", "minatar-breakout", "--tuner", "stream_ac", "--towers", "1"], "--towers 2"),
    (["--domain", "mountaincar", "--tuner", "intentional"], "--towers 2"),
    (["--domain", "mountaincar", "--towers", "2"], "--towers does not apply"),
    (["--domain", "minatar-breakout", "--towers", "3"], "--towers 3"),
    (["--domain", "minatar-breakout", "--tuner", "mixed", "--kappa-pi", "2"], "--kappa-pi"),
    (["--domain", "minatar-breakout", "--tuner", "intentional", "--towers", "2", "--eta-v", "0"],
     "(0, inf)"),
    (["--domain", "minatar-breakout", "--tuner", "intentional", "--towers", "2", "--gamma", "1",
      "--lam", "1"], "gamma lam = 1"),
    (["--domain", "HalfCheetah-v5", "--minimal-actions"], "--minimal-actions does not apply")])
def test_two_tower_flags_bad_input(args, words, tmp_path):
    """One line naming the value, exit status 2, nothing written."""
    r = cli(*args, "--steps", "10", "--out", str(tmp_path / "x"), "--quiet") \
        if "mountaincar" not in args else cli(*args, "--out", str(tmp_path / "x"), "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and words in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


def test_two_tower_run_round_trip(tmp_path):
    """A two-tower run on MinAtar (minimal actions, the four stabilizers, LeakyReLU: their nets)
    finishes, records its
    settings, writes a layers.csv per tower, and its agent evaluates; the same command twice gives
    the same episodes."""
    args = ["--domain", "minatar-breakout", "--tuner", "intentional", "--towers", "2",
            "--minimal-actions", "--sparse-init", "--layer-norm", "--normalize-obs",
            "--scale-reward", "--activation", "leaky_relu", "--steps", "600", "--quiet"]
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        r = cli(*args, "--out", str(out))
        assert r.returncode == 0, r.stderr
    import json
    cfg = json.loads((outs[0] / "config.json").read_text())
    assert cfg["settings"]["towers"] == 2 and cfg["settings"]["minimal_actions"] is True
    assert cfg["settings"]["activation"] == "leaky_relu"
    assert (outs[0] / "episodes.csv").read_text() == (outs[1] / "episodes.csv").read_text()
    head = (outs[0] / "layers.csv").read_text().splitlines()[0]
    assert "beta_V.conv1_mean" in head and "beta_pi.head_mean" in head
    r = cli("evaluate", str(outs[0]), "--episodes", "2")
    assert r.returncode == 0, r.stderr


def test_sweep_grids_towers_and_activation(tmp_path):
    """A sweep takes --towers and --activation as grids; a per-tower tuner's --towers 1
    combinations are left out with a note, and it defaults to two towers."""
    r = cli("sweep", "--domain", "minatar-breakout", "--tuner", "mixed,stream_ac", "--towers",
            "1,2", "--activation", "paper,leaky_relu", "--steps", "100", "--workers", "1",
            "--out", str(tmp_path / "sw"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "--towers 1 left out for stream_ac" in r.stderr
    import json
    runs = [json.loads((d / "config.json").read_text())["settings"]
            for d in (tmp_path / "sw").iterdir() if d.is_dir()]
    got = sorted((s["tuner"], s.get("towers", 1), s.get("activation", "paper")) for s in runs)
    assert got == sorted([("mixed", 1, "paper"), ("mixed", 1, "leaky_relu"),
                          ("mixed", 2, "paper"), ("mixed", 2, "leaky_relu"),
                          ("stream_ac", 2, "paper"), ("stream_ac", 2, "leaky_relu")])


def test_fidelity_statistics_on_planted_curves():
    """docs/fidelity.py: binning by the step an episode ends at, the episode-weighted final
    score of the last 20 % of the budget, and Welch's test (identical samples: p = 1)."""
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    import fidelity
    steps = [5_000, 9_000, 10_000, 15_000, 95_000, 99_000, 100_000]
    rets = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0]
    assert fidelity.binned(steps, rets, 100_000) == [(10_000, 3, 2.0), (20_000, 1, 4.0),
                                                     (100_000, 3, 20.0)]
    rows = [dict(seed=0, bin=b, episodes=n, mean_return=m)
            for b, n, m in [(10_000, 3, 2.0), (90_000, 1, 5.0), (100_000, 3, 20.0)]]
    final, run_mean = fidelity.per_seed(rows, 100_000)[0]
    assert final == (5 + 60) / 4 and math.isclose(run_mean, (6 + 5 + 60) / 7)   # bins > 80k
    t, p, ci = fidelity.welch([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert t == 0.0 and math.isclose(p, 1.0) and ci[0] < 0 < ci[1]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-4, 1e3),
       delta=st.floats(-50.0, 50.0), kappa=st.floats(0.0, 5.0), alpha=st.floats(1e-3, 2.0))
def test_obgd_tower_kernel_both_branches(n, seed, scale, delta, kappa, alpha):
    """§11 A1-A5 in the kernel against algorithms.obgd_tower, over draws where the bound fires
    (M > 1) and where it does not (gradients from 1e-4 to 1e3 in scale)."""
    rng = np.random.default_rng(seed)
    w, z, g = rng.standard_normal(n), rng.standard_normal(n) * scale, rng.standard_normal(n) * scale
    T = dict(w=w.copy(), z=z.copy())
    step = ref.obgd_tower(T, g, delta, alpha, kappa, 0.792, False)
    s = np.zeros(mt.N_SCALARS)
    s[mt.BETA] = math.log(alpha)
    wk, zk = w.copy(), z.copy()
    mt._obgd_tower(wk, zk, g, s, delta, kappa, 0.792)
    M = s[mt.OBGD_M]
    assert math.isclose(step, alpha / M if M > 1 else alpha, rel_tol=1e-12)
    np.testing.assert_allclose(zk, T["z"], rtol=1e-14, atol=0)
    np.testing.assert_allclose(wk, T["w"], rtol=1e-12, atol=1e-12 * (1 + np.abs(T["w"]).max()))

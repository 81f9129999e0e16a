"""algorithms.py's two-tower references (docs/algorithms.md §11 Stream AC, §12 Intentional AC)
against independent computations: worked examples whose numbers came out of the authors' own
torch optimizers (streaming-drl `optim.ObGD`, Intentional_RL `optimizer.py`, run unmodified in a
venv of their own) and match the arithmetic written beside them; and the identities of §11-§12."""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

import algorithms as ref

TOL = 1e-6           # their runs were float32 torch


def tower(w, z=None):
    """One tower's state with weights w and trace z (Intentional's statistics at their start)."""
    w = np.array(w, float)
    T = ref.new_towers(len(w), 1)["V"]
    T["w"], T["z"] = w, np.zeros_like(w) if z is None else np.array(z, float)
    return T


def test_obgd_tower_worked_examples():
    """§11 A3-A5: the bound firing (M = 12), not firing (M = 0.5), exactly 1, and kappa = 0."""
    A = tower([0.1, 0.2, 0.3], [1.25, -2.5, 0.0])          # z_t = 0.792 z + g = (1, -2, 1)
    step = ref.obgd_tower(A, np.array([0.01, -0.02, 1.0]), -1.5, 1.0, 2.0, 0.792, False)
    assert math.isclose(step, 1 / 12, rel_tol=1e-12)       # M = 1 * 2 * 1.5 * 4
    np.testing.assert_allclose(A["w"], [-0.025, 0.45, 0.175], atol=TOL)
    assert math.isclose(np.abs(A["w"] - [0.1, 0.2, 0.3]).sum(), 0.5)       # = 1 / kappa
    B = tower([0.1, 0.2, 0.3])
    assert ref.obgd_tower(B, np.array([0.125, -0.0625, 0.0625]), 0.5, 1.0, 2.0, 0.792,
                          False) == 1.0                    # M = 0.5: the step is alpha
    np.testing.assert_allclose(B["w"], [0.1625, 0.16875, 0.33125], atol=TOL)
    C = tower([0.0, 0.0])
    assert ref.obgd_tower(C, np.array([0.25, -0.25]), 0.25, 1.0, 2.0, 0.792, False) == 1.0
    np.testing.assert_allclose(C["w"], [0.0625, -0.0625], atol=TOL)        # M = 1 exactly
    K0 = tower([0.1, 0.2, 0.3], [1.25, -2.5, 0.0])
    ref.obgd_tower(K0, np.array([0.01, -0.02, 1.0]), -1.5, 1.0, 0.0, 0.792, True)
    np.testing.assert_allclose(K0["w"], [-1.4, 3.2, -1.2], atol=TOL)
    assert not K0["z"].any()                               # A6: reset after a done step


def test_full_stream_ac_step_linear_critic_and_softmax_actor():
    """§11 on a linear critic V = w.x and a state-free 2-action softmax pi = softmax(theta):
    delta = -1.5, M_V = 4.5, M_pi = 6.7314609; their code gave these weights."""
    w, x, x1 = np.array([0.4, 0.2]), np.array([1.0, -0.5]), np.array([0.5, 1.0])
    theta = np.array([math.log(3.0), 0.0])
    pi = np.exp(theta) / np.exp(theta).sum()
    logpi = np.log(pi)
    H = -(pi * logpi).sum()
    for R, done in ((-1.596, False), (-1.2, True)):
        delta = R + (0.0 if done else 0.99 * w @ x1) - w @ x
        assert math.isclose(delta, -1.5, abs_tol=1e-12)
        S = ref.new_towers(2, 2)
        S["V"]["w"], S["pi"]["w"] = w.copy(), theta.copy()
        g = ref.TowerGrads(gV=x, glog=np.eye(2)[1] - pi, gH=-pi * (logpi + H), delta=delta,
                           done=done)
        ref.stream_ac_step(S, g, ref.TowerParams(gl=0.99 * 0.8, psi=0.01))
        np.testing.assert_allclose(S["V"]["w"], [0.0666667, 0.3666667], atol=TOL)
        np.testing.assert_allclose(S["pi"]["w"], [1.2652789, -0.1666667], atol=TOL)
        assert math.isclose(np.abs(S["pi"]["w"] - theta).sum(), 1 / 3, rel_tol=1e-9)
        assert (not S["V"]["z"].any() and not S["pi"]["z"].any()) == done


vec = st.lists(st.floats(-3, 3), min_size=3, max_size=3).map(np.array)


@settings(max_examples=60, deadline=None)
@given(vec, vec, vec, vec, st.floats(-4, 4), st.floats(0, 1))
def test_stream_ac_kappa_zero_is_untuned_two_tower_ac(gV, glog, gH, z0, delta, gl):
    """§11 item 5: kappa = 0 makes M = 0, so both towers take w <- w + alpha delta z."""
    S = ref.new_towers(3, 3)
    S["V"]["z"], S["pi"]["z"] = z0.copy(), -z0
    p = ref.TowerParams(gl=gl, psi=0.01, alpha=0.3, kappa_v=0.0, kappa_pi=0.0)
    g = ref.TowerGrads(gV, glog, gH, delta)
    assert ref.stream_ac_step(S, g, p) == (0.3, 0.3)
    np.testing.assert_allclose(S["V"]["w"], 0.3 * delta * (gl * z0 + gV), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(S["pi"]["w"], 0.3 * delta * (
        gl * -z0 + glog + 0.01 * np.sign(delta) * gH), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(vec, vec, st.floats(-50, 50), st.floats(0.1, 4), st.floats(0.01, 10))
def test_obgd_tower_change_is_at_most_one_over_kappa(grad, z0, delta, kappa, alpha):
    """§11 item 6: ||Delta w||_1 = min(alpha |delta| ||z||_1, |delta| / (kappa max(|delta|, 1)))
    <= 1 / kappa."""
    T = tower(np.zeros(3), z0)
    ref.obgd_tower(T, grad, delta, alpha, kappa, 0.5, False)
    z1 = np.abs(0.5 * z0 + grad).sum()
    expect = min(alpha * abs(delta) * z1, abs(delta) / (kappa * max(abs(delta), 1.0)))
    assert math.isclose(np.abs(T["w"]).sum(), expect, rel_tol=1e-9, abs_tol=1e-12)
    assert np.abs(T["w"]).sum() <= 1 / kappa * (1 + 1e-12)


def test_intentional_bias_corrections_by_hand():
    """§12 on one weight, V = w x: gamma lambda 0.25, eta 0.5, beta2 0.5, C 2, beta_clip 0.5,
    beta_norm 0.5; steps (x, delta) = (2, 3), (1, -0.5).  By hand (t = 1): d = 2, n = m = 2,
    sigma = 1.5, sigma-hat = 2, u = 2, alpha = 0.25, cap = 2 sqrt(10) > 3: critic step 0.75;
    actor delta-tilde = 3 / 3 = 1: step 0.25.  Their optimizer gave the same, and at t = 2
    -0.2139265421 (critic) and -0.1604449065 (actor)."""
    p = ref.TowerParams(gl=0.25, psi=0.0, eta_v=0.5, eta_pi=0.5, beta2=0.5, clip_mult=2.0,
                        beta_clip=0.5, beta_norm=0.5)
    S = ref.new_towers(1, 1)
    steps = []
    for x, delta in ((2.0, 3.0), (1.0, -0.5)):
        before = S["V"]["w"][0], S["pi"]["w"][0]
        g = ref.TowerGrads(np.array([x]), np.array([x]), np.zeros(1), delta)
        alphas = ref.intentional_step(S, g, p)
        steps.append((S["V"]["w"][0] - before[0], S["pi"]["w"][0] - before[1], alphas))
    (v1, p1, a1), (v2, p2, a2) = steps
    assert math.isclose(a1[0], 0.25, rel_tol=1e-7) and math.isclose(a2[0], 0.40338376, rel_tol=1e-7)
    assert math.isclose(v1, 0.75, rel_tol=1e-7) and math.isclose(p1, 0.25, rel_tol=1e-7)
    assert math.isclose(v2, -0.2139265421, rel_tol=1e-8)
    assert math.isclose(p2, -0.1604449065, rel_tol=1e-8)
    assert S["V"]["sigma"] == S["pi"]["sigma"] and S["V"]["k"] == 2 and S["V"]["j"] == 0


def test_intentional_clip_fires():
    """I11-I13 with C = 1, beta_clip = 0.5 (the EMA starts at 1): delta 0 then 10 ->
    cap 1 then sqrt(50.25 / 0.75) = sqrt(67)."""
    p = ref.TowerParams(gl=0.0, psi=0.0, clip_mult=1.0, beta_clip=0.5)
    T = ref.new_towers(1, 1)["V"]
    assert ref.intentional_delta(T, 0.0, p, False) == 0.0
    assert math.isclose(ref.intentional_delta(T, 10.0, p, False), math.sqrt(67), rel_tol=1e-12)
    T = ref.new_towers(1, 1)["V"]                          # the actor's first delta-tilde is +-1
    assert ref.intentional_delta(T, -0.3, ref.TowerParams(gl=0.0, psi=0.0), True) == -1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(vec, st.floats(-3, 3), st.booleans()), min_size=1, max_size=6),
       st.floats(0, 0.99))
def test_intentional_with_every_adaptive_part_off_is_the_plain_rule(steps, gl):
    """§12 item 1: no RMSProp, no sigma, no adaptive clip (critic: no normalization) gives
    z <- gl z + g; w <- w + eta clip(delta, -1, 1) z / max(||z||^2, 1e-8); z <- 0 after done."""
    p = ref.TowerParams(gl=gl, psi=0.0, rmsprop=False, sigma=False, adaptive_clip=False)
    T = ref.new_towers(3, 1)["V"]
    w, z = np.zeros(3), np.zeros(3)
    for g, delta, done in steps:
        ref.intentional_tower(T, g, delta, 0.5, p, False, done)
        z = gl * z + g
        w = w + 0.5 * min(max(delta, -1.0), 1.0) * z / max(float(z @ z), 1e-8)
        z = np.zeros(3) if done else z
        np.testing.assert_allclose(T["w"], w, rtol=1e-12, atol=1e-12)


def test_intentional_td_reduces_the_error_by_eta_at_lambda_zero():
    """§12: with lambda = 0 and a linear critic, the full rule (RMSProp, sigma, clip) changes
    V(S_t) by exactly eta_V delta-tilde at every step (sigma-hat = n_t = m_t there)."""
    rng = np.random.default_rng(0)
    p = ref.TowerParams(gl=0.0, psi=0.0)
    T = ref.new_towers(7, 1)["V"]
    T["w"] = rng.standard_normal(7)
    for _ in range(20):
        x, delta = rng.standard_normal(7), float(rng.standard_normal())
        before = T["w"] @ x
        ref.intentional_tower(T, x, delta, 0.5, p, False, False)
        assert math.isclose(T["w"] @ x - before, 0.5 * delta, rel_tol=1e-9, abs_tol=1e-12)

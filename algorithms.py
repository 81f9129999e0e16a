"""Algorithms 1-3, SID-R, NOSID-R, untuned AC(lambda), ObGD, and on two towers Stream AC and
Intentional AC, as plain NumPy: the readable definition.

A literal, dense transcription of docs/algorithms.md §2-5, §9 and §11-§12: one function per
algorithm, every per-weight quantity a full vector, and every line of an algorithm box one line
here with its label (S1-S9, V1-V9, M1-M11, N1-N2, O1-O6, A1-A6, I1-I14, P14-P15), with no shared
offsets, active lists or lazy decay.  It is slow and it is the reference: the Numba kernels of
metatrace.py are tested against it (tests/test_sparse_vs_dense.py, tests/test_flat_layer_norm.py,
tests/test_obgd.py); the two-tower functions, which have no kernels yet, are tested against
their authors' numbers (tests/test_two_tower_reference.py).  `linear_grads` gives the
linear-softmax model's gradients (§1.4).

A step takes the state S (`new_state`, `new_towers`), the step's facts `Grads` (`TowerGrads`)
and the hyper-parameters `Params` (`TowerParams`); it updates S in place and returns the
step-size it applied.
"""
from typing import NamedTuple

import numpy as np


class Grads(NamedTuple):
    """One step's facts at w_t (§1.5): g^U, g^H, d = grad delta, delta, ||g^V||^2 (NOSID-R), and
    whether a layer norm at S_t is flat (§2.5)."""
    gU: np.ndarray
    gH: np.ndarray
    d: np.ndarray
    delta: float
    gV2: float = 0.0
    flat: bool = False


class Params(NamedTuple):
    """Hyper-parameters (§1.1, §2, §4, §9): gl = gamma lambda."""
    gl: float
    psi: float
    mu: float = 0.0
    norm: bool = True
    nosid_bound: bool = True
    kappa: float = 2.0
    beta2: float = 0.999


def new_state(n, tuner, alpha0):
    """§2.0 state table, initial values."""
    vec = tuner in ("vector", "mixed")
    return dict(w=np.zeros(n), z=np.zeros(n), h=np.zeros(n), hv=np.zeros(n),
                beta=np.log(alpha0), bvec=np.full(n, np.log(alpha0) if tuner == "vector" else 0.0),
                v=0.0, vvec=np.zeros(n), zb=0.0, zbvec=np.zeros(n), u=0.0, nmax=0.0, vec=vec, t=0)


def trace(S, g, p):
    """§2.0 step 2: z_t = gamma lambda z_{t-1} + g^U_t."""
    return p.gl * S["z"] + g.gU


def update(S, alpha, z, g, p, h=True, hv=False):
    """S8-S9 / V8-V9 / M9-M11 with the step-size alpha (scalar or per weight) -> alpha."""
    if hv:
        S["hv"] = S["hv"] + alpha * (z * (g.delta + g.d * S["hv"]) + p.psi * g.gH)  # V8 / M9
    if h:
        S["h"] = S["h"] + alpha * (z * (g.delta + g.d @ S["h"]) + p.psi * g.gH)     # S8 / M10
    S["w"] = S["w"] + alpha * (g.delta * z + p.psi * g.gH)                           # S9 / V9 / M11
    S["z"] = z
    return alpha


def running_max(v, a, mu):
    """S3 / V3 / M5: v <- max(|a|, v + mu (|a| - v)), element-wise."""
    return np.maximum(np.abs(a), v + mu * (np.abs(a) - v))


def bound(S, x, gl):
    """S5-S6 / V5-V6 / M7: u <- max(x, u + (1 - gl)(x - u)) -> log M = log max(u, 1)."""
    S["u"] = max(x, S["u"] + (1 - gl) * (x - S["u"]))
    return np.log(max(S["u"], 1.0))


def none_step(S, g, p):
    """§5: AC(lambda) with the fixed alpha = e^beta."""
    return update(S, np.exp(S["beta"]), trace(S, g, p), g, p, h=False)


def scalar_step(S, g, p):
    """Algorithm 1, Scalar Metatrace, S1-S9 (§2.1; §2.5 on a flat step)."""
    z = trace(S, g, p)
    S["zb"] = p.gl * S["zb"] + g.gU @ S["h"]                              # S1
    D = g.delta * S["zb"] + p.psi * (g.gH @ S["h"])                       # S2
    if not p.norm:
        S["beta"] += p.mu * D                                            # S4, unnormalized
        return update(S, np.exp(S["beta"]), z, g, p)                     # S7-S9
    S["v"] = running_max(S["v"], D, p.mu)                                # S3
    S["beta"] += p.mu * D / S["v"] if S["v"] > 0 else 0.0                # S4
    x = np.exp(S["beta"]) * (g.gU @ g.gU)                                # S5
    if g.flat:
        return update(S, np.exp(S["beta"]) / max(x, 1.0), z, g, p)       # §2.5
    S["beta"] -= bound(S, x, p.gl)                                       # S5-S6
    return update(S, np.exp(S["beta"]), z, g, p)                         # S7-S9


def vector_step(S, g, p):
    """Algorithm 2, Vector Metatrace, V1-V9 (§2.2; §2.5 on a flat step)."""
    z = trace(S, g, p)
    S["zbvec"] = p.gl * S["zbvec"] + g.gU * S["hv"]                       # V1
    Dv = g.delta * S["zbvec"] + p.psi * g.gH * S["hv"]                    # V2
    if not p.norm:
        S["bvec"] += p.mu * Dv                                           # V4, unnormalized
        return update(S, np.exp(S["bvec"]), z, g, p, h=False, hv=True)   # V7-V9
    S["vvec"] = running_max(S["vvec"], Dv, p.mu)                         # V3
    pos = S["vvec"] > 0
    S["bvec"][pos] += p.mu * Dv[pos] / S["vvec"][pos]                    # V4
    x = np.exp(S["bvec"]) @ (g.gU ** 2)                                  # V5
    if g.flat:
        return update(S, np.exp(S["bvec"]) / max(x, 1.0), z, g, p, h=False, hv=True)  # §2.5
    S["bvec"] -= bound(S, x, p.gl)                                       # V5-V6: every beta_i
    return update(S, np.exp(S["bvec"]), z, g, p, h=False, hv=True)       # V7-V9


def mixed_step(S, g, p):
    """Algorithm 3, Mixed Metatrace, M1-M11 (§2.3; §2.5 on a flat step): alpha_i =
    exp(beta-hat + beta_i), with S["beta"] = beta-hat and S["bvec"] = beta-vec."""
    z = trace(S, g, p)
    S["zbvec"] = p.gl * S["zbvec"] + g.gU * S["hv"]                       # M1
    S["zb"] = p.gl * S["zb"] + g.gU @ S["h"]                              # M2
    Dv = g.delta * S["zbvec"] + p.psi * g.gH * S["hv"]                    # M3
    D = g.delta * S["zb"] + p.psi * (g.gH @ S["h"])                       # M4
    if not p.norm:
        S["bvec"] += p.mu * Dv                                           # M6, unnormalized
        S["beta"] += p.mu * D
        return update(S, np.exp(S["beta"] + S["bvec"]), z, g, p, hv=True)    # M8-M11
    S["vvec"] = running_max(S["vvec"], Dv, p.mu)                         # M5: v-vec
    S["v"] = running_max(S["v"], D, p.mu)                                # M5: v-hat
    pos = S["vvec"] > 0
    S["bvec"][pos] += p.mu * Dv[pos] / S["vvec"][pos]                    # M6: beta-vec
    S["beta"] += p.mu * D / S["v"] if S["v"] > 0 else 0.0                # M6: beta-hat
    x = np.exp(S["beta"] + S["bvec"]) @ (g.gU ** 2)                      # M7: x
    if g.flat:
        return update(S, np.exp(S["beta"] + S["bvec"]) / max(x, 1.0), z, g, p, hv=True)  # §2.5
    S["beta"] -= bound(S, x, p.gl)                                       # M7: beta-hat only
    return update(S, np.exp(S["beta"] + S["bvec"]), z, g, p, hv=True)    # M8-M11


def sid_step(S, g, p):
    """SID-R (§4.2): unnormalized scalar Metatrace without the meta trace."""
    z = trace(S, g, p)
    D = g.delta * (z @ S["h"]) + p.psi * (g.gH @ S["h"])
    S["beta"] += p.mu * D
    return update(S, np.exp(S["beta"]), z, g, p)


def nosid_step(S, g, p):
    """NOSID-R (§4.3): SID-R with N1, the hard maximum of ||g^V||^2, and N2, the alpha bound."""
    z = trace(S, g, p)
    D = g.delta * (z @ S["h"]) + p.psi * (g.gH @ S["h"])
    S["nmax"] = max(S["nmax"], g.gV2)                                    # N1
    if S["nmax"] > 0:
        S["beta"] += p.mu * D / S["nmax"]
    zd = z @ g.d
    if p.nosid_bound and zd != 0:
        S["beta"] = min(S["beta"], -np.log(abs(zd)))                     # N2
    return update(S, np.exp(S["beta"]), z, g, p)


def obgd_step(S, g, p, adaptive=False):
    """ObGD and adaptive ObGD (§9, O1-O6) -> the step-size of O4."""
    S["t"] += 1
    z = trace(S, g, p)                                                   # O1
    scale = np.ones_like(z)
    if adaptive:
        S["vvec"] = p.beta2 * S["vvec"] + (1 - p.beta2) * (g.delta * z) ** 2     # O5
        vhat = S["vvec"] / (1 - p.beta2 ** S["t"])                       # O6
        scale = 1 / np.sqrt(vhat + 1e-8)
    alpha = np.exp(S["beta"])
    delta_bar = max(abs(g.delta), 1.0)                                   # O2
    M = alpha * p.kappa * delta_bar * np.abs(z * scale).sum()            # O3
    step = alpha / M if M > 1 else alpha
    S["w"] = S["w"] + step * (g.delta * z + p.psi * g.gH) * scale        # O4
    S["z"] = z
    return step


STEPS = {"none": none_step, "scalar": scalar_step, "vector": vector_step, "mixed": mixed_step,
         "sid": sid_step, "nosid": nosid_step, "obgd": obgd_step,
         "adaptive_obgd": lambda S, g, p: obgd_step(S, g, p, adaptive=True)}


def ref_step(S, tuner, g, p):
    """One step of `tuner` (§2.0 steps 2-7) -> the step-size it applied."""
    return STEPS[tuner](S, g, p)


def end_episode(S):
    """§2.0 step 8."""
    S["z"][:] = 0.0
    S["zbvec"][:] = 0.0
    S["zb"] = 0.0
    S["u"] = 0.0


def linear_grads(w, nf, nA, phi, A, phi1, gamma1):
    """§1.4 closed forms on dense features: V, pi, H, g^U, g^H, d."""
    th, Th = w[:nf], w[nf:].reshape(nA, nf)
    V = th @ phi
    l = Th @ phi
    l = l - l.max()
    logpi = l - np.log(np.exp(l).sum())
    pi = np.exp(logpi)
    H = -(pi * logpi).sum()
    e = np.zeros(nA)
    e[A] = 1.0
    gU = np.concatenate([phi, np.outer(0.5 * (e - pi), phi).ravel()])
    gH = np.concatenate([np.zeros(nf), np.outer(-pi * (logpi + H), phi).ravel()])
    d = np.concatenate([gamma1 * phi1 - phi, np.zeros(nA * nf)])
    return V, pi, H, gU, gH, d


def delta_of(w, nf, phi, R, phi1, gamma1):
    """delta_t(w) = R + gamma1 V_w(S_{t+1}) - V_w(S_t) (docs/algorithms.md §1.1)."""
    return R + gamma1 * (w[:nf] @ phi1) - w[:nf] @ phi


SIGMA_MIN = 1e-3        # §10 G1


def gaussian_head(out):
    """§10 G1-G2: mean mu, std sigma = SIGMA_MIN + softplus(rho) and dsigma/drho of the outputs
    (mu, rho) of a Gaussian policy's head."""
    d = len(out) // 2
    mu, rho = np.asarray(out[:d], float), np.asarray(out[d:2 * d], float)
    return mu, SIGMA_MIN + np.logaddexp(0.0, rho), 1.0 / (1.0 + np.exp(-rho))


def gaussian_entropy(out):
    """§10 G2: H = sum_i log sigma_i + ½ log(2 pi e)."""
    _, sigma, _ = gaussian_head(out)
    return float(np.sum(np.log(sigma) + 0.5 * np.log(2 * np.pi * np.e)))


def gaussian_log_prob(out, a):
    """§10 G3: log pi(a|s) = sum_i -½ ((a_i - mu_i) / sigma_i)^2 - log sigma_i - ½ log 2 pi."""
    mu, sigma, _ = gaussian_head(out)
    x = (np.asarray(a, float) - mu) / sigma
    return float(np.sum(-0.5 * x ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)))


def gaussian_cotangents(out, a):
    """§10 G4-G5: d(½ log pi(a))/d(mu, rho) and dH/d(mu, rho)."""
    mu, sigma, dsigma = gaussian_head(out)
    x = (np.asarray(a, float) - mu) / sigma
    G4 = np.concatenate([0.5 * x / sigma, 0.5 * (x ** 2 - 1.0) / sigma * dsigma])
    G5 = np.concatenate([np.zeros_like(mu), dsigma / sigma])
    return G4, G5


# ------------------------------------------------------------------------------------------------
# Two towers (§11, §12): the critic's weights w and the actor's theta are separate networks, each
# with its own trace and step-size state.  TowerGrads holds one step's facts at (w_t, theta_t).
# ------------------------------------------------------------------------------------------------

class TowerGrads(NamedTuple):
    """One two-tower step's facts: gV = grad_w V(S_t), glog = grad_theta log pi(A_t|S_t),
    gH = grad_theta H(S_t), delta, and whether S_{t+1} ends the episode (traces reset after)."""
    gV: np.ndarray
    glog: np.ndarray
    gH: np.ndarray
    delta: float
    done: bool = False


class TowerParams(NamedTuple):
    """Hyper-parameters of §11-§12 (defaults: the authors' scripts): gl = gamma lambda."""
    gl: float
    psi: float
    alpha: float = 1.0
    kappa_v: float = 2.0
    kappa_pi: float = 3.0
    eta_v: float = 0.5
    eta_pi: float = 0.05
    beta2: float = 0.999
    clip_mult: float = 20.0
    beta_clip: float = 0.9998
    beta_norm: float = 0.9998
    adaptive_clip: bool = True
    rmsprop: bool = True
    sigma: bool = True


def new_towers(n_v, n_pi):
    """§11-§12 state of both towers: weights, traces, and per tower Intentional's statistics."""
    def tower(n):
        return dict(w=np.zeros(n), z=np.zeros(n), v=np.zeros(n), t=0, sigma=0.0, k=0,
                    clip_sq=1.0, j=0, abar=0.0)
    return dict(V=tower(n_v), pi=tower(n_pi))


def actor_gradient(g, p):
    """A2 (and §12 psi_t): the actor's traced gradient, grad log pi + psi sign(delta) grad H."""
    return g.glog + p.psi * np.sign(g.delta) * g.gH


def obgd_tower(T, grad, delta, alpha, kappa, gl, done):
    """A1-A5 on one tower: z <- gl z + grad; step = alpha / max(alpha kappa max(|delta|, 1)
    ||z||_1, 1); w <- w + step delta z; z <- 0 after a done step -> step."""
    T["z"] = gl * T["z"] + grad                                          # A1 / A2
    M = alpha * kappa * max(abs(delta), 1.0) * np.abs(T["z"]).sum()      # A3
    step = alpha / M if M > 1 else alpha                                 # A4
    T["w"] = T["w"] + step * delta * T["z"]                              # A5
    if done:
        T["z"] = np.zeros_like(T["z"])                                   # A6
    return step


def stream_ac_step(S, g, p):
    """Stream AC(lambda) as its authors run it (§11): ObGD on each tower with its own kappa ->
    (critic step, actor step)."""
    return (obgd_tower(S["V"], g.gV, g.delta, p.alpha, p.kappa_v, p.gl, g.done),
            obgd_tower(S["pi"], actor_gradient(g, p), g.delta, p.alpha, p.kappa_pi, p.gl, g.done))


def intentional_delta(T, delta, p, normalize):
    """I11-I13 / P11-P15: delta clipped by C times its bias-corrected RMS (or to [-1, 1]) and, for
    the actor, divided by the bias-corrected mean of its magnitude."""
    if p.adaptive_clip:
        T["k"] += 1
        T["clip_sq"] = p.beta_clip * T["clip_sq"] + (1 - p.beta_clip) * delta ** 2     # I11
        cap = p.clip_mult * np.sqrt(T["clip_sq"] / (1 - p.beta_clip ** T["k"]))       # I12
        dc = np.copysign(min(abs(delta), cap), delta)                               # I13
    else:
        dc = min(max(delta, -1.0), 1.0)
    if not normalize:
        return dc
    T["j"] += 1
    T["abar"] = p.beta_norm * T["abar"] + (1 - p.beta_norm) * abs(dc)                # P14
    return dc / max(T["abar"] / (1 - p.beta_norm ** T["j"]), 1e-12)                # P15


def intentional_tower(T, grad, delta, eta, p, normalize, done):
    """I1-I14 (critic) / P1-P16 (actor) on one tower -> its step-size alpha_t."""
    T["t"] += 1                                                                      # I1
    if p.rmsprop:
        T["v"] = p.beta2 * T["v"] + (1 - p.beta2) * grad ** 2                       # I2
        d = np.sqrt(T["v"] / (1 - p.beta2 ** T["t"])) + 1e-8                         # I3
    else:
        d = np.ones_like(grad)
    n = float(np.sum(grad ** 2 / d))                                                 # I4
    T["z"] = p.gl * T["z"] + grad                                                    # I5
    m = float(np.sum(T["z"] ** 2 / d))                                               # I6
    if p.sigma:
        T["sigma"] += (1 - p.gl) * (n - T["sigma"])                                  # I7
        u = np.sqrt(T["sigma"] / (1 - p.gl ** T["t"]) * m)                           # I8-I9
    else:
        u = m                                                    # their base rule: ||z||^2
    alpha = eta / max(u, 1e-8)                                                       # I10
    T["w"] = T["w"] + alpha * intentional_delta(T, delta, p, normalize) * T["z"] / d  # I14
    if done:
        T["z"] = np.zeros_like(T["z"])
    return alpha


def intentional_step(S, g, p):
    """Intentional AC (§12): Intentional TD on the critic, Intentional policy gradient (delta
    normalized) on the actor, both from the same raw delta -> (critic alpha, actor alpha)."""
    return (intentional_tower(S["V"], g.gV, g.delta, p.eta_v, p, False, g.done),
            intentional_tower(S["pi"], actor_gradient(g, p), g.delta, p.eta_pi, p, True, g.done))

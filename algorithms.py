"""Algorithms 1-3, SID-R, NOSID-R, untuned AC(lambda) and ObGD, as plain NumPy: the readable definition.

A literal, dense transcription of docs/algorithms.md §2-5 and §9: one function per algorithm,
every per-weight quantity a full vector, and every line of an algorithm box one line here with
its label (S1-S9, V1-V9, M1-M11, N1-N2, O1-O6), with no shared offsets, active lists or lazy
decay.  It is slow and it is the reference: the Numba kernels of metatrace.py are tested against
it (tests/test_sparse_vs_dense.py, tests/test_flat_layer_norm.py, tests/test_obgd.py).
`linear_grads` gives the linear-softmax model's gradients (§1.4).

A step takes the state S (`new_state`), the step's facts `Grads` and the hyper-parameters
`Params`; it updates S in place and returns the step-size it applied.
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

"""Algorithms 1-3, SID-R, NOSID-R, untuned AC(lambda) and ObGD, as plain NumPy: the readable definition.

A literal, dense transcription of docs/algorithms.md §2.0-2.3 and §4-5: every per-weight quantity
is a full vector and every line of the algorithm boxes is one labelled line here (S1-S9, V1-V9,
M1-M11, N1-N2, O1-O6), with no shared offsets, active lists or lazy decay.  It is slow and it is the
reference: the Numba kernels of metatrace.py are tested against it (tests/test_sparse_vs_dense.py,
tests/test_metatrace.py).  `linear_grads` gives the linear-softmax model's gradients (§1.4).
"""
import numpy as np


def new_state(n, tuner, alpha0):
    """§2.0 state table, initial values."""
    vec = tuner in ("vector", "mixed")
    return dict(w=np.zeros(n), z=np.zeros(n), h=np.zeros(n), hv=np.zeros(n),
                beta=np.log(alpha0), bvec=np.full(n, np.log(alpha0) if tuner == "vector" else 0.0),
                v=0.0, vvec=np.zeros(n), zb=0.0, zbvec=np.zeros(n), u=0.0, nmax=0.0, vec=vec, t=0)


def obgd_step(S, adaptive, gU, gH, delta, gl, psi, kappa, beta2=0.999, eps=1e-8):
    """ObGD and adaptive ObGD, docs/algorithms.md §9 O1-O6 -> the step-size of O4."""
    S["t"] += 1
    z = gl * S["z"] + gU                                       # O1
    scale = np.ones_like(z)
    if adaptive:
        S["vvec"] = beta2 * S["vvec"] + (1 - beta2) * (delta * z) ** 2     # O5
        vhat = S["vvec"] / (1 - beta2 ** S["t"])               # O6
        scale = 1 / np.sqrt(vhat + eps)
    alpha = np.exp(S["beta"])
    delta_bar = max(abs(delta), 1.0)                           # O2
    M = alpha * kappa * delta_bar * np.abs(z * scale).sum()    # O3
    step = alpha / M if M > 1 else alpha
    S["w"] = S["w"] + step * (delta * z + psi * gH) * scale    # O4
    S["z"] = z
    return step


def ref_step(S, tuner, norm, gU, gH, d, delta, gV2, gl, psi, mu, nosid_bound=True, kappa=2.0,
             beta2=0.999, flat=False):
    """One step, docs/algorithms.md §2.0 steps 2-7 (Algorithms 1-3, SID-R, NOSID-R, untuned, ObGD);
    flat: a layer norm of this step is in its eps regime (§2.5: S5-S6 bound this step's alpha only)."""
    if tuner in ("obgd", "adaptive_obgd"):
        return obgd_step(S, tuner == "adaptive_obgd", gU, gH, delta, gl, psi, kappa, beta2)
    z = gl * S["z"] + gU                                       # step 2
    h, hv = S["h"], S["hv"]
    if tuner == "none":
        alpha = np.exp(S["beta"])
    elif tuner == "scalar":
        S["zb"] = gl * S["zb"] + gU @ h                        # S1
        D = delta * S["zb"] + psi * (gH @ h)                   # S2
        if norm:
            S["v"] = max(abs(D), S["v"] + mu * (abs(D) - S["v"]))      # S3
            S["beta"] += mu * D / S["v"] if S["v"] > 0 else 0.0        # S4
            x = np.exp(S["beta"]) * (gU @ gU)                  # S5
            if flat:
                return _flat_step(S, "scalar", x, z, gH, d, delta, psi)   # §2.5
            S["u"] = max(x, S["u"] + (1 - gl) * (x - S["u"]))
            S["beta"] -= np.log(max(S["u"], 1.0))              # S6
        else:
            S["beta"] += mu * D
        alpha = np.exp(S["beta"])                              # S7
    elif tuner in ("sid", "nosid"):
        D = delta * (z @ h) + psi * (gH @ h)
        if tuner == "sid":
            S["beta"] += mu * D
        else:
            S["nmax"] = max(S["nmax"], gV2)
            if S["nmax"] > 0:
                S["beta"] += mu * D / S["nmax"]
            zd = z @ d
            if nosid_bound and zd != 0:
                S["beta"] = min(S["beta"], -np.log(abs(zd)))
        alpha = np.exp(S["beta"])
    else:  # vector, mixed
        S["zbvec"] = gl * S["zbvec"] + gU * hv                 # V1 / M1
        Dv = delta * S["zbvec"] + psi * gH * hv                # V2 / M3
        if tuner == "mixed":
            S["zb"] = gl * S["zb"] + gU @ h                    # M2
            D = delta * S["zb"] + psi * (gH @ h)               # M4
        if norm:
            S["vvec"] = np.maximum(np.abs(Dv), S["vvec"] + mu * (np.abs(Dv) - S["vvec"]))  # V3 / M5
            pos = S["vvec"] > 0
            S["bvec"][pos] += mu * Dv[pos] / S["vvec"][pos]    # V4 / M6
            if tuner == "mixed":
                S["v"] = max(abs(D), S["v"] + mu * (abs(D) - S["v"]))
                S["beta"] += mu * D / S["v"] if S["v"] > 0 else 0.0
            shared = S["beta"] if tuner == "mixed" else 0.0
            x = np.exp(shared + S["bvec"]) @ (gU ** 2)         # V5 / M7
            if flat:
                return _flat_step(S, tuner, x, z, gH, d, delta, psi)      # §2.5
            S["u"] = max(x, S["u"] + (1 - gl) * (x - S["u"]))
            if tuner == "mixed":
                S["beta"] -= np.log(max(S["u"], 1.0))          # M7: beta-hat only
            else:
                S["bvec"] -= np.log(max(S["u"], 1.0))          # V6: every component
        else:
            S["bvec"] += mu * Dv
            if tuner == "mixed":
                S["beta"] += mu * D
        alpha = np.exp((S["beta"] if tuner == "mixed" else 0.0) + S["bvec"])   # V7 / M8
    return _apply(S, tuner, alpha, z, gH, d, delta, psi)


def _flat_step(S, tuner, x, z, gH, d, delta, psi):
    """§2.5: a step whose layer norm is in its eps regime moves with alpha / max(x, 1), where x is
    S5's effective step-size; u and beta keep their values after S4 / V4 / M6."""
    shared = S["beta"] if tuner in ("scalar", "mixed") else 0.0
    alpha = np.exp(shared + (S["bvec"] if S["vec"] else 0.0)) / max(x, 1.0)
    return _apply(S, tuner, alpha, z, gH, d, delta, psi)


def _apply(S, tuner, alpha, z, gH, d, delta, psi):
    """S7-S9 / V7-V9 / M8-M11 with the step-size alpha: h and w."""
    h, hv = S["h"], S["hv"]
    upd = delta * z + psi * gH
    if tuner in ("vector", "mixed"):
        S["hv"] = hv + alpha * (z * (delta + d * hv) + psi * gH)          # V8 / M9
    if tuner in ("scalar", "mixed", "sid", "nosid"):
        S["h"] = h + alpha * (z * (delta + d @ h) + psi * gH)             # S8 / M10
    S["w"] = S["w"] + alpha * upd                                          # S9 / V9 / M11
    S["z"] = z
    return alpha


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

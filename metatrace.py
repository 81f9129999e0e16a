"""AC(lambda) with Metatrace step-size tuning (Young, Wang & Taylor 2018); spec: ALGORITHMS.md.

One tuner serves every function approximator.  A model hands it the gradients (g^U, g^H,
d = grad delta) and scalars (delta, ||g^V||^2); the tuner applies steps 2-7 of spec §2.0 for the
chosen tuner and updates the weights.  `linear_step` is the linear-softmax model of spec §1.4 on
sparse features (`tuner_step`); the Numba network of `nets.py` (`NetAgent`) hands `dense_step` its
gradients in blocks, its largest dense layer's as outer products that are never materialized.
Both share the scalar lines (`_meta_scalars`); the per-weight loop bodies exist once per form.

Tuners (spec §2, §4, §5):
    none    plain AC(lambda) with fixed alpha = exp(log alpha0)
    scalar  Scalar Metatrace, Algorithm 1 (normalized unless norm=False)
    vector  Vector Metatrace, Algorithm 2
    mixed   Mixed Metatrace, Algorithm 3
    sid     SID-R, a reconstruction of Dabney's SID adapted to AC(lambda) (spec §4.2)
    nosid   NOSID-R, a reconstruction of NOSID (spec §4.3; weakly supported)

State (`Learner`): W is an (8, n) array whose rows are
    w    all weights (critic then actor)          z    AC(lambda) trace
    h    scalar sensitivity h, or mixed h-hat     hv   per-weight sensitivity h-vec
    eb   exp(bv), bv the per-weight part of beta  vv   normalizer v-vec
    zbv  per-weight meta trace z^beta-vec         (row 7 is unused padding)
and `s` holds the scalars beta (or beta-hat), v (or v-hat), z^beta (or z^beta-hat), u, the NOSID
hard maximum, and the step counter.  The vector tuner keeps beta_i = beta + bv_i with a shared
offset beta, so the normalization of V6 (subtract log M from every beta_i) is one scalar update;
the mixed tuner's beta-hat plays the same role (M7).  alpha_i = exp(beta) eb_i in both.
The per-weight part is stored as eb_i = exp(bv_i), not bv_i: V4 / M6 become
eb_i <- eb_i exp(mu Delta_i / v_i), and the normalized tuners' |mu Delta_i / v_i| <= mu makes that
exponential a short polynomial (float32, mu <= 2^-4).  In float32 the rounding error per step is
the same either way (one ulp of eb_i is a relative error, as one ulp of bv_i ~ 1 is an absolute
one), and no per-weight exp is left on the hot path.  `Learner.beta_vec()` returns bv = log eb.

Sparsity (linear features): only weights touched by g^U or g^H during the current episode can have
non-zero trace, so the per-weight loop runs over that "active" list.  The one per-weight update
that touches every weight on every step is the decay of v-vec when Delta_i = 0 (spec §2.2 note);
it is applied lazily, v_i *= (1 - mu)^k, when weight i becomes active again.  `dense=True` runs
`dense_step` over every index instead (one materialized block).

Network (`NetAgent`), per agent step on the Atari net (681,027 weights, float32): the per-weight
passes read and write 2 (none), 3 (scalar), 6 (vector) or 7 (mixed) state rows, 11-49 MB a step;
they are bound by instructions when that state is in cache and by memory when it is not
(`bench_tuner` measures both against the memory floor; README "Performance").
"""
import math
import time
from typing import NamedTuple

import numba as nb
import numpy as np

from envs import drift_flip, first_flip, linear_features, mc_reset, mc_step
from nets import _A, _exp, _forward, _vjp

TUNERS = ("none", "scalar", "vector", "mixed", "sid", "nosid")
NONE, SCALAR, VECTOR, MIXED, SID, NOSID = range(6)

# rows of W and entries of s
W_, Z_, H_, HV_, EB_, VV_, ZBV_ = range(7)
BETA, V, ZB, U, NMAX = range(5)
N_SCALARS = 5
# entries of the integer state: number of active weights, global step counter
N_ACT, STEP = range(2)


class Config(NamedTuple):
    """Learner hyper-parameters (spec §1.1, §6.1 defaults)."""
    tuner: str = "scalar"
    normalized: bool = True
    alpha: float = 2.0 ** -9      # alpha_0 (initial, or fixed for `none`)
    mu: float = 2.0 ** -8         # meta step-size
    gamma: float = 0.99
    lam: float = 0.8
    psi: float = 0.0              # entropy weight
    timeout_bootstrap: bool = False   # spec §1.6
    nosid_alpha_bound: bool = True    # spec §4.3 N2


def check_config(c):
    """Validate a Config: one ValueError naming the bad value and the accepted range."""
    if c.tuner not in TUNERS:
        raise ValueError(f"unknown tuner {c.tuner!r}; accepted: {', '.join(TUNERS)}")
    if not (c.alpha > 0 and math.isfinite(c.alpha)):
        raise ValueError(f"alpha {c.alpha} is outside the accepted range (0, inf)")
    if not (c.mu >= 0 and math.isfinite(c.mu)):
        raise ValueError(f"mu {c.mu} is outside the accepted range [0, inf)")
    for name in ("gamma", "lam"):
        x = getattr(c, name)
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"{name} {x} is outside the accepted range [0, 1]")
    if not (c.psi >= 0 and math.isfinite(c.psi)):
        raise ValueError(f"psi {c.psi} is outside the accepted range [0, inf)")
    return c


# ------------------------------------------------------------------------------------------------
# The tuner: spec §2.0 steps 2-7 for all variants
# ------------------------------------------------------------------------------------------------

# Two forms of the per-weight passes.  Sparse (linear features): the loops run over a list of live
# indices.  Dense (the network, or a linear model in tests): the weights are cut into blocks, and in
# a block of R x C weights every gradient is an outer product or a sum of two,
#     g^U_qc = x_q gU_c,   g^H_qc = x_q gH_c,   d_qc = c1 x1_q d1_c + c0 x_q d0_c,
# which is how a dense layer's gradients come out of backpropagation (nets.dense_factors): they are
# never materialized.  A materialized vector is the block R = 1, x = x1 = [1].  Each loop body is
# therefore written out twice, on purpose: LLVM vectorizes the dense loops only in this form
# (neither an index select nor an inlined per-weight body function vectorizes: 10-40x slower).
# tests/test_sparse_vs_dense.py and tests/test_metatrace.py check both forms against the literal
# reference and the spec's identities.

@nb.njit(cache=True)
def _small_steps(W, norm, mu):
    """True when every V4 / M6 step |mu Delta_i / v_i| <= mu is small enough for _exp_step's
    polynomial in W's precision: normalized, float32, mu <= 2^-4."""
    return norm and W.itemsize == 4 and mu <= 0.0625


@nb.njit(cache=True, inline="always", error_model="numpy")
def _exp_step(x, small):
    """exp(x): Taylor to degree 4 when `small` (|x| <= 2^-4: error < 8e-9, below float32's ulp),
    else the full exponential.  In x's precision."""
    if small:
        f = np.float32
        return f(1.0) + x * (f(1.0) + x * (f(0.5) + x * (f(1 / 6) + x * f(1 / 24))))
    return _exp(x)


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _dots(gU, gH, d, h, z, gl, sup, m):
    """<g^U,h>, <g^H,h>, <d,h>, ||g^U||^2, <gl z + g^U, d> over sup[:m]."""
    gUh = gHh = dh = gU2 = zd = 0.0
    for k in range(m):
        i = sup[k]
        g = np.float64(gU[i])
        gU2 += g * g
        gUh += g * h[i]
        gHh += np.float64(gH[i]) * h[i]
        dh += np.float64(d[i]) * h[i]
        zd += (gl * np.float64(z[i]) + g) * d[i]
    return gUh, gHh, dh, gU2, zd


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _zh(z, gU, h, gl, act, m):
    """<z_t, h> = <gl z_{t-1} + g^U, h> over every live weight act[:m] (SID, NOSID)."""
    zh = 0.0
    for k in range(m):
        i = act[k]
        zh += (gl * np.float64(z[i]) + gU[i]) * h[i]
    return zh


@nb.njit(cache=True, error_model="numpy")
def _vector_pass(W, gU, gH, delta, gl, psi, mu, norm, act, m):
    """V1-V4 / M1, M3, M5, M6 for every live weight act[:m] (eb_i = exp(bv_i), see above)."""
    zbv, vv, hv, e = W[ZBV_], W[VV_], W[HV_], W[EB_]
    small = _small_steps(W, norm, mu)
    for k in range(m):
        i = act[k]
        zb = gl * zbv[i] + gU[i] * hv[i]                      # V1 / M1
        D = delta * zb + psi * gH[i] * hv[i]                  # V2 / M3
        if norm:
            v = max(abs(D), vv[i] + mu * (abs(D) - vv[i]))    # V3 / M5
            db = mu * D / v if v > 0 else 0.0 * D             # V4 / M6
            vv[i] = v
        else:
            db = mu * D                                       # unnormalized V4
        zbv[i] = zb
        e[i] *= _exp_step(db, small)


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _x_vector(e, gU, sup, m):
    """sum_i e_i (g^U_i)^2 over sup[:m]: the per-weight part of V5 / M7."""
    xv = 0.0
    for k in range(m):
        i = sup[k]
        xv += np.float64(e[i]) * gU[i] * gU[i]
    return xv


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _weight_pass(W, gU, gH, d, alpha, delta, dh, gl, psi, vec, sh, act, m):
    """z_t, then h-vec (V8 / M9), h (S8 / M10) and w (S9 / V9 / M11) for every live weight, with
    alpha_i = alpha e_i (V7 / M8) or alpha.  Returns NaN iff a new w_i or an alpha_i is
    non-finite or an alpha_i has underflowed to 0, else 0."""
    w, z, h, hv, e = W[W_], W[Z_], W[H_], W[HV_], W[EB_]
    bad = 0.0
    for k in range(m):
        i = act[k]
        a = alpha * e[i] if vec else alpha
        gh = gH[i]
        zi = gl * z[i] + gU[i]                                # AC trace z_t
        z[i] = zi
        if vec:
            hv[i] += a * (zi * (delta + d[i] * hv[i]) + psi * gh)
        if sh:
            h[i] += a * (zi * (delta + dh) + psi * gh)
        wi = w[i] + a * (delta * zi + psi * gh)
        w[i] = wi
        bad += 0.0 * wi + (0.0 * a if a > 0.0 else np.nan)
    return bad


@nb.njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _dots_blk(h, x, x1, gU, gH, d1, d0, c1, c0):
    """<g^U,h>, <g^H,h>, <d,h> over one dense block (see above)."""
    C = gU.shape[0]
    gUh = gHh = dh = 0.0
    for q in range(x.shape[0]):
        hq = h[q * C:(q + 1) * C]
        su = sh = s1 = s0 = 0.0
        for c in range(C):
            hc = np.float64(hq[c])
            su += gU[c] * hc
            sh += gH[c] * hc
            s1 += d1[c] * hc
            s0 += d0[c] * hc
        xq = np.float64(x[q])
        gUh += xq * su
        gHh += xq * sh
        dh += c1 * np.float64(x1[q]) * s1 + c0 * xq * s0
    return gUh, gHh, dh


@nb.njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _zdots_blk(z, h, x, x1, gU, d1, d0, c1, c0, gl):
    """<z_t, h> and <z_t, d> with z_t = gl z + g^U over one dense block (SID, NOSID)."""
    C = gU.shape[0]
    zh = zd = 0.0
    for q in range(x.shape[0]):
        xq, a1, a0 = np.float64(x[q]), c1 * np.float64(x1[q]), c0 * np.float64(x[q])
        for c in range(C):
            i = q * C + c
            zi = gl * np.float64(z[i]) + xq * gU[c]
            zh += zi * h[i]
            zd += zi * (a1 * d1[c] + a0 * d0[c])
    return zh, zd


@nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _vector_blk(zbv, vv, hv, e, x, gU, gH, acc, delta, gl, psi, mu, norm, small):
    """V1-V4 / M1, M3, M5, M6 over one dense block (e = eb = exp(bv)), and
    acc_c += sum_q e_qc (g^U_qc)^2 (the per-weight part of V5 / M7, summed per column so that
    the loop vectorizes)."""
    ty = zbv.dtype.type
    delta, gl, psi, mu, zero = ty(delta), ty(gl), ty(psi), ty(mu), ty(0.0)
    C = gU.shape[0]
    for q in range(x.shape[0]):
        xq = x[q]
        for c in range(C):
            i = q * C + c
            g = xq * gU[c]
            zb = gl * zbv[i] + g * hv[i]                      # V1 / M1
            D = delta * zb + psi * (xq * gH[c]) * hv[i]       # V2 / M3
            vi = vv[i]                                        # (selects, not branches: the
            v = max(abs(D), vi + mu * (abs(D) - vi))          # loop vectorizes only so) V3 / M5
            dbn = mu * D / v if v > 0 else zero * D           # V4 / M6
            db = dbn if norm else mu * D                      # unnormalized V4
            vv[i] = v if norm else vi
            zbv[i] = zb
            ei = e[i] * _exp_step(db, small)
            e[i] = ei
            acc[c] += ei * (g * g)


@nb.njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _weight_blk(w, z, h, hv, e, x, x1, gU, gH, d1, d0, c1, c0, alpha, delta, dh, gl, psi,
                vec, sh):
    """As _weight_pass (z_t; V8 / M9; S8 / M10; S9 / V9 / M11) over one dense block."""
    ty = w.dtype.type
    alpha, delta, dh, gl, psi, nan = ty(alpha), ty(delta), ty(dh), ty(gl), ty(psi), ty(np.nan)
    C = gU.shape[0]
    bad = ty(0.0)
    for q in range(x.shape[0]):
        xq, a1, a0 = x[q], ty(c1) * x1[q], ty(c0) * x[q]
        for c in range(C):
            i = q * C + c
            a = alpha * e[i] if vec else alpha
            gh = xq * gH[c]
            zi = gl * z[i] + xq * gU[c]                       # AC trace z_t
            z[i] = zi
            if vec:
                hv[i] += a * (zi * (delta + (a1 * d1[c] + a0 * d0[c]) * hv[i]) + psi * gh)
            if sh:
                h[i] += a * (zi * (delta + dh) + psi * gh)
            wi = w[i] + a * (delta * zi + psi * gh)
            w[i] = wi
            bad += ty(0.0) * wi + (ty(0.0) * a if a > ty(0.0) else nan)
    return bad


@nb.njit(cache=True, fastmath={"reassoc"})
def _sumsq(v):
    """||v||^2 in float64."""
    t = 0.0
    for i in range(v.shape[0]):
        t += np.float64(v[i]) * v[i]
    return t


@nb.njit(cache=True, fastmath={"reassoc"})
def _sum(v):
    """sum(v) in float64."""
    t = 0.0
    for i in range(v.shape[0]):
        t += v[i]
    return t


@nb.njit(cache=True)
def _meta_scalars(s, kind, norm, gl, psi, mu, delta, gUh, gHh, gU2, xv, zh, zd, gV2, nosid_bound):
    """The scalar lines: S1-S6 / M2, M4-M7 / V5-V6, SID-R and NOSID-R (spec §4.2-4.3).
    Sets s and returns the new beta (or beta-hat, or the vector tuner's shared offset)."""
    vec = kind == VECTOR or kind == MIXED
    beta = s[BETA]
    if kind == SCALAR or kind == MIXED:
        s[ZB] = gl * s[ZB] + gUh                              # S1 / M2
        D = delta * s[ZB] + psi * gHh                         # S2 / M4
        if norm:
            s[V] = max(abs(D), s[V] + mu * (abs(D) - s[V]))  # S3 / M5
            if s[V] > 0:
                beta += mu * D / s[V]                         # S4 / M6
        else:
            beta += mu * D
    elif kind == SID or kind == NOSID:
        D = delta * zh + psi * gHh                            # spec §4.2
        if kind == SID:
            beta += mu * D
        else:
            s[NMAX] = max(s[NMAX], gV2)                       # N1: hard maximum of ||g^V||^2
            if s[NMAX] > 0:
                beta += mu * D / s[NMAX]
            if nosid_bound and zd != 0.0:
                beta = min(beta, -math.log(abs(zd)))          # N2
    if norm and (kind == SCALAR or kind == VECTOR or kind == MIXED):
        x = math.exp(beta) * (xv if vec else gU2)             # S5 / V5 / M7
        s[U] = max(x, s[U] + (1.0 - gl) * (x - s[U]))
        beta -= math.log(max(s[U], 1.0))                      # S6 / V6 / M7
    s[BETA] = beta
    return beta


@nb.njit(cache=True)
def tuner_step(W, s, ist, vt, act, in_act, gU, gH, d, sup, ns, dense,
               delta, gV2, kind, norm, gl, psi, mu, nosid_bound):
    """One step of spec §2.0 (steps 2-7) for every tuner; returns False if anything went non-finite.

    gU, gH, d are full-length vectors that are zero outside the indices sup[:ns] (or everywhere
    dense, where they are one materialized block of `dense_step`).  gl = gamma*lambda.  On return W
    holds z_t, w_{t+1}, h_{t+1}, and s the new beta.  Live weights: act[:ist[N_ACT]] (sparse).
    """
    if dense:
        one = np.ones(1, W.dtype)
        empty = np.zeros(0, W.dtype)
        return dense_step(W, s, ist, gU, gH, d, d, 1.0, 0.0, ns, ns, empty, empty, empty, empty,
                          empty, empty, one, np.zeros(ns, W.dtype), delta, gV2, kind, norm, gl, psi, mu,
                          nosid_bound)
    vec = kind == VECTOR or kind == MIXED
    sh = kind == SCALAR or kind == MIXED or kind == SID or kind == NOSID
    step = ist[STEP]
    vv, lazy = W[VV_], vec and norm       # activate the weights first touched in this episode
    for k in range(ns):
        i = sup[k]
        if in_act[i] == 0:
            in_act[i] = 1
            act[ist[N_ACT]] = i
            ist[N_ACT] += 1
            if lazy:                      # the v-vec decays of the steps it was not live
                vv[i] *= (1.0 - mu) ** (step - vt[i])
    m = ist[N_ACT]
    gUh = gHh = dh = gU2 = zd = zh = xv = 0.0
    if kind != NONE:                      # dot products with the pre-update h
        gUh, gHh, dh, gU2, zd = _dots(gU, gH, d, W[H_], W[Z_], gl, sup, ns)
    if vec:
        _vector_pass(W, gU, gH, delta, gl, psi, mu, norm, act, m)
        xv = _x_vector(W[EB_], gU, sup, ns)             # g^U is zero off its support
    if kind == SID or kind == NOSID:
        zh = _zh(W[Z_], gU, W[H_], gl, act, m)
    beta = _meta_scalars(s, kind, norm, gl, psi, mu, delta, gUh, gHh, gU2, xv, zh, zd, gV2,
                         nosid_bound)
    alpha = math.exp(beta)                                    # S7; V7 / M8: alpha * e_i
    bad = _weight_pass(W, gU, gH, d, alpha, delta, dh, gl, psi, vec, sh, act, m)
    ist[STEP] = step + 1
    return math.isfinite(bad) and math.isfinite(beta) and alpha > 0.0


@nb.njit(cache=True)
def _block(b, lo, hi, n, gU, gH, gV, gV1, x, x1, fU, fH, fV, fV1, one):
    """Block b of dense_step: weights [a, e) and their factors (x, x1, fU, fH, fV, fV1); blocks
    0 and 2 are the materialized [0, lo) and [hi, n) (x = x1 = [1]), block 1 the factored one."""
    if b == 1:
        return lo, hi, x, x1, fU, fH, fV, fV1
    a, e = (0, lo) if b == 0 else (hi, n)
    return a, e, one, one, gU[a:e], gH[a:e], gV[a:e], gV1[a:e]


@nb.njit(cache=True)
def dense_step(W, s, ist, gU, gH, gV, gV1, c1, c0, lo, hi, x, x1, fU, fH, fV, fV1, one, acc,
               delta, gV2, kind, norm, gl, psi, mu, nosid_bound):
    """One step of spec §2.0 (steps 2-7) over every weight, in dense blocks; False if non-finite.

    Weights [lo, hi) are one factored block (x, x1 of length R, fU, fH, fV, fV1 of length C,
    R C = hi - lo), e.g. a dense layer: g^U = outer(x, fU), g^H = outer(x, fH),
    d = c1 outer(x1, fV1) + c0 outer(x, fV).  Outside it, gU, gH and d = c1 gV1 + c0 gV are
    materialized (full-length vectors, read only there).  acc: scratch of max(lo, n - hi, C)
    floats.  gV2 = ||g^V||^2 (NOSID only).  `one` = [1.0]."""
    vec = kind == VECTOR or kind == MIXED
    sh = kind == SCALAR or kind == MIXED or kind == SID or kind == NOSID
    small = _small_steps(W, norm, mu)
    gUh = gHh = dh = zh = zd = xv = 0.0
    gU2 = 0.0
    for b in range(3):                    # the dot products with the pre-update h, V1-V4 / M1-M6
        a, e, X, X1, FU, FH, FV, FV1 = _block(b, lo, hi, W.shape[1], gU, gH, gV, gV1, x, x1,
                                              fU, fH, fV, fV1, one)
        if e == a:
            continue
        if kind != NONE:
            u, hh, dd = _dots_blk(W[H_, a:e], X, X1, FU, FH, FV1, FV, c1, c0)
            gUh += u
            gHh += hh
            dh += dd
            gU2 += _sumsq(X) * _sumsq(FU)
        if kind == SID or kind == NOSID:
            u, dd = _zdots_blk(W[Z_, a:e], W[H_, a:e], X, X1, FU, FV1, FV, c1, c0, gl)
            zh += u
            zd += dd
        if vec:
            acc[:FU.shape[0]] = 0.0
            _vector_blk(W[ZBV_, a:e], W[VV_, a:e], W[HV_, a:e], W[EB_, a:e], X, FU, FH, acc,
                        delta, gl, psi, mu, norm, small)
            xv += _sum(acc[:FU.shape[0]])
    beta = _meta_scalars(s, kind, norm, gl, psi, mu, delta, gUh, gHh, gU2, xv, zh, zd, gV2,
                         nosid_bound)
    alpha = math.exp(beta)                                    # S7; V7 / M8: alpha * e_i
    bad = 0.0
    for b in range(3):
        a, e, X, X1, FU, FH, FV, FV1 = _block(b, lo, hi, W.shape[1], gU, gH, gV, gV1, x, x1,
                                              fU, fH, fV, fV1, one)
        if e == a:
            continue
        bad += _weight_blk(W[W_, a:e], W[Z_, a:e], W[H_, a:e], W[HV_, a:e], W[EB_, a:e], X, X1,
                           FU, FH, FV1, FV, c1, c0, alpha, delta, dh, gl, psi, vec, sh)
    ist[STEP] += 1
    return math.isfinite(bad) and math.isfinite(beta) and alpha > 0.0


@nb.njit(cache=True)
def end_episode(W, s, ist, vt, act, in_act, dense):
    """Spec §2.0 step 8: reset z, the meta traces and u; w, h, beta, v persist."""
    if dense:
        W[Z_, :] = 0.0
        W[ZBV_, :] = 0.0
    else:
        for k in range(ist[N_ACT]):
            i = act[k]
            W[Z_, i] = 0.0
            W[ZBV_, i] = 0.0
            in_act[i] = 0
            vt[i] = ist[STEP]
        ist[N_ACT] = 0
    s[ZB] = 0.0
    s[U] = 0.0


# ------------------------------------------------------------------------------------------------
# The linear-softmax model on sparse features (spec §1.4)
# ------------------------------------------------------------------------------------------------

@nb.njit(cache=True)
def linear_policy(w, nf, n_actions, idx, val, k, pi, logpi):
    """V(s) = theta.phi and pi = softmax(Theta phi); fills pi, logpi, returns (V, H)."""
    V = 0.0
    for j in range(k):
        V += val[j] * w[idx[j]]
    mx = -np.inf
    for a in range(n_actions):
        la = 0.0
        off = nf * (1 + a)
        for j in range(k):
            la += val[j] * w[off + idx[j]]
        logpi[a] = la
        mx = max(mx, la)
    tot = 0.0
    for a in range(n_actions):
        tot += math.exp(logpi[a] - mx)
    lse = mx + math.log(tot)
    H = 0.0
    for a in range(n_actions):
        logpi[a] -= lse
        pi[a] = math.exp(logpi[a])
        H -= pi[a] * logpi[a]
    return V, H


@nb.njit(cache=True)
def linear_value(w, idx, val, k):
    """V(s) = theta.phi(s) on sparse features."""
    V = 0.0
    for j in range(k):
        V += val[j] * w[idx[j]]
    return V


@nb.njit(cache=True)
def sample(pi, rng):
    """Draw an action from the distribution pi with one uniform."""
    x = rng.random()
    c = 0.0
    for a in range(pi.shape[0] - 1):
        c += pi[a]
        if x < c:
            return a
    return pi.shape[0] - 1


@nb.njit(cache=True)
def linear_step(W, s, ist, vt, act, in_act, gU, gH, d, mark, sup,
                nf, n_actions, idx0, val0, k0, V0, H0, pi, logpi, A, R,
                idx1, val1, k1, gamma1, kind, norm, gl, psi, mu, nosid_bound):
    """One AC(lambda)+tuner step for the linear-softmax model (spec §1.3-1.5, §2.0).

    (idx0, val0) are S_t's features with V0, H0, pi, logpi from `linear_policy` at w_t; (idx1, val1)
    are S_{t+1}'s; gamma1 = gamma * (1 - term) is the discount used in delta and d.
    Returns (delta, ok).
    """
    w = W[W_]
    V1 = linear_value(w, idx1, val1, k1) if gamma1 != 0.0 else 0.0
    delta = R + gamma1 * V1 - V0
    ns = 0
    gV2 = 0.0
    for j in range(k0):                       # critic part: g^U = g^V = phi, d = -phi (+ gamma1 phi')
        i = idx0[j]
        gU[i] = val0[j]
        d[i] -= val0[j]
        gV2 += val0[j] * val0[j]
        mark[i] = 1
        sup[ns] = i
        ns += 1
    for a in range(n_actions):                # actor part: 1/2 (e_A - pi) phi and -pi(log pi + H) phi
        ca = 0.5 * ((1.0 if a == A else 0.0) - pi[a])
        ch = -pi[a] * (logpi[a] + H0)
        off = nf * (1 + a)
        for j in range(k0):
            i = off + idx0[j]
            gU[i] = ca * val0[j]
            if psi != 0.0:
                gH[i] = ch * val0[j]
            sup[ns] = i
            ns += 1
    if gamma1 != 0.0:
        for j in range(k1):
            i = idx1[j]
            d[i] += gamma1 * val1[j]
            if mark[i] == 0:
                mark[i] = 1
                sup[ns] = i
                ns += 1
    ok = tuner_step(W, s, ist, vt, act, in_act, gU, gH, d, sup, ns, False,
                    delta, gV2, kind, norm, gl, psi, mu, nosid_bound)
    for k in range(ns):                       # scratch back to zero
        i = sup[k]
        gU[i] = 0.0
        gH[i] = 0.0
        d[i] = 0.0
        mark[i] = 0
    return delta, ok and math.isfinite(delta)


@nb.njit(cache=True)
def run_linear_episode(W, s, ist, vt, act, in_act, gU, gH, d, mark, sup, pi, logpi,
                       idx0, val0, idx1, val1, signs, env_state, rng_env, rng_agent,
                       n_noise, drift, time_limit, gamma, timeout_bootstrap,
                       kind, norm, gl, psi, mu, nosid_bound):
    """One mountain-car episode (spec §6.1-6.2): env, features, AC(lambda) and tuner, in Numba.

    env_state = [next flip position of the drift stream] persists between episodes.
    Returns (return, length, ok).
    """
    nf = signs.shape[0] + n_noise
    n_actions = pi.shape[0]
    p, v = mc_reset(rng_env)
    k0 = linear_features(p, v, signs, n_noise, rng_env, idx0, val0)
    ret = 0.0
    t = 0
    ok = True
    nxt = np.int64(env_state[0])
    while True:
        V0, H0 = linear_policy(W[W_], nf, n_actions, idx0, val0, k0, pi, logpi)
        A = sample(pi, rng_agent)
        p, v, term = mc_step(p, v, A)
        t += 1
        R = -1.0
        nxt = drift_flip(signs, nxt, drift, rng_env)
        k1 = linear_features(p, v, signs, n_noise, rng_env, idx1, val1)
        trunc = (not term) and t >= time_limit
        boot = (not term) and (timeout_bootstrap or not trunc)
        gamma1 = gamma if boot else 0.0
        _, ok = linear_step(W, s, ist, vt, act, in_act, gU, gH, d, mark, sup,
                            nf, n_actions, idx0, val0, k0, V0, H0, pi, logpi, A, R,
                            idx1, val1, k1, gamma1,
                            kind, norm, gl, psi, mu, nosid_bound)
        ret += R
        if not ok or term or trunc:
            break
        idx0, idx1 = idx1, idx0
        val0, val1 = val1, val0
        k0 = k1
    end_episode(W, s, ist, vt, act, in_act, False)
    env_state[0] = nxt
    return ret, t, ok


class Learner:
    """AC(lambda) + tuner state for a model with n weights; state is the point of this class."""

    def __init__(self, n, config, dtype=np.float64, dense=False):
        self.config = check_config(config)
        self.kind = TUNERS.index(config.tuner)
        self.norm = bool(config.normalized) and self.kind in (SCALAR, VECTOR, MIXED)
        self.dense = dense
        self.n = n
        # sparse: a weight's 7 entries share a cache line; dense: each row contiguous (BLAS, SIMD)
        self.W = np.zeros((8, n), dtype) if dense else np.zeros((n, 8), dtype).T
        self.W[EB_] = 1.0                                     # bv = 0
        self.s = np.zeros(N_SCALARS)
        self.s[BETA] = math.log(config.alpha)
        self.ist = np.zeros(2, np.int64)
        self.vt = np.zeros(n, np.int64)
        self.act = np.zeros(n, np.int64)
        self.in_act = np.zeros(n, np.uint8)

    @property
    def w(self):
        """The weights (a view)."""
        return self.W[W_]

    def beta_vec(self):
        """The per-weight part bv of beta (vector, mixed): log of row EB_, in float64."""
        return np.log(self.W[EB_].astype(np.float64))

    def set_beta_vec(self, bv):
        """Set the per-weight part of beta (vector, mixed) to bv."""
        self.W[EB_] = np.exp(np.asarray(bv, np.float64))

    def beta(self):
        """Per-weight log step-sizes beta_i (alpha_i = exp(beta_i))."""
        if self.kind in (VECTOR, MIXED):
            return self.s[BETA] + self.beta_vec()
        return np.full(self.n, self.s[BETA])

    def state(self):
        """Every array of the learner's state, by name (for checkpoints and tests)."""
        return {"W": self.W, "s": self.s, "ist": self.ist, "vt": self.vt,
                "act": self.act, "in_act": self.in_act}


class LinearAgent:
    """A linear-softmax learner on one of the mountain-car domains, run an episode at a time."""

    def __init__(self, config, n_features, n_actions, n_noise=0, drift=0.0, seed=0):
        self.config = config
        self.nf = n_features
        self.n_actions = n_actions
        self.n_noise = n_noise
        self.drift = float(drift)
        self.learner = Learner(n_features * (1 + n_actions), config)
        n = self.learner.n
        self.gU, self.gH, self.d = np.zeros(n), np.zeros(n), np.zeros(n)
        self.mark = np.zeros(n, np.uint8)
        kmax = 16 + n_noise
        self.sup = np.zeros(kmax * (n_actions + 2), np.int64)
        self.pi, self.logpi = np.zeros(n_actions), np.zeros(n_actions)
        self.idx0, self.idx1 = np.zeros(kmax, np.int64), np.zeros(kmax, np.int64)
        self.val0, self.val1 = np.zeros(kmax), np.zeros(kmax)
        self.signs = np.ones(n_features - n_noise)
        ss = np.random.SeedSequence(seed)
        env_ss, agent_ss = ss.spawn(2)
        self.rng_env = np.random.default_rng(env_ss)
        self.rng_agent = np.random.default_rng(agent_ss)
        self.env_state = np.array([first_flip(self.drift, self.rng_env)], np.int64)

    def get_state(self):
        """Everything the next episode depends on: learner arrays, drift signs, both RNG states."""
        arrays = {f"learner_{k}": v.copy() for k, v in self.learner.state().items()}
        arrays.update(signs=self.signs.copy(), env_state=self.env_state.copy())
        rngs = {"rng_env": self.rng_env.bit_generator.state,
                "rng_agent": self.rng_agent.bit_generator.state}
        return arrays, rngs

    def set_state(self, arrays, rngs):
        """Restore a state from `get_state` (between episodes), in place."""
        for k, v in self.learner.state().items():
            v[...] = arrays[f"learner_{k}"]
        self.signs[...] = arrays["signs"]
        self.env_state[...] = arrays["env_state"]
        self.rng_env.bit_generator.state = rngs["rng_env"]
        self.rng_agent.bit_generator.state = rngs["rng_agent"]

    def episode(self, time_limit=200):
        """Run one episode; returns (return, length, ok)."""
        c, L = self.config, self.learner
        return run_linear_episode(
            L.W, L.s, L.ist, L.vt, L.act, L.in_act, self.gU, self.gH, self.d, self.mark, self.sup,
            self.pi, self.logpi, self.idx0, self.val0, self.idx1, self.val1, self.signs,
            self.env_state, self.rng_env, self.rng_agent, self.n_noise, self.drift, time_limit,
            c.gamma, c.timeout_bootstrap, L.kind, L.norm, c.gamma * c.lam, c.psi, c.mu,
            c.nosid_alpha_bound)


# ------------------------------------------------------------------------------------------------
# The network model (nets.py), dense
# ------------------------------------------------------------------------------------------------

@nb.njit(cache=True)
def softmax_policy(logits, pi, logpi):
    """pi = softmax(logits), log pi, and returns the entropy H (float64)."""
    mx = -np.inf
    for a in range(logits.shape[0]):
        mx = max(mx, np.float64(logits[a]))
    tot = 0.0
    for a in range(logits.shape[0]):
        tot += math.exp(np.float64(logits[a]) - mx)
    lse = mx + math.log(tot)
    H = 0.0
    for a in range(logits.shape[0]):
        logpi[a] = np.float64(logits[a]) - lse
        pi[a] = math.exp(logpi[a])
        H -= pi[a] * logpi[a]
    return H


@nb.njit(cache=True)
def policy_cotangents(pi, logpi, H, A, cot, rH):
    """Cotangents on the logits, in place: row 0 d(log pi(A)/2)/dlogits = (e_A - pi)/2 (column 0
    holds dV = 1, so row 0 yields g^U) and, if rH > 0, row rH dH/dlogits = -pi (log pi + H)."""
    for a in range(pi.shape[0]):
        cot[0, 1 + a] = 0.5 * ((1.0 if a == A else 0.0) - pi[a])
        if rH > 0:
            cot[rH, 1 + a] = -pi[a] * (logpi[a] + H)


@nb.njit(cache=True)
def _same(a, b):
    """a == b element for element (a any shape, b flat)."""
    a = a.reshape(-1)
    n = b.shape[0]
    for i0 in range(0, n, 256):       # no exit inside a chunk, so that the compare vectorizes
        diff = False
        for i in range(i0, min(i0 + 256, n)):
            diff |= a[i] != b[i]
        if diff:
            return False
    return True


@nb.njit(cache=True)
def _net_policy(table, wt, buf, w, obs, same_obs, pi, logpi, rng):
    """Forward pass at S_t (spec §1.5), pi, log pi, and A ~ pi. -> (A, V(S_t), H(S_t))."""
    _forward(table, wt, w, obs, buf, same_obs)
    head = wt[wt.shape[0] - 1, _A]
    H = softmax_policy(buf[head + 1:head + 1 + pi.shape[0]], pi, logpi)
    return sample(pi, rng), np.float64(buf[head]), H


@nb.njit(cache=True)
def _net_learn(phases, table, wt0, buf0, wt1, buf1, W, s, ist, cot, cot1, G, G1, lazy, rH,
               pi, logpi, H0, V0, A, R, obs1, last1, gamma1, need_d, gH, gV, x0, x1, fU, fH,
               fV, fV1, one, acc, lo, hi, kind, norm, gl, psi, mu, nosid_bound):
    """One transition of spec §1.5 / §2.0 on the network, in phases (a bit mask; all = 15):
    1 vjp at S_t (g^U, g^H, g^V), 2 forward at S_{t+1} with w_t, 4 vjp at S_{t+1} (grad V, for
    tuners that need d), 8 delta and `dense_step`.  -> (ok, delta)."""
    w = W[W_]
    if phases & 1:
        policy_cotangents(pi, logpi, H0, A, cot, rH)
        _vjp(table, wt0, w, buf0, cot, G, lazy)
    if phases & 2 and gamma1 != 0.0:
        _forward(table, wt1, w, obs1, buf1, False)
        last1[:] = obs1.reshape(-1)
    if phases & 4 and need_d and gamma1 != 0.0:
        _vjp(table, wt1, w, buf1, cot1, G1, lazy)
    if not phases & 8:
        return True, 0.0
    V1 = np.float64(buf1[wt1[wt1.shape[0] - 1, _A]]) if gamma1 != 0.0 else 0.0
    delta = R + gamma1 * V1 - V0
    gV2 = 0.0
    if kind == NOSID:
        gV2 = _sumsq(gV[:lo]) + _sumsq(gV[hi:]) + _sumsq(x0) * _sumsq(fV)
    ok = dense_step(W, s, ist, G[0], gH, gV, G1[0], gamma1 if need_d else 0.0, -1.0, lo, hi,
                    x0, x1, fU, fH, fV, fV1, one, acc, delta, gV2, kind, norm, gl, psi, mu,
                    nosid_bound)
    return ok and math.isfinite(delta), delta


class NetAgent:
    """AC(lambda) + tuner on a nets.py network: `policy` at S_t, then `learn` from the transition.

    Per step (spec §1.5): forward(S_t) [policy]; one vjp at S_t for g^U, g^H (psi > 0) and g^V
    (tuners that need d) together; forward(S_{t+1}) with w_t for V(S_{t+1}) and, when the tuner
    needs d, a vjp at S_{t+1} for grad V(S_{t+1}); then `dense_step` over every weight.  The
    largest dense layer's gradients stay factored (nets.dense_factors): their outer products are
    formed inside the tuner's passes, never stored.  Two workspaces alternate between S_t and
    S_{t+1}, so that the next `policy` at S_{t+1} reuses the first layer's patches.  Buffers are
    allocated once here; `policy` and `learn` are one Numba call each.
    """

    def __init__(self, net, config, seed=0, dtype=np.float32):
        import nets
        self.nets, self.net, self.config, self.dtype = nets, net, config, np.dtype(dtype)
        init_ss, agent_ss = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(agent_ss)
        self.learner = Learner(net.n_params, config, dtype, dense=True)
        self.learner.W[W_] = nets.init_params(net, np.random.default_rng(init_ss), dtype)
        n, A = net.n_params, net.n_actions
        self.need_d = self.learner.kind != NONE
        # cotangent rows: g^U, then g^H if psi > 0, then g^V if the tuner needs d
        self.rH = 1 if config.psi > 0 else 0
        self.rV = 1 + self.rH if self.need_d else 0
        self.k = 1 + (self.rH > 0) + self.need_d
        self.ws = [nets.workspace(net, dtype, k=self.k) for _ in range(2)]
        self.cur = 0                                   # ws[cur] holds S_t, ws[1 - cur] S_{t+1}
        self.cot = np.zeros((self.k, 1 + A), dtype)
        self.cot1 = np.zeros((1, 1 + A), dtype)
        self.cot[0, 0] = self.cot1[0, 0] = 1.0                    # dV = 1 in g^U and g^V
        if self.need_d:
            self.cot[self.rV, 0] = 1.0
        self.lazy = nets.factored_layer(net)
        ly = net.layers[self.lazy]
        self.lo, self.hi = ly.w_off, ly.w_off + ly.fan_in * ly.fan_out
        self.factors = [nets.dense_factors(net, ws, self.lazy, self.k) for ws in self.ws]
        self.G = np.zeros((self.k, n), dtype)     # materialized outside [lo, hi)
        self.G1 = np.zeros((1, n), dtype)
        self.zn, self.zc = np.zeros(n, dtype), np.zeros(ly.fan_out, dtype)
        self.gH = self.G[self.rH] if self.rH else self.zn
        self.gV = self.G[self.rV] if self.need_d else self.zn
        self.one = np.ones(1, dtype)
        self.acc = np.zeros(max(self.lo, n - self.hi, ly.fan_out), dtype)
        self.last1 = np.zeros(int(np.prod(net.obs_shape)), dtype)    # S_{t+1} of the last learn
        self.fresh1 = False                       # ws[1 - cur] holds forward(last1)
        self.pi, self.logpi = np.zeros(A), np.zeros(A)
        self.V0 = self.H0 = 0.0
        self.clock = None     # set to np.zeros(3) to accumulate seconds in forward, backward, tuner

    @property
    def w(self):
        """The network parameters theta (a view)."""
        return self.learner.W[W_]

    def _check(self, obs):
        if obs.shape != self.net.obs_shape or obs.dtype != self.dtype:
            raise ValueError(f"observation has shape {obs.shape} and dtype {obs.dtype}; expected "
                             f"shape {self.net.obs_shape} and dtype {self.dtype}")
        return np.ascontiguousarray(obs)

    def policy(self, obs):
        """Forward pass at S_t with w_t; returns A ~ pi(.|S_t)."""
        obs = self._check(obs)
        t0 = time.perf_counter() if self.clock is not None else 0.0
        same = self.fresh1 and _same(obs, self.last1)
        if same:
            self.cur = 1 - self.cur
        ws = self.ws[self.cur]
        A, self.V0, self.H0 = _net_policy(self.net.table, ws.table, ws.buf, self.w, obs, same,
                                          self.pi, self.logpi, self.rng)
        self.fresh1 = False
        if self.clock is not None:
            self.clock[0] += time.perf_counter() - t0
        return A

    def learn(self, A, R, obs1, gamma1):
        """AC(lambda) + tuner update from (S_t, A, R, S_{t+1}); gamma1 = gamma(1 - term). -> ok."""
        obs1 = self._check(obs1)
        clock = self.clock
        args = self._learn_args(A, R, obs1, gamma1)
        if clock is None:
            ok, _ = _net_learn(15, *args)
        else:
            for phase, slot in ((1, 1), (2, 0), (4, 1), (8, 2)):
                t0 = time.perf_counter()
                ok, _ = _net_learn(phase, *args)
                clock[slot] += time.perf_counter() - t0
        self.fresh1 = gamma1 != 0.0
        return ok

    def _learn_args(self, A, R, obs1, gamma1):
        """The arguments of _net_learn after the phase mask."""
        c, L = self.config, self.learner
        ws0, ws1 = self.ws[self.cur], self.ws[1 - self.cur]
        (x0, f0), (x1, f1) = self.factors[self.cur], self.factors[1 - self.cur]
        fH = f0[self.rH] if self.rH else self.zc
        fV = f0[self.rV] if self.need_d else self.zc
        return (self.net.table, ws0.table, ws0.buf, ws1.table, ws1.buf, L.W, L.s, L.ist,
                self.cot, self.cot1, self.G, self.G1, self.lazy, self.rH, self.pi, self.logpi,
                self.H0, self.V0, A, float(R), obs1, self.last1, float(gamma1), self.need_d,
                self.gH, self.gV, x0, x1, f0[0], fH, fV, f1[0], self.one, self.acc, self.lo,
                self.hi, L.kind, L.norm, c.gamma * c.lam, c.psi, c.mu,
                c.nosid_alpha_bound)

    def gradients(self):
        """Full g^U, g^H, g^V at S_t and grad V(S_{t+1}) of the last `learn`, materialized
        (float64 copies, for tests and inspection; the learner itself never forms them)."""
        (x0, f0), (x1, f1) = self.factors[self.cur], self.factors[1 - self.cur]
        out = []
        for g, x, f in ((self.G[0], x0, f0[0]), (self.gH, x0, f0[self.rH] if self.rH else self.zc),
                        (self.gV, x0, f0[self.rV] if self.need_d else self.zc),
                        (self.G1[0], x1, f1[0])):
            g = g.astype(np.float64)
            g[self.lo:self.hi] = np.outer(x, f).ravel()
            out.append(g)
        return out

    def end_episode(self):
        """Spec §2.0 step 8."""
        L = self.learner
        end_episode(L.W, L.s, L.ist, L.vt, L.act, L.in_act, True)
        self.fresh1 = False


@nb.njit(cache=True)
def _touch_rows(W, rows, f):
    """Read and write each of W's listed rows once (w <- f w, f = 1 at run time), all rows in
    one sweep (256 entries of each in turn, as a fused pass streams them): the least memory
    traffic a per-weight step over that state can have."""
    f = W.dtype.type(f)
    n = W.shape[1]
    for i0 in range(0, n, 256):
        for r in rows:
            row = W[r, i0:min(i0 + 256, n)]
            for i in range(row.shape[0]):
                row[i] *= f


def bench_tuner(n_actions=18, repeats=50, seed=0):
    """Print, per tuner, the median time of one `dense_step` (the tuner phase of a network step)
    on the Atari net in float32: hot (state in cache, the step repeated) and cold (after a 64 MB
    sweep), each next to the same for reading and writing every state row once (_touch_rows)."""
    import nets
    net = nets.ATARI(n_actions)
    rng = np.random.default_rng(seed)
    obs = [rng.random(net.obs_shape).astype(np.float32) for _ in range(2)]
    sweep = np.zeros(16 << 20, np.float32)
    rows = {"none": (W_, Z_), "scalar": (W_, Z_, H_), "vector": (W_, Z_, HV_, EB_, VV_, ZBV_),
            "mixed": (W_, Z_, H_, HV_, EB_, VV_, ZBV_)}
    print(f"Atari net, {net.n_params} weights, float32: median ms over {repeats} calls of the "
          f"tuner phase (dense_step) and of one read+write of its state rows")
    print(f"{'tuner':<8}{'rows':>5}{'hot':>8}{'floor':>8}{'cold':>8}{'floor':>8}")
    for tuner, rr in rows.items():
        agent = NetAgent(net, Config(tuner=tuner, alpha=2.0 ** -8, mu=0.001, psi=0.01), seed)
        for t in range(8):                      # real steps: traces, h and factors not zero
            agent.learn(agent.policy(obs[t % 2]), 1.0, obs[(t + 1) % 2], 0.99)
        args = agent._learn_args(agent.policy(obs[0]), 1.0, obs[1], 0.99)
        _net_learn(7, *args)                    # the gradients at S_t and S_{t+1}
        idx = np.array(rr, np.int64)
        calls = (lambda: _net_learn(8, *args), lambda: _touch_rows(agent.learner.W, idx, 1.0))
        med = []
        for cold in (False, True):
            for call in calls:
                call()
                times = np.empty(repeats)
                for r in range(repeats):
                    if cold:
                        sweep += 1.0
                    t0 = time.perf_counter()
                    call()
                    times[r] = time.perf_counter() - t0
                med.append(np.median(times) * 1e3)
        print(f"{tuner:<8}{len(rr):>5}" + "".join(f"{m:>8.3f}" for m in med), flush=True)

"""AC(lambda) with Metatrace step-size tuning (Young, Wang & Taylor 2018); docs/algorithms.md.

One tuner serves every function approximator.  A model hands it the gradients (g^U, g^H,
d = grad delta) and scalars (delta, ||g^V||^2); the tuner applies steps 2-7 of
docs/algorithms.md §2 for the chosen tuner and updates the weights.  `linear_step` is the
linear-softmax model (§1.4) on sparse features (`tuner_step`); the Numba network of `nets.py`
(`NetAgent`) hands `dense_step` its gradients in blocks, its largest dense layer's as outer
products that are never materialized.  Both share the scalar lines (`_meta_scalars`); the
per-weight loop bodies exist once per form.  `algorithms.py` is the same algorithms written
plainly in NumPy, one line per line of the algorithm boxes: the definition these kernels are
tested against.

Tuners: one row each of TUNER_TABLE (below), which the learner, the command line, the benchmark
and the figures read.  A new tuner is a row, its lines in the kernels, and its tests.  ObGD and
adaptive ObGD (§9, Elsayed et al. 2024) are two such rows: they tune nothing by meta-gradient but
bound each step against overshooting, in their own passes (`_obgd_*`) after the AC(lambda) trace.
`TwoTowerAgent` (§11-§12) runs a critic and an actor network, each with its own trace: every tuner
over both as one weight vector, and the per-tower rows (`two_tower`: Stream AC as its authors run
it, Intentional AC) in their own per-tower kernels.

State (`Learner`): W is an (8, n) array whose rows are
    w    all weights (critic then actor)          z    AC(lambda) trace
    h    scalar sensitivity h, or mixed h-hat     hv   per-weight sensitivity h-vec (adaptive
                                                       ObGD: its last scale s_i, O6; Intentional
                                                       AC: 1 / D_i of its last step, I3)
    eb   exp(bv), bv the per-weight part of beta  vv   normalizer v-vec (adaptive ObGD: its v;
                                                       Intentional AC: RMSProp's v, I2)
    zbv  per-weight meta trace z^beta-vec         (row 7 is unused padding)
and `s` holds the scalars beta (or beta-hat), v (or v-hat; ObGD: its last bound M), z^beta (or
z^beta-hat), u, the NOSID hard maximum, and the step counter (two-tower tuners: five per tower).  The vector tuner keeps beta_i = beta + bv_i with a shared
offset beta, so the normalization of V6 (subtract log M from every beta_i) is one scalar update;
the mixed tuner's beta-hat plays the same role (M7).  alpha_i = exp(beta) eb_i in both.
The per-weight part is stored as eb_i = exp(bv_i), not bv_i: V4 / M6 become
eb_i <- eb_i exp(mu Delta_i / v_i), and the normalized tuners' |mu Delta_i / v_i| <= mu makes that
exponential a short polynomial (float32, mu <= 2^-4), so no per-weight exp is left on the hot
path.  The price is precision: a float32 ulp of eb_i is a relative error, so bv_i = log eb_i
carries an absolute error of about 6e-8 per step whatever its size, while a stored bv_i would
carry 6e-8 |bv_i|, and |bv_i| stays far below 1 in practice.  Over 1000 Mixed Metatrace steps on
the MinAtar net against float64 (same actions and rewards), the mean |Delta bv| is 2.1e-6 with eb
stored (max 1.3e-5, while mean |bv| = 6.4e-3); a review measured 2.9e-6 with eb stored and
3.0e-7 with bv stored.  The two agree only near |bv| ~ 1; eb is kept for the speed.
`Learner.beta_vec()` returns bv = log eb.

Sparsity (linear features): only weights touched by g^U or g^H during the current episode can have
non-zero trace, so the per-weight loop runs over that "active" list.  The one per-weight update
that touches every weight on every step is the decay of v-vec when Delta_i = 0 (§2.2 note); it
is applied lazily, v_i *= (1 - mu)^k, when weight i becomes active again.

Values travel in named bundles (NamedTuples, inside Numba too): `Hyper` (the tuner's flags and
hyper-parameters), `State` (the learner's arrays), `Scratch` (sparse gradients), `Dense` (a dense
model's gradients in blocks), `Transition` (one step's scalars).
"""
import collections
import json
import math
import os
import sys
import time
from typing import NamedTuple

import numba as nb
import numpy as np

import nets

__version__ = "0.7.0"


class Tuner(NamedTuple):
    """One row of the tuner table: what a tuner keeps and needs (docs/algorithms.md §2, §4)."""
    name: str
    rows: tuple           # per-weight state rows of W beyond w and z
    normalizable: bool    # has a normalized and an unnormalized form (--unnormalized)
    vector: bool          # per-weight step-sizes: h-vec, e^bv, v-vec, z^beta-vec (V, M lines)
    scalar_h: bool        # the scalar sensitivity h (S8 / M10)
    needs_d: bool         # d = grad delta and <g, h> dot products (every Metatrace-like tuner)
    needs_zh: bool        # <z, h> and <z, d> (SID-R, NOSID-R)
    needs_gV2: bool       # ||g^V||^2 (NOSID-R's normalizer)
    lines: str            # the algorithm lines it implements
    summary: str
    meta: bool = True     # has a meta step-size mu (every tuner but none and ObGD)
    bound: bool = False   # ObGD's overshooting bound on the step (§9, O1-O4)
    adaptive: bool = False    # adaptive ObGD's per-weight RMS scaling (§9, O5-O6)
    label: str = ""       # its name in figures
    color: str = "C4"     # its colour in figures (matplotlib)
    params: tuple = ()    # the run settings only it (and tuners like it) takes: flags of run.py
    bench: tuple = ("2^-9", "2^-8")   # (alpha0, mu) of the mountain-car benchmark (stable there)
    section: str = ""     # its section of docs/algorithms.md
    baseline: bool = False    # the untuned baseline the paper's figures compare against
    tower: int = 0        # its state is per tower (runs only with --towers 2): its pass in
    #                       tower_learn, 1 Stream AC (§11), 2 Intentional AC (§12); 0: one state

    @property
    def two_tower(self):
        """Whether its state is per tower."""
        return self.tower > 0


TUNER_TABLE = (
    Tuner("none", (), False, False, False, False, False, False, "§1.3",
          "AC(lambda) with a fixed alpha = exp(log alpha0)", meta=False, label="no tuning",
          color="0.35", bench=("2^-7", None), section="§5", baseline=True),
    Tuner("scalar", ("h",), True, False, True, True, False, False, "Alg. 1, S1-S9",
          "Scalar Metatrace", label="scalar", color="C0", params=("mu", "unnormalized"),
          section="§2.1"),
    Tuner("vector", ("hv", "eb", "vv", "zbv"), True, True, False, True, False, False,
          "Alg. 2, V1-V9", "Vector Metatrace, one step-size per weight", label="vector",
          color="C1", params=("mu", "unnormalized"), section="§2.2"),
    Tuner("mixed", ("h", "hv", "eb", "vv", "zbv"), True, True, True, True, False, False,
          "Alg. 3, M1-M11", "Mixed Metatrace, a shared step-size times a per-weight factor",
          label="mixed", color="C2", params=("mu", "unnormalized"), section="§2.3"),
    Tuner("sid", ("h",), False, False, True, True, True, False, "§4.2",
          "SID-R, a reconstruction of Dabney's SID for AC(lambda)", label="SID", params=("mu",),
          bench=("2^-9", "2^-16"), section="§4.2"),
    Tuner("nosid", ("h",), False, False, True, True, True, True, "§4.3, N1-N2",
          "NOSID-R, SID-R with a hard-maximum normalizer and an alpha bound", label="NOSID",
          params=("mu", "no_alpha_bound"), bench=("2^-9", "2^-12"), section="§4.3"),
    Tuner("obgd", (), False, False, False, False, False, False, "§9, O1-O4",
          "ObGD (Elsayed, Vasan & Mahmood 2024) in this project's one-tower variant: AC(lambda) "
          "with its step bounded against overshooting", meta=False, bound=True, label="ObGD", color="C3", params=("kappa",),
          bench=("2^-5", None), section="§9"),
    Tuner("adaptive_obgd", ("vv",), False, False, False, False, False, False, "§9, O1-O6",
          "adaptive ObGD: ObGD on delta z scaled per weight by its bias-corrected RMS",
          meta=False, bound=True, adaptive=True, label="adaptive ObGD", color="C4",
          params=("kappa", "beta2"), bench=("2^-5", None), section="§9"),
    Tuner("stream_ac", (), False, False, False, False, False, False, "§11, A1-A6",
          "Stream AC(lambda) as its authors run it: ObGD on each tower, kappa_V and kappa_pi",
          meta=False, bound=True, label="Stream AC", color="C5", params=("kappa", "kappa_pi"),
          bench=("2^0", None), section="§11", tower=1),
    Tuner("intentional", ("vv", "hv"), False, False, False, False, False, False, "§12, I1-I14, "
          "P14-P15", "Intentional AC (Sharifnassab et al. 2026): Intentional TD on the critic, "
          "intentional policy gradient on the actor", meta=False, label="Intentional AC",
          color="C6", params=("eta_v", "eta_pi", "beta2"), bench=("2^0", None), section="§12",
          tower=2),
)
TUNERS = tuple(t.name for t in TUNER_TABLE)
TUNER = {t.name: t for t in TUNER_TABLE}

# rows of W and entries of s
W_, Z_, H_, HV_, EB_, VV_, ZBV_ = range(7)
ROW = {"w": W_, "z": Z_, "h": H_, "hv": HV_, "eb": EB_, "vv": VV_, "zbv": ZBV_}
BETA, V, ZB, U, NMAX = range(5)
N_SCALARS = 5
OBGD_M = V            # ObGD keeps its last bound M (O3) where Metatrace keeps v
OBGD_EPS = 1e-8       # adaptive ObGD's epsilon (O6), the value of their code
INTENTIONAL_CONSTANTS = (20.0, 0.9998, 0.9998)    # §12: clip multiplier C, beta_clip, beta_norm
# a tower's scalars (s[k N_SCALARS:...], two-tower tuners): log of its last step-size at BETA;
# Stream AC: its last bound M at OBGD_M; Intentional AC: sigma (I7), the delta^2 EMA (I11),
# A-bar (P14)
SIGMA_S, CLIP2_S, ABAR_S = V, ZB, U
# entries of the integer state: number of active weights, global step counter
N_ACT, STEP = range(2)


class Range(NamedTuple):
    """The accepted values of a number: lo..hi, each end open or closed; reals or integers."""
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def ok(self, x):
        """Whether the finite number x lies in the range."""
        return (math.isfinite(x) and (x > self.lo if self.lo_open else x >= self.lo)
                and (x < self.hi if self.hi_open else x <= self.hi)
                and (not self.integer or x == int(x)))

    def words(self):
        """The range as it is written in error messages."""
        if self.integer:
            return f"integers >= {int(self.lo):,} and <= {int(self.hi):,}"
        hi = "inf" if math.isinf(self.hi) else f"{self.hi:g}"
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {hi}{')' if self.hi_open else ']'}"


INF = math.inf


class Param(NamedTuple):
    """A hyper-parameter that only the tuners whose rows list it take: its default, accepted
    range and help.  Each becomes a Config field, a Hyper field and a run setting (schema.py)."""
    default: float
    accepted: Range
    help: str


TUNER_PARAMS = {
    "kappa": Param(2.0, Range(0, INF, hi_open=True), "the bound factor kappa of the step "
                   "(docs/algorithms.md §9 O3; 0: never bounded); stream_ac: the value tower's "
                   "kappa_V (§11 A3)"),
    "kappa_pi": Param(3.0, Range(0, INF, hi_open=True), "the policy tower's bound factor "
                      "kappa_pi (docs/algorithms.md §11 A3)"),
    "beta2": Param(0.999, Range(0, 1, hi_open=True), "decay of the RMS of delta z "
                   "(docs/algorithms.md §9 O5); intentional: of RMSProp's average of g^2 (§12 I2)"),
    "eta_v": Param(0.5, Range(0, INF, True, True), "the fraction of delta that one critic "
                   "update removes (docs/algorithms.md §12 I10)"),
    "eta_pi": Param(0.05, Range(0, INF, True, True), "the intended change of log pi per actor "
                    "update, in units of the normalized delta (docs/algorithms.md §12 P10)"),
}


class _Config(NamedTuple):
    tuner: str = "scalar"
    normalized: bool = True
    alpha: float = 2.0 ** -9      # alpha_0 (initial, or fixed for `none`)
    mu: float = 2.0 ** -8         # meta step-size
    gamma: float = 0.99
    lam: float = 0.8
    psi: float = 0.0              # entropy weight
    timeout_bootstrap: bool = False   # §1.6
    nosid_alpha_bound: bool = True    # §4.3 N2


# Learner hyper-parameters (docs/algorithms.md §1.1, §6 defaults): _Config's, then TUNER_PARAMS'
Config = collections.namedtuple(
    "Config", _Config._fields + tuple(TUNER_PARAMS),
    defaults=tuple(_Config._field_defaults.values()) + tuple(p.default for p in TUNER_PARAMS.values()))
Config.__doc__ = "Learner hyper-parameters (docs/algorithms.md §1.1, §6 defaults; TUNER_PARAMS)."


# the paper's settings (docs/algorithms.md §6.1, §6.3): mountain car, and the networks
PAPER_DEFAULTS = {"linear": Config(),
                  "network": Config(tuner="mixed", alpha=2.0 ** -8, mu=0.001, psi=0.01)}


CONFIG_RANGES = {"alpha": Range(0, INF, True, True), "mu": Range(0, INF, hi_open=True),
                 "gamma": Range(0, 1), "lam": Range(0, 1), "psi": Range(0, INF, hi_open=True),
                 **{k: p.accepted for k, p in TUNER_PARAMS.items()}}


def check_config(c):
    """Validate a Config: one ValueError naming the bad value and the accepted range."""
    if c.tuner not in TUNERS:
        raise ValueError(f"unknown tuner {c.tuner!r}; accepted: {', '.join(TUNERS)}")
    for name, r in CONFIG_RANGES.items():
        x = getattr(c, name)
        if not r.ok(x):
            raise ValueError(f"{name} {x} is outside the accepted range {r.words()}")
    if c.tuner == "intentional" and c.gamma * c.lam == 1.0:
        raise ValueError("gamma lam = 1 with tuner intentional: its sigma correction divides by "
                         "1 - (gamma lam)^t (§12 I8); accepted: gamma lam < 1")
    return c


class _Hyper(NamedTuple):
    vec: bool           # per-weight step-sizes
    sh: bool            # scalar h
    dots: bool          # <g, h> dot products and d
    zdots: bool         # <z, h>, <z, d>
    gv2: bool           # the NOSID normalizer (with zdots: NOSID-R, else SID-R)
    norm: bool          # the normalized form
    gl: float           # gamma * lambda
    psi: float
    mu: float
    nosid_bound: bool
    bound: bool         # ObGD
    adapt: bool         # adaptive ObGD
    eps: float
    clip_mult: float    # §12 Intentional AC ...
    beta_clip: float
    beta_norm: float
    adaptive_clip: bool     # I11-I13 (off: delta clipped to [-1, 1])
    rmsprop: bool           # I2-I3 (off: D = I)
    sigma: bool             # I7-I9 (off: u = ||z||^2, their base rule)
    tower: int              # 0: one tuner over all weights; per tower: 1 Stream AC, 2 Intentional


# What the kernels need of a tuner row and a Config: _Hyper's flags and scalars, then TUNER_PARAMS'
Hyper = collections.namedtuple("Hyper", _Hyper._fields + tuple(TUNER_PARAMS))


def hyper(config):
    """The Hyper bundle of a Config, from its tuner's row."""
    t = TUNER[config.tuner]
    return Hyper(t.vector, t.scalar_h, t.needs_d, t.needs_zh, t.needs_gV2,
                 bool(config.normalized) and t.normalizable, config.gamma * config.lam,
                 float(config.psi), float(config.mu), bool(config.nosid_alpha_bound),
                 t.bound, t.adaptive, OBGD_EPS, *INTENTIONAL_CONSTANTS, True, True, True, t.tower,
                 *(float(getattr(config, k)) for k in TUNER_PARAMS))


class State(NamedTuple):
    """The learner's arrays: W (8, n) rows, s scalars, ist integers, and the active list."""
    W: np.ndarray
    s: np.ndarray
    ist: np.ndarray
    vt: np.ndarray        # step at which a weight left the active list (lazy v-vec decay)
    act: np.ndarray       # the active weights act[:ist[N_ACT]]
    in_act: np.ndarray    # 1 for an active weight


class Scratch(NamedTuple):
    """Sparse gradients: full-length vectors that are zero outside sup[:ns]."""
    gU: np.ndarray
    gH: np.ndarray
    d: np.ndarray
    mark: np.ndarray      # 1 for an index already in sup
    sup: np.ndarray


class Dense(NamedTuple):
    """A dense model's gradients: weights [lo, hi) one factored block, g^U = outer(x, fU),
    g^H = outer(x, fH), d = c1 outer(x1, fV1) + c0 outer(x, fV); outside it gU, gH and
    d = c1 gV1 + c0 gV are materialized.  acc: scratch of max(lo, n - hi, C); one = [1.0]."""
    lo: int
    hi: int
    gU: np.ndarray
    gH: np.ndarray
    gV: np.ndarray
    gV1: np.ndarray
    x: np.ndarray
    x1: np.ndarray
    fU: np.ndarray
    fH: np.ndarray
    fV: np.ndarray
    fV1: np.ndarray
    c1: float
    c0: float
    one: np.ndarray
    acc: np.ndarray


class Block(NamedTuple):
    """One dense block's factors: g^U_qc = x_q gU_c, g^H_qc = x_q gH_c,
    d_qc = c1 x1_q d1_c + c0 x_q d0_c (a materialized vector: x = x1 = [1])."""
    x: np.ndarray
    x1: np.ndarray
    gU: np.ndarray
    gH: np.ndarray
    d1: np.ndarray
    d0: np.ndarray
    c1: float
    c0: float


class Rows(NamedTuple):
    """The state rows of W over one block of weights."""
    w: np.ndarray
    z: np.ndarray
    h: np.ndarray
    hv: np.ndarray
    e: np.ndarray
    vv: np.ndarray
    zbv: np.ndarray


class Transition(NamedTuple):
    """One step's scalars: the action, reward, gamma_{t+1} = gamma (1 - term), and V, H at S_t."""
    A: int
    R: float
    gamma1: float
    V0: float
    H0: float


def materialized(gU, gH, d):
    """A Dense bundle whose every gradient is materialized (no factored block): d = 1 d + 0 d."""
    n, one, empty = gU.shape[0], np.ones(1, gU.dtype), np.zeros(0, gU.dtype)
    return Dense(n, n, gU, gH, d, d, empty, empty, empty, empty, empty, empty, 1.0, 0.0, one,
                 np.zeros(n, gU.dtype))


# ------------------------------------------------------------------------------------------------
# The tuner: docs/algorithms.md §2 steps 2-7 for all variants
# ------------------------------------------------------------------------------------------------

# Two forms of the per-weight passes.  Sparse (linear features): the loops run over a list of live
# indices.  Dense (the network): the weights are cut into blocks (Block), and in a block of R x C
# weights every gradient is an outer product or a sum of two, which is how a dense layer's
# gradients come out of backpropagation (nets.dense_factors): they are never materialized.  Each
# loop body is therefore written out twice, on purpose: LLVM vectorizes the dense loops only in
# this form (neither an index select nor an inlined per-weight body function vectorizes: 10-40x
# slower).  tests/test_sparse_vs_dense.py and tests/test_metatrace.py check both forms against
# algorithms.py and the identities of docs/algorithms.md §3.  No kernel here allows `contract`
# (FMA fusion): with it, a process that compiled the kernels rounded differently from one that
# loaded them from Numba's cache, so a machine's first run did not reproduce
# (tests/test_cold_cache.py; docs/performance.md).

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
    return nets.exp(x)


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _dots(gU, gH, d, h, z, gl, sup, m):
    """<g^U,h>, <g^H,h>, <d,h>, ||g^U||^2, <gl z + g^U, d> over sup[:m]."""
    gUh = gHh = dh = gU2 = zd = 0.0
    for k in range(m):
        i = sup[k]
        g = np.float64(gU[i])
        gU2 += g * g
        gUh += g * h[i]                                       # S1 / M2: <g^U, h>
        gHh += np.float64(gH[i]) * h[i]                       # S2 / M4: <g^H, h>
        dh += np.float64(d[i]) * h[i]                         # S8 / M10: <d, h>
        zd += (gl * np.float64(z[i]) + g) * d[i]              # N2: <z_t, d>
    return gUh, gHh, dh, gU2, zd


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _zh(z, gU, h, gl, act, m):
    """<z_t, h> = <gl z_{t-1} + g^U, h> over every live weight act[:m] (SID-R, NOSID-R)."""
    zh = 0.0
    for k in range(m):
        i = act[k]
        zh += (gl * np.float64(z[i]) + gU[i]) * h[i]
    return zh


@nb.njit(cache=True, error_model="numpy")
def _vector_pass(W, gU, gH, delta, hp, act, m):
    """V1-V4 / M1, M3, M5, M6 for every live weight act[:m] (eb_i = exp(bv_i), see above)."""
    zbv, vv, hv, e = W[ZBV_], W[VV_], W[HV_], W[EB_]
    gl, psi, mu, norm = hp.gl, hp.psi, hp.mu, hp.norm
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
def _weight_pass(W, gU, gH, d, alpha, delta, dh, hp, act, m):
    """z_t, then h-vec (V8 / M9), h (S8 / M10) and w (S9 / V9 / M11) for every live weight, with
    alpha_i = alpha e_i (V7 / M8) or alpha.  Returns NaN iff a new w_i or an alpha_i is
    non-finite or an alpha_i has underflowed to 0, else 0."""
    w, z, h, hv, e = W[W_], W[Z_], W[H_], W[HV_], W[EB_]
    gl, psi, vec, sh = hp.gl, hp.psi, hp.vec, hp.sh
    bad = 0.0
    for k in range(m):
        i = act[k]
        a = alpha * e[i] if vec else alpha                    # V7 / M8
        gh = gH[i]
        zi = gl * z[i] + gU[i]                                # AC trace z_t (§2.0 step 2)
        z[i] = zi
        if vec:
            hv[i] += a * (zi * (delta + d[i] * hv[i]) + psi * gh)     # V8 / M9
        if sh:
            h[i] += a * (zi * (delta + dh) + psi * gh)        # S8 / M10
        wi = w[i] + a * (delta * zi + psi * gh)               # S9 / V9 / M11
        w[i] = wi
        bad += 0.0 * wi + (0.0 * a if a > 0.0 else np.nan)
    return bad


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _dots_blk(h, b):
    """<g^U,h>, <g^H,h>, <d,h> over one dense block."""
    x, x1, gU, gH, d1, d0, c1, c0 = b
    C = gU.shape[0]
    gUh = gHh = dh = 0.0
    for q in range(x.shape[0]):
        hq = h[q * C:(q + 1) * C]
        su = sh = s1 = s0 = 0.0
        for c in range(C):
            hc = np.float64(hq[c])
            su += gU[c] * hc                                  # S1 / M2
            sh += gH[c] * hc                                  # S2 / M4
            s1 += d1[c] * hc                                  # S8 / M10: <d, h>
            s0 += d0[c] * hc
        xq = np.float64(x[q])
        gUh += xq * su
        gHh += xq * sh
        dh += c1 * np.float64(x1[q]) * s1 + c0 * xq * s0
    return gUh, gHh, dh


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _zdots_blk(z, h, b, gl):
    """<z_t, h> and <z_t, d> with z_t = gl z + g^U over one dense block (SID-R, NOSID-R)."""
    x, x1, gU, gH, d1, d0, c1, c0 = b
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


@nb.njit(cache=True, error_model="numpy")
def _vector_blk(r, b, acc, delta, hp, small):
    """V1-V4 / M1, M3, M5, M6 over one dense block (e = eb = exp(bv)), and
    acc_c += sum_q e_qc (g^U_qc)^2 (the per-weight part of V5 / M7, summed per column so that
    the loop vectorizes)."""
    zbv, vv, hv, e = r.zbv, r.vv, r.hv, r.e
    x, gU, gH, norm = b.x, b.gU, b.gH, hp.norm
    ty = zbv.dtype.type
    delta, gl, psi, mu, zero = ty(delta), ty(hp.gl), ty(hp.psi), ty(hp.mu), ty(0.0)
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
            acc[c] += ei * (g * g)                            # V5 / M7: e_i (g^U_i)^2


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _weight_blk(r, b, alpha, delta, dh, hp):
    """As _weight_pass (z_t; V8 / M9; S8 / M10; S9 / V9 / M11) over one dense block."""
    w, z, h, hv, e = r.w, r.z, r.h, r.hv, r.e
    x, x1, gU, gH, d1, d0 = b.x, b.x1, b.gU, b.gH, b.d1, b.d0
    vec, sh = hp.vec, hp.sh
    ty = w.dtype.type
    alpha, delta, dh, gl, psi, nan = ty(alpha), ty(delta), ty(dh), ty(hp.gl), ty(hp.psi), ty(np.nan)
    C = gU.shape[0]
    bad = ty(0.0)
    for q in range(x.shape[0]):
        xq, a1, a0 = x[q], ty(b.c1) * x1[q], ty(b.c0) * x[q]
        for c in range(C):
            i = q * C + c
            a = alpha * e[i] if vec else alpha                # V7 / M8
            gh = xq * gH[c]
            zi = gl * z[i] + xq * gU[c]                       # AC trace z_t
            z[i] = zi
            if vec:
                hv[i] += a * (zi * (delta + (a1 * d1[c] + a0 * d0[c]) * hv[i]) + psi * gh)  # V8
            if sh:
                h[i] += a * (zi * (delta + dh) + psi * gh)    # S8 / M10
            wi = w[i] + a * (delta * zi + psi * gh)           # S9 / V9 / M11
            w[i] = wi
            bad += ty(0.0) * wi + (ty(0.0) * a if a > ty(0.0) else nan)
    return bad


@nb.njit(cache=True)
def _obgd_bias(hp, step):
    """O6's bias correction 1 / (1 - beta2^t) at step t = step + 1 (1 unless adaptive)."""
    return 1.0 / (1.0 - hp.beta2 ** (step + 1)) if hp.adapt else 1.0


@nb.njit(cache=True)
def _obgd_bound(s, hp, delta, znorm):
    """O2-O4: M = alpha kappa max(|delta|, 1) ||z||_1 (kept in s[OBGD_M]) -> the step
    alpha / M if M > 1, else alpha."""
    alpha = math.exp(s[BETA])
    M = alpha * hp.kappa * max(abs(delta), 1.0) * znorm
    s[OBGD_M] = M
    return alpha / M if M > 1.0 else alpha


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _obgd_trace(W, gU, delta, hp, cb, act, m):
    """O1 (and O5-O6, adaptive) for every live weight act[:m] -> sum_i |z_i| s_i, the norm of
    O3: s_i = 1 / sqrt(cb v_i + eps) (cb = 1 / (1 - beta2^t)), kept in row hv, adaptive; else 1."""
    z, vv, s = W[Z_], W[VV_], W[HV_]
    gl, b2, eps = hp.gl, hp.beta2, hp.eps
    tot = 0.0
    if hp.adapt:
        for k in range(m):
            i = act[k]
            zi = gl * z[i] + gU[i]                            # O1
            z[i] = zi
            dz = delta * zi
            v = b2 * vv[i] + (1.0 - b2) * (dz * dz)           # O5
            vv[i] = v
            si = 1.0 / math.sqrt(cb * v + eps)                # O6
            s[i] = si
            tot += abs(zi) * si                               # O3
    else:
        for k in range(m):
            i = act[k]
            zi = gl * z[i] + gU[i]                            # O1
            z[i] = zi
            tot += abs(zi)                                    # O3
    return tot


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _obgd_weights(W, gH, step, delta, hp, act, m):
    """O4: w_i += step (delta z_i + psi g^H_i) s_i for every live weight; NaN iff a new w_i is
    non-finite, else 0."""
    w, z, s = W[W_], W[Z_], W[HV_]
    psi, adapt = hp.psi, hp.adapt
    bad = 0.0
    for k in range(m):
        i = act[k]
        u = delta * z[i] + psi * gH[i]
        wi = w[i] + step * (u * s[i] if adapt else u)         # O4 (O6)
        w[i] = wi
        bad += 0.0 * wi
    return bad


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _obgd_trace_blk(r, b, delta, hp, cb):
    """As _obgd_trace (O1, O5, O6, the O3 norm) over one dense block; one loop per form, so
    that each vectorizes."""
    z, vv, s = r.z, r.vv, r.hv
    x, gU = b.x, b.gU
    ty = z.dtype.type
    gl, b2, b2c = ty(hp.gl), ty(hp.beta2), ty(1.0 - hp.beta2)
    delta, cb, eps, one = ty(delta), ty(cb), ty(hp.eps), ty(1.0)
    C = gU.shape[0]
    tot = 0.0
    for q in range(x.shape[0]):
        xq = x[q]
        zq, vq, sq = z[q * C:(q + 1) * C], vv[q * C:(q + 1) * C], s[q * C:(q + 1) * C]
        acc = 0.0
        if hp.adapt:
            for c in range(C):
                zi = gl * zq[c] + xq * gU[c]                  # O1
                zq[c] = zi
                dz = delta * zi
                v = b2 * vq[c] + b2c * (dz * dz)              # O5
                vq[c] = v
                si = one / np.sqrt(cb * v + eps)              # O6
                sq[c] = si
                acc += abs(zi) * si                           # O3
        else:
            for c in range(C):
                zi = gl * zq[c] + xq * gU[c]                  # O1
                zq[c] = zi
                acc += abs(zi)                                # O3
        tot += acc
    return tot


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _obgd_weight_blk(r, b, step, delta, hp):
    """As _obgd_weights (O4) over one dense block."""
    w, z, s = r.w, r.z, r.hv
    x, gH = b.x, b.gH
    ty = w.dtype.type
    step, delta, psi = ty(step), ty(delta), ty(hp.psi)
    C = gH.shape[0]
    bad = ty(0.0)
    for q in range(x.shape[0]):
        xq = x[q]
        wq, zq, sq = w[q * C:(q + 1) * C], z[q * C:(q + 1) * C], s[q * C:(q + 1) * C]
        if hp.adapt:
            for c in range(C):
                wi = wq[c] + step * ((delta * zq[c] + psi * (xq * gH[c])) * sq[c])   # O4 (O6)
                wq[c] = wi
                bad += ty(0.0) * wi
        else:
            for c in range(C):
                wi = wq[c] + step * (delta * zq[c] + psi * (xq * gH[c]))             # O4
                wq[c] = wi
                bad += ty(0.0) * wi
    return bad


@nb.njit(cache=True, fastmath={"reassoc"})
def _sumsq(v):
    """||v||^2 in float64."""
    t = 0.0
    for i in range(v.shape[0]):
        t += np.float64(v[i]) * v[i]
    return t


@nb.njit(cache=True)
def _all_finite(v):
    """Every entry of v finite."""
    for i in range(v.shape[0]):
        if not math.isfinite(v[i]):
            return False
    return True


@nb.njit(cache=True, fastmath={"reassoc"})
def _sum(v):
    """sum(v) in float64."""
    t = 0.0
    for i in range(v.shape[0]):
        t += v[i]
    return t


@nb.njit(cache=True)
def _meta_scalars(s, hp, delta, gUh, gHh, g2, zh, zd, gV2, flat=False):
    """The scalar lines: S1-S6 / M2, M4-M7 / V5-V6, SID-R and NOSID-R (§4.2-4.3).  g2: S5's
    ||g^U||^2, or V5 / M7's <e^{bv}, (g^U)^2> for the vector tuners.  Sets s and returns the new
    beta (or beta-hat, or the vector tuner's shared offset).  flat: a layer norm of this step is
    in its eps regime, so S5-S6 bound this step's alpha only (§2.5)."""
    gl, psi, mu, norm = hp.gl, hp.psi, hp.mu, hp.norm
    beta = s[BETA]
    if hp.sh and not hp.zdots:                                # scalar, mixed
        s[ZB] = gl * s[ZB] + gUh                              # S1 / M2
        D = delta * s[ZB] + psi * gHh                         # S2 / M4
        if norm:
            s[V] = max(abs(D), s[V] + mu * (abs(D) - s[V]))  # S3 / M5
            if s[V] > 0:
                beta += mu * D / s[V]                         # S4 / M6
        else:
            beta += mu * D
    elif hp.zdots:                                            # SID-R, NOSID-R
        D = delta * zh + psi * gHh                            # §4.2
        if not hp.gv2:
            beta += mu * D
        else:
            s[NMAX] = max(s[NMAX], gV2)                       # N1: hard maximum of ||g^V||^2
            if s[NMAX] > 0:
                beta += mu * D / s[NMAX]
            if hp.nosid_bound and zd != 0.0:
                beta = min(beta, -math.log(abs(zd)))          # N2
    if norm:
        x = math.exp(beta) * g2                               # S5 / V5 / M7
        if flat:                                              # §2.5: u and beta untouched
            s[BETA] = beta
            return beta - math.log(max(x, 1.0))
        s[U] = max(x, s[U] + (1.0 - gl) * (x - s[U]))
        beta -= math.log(max(s[U], 1.0))                      # S6 / V6 / M7
    s[BETA] = beta
    return beta


@nb.njit(cache=True)
def tuner_step(st, sc, ns, delta, gV2, hp):
    """One step of §2.0 (steps 2-7) on sparse gradients sc (zero outside sc.sup[:ns]); returns
    False if anything went non-finite or a step-size vanished.  On return st.W holds z_t,
    w_{t+1}, h_{t+1}, and st.s the new beta.  Live weights: st.act[:st.ist[N_ACT]]."""
    W, s, ist, vt, act, in_act = st
    gU, gH, d, _, sup = sc
    mu = hp.mu
    step = ist[STEP]
    vv, lazy = W[VV_], (hp.vec and hp.norm) or hp.adapt   # activate the weights first touched
    rho = hp.beta2 if hp.adapt else 1.0 - mu                 # in this episode
    for k in range(ns):
        i = sup[k]
        if in_act[i] == 0:
            in_act[i] = 1
            act[ist[N_ACT]] = i
            ist[N_ACT] += 1
            if lazy:                      # the v-vec decays of the steps it was not live
                vv[i] *= rho ** (step - vt[i])
    m = ist[N_ACT]
    if hp.bound:                          # ObGD, O1-O6
        cb = _obgd_bias(hp, step)
        znorm = _obgd_trace(W, gU, delta, hp, cb, act, m)
        a = _obgd_bound(s, hp, delta, znorm)
        bad = _obgd_weights(W, gH, a, delta, hp, act, m)
        ist[STEP] = step + 1
        return math.isfinite(bad) and math.isfinite(znorm) and a > 0.0
    gUh = gHh = dh = gU2 = zd = zh = xv = 0.0
    if hp.dots:                           # dot products with the pre-update h
        gUh, gHh, dh, gU2, zd = _dots(gU, gH, d, W[H_], W[Z_], hp.gl, sup, ns)
    if hp.vec:
        _vector_pass(W, gU, gH, delta, hp, act, m)
        xv = _x_vector(W[EB_], gU, sup, ns)              # g^U is zero off its support
    if hp.zdots:
        zh = _zh(W[Z_], gU, W[H_], hp.gl, act, m)
    beta = _meta_scalars(s, hp, delta, gUh, gHh, xv if hp.vec else gU2, zh, zd, gV2)
    alpha = math.exp(beta)                                    # S7; V7 / M8: alpha * e_i
    bad = _weight_pass(W, gU, gH, d, alpha, delta, dh, hp, act, m)
    ist[STEP] = step + 1
    return math.isfinite(bad) and math.isfinite(beta) and alpha > 0.0


@nb.njit(cache=True)
def _block(k, dn, n):
    """Block k of dense_step -> (first weight, end, Block): blocks 0 and 2 are the materialized
    [0, lo) and [hi, n) (x = x1 = [1]), block 1 the factored [lo, hi)."""
    if k == 1:
        return dn.lo, dn.hi, Block(dn.x, dn.x1, dn.fU, dn.fH, dn.fV1, dn.fV, dn.c1, dn.c0)
    a, e = (0, dn.lo) if k == 0 else (dn.hi, n)
    return a, e, Block(dn.one, dn.one, dn.gU[a:e], dn.gH[a:e], dn.gV1[a:e], dn.gV[a:e],
                       dn.c1, dn.c0)


@nb.njit(cache=True)
def _rows(W, a, e):
    """The state rows of W over weights [a, e)."""
    return Rows(W[W_, a:e], W[Z_, a:e], W[H_, a:e], W[HV_, a:e], W[EB_, a:e], W[VV_, a:e],
                W[ZBV_, a:e])


@nb.njit(cache=True)
def dense_step(st, dn, delta, gV2, hp, flat=False):
    """One step of §2.0 (steps 2-7) over every weight, in the dense blocks of dn; False if
    anything went non-finite or a step-size vanished.  gV2 = ||g^V||^2 (NOSID-R only); flat: a
    layer norm at S_t is in its eps regime (§2.5)."""
    if hp.bound:
        return _obgd_dense(st, dn, delta, hp)
    W = st.W
    n = W.shape[1]
    small = _small_steps(W, hp.norm, hp.mu)
    gUh = gHh = dh = zh = zd = xv = 0.0
    gU2 = 0.0
    for k in range(3):                    # the dot products with the pre-update h, V1-V4 / M1-M6
        a, e, b = _block(k, dn, n)
        if e == a:
            continue
        if hp.dots:
            u, hh, dd = _dots_blk(W[H_, a:e], b)
            gUh += u
            gHh += hh
            dh += dd
            gU2 += _sumsq(b.x) * _sumsq(b.gU)
        if hp.zdots:
            u, dd = _zdots_blk(W[Z_, a:e], W[H_, a:e], b, hp.gl)
            zh += u
            zd += dd
        if hp.vec:
            C = b.gU.shape[0]
            dn.acc[:C] = 0.0
            _vector_blk(_rows(W, a, e), b, dn.acc, delta, hp, small)
            xv += _sum(dn.acc[:C])
    beta = _meta_scalars(st.s, hp, delta, gUh, gHh, xv if hp.vec else gU2, zh, zd, gV2, flat)
    alpha = math.exp(beta)                                    # S7; V7 / M8: alpha * e_i
    bad = 0.0
    for k in range(3):
        a, e, b = _block(k, dn, n)
        if e == a:
            continue
        bad += _weight_blk(_rows(W, a, e), b, alpha, delta, dh, hp)
    st.ist[STEP] += 1
    return math.isfinite(bad) and math.isfinite(beta) and alpha > 0.0


@nb.njit(cache=True)
def _obgd_dense(st, dn, delta, hp):
    """dense_step for ObGD and adaptive ObGD (§9, O1-O6)."""
    W = st.W
    n = W.shape[1]
    cb = _obgd_bias(hp, st.ist[STEP])
    znorm = 0.0
    for k in range(3):
        a, e, b = _block(k, dn, n)
        if e > a:
            znorm += _obgd_trace_blk(_rows(W, a, e), b, delta, hp, cb)
    step = _obgd_bound(st.s, hp, delta, znorm)
    bad = 0.0
    for k in range(3):
        a, e, b = _block(k, dn, n)
        if e > a:
            bad += _obgd_weight_blk(_rows(W, a, e), b, step, delta, hp)
    st.ist[STEP] += 1
    return math.isfinite(bad) and math.isfinite(znorm) and step > 0.0


@nb.njit(cache=True)
def end_episode(st, dense):
    """§2.0 step 8: reset z, the meta traces and u; w, h, beta, v persist."""
    W, s, ist = st.W, st.s, st.ist
    if dense:
        W[Z_, :] = 0.0
        W[ZBV_, :] = 0.0
    else:
        for k in range(ist[N_ACT]):
            i = st.act[k]
            W[Z_, i] = 0.0
            W[ZBV_, i] = 0.0
            st.in_act[i] = 0
            st.vt[i] = ist[STEP]
        ist[N_ACT] = 0
    s[ZB] = 0.0
    s[U] = 0.0


# ------------------------------------------------------------------------------------------------
# The linear-softmax model on sparse features (docs/algorithms.md §1.4)
# ------------------------------------------------------------------------------------------------

class Features(NamedTuple):
    """A state's sparse features: phi[idx[j]] = val[j] for j < k, zero elsewhere."""
    idx: np.ndarray
    val: np.ndarray
    k: int


class LinearModel(NamedTuple):
    """The linear-softmax model's sizes and its policy buffers (pi, log pi at S_t)."""
    nf: int
    n_actions: int
    pi: np.ndarray
    logpi: np.ndarray


@nb.njit(cache=True)
def linear_policy(w, lm, f):
    """V(s) = theta.phi and pi = softmax(Theta phi) (§1.4); fills lm.pi, lm.logpi, -> (V, H)."""
    return linear_policy_arrays(w, lm.nf, lm.n_actions, f.idx, f.val, f.k, lm.pi, lm.logpi)


@nb.njit(cache=True, inline="always")
def weights(st):
    """The weights w of a State bundle (row W_ of W)."""
    return st.W[W_]


@nb.njit(cache=True)
def linear_policy_arrays(w, nf, n_actions, idx, val, k, pi, logpi):
    """linear_policy on its arrays (the hot path: flat is measurably faster here)."""
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
    return sample_at(pi, rng.random())


@nb.njit(cache=True)
def sample_at(pi, x):
    """The action of the distribution pi at the uniform x in [0, 1)."""
    c = 0.0
    for a in range(pi.shape[0] - 1):
        c += pi[a]
        if x < c:
            return a
    return pi.shape[0] - 1


@nb.njit(cache=True)
def linear_step(st, sc, hp, lm, f0, f1, tr):
    """One AC(lambda) + tuner step for the linear-softmax model (§1.3-1.5, §2.0).

    f0 are S_t's features with tr.V0, tr.H0 and lm.pi, lm.logpi from `linear_policy` at w_t;
    f1 are S_{t+1}'s; tr.gamma1 = gamma (1 - term) is the discount used in delta and d.
    -> (delta, ok)."""
    gU, gH, d, mark, sup = sc
    nf, n_actions, pi, logpi = lm
    idx0, val0, k0 = f0
    idx1, val1, k1 = f1
    A, R, gamma1, V0, H0 = tr
    st, hp = State(*st), Hyper(*hp)
    psi = hp.psi
    w = st.W[W_]
    V1 = linear_value(w, idx1, val1, k1) if gamma1 != 0.0 else 0.0
    delta = R + gamma1 * V1 - V0                              # §1.3 TD error
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
    ok = tuner_step(st, sc, ns, delta, gV2, hp)
    for k in range(ns):                       # scratch back to zero
        i = sup[k]
        gU[i] = 0.0
        gH[i] = 0.0
        d[i] = 0.0
        mark[i] = 0
    return delta, ok and math.isfinite(delta)


@nb.njit(cache=True)
def order_stats(x, ks, bins=4096):
    """The ks-th smallest entries of x (exact; ks sorted ascending, 0 <= k < x.size), without
    sorting x: a histogram over [min, max] finds each one's bin, and only that bin is sorted."""
    lo, hi = x[0], x[0]
    for v in x:
        lo, hi = min(lo, v), max(hi, v)
    out = np.empty(ks.size, np.float64)
    if lo == hi:
        out[:] = lo
        return out
    scale = bins / (np.float64(hi) - np.float64(lo))
    count = np.zeros(bins + 1, np.int64)
    for v in x:
        count[int((np.float64(v) - lo) * scale)] += 1
    for j in range(ks.size):
        below, b = 0, 0
        while below + count[b] <= ks[j]:
            below += count[b]
            b += 1
        cand = np.empty(count[b], x.dtype)
        m = 0
        for v in x:
            if int((np.float64(v) - lo) * scale) == b:
                cand[m] = v
                m += 1
        out[j] = np.sort(cand)[ks[j] - below]
    return out


class Learner:
    """AC(lambda) + tuner state for a model with n weights; state is the point of this class."""

    def __init__(self, n, config, dtype=np.float64, dense=False, towers=1):
        self.config = check_config(config)
        self.towers = towers
        self.tuner = TUNER[config.tuner]
        self.norm = bool(config.normalized) and self.tuner.normalizable
        self.hyper = hyper(config)
        self.dense = dense
        self.n = n
        # sparse: a weight's 7 entries share a cache line; dense: each row contiguous (BLAS, SIMD)
        self.W = np.empty((8, n), dtype) if dense else np.empty((n, 8), dtype).T
        # written, not calloc'd: a row the tuner reads but never writes (h for vector) left on
        # the kernel's shared zero page made the vector tuner 10x slower where the array did
        # not get huge pages (docs/performance.md)
        self.W.fill(0.0)
        self.W[EB_] = 1.0                                     # bv = 0
        self.split = n          # two towers: the critic's weights [0, split), the actor's after
        self.s = np.zeros(N_SCALARS * (towers if self.tuner.two_tower else 1))
        self.s[BETA::N_SCALARS] = math.log(config.alpha)
        self.ist = np.zeros(2, np.int64)
        self.vt = np.zeros(n, np.int64)
        self.act = np.zeros(n, np.int64)
        self.in_act = np.zeros(n, np.uint8)
        self.bundle = State(self.W, self.s, self.ist, self.vt, self.act, self.in_act)

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
        """Per-weight log step-sizes beta_i (alpha_i = exp(beta_i)); ObGD: those of its last step
        (O4, O6); two-tower tuners: each tower's (§11 A4; §12 I10 over D, I14)."""
        if self.tuner.two_tower:
            return self._tower_beta()
        if self.tuner.vector:
            return self.s[BETA] + self.beta_vec()
        if self.tuner.bound:
            b = self.s[BETA] - math.log(max(self.s[OBGD_M], 1.0))
            t = int(self.ist[STEP])
            if self.tuner.adaptive and t > 0:
                vv, b2 = self.W[VV_].astype(np.float64), self.config.beta2
                if not self.dense:        # the lazy decays of the weights not live now
                    vv = np.where(self.in_act == 1, vv, vv * b2 ** (t - self.vt))
                return b - 0.5 * np.log(vv / (1.0 - b2 ** t) + OBGD_EPS)
            return np.full(self.n, b)
        return np.full(self.n, self.s[BETA])

    def _tower_beta(self):
        """beta() of a two-tower tuner: tower k holds weights [0, split) (critic) or [split, n)."""
        out, t = np.empty(self.n), int(self.ist[STEP])
        for k, (a, e) in enumerate(((0, self.split), (self.split, self.n))):
            sk = self.s[k * N_SCALARS:(k + 1) * N_SCALARS]
            if self.tuner.bound:
                out[a:e] = sk[BETA] - math.log(max(sk[OBGD_M], 1.0))
            elif t > 0:                       # Intentional: alpha_t / D_i, row hv holding 1 / D
                out[a:e] = sk[BETA] + np.log(self.W[HV_, a:e].astype(np.float64))
            else:
                out[a:e] = sk[BETA]
        return out

    def state(self):
        """Every array of the learner's state, by name (for checkpoints and tests)."""
        return self.bundle._asdict()

    def check(self, arrays, between_episodes=False):
        """ValueError unless `arrays` (named as `state()`) is a complete, in-range state of this
        learner (check_state); between_episodes: also with an empty active list."""
        check_state(arrays, self)
        if between_episodes and (arrays["ist"][N_ACT] != 0 or arrays["in_act"].any()):
            raise ValueError("the learner's active list is not empty (not saved between episodes)")

    def beta_quantiles(self, beta, lo, hi, qs):
        """The lower order statistics at fractions qs of beta_i over the weights [lo, hi), exact;
        beta: this learner's `beta()`, computed once by the caller."""
        ks = np.floor(np.asarray(qs) * (hi - lo - 1)).astype(np.int64)
        if self.tuner.vector:     # beta_i = beta + log eb_i rises with eb_i: select on eb
            return self.s[BETA] + np.log(order_stats(self.W[EB_, lo:hi], ks))
        if "vv" in self.tuner.rows:             # adaptive ObGD, Intentional AC
            return order_stats(beta[lo:hi], ks)
        return (beta[lo],) * len(ks)

    def rows(self):
        """The rows of W this learner's tuner reads and writes: w, z and its state rows."""
        return (W_, Z_) + tuple(ROW[r] for r in self.tuner.rows)

    def end_episode(self):
        """§2.0 step 8."""
        end_episode(self.bundle, self.dense)


class HandoffError(RuntimeError):
    """`learn` called without the `policy` call for its S_t just before it."""


AGENT_FORMAT, AGENT_VERSION = "metatrace-agent", 1


def check_arrays(live, arrays):
    """ValueError unless `arrays` holds every array of `live` with its dtype and shape, and
    nothing else."""
    if set(arrays) != set(live):
        extra = sorted(set(arrays) ^ set(live))
        raise ValueError(f"array {extra[0]} is missing or unexpected")
    for k, v in live.items():
        a = arrays[k]
        if a.dtype != v.dtype or a.shape != v.shape:
            raise ValueError(f"array {k} is {a.dtype}{list(a.shape)}, expected "
                             f"{v.dtype}{list(v.shape)}")


def check_state(arrays, learner):
    """ValueError unless `arrays` is a complete, in-range state of `learner`: same names, dtypes
    and shapes, finite values, positive e^{bv}, and counters and an active list that cannot
    index outside the arrays (the kernels do not bounds-check)."""
    check_arrays(learner.state(), arrays)
    W, s, ist, vt, act, in_act = (arrays[k] for k in State._fields)
    n, k = learner.n, int(ist[N_ACT])
    if not (np.isfinite(W).all() and np.isfinite(s).all()) or not (W[EB_] > 0).all() \
            or not (W[VV_] >= 0).all():
        raise ValueError("the state holds non-finite values, a non-positive step-size factor or "
                         "a negative normalizer")
    if not (0 <= k <= n and ist[STEP] >= 0 and ((vt >= 0) & (vt <= ist[STEP])).all()
            and ((act[:k] >= 0) & (act[:k] < n)).all() and np.isin(in_act, (0, 1)).all()):
        raise ValueError("the state's counters or active list are out of range")


def save_agent(path, kind, learner, rng, shape, extra, run=None):
    """An agent file: the learner's arrays, `extra` numeric arrays of the caller's (named
    extra_<key>) and a JSON table (format, kind, Config, the model's shape, the action
    generator's state, and `run`: the caller's JSON record of the run that made it) in one
    .npz; no pickle."""
    meta = {"format": AGENT_FORMAT, "version": AGENT_VERSION, "kind": kind,
            "config": learner.config._asdict(), "shape": shape,
            "dtype": learner.W.dtype.str, "rng": rng.bit_generator.state}
    if run is not None:
        meta["run"] = run
    extra = {f"extra_{k}": np.asarray(v) for k, v in extra.items()}
    if any(v.dtype.kind not in "biuf" for v in extra.values()):
        raise ValueError("extra arrays must be numeric")
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **learner.state(), **extra)


def read_agent(path, kind=None):
    """(meta, arrays) of an agent file, read with allow_pickle=False; ValueError naming what is
    wrong (not an agent file, another kind, another format version)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")[()]))
    except Exception as e:   # OSError, a bad zip or CRC, a pickled array, no or bad meta
        raise ValueError(f"{path} is not a readable agent file ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != AGENT_FORMAT:
        raise ValueError(f"{path} is not a metatrace agent file")
    if meta.get("version") != AGENT_VERSION:
        raise ValueError(f"{path} has agent format version {meta.get('version')!r}; this code "
                         f"reads {AGENT_VERSION}")
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')} agent, not a {kind} one")
    try:
        meta["config"] = check_config(Config(**meta["config"]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its settings are invalid ({e})") from None
    meta["extra"] = {k[6:]: arrays.pop(k) for k in list(arrays) if k.startswith("extra_")}
    return meta, arrays


def restore(agent, meta, arrays):
    """Copy a read agent file's state into a freshly built agent of the same shape -> agent."""
    check_state(arrays, agent.learner)
    probe = type(agent.rng.bit_generator)()
    try:
        probe.state = meta["rng"]
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"the agent file's generator state is malformed ({e})") from None
    for k, v in agent.learner.state().items():
        v[...] = arrays[k]
    agent.rng.bit_generator.state = probe.state
    return agent


def load(path):
    """The agent saved at `path`: a LinearAgent, NetAgent or TwoTowerAgent, whichever it holds."""
    meta, _ = read_agent(path)
    return {"linear": LinearAgent, "towers": TwoTowerAgent}.get(meta["kind"], NetAgent).load(path)


_ANNOUNCED = set()


def compile_note(kernel, prog="metatrace", quiet=False):
    """One line on stderr when `kernel`'s Numba code is not in the on-disk cache yet (its first
    call compiles it: tens of seconds, on the first use of this version of the kernel files on this
    machine: nets.kernel_cache_dir). Only the first call in a
    process looks: the command line's own note, quiet or not, silences the agents' after it."""
    if _ANNOUNCED:
        return False
    _ANNOUNCED.add(id(kernel))
    try:
        cold = not os.path.exists(kernel._cache._cache_file._index_path)
    except AttributeError:          # another Numba: say nothing rather than guess
        cold = False
    if cold and not quiet:
        print(f"{prog}: compiling the Numba kernels (first use of this version on this machine, "
              "tens of seconds)", file=sys.stderr, flush=True)
    return cold


class LinearAgent:
    """Linear AC(lambda) + tuner on sparse features you supply, one step at a time:
    A = agent.policy(idx, val) at S_t, then agent.learn(R, idx1, val1, gamma1) for S_{t+1}
    (gamma1 = 0 at a terminal state), and agent.end_episode() when an episode ends.
    Feature indices lie in [0, n_features); at most `max_active` features are non-zero.

    The first of the seed's two SeedSequence children is left to the environment (mountain car
    uses it), the second draws the agent's actions."""

    def __init__(self, config, n_features, n_actions, max_active=64, seed=0):
        compile_note(linear_step)
        if TUNER[config.tuner].two_tower:
            raise ValueError(f"tuner {config.tuner} keeps a state per tower: it runs on two "
                             "networks (TwoTowerAgent), not on linear features")
        self.config = config
        self.nf, self.n_actions, self.max_active = int(n_features), int(n_actions), int(max_active)
        self.learner = Learner(self.nf * (1 + self.n_actions), config)
        n = self.learner.n
        self.scratch = Scratch(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, np.uint8),
                               np.zeros(max_active * (n_actions + 2), np.int64))
        self.model = LinearModel(self.nf, self.n_actions, np.zeros(n_actions), np.zeros(n_actions))
        self.f = [Features(np.zeros(max_active, np.int64), np.zeros(max_active), 0)
                  for _ in range(2)]
        self.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
        self.VH, self.A, self.policy_calls = (0.0, 0.0), -1, 0

    def _features(self, slot, idx, val):
        idx, val = np.asarray(idx), np.asarray(val, np.float64)
        k = idx.shape[0]
        if idx.ndim != 1 or val.shape != idx.shape or k > self.max_active:
            raise ValueError(f"features: idx and val must be 1-D of one length <= max_active "
                             f"{self.max_active}; got shapes {idx.shape} and {val.shape}")
        if k and (idx.min() < 0 or idx.max() >= self.nf or len(set(idx.tolist())) != k):
            raise ValueError(f"feature indices must be distinct and in [0, {self.nf})")
        f = self.f[slot]
        f.idx[:k], f.val[:k] = idx, val
        self.f[slot] = f._replace(k=k)
        return self.f[slot]

    def act(self, idx, val, greedy=False, rng=None):
        """An action at the state with these features, with no effect on learning: a sample of
        pi (from `rng`, default a fresh generator) or its most probable action."""
        lm = LinearModel(self.nf, self.n_actions, np.zeros(self.n_actions), np.zeros(self.n_actions))
        f = Features(np.asarray(idx, np.int64), np.asarray(val, np.float64), len(idx))
        linear_policy(self.learner.w, lm, f)
        if greedy:
            return int(np.argmax(lm.pi))
        return int(sample_at(lm.pi, (rng if rng is not None else np.random.default_rng()).random()))

    def policy(self, idx, val):
        """A ~ pi(.|S_t) for S_t's features, remembered for the next `learn`."""
        f = self._features(0, idx, val)
        self.VH = linear_policy(self.learner.w, self.model, f)
        self.A = int(sample_at(self.model.pi, self.rng.random()))
        self.policy_calls += 1
        return self.A

    def learn(self, R, idx1, val1, gamma1):
        """AC(lambda) + tuner update from (S_t, A, R, S_{t+1}); -> ok (False: diverged)."""
        if self.policy_calls != 1:
            raise HandoffError(f"learn needs exactly one policy call at S_t before it, not "
                               f"{self.policy_calls}; an evaluation action goes through act()")
        self.policy_calls = 0
        f1 = self._features(1, idx1, val1)
        tr = Transition(self.A, float(R), float(gamma1), *self.VH)
        _, ok = linear_step(self.learner.bundle, self.scratch, self.learner.hyper, self.model,
                            self.f[0], f1, tr)
        return ok

    def end_episode(self):
        """§2.0 step 8 at the end of an episode."""
        self.learner.end_episode()
        self.policy_calls = 0

    def save(self, path, run=None, **extra):
        """Weights, every tuner state and the action generator to `path` (.npz, no pickle),
        with `extra` numeric arrays (read back by read_agent) and the JSON record `run`;
        between `learn` and the next `policy`."""
        if self.policy_calls:
            raise HandoffError("save between learn (or end_episode) and the next policy call")
        save_agent(path, "linear", self.learner, self.rng,
                   {"n_features": self.nf, "n_actions": self.n_actions,
                    "max_active": self.max_active}, extra, run)

    @classmethod
    def load(cls, path):
        """The LinearAgent saved at `path`; it continues exactly as the saved one would."""
        meta, arrays = read_agent(path, "linear")
        try:
            sh = meta["shape"]
            n = (1 + int(sh["n_actions"])) * int(sh["n_features"])
            held = arrays["W"].shape[-1] if "W" in arrays else 0
            if n != held or not 0 < int(sh["max_active"]) <= int(sh["n_features"]):
                raise ValueError(f"it declares {n} weights and {sh['max_active']} active features; "
                                 f"the file holds {held} weights")
            agent = cls(meta["config"], **sh)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: its model shape is invalid ({e})") from None
        return restore(agent, meta, arrays)


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


POLICIES = ("softmax", "gaussian")   # §1.1 softmax over discrete actions, §10 diagonal Gaussian
SIGMA_MIN = 1e-3                       # §10 G1: the floor of the Gaussian's standard deviation
MEAN, STD, DSTD, ACTION = range(4)     # rows of a Gaussian head's buffer
LOG_2PI = math.log(2.0 * math.pi)


@nb.njit(cache=True)
def gaussian_policy(out, g):
    """§10 G1-G2: mean mu = out[:d], std sigma = SIGMA_MIN + softplus(rho), rho = out[d:2d], into
    g's rows MEAN, STD and DSTD = dsigma/drho; returns the entropy H (float64)."""
    d = g.shape[1]
    H = 0.0
    for i in range(d):
        rho = np.float64(out[d + i])
        sp = rho + math.log1p(math.exp(-rho)) if rho > 0.0 else math.log1p(math.exp(rho))
        g[MEAN, i] = np.float64(out[i])
        g[STD, i] = SIGMA_MIN + sp
        g[DSTD, i] = 1.0 / (1.0 + math.exp(-rho))
        H += math.log(g[STD, i]) + 0.5 * (LOG_2PI + 1.0)
    return H


@nb.njit(cache=True)
def gaussian_cotangents(g, cot, rH):
    """§10 G4-G5, in place: row 0 d(log pi(A)/2)/d(mu, rho) (column 0 holds dV = 1, so row 0 yields
    g^U) and, if rH > 0, row rH dH/d(mu, rho) = (0, dsigma/drho / sigma)."""
    d = g.shape[1]
    for i in range(d):
        x = (g[ACTION, i] - g[MEAN, i]) / g[STD, i]
        cot[0, 1 + i] = 0.5 * x / g[STD, i]
        cot[0, 1 + d + i] = 0.5 * (x * x - 1.0) / g[STD, i] * g[DSTD, i]
        if rH > 0:
            cot[rH, 1 + i] = 0.0
            cot[rH, 1 + d + i] = g[DSTD, i] / g[STD, i]


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
def _net_policy(table, wt, buf, w, obs, same_obs, pi, logpi, x):
    """Forward pass at S_t (§1.5), pi, log pi, and A ~ pi, drawn at the uniform x ->
    (A, V(S_t), H(S_t)); (wt, buf) is the workspace.  x comes from the agent's generator in
    Python: the same number Numba's draw would give, without its ~7 us of unboxing a Generator
    (docs/performance.md)."""
    nets.forward_kernel(table, wt, w, obs, buf, same_obs)
    V, logits = nets.head(wt, buf, pi.shape[0])
    H = softmax_policy(logits, pi, logpi)
    return sample_at(pi, x), np.float64(V), H


@nb.njit(cache=True)
def _net_gaussian(table, wt, buf, w, obs, same_obs, g, eps, greedy):
    """Forward pass at S_t (§1.5), the Gaussian's rows in g and A = mu + sigma eps (eps: N(0, 1)
    draws, one per dimension; A = mu if greedy) in g's row ACTION -> (V(S_t), H(S_t))."""
    nets.forward_kernel(table, wt, w, obs, buf, same_obs)
    V, out = nets.head(wt, buf, 2 * g.shape[1])
    H = gaussian_policy(out, g)
    for i in range(g.shape[1]):
        g[ACTION, i] = g[MEAN, i] if greedy else g[MEAN, i] + g[STD, i] * eps[i]
    return np.float64(V), H


@nb.njit(cache=True)
def _net_greedy(table, wt, buf, w, obs, pi, logpi):
    """The most probable action at obs (forward pass in (wt, buf); no learning state touched)."""
    nets.forward_kernel(table, wt, w, obs, buf, False)
    _, logits = nets.head(wt, buf, pi.shape[0])
    softmax_policy(logits, pi, logpi)
    return np.argmax(pi)


class NetBufs(NamedTuple):
    """What one network step reads and writes besides the learner state: the net's layer table,
    the workspaces at S_t (ws0) and S_{t+1} (ws1), the cotangents and gradients, the policy's
    buffers at S_t (pi, log pi of a softmax; a Gaussian's rows MEAN, STD, DSTD, ACTION in gauss,
    0 columns for a softmax) and the dense layer's factors (x0, f0 at S_t; x1, f1 at S_{t+1})."""
    table: np.ndarray
    ws0: tuple
    ws1: tuple
    cot: np.ndarray
    cot1: np.ndarray
    G: np.ndarray
    G1: np.ndarray
    lazy: int
    rH: int
    pi: np.ndarray
    logpi: np.ndarray
    gauss: np.ndarray
    last1: np.ndarray
    gH: np.ndarray
    gV: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    fU: np.ndarray
    fH: np.ndarray
    fV: np.ndarray
    fV1: np.ndarray
    one: np.ndarray
    acc: np.ndarray
    lo: int
    hi: int


@nb.njit(cache=True)
def net_learn(phases, nb_, st, hp, tr, obs1):
    """One transition of §1.5 / §2.0 on the network, in phases (a bit mask; all = 15):
    1 vjp at S_t (g^U, g^H, g^V), 2 forward at S_{t+1} with w_t, 4 vjp at S_{t+1} (grad V, for
    tuners that need d), 8 delta and `dense_step`.  -> (ok, delta)."""
    st, hp, nb_ = State(*st), Hyper(*hp), NetBufs(*nb_)   # values here, not loads through memory
    if nb_.gauss.shape[1] and not _all_finite(nb_.gauss[ACTION]):
        return False, np.nan                                  # the policy itself has diverged
    w = st.W[W_]
    table, gamma1, need_d = nb_.table, tr.gamma1, hp.dots
    (wt0, buf0), (wt1, buf1) = nb_.ws0, nb_.ws1
    if phases & 1:
        if nb_.gauss.shape[1]:
            gaussian_cotangents(nb_.gauss, nb_.cot, nb_.rH)
        else:
            policy_cotangents(nb_.pi, nb_.logpi, tr.H0, tr.A, nb_.cot, nb_.rH)
        nets.vjp_kernel(table, wt0, w, buf0, nb_.cot, nb_.G, nb_.lazy)
    if phases & 2 and gamma1 != 0.0:
        nets.forward_kernel(table, wt1, w, obs1, buf1, False)
        nb_.last1[:] = obs1.reshape(-1)
    if phases & 4 and need_d and gamma1 != 0.0:
        nets.vjp_kernel(table, wt1, w, buf1, nb_.cot1, nb_.G1, nb_.lazy)
    if not phases & 8:
        return True, 0.0
    V1 = np.float64(nets.head(wt1, buf1, 0)[0]) if gamma1 != 0.0 else 0.0
    delta = tr.R + gamma1 * V1 - tr.V0                        # §1.3 TD error
    lo, hi = nb_.lo, nb_.hi
    gV2 = 0.0
    if hp.gv2:
        gV = nb_.gV
        gV2 = _sumsq(gV[:lo]) + _sumsq(gV[hi:]) + _sumsq(nb_.x0) * _sumsq(nb_.fV)
    dn = Dense(lo, hi, nb_.G[0], nb_.gH, nb_.gV, nb_.G1[0], nb_.x0, nb_.x1, nb_.fU, nb_.fH,
               nb_.fV, nb_.fV1, gamma1 if need_d else 0.0, -1.0, nb_.one, nb_.acc)
    flat = hp.norm and nets.layer_norm_flat(table, wt0, buf0)
    ok = dense_step(st, dn, delta, gV2, hp, flat)
    return ok and math.isfinite(delta), delta


@nb.njit(cache=True)
def net_step(phases, table, wt0, buf0, wt1, buf1, cot, cot1, G, G1, lazy, rH, pi, logpi, gauss,
             last1, gH, gV, x0, x1, fU, fH, fV, fV1, one, acc, lo, hi, W, s, ist, vt, act, in_act,
             hp, A, R, gamma1, V0, H0, obs1):
    """`net_learn` with flat arguments: the network model's one Python -> Numba call per step.
    Flat, because Numba's dispatcher types a tuple argument member by member in Python: the
    bundles cost about 30 us a step here (a MinAtar step is 100-250 us; docs/performance.md)."""
    nb_ = NetBufs(table, (wt0, buf0), (wt1, buf1), cot, cot1, G, G1, lazy, rH, pi, logpi, gauss,
                  last1, gH, gV, x0, x1, fU, fH, fV, fV1, one, acc, lo, hi)
    return net_learn(phases, nb_, State(W, s, ist, vt, act, in_act), hp,
                     Transition(A, R, gamma1, V0, H0), obs1)


def act_of(net, ws, theta, obs, d, greedy=False, rng=None):
    """An action of the policy network `net` (weights theta, workspace ws) at obs, with no effect
    on learning: a sample of pi (from `rng`, default a fresh generator) or, greedy, its most
    probable action; d > 0: a Gaussian over d dimensions (§10), else a softmax."""
    rng = rng if rng is not None else np.random.default_rng()
    if d:
        g = np.zeros((4, d))
        eps = np.zeros(d) if greedy else rng.standard_normal(d)
        _net_gaussian(net.table, ws.table, ws.buf, theta, obs, False, g, eps, greedy)
        return g[ACTION].copy()
    pi, logpi = np.zeros(net.n_actions), np.zeros(net.n_actions)
    if greedy:
        return int(_net_greedy(net.table, ws.table, ws.buf, theta, obs, pi, logpi))
    return int(_net_policy(net.table, ws.table, ws.buf, theta, obs, False, pi, logpi,
                           rng.random())[0])


def handoff(agent):
    """HandoffError unless exactly one `policy` call came before this `learn`; resets the count."""
    calls, agent.policy_calls = agent.policy_calls, 0
    if calls != 1:
        raise HandoffError(f"learn needs exactly one policy call at S_t before it, not {calls}; "
                           "an evaluation action goes through act()")


def gaussian_action(gauss, A):
    """A Gaussian's action A into gauss's row ACTION -> 0 (the softmax action slot); a softmax's
    A unchanged."""
    if not gauss.shape[1]:
        return A
    a = np.asarray(A, dtype=np.float64)
    if a.shape != gauss[ACTION].shape:
        raise ValueError(f"action {A!r}: expected {gauss.shape[1]} numbers")
    gauss[ACTION] = a
    return 0


def dtype_and_policy(path, meta):
    """The checked dtype and policy of a read network-agent file -> (dtype, policy)."""
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError:
        raise ValueError(f"{path}: dtype {meta['dtype']!r} is not a dtype") from None
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{path}: dtype {dtype} is not float32 or float64")
    policy = meta["shape"].get("policy", "softmax")
    if policy not in POLICIES:
        raise ValueError(f"{path}: policy {policy!r} is not one of {', '.join(POLICIES)}")
    return dtype, policy


class NetAgent:
    """AC(lambda) + tuner on a nets.py network: `policy` at S_t, then `learn` from the transition.

    Per step (§1.5): forward(S_t) [policy]; one vjp at S_t for g^U, g^H (psi > 0) and g^V
    (tuners that need d) together; forward(S_{t+1}) with w_t for V(S_{t+1}) and, when the tuner
    needs d, a vjp at S_{t+1} for grad V(S_{t+1}); then `dense_step` over every weight.  The
    largest dense layer's gradients stay factored (nets.dense_factors): their outer products are
    formed inside the tuner's passes, never stored.  Two workspaces alternate between S_t and
    S_{t+1}, so that the next `policy` at S_{t+1} reuses the first layer's patches.  Buffers are
    allocated once here; `policy` and `learn` are one Numba call each.  `learn` refuses to run
    unless exactly one `policy` call came before it; `act` gives an action with no effect on
    learning (its own workspace and generator).
    """

    def __init__(self, net, config, seed=0, dtype=np.float32, sparsity=0.0, policy="softmax"):
        compile_note(net_step)
        if TUNER[config.tuner].two_tower:
            raise ValueError(f"tuner {config.tuner} keeps a state per tower: it runs on two "
                             "networks (TwoTowerAgent; --towers 2)")
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}; accepted: {', '.join(POLICIES)}")
        if policy == "gaussian" and net.n_actions % 2:
            raise ValueError(f"a Gaussian policy needs a mean and a std output per action "
                             f"dimension; the net has {net.n_actions} outputs besides V")
        self.net, self.config, self.dtype = net, config, np.dtype(dtype)
        init_ss, agent_ss = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(agent_ss)
        self.learner = Learner(net.n_params, config, dtype, dense=True)
        self.learner.W[W_] = nets.init_params(net, np.random.default_rng(init_ss), dtype, sparsity)
        n, A = net.n_params, net.n_actions
        self.need_d = self.learner.tuner.needs_d
        # cotangent rows: g^U, then g^H if psi > 0, then g^V if the tuner needs d
        self.rH = 1 if config.psi > 0 else 0
        self.rV = 1 + self.rH if self.need_d else 0
        self.k = 1 + (self.rH > 0) + self.need_d
        self.ws = [nets.workspace(net, dtype, k=self.k) for _ in range(2)]
        self.ws_act = nets.workspace(net, dtype, k=1)
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
        gaussian = policy == "gaussian"
        self.pi, self.logpi = np.zeros(0 if gaussian else A), np.zeros(0 if gaussian else A)
        self.gauss = np.zeros((4, A // 2 if gaussian else 0))    # rows MEAN, STD, DSTD, ACTION
        self.eps = np.zeros(self.gauss.shape[1])     # G3's N(0, 1) draws (a Generator argument
        # costs Numba ~7 us a call to unbox; numpy's draws are the same numbers as Numba's)
        self.V0 = self.H0 = self.delta = 0.0          # self.delta: the last learn's TD error
        self.A, self.policy_calls = -1, 0
        L = self.learner
        self.flat = []                  # net_step's arguments before the transition, per cur
        for cur in (0, 1):
            b = self._bufs(cur)
            self.flat.append((b.table, *b.ws0, *b.ws1, *b[3:], *L.bundle, L.hyper))
        self.clock = None     # np.zeros(3): seconds in forward, backward, tuner (learn split in
        # four calls); np.zeros(2): seconds in policy and in learn (one call each, as unclocked)

    def _bufs(self, cur):
        """The NetBufs of one step with ws[cur] at S_t."""
        (x0, f0), (x1, f1) = self.factors[cur], self.factors[1 - cur]
        ws0, ws1 = self.ws[cur], self.ws[1 - cur]
        return NetBufs(self.net.table, (ws0.table, ws0.buf), (ws1.table, ws1.buf), self.cot,
                       self.cot1, self.G, self.G1, self.lazy, self.rH, self.pi, self.logpi,
                       self.gauss, self.last1, self.gH, self.gV, x0, x1, f0[0],
                       f0[self.rH] if self.rH else self.zc, f0[self.rV] if self.need_d else self.zc,
                       f1[0], self.one, self.acc, self.lo, self.hi)

    @property
    def w(self):
        """The network parameters theta (a view)."""
        return self.learner.W[W_]

    def _check(self, obs):
        if obs.shape != self.net.obs_shape or obs.dtype != self.dtype:
            raise ValueError(f"observation has shape {obs.shape} and dtype {obs.dtype}; expected "
                             f"shape {self.net.obs_shape} and dtype {self.dtype}")
        return np.ascontiguousarray(obs)

    @property
    def gaussian(self):
        """Whether the policy is a diagonal Gaussian (§10) rather than a softmax."""
        return self.gauss.shape[1] > 0

    def policy(self, obs):
        """Forward pass at S_t with w_t; returns A ~ pi(.|S_t), remembered for the next `learn`:
        an int (softmax) or a float64 vector (Gaussian, unclipped: §10)."""
        obs = self._check(obs)
        t0 = time.perf_counter() if self.clock is not None else 0.0
        same = self.fresh1 and _same(obs, self.last1)
        if same:
            self.cur = 1 - self.cur
        ws = self.ws[self.cur]
        if self.gaussian:
            self.rng.standard_normal(out=self.eps)
            self.V0, self.H0 = _net_gaussian(self.net.table, ws.table, ws.buf, self.w, obs, same,
                                             self.gauss, self.eps, False)
            A = self.gauss[ACTION].copy()
        else:
            A, self.V0, self.H0 = _net_policy(self.net.table, ws.table, ws.buf, self.w, obs, same,
                                              self.pi, self.logpi, self.rng.random())
        self.fresh1 = False
        self.A = A
        self.policy_calls += 1
        if self.clock is not None:
            self.clock[0] += time.perf_counter() - t0
        return A

    def act(self, obs, greedy=False, rng=None):
        """An action at obs with no effect on learning: a sample of pi (from `rng`, default a
        fresh generator) or, greedy, its most probable action."""
        return act_of(self.net, self.ws_act, self.w, self._check(obs), self.gauss.shape[1],
                      greedy, rng)

    def learn(self, A, R, obs1, gamma1):
        """AC(lambda) + tuner update from (S_t, A, R, S_{t+1}); gamma1 = gamma(1 - term). -> ok."""
        handoff(self)
        obs1 = self._check(obs1)
        clock = self.clock
        args = self.learn_args(A, R, obs1, gamma1)
        if clock is None:
            ok, self.delta = net_step(15, *args)
        elif len(clock) == 2:
            t0 = time.perf_counter()
            ok, self.delta = net_step(15, *args)
            clock[1] += time.perf_counter() - t0
        else:
            for phase, slot in ((1, 1), (2, 0), (4, 1), (8, 2)):
                t0 = time.perf_counter()
                ok, self.delta = net_step(phase, *args)
                clock[slot] += time.perf_counter() - t0
        self.fresh1 = ok and gamma1 != 0.0
        return ok

    def learn_args(self, A, R, obs1, gamma1):
        """The arguments of net_step after the phase mask (a Gaussian's action goes into its row
        ACTION, log pi is of that unclipped action: §10)."""
        A = gaussian_action(self.gauss, A)
        return (*self.flat[self.cur], int(A), float(R), float(gamma1), self.V0, self.H0, obs1)

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
        """§2.0 step 8."""
        self.learner.end_episode()
        self.fresh1 = False
        self.policy_calls = 0

    def save(self, path, run=None, **extra):
        """Parameters, every tuner state, the network's description and the action generator
        to `path` (.npz, no pickle), with `extra` numeric arrays and the JSON record `run`;
        between `learn` and the next `policy`."""
        if self.policy_calls:
            raise HandoffError("save between learn (or end_episode) and the next policy call")
        shape = nets.spec(self.net)
        if self.gaussian:
            shape["policy"] = "gaussian"
        save_agent(path, "net", self.learner, self.rng, shape, extra, run)

    @classmethod
    def load(cls, path):
        """The NetAgent saved at `path`; it continues exactly as the saved one would."""
        meta, arrays = read_agent(path, "net")
        net = nets.from_spec(meta["shape"]) if isinstance(meta["shape"], dict) else None
        if net is None:
            raise ValueError(f"{path}: no network description")
        held = arrays["W"].shape[-1] if "W" in arrays else 0
        if net.n_params != held:
            raise ValueError(f"{path}: its network has {net.n_params} weights, the file holds "
                             f"{held}")
        dtype, policy = dtype_and_policy(path, meta)
        agent = cls(net, meta["config"], dtype=dtype, policy=policy)
        restore(agent, meta, arrays)
        agent.fresh1 = False
        return agent


# ------------------------------------------------------------------------------------------------
# Two towers (docs/algorithms.md §11-§12): a critic network V_w and an actor network pi_theta
# ------------------------------------------------------------------------------------------------

@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _obgd_tower(w, z, g, s, delta, kappa, gl):
    """A1-A5 on one tower: z <- gl z + g; M = alpha kappa max(|delta|, 1) ||z||_1 (kept in
    s[OBGD_M]); w <- w + step delta z with step = alpha / M if M > 1, else alpha -> NaN iff a new
    w_i is non-finite, else 0."""
    ty = w.dtype.type
    gl_ = ty(gl)
    tot = 0.0
    for i in range(w.shape[0]):
        zi = gl_ * z[i] + g[i]                                # A1 / A2
        z[i] = zi
        tot += abs(zi)
    alpha = math.exp(s[BETA])
    M = alpha * kappa * max(abs(delta), 1.0) * tot            # A3
    s[OBGD_M] = M
    c = ty((alpha / M if M > 1.0 else alpha) * delta)         # A4
    bad = ty(0.0)
    for i in range(w.shape[0]):
        wi = w[i] + c * z[i]                                  # A5
        w[i] = wi
        bad += ty(0.0) * wi
    return bad


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _intentional_norms(z, v, r, g, gl, beta2, cb, rmsprop):
    """I2-I6 on one tower: v <- beta2 v + (1 - beta2) g^2; r = 1 / D, D = sqrt(cb v) + 1e-8 (cb =
    1 / (1 - beta2^t); D = 1 without RMSProp), kept for I14; z <- gl z + g ->
    (||g||^2_D^-1, ||z||^2_D^-1)."""
    ty = z.dtype.type
    gl_, b2, b2c, cb_, eps, one = ty(gl), ty(beta2), ty(1.0 - beta2), ty(cb), ty(1e-8), ty(1.0)
    n = m = 0.0
    if rmsprop:
        for i in range(z.shape[0]):
            gi = g[i]
            vi = b2 * v[i] + b2c * (gi * gi)                  # I2
            v[i] = vi
            ri = one / (np.sqrt(cb_ * vi) + eps)              # I3
            r[i] = ri
            zi = gl_ * z[i] + gi                              # I5
            z[i] = zi
            n += gi * gi * ri                                 # I4
            m += zi * zi * ri                                 # I6
    else:
        for i in range(z.shape[0]):
            gi = g[i]
            zi = gl_ * z[i] + gi                              # I5
            z[i] = zi
            n += gi * gi                                      # I4
            m += zi * zi                                      # I6
    return n, m


@nb.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def _intentional_weights(w, z, r, c, rmsprop):
    """I14: w <- w + c z / D (r = 1 / D), c = alpha delta-tilde -> NaN iff a new w_i is
    non-finite, else 0."""
    ty = w.dtype.type
    c_ = ty(c)
    bad = ty(0.0)
    if rmsprop:
        for i in range(w.shape[0]):
            wi = w[i] + c_ * z[i] * r[i]
            w[i] = wi
            bad += ty(0.0) * wi
    else:
        for i in range(w.shape[0]):
            wi = w[i] + c_ * z[i]
            w[i] = wi
            bad += ty(0.0) * wi
    return bad


@nb.njit(cache=True)
def _intentional_delta(s, hp, delta, t, normalize):
    """I11-I13, P14-P15: delta clipped to C times its bias-corrected RMS (its EMA in s[CLIP2_S],
    started at 1; without the adaptive clip to [-1, 1]) and, for the actor, divided by the
    bias-corrected mean of its magnitude (s[ABAR_S])."""
    if hp.adaptive_clip:
        bc = hp.beta_clip
        prev = 1.0 if t == 1 else s[CLIP2_S]          # their code's EMA starts at 1
        s[CLIP2_S] = bc * prev + (1.0 - bc) * delta * delta                     # I11
        cap = hp.clip_mult * math.sqrt(s[CLIP2_S] / (1.0 - bc ** t))            # I12
        dc = math.copysign(min(abs(delta), cap), delta)                        # I13
    else:
        dc = min(max(delta, -1.0), 1.0)
    if not normalize:
        return dc
    bn = hp.beta_norm
    s[ABAR_S] = bn * s[ABAR_S] + (1.0 - bn) * abs(dc)                           # P14
    return dc / max(s[ABAR_S] / (1.0 - bn ** t), 1e-12)                         # P15


@nb.njit(cache=True)
def _intentional_tower(w, z, v, r, g, s, hp, delta, eta, t, normalize):
    """I1-I14 (critic) / P1-P16 (actor, normalize) on one tower at step t (r: scratch for 1 / D)
    -> NaN iff a new w_i is non-finite; log alpha_t in s[BETA]."""
    gl = hp.gl
    cb = 1.0 / (1.0 - hp.beta2 ** t) if hp.rmsprop else 1.0
    n, m = _intentional_norms(z, v, r, g, gl, hp.beta2, cb, hp.rmsprop)
    if hp.sigma:
        s[SIGMA_S] += (1.0 - gl) * (n - s[SIGMA_S])                             # I7
        u = math.sqrt(s[SIGMA_S] / (1.0 - gl ** t) * m)                         # I8-I9
    else:
        u = m                                                 # their base rule: ||z||^2
    alpha = eta / max(u, 1e-8)                                                  # I10
    s[BETA] = math.log(alpha)
    dt = _intentional_delta(s, hp, delta, t, normalize)
    return _intentional_weights(w, z, r, alpha * dt, hp.rmsprop) + 0.0 * alpha


@nb.njit(cache=True)
def tower_policy(tV, wtV, bufV, tP, wtP, bufP, W, nV, obs, same_obs, pi, logpi, gauss, eps, x):
    """Forward passes of both towers at S_t with the current weights (the critic's workspace
    holding obs's patches if same_obs); A ~ pi (softmax: drawn at the uniform x; Gaussian:
    mu + sigma eps into gauss's row ACTION) -> (A, V(S_t), H(S_t))."""
    nets.forward_kernel(tV, wtV, W[W_, :nV], obs, bufV, same_obs)
    V = np.float64(nets.head(wtV, bufV, 0)[0])
    nets.forward_kernel(tP, wtP, W[W_, nV:], obs, bufP, False)
    if gauss.shape[1]:
        _, out = nets.head(wtP, bufP, 2 * gauss.shape[1])
        H = gaussian_policy(out, gauss)
        for i in range(gauss.shape[1]):
            gauss[ACTION, i] = gauss[MEAN, i] + gauss[STD, i] * eps[i]
        return 0, V, H
    _, logits = nets.head(wtP, bufP, pi.shape[0])
    H = softmax_policy(logits, pi, logpi)
    return sample_at(pi, x), V, H


@nb.njit(cache=True)
def tower_learn(tV, wtV0, bufV0, wtV1, bufV1, cotV, GV, GV1, tP, wtP, bufP, cotP, cotF, GP, pi,
                logpi, gauss, zV, zP, one, acc, last1, W, s, ist, vt, act, in_act, hp, A, R,
                gamma1, V0, H0, obs1):
    """One transition on two towers (§11-§12): grad V(S_t) from the critic at S_t; V(S_{t+1})
    (and, for tuners that need d, its gradient) at w_t; delta; the actor's cotangents and its vjp
    at S_t; then the tuner: per tower (Stream AC, Intentional AC), or `dense_step` over both as
    one weight vector (Metatrace, untuned, ObGD) -> (ok, delta)."""
    hp = Hyper(*hp)
    if gauss.shape[1] and not _all_finite(gauss[ACTION]):
        return False, np.nan                                  # the policy itself has diverged
    nV, n = GV.shape[1], W.shape[1]
    wv, wp = W[W_, :nV], W[W_, nV:]
    nets.vjp_kernel(tV, wtV0, wv, bufV0, cotV, GV, -1)        # grad_w V(S_t)
    V1 = 0.0
    if gamma1 != 0.0:
        nets.forward_kernel(tV, wtV1, wv, obs1, bufV1, False)
        last1[:] = obs1.reshape(-1)
        V1 = np.float64(nets.head(wtV1, bufV1, 0)[0])
        if hp.dots:
            nets.vjp_kernel(tV, wtV1, wv, bufV1, cotV, GV1, -1)
    delta = R + gamma1 * V1 - V0                              # §1.3 TD error
    if gauss.shape[1]:                    # rows: d(log pi(A) / 2), dH on the actor's outputs
        gaussian_cotangents(gauss, cotP, 1)
    else:
        policy_cotangents(pi, logpi, H0, A, cotP, 1)
    if hp.tower:                          # A2: grad log pi + psi sign(delta) grad H, traced
        sg = hp.psi * (1.0 if delta > 0 else (-1.0 if delta < 0 else 0.0))
        for j in range(cotP.shape[1]):
            cotF[0, j] = 2.0 * cotP[0, j] + sg * cotP[1, j]
    else:                                 # g^U's actor part, and g^H where psi > 0
        for r in range(cotF.shape[0]):
            cotF[r] = cotP[r]
    nets.vjp_kernel(tP, wtP, wp, bufP, cotF, GP, -1)
    ok = math.isfinite(delta)
    t = ist[STEP] + 1
    if hp.tower == 1:
        bad = _obgd_tower(wv, W[Z_, :nV], GV[0], s[:N_SCALARS], delta, hp.kappa, hp.gl) + \
            _obgd_tower(wp, W[Z_, nV:], GP[0], s[N_SCALARS:], delta, hp.kappa_pi, hp.gl)
        ist[STEP] = t
        return ok and math.isfinite(bad), delta
    if hp.tower == 2:
        bad = _intentional_tower(wv, W[Z_, :nV], W[VV_, :nV], W[HV_, :nV], GV[0], s[:N_SCALARS],
                                 hp, delta, hp.eta_v, t, False) + \
            _intentional_tower(wp, W[Z_, nV:], W[VV_, nV:], W[HV_, nV:], GP[0], s[N_SCALARS:],
                               hp, delta, hp.eta_pi, t, True)
        ist[STEP] = t
        return ok and math.isfinite(bad), delta
    # one weight vector (w_V, theta), §1.5 with no shared weight: the critic's weights are
    # dense_step's block [0, nV) with g^U = grad V, g^H = 0, d = gamma1 grad V' - grad V; the
    # actor's its block [nV, n) as a 1 x nP outer product: g^U = ½ grad log pi, g^H = grad H, d = 0
    dn = Dense(nV, n, GV[0], zV, GV[0], GV1[0], one, one, GP[0], GP[1] if GP.shape[0] > 1 else zP,
               zP, zP, gamma1 if hp.dots else 0.0, -1.0, one, acc)
    flat = hp.norm and (nets.layer_norm_flat(tV, wtV0, bufV0) or
                        nets.layer_norm_flat(tP, wtP, bufP))
    gV2 = _sumsq(GV[0]) if hp.gv2 else 0.0
    return dense_step(State(W, s, ist, vt, act, in_act), dn, delta, gV2, hp, flat) and ok, delta


class TwoTowerAgent:
    """AC(lambda) on two networks (§11-§12): a critic V_w (a nets.py net with no action outputs)
    and an actor pi_theta (a net whose value output is unused: its cotangent is 0, so its weights
    never move and enter no norm).  One learner state over w = (w_V, theta): Metatrace, untuned
    AC(lambda) and ObGD tune it as one weight vector; Stream AC and Intentional AC keep a state
    per tower.  The interface is NetAgent's: `policy` at S_t (both towers' forward passes), then
    `learn` (one Numba call each)."""

    def __init__(self, critic, actor, config, seed=0, dtype=np.float32, sparsity=0.0,
                 policy="softmax"):
        compile_note(tower_learn)
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r}; accepted: {', '.join(POLICIES)}")
        if critic.n_actions != 0 or critic.obs_shape != actor.obs_shape:
            raise ValueError("the critic needs no action outputs and the actor's observation "
                             f"shape: got {critic.n_actions} outputs, shapes {critic.obs_shape} "
                             f"and {actor.obs_shape}")
        if policy == "gaussian" and actor.n_actions % 2:
            raise ValueError(f"a Gaussian policy needs a mean and a std output per action "
                             f"dimension; the actor has {actor.n_actions} outputs")
        self.critic, self.actor, self.net = critic, actor, actor
        self.config, self.dtype = config, np.dtype(dtype)
        init_ss, agent_ss = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(agent_ss)
        nV, nP, A = critic.n_params, actor.n_params, actor.n_actions
        L = self.learner = Learner(nV + nP, config, dtype, dense=True, towers=2)
        L.split = nV
        rV, rP = (np.random.default_rng(ss) for ss in init_ss.spawn(2))
        L.W[W_, :nV] = nets.init_params(critic, rV, dtype, sparsity)
        L.W[W_, nV:] = nets.init_params(actor, rP, dtype, sparsity)
        per_tower = L.tuner.two_tower
        kP = 2 if not per_tower and config.psi > 0 else 1
        self.wsV = [nets.workspace(critic, dtype, k=1) for _ in range(2)]
        self.wsP = nets.workspace(actor, dtype, k=kP)
        self.ws_act = nets.workspace(actor, dtype, k=1)
        self.cur = 0                                   # wsV[cur] holds S_t, wsV[1 - cur] S_{t+1}
        self.cotV = np.ones((1, 1), dtype)
        self.cotP, self.cotF = np.zeros((2, 1 + A), dtype), np.zeros((kP, 1 + A), dtype)
        self.GV, self.GV1, self.GP = (np.zeros((1, nV), dtype), np.zeros((1, nV), dtype),
                                      np.zeros((kP, nP), dtype))
        self.zV, self.zP = np.zeros(nV, dtype), np.zeros(nP, dtype)     # zero g^H, d blocks
        self.one, self.acc = np.ones(1, dtype), np.zeros(max(nV, nP), dtype)
        self.last1 = np.zeros(int(np.prod(actor.obs_shape)), dtype)
        self.fresh1 = False
        gaussian = policy == "gaussian"
        self.pi, self.logpi = np.zeros(0 if gaussian else A), np.zeros(0 if gaussian else A)
        self.gauss = np.zeros((4, A // 2 if gaussian else 0))
        self.eps = np.zeros(self.gauss.shape[1])
        self.V0 = self.H0 = self.delta = 0.0
        self.A, self.policy_calls = -1, 0
        self.clock = None      # np.zeros(2) or (3): seconds in policy and in learn

    w = NetAgent.w
    gaussian = NetAgent.gaussian
    _check = NetAgent._check

    def policy(self, obs):
        """Forward passes at S_t with the current weights; returns A ~ pi(.|S_t), remembered for
        the next `learn`: an int (softmax) or a float64 vector (Gaussian, unclipped: §10)."""
        obs = self._check(obs)
        t0 = time.perf_counter() if self.clock is not None else 0.0
        same = self.fresh1 and _same(obs, self.last1)
        if same:
            self.cur = 1 - self.cur
        ws = self.wsV[self.cur]
        x = 0.0
        if self.gaussian:
            self.rng.standard_normal(out=self.eps)
        else:
            x = self.rng.random()
        A, self.V0, self.H0 = tower_policy(self.critic.table, ws.table, ws.buf, self.actor.table,
                                           self.wsP.table, self.wsP.buf, self.learner.W,
                                           self.learner.split, obs, same, self.pi, self.logpi,
                                           self.gauss, self.eps, x)
        A = self.gauss[ACTION].copy() if self.gaussian else A
        self.fresh1 = False
        self.A = A
        self.policy_calls += 1
        if self.clock is not None:
            self.clock[0] += time.perf_counter() - t0
        return A

    def act(self, obs, greedy=False, rng=None):
        """An action at obs with no effect on learning: a sample of pi (from `rng`, default a
        fresh generator) or, greedy, its most probable action (the actor's forward pass only)."""
        return act_of(self.actor, self.ws_act, self.learner.W[W_, self.learner.split:],
                      self._check(obs), self.gauss.shape[1], greedy, rng)

    def learn(self, A, R, obs1, gamma1):
        """The update from (S_t, A, R, S_{t+1}); gamma1 = gamma (1 - term). -> ok."""
        handoff(self)
        obs1 = self._check(obs1)
        t0 = time.perf_counter() if self.clock is not None else 0.0
        ok, self.delta = tower_learn(*self.learn_args(A, R, obs1, gamma1))
        if self.clock is not None:
            self.clock[1] += time.perf_counter() - t0
        self.fresh1 = ok and gamma1 != 0.0
        return ok

    def learn_args(self, A, R, obs1, gamma1):
        """The arguments of tower_learn (a Gaussian's action goes into its row ACTION)."""
        A = gaussian_action(self.gauss, A)
        w0, w1 = self.wsV[self.cur], self.wsV[1 - self.cur]
        L = self.learner
        return (self.critic.table, w0.table, w0.buf, w1.table, w1.buf, self.cotV, self.GV,
                self.GV1, self.actor.table, self.wsP.table, self.wsP.buf, self.cotP, self.cotF,
                self.GP, self.pi, self.logpi, self.gauss, self.zV, self.zP, self.one, self.acc,
                self.last1, *L.bundle, L.hyper, int(A),
                float(R), float(gamma1), self.V0, self.H0, obs1)

    def gradients(self):
        """grad_w V(S_t), the actor's vjp rows and grad_w V(S_{t+1}) of the last `learn`
        (float64 copies, for tests)."""
        return (self.GV[0].astype(np.float64), self.GP.astype(np.float64),
                self.GV1[0].astype(np.float64))

    def end_episode(self):
        """§2.0 step 8 (per-tower tuners: A6, I14 reset the traces only)."""
        if self.learner.tuner.two_tower:
            self.learner.W[Z_] = 0.0
        else:
            self.learner.end_episode()
        self.fresh1 = False
        self.policy_calls = 0

    def save(self, path, run=None, **extra):
        """As NetAgent.save, with both networks' descriptions."""
        if self.policy_calls:
            raise HandoffError("save between learn (or end_episode) and the next policy call")
        shape = {"critic": nets.spec(self.critic), "actor": nets.spec(self.actor),
                 "policy": "gaussian" if self.gaussian else "softmax"}
        save_agent(path, "towers", self.learner, self.rng, shape, extra, run)

    @classmethod
    def load(cls, path):
        """The TwoTowerAgent saved at `path`; it continues exactly as the saved one would."""
        meta, arrays = read_agent(path, "towers")
        shape = meta["shape"]
        nets_ = [nets.from_spec(shape.get(k)) if isinstance(shape, dict) and
                 isinstance(shape.get(k), dict) else None for k in ("critic", "actor")]
        if None in nets_:
            raise ValueError(f"{path}: no description of both networks")
        critic, actor = nets_
        held = arrays["W"].shape[-1] if "W" in arrays else 0
        if critic.n_params + actor.n_params != held:
            raise ValueError(f"{path}: its networks have {critic.n_params + actor.n_params} "
                             f"weights, the file holds {held}")
        dtype, policy = dtype_and_policy(path, meta)
        agent = cls(critic, actor, meta["config"], dtype=dtype, policy=policy)
        restore(agent, meta, arrays)
        agent.fresh1 = False
        return agent

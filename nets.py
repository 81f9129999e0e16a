"""The paper's actor-critic network, written by hand in NumPy with Numba kernels.

Architectures (docs/algorithms.md §6.3; activations from Elfwing, Uchibe & Doya 2018):

* ``ATARI(n_actions)`` [P]: input 4x84x84 (channels first) -> conv 16 filters 8x8 stride 4, SiLU
  -> conv 32 filters 4x4 stride 2, SiLU -> dense 256, dSiLU -> linear heads: value (1) and logits
  (n_actions). Valid padding [R]: 84 -> 20 -> 9, flatten 9*9*32 = 2592.
* ``MINATAR(in_channels, n_actions)``: input Cx10x10 -> conv 16 filters 3x3 stride 1, SiLU
  -> dense 128, dSiLU -> the same heads. Valid padding: 10 -> 8, flatten 8*8*16 = 1024.
  Chosen to match MinAtar's own AC(lambda) example (kenjyoung/MinAtar, examples/AC_lambda.py,
  class ACNetwork): ``nn.Conv2d(in_channels, 16, kernel_size=3, stride=1)`` with PyTorch's
  default padding 0, ``size_linear_unit(10) * size_linear_unit(10) * 16`` inputs to
  ``nn.Linear(..., 128)``, SiLU after the conv, dSiLU after the dense layer, linear policy and
  value heads. Only the initialization differs (see below).

SiLU(x) = x s(x); dSiLU(x) = s(x)(1 + x(1 - s(x))); dSiLU'(x) = s(x)(1 - s(x))(2 + x(1 - 2 s(x)));
s is the logistic sigmoid, evaluated without overflow for any input.

Initialization [R, docs/algorithms.md §6.3]: every weight ~ Uniform(-1/sqrt(fan_in), +1/sqrt(fan_in)) with
fan_in = C_in*kh*kw for a conv layer and the input width for a dense layer or head; every bias 0.
(PyTorch's default, used by the MinAtar example, also draws biases from the same interval.)

Parameter vector theta: all parameters in one flat contiguous vector; its dtype (float32 on the hot
path, float64 for tests) decides the dtype of every computation. Layers in order (conv layers,
hidden dense layers, then the head), each as its weight matrix W followed by its bias b:

    theta = [W_0, b_0, W_1, b_1, ..., W_head, b_head]

Each W is stored row-major with shape (fan_in, fan_out), i.e. input-major as in ``x @ W``:
* conv layer 0 (reads the channels-first observation): W[(c, i, j), f], c = input channel,
  (i, j) = kernel row, column, f = filter;
* later conv layers (read channels-last hidden activations): W[(i, j, c), f];
* dense layers: W[q, o], where q enumerates the input in memory order: (h, w, c) after a conv
  layer (channels-last), (c, h, w) when the dense layer reads the observation directly;
* the head: W[q, 0] feeds the value, W[q, 1 + a] the logit of action a; b = [b_V, b_logits].
``net.layers[l]`` holds ``w_off`` and ``b_off`` (start of W_l and b_l in theta) and the shapes.
Hidden activations are channels-last (H, W, C) in memory because that is the orientation in which
BLAS runs these small convolution products fastest.

Public API (net: the ``Net`` description; ws: a ``Workspace``; out and cot in theta's dtype):

    make_net(obs_shape, convs, dense, n_actions, dense_act=DSILU, layer_norm=False,
             conv_act=SILU) -> Net
        obs_shape = (C, H, W), or (n,) with no convs; convs = ((filters, kernel, stride), ...) with
        kernel and stride an int or an (h, w) pair; dense = hidden widths (int or tuple).
        Conv -> conv_act (SiLU, or LEAKY_RELU), dense -> dense_act (dSiLU, SILU or LEAKY_RELU).  layer_norm: every hidden layer's
        pre-activation y becomes (y - mean y) / sqrt(var y + 1e-5) over the whole layer (all
        positions and channels, no gain or bias: PyTorch's F.layer_norm(y, y.size()), as
        Elsayed et al. 2024 use it) before its activation; the heads are not normalized.
    ATARI(n_actions) -> Net;  MINATAR(in_channels, n_actions) -> Net;  n_params(net) -> int
    MLP(n_inputs, hidden, n_actions) -> Net: SiLU hidden layers, for vector observations
    spec(net) -> dict of make_net's arguments (JSON);  from_spec(dict) -> Net
    init_params(net, rng, dtype=np.float32, sparsity=0.0) -> theta    rng: a numpy Generator
    workspace(net, dtype=np.float32, k=3) -> Workspace        buffers for up to k cotangents
    forward(net, theta, obs, ws) -> (value: float, logits: view of ws, shape (n_actions,))
        obs: C-contiguous array of shape obs_shape in theta's dtype (ValueError otherwise).
        Stores in ws what vjp and jvp need; logits is overwritten by the next forward on ws.
    vjp(net, theta, ws, cot, out, lazy=-1) -> out
        cot: (k', 1 + n_actions), k' <= ws.k; column 0 is the cotangent on the value, columns
        1.. on the logits. Writes the k' parameter gradients cot[m] . d(value, logits)/d theta
        into out (k', n_params), in one backward pass at the last forward's input. With lazy = l,
        dense layer l's weight block (an outer product per row) is left out of `out`;
    factored_layer(net) -> l: the dense layer with the most weights
    dense_factors(net, ws, l, k) -> (x, g): layer l's input (fan_in,) and the k cotangents on its
        pre-activation (k, fan_out) after the last forward/vjp on ws; its weight gradient for row
        m is outer(x, g[m]), which is what a learner uses instead of materializing it.
    jvp(net, theta, ws, direction) -> (d value: float, d logits: view of ws)
        Forward-mode derivative along `direction` (n_params,) at the last forward's input;
        uses the vjp scratch, so its result is valid until the next vjp/jvp on ws.

A step of the learner at S_t (docs/algorithms.md §1.5): forward(S_t), then one vjp with the cotangent rows
[1, 0...] (g^V), [0, d log pi(A|S)/d logits] and [0, dH/d logits]; at S_{t+1} use a second
workspace so that the state kept for S_t survives.

Numerics and speed: matrix products go to BLAS sgemm/sgemv (dgemm/dgemv for float64) through
Numba's own helpers ``numba_xxgemm``/``numba_xxgemv``, which load them from
``scipy.linalg.cython_blas`` (so SciPy is required); everything else is single-threaded Numba
code compiled with ``cache=True`` (numba.set_num_threads has nothing to act on). OpenBLAS starts
its own threads for the larger products; on a shared machine that gave 10-100x slower tails, so
run with OPENBLAS_NUM_THREADS=1 (set before NumPy/SciPy are imported) or pin the process to one
core. A vjp with k > 1 computes each conv weight gradient for all k rows in one product, so a
row's last bits can differ from the same row computed with k = 1; results are otherwise
deterministic. The sigmoid (in theta's precision; NaN passes through) uses `_exp64` / `_exp32`
(`exp` picks by precision): Cephes' exponentials written without a library call, so the loops
around them vectorize (~1 ulp). A dense layer's backward product reads its weight matrix once for
all k rows. The learner (metatrace.NetAgent) calls vjp with lazy = factored_layer(net): the
Atari net's 663,552-weight dense layer then costs one pass over its weights, not k outer
products written out.
Measured on one AMD EPYC core of a shared 2-core machine (OPENBLAS_NUM_THREADS=1 taskset -c 1,
float32, |A| = 18, ``python -c "import bench; bench.network()"``), medians of several runs: forward
0.17-0.24 ms, vjp k=3 0.98-1.19 ms (0.41-0.61 ms lazy), vjp k=1 0.25-0.35 ms (0.20-0.28 ms
lazy), jvp 0.21-0.27 ms; this shared VM's speed varies by about 30% between runs. What remains
is the conv layers' products (about 3 M multiply-adds per forward, 4-11 M per vjp) and one pass
over the 2.65 MB dense weight matrix per forward or vjp.
"""
import hashlib
import os
from typing import NamedTuple

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  numba_xxgemm resolves sgemm/dgemm from this module
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload
from numba import __version__ as _numba_version, _helperlib

KERNEL_FILES = ("nets.py", "metatrace.py", "envs.py", "bench.py")    # the files with Numba kernels


def kernel_cache_dir():
    """Numba's on-disk cache (cache=True) compares only a kernel's own file with the cache, yet a
    cached kernel holds the machine code of every kernel it calls, from other files too: after a
    change to nets.py, metatrace.py's cached kernels ran the old nets code.  So the cache takes
    one directory per version of all the kernel files together (a hash of their bytes), under
    NUMBA_CACHE_DIR if set, else next to the sources (or ~/.cache/metatrace where that is not
    writable) -> that directory."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in KERNEL_FILES:
        path = os.path.join(here, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                h.update(name.encode() + f.read())
    leaf = "metatrace-kernels-" + h.hexdigest()[:16]
    base = os.environ.get("NUMBA_CACHE_DIR", "")
    if os.path.basename(base.rstrip(os.sep)) == leaf:      # set so by this function already
        return base
    if not base:
        base = os.path.join(here, "__pycache__")
        if not os.access(here, os.W_OK) or (os.path.exists(base) and not os.access(base, os.W_OK)):
            base = os.path.join(os.path.expanduser("~"), ".cache", "metatrace")
    return os.path.join(base, leaf)


# before any kernel is defined (every kernel file imports nets first); the environment variable
# too, so that a reload of Numba's configuration and a child process keep it
os.environ["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR = kernel_cache_dir()

if not {"xxgemm", "xxgemv"} <= _helperlib.c_helpers.keys():  # numba internals: see pyproject.toml
    raise ImportError(f"numba {_numba_version} lacks the C helpers numba_xxgemm/numba_xxgemv that "
                      "nets._matmul/_matvec call; install numba>=0.60,<0.70 (pyproject.toml's "
                      "bound) or port _matmul/_matvec to that numba's BLAS helpers")

CONV, DENSE = 0, 1
IDENTITY, SILU, DSILU, LEAKY_RELU = 0, 1, 2, 3
LEAKY_SLOPE = 0.01          # LeakyReLU's negative slope (PyTorch's default, Stream AC's nets)

# Net.table has one row per layer: kind, act, C_in, H_in, W_in, C_out, kh, kw, sh, sw, H_out,
# W_out, K (= fan_in), N (= H_out W_out), w_off, b_off, ln; the kernels unpack rows in this order.
# Columns of Workspace.table: where each layer's buffers start in ws.buf.
# A: activation (N, Cout); D: activation derivative at the pre-activation; P: patches (N, K);
# G: k cotangents on the pre-activation (k, N, Cout); Q: k cotangents on the patches (k, N, K);
# X0: copy of the observation when layer 0 is dense; S: scratch to batch a conv weight gradient;
# N: the layer-normalized pre-activation (N, Cout) and R: its 1 / std (layer norm only).
_A, _D, _P, _G, _Q, _X0, _S, _N, _R = range(9)
LN_EPS = 1e-5               # layer norm's epsilon (PyTorch's F.layer_norm default)

_FM = {"contract"}          # allow FMA; keeps IEEE semantics otherwise


class Layer(NamedTuple):
    """One layer: shapes as (channels, height, width) whatever the memory order, and offsets."""
    kind: int       # CONV or DENSE
    act: int        # IDENTITY, SILU, DSILU or LEAKY_RELU
    shape_in: tuple
    shape_out: tuple
    kernel: tuple   # (kh, kw); (1, 1) for dense
    stride: tuple
    fan_in: int
    fan_out: int
    w_off: int
    b_off: int
    ln: bool = False    # layer normalization of the pre-activation (no gain, no bias)


class Net(NamedTuple):
    """Immutable description of a network; theta has n_params entries laid out by `layers`."""
    obs_shape: tuple
    n_actions: int
    n_params: int
    layers: tuple       # of Layer, in order
    table: np.ndarray   # int64 (n_layers, 17), read-only: the same numbers for the kernels


class Workspace(NamedTuple):
    """Buffers of one evaluation point: the last forward's state and the vjp/jvp scratch."""
    k: int
    buf: np.ndarray     # every buffer, in theta's dtype
    table: np.ndarray   # int64 (n_layers, 7), offsets into buf
    y: np.ndarray       # view: [value, logits] of the last forward
    dy: np.ndarray      # view: [d value, d logits] of the last jvp


def _pair(v):
    """(v, v) for an int, the pair itself otherwise."""
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def make_net(obs_shape, convs, dense, n_actions, dense_act=DSILU, layer_norm=False,
             conv_act=SILU):
    """Describe the network: layer shapes and where each layer's parameters sit in theta.
    obs_shape (C, H, W), or (n,) for a vector observation (an MLP: no conv layers);
    dense_act: the hidden dense layers' activation (DSILU as in the paper, or SILU);
    layer_norm: normalize every hidden layer's pre-activation over the whole layer."""
    shape = tuple(int(s) for s in obs_shape)
    if len(shape) == 1 and not convs:
        shape3 = (shape[0], 1, 1)
    elif len(shape) == 3:
        shape3 = shape
    else:
        raise ValueError(f"obs_shape must be (C, H, W), or (n,) without conv layers; got {shape}")
    if dense_act not in (SILU, DSILU, LEAKY_RELU) or conv_act not in (SILU, LEAKY_RELU):
        raise ValueError(f"dense_act must be nets.SILU, DSILU or LEAKY_RELU and conv_act SILU or "
                         f"LEAKY_RELU, got {dense_act!r} and {conv_act!r}")
    c, h, w = shape3
    dense = (dense,) if np.isscalar(dense) else tuple(dense)
    if min(c, h, w) < 1 or n_actions < 0 or any(int(d) < 1 for d in dense):
        raise ValueError(f"sizes must be positive: obs_shape={tuple(obs_shape)}, "
                         f"dense={dense}, n_actions={n_actions}")
    layers, off = [], 0
    for filters, kernel, stride in convs:
        (kh, kw), (sh, sw) = _pair(kernel), _pair(stride)
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        if h < kh or w < kw or min(filters, kh, kw, sh, sw) < 1:
            raise ValueError(f"conv {filters}x{kh}x{kw} stride {sh}x{sw} does not fit input "
                             f"{c}x{h}x{w}")
        fan_in = c * kh * kw
        layers.append(Layer(CONV, conv_act, (c, h, w), (filters, ho, wo), (kh, kw), (sh, sw),
                            fan_in, int(filters), off, off + fan_in * filters, bool(layer_norm)))
        off += (fan_in + 1) * filters
        c, h, w = int(filters), ho, wo
    fan_in = c * h * w
    widths = [(int(d), dense_act) for d in dense] + [(1 + int(n_actions), IDENTITY)]
    for i, (width, act) in enumerate(widths):
        shape_in = (c, h, w) if i == 0 else (fan_in, 1, 1)
        layers.append(Layer(DENSE, act, shape_in, (width, 1, 1), (1, 1), (1, 1),
                            fan_in, width, off, off + fan_in * width,
                            bool(layer_norm) and act != IDENTITY))
        off += (fan_in + 1) * width
        fan_in = width
    table = np.array([[ly.kind, ly.act, *ly.shape_in, ly.fan_out, *ly.kernel, *ly.stride,
                       *ly.shape_out[1:], ly.fan_in, ly.shape_out[1] * ly.shape_out[2],
                       ly.w_off, ly.b_off, ly.ln] for ly in layers], dtype=np.int64)
    table.flags.writeable = False
    return Net(shape, int(n_actions), off, tuple(layers), table)


def MLP(n_inputs, hidden, n_actions, layer_norm=False, act=SILU):
    """A multilayer perceptron for vector observations: SiLU (or `act`) hidden layers, the same
    heads."""
    return make_net((n_inputs,), (), hidden, n_actions, dense_act=act, layer_norm=layer_norm)


def spec(net):
    """make_net's arguments for `net` as plain JSON values (so a saved agent names its net)."""
    convs = [[ly.fan_out, list(ly.kernel), list(ly.stride)] for ly in net.layers
             if ly.kind == CONV]
    hidden = [ly for ly in net.layers if ly.kind == DENSE][:-1]
    d = {"obs_shape": list(net.obs_shape), "convs": convs,
         "dense": [ly.fan_out for ly in hidden], "n_actions": net.n_actions,
         "dense_act": hidden[0].act if hidden else DSILU}
    if net.layers[0].ln:
        d["layer_norm"] = True
    if convs and net.layers[0].act != SILU:
        d["conv_act"] = net.layers[0].act
    return d


MAX_SPEC_ENTRIES = 2**30    # a described net whose weights or activations need more is refused


def from_spec(d):
    """The Net that `spec` describes; ValueError if it is not one, or if its weights or one
    layer's activations and patches would exceed MAX_SPEC_ENTRIES entries."""
    try:
        net = make_net(tuple(d["obs_shape"]), tuple((f, tuple(k), tuple(s))
                                                    for f, k, s in d["convs"]),
                       tuple(d["dense"]), d["n_actions"], dense_act=d["dense_act"],
                       layer_norm=d.get("layer_norm", False) is True,
                       conv_act=d.get("conv_act", SILU))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a network description ({e})") from None
    sizes = [net.n_params, int(np.prod(net.obs_shape))]
    sizes += [ly.shape_out[1] * ly.shape_out[2] * (ly.fan_in + ly.fan_out) for ly in net.layers]
    if max(sizes) > MAX_SPEC_ENTRIES:
        raise ValueError(f"the network it describes needs {max(sizes):,} entries in one array "
                         f"(at most {MAX_SPEC_ENTRIES:,})")
    return net


def ATARI(n_actions, layer_norm=False, act=None):
    """The paper's Atari network (docs/algorithms.md §6.3) for n_actions actions (act: one
    activation for every hidden layer instead of the paper's SiLU / dSiLU)."""
    return make_net((4, 84, 84), ((16, 8, 4), (32, 4, 2)), (256,), n_actions,
                    layer_norm=layer_norm, **_acts(act))


def MINATAR(in_channels, n_actions, layer_norm=False, act=None):
    """MinAtar's AC(lambda) network: conv 16 3x3 stride 1 (valid), dense 128 (act as ATARI's)."""
    return make_net((in_channels, 10, 10), ((16, 3, 1),), (128,), n_actions,
                    layer_norm=layer_norm, **_acts(act))


def _acts(act):
    """make_net's activation arguments: the paper's (None) or `act` for every hidden layer."""
    return {} if act is None else {"dense_act": act, "conv_act": act}


def n_params(net):
    """Number of entries of theta."""
    return net.n_params


def init_params(net, rng, dtype=np.float32, sparsity=0.0):
    """theta with weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and zero biases; with sparsity
    s > 0, then ceil(s fan_in) of each unit's inputs set to 0, drawn per unit (the sparse
    initialization of Elsayed et al. 2024, `sparse_init.py`; their s is 0.9)."""
    theta = np.zeros(net.n_params, dtype=dtype)
    for ly in net.layers:
        bound = 1.0 / np.sqrt(ly.fan_in)
        size = ly.fan_in * ly.fan_out
        theta[ly.w_off:ly.w_off + size] = rng.uniform(-bound, bound, size)
    if sparsity > 0:
        for ly in net.layers:
            k = int(np.ceil(sparsity * ly.fan_in))
            drop = rng.random((ly.fan_out, ly.fan_in)).argsort(axis=1)[:, :k]   # per unit
            wm = theta[ly.w_off:ly.w_off + ly.fan_in * ly.fan_out].reshape(ly.fan_in, ly.fan_out)
            wm[drop, np.arange(ly.fan_out)[:, None]] = 0
    return theta


def workspace(net, dtype=np.float32, k=3):
    """Preallocated buffers for forward, jvp and vjp with up to k cotangents."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    table = np.zeros((len(net.layers), 9), dtype=np.int64)
    off = 16  # buf[0:2] is the alpha/beta scratch for gemm
    for l, ly in enumerate(net.layers):
        n_out = ly.shape_out[1] * ly.shape_out[2]
        sizes = [n_out * ly.fan_out, n_out * ly.fan_out,
                 n_out * ly.fan_in if ly.kind == CONV else 0,
                 k * n_out * ly.fan_out,
                 k * n_out * ly.fan_in if ly.kind == CONV and l > 0 else 0,
                 ly.fan_in if ly.kind == DENSE and l == 0 else 0,
                 k * (n_out + ly.fan_in) * ly.fan_out + 16 if ly.kind == CONV and k > 1 else 0,
                 n_out * ly.fan_out if ly.ln else 0, 1 if ly.ln else 0]
        for col, size in enumerate(sizes):
            table[l, col] = off
            off += -(-size // 16) * 16  # start every buffer on a 64-byte boundary
    buf = np.zeros(off, dtype=dtype)
    head, n_out = table[-1], 1 + net.n_actions
    table.flags.writeable = False
    return Workspace(k, buf, table, buf[head[_A]:head[_A] + n_out],
                     buf[head[_G]:head[_G] + n_out])


def _check_theta(net, theta, ws):
    """Raise ValueError unless theta and ws match the net."""
    if (theta.shape != (net.n_params,) or theta.dtype != ws.buf.dtype
            or not theta.flags.c_contiguous):
        raise ValueError(f"theta has shape {theta.shape} and dtype {theta.dtype}; expected "
                         f"contiguous ({net.n_params},) {ws.buf.dtype}")


def forward(net, theta, obs, ws):
    """Value and policy logits at obs; keeps the activations vjp and jvp need in ws."""
    if obs.shape != net.obs_shape or obs.dtype != ws.buf.dtype:
        raise ValueError(f"observation has shape {obs.shape} and dtype {obs.dtype}; expected "
                         f"shape {net.obs_shape} and dtype {ws.buf.dtype}")
    _check_theta(net, theta, ws)
    forward_kernel(net.table, ws.table, theta, np.ascontiguousarray(obs), ws.buf)
    return float(ws.y[0]), ws.y[1:]


def vjp(net, theta, ws, cot, out, lazy=-1):
    """out[m] = cot[m] . d(value, logits)/d theta at the last forward's input, for every row m;
    with lazy = l (a dense layer), layer l's weight block of out is not written (dense_factors)."""
    _check_theta(net, theta, ws)
    k = cot.shape[0]
    if (cot.shape != (k, 1 + net.n_actions) or not 1 <= k <= ws.k or cot.dtype != theta.dtype
            or out.shape != (k, net.n_params) or out.dtype != theta.dtype
            or not out.flags.c_contiguous):
        raise ValueError(f"cot {cot.shape} {cot.dtype} and out {out.shape} {out.dtype} must be "
                         f"(k, {1 + net.n_actions}) and C-contiguous (k, {net.n_params}) in "
                         f"{theta.dtype}, 1 <= k <= {ws.k}")
    vjp_kernel(net.table, ws.table, theta, ws.buf, np.ascontiguousarray(cot), out, lazy)
    return out


def factored_layer(net):
    """Index of the dense layer with the most weights: the one a learner keeps factored."""
    dense = [l for l, ly in enumerate(net.layers) if ly.kind == DENSE]
    return max(dense, key=lambda l: net.layers[l].fan_in * net.layers[l].fan_out)


def dense_factors(net, ws, l, k):
    """Views (x, g) with x the input of dense layer l at the last forward (fan_in,) and g the
    cotangents on its pre-activation from the last vjp (k, fan_out): the layer's weight gradient
    for cotangent row m is the outer product x g[m] (row-major (fan_in, fan_out), as in theta)."""
    ly = net.layers[l]
    if ly.kind != DENSE or not 1 <= k <= ws.k:
        raise ValueError(f"layer {l} is not a dense layer or k={k} is outside 1..{ws.k}")
    src = ws.table[0, _X0] if l == 0 else ws.table[l - 1, _A]
    x = ws.buf[src:src + ly.fan_in]
    g = ws.buf[ws.table[l, _G]:ws.table[l, _G] + k * ly.fan_out].reshape(k, ly.fan_out)
    return x, g


def jvp(net, theta, ws, direction):
    """d(value, logits) along direction in parameter space, at the last forward's input."""
    _check_theta(net, theta, ws)
    if direction.shape != theta.shape or direction.dtype != theta.dtype:
        raise ValueError(f"direction has shape {direction.shape} and dtype {direction.dtype}; "
                         f"expected {theta.shape} {theta.dtype}")
    jvp_kernel(net.table, ws.table, theta, ws.buf, np.ascontiguousarray(direction))
    return float(ws.dy[0]), ws.dy[1:]


# ------------------------------------------------------------------------------------------
# Kernels

_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.intp))
_xxgemv = types.ExternalFunction("numba_xxgemv", types.intc(
    types.char, types.char, types.intp, types.intp, types.voidptr, types.voidptr, types.intp,
    types.voidptr, types.voidptr, types.voidptr))


@njit(cache=True)
def _matmul(c, a, b, m, n, k, ta, tb, beta, ab):
    """Row-major c[m, n] = op(a) @ op(b) + beta c; op(x) = x.T when its flag is set (BLAS gemm)."""
    ab[0] = 1
    ab[1] = beta
    kind = 115 if c.itemsize == 4 else 100  # 's' or 'd'
    # Row-major c is column-major c.T = op(b).T @ op(a).T: swap the operands for Fortran BLAS.
    r = _xxgemm(kind, 84 if tb else 78, 84 if ta else 78, n, m, k, ab.ctypes,
                b.ctypes, k if tb else n, a.ctypes, m if ta else k,
                ab[1:].ctypes, c.ctypes, n)
    if r != 0:
        raise RuntimeError("BLAS gemm is unavailable (is SciPy installed?)")


@njit(cache=True)
def _matvec(y, wm, x, n_in, n_out, trans, beta, ab):
    """y = wm.T @ x + beta y, or y = wm @ x + beta y when trans; wm row-major (n_in, n_out)."""
    ab[0] = 1
    ab[1] = beta
    kind = 115 if y.itemsize == 4 else 100
    # Row-major wm is the column-major (n_out, n_in) matrix wm.T.
    r = _xxgemv(kind, 84 if trans else 78, n_out, n_in, ab.ctypes, wm.ctypes, n_out,
                x.ctypes, ab[1:].ctypes, y.ctypes)
    if r != 0:
        raise RuntimeError("BLAS gemv is unavailable (is SciPy installed?)")


@intrinsic
def _pow2(typingctx, n):
    """2.0**n as float64 from an integer n in [-1022, 1023], by writing the exponent bits."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        v = args[0]
        if v.type.width < 64:
            v = builder.sext(v, i64)
        bits = builder.shl(builder.add(v, ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())

    return types.float64(n), codegen


@intrinsic
def _pow2f(typingctx, n):
    """2.0**n as float32 from an int32 n in [-126, 127], by writing the exponent bits."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, inline="always", error_model="numpy")
def _exp64(x):
    """exp(x) in float64 without a library call, so loops around it vectorize (Cephes' Pade form,
    about 1 ulp); below -708 it returns 0, above 709.78 inf, and NaN stays NaN.
    Rounds with the 1.5*2^52 trick: never call it under fastmath 'reassoc'."""
    t = x if x > -708.0 else -708.0
    t = t if t < 709.0 else 709.0
    n = (t * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0
    r = (t - n * 0.693145751953125) - n * 1.42860682030941723212e-6
    rr = r * r
    p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
             + 9.99999999999999999910e-1)
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
         + 2.27265548208155028766e-1) * rr + 2.0
    e = (1.0 + 2.0 * p / (q - p)) * _pow2(np.int32(n))
    e = e if x > -708.0 else 0.0
    e = e if x < 709.78 else np.inf
    return e if x == x else x


@njit(cache=True, inline="always", error_model="numpy")
def _exp32(x):
    """exp(x) in float32 without a library call (Cephes' expf polynomial, about 1 ulp), gradual
    underflow to 0 and overflow to inf as IEEE does, NaN stays NaN. Same rounding trick as _exp64:
    never under 'reassoc'."""
    f = np.float32
    t = x if x > f(-104.0) else f(-104.0)
    t = t if t < f(89.0) else f(89.0)
    n = (t * f(1.44269504) + f(12582912.0)) - f(12582912.0)
    r = (t - n * f(0.693359375)) - n * f(-2.12194440e-4)
    p = ((((f(1.9875691500e-4) * r + f(1.3981999507e-3)) * r + f(8.3334519073e-3)) * r
          + f(4.1665795894e-2)) * r + f(1.6666665459e-1)) * r + f(5.0000001201e-1)
    k = np.int32(n)
    k1 = k >> np.int32(1)                       # 2^n = 2^k1 2^(n-k1), each factor a normal float
    e = (p * (r * r) + r + f(1.0)) * _pow2f(k1) * _pow2f(k - k1)
    return e if x == x else x


def exp(x):
    """exp in the precision of x: _exp32 for float32 (8 lanes), _exp64 otherwise."""
    raise NotImplementedError("only inside Numba")


@overload(exp)
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    return lambda x: _exp64(np.float64(x))


@njit(cache=True, error_model="numpy", fastmath=_FM)
def _sigmoid(x, one):
    """Logistic sigmoid 1/(1+exp(-x)) in the precision of x (one = 1 in it), ~1 ulp, no overflow."""
    e = exp(-abs(x))                       # exp(-|x|) in [0, 1]
    s = one / (one + e)
    return s if x >= 0 else e * s


@njit(cache=True, error_model="numpy", fastmath=_FM)
def _activate(a, d, act):
    """In place a <- f(a) and d <- f'(a) for f = SiLU, dSiLU or LeakyReLU (IDENTITY: nothing)."""
    one, two = a.dtype.type(1.0), a.dtype.type(2.0)
    slope = a.dtype.type(LEAKY_SLOPE)
    if act == SILU:
        for i in range(a.size):
            z = a[i]
            s = _sigmoid(z, one)
            a[i] = z * s
            d[i] = s * (one + z * (one - s))
    elif act == DSILU:
        for i in range(a.size):
            z = a[i]
            s = _sigmoid(z, one)
            a[i] = s * (one + z * (one - s))
            d[i] = s * (one - s) * (two + z * (one - two * s))
    elif act == LEAKY_RELU:
        for i in range(a.size):
            z = a[i]
            neg = z <= 0                  # f'(0) = slope, as in PyTorch (docs/comparison.md)
            a[i] = slope * z if neg else z
            d[i] = slope if neg else one


@njit(cache=True)
def _add_rows(x, v, rows, cols):
    """x[r, :] += v for every row r of the row-major (rows, cols) matrix x."""
    for r in range(rows):
        xr = x[r * cols:(r + 1) * cols]
        for c in range(cols):
            xr[c] += v[c]


@njit(cache=True)
def _sum_rows(x, s, rows, cols):
    """s = sum over rows of the row-major (rows, cols) matrix x."""
    s[:] = x[:cols]
    for r in range(1, rows):
        xr = x[r * cols:(r + 1) * cols]
        for c in range(cols):
            s[c] += xr[c]


@njit(cache=True)
def _interleave(src, dst, k, rows, cols):
    """dst[r, m, :] = src[m, r, :]: k row-major (rows, cols) blocks to one (rows, k, cols)."""
    for m in range(k):
        for r in range(rows):
            a = src[(m * rows + r) * cols:(m * rows + r + 1) * cols]
            b = dst[(r * k + m) * cols:(r * k + m + 1) * cols]
            for c in range(cols):
                b[c] = a[c]


@njit(cache=True)
def _pick(src, dst, k, m, rows, cols):
    """dst[r, :] = src[r, m, :] for a row-major (rows, k, cols) src: block m of it."""
    for r in range(rows):
        a = src[(r * k + m) * cols:(r * k + m + 1) * cols]
        b = dst[r * cols:(r + 1) * cols]
        for c in range(cols):
            b[c] = a[c]


@njit(cache=True)
def _mul(x, d, k):
    """x[m] *= d for each of the k consecutive blocks of x (len(d) each)."""
    n = d.size
    for m in range(k):
        xm = x[m * n:(m + 1) * n]
        for i in range(n):
            xm[i] *= d[i]


@njit(cache=True)
def _im2col_chw(x, p, geom):
    """Patches of a channels-first image x: p[(y, x), (c, i, j)] = x[c, y sh + i, x sw + j];
    geom = (c, h, w, kh, kw, sh, sw, ho, wo)."""
    c, h, w, kh, kw, sh, sw, ho, wo = geom
    kk = c * kh * kw
    # Unsigned indices: Numba then skips its negative-index check, which halves the time here.
    # kw = 8 (the Atari net) gets a loop of constant length: one vector move per kernel row.
    for oy in range(ho):
        for ox in range(wo):
            row = np.uint64((oy * wo + ox) * kk)
            for ci in range(c):
                for i in range(kh):
                    s0 = np.uint64((ci * h + oy * sh + i) * w + ox * sw)
                    d0 = row + np.uint64((ci * kh + i) * kw)
                    if kw == 8:
                        for j in range(np.uint64(8)):
                            p[d0 + j] = x[s0 + j]
                    else:
                        for j in range(np.uint64(kw)):
                            p[d0 + j] = x[s0 + j]


@njit(cache=True)
def _im2col_hwc(x, p, geom):
    """Patches of a channels-last image x: p[(y, x), (i, j, c)] = x[y sh + i, x sw + j, c]."""
    c, h, w, kh, kw, sh, sw, ho, wo = geom
    run = kw * c
    kk = kh * run
    for oy in range(ho):
        for ox in range(wo):
            row = p[(oy * wo + ox) * kk:(oy * wo + ox + 1) * kk]
            for i in range(kh):
                src = x[((oy * sh + i) * w + ox * sw) * c:]
                dst = row[i * run:(i + 1) * run]
                for j in range(run):
                    dst[j] = src[j]


@njit(cache=True)
def _col2im_hwc(p, x, geom):
    """Adjoint of _im2col_hwc: x[y sh + i, x sw + j, c] += p[(y, x), (i, j, c)]."""
    c, h, w, kh, kw, sh, sw, ho, wo = geom
    run = kw * c
    kk = kh * run
    for oy in range(ho):
        for ox in range(wo):
            row = p[(oy * wo + ox) * kk:(oy * wo + ox + 1) * kk]
            for i in range(kh):
                dst = x[((oy * sh + i) * w + ox * sw) * c:]
                src = row[i * run:(i + 1) * run]
                for j in range(run):
                    dst[j] += src[j]


@njit(cache=True, fastmath={"reassoc"})
def _layer_norm(a, r):
    """In place a <- (a - mean a) / sqrt(var a + LN_EPS) over all of a (biased variance, as
    PyTorch's layer_norm over the whole tensor); r[0] <- 1 / sqrt(var a + LN_EPS)."""
    n = a.size
    m = 0.0
    for i in range(n):
        m += a[i]
    m /= n
    v = 0.0
    for i in range(n):
        e = a[i] - m
        v += e * e
    rs = 1.0 / np.sqrt(v / n + LN_EPS)
    ty = a.dtype.type
    mt, rt = ty(m), ty(rs)
    for i in range(n):
        a[i] = (a[i] - mt) * rt
    r[0] = rs


@njit(cache=True, fastmath={"reassoc"})
def _layer_norm_t(g, yhat, r):
    """In place g <- r (g - mean g - yhat mean(g yhat)): layer norm's Jacobian at yhat (1/std r)
    times g; it is symmetric, so this is both its vjp and its jvp."""
    n = g.size
    sg = sgy = 0.0
    for i in range(n):
        sg += g[i]
        sgy += g[i] * yhat[i]
    ty = g.dtype.type
    mg, mgy, rt = ty(sg / n), ty(sgy / n), ty(r)
    for i in range(n):
        g[i] = rt * (g[i] - mg - yhat[i] * mgy)


@njit(cache=True)
def layer_norm_flat(table, wtab, buf):
    """True when a layer-normalized layer of buf's last forward pass had variance <= LN_EPS, so
    that its 1 / std r >= 1 / sqrt(2 LN_EPS): layer norm in its eps regime (docs/algorithms.md
    §2.5), where its gain r is set by eps rather than by the data."""
    for l in range(table.shape[0]):
        if table[l, 16]:
            r = np.float64(buf[wtab[l, _R]])
            if 2.0 * LN_EPS * r * r >= 1.0:
                return True
    return False


@njit(cache=True)
def _outer(x, g, out, n_in, n_out):
    """out[j, o] = x[j] g[o], row-major (n_in, n_out): a dense layer's weight gradient."""
    for j in range(n_in):
        xj = x[j]
        oj = out[j * n_out:(j + 1) * n_out]
        for o in range(n_out):
            oj[o] = xj * g[o]


@njit(cache=True)
def forward_kernel(table, wtab, theta, obs, buf, same_obs=False):
    """Forward pass; leaves activations, derivatives and patches in buf.  same_obs: buf's last
    forward had this very observation, so layer 0's patches (or input copy) are reused."""
    ab = buf[:2]
    x0 = obs.reshape(-1)
    for l in range(table.shape[0]):
        (kind, act, cin, hin, win, cout, kh, kw, sh, sw, ho, wo, kk, nn, woff,
         boff, ln) = table[l]
        wm = theta[woff:woff + kk * cout]
        b = theta[boff:boff + cout]
        a = buf[wtab[l, _A]:wtab[l, _A] + nn * cout]
        d = buf[wtab[l, _D]:wtab[l, _D] + nn * cout]
        if kind == CONV:
            p = buf[wtab[l, _P]:wtab[l, _P] + nn * kk]
            if l == 0:
                if not same_obs:
                    _im2col_chw(x0, p, (cin, hin, win, kh, kw, sh, sw, ho, wo))
            else:
                prev = buf[wtab[l - 1, _A]:wtab[l - 1, _A] + cin * hin * win]
                _im2col_hwc(prev, p, (cin, hin, win, kh, kw, sh, sw, ho, wo))
            _matmul(a, p, wm, nn, cout, kk, False, False, 0.0, ab)
            _add_rows(a, b, nn, cout)
        else:
            if l == 0:
                x = buf[wtab[0, _X0]:wtab[0, _X0] + kk]
                if not same_obs:
                    x[:] = x0
            else:
                x = buf[wtab[l - 1, _A]:wtab[l - 1, _A] + kk]
            a[:] = b
            _matvec(a, wm, x, kk, cout, False, 1.0, ab)
        if ln:
            r = buf[wtab[l, _R]:wtab[l, _R] + 1]
            _layer_norm(a, r)
            buf[wtab[l, _N]:wtab[l, _N] + nn * cout] = a
        _activate(a, d, act)


@njit(cache=True)
def head(wtab, buf, n_actions):
    """The value and the logits (a view of buf) of the last forward pass on buf."""
    h = wtab[wtab.shape[0] - 1, _A]
    return buf[h], buf[h + 1:h + 1 + n_actions]


@njit(cache=True, fastmath={"reassoc", "contract"})
def _backprop_dense(prev_g, wm, g, k, kk, cout):
    """prev_g[m] = wm @ g[m] for the k rows of g, reading the (kk, cout) matrix wm once."""
    ty = wm.dtype.type
    for q in range(kk):
        row = wm[q * cout:(q + 1) * cout]
        for m in range(k):
            gm = g[m * cout:(m + 1) * cout]
            acc = ty(0.0)
            for o in range(cout):
                acc += row[o] * gm[o]
            prev_g[m * kk + q] = acc


@njit(cache=True)
def vjp_kernel(table, wtab, theta, buf, cot, out, lazy):
    """Backward pass for the k rows of cot at once; out[m] gets the gradient for row m, except
    the weight block of dense layer `lazy` (-1: none), left as its factors in buf."""
    ab = buf[:2]
    k = cot.shape[0]
    n_layers = table.shape[0]
    head = wtab[n_layers - 1, _G]
    buf[head:head + cot.size] = cot.reshape(-1)
    for l in range(n_layers - 1, -1, -1):
        (kind, act, cin, hin, win, cout, kh, kw, sh, sw, ho, wo, kk, nn, woff,
         boff, ln) = table[l]
        nc = nn * cout
        g = buf[wtab[l, _G]:wtab[l, _G] + k * nc]  # cotangents on the pre-activation
        wm = theta[woff:woff + kk * cout]
        if l > 0:
            prev_a = buf[wtab[l - 1, _A]:wtab[l - 1, _A] + cin * hin * win]
            prev_d = buf[wtab[l - 1, _D]:wtab[l - 1, _D] + prev_a.size]
            prev_g = buf[wtab[l - 1, _G]:wtab[l - 1, _G] + k * prev_a.size]
        if ln:                                     # cotangents on y-hat -> on y
            yhat = buf[wtab[l, _N]:wtab[l, _N] + nc]
            r = buf[wtab[l, _R]]
            for m in range(k):
                _layer_norm_t(g[m * nc:(m + 1) * nc], yhat, r)
        for m in range(k):
            _sum_rows(g[m * nc:(m + 1) * nc], out[m, boff:boff + cout], nn, cout)
        if kind == CONV:
            p = buf[wtab[l, _P]:wtab[l, _P] + nn * kk]
            if k == 1:
                _matmul(out[0, woff:woff + kk * cout], p, g, kk, cout, nn, True, False, 0.0, ab)
            else:
                # One product for all k: [W_0 | ... | W_k-1] = P.T @ [G_0 | ... | G_k-1].
                s0 = wtab[l, _S]
                s1 = s0 + -(-k * nc // 16) * 16
                _interleave(g, buf[s0:s0 + k * nc], k, nn, cout)
                _matmul(buf[s1:s1 + kk * k * cout], p, buf[s0:s0 + k * nc], kk, k * cout, nn,
                        True, False, 0.0, ab)
                for m in range(k):
                    _pick(buf[s1:s1 + kk * k * cout], out[m, woff:woff + kk * cout], k, m,
                          kk, cout)
            if l > 0:
                q = buf[wtab[l, _Q]:wtab[l, _Q] + k * nn * kk]
                _matmul(q, g, wm, k * nn, kk, cout, False, True, 0.0, ab)
                prev_g[:] = 0
                for m in range(k):
                    _col2im_hwc(q[m * nn * kk:(m + 1) * nn * kk],
                                prev_g[m * prev_a.size:(m + 1) * prev_a.size],
                                (cin, hin, win, kh, kw, sh, sw, ho, wo))
                _mul(prev_g, prev_d, k)
        else:
            if l == 0:
                x = buf[wtab[0, _X0]:wtab[0, _X0] + kk]
            else:
                x = prev_a
            if l != lazy:
                for m in range(k):
                    _outer(x, g[m * cout:(m + 1) * cout], out[m, woff:woff + kk * cout], kk, cout)
            if l > 0:
                _backprop_dense(prev_g, wm, g, k, kk, cout)
                _mul(prev_g, prev_d, k)


@njit(cache=True)
def jvp_kernel(table, wtab, theta, buf, v):
    """Tangent pass along v; the tangent of each layer's output goes to its first G block."""
    ab = buf[:2]
    for l in range(table.shape[0]):
        (kind, act, cin, hin, win, cout, kh, kw, sh, sw, ho, wo, kk, nn, woff,
         boff, ln) = table[l]
        nc = nn * cout
        t = buf[wtab[l, _G]:wtab[l, _G] + nc]
        wm = theta[woff:woff + kk * cout]
        vw = v[woff:woff + kk * cout]
        vb = v[boff:boff + cout]
        if l > 0:
            prev_t = buf[wtab[l - 1, _G]:wtab[l - 1, _G] + cin * hin * win]
        if kind == CONV:
            p = buf[wtab[l, _P]:wtab[l, _P] + nn * kk]
            _matmul(t, p, vw, nn, cout, kk, False, False, 0.0, ab)
            if l > 0:
                q = buf[wtab[l, _Q]:wtab[l, _Q] + nn * kk]
                _im2col_hwc(prev_t, q, (cin, hin, win, kh, kw, sh, sw, ho, wo))
                _matmul(t, q, wm, nn, cout, kk, False, False, 1.0, ab)
            _add_rows(t, vb, nn, cout)
        else:
            if l == 0:
                x = buf[wtab[0, _X0]:wtab[0, _X0] + kk]
            else:
                x = buf[wtab[l - 1, _A]:wtab[l - 1, _A] + kk]
            t[:] = vb
            _matvec(t, vw, x, kk, cout, False, 1.0, ab)
            if l > 0:
                _matvec(t, wm, prev_t, kk, cout, False, 1.0, ab)
        if ln:
            _layer_norm_t(t, buf[wtab[l, _N]:wtab[l, _N] + nc], buf[wtab[l, _R]])
        if act != IDENTITY:
            _mul(t, buf[wtab[l, _D]:wtab[l, _D] + nc], 1)


# ------------------------------------------------------------------------------------------

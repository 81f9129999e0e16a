"""Tests for nets.py: derivatives against finite differences (docs/algorithms.md §3.2 asks for float64 central
differences at relative tolerance ~1e-6), the VJP/JVP transpose identity, the documented
parameter layout against a plain NumPy forward pass, float32 against float64, initialization
and input checks.

Finite differences use the fourth-order central stencil
    f'(0) ~ (f(-2e) - 8 f(-e) + 8 f(e) - f(2e)) / (12 e),  e = 1e-3 / max|v|,
whose truncation error (~e^4) and rounding error (~1e-16 / e) are both far below 1e-6.
"Close" means  max|a - b| <= tol * max(max|a|, max|b|): relative to the scale of the whole vector.
The transpose identity <cot, J v> = <J^T cot, v> is exact up to rounding: tolerance 1e-12.
"""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nets

SETTINGS = settings(deadline=None, max_examples=25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(deadline=None, max_examples=3, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def small_nets(draw):
    """A random small net: 0-2 conv layers, 0-2 hidden dense layers (dSiLU or SiLU), 1-5
    actions, with or without layer norm; without conv layers the observation may be a vector."""
    convs = [(draw(st.integers(1, 4)),
              (draw(st.integers(1, 4)), draw(st.integers(1, 4))),
              (draw(st.integers(1, 3)), draw(st.integers(1, 3))))
             for _ in range(draw(st.integers(0, 2)))]
    h_min = w_min = 1
    for _, (kh, kw), (sh, sw) in reversed(convs):
        h_min, w_min = (h_min - 1) * sh + kh, (w_min - 1) * sw + kw
    obs_shape = (draw(st.integers(1, 3)), draw(st.integers(h_min, h_min + 5)),
                 draw(st.integers(w_min, w_min + 5)))
    dense = draw(st.lists(st.integers(1, 8), min_size=0, max_size=2))
    if not convs and draw(st.booleans()):          # an MLP on a vector observation
        obs_shape = (obs_shape[0] * obs_shape[1] * obs_shape[2],)
    act = draw(st.sampled_from((nets.DSILU, nets.SILU)))
    net = nets.make_net(obs_shape, convs, dense, draw(st.integers(1, 5)), dense_act=act)
    # layer norm where every normalized layer has >= 4 outputs: over 2 or 3 values the std can
    # be near sqrt(1e-5) by chance, and the function then curves faster than finite
    # differences resolve (fd_jvp also shrinks its step with the smallest std)
    sizes = [ly.fan_out * ly.shape_out[1] * ly.shape_out[2] for ly in net.layers[:-1]]
    if draw(st.booleans()) and min(sizes, default=4) >= 4:
        net = nets.make_net(obs_shape, convs, dense, net.n_actions, dense_act=act, layer_norm=True)
    return net


def setup(net, seed, dtype=np.float64):
    """Random theta (init plus non-zero biases and a weight perturbation) and observation."""
    rng = np.random.default_rng(seed)
    theta = nets.init_params(net, rng, np.float64)
    theta += 0.2 * rng.standard_normal(theta.size) * (np.abs(theta) + 0.1)
    obs = rng.uniform(-1.0, 1.0, net.obs_shape)
    return theta.astype(dtype), obs.astype(dtype), rng


def outputs(net, theta, obs):
    """[value, logits] at obs, as a fresh array."""
    ws = nets.workspace(net, theta.dtype, 1)
    value, logits = nets.forward(net, theta, obs, ws)
    return np.concatenate([[value], logits])


def fd_step(net, theta, obs):
    """1e-3 times the smallest std of a layer-normed pre-activation where below 1: the scale
    the net curves on at (theta, obs)."""
    stds = [1.0]
    reference_forward(net, theta, obs, stds)
    return 1e-3 * min(stds)


def fd_jvp(net, theta, obs, v, step):
    """Fourth-order central difference of [value, logits] along v, of size step (fd_step)."""
    e = step / np.max(np.abs(v))
    f = [outputs(net, theta + s * e * v, obs) for s in (-2, -1, 1, 2)]
    return (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * e)


def close(a, b, tol):
    """max|a - b| <= tol * max(max|a|, max|b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) <= tol * max(np.max(np.abs(a)), np.max(np.abs(b)))


def jvp_of(net, theta, obs, v):
    """[d value, d logits] from nets.jvp, as a fresh array."""
    ws = nets.workspace(net, theta.dtype, 1)
    nets.forward(net, theta, obs, ws)
    dv, dl = nets.jvp(net, theta, ws, v)
    return np.concatenate([[dv], dl])


def vjp_of(net, theta, obs, cot):
    """nets.vjp for the rows of cot, as a fresh (k, n_params) array."""
    ws = nets.workspace(net, theta.dtype, cot.shape[0])
    nets.forward(net, theta, obs, ws)
    return nets.vjp(net, theta, ws, cot, np.full((cot.shape[0], net.n_params), np.nan,
                                                  theta.dtype))


# ---------------------------------------------------------------------------------------------
# Reference forward pass written from the layout documented in nets.py.

def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _act(z, act):
    s = _sigmoid(z)
    return {nets.IDENTITY: z, nets.SILU: z * s, nets.DSILU: s * (1 + z * (1 - s)),
            nets.LEAKY_RELU: np.where(z < 0, 0.01 * z, z)}[act]


def _norm(z, ly, stds):
    """Layer norm over the whole pre-activation (biased variance, eps 1e-5) where the layer has
    it; appends the pre-activation's std to stds."""
    if not ly.ln:
        return z
    stds.append(z.std())
    return (z - z.mean()) / np.sqrt(z.var() + 1e-5)


def reference_forward(net, theta, obs, stds=None):
    """[value, logits] by explicit loops over output positions, in float64; the std of each
    layer-normed pre-activation is appended to stds when given."""
    stds = [] if stds is None else stds
    x, channels_last = np.asarray(obs, np.float64), False
    for ly in net.layers:
        w = theta[ly.w_off:ly.w_off + ly.fan_in * ly.fan_out].astype(np.float64)
        b = theta[ly.b_off:ly.b_off + ly.fan_out].astype(np.float64)
        if ly.kind == nets.CONV:
            (kh, kw), (sh, sw), (f, ho, wo) = ly.kernel, ly.stride, ly.shape_out
            z = np.empty((ho, wo, f))
            for oy in range(ho):
                for ox in range(wo):
                    if channels_last:   # x[h, w, c], W[(i, j, c), f]
                        patch = x[oy * sh:oy * sh + kh, ox * sw:ox * sw + kw, :]
                    else:               # x[c, h, w], W[(c, i, j), f]
                        patch = x[:, oy * sh:oy * sh + kh, ox * sw:ox * sw + kw]
                    z[oy, ox] = patch.reshape(-1) @ w.reshape(ly.fan_in, f) + b
            x, channels_last = _act(_norm(z, ly, stds), ly.act), True
        else:
            x = _act(_norm(x.reshape(-1) @ w.reshape(ly.fan_in, ly.fan_out) + b, ly, stds), ly.act)
    return x


@SETTINGS
@given(small_nets(), SEEDS)
def test_forward_matches_reference_layout(net, seed):
    theta, obs, _ = setup(net, seed)
    assert close(outputs(net, theta, obs), reference_forward(net, theta, obs), 1e-12)


@FEW
@given(SEEDS)
def test_minatar_forward_matches_reference_layout(seed):
    net = nets.MINATAR(4, 6)
    theta, obs, _ = setup(net, seed)
    assert close(outputs(net, theta, obs), reference_forward(net, theta, obs), 1e-12)


# ---------------------------------------------------------------------------------------------
# Derivatives of random small nets: the full Jacobian by finite differences.

@SETTINGS
@given(small_nets(), SEEDS, st.integers(1, 3))
def test_small_net_jvp_and_vjp_match_finite_differences(net, seed, k):
    theta, obs, rng = setup(net, seed)
    step = fd_step(net, theta, obs)
    jac = np.stack([fd_jvp(net, theta, obs, e, step) for e in np.eye(net.n_params)])  # (n, 1+A)
    v = rng.standard_normal(net.n_params)
    assert close(jvp_of(net, theta, obs, v), v @ jac, 1e-6)
    cot = rng.standard_normal((k, 1 + net.n_actions))
    grads = vjp_of(net, theta, obs, cot)
    for m in range(k):
        assert close(grads[m], jac @ cot[m], 1e-6)


@SETTINGS
@given(small_nets(), SEEDS, st.integers(1, 3))
def test_lazy_vjp_leaves_the_dense_block_as_factors(net, seed, k):
    """vjp(lazy=l) writes every block but dense layer l's weights, bit for bit as the full vjp,
    and dense_factors(l) gives that block as outer(x, g[m]) (finite differences via the full vjp)."""
    theta, obs, rng = setup(net, seed)
    cot = rng.standard_normal((k, 1 + net.n_actions))
    full = vjp_of(net, theta, obs, cot)
    l = nets.factored_layer(net)
    ly = net.layers[l]
    assert all(ly.fan_in * ly.fan_out >= m.fan_in * m.fan_out for m in net.layers if m.kind == nets.DENSE)
    ws = nets.workspace(net, theta.dtype, k)
    nets.forward(net, theta, obs, ws)
    out = np.full((k, net.n_params), 7.0)
    nets.vjp(net, theta, ws, cot, out, l)
    lo, hi = ly.w_off, ly.w_off + ly.fan_in * ly.fan_out
    assert np.all(out[:, lo:hi] == 7.0)
    assert np.array_equal(out[:, :lo], full[:, :lo]) and np.array_equal(out[:, hi:], full[:, hi:])
    x, g = nets.dense_factors(net, ws, l, k)
    for m in range(k):
        assert close(np.outer(x, g[m]).ravel(), full[m, lo:hi], 1e-12)


@SETTINGS
@given(small_nets(), SEEDS, st.integers(1, 3))
def test_vjp_is_the_transpose_of_jvp(net, seed, k):
    theta, obs, rng = setup(net, seed)
    v = rng.standard_normal(net.n_params)
    cot = rng.standard_normal((k, 1 + net.n_actions))
    lhs = cot @ jvp_of(net, theta, obs, v)
    rhs = vjp_of(net, theta, obs, cot) @ v
    assert close(lhs, rhs, 1e-12)


# ---------------------------------------------------------------------------------------------
# The real architectures: random directions and random coordinates of every block.

REAL_NETS = [lambda: nets.ATARI(18), lambda: nets.MINATAR(7, 6),
             lambda: nets.make_net((7, 10, 10), ((16, 3, 1),), (128,), 6, layer_norm=True)]


def coordinates(net, rng, per_block=2):
    """A few random indices inside every weight and bias block of theta."""
    idx = []
    for ly in net.layers:
        idx += list(ly.w_off + rng.choice(ly.fan_in * ly.fan_out, per_block, replace=False))
        idx += list(ly.b_off + rng.choice(ly.fan_out, min(per_block, ly.fan_out), replace=False))
    return np.array(idx)


@pytest.mark.parametrize("make", REAL_NETS, ids=["atari", "minatar", "minatar-layer-norm"])
@FEW
@given(seed=SEEDS)
def test_real_nets_match_finite_differences(make, seed):
    net = make()
    theta, obs, rng = setup(net, seed)
    obs = np.abs(obs)  # Atari and MinAtar observations lie in [0, 1]
    v = rng.standard_normal(net.n_params)
    step = fd_step(net, theta, obs)
    fd_v = fd_jvp(net, theta, obs, v, step)
    jv = jvp_of(net, theta, obs, v)
    assert close(jv, fd_v, 1e-6)
    cot = rng.standard_normal((3, 1 + net.n_actions))
    grads = vjp_of(net, theta, obs, cot)
    assert np.all(np.isfinite(grads))
    assert close(grads @ v, cot @ fd_v, 1e-6)
    assert close(grads @ v, cot @ jv, 1e-12)
    idx = coordinates(net, rng)
    fd = np.stack([cot @ fd_jvp(net, theta, obs, np.eye(1, net.n_params, i)[0], step)
                   for i in idx])
    scale = np.max(np.abs(grads), axis=1)  # coordinates are compared at the gradient's scale
    assert np.all(np.abs(grads[:, idx] - fd.T) <= 1e-6 * scale[:, None])


# ---------------------------------------------------------------------------------------------
# float32 hot path against float64.

@pytest.mark.parametrize("make", REAL_NETS, ids=["atari", "minatar", "minatar-layer-norm"])
def test_float32_agrees_with_float64(make):
    net = make()
    theta, obs, rng = setup(net, 7)
    obs = np.abs(obs)
    t32, o32 = theta.astype(np.float32), obs.astype(np.float32)
    v = rng.standard_normal(net.n_params)
    cot = rng.standard_normal((3, 1 + net.n_actions))
    assert close(outputs(net, t32, o32), outputs(net, t32.astype(np.float64),
                                                 o32.astype(np.float64)), 3e-6)
    assert close(jvp_of(net, t32, o32, v.astype(np.float32)),
                 jvp_of(net, t32.astype(np.float64), o32.astype(np.float64), v), 3e-6)
    g32 = vjp_of(net, t32, o32, cot.astype(np.float32))
    g64 = vjp_of(net, t32.astype(np.float64), o32.astype(np.float64), cot)
    for m in range(3):
        assert close(g32[m], g64[m], 3e-6)


@SETTINGS
@given(small_nets(), SEEDS)
def test_float32_small_nets_agree_with_float64(net, seed):
    theta, obs, rng = setup(net, seed, np.float32)
    cot = rng.standard_normal((2, 1 + net.n_actions)).astype(np.float32)
    g32 = vjp_of(net, theta, obs, cot)
    g64 = vjp_of(net, theta.astype(np.float64), obs.astype(np.float64), cot.astype(np.float64))
    for m in range(2):
        assert close(g32[m], g64[m], 3e-6)


# ---------------------------------------------------------------------------------------------
# Shapes, initialization, numerics, workspace use, input checks.

def test_architecture_shapes_by_hand():
    atari = nets.ATARI(18)
    assert [ly.shape_out for ly in atari.layers] == [(16, 20, 20), (32, 9, 9), (256, 1, 1),
                                                       (19, 1, 1)]
    assert [ly.fan_in for ly in atari.layers] == [4 * 8 * 8, 16 * 4 * 4, 9 * 9 * 32, 256]
    assert nets.n_params(atari) == (256 * 16 + 16) + (256 * 32 + 32) + (2592 * 256 + 256) \
        + (256 * 19 + 19) == 681027
    minatar = nets.MINATAR(4, 6)
    assert [ly.shape_out for ly in minatar.layers] == [(16, 8, 8), (128, 1, 1), (7, 1, 1)]
    assert nets.n_params(minatar) == (36 * 16 + 16) + (1024 * 128 + 128) + (128 * 7 + 7)
    offsets = [(ly.w_off, ly.b_off) for ly in minatar.layers]
    assert offsets == [(0, 576), (592, 592 + 131072), (131792, 131792 + 896)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_statistics(dtype):
    net = nets.ATARI(6)
    theta = nets.init_params(net, np.random.default_rng(3), dtype)
    assert theta.dtype == dtype and theta.shape == (net.n_params,)
    for ly in net.layers:
        w = theta[ly.w_off:ly.w_off + ly.fan_in * ly.fan_out].astype(np.float64)
        bound = 1 / np.sqrt(ly.fan_in)
        assert np.all(theta[ly.b_off:ly.b_off + ly.fan_out] == 0)
        # The bound holds up to the rounding of the float64 draw to dtype.
        assert np.all(np.abs(w) <= bound * (1 + np.finfo(dtype).eps))
        assert np.max(np.abs(w)) > 0.9 * bound
        # Uniform(-bound, bound): mean 0, variance bound^2 / 3, within 5 standard errors.
        se = bound / np.sqrt(w.size)
        assert abs(w.mean()) < 5 * se / np.sqrt(3)
        assert abs(w.var() / (bound**2 / 3) - 1) < 5 * np.sqrt(0.8 / w.size)
    same = nets.init_params(net, np.random.default_rng(3), dtype)
    other = nets.init_params(net, np.random.default_rng(4), dtype)
    assert np.array_equal(theta, same) and not np.array_equal(theta, other)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_outputs_finite_at_init_and_for_extreme_inputs(scale):
    net = nets.ATARI(18)
    rng = np.random.default_rng(5)
    theta = nets.init_params(net, rng)
    ws = nets.workspace(net)
    obs = (scale * rng.uniform(-1, 1, net.obs_shape)).astype(np.float32)
    value, logits = nets.forward(net, theta, obs, ws)
    assert np.isfinite(value) and logits.shape == (18,) and np.all(np.isfinite(logits))
    out = nets.vjp(net, theta, ws, np.ones((3, 19), np.float32),
                   np.zeros((3, net.n_params), np.float32))
    assert np.all(np.isfinite(out))


def test_nan_input_gives_nan_outputs():
    net = nets.MINATAR(2, 3)
    theta, ws = nets.init_params(net, np.random.default_rng(0)), nets.workspace(net)
    obs = np.full(net.obs_shape, 0.5, np.float32)
    obs[1, 4, 4] = np.nan
    value, logits = nets.forward(net, theta, obs, ws)
    assert np.isnan(value) and np.all(np.isnan(logits))


def test_sigmoid_is_accurate_and_safe():
    x = np.concatenate([np.linspace(-50, 50, 10001), [-1e308, -1e4, -745.0, 0.0, 1e4, 1e308]])
    s = np.array([nets._sigmoid(v, 1.0) for v in x])
    ref = _sigmoid(x)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert np.all(np.abs(s - ref) <= 4e-16 + 1e-15 * ref)
    x32 = np.concatenate([np.linspace(-50, 50, 10001), [-3e38, -1e4, -104.0, 0.0, 1e4, 3e38]])
    s32 = np.array([nets._sigmoid(v, np.float32(1.0)) for v in x32.astype(np.float32)])
    assert np.array_equal(s32, s32.astype(np.float32)) and np.all((s32 >= 0) & (s32 <= 1))
    with np.errstate(over="ignore"):
        ref32 = 1.0 / (1.0 + np.exp(-x32.astype(np.float32).astype(np.float64)))
    assert np.all(np.abs(s32 - ref32) <= 1e-38 + 4e-7 * ref32)      # a few float32 ulp


def test_workspace_state_survives_vjp_and_jvp():
    net = nets.MINATAR(3, 4)
    theta, obs, rng = setup(net, 11)
    ws = nets.workspace(net, np.float64, 3)
    value, logits = nets.forward(net, theta, obs, ws)
    cot = rng.standard_normal((3, 5))
    first = nets.vjp(net, theta, ws, cot, np.empty((3, net.n_params))).copy()
    dv, dl = nets.jvp(net, theta, ws, rng.standard_normal(net.n_params))
    again = nets.vjp(net, theta, ws, cot[:2], np.empty((2, net.n_params)))
    assert np.array_equal(first[:2], again)
    assert nets.forward(net, theta, obs, ws)[0] == value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stale_nans_in_the_workspace_do_not_leak(dtype):
    net = nets.ATARI(5)
    theta, obs, rng = setup(net, 13, dtype)
    obs, cot = np.abs(obs), rng.standard_normal((2, 6)).astype(dtype)
    v = rng.standard_normal(net.n_params).astype(dtype)
    results = []
    for fill in (0.0, np.nan):  # NaN as left behind by a diverged step
        ws = nets.workspace(net, dtype, 3)
        ws.buf[:] = fill
        value, logits = nets.forward(net, theta, obs, ws)
        grads = nets.vjp(net, theta, ws, cot, np.full((2, net.n_params), fill, dtype))
        results.append((value, logits.copy(), grads, nets.jvp(net, theta, ws, v)[0]))
    (v0, l0, g0, j0), (v1, l1, g1, j1) = results
    assert v0 == v1 and np.array_equal(l0, l1) and np.array_equal(g0, g1) and j0 == j1


@pytest.mark.parametrize("shape", [(84, 84, 4), (1, 4, 84, 84), (4, 84, 83)])
def test_wrong_observation_shape_is_a_one_line_value_error(shape):
    net = nets.ATARI(4)
    theta, ws = nets.init_params(net, np.random.default_rng(0)), nets.workspace(net)
    with pytest.raises(ValueError) as err:
        nets.forward(net, theta, np.ones(shape, np.float32), ws)
    message = str(err.value)
    assert "\n" not in message and str(shape) in message and "(4, 84, 84)" in message


def test_wrong_dtypes_and_cotangent_shapes_are_value_errors():
    net = nets.MINATAR(2, 3)
    theta, ws = nets.init_params(net, np.random.default_rng(0)), nets.workspace(net, k=2)
    obs = np.ones(net.obs_shape, np.float32)
    with pytest.raises(ValueError, match="dtype"):
        nets.forward(net, theta, obs.astype(np.float64), ws)
    with pytest.raises(ValueError, match="theta"):
        nets.forward(net, theta.astype(np.float64), obs, ws)
    nets.forward(net, theta, obs, ws)
    for cot, out in [(np.ones((3, 4), np.float32), np.empty((3, net.n_params), np.float32)),
                     (np.ones((1, 3), np.float32), np.empty((1, net.n_params), np.float32)),
                     (np.ones((1, 4), np.float32), np.empty((2, net.n_params), np.float32))]:
        with pytest.raises(ValueError, match="cot"):
            nets.vjp(net, theta, ws, cot, out)
    with pytest.raises(ValueError, match="direction"):
        nets.jvp(net, theta, ws, np.ones(net.n_params))
    with pytest.raises(ValueError, match="does not fit"):
        nets.make_net((1, 5, 5), ((2, 6, 1),), (3,), 2)


@pytest.mark.parametrize("make", REAL_NETS[1:], ids=["minatar", "minatar-layer-norm"])
def test_sparse_init(make):
    """Sparsity 0.9: exactly ceil(0.9 fan_in) zeros per unit (column of W), the rest as the dense
    init draws them; which inputs are zeroed differs between units; biases stay 0; sparsity 0
    is the dense init bit for bit."""
    net = make()
    dense = nets.init_params(net, np.random.default_rng(5))
    assert np.array_equal(nets.init_params(net, np.random.default_rng(5), sparsity=0.0), dense)
    sparse = nets.init_params(net, np.random.default_rng(5), sparsity=0.9)
    for ly in net.layers:
        size = ly.fan_in * ly.fan_out
        w = sparse[ly.w_off:ly.w_off + size].reshape(ly.fan_in, ly.fan_out)
        d = dense[ly.w_off:ly.w_off + size].reshape(ly.fan_in, ly.fan_out)
        zeros = (w == 0).sum(axis=0)
        assert np.all(zeros == int(np.ceil(0.9 * ly.fan_in)))
        assert np.array_equal(w[w != 0], d[w != 0])
        assert len({tuple(np.flatnonzero(w[:, o] == 0)) for o in range(ly.fan_out)}) > 1
        assert np.all(sparse[ly.b_off:ly.b_off + ly.fan_out] == 0)


def test_spec_round_trip_and_mlp():
    for net in (nets.ATARI(18), nets.MINATAR(4, 6), nets.MLP(4, (64, 64), 2),
                nets.make_net((3, 7, 7), ((2, (3, 2), (1, 2)),), (), 3),
                nets.make_net((4, 10, 10), ((16, 3, 1),), (128,), 5, layer_norm=True)):
        back = nets.from_spec(json.loads(json.dumps(nets.spec(net))))
        assert back.layers == net.layers and np.array_equal(back.table, net.table)
        assert (back.obs_shape, back.n_actions, back.n_params) == (net.obs_shape, net.n_actions,
                                                                   net.n_params)
    assert "layer_norm" not in nets.spec(nets.MINATAR(4, 6))     # old agent files read the same
    assert [ly.ln for ly in nets.make_net((4, 10, 10), ((16, 3, 1),), (128,), 5,
                                          layer_norm=True).layers] == [True, True, False]
    mlp = nets.MLP(4, (64, 32), 2)
    assert mlp.obs_shape == (4,) and [ly.act for ly in mlp.layers] == [nets.SILU, nets.SILU,
                                                                       nets.IDENTITY]
    with pytest.raises(ValueError, match="obs_shape"):
        nets.make_net((4,), ((2, 3, 1),), (), 2)
    with pytest.raises(ValueError, match="not a network"):
        nets.from_spec({"obs_shape": [4]})


LEAKY_NETS = [lambda: nets.MINATAR(4, 3, act=nets.LEAKY_RELU),
              lambda: nets.MINATAR(4, 3, layer_norm=True, act=nets.LEAKY_RELU),
              lambda: nets.MLP(5, (16, 16), 4, layer_norm=True, act=nets.LEAKY_RELU)]


@pytest.mark.parametrize("make", LEAKY_NETS, ids=["minatar", "minatar-layer-norm", "mlp-ln"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaky_relu_nets(make, seed):
    """--activation leaky_relu: the forward pass against the reference layout, every layer
    LeakyReLU(0.01); jvp against central differences along a random direction (the inputs put no
    pre-activation within the difference's reach of the kink at these seeds); vjp against jvp;
    and the spec round trip."""
    net = make()
    assert {ly.act for ly in net.layers[:-1]} == {nets.LEAKY_RELU}
    theta, obs, rng = setup(net, seed)
    assert close(outputs(net, theta, obs), reference_forward(net, theta, obs), 1e-12)
    v = rng.standard_normal(net.n_params)
    jv = jvp_of(net, theta, obs, v)
    assert close(jv, fd_jvp(net, theta, obs, v, 1e-3 * fd_step(net, theta, obs)), 1e-6)
    cot = rng.standard_normal((2, 1 + net.n_actions))
    assert close(vjp_of(net, theta, obs, cot) @ v, cot @ jv, 1e-12)
    back = nets.from_spec(json.loads(json.dumps(nets.spec(net))))
    assert back.layers == net.layers


def test_leaky_relu_slope_at_zero_is_pytorchs():
    """f'(0) = 0.01 (PyTorch's leaky_relu backward takes the slope where x <= 0): at a run's first
    step every layer-normed pre-activation is exactly 0, and 1 there instead sent Stream AC and
    Intentional AC on HalfCheetah to returns below 400 where their scripts reach 2000-3000."""
    for dtype in (np.float32, np.float64):
        a = np.array([-2.0, 0.0, 3.0], dtype)
        d = np.zeros_like(a)
        nets._activate(a, d, nets.LEAKY_RELU)
        assert a.tolist() == [dtype(-0.02), 0.0, 3.0] and d.tolist() == [dtype(0.01), dtype(0.01), 1.0]

"""Mountain car domains of envs (docs/algorithms.md §6.1-6.2): tile coder, gymnasium-exact dynamics,
LinearMountainCar / make, sign drift and noise features, and rejection of bad input.

Statistical checks use +-5 standard deviations (false alarm about 6e-7 per check).
"""
import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import envs

P_LOW, P_HIGH, V_LOW, V_HIGH = -1.2, 0.6, -0.07, 0.07
P_TILE = (P_HIGH - P_LOW) / 9  # one tile width in position: 0.2
V_TILE = (V_HIGH - V_LOW) / 9  # one tile width in velocity: 0.01555...

positions = st.floats(P_LOW, P_HIGH)
velocities = st.floats(V_LOW, V_HIGH)
seeds = st.integers(0, 2**32 - 1)
# for the slow and statistical tests: shrinking a failure would rerun them for minutes
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def tiles(p, v):
    idx = np.zeros(envs.N_TILINGS, np.int64)
    envs.tile_indices(p, v, idx)
    return idx.tolist()


def scaled(p, v):
    """x~ of docs/algorithms.md §6.1, with the coder's own operations."""
    return 9.0 * (p - P_LOW) / (P_HIGH - P_LOW), 9.0 * (v - V_LOW) / (V_HIGH - V_LOW)


def shared(a, b):
    return len(set(a) & set(b))


def pump(v, rng, eps):
    """Energy pumping: push in the direction of the velocity; a random action with prob. eps."""
    if rng.random() < eps:
        return int(rng.integers(3))
    return 2 if v >= 0 else 0


# ---------------------------------------------------------------------------------------------
# 1. Tile coder


@settings(max_examples=300, deadline=None)
@given(positions, velocities)
def test_tile_coder_one_tile_per_tiling(p, v):
    idx = tiles(p, v)
    assert len(set(idx)) == 16
    for k, i in enumerate(idx):
        assert 100 * k <= i < 100 * k + 100  # tiling k owns the block [100k, 100k + 100)
    # the spec formula, written out independently
    x = scaled(p, v)
    expect = []
    for k in range(16):
        c = [math.floor(x[j] + (k * (2 * j + 1) % 16) / 16) for j in (0, 1)]
        assert all(0 <= cj <= 9 for cj in c)  # inside the box, no clipping is needed
        expect.append(100 * k + 10 * c[0] + c[1])
    assert idx == expect


def test_tile_coder_hand_computed():
    # Offsets: o_{k,0} = k/16 and o_{k,1} = (3k mod 16)/16, where 3k mod 16 for k = 0..15 is
    #   0 3 6 9 12 15 2 5 8 11 14 1 4 7 10 13.
    # (p, v) = (-1.2, -0.07) -> x~ = (0, 0): floor(0 + o) = 0 for every o < 1, so c = (0, 0)
    # in every tiling and the feature is 100k.
    assert tiles(-1.2, -0.07) == [100 * k for k in range(16)]
    # (0.6, 0.07) -> x~ = (9, 9): floor(9 + o) = 9, feature 100k + 99.
    assert tiles(0.6, 0.07) == [100 * k + 99 for k in range(16)]
    # (-0.3, 0.0) -> x~ = (9 * 0.9 / 1.8, 9 * 0.07 / 0.14) = (4.5, 4.5), both exact in float64.
    #   c0 = floor(4.5 + k/16) = 4 for k < 8, 5 for k >= 8 (k = 8: 4.5 + 0.5 = 5 exactly).
    #   c1 = floor(4.5 + m/16), m = 3k mod 16: 4 if m < 8 (k = 0 1 2 6 7 11 12 13),
    #        5 if m >= 8 (k = 3 4 5 8 9 10 14 15).
    #   k:       0   1    2    3    4    5    6    7    8    9    10    11    12    13    14    15
    #   c0c1:   44  44   44   45   45   45   44   44   55   55   55    54    54    54    55    55
    assert tiles(-0.3, 0.0) == [44, 144, 244, 345, 445, 545, 644, 744,
                                855, 955, 1055, 1154, 1254, 1354, 1455, 1555]
    # (-0.78, 0.028) -> x~ = (9 * 0.42 / 1.8, 9 * 0.098 / 0.14) = (2.1, 6.3), no ties:
    #   c0 = floor(2.1 + k/16) = 3 only when k/16 >= 0.9, i.e. k = 15; else 2.
    #   c1 = floor(6.3 + m/16) = 7 when m/16 >= 0.7, i.e. m in {12, 13, 14, 15}
    #        <=> k in {4, 15, 10, 5}; else 6.
    assert tiles(-0.78, 0.028) == [26, 126, 226, 326, 427, 527, 626, 726,
                                   826, 926, 1027, 1126, 1226, 1326, 1426, 1537]
    # moving one whole tile in p (0.2) changes c0 in every tiling: no tile in common
    assert shared(tiles(-0.78, 0.028), tiles(-0.58, 0.028)) == 0
    # moving half a tile in p (0.1, x~0: 2.1 -> 2.6) crosses the 8 tile edges at
    # x~0 + k/16 = 3, k = 14 .. 7: 8 of 16 shared
    assert shared(tiles(-0.78, 0.028), tiles(-0.68, 0.028)) == 8


@settings(max_examples=200, deadline=None)
@given(positions, velocities, st.floats(-1.0, 1.0), st.floats(-1.0, 1.0))
def test_neighbouring_states_share_at_least_14_tiles(p, v, fp, fv):
    # A move of at most 1e-3 of the range is at most 0.009 tile widths. The tile edges of the 16
    # tilings along one axis sit at n - o_{k,j}; since k -> k(2j+1) mod 16 is a permutation,
    # these are all multiples of 1/16, one tiling each. An interval shorter than 1/16 holds at
    # most one of them, so at most one tiling changes per axis: >= 14 of 16 shared.
    p2 = min(max(p + fp * 1e-3 * (P_HIGH - P_LOW), P_LOW), P_HIGH)
    v2 = min(max(v + fv * 1e-3 * (V_HIGH - V_LOW), V_LOW), V_HIGH)
    assert shared(tiles(p, v), tiles(p2, v2)) >= 14
    assert shared(tiles(p, v), tiles(p2, v)) >= 15
    assert shared(tiles(p, v), tiles(p, v2)) >= 15


@settings(max_examples=200, deadline=None)
@given(positions, velocities, st.floats(0.0, 0.999), st.booleans())
def test_shared_tiles_along_one_axis_follow_distance(p, v, d, along_p):
    # Moving a distance d < 1 (in tile widths) along one axis crosses floor(16d) or ceil(16d)
    # of the 1/16-spaced tile edges (see above), one per tiling: 16 - that many are shared.
    if along_p:
        p2, v2 = p + d * P_TILE, v
        if p2 > P_HIGH:
            p2 = p - d * P_TILE
    else:
        p2, v2 = p, v + d * V_TILE
        if v2 > V_HIGH:
            v2 = v - d * V_TILE
    j = 0 if along_p else 1
    dist = abs(scaled(p2, v2)[j] - scaled(p, v)[j])  # the distance the coder actually sees
    changed = 16 - shared(tiles(p, v), tiles(p2, v2))
    assert math.floor(16 * dist - 1e-9) <= changed <= math.ceil(16 * dist + 1e-9)


@settings(max_examples=200, deadline=None)
@given(positions, velocities, positions, velocities)
def test_far_apart_states_share_no_tile(p, v, p2, v2):
    # If x~_j differs by >= 1 on some axis, floor(x~_j + o) differs in every tiling.
    if abs(p - p2) < 1.01 * P_TILE and abs(v - v2) < 1.01 * V_TILE:
        p2 = p - 1.5 * P_TILE if p > -0.3 else p + 1.5 * P_TILE
    assert shared(tiles(p, v), tiles(p2, v2)) == 0


# ---------------------------------------------------------------------------------------------
# 2. Dynamics: bit-for-bit gymnasium MountainCar-v0


def compare_with_gymnasium(seed, choose):
    """Run gymnasium and mc_step side by side; return (steps, terminated, wall hits)."""
    env = gym.make("MountainCar-v0")
    env.reset(seed=seed)
    p, v = envs.mc_reset(np.random.default_rng(seed))
    gp, gv = env.unwrapped.state
    assert (p, v) == (gp, gv) and v == 0.0 and -0.6 <= p <= -0.4
    wall = 0
    for t in range(1, 201):
        a = choose(v)
        _, reward, g_term, g_trunc, _ = env.step(a)
        p, v, term = envs.mc_step(p, v, a)
        gp, gv = env.unwrapped.state
        assert p == gp and v == gv, (t, a, p, gp, v, gv)  # exact float64 equality
        assert term == g_term and reward == -1.0
        assert g_trunc == (t == 200)   # gymnasium truncates at 200 even on reaching the goal
        wall += p == P_LOW
        if term:
            assert p >= 0.5 and v >= 0.0
            break
    env.close()
    return t, term, wall


@settings(max_examples=20, deadline=None, phases=NO_SHRINK)
@given(seeds, seeds, st.floats(0.0, 1.0), st.booleans())
def test_dynamics_match_gymnasium(seed, action_seed, eps, uniform):
    rng = np.random.default_rng(action_seed)
    if uniform:
        compare_with_gymnasium(seed, lambda v: int(rng.integers(3)))
    else:
        compare_with_gymnasium(seed, lambda v: pump(v, rng, eps))


def test_dynamics_match_gymnasium_through_goal_and_wall():
    """Pumping reaches the goal (termination compared) and sometimes hits the left wall."""
    runs = [compare_with_gymnasium(s, lambda v, r=np.random.default_rng(100 + s): pump(v, r, 0.2))
            for s in range(20)]
    assert all(term and t < 200 for t, term, _ in runs)
    assert sum(wall for *_, wall in runs) > 0  # the p = -1.2, v <- 0 branch was exercised


def test_operation_order_matters():
    """The textbook grouping differs from gymnasium's in the last bit on some steps, so the
    exact comparison above is a real check of the order of operations."""
    rng = np.random.default_rng(3)
    p, v = envs.mc_reset(rng)
    differ = 0
    for _ in range(200):
        a = int(rng.integers(3))
        naive = min(max(v + 0.001 * (a - 1) - 0.0025 * math.cos(3 * p), -0.07), 0.07)
        p, v, _ = envs.mc_step(p, v, a)
        differ += naive != v
    assert differ > 0


# ---------------------------------------------------------------------------------------------
# 3. LinearMountainCar / make


def check_tile_obs(obs, state, signs=None):
    """16 tile entries, at the tiles of the float32 observation of `state`, valued by the signs."""
    idx = tiles(float(np.float32(state[0])), float(np.float32(state[1])))
    tile_part = obs[:1600]
    assert np.flatnonzero(tile_part).tolist() == idx
    expect = np.ones(16) if signs is None else signs[idx]
    np.testing.assert_array_equal(tile_part[idx], expect)


@settings(max_examples=10, deadline=None, phases=NO_SHRINK)
@given(seeds, seeds)
def test_mountaincar_observation(seed, action_seed):
    env = envs.make("mountaincar", seed=seed)
    assert env.observation_space.shape == (1600,) and env.action_space.n == 3
    obs, info = env.reset()
    # the same start as gymnasium's reset(seed=seed)
    assert tuple(info["state"]) == envs.mc_reset(np.random.default_rng(seed))
    rng = np.random.default_rng(action_seed)
    for _ in range(50):
        assert obs.shape == (1600,) and obs.dtype == np.float64
        assert np.count_nonzero(obs) == 16 and obs.sum() == 16.0
        check_tile_obs(obs, info["state"])
        obs, reward, term, trunc, info = env.step(int(rng.integers(3)))
        assert reward == -1.0 and not trunc


@settings(max_examples=5, deadline=None, phases=NO_SHRINK)
@given(seeds)
def test_mountaincar_truncates_at_200(seed):
    env = envs.make("mountaincar", seed=seed)
    env.reset()
    for t in range(1, 201):
        # no push: from p in [-0.6, -0.4] at rest the car can never reach p = 0.5
        _, reward, term, trunc, _ = env.step(1)
        assert reward == -1.0 and not term
        assert trunc == (t == 200)


def test_mountaincar_terminates_at_goal():
    env = envs.make("mountaincar", seed=4)
    _, info = env.reset()
    for t in range(1, 201):
        _, _, term, trunc, info = env.step(2 if info["state"][1] >= 0 else 0)
        if term:
            break
    assert term and not trunc and t < 200
    assert info["state"][0] >= 0.5


def rollout(env, actions, **reset_kw):
    """Observations, then states and rewards, of `actions`, resetting at episode ends."""
    obs, info = env.reset(**reset_kw)
    out, states = [obs], [info["state"]]
    for a in actions:
        obs, r, term, trunc, info = env.step(int(a))
        out.append(obs)
        states.append(np.append(info["state"], [r, term, trunc]))
        if term or trunc:
            obs, info = env.reset()
            out.append(obs)
            states.append(np.append(info["state"], [0.0, 0.0, 0.0]))
    return np.array(out), np.array([np.resize(x, 5) for x in states])


@settings(max_examples=5, deadline=None, phases=NO_SHRINK)
@given(seeds, seeds, st.sampled_from(["mountaincar", "drifting_mountaincar"]))
def test_same_seed_same_trajectory(seed, action_seed, name):
    options = {"drift": 0.01} if name == "drifting_mountaincar" else {}
    actions = np.random.default_rng(action_seed).integers(3, size=250)  # crosses a reset
    a_obs, a_states = rollout(envs.make(name, seed=seed, **options), actions)
    b_obs, b_states = rollout(envs.make(name, seed=seed, **options), actions)
    _, c_states = rollout(envs.make(name, seed=seed + 1, **options), actions)
    np.testing.assert_array_equal(a_obs, b_obs)
    np.testing.assert_array_equal(a_states, b_states)
    assert a_states[0, 0] != c_states[0, 0]  # another seed, another start


@settings(max_examples=5, deadline=None, phases=NO_SHRINK)
@given(seeds)
def test_mountaincar_reset_seed_is_reproducible(seed):
    actions = np.random.default_rng(seed).integers(3, size=250)
    a_obs, a_states = rollout(envs.make("mountaincar"), actions, seed=seed)
    b_obs, b_states = rollout(envs.make("mountaincar", seed=12345), actions, seed=seed)
    np.testing.assert_array_equal(a_obs, b_obs)
    np.testing.assert_array_equal(a_states, b_states)


def test_drifting_reset_seed_is_reproducible():
    actions = np.random.default_rng(0).integers(3, size=100)
    a_obs, _ = rollout(envs.make("drifting_mountaincar", drift=0.01), actions, seed=7)
    b_obs, _ = rollout(envs.make("drifting_mountaincar", drift=0.01), actions, seed=7)
    np.testing.assert_array_equal(a_obs, b_obs)


@settings(max_examples=5, deadline=None, phases=NO_SHRINK)
@given(seeds, seeds)
def test_drifting_mountaincar_features(seed, action_seed):
    assert envs.make("drifting_mountaincar").drift == 6e-6  # the paper's Fig. 7 rate by default
    env = envs.make("drifting_mountaincar", seed=seed, drift=0.05)
    assert env.observation_space.shape == (1632,)
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset()
    seen = set()
    noise_sum = 0.0
    for _ in range(100):
        assert obs.shape == (1632,)
        assert set(np.unique(obs)) <= {-1.0, 0.0, 1.0}
        assert np.count_nonzero(obs[:1600]) == 16
        assert set(np.unique(obs[1600:])) <= {0.0, 1.0}
        check_tile_obs(obs, info["state"], env.signs)
        seen |= set(np.unique(obs).tolist())
        noise_sum += obs[1600:].sum()
        obs, _, term, trunc, info = env.step(int(rng.integers(3)))
        if term or trunc:
            obs, info = env.reset()
    assert seen == {-1.0, 0.0, 1.0}
    assert abs(noise_sum - 100 * 16) < 5 * math.sqrt(100 * 32 * 0.25)  # 16 noisy active on average


def test_drift_happens_each_step_before_features_and_not_at_reset():
    # drift = 1 flips every sign on every step: the tile values are +1 after reset, then
    # -1, +1, -1, ... after steps 1, 2, 3, ...; a reset does not flip.
    env = envs.make("drifting_mountaincar", seed=0, drift=1.0)
    obs, _ = env.reset()
    assert np.all(obs[:1600][obs[:1600] != 0] == 1.0)
    for t in range(1, 6):
        obs, *_ = env.step(1)
        assert np.all(obs[:1600][obs[:1600] != 0] == (-1.0) ** t)
    obs, _ = env.reset()
    assert np.all(obs[:1600][obs[:1600] != 0] == -1.0)  # 5 flips so far, none at reset
    np.testing.assert_array_equal(env.signs, -np.ones(1600))


# ---------------------------------------------------------------------------------------------
# 4. Drift and noise kernels


def flips_per_step(rate, steps, seed):
    """Matrix (steps, 1600) of 0/1: which signs flipped on which step."""
    rng = np.random.default_rng(seed)
    signs = np.ones(1600)
    nxt = envs.first_flip(rate, rng)
    out = np.zeros((steps, 1600), np.int8)
    for t in range(steps):
        before = signs.copy()
        nxt = envs.drift_flip(signs, nxt, rate, rng)
        assert 0 <= nxt
        out[t] = before != signs
    assert np.all(np.abs(signs) == 1.0)
    return out


@settings(max_examples=2, deadline=None, phases=NO_SHRINK)
@given(seeds)
@pytest.mark.parametrize("rate, steps", [(1e-5, 3000), (1e-3, 1000), (0.3, 100)])
def test_drift_flip_frequency(rate, steps, seed):
    flips = flips_per_step(rate, steps, seed)
    n = 1600 * steps
    total = flips.sum()
    # 1e-5: mean 48, sd 6.9 (most gaps span many steps); 1e-3: mean 1600, sd 40; 0.3: 48000, 183
    assert abs(total - n * rate) <= 5 * math.sqrt(n * rate * (1 - rate))
    # per-step counts are Binomial(1600, rate), independent across steps: their dispersion
    # statistic has mean `steps` and variance steps * (2 + (1 - 6 rate (1 - rate)) / var).
    # It is skewed at low rates, hence 7 sd (no exceedance in 2e5 simulated runs per rate).
    per_step = flips.sum(axis=1)
    var = 1600 * rate * (1 - rate)
    chi2 = ((per_step - 1600 * rate) ** 2).sum() / var
    assert abs(chi2 - steps) <= 7 * math.sqrt(2 * steps + steps / var)
    if rate == 0.3:
        # per-feature counts are Binomial(100, 0.3): spread over all features
        per_feature = flips.sum(axis=0)
        assert per_feature.min() >= 1  # P(some feature never flips) = 1600 * 0.7^100 ~ 5e-13
        chi2 = ((per_feature - steps * rate) ** 2).sum() / (steps * rate * (1 - rate))
        assert abs(chi2 - 1600) <= 5 * math.sqrt(2 * 1600 * 1.1)


def test_drift_zero_never_flips_and_one_flips_all():
    rng = np.random.default_rng(1)
    signs = np.ones(1600)
    signs[::3] = -1.0
    start = signs.copy()
    assert envs.first_flip(0.0, rng) == 0
    for _ in range(50):
        assert envs.drift_flip(signs, 0, 0.0, rng) == 0
    np.testing.assert_array_equal(signs, start)
    nxt = envs.first_flip(1.0, rng)
    assert nxt == 0
    for t in range(1, 6):
        nxt = envs.drift_flip(signs, nxt, 1.0, rng)
        assert nxt == 0
        np.testing.assert_array_equal(signs, start * (-1.0) ** t)


@settings(max_examples=3, deadline=None, phases=NO_SHRINK)
@given(seeds, positions, velocities)
def test_noise_features(seed, p, v):
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random(1600) < 0.5, -1.0, 1.0)
    idx = np.zeros(48, np.int64)
    val = np.zeros(48)
    calls = 4000
    counts = np.zeros(32)
    both = 0
    tile_idx = tiles(float(np.float32(p)), float(np.float32(v)))
    for _ in range(calls):
        k = envs.linear_features(p, v, signs, 32, rng, idx, val)
        assert idx[:16].tolist() == tile_idx
        np.testing.assert_array_equal(val[:16], signs[tile_idx])  # tile values are the signs
        noise = idx[16:k] - 1600
        assert np.all(np.diff(noise) > 0) and 0 <= noise.min(initial=0) and noise.max(initial=0) < 32
        assert np.all(val[16:k] == 1.0)
        counts[noise] += 1
        both += (0 in noise) and (31 in noise)
    # each bit is Bernoulli(0.5): count ~ Binomial(4000, 0.5), mean 2000, sd 31.6
    assert np.all(np.abs(counts - calls / 2) <= 5 * math.sqrt(calls / 4))
    # bits are not tied together: P(bit 0 and bit 31) = 1/4, sd of count sqrt(4000 * 3/16) = 27
    assert abs(both - calls / 4) <= 5 * math.sqrt(calls * 3 / 16)
    assert envs.linear_features(p, v, signs, 0, rng, idx, val) == 16


# ---------------------------------------------------------------------------------------------
# 5. Bad input


def test_unknown_domain():
    with pytest.raises(ValueError, match="'nope'") as e:
        envs.make("nope")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("drift", [1.5, -0.1, float("nan")])
def test_bad_drift(drift):
    with pytest.raises(ValueError, match="drift") as e:
        envs.make("drifting_mountaincar", drift=drift)
    assert str(drift) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("action", [3, -1, 100, np.int64(5)])
def test_out_of_range_action(action):
    env = envs.make("mountaincar", seed=0)
    env.reset()
    with pytest.raises(ValueError, match=str(action)) as e:
        env.step(action)
    assert "\n" not in str(e.value)
    env.step(np.int64(2))  # numpy integers in range are fine


@pytest.mark.parametrize("action", [-0.5, 2.5])
def test_non_integer_action_rejected(action):
    env = envs.make("mountaincar", seed=0)
    env.reset()
    with pytest.raises(ValueError):
        env.step(action)

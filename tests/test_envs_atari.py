"""Atari (docs/algorithms.md §6.3) and MinAtar domains of envs.make: shapes, settings, seeding, rewards."""
import numpy as np
import pytest

import envs

ATARI_ACTIONS = {"asterix": 9, "beam_rider": 9, "freeway": 3, "seaquest": 18, "space_invaders": 6}
MINATAR_CHANNELS = {"minatar-asterix": 4, "minatar-breakout": 4, "minatar-freeway": 7,
                    "minatar-seaquest": 10, "minatar-space_invaders": 6}


def rollout(env, seed, n_steps, action_seed=123):
    """Observations and rewards of `n_steps` uniformly random actions, resetting at episode ends."""
    actions = np.random.default_rng(action_seed).integers(env.action_space.n, size=n_steps)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, r, term, trunc, _ = env.step(int(a))
        observations.append(obs)
        rewards.append(r)
        if term or trunc:
            obs, _ = env.reset()
            observations.append(obs)
    return np.array(observations), np.array(rewards)


@pytest.mark.parametrize("game", sorted(ATARI_ACTIONS))
def test_atari_settings(game):
    env = envs.make(game, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (4, 84, 84) == env.observation_space.shape
    assert obs.dtype == np.float32
    assert 0.0 <= obs.min() and obs.max() <= 1.0 and obs.max() > 0.0
    assert env.action_space.n == ATARI_ACTIONS[game]
    ale = env.unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert ale.getInt("max_num_frames_per_episode") == 108_000
    assert env.unwrapped._frameskip == 1  # AtariPreprocessing skips and max-pools
    obs, *_ = env.step(0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.float32
    env.close()


def test_atari_frame_skip_and_stack():
    """One agent step = 4 emulator frames; the stack holds the last 4 observations, newest last."""
    env = envs.make("seaquest", seed=1)
    first, _ = env.reset()
    assert all(np.array_equal(first[k], first[0]) for k in range(4))  # padded with the reset frame
    prev = first
    for _ in range(3):
        obs, *_ = env.step(0)
        np.testing.assert_array_equal(obs[:3], prev[1:])
        prev = obs
    assert env.unwrapped.ale.getEpisodeFrameNumber() == 12
    env.close()


def test_atari_seeded_determinism():
    a = envs.make("seaquest", seed=7)
    b = envs.make("seaquest", seed=7)
    obs_a, rew_a = rollout(a, 7, 100)
    obs_b, rew_b = rollout(b, 7, 100)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    # a used env reseeded at reset reproduces the fresh trajectory
    obs_c, rew_c = rollout(a, 7, 100)
    np.testing.assert_array_equal(obs_a, obs_c)
    np.testing.assert_array_equal(rew_a, rew_c)
    # the seed given to make seeds the first reset
    c = envs.make("seaquest", seed=7)
    np.testing.assert_array_equal(c.reset()[0], obs_a[0])
    # another seed gives other sticky-action draws, hence another trajectory
    obs_d, _ = rollout(envs.make("seaquest", seed=8), 8, 100)
    assert not np.array_equal(obs_a, obs_d)


def test_atari_reward_clipping_and_score():
    """Learning reward = clip(score, -1, 1); info["score"] is the unclipped game score."""
    clipped = envs.make("space_invaders", seed=0)
    raw = envs.make("space_invaders", seed=0, clip_rewards=False)
    clipped.reset(seed=0)
    raw.reset(seed=0)
    actions = np.random.default_rng(0).integers(6, size=300)
    scores = []
    for a in actions:
        _, rc, *_, info_c = clipped.step(int(a))
        _, rr, *_, info_r = raw.step(int(a))
        assert info_c["score"] == info_r["score"] == rr
        assert rc == np.clip(rr, -1.0, 1.0)
        scores.append(rr)
    assert max(scores) > 1.0  # space invaders pays 5..30 points per alien


def test_atari_frame_cap_is_truncation():
    env = envs.make("seaquest", seed=0, max_frames=40)
    env.reset()
    for step in range(1, 11):
        _, _, term, trunc, _ = env.step(0)
        assert not term
        assert trunc == (step == 10)  # 10 agent steps x 4 frames = 40 emulator frames


def test_atari_options_read_back():
    env = envs.make("freeway", seed=0, repeat_action_probability=0.0, full_action_space=True)
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    assert env.action_space.n == 18
    env = envs.make("freeway", seed=0, max_pool=False)
    assert env.unwrapped._frameskip == 4
    env.reset()
    env.step(0)
    assert env.unwrapped.ale.getEpisodeFrameNumber() == 4


@pytest.mark.parametrize("game", sorted(MINATAR_CHANNELS))
def test_minatar_settings(game):
    env = envs.make(game, seed=0)
    obs, _ = env.reset()
    shape = (MINATAR_CHANNELS[game], 10, 10)
    assert obs.shape == shape == env.observation_space.shape
    assert env.action_space.n == 6
    assert env.unwrapped.game.sticky_action_prob == 0.1
    observations, rewards = rollout(env, 0, 50)
    assert observations.dtype == np.float32
    assert set(np.unique(observations)) <= {0.0, 1.0}
    assert observations.max() == 1.0
    env.close()


@pytest.mark.parametrize("game", ["minatar-breakout", "minatar-seaquest"])
def test_minatar_seeded_determinism(game):
    a = envs.make(game, seed=3)
    b = envs.make(game, seed=3)
    obs_a, rew_a = rollout(a, 3, 300)
    obs_b, rew_b = rollout(b, 3, 300)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    obs_c, rew_c = rollout(a, 3, 300)  # reseeding a used env
    np.testing.assert_array_equal(obs_a, obs_c)
    np.testing.assert_array_equal(rew_a, rew_c)
    np.testing.assert_array_equal(envs.make(game, seed=3).reset()[0], obs_a[0])


def test_minatar_score_and_minimal_actions():
    env = envs.make("minatar-breakout", seed=0)
    env.reset()
    _, r, *_, info = env.step(0)
    assert info["score"] == r
    assert envs.n_actions("minatar-breakout", minimal_action_set=True) == 3
    assert envs.obs_shape("minatar-breakout") == (4, 10, 10)


def test_helpers():
    assert envs.obs_shape("seaquest") == (4, 84, 84)
    assert envs.n_actions("space_invaders") == 6


@pytest.mark.parametrize("name", ["pong", "Seaquest", "minatar-pong", ""])
def test_unknown_domain(name):
    with pytest.raises(ValueError, match="accepted: .*seaquest.*minatar-seaquest") as err:
        envs.make(name)
    assert repr(name) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("options", [
    {"max_frames": 0}, {"max_frames": -5}, {"repeat_action_probability": 1.5},
    {"frame_skip": 0}, {"frame_stack": 2.5}, {"noop_max": -1},
])
def test_atari_bad_options(options):
    (key, value), = options.items()
    with pytest.raises(ValueError, match="accepted range") as err:
        envs.make("seaquest", **options)
    assert f"{key} {value!r}" in str(err.value) and "\n" not in str(err.value)


def test_minatar_bad_options():
    with pytest.raises(ValueError, match=r"repeat_action_probability -0.1 .*\[0.0, 1.0\]"):
        envs.make("minatar-breakout", repeat_action_probability=-0.1)
    env = envs.make("minatar-breakout", seed=0)
    env.reset()
    with pytest.raises(ValueError, match="action 6 is outside"):
        env.step(6)


@pytest.mark.parametrize("game,options", [("seaquest", {}), ("freeway", {}),
                                          ("space_invaders", {"terminal_on_life_loss": True,
                                                              "noop_max": 5})])
def test_fast_atari_equals_gymnasium_wrappers(game, options):
    """FastAtari gives exactly what AtariPreprocessing + FrameStackObservation give: same
    observations, rewards (clipped and unclipped), flags and lives, over episode boundaries."""
    fast = envs.make(game, seed=5, **options)
    slow = envs.make(game, seed=5, fast=False, **options)
    assert isinstance(fast.env.env, envs.FastAtari) and not isinstance(slow.env.env, envs.FastAtari)
    actions = np.random.default_rng(1).integers(fast.action_space.n, size=1200)
    o1, _ = fast.reset()
    o2, _ = slow.reset()
    np.testing.assert_array_equal(o1, o2)
    ends = 0
    for a in actions:
        o1, r1, te1, tr1, i1 = fast.step(int(a))
        o2, r2, te2, tr2, i2 = slow.step(int(a))
        np.testing.assert_array_equal(o1, o2)
        assert (r1, te1, tr1, i1["score"], i1["lives"]) == (r2, te2, tr2, i2["score"], i2["lives"])
        if te1 or tr1:
            ends += 1
            np.testing.assert_array_equal(fast.reset()[0], slow.reset()[0])
    assert ends >= (1 if game != "freeway" else 0)
    assert fast.unwrapped.ale.getEpisodeFrameNumber() == slow.unwrapped.ale.getEpisodeFrameNumber()

"""Metatrace on a user's own problem: gymnasium ids from the command line, the kept agent
(save / load / evaluate), evaluation during training, and the per-episode logs."""
import csv
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import envs
import metatrace as mt
import nets
import run
import runners

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANDOM_CARTPOLE = 22.4     # mean return of the uniform random policy on CartPole-v1 (measured below)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def random_policy_return(episodes=200, seed=0):
    """Mean return of uniformly random actions on CartPole-v1."""
    env = envs.make("CartPole-v1", seed=seed)
    rng, total = np.random.default_rng(seed), 0.0
    for _ in range(episodes):
        env.reset()
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(int(rng.integers(2)))
            total += r
            done = term or trunc
    return total / episodes


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    """A CI-sized Mixed Metatrace run on CartPole-v1 (defaults: MLP 64,64, alpha 2^-8)."""
    out = tmp_path_factory.mktemp("cp") / "run"
    assert run.main(["--domain", "CartPole-v1", "--steps", "20000", "--seed", "0", "--quiet",
                     "--out", str(out), "--eval-every", "100", "--eval-episodes", "3"]) == 0
    return out


def test_random_policy_baseline_is_what_the_test_assumes():
    assert abs(random_policy_return() - RANDOM_CARTPOLE) < 3


def test_cartpole_mixed_learns_beyond_a_random_policy(cartpole):
    eps = rows(cartpole / "episodes.csv")
    last = np.mean([float(r["return"]) for r in eps[-50:]])
    assert last > 2.5 * RANDOM_CARTPOLE, last
    cfg = json.loads((cartpole / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["settings"]["hidden"] == [64, 64]
    assert cfg["settings"]["tuner"] == "mixed" and cfg["settings"]["alpha"] == 2.0 ** -8


def test_evaluate_prints_a_finite_mean_and_writes_nothing(cartpole, capsys):
    before = sorted(os.listdir(cartpole))
    stamp = [os.stat(cartpole / f).st_mtime_ns for f in before]
    capsys.readouterr()
    assert run.main(["evaluate", str(cartpole), "--episodes", "5", "--greedy"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"mean return (-?[\d.]+) ± ([\d.]+) \(s\.e\.\) over 5 episodes, greedy", out)
    assert m and math.isfinite(float(m.group(1))) and float(m.group(1)) > RANDOM_CARTPOLE, out
    assert sorted(os.listdir(cartpole)) == before
    assert [os.stat(cartpole / f).st_mtime_ns for f in before] == stamp


def test_evaluation_does_not_change_training(cartpole, tmp_path):
    """The same run without --eval-every has the same episodes.csv, byte for byte; eval.csv has
    one row per 100 episodes with the mean and s.e. of its returns."""
    out = tmp_path / "noeval"
    assert run.main(["--domain", "CartPole-v1", "--steps", "20000", "--seed", "0", "--quiet",
                     "--out", str(out)]) == 0
    assert (out / "episodes.csv").read_bytes() == (cartpole / "episodes.csv").read_bytes()
    assert not (out / "eval.csv").exists()
    ev, n = rows(cartpole / "eval.csv"), len(rows(cartpole / "episodes.csv"))
    assert [int(r["episode"]) for r in ev] == list(range(100, n + 1, 100))
    assert all(math.isfinite(float(r["eval_mean"])) and float(r["eval_se"]) >= 0 for r in ev)


def test_timing_is_beside_episodes_and_rates_exclude_compilation(cartpole):
    eps, tm = rows(cartpole / "episodes.csv"), rows(cartpole / "timing.csv")
    assert [r["episode"] for r in tm] == [r["episode"] for r in eps]
    el = [float(r["elapsed_seconds"]) for r in tm]
    assert all(b >= a for a, b in zip(el, el[1:]))
    assert abs(sum(float(r["seconds"]) for r in tm) - el[-1]) < 0.5
    cfg = json.loads((cartpole / "config.json").read_text())
    assert cfg["compile_seconds"] >= 0
    assert cfg["steps_per_second"] == pytest.approx(20000 / cfg["wall_seconds"], rel=2e-3)


def test_network_runs_log_delta_entropy_and_beta_per_layer(cartpole):
    """layers.csv: a row after the first episode and after each 10,000 agent steps; its last
    (at the end of the run) holds NumPy's per-layer mean and quantiles of the saved agent's beta.
    The entropy of a 2-action policy lies in [0, log 2]."""
    layer_rows = rows(cartpole / "layers.csv")
    assert [int(r["steps"]) // runners.LAYER_EVERY for r in layer_rows] == [0, 1, 2]
    assert layer_rows[0]["episode"] == "1" and layer_rows[-1]["steps"] == "20000"
    last = layer_rows[-1]
    agent = mt.load(str(cartpole / "agent.npz"))
    beta = agent.learner.beta()
    for name, lo, hi in runners.layer_slices(agent.net):
        b = beta[lo:hi]
        assert float(last[f"beta_{name}_mean"]) == pytest.approx(b.mean(), abs=1e-12)
        for q in (10, 50, 90):
            assert float(last[f"beta_{name}_q{q}"]) == pytest.approx(
                np.quantile(b, q / 100, method="lower"), abs=1e-12)
    assert [n for n, _, _ in runners.layer_slices(agent.net)] == ["dense1", "dense2", "head"]
    for r in rows(cartpole / "episodes.csv"):
        assert 0 <= float(r["entropy"]) <= math.log(2) + 1e-12 and float(r["abs_delta"]) >= 0


def test_mountain_car_delta_and_entropy_match_a_plain_loop():
    """The fused episode loop's mean |delta| and mean entropy equal those of LinearAgent stepped
    through the gymnasium mountain car on the same streams."""
    cfg = mt.Config(tuner="mixed", alpha=2.0 ** -10, mu=2.0 ** -10)
    task = envs.MountainCarTask(cfg, drifting=True, drift=1e-3, seed=3)
    twin = envs.MountainCarTask(cfg, drifting=True, drift=1e-3, seed=3)
    for _ in range(3):
        task.episode()
        # the same episode by hand: LinearAgent's own step, with linear_step's delta
        a, L = twin.agent, twin.agent.learner
        p, v = envs.mc_reset(twin.rng_env)
        f0, f1 = a.f
        k0 = envs.linear_features(p, v, twin.signs, twin.n_noise, twin.rng_env, f0.idx, f0.val)
        nxt, dsum, hsum, t = int(twin.env_state[0]), 0.0, 0.0, 0
        while True:
            V0, H0 = mt.linear_policy(L.w, a.model, f0._replace(k=k0))
            A = int(mt.sample(a.model.pi, a.rng))
            p, v, term = envs.mc_step(p, v, A)
            t += 1
            nxt = envs.drift_flip(twin.signs, nxt, twin.drift, twin.rng_env)
            k1 = envs.linear_features(p, v, twin.signs, twin.n_noise, twin.rng_env, f1.idx,
                                      f1.val)
            end = term or t >= envs.MC_TIME_LIMIT
            delta, ok = mt.linear_step(L.bundle, a.scratch, L.hyper, a.model, f0._replace(k=k0),
                                       f1._replace(k=k1), mt.Transition(A, -1.0, 0.0 if end
                                                                        else cfg.gamma, V0, H0))
            dsum, hsum = dsum + abs(delta), hsum + H0
            if end:
                break
            f0, f1, k0 = f1, f0, k1
        L.end_episode()
        twin.env_state[0] = nxt
        assert task.last.abs_delta == pytest.approx(dsum / t, rel=1e-12)
        assert task.last.entropy == pytest.approx(hsum / t, rel=1e-12)
    assert np.array_equal(task.learner.W, twin.learner.W)


def _steps(agent, env, obs, n, gamma=0.99):
    """n learning steps of agent on env from obs -> (actions, next obs)."""
    acts = []
    for _ in range(n):
        a = agent.policy(obs)
        obs1, r, term, trunc, _ = env.step(a)
        agent.learn(a, r, obs1, 0.0 if term else gamma)
        acts.append(a)
        obs = obs1
        if term or trunc:
            agent.end_episode()
            obs, _ = env.reset()
    return acts, obs


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), tuner=st.sampled_from(("none", "scalar", "vector", "mixed")),
       k=st.integers(1, 300))
def test_net_agent_save_load_continues_identically(seed, tuner, k, tmp_path_factory):
    """After k steps, a saved and reloaded agent takes the same actions and reaches the same
    state as the original on the same transitions."""
    path = str(tmp_path_factory.mktemp("a") / "agent.npz")
    cfg = mt.Config(tuner=tuner, alpha=2.0 ** -8, mu=1e-3 if tuner != "none" else 2.0 ** -8,
                    psi=0.01)
    env = envs.make("CartPole-v1", seed=seed)
    agent = envs.agent_for(env, cfg, hidden=(16, 8), seed=seed)
    obs, _ = env.reset()
    _, obs = _steps(agent, env, obs, k)
    agent.save(path)
    copy = mt.NetAgent.load(path)
    assert type(mt.load(path)) is mt.NetAgent
    state = env.unwrapped.state.copy(), env.unwrapped.np_random.bit_generator.state
    runs = []
    for ag in (agent, copy):
        e = envs.make("CartPole-v1", seed=seed)
        e.reset()
        e.unwrapped.state, e.unwrapped.np_random.bit_generator.state = state[0].copy(), state[1]
        runs.append(_steps(ag, e, obs.copy(), 200)[0])
    assert runs[0] == runs[1]
    for k_, v in agent.learner.state().items():    # a diverged agent's NaNs must match too
        assert np.array_equal(v, copy.learner.state()[k_], equal_nan=True), k_
    probe = np.asarray(obs, np.float32)
    assert agent.act(probe, greedy=True) == copy.act(probe, greedy=True)


def test_linear_agent_save_load_and_refusals(tmp_path):
    cfg = mt.Config(tuner="vector", alpha=2.0 ** -4, mu=2.0 ** -6)
    a = mt.LinearAgent(cfg, 12, 3, max_active=4, seed=7)
    rng = np.random.default_rng(1)
    feats = [(rng.choice(12, 3, replace=False), rng.uniform(0.5, 1.5, 3)) for _ in range(40)]
    for i in range(20):
        a.policy(*feats[i])
        a.learn(float(rng.normal()), *feats[i + 1], 0.9)
    path = tmp_path / "lin.npz"
    a.save(str(path), note=np.arange(3))
    b = mt.LinearAgent.load(str(path))
    assert mt.read_agent(str(path))[0]["extra"]["note"].tolist() == [0, 1, 2]
    for i in range(20, 39):
        assert a.policy(*feats[i]) == b.policy(*feats[i])
        a.learn(-1.0, *feats[i + 1], 0.9)
        b.learn(-1.0, *feats[i + 1], 0.9)
    assert np.array_equal(a.learner.W, b.learner.W) and np.array_equal(a.learner.s, b.learner.s)
    a.policy(*feats[0])
    with pytest.raises(mt.HandoffError):
        a.save(str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="not a linear"):
        net = nets.MLP(3, (4,), 2)
        mt.NetAgent(net, mt.Config(tuner="mixed", alpha=0.01, mu=1e-3)).save(str(tmp_path / "n.npz"))
        mt.LinearAgent.load(str(tmp_path / "n.npz"))
    arrays = dict(np.load(path))
    arrays["W"] = arrays["W"].copy()
    arrays["W"][0, 0] = np.nan
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="non-finite"):
        mt.LinearAgent.load(str(tmp_path / "bad.npz"))


def test_finished_run_keeps_an_agent_that_equals_its_last_state(tmp_path):
    """Mountain car: agent.npz holds the learner at the end of the run (its checkpoint, kept, has
    the same arrays), and evaluate reads it with the run's drift signs."""
    out = tmp_path / "mc"
    assert run.main(["--domain", "drifting_mountaincar", "--tuner", "mixed", "--alpha", "2^-10",
                     "--episodes", "50", "--quiet", "--out", str(out), "--keep-checkpoint",
                     "--checkpoint-every", "50"]) == 0
    agent = mt.load(str(out / "agent.npz"))
    with np.load(out / "checkpoint.npz") as z:
        for k, v in agent.learner.state().items():
            assert np.array_equal(z[f"learner_{k}"], v), k
        signs = z["signs"]
    assert np.array_equal(mt.read_agent(str(out / "agent.npz"))[0]["extra"]["drift_signs"], signs)


def test_tensorboard_scalars_through_a_stub_writer(tmp_path):
    """--tensorboard writes every logged scalar through SummaryWriter (a stub tensorboardX that
    records its calls), and changes nothing in episodes.csv."""
    stub = tmp_path / "stub" / "tensorboardX"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        "import json, os\n"
        "class SummaryWriter:\n"
        "    def __init__(self, logdir):\n"
        "        os.makedirs(logdir, exist_ok=True)\n"
        "        self.f = open(os.path.join(logdir, 'calls.jsonl'), 'a')\n"
        "    def add_scalar(self, tag, value, step):\n"
        "        self.f.write(json.dumps([tag, float(value), int(step)]) + '\\n')\n"
        "    def close(self):\n"
        "        self.f.close()\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'stub'}{os.pathsep}{ROOT}"}
    outs = []
    for name, extra in (("tb", ["--tensorboard"]), ("plain", [])):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "run.py", "--episodes", "20", "--quiet", "--out",
                            str(out), *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    calls = [json.loads(x) for x in (outs[0] / "tensorboard" / "calls.jsonl").read_text().splitlines()]
    eps = rows(outs[0] / "episodes.csv")
    rets = [c for c in calls if c[0] == "return"]
    assert [(v, s) for _, v, s in rets] == [(float(r["return"]), int(r["steps"])) for r in eps]
    assert {"beta_critic", "abs_delta", "entropy", "length"} <= {c[0] for c in calls}
    assert (outs[0] / "episodes.csv").read_bytes() == (outs[1] / "episodes.csv").read_bytes()


def test_image_observations_get_the_conv_net():
    """An H x W x C Box observation is transposed to C x H x W float32 and gets conv layers."""
    import gymnasium as gym

    class Pixels(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (12, 10, 3), np.uint8)
        action_space = gym.spaces.Discrete(4)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.np_random.integers(0, 256, (12, 10, 3), dtype=np.uint8), {}

        def step(self, a):
            return self.reset()[0], 1.0, False, False, {}

    gym.register("MetatraceTestPixels-v0", entry_point=lambda: Pixels())
    try:
        env = envs.make("MetatraceTestPixels-v0", seed=0)
        obs, _ = env.reset()
        ref, _ = Pixels().reset(seed=0)
        assert obs.shape == (3, 12, 10) and obs.dtype == np.float32
        np.testing.assert_allclose(obs, np.moveaxis(ref, 2, 0) / 255.0, rtol=1e-6)
        net = envs.gym_net(obs.shape, 4, (8,))
        assert net.layers[0].kind == nets.CONV and net.obs_shape == (3, 12, 10)
        agent = envs.agent_for(env, mt.Config(tuner="mixed", alpha=0.01, mu=1e-3, psi=0.01),
                               hidden=(8,))
        a = agent.policy(obs)
        obs1, r, *_ = env.step(a)
        assert agent.learn(a, r, obs1, 0.99)
    finally:
        gym.registry.pop("MetatraceTestPixels-v0")


@settings(max_examples=30, deadline=None)
@given(d=st.integers(1, 4), tilings=st.integers(1, 9), tiles=st.integers(1, 7),
       seed=st.integers(0, 2**31 - 1))
def test_tile_coder_against_a_plain_loop(d, tilings, tiles, seed):
    """Indices equal a loop over tilings and dimensions of the documented rule, one per tiling,
    each in its own tiling's block; a point's own cell in tiling 0 is shared with every point of
    that cell."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(-3, 1, d)
    high = low + rng.uniform(0.5, 4, d)
    coder = envs.TileCoder(low, high, tilings, tiles)
    per = (tiles + 1) ** d
    assert coder.n_features == tilings * per
    for x in rng.uniform(low - 0.5, high + 0.5, (20, d)):
        idx = coder(x)
        want = []
        for k in range(tilings):
            flat = 0
            for j in reversed(range(d)):
                u = (min(max(x[j], low[j]), high[j]) - low[j]) / (high[j] - low[j]) * tiles
                c = math.floor(u + (k * (2 * j + 1) / tilings) % 1.0)
                assert 0 <= c <= tiles
                flat = flat * (tiles + 1) + c
            want.append(k * per + flat)
        assert idx.tolist() == want
        assert all(k * per <= i < (k + 1) * per for k, i in enumerate(idx))


def test_tile_coder_refuses_unbounded_boxes():
    with pytest.raises(ValueError, match="finite"):
        envs.TileCoder([-1.0, -np.inf], [1.0, np.inf])
    with pytest.raises(ValueError, match=">= 1"):
        envs.TileCoder([0.0], [1.0], tilings=0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(("normal", "ties", "tiny_spread", "outlier")),
       dtype=st.sampled_from((np.float32, np.float64)))
def test_order_stats_equal_numpy_quantiles(n, seed, kind, dtype):
    rng = np.random.default_rng(seed)
    x = {"normal": lambda: rng.normal(size=n),
         "ties": lambda: rng.integers(0, 4, n).astype(float),
         "tiny_spread": lambda: 1 + 1e-6 * rng.normal(size=n),
         "outlier": lambda: np.r_[rng.normal(size=n - 1), 1e30] if n > 1 else np.ones(1)}[kind]()
    x = np.exp(x / max(1.0, np.abs(x).max())).astype(dtype) if kind != "outlier" else x.astype(dtype)
    qs = np.array([0.1, 0.5, 0.9])
    ks = np.floor(qs * (n - 1)).astype(np.int64)
    assert np.array_equal(mt.order_stats(x, ks), np.quantile(x, qs, method="lower"))

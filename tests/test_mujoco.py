"""MuJoCo through the command line (issue 23): the five v5 bodies run a few hundred steps with a
Gaussian policy, actions are clipped at the env and not in log pi, time-limit truncation follows
--timeout-bootstrap, and an agent saved on HalfCheetah evaluates and continues exactly."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import envs
import metatrace as mt

pytest.importorskip("mujoco")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODIES = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5")


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("body", BODIES)
def test_each_body_runs_from_the_command_line(body, tmp_path):
    r = cli("--domain", body, "--tuner", "mixed", "--steps", "300", "--quiet", "--out",
            str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "r" / "episodes.csv").read_text().splitlines()
    assert len(rows) >= 2 and rows[-1].split(",")[4] == "300"        # steps column
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["settings"]["domain"] == body


def test_box_action_space_gives_a_gaussian_agent_with_clipped_env_actions():
    env = envs.make("HalfCheetah-v5", seed=0)
    assert envs.policy_of(env.action_space) == ("gaussian", 6)
    assert env.action_space.low.min() == -1.0 and env.action_space.high.max() == 1.0
    agent = envs.agent_for(env, mt.Config(tuner="none", alpha=2.0 ** -8), hidden=(16,), seed=0)
    assert agent.gaussian and agent.net.n_actions == 12
    # an action far outside the bounds reaches MuJoCo clipped: the same next state as the bound
    twin = envs.make("HalfCheetah-v5", seed=0)
    env.reset(seed=0)
    twin.reset(seed=0)
    big = np.array([5.0, -7.0, 0.3, 2.0, -0.2, 9.0])
    o1, *_ = env.step(big)
    o2, *_ = twin.step(np.clip(big, -1.0, 1.0))
    np.testing.assert_array_equal(o1, o2)


def test_learner_keeps_the_unclipped_action():
    """log pi is of the sampled (unclipped) action: the agent's ACTION row is what it drew."""
    env = envs.make("Hopper-v5", seed=1)
    agent = envs.agent_for(env, mt.Config(tuner="mixed", alpha=2.0 ** -8, mu=1e-3), hidden=(8,),
                           seed=1)
    obs, _ = env.reset(seed=1)
    agent.learner.W[mt.W_][agent.net.layers[-1].b_off + 1 + 3:] = 3.0       # wide std: sigma > 3
    A = agent.policy(obs)
    assert np.abs(A).max() > 1.0
    obs1, R, term, trunc, _ = env.step(A)
    assert agent.learn(A, R, obs1, 0.0 if term else 0.99)
    np.testing.assert_array_equal(agent.gauss[mt.ACTION], A)


@pytest.mark.parametrize("boot", [False, True])
def test_time_limit_truncation_follows_timeout_bootstrap(boot, tmp_path):
    """HalfCheetah never terminates; its 1000-step limit truncates. With --timeout-bootstrap the
    last step of an episode bootstraps from V(S_1000) (a nonzero gamma1); without, it does not."""
    import runners
    import schema
    args = ["--domain", "HalfCheetah-v5", "--tuner", "none", "--alpha", "2^-14", "--steps",
            "1000", "--hidden", "8"]
    s = schema.settings(schema.run_parser().parse_args(args + ["--timeout-bootstrap"] * boot))
    runner = runners.NetRunner(s)
    seen = []
    learn = runner.agent.learn
    runner.agent.learn = lambda A, R, obs1, gamma1: (seen.append(gamma1), learn(A, R, obs1, gamma1))[1]
    ret, score, length, ok, complete = runner.episode(1000)
    assert length == 1000 and ok and complete
    assert set(seen[:-1]) == {s["gamma"]}
    assert seen[-1] == (s["gamma"] if boot else 0.0)


def test_saved_halfcheetah_agent_evaluates_and_a_rerun_is_identical(tmp_path):
    args = ["--domain", "HalfCheetah-v5", "--tuner", "mixed", "--steps", "2000", "--seed", "3",
            "--quiet", "--hidden", "16,16"]
    for name in ("a", "b"):
        r = cli(*args, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "episodes.csv").read_bytes() == \
        (tmp_path / "b" / "episodes.csv").read_bytes()
    agent = mt.load(str(tmp_path / "a" / "agent.npz"))
    assert agent.gaussian and agent.net.n_actions == 12
    r = cli("evaluate", str(tmp_path / "a"), "--episodes", "1")
    assert r.returncode == 0, r.stderr


def test_continuous_action_ids_have_their_own_defaults():
    """A gymnasium id with Box actions defaults to psi 0, hidden 128,128 and 1 M steps; a
    discrete one keeps the gymnasium defaults (psi 0.01, 64,64, 100 k steps)."""
    import schema
    cont = schema.settings(schema.run_parser().parse_args(["--domain", "Hopper-v5"]))
    disc = schema.settings(schema.run_parser().parse_args(["--domain", "CartPole-v1"]))
    assert (cont["psi"], cont["hidden"], cont["steps"]) == (0.0, [128, 128], 1_000_000)
    assert (disc["psi"], disc["hidden"], disc["steps"]) == (0.01, [64, 64], 100_000)
    assert schema.family("Hopper-v5") == "continuous" and schema.family("CartPole-v1") == "gym"


def test_continuous_ids_normalize_observations_and_scale_rewards_by_default(tmp_path):
    """The stabilizer pilot's defaults (docs/continuous.md): observation normalization and reward
    scaling on for continuous-action ids, off elsewhere; --no-X turns each off; a stored run of
    either kind reads back to itself; the off form is refused where the flag does not apply."""
    import schema
    parse = schema.run_parser().parse_args

    def stab(*flags):
        s = schema.settings(parse(list(flags)))
        assert schema.stored_settings(s, "test") == s            # round trip, default or not
        return [k for k in schema.STABILIZERS if s.get(k)]
    assert stab("--domain", "Hopper-v5") == ["normalize_obs", "scale_reward"]
    assert stab("--domain", "Hopper-v5", "--no-scale-reward") == ["normalize_obs"]
    assert stab("--domain", "Hopper-v5", "--no-normalize-obs", "--no-scale-reward") == []
    assert stab("--domain", "Hopper-v5", "--layer-norm") == ["layer_norm", "normalize_obs",
                                                             "scale_reward"]
    assert stab("--domain", "CartPole-v1") == [] and stab("--domain", "minatar-breakout") == []
    assert stab("--domain", "CartPole-v1", "--normalize-obs") == ["normalize_obs"]
    on = schema.settings(parse(["--domain", "Hopper-v5"]))
    explicit = schema.settings(parse(["--domain", "Hopper-v5", "--normalize-obs",
                                      "--scale-reward"]))
    assert schema.settings_hash(on) == schema.settings_hash(explicit)   # same run, same name
    r = cli("--domain", "mountaincar", "--no-normalize-obs", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "--no-normalize-obs does not apply" in r.stderr
    assert not (tmp_path / "m").exists()
    r = cli("sweep", "--domain", "mountaincar", "--no-scale-reward", "--episodes", "2", "--out",
            str(tmp_path / "s"))
    assert r.returncode == 2 and "--no-scale-reward applies to none" in r.stderr
    assert not (tmp_path / "s").exists()

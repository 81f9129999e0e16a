"""Any gymnasium problem from the command line (issue 23): README's MuJoCo and module:id commands,
sweeps over a module:id domain and over --env-kwargs in pool workers, a stored setting that never
imports a module, every registered ALE id, --env-kwargs refusals, envs.make with keyword
arguments, --version, and the one-line compile note of the Python API."""
import json
import os
import re
import shlex
import subprocess
import sys
from types import SimpleNamespace

import pytest

import envs
import metatrace as mt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORRIDOR = '''
import gymnasium as gym
import numpy as np


class MyCorridor(gym.Env):
    def __init__(self, n=8):
        self.n = n
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return np.eye(self.n, dtype=np.float32)[0], {}

    def step(self, a):
        self.pos = min(max(self.pos + (1 if a == 1 else -1), 0), self.n - 1)
        done = self.pos == self.n - 1
        return np.eye(self.n, dtype=np.float32)[self.pos], float(done), done, False, {}


gym.register("MyCorridor-v0", entry_point=MyCorridor, max_episode_steps=100)
'''


@pytest.fixture
def corridor(tmp_path):
    """A directory holding mycorridor.py (registers MyCorridor-v0 on import), and an env whose
    PYTHONPATH sees it and the checkout."""
    (tmp_path / "mycorridor.py").write_text(CORRIDOR)
    return tmp_path, {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT])}


def cli(*args, cwd=ROOT, env=None, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def readme_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("### Any gymnasium environment", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    return [shlex.split(line)[2:] for line in block.splitlines() if line.startswith("python run.py")]


def test_readme_mujoco_and_module_id_commands_run(corridor):
    tmp, env = corridor
    cmds = {c[1]: c for c in readme_commands()}
    assert "HalfCheetah-v5" in cmds and "mycorridor:MyCorridor-v0" in cmds
    for k, domain in enumerate(("HalfCheetah-v5", "mycorridor:MyCorridor-v0")):
        r = cli(*cmds[domain], "--steps", "300", "--quiet", "--out", str(tmp / f"r{k}"), cwd=tmp, env=env)
        assert r.returncode == 0, r.stderr
        s = json.loads((tmp / f"r{k}" / "config.json").read_text())["settings"]
        assert s["domain"] == domain and s["steps"] == 300
    assert s["env_kwargs"] == {"n": 12}


@pytest.mark.parametrize("extra", [["--domain", "mycorridor:MyCorridor-v0"],
                                   ["--domain", "CartPole-v1", "--env-kwargs",
                                    '{"sutton_barto_reward": true}']],
                         ids=["module-id", "env-kwargs"])
def test_sweep_in_pool_workers_completes_and_equals_single_runs(extra, corridor):
    tmp, env = corridor
    r = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "sweep", *extra, "--tuner",
                        "none,mixed", "--steps", "400", "--seeds", "2", "--workers", "2",
                        "--quiet", "--out", str(tmp / "sw")], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    runs = [d for d in os.listdir(tmp / "sw") if (tmp / "sw" / d / "episodes.csv").exists()]
    assert len(runs) == 4
    one = json.loads((tmp / "sw" / sorted(runs)[0] / "config.json").read_text())["settings"]
    assert one["domain"] == extra[1]
    r = cli(*extra, "--tuner", one["tuner"], "--steps", "400", "--seed", str(one["seed"]),
            "--quiet", "--out", str(tmp / "single"), cwd=tmp, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp / "single" / "episodes.csv").read_bytes() == \
        (tmp / "sw" / sorted(runs)[0] / "episodes.csv").read_bytes()


def test_stored_setting_never_imports_a_module(corridor):
    """A config.json naming module:id (a planted module that writes a marker when imported) is
    refused by `evaluate` unless --domain names it; the module never runs on its own."""
    tmp, env = corridor
    r = cli("--domain", "mycorridor:MyCorridor-v0", "--steps", "200", "--quiet", "--out",
            str(tmp / "run"), cwd=tmp, env=env)
    assert r.returncode == 0, r.stderr
    (tmp / "planted.py").write_text(CORRIDOR.replace("MyCorridor-v0", "Planted-v0")
                                    + "\nopen('MARKER', 'w').write('ran')\n")
    cfg = json.loads((tmp / "run" / "config.json").read_text())
    cfg["settings"]["domain"] = "planted:Planted-v0"
    (tmp / "run" / "config.json").write_text(json.dumps(cfg))
    r = cli("evaluate", str(tmp / "run"), "--episodes", "1", cwd=tmp, env=env)
    assert r.returncode == 2 and "imports module 'planted'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp / "MARKER").exists()
    cfg["settings"]["domain"] = "mycorridor:MyCorridor-v0"
    (tmp / "run" / "config.json").write_text(json.dumps(cfg))
    r = cli("evaluate", str(tmp / "run"), "--episodes", "2", "--domain",
            "mycorridor:MyCorridor-v0", cwd=tmp, env=env)
    assert r.returncode == 0 and "mycorridor:MyCorridor-v0" in r.stdout, r.stderr


def test_unsupported_action_space_is_one_line(corridor):
    """A MultiDiscrete action space is neither policy's: one line naming it, exit 2."""
    tmp, env = corridor
    (tmp / "multi.py").write_text(CORRIDOR.replace("MyCorridor-v0", "Multi-v0").replace(
        "gym.spaces.Discrete(2)", "gym.spaces.MultiDiscrete([2, 2])"))
    r = cli("--domain", "multi:Multi-v0", "--out", str(tmp / "m"), cwd=tmp, env=env)
    assert r.returncode == 2 and "MultiDiscrete" in r.stderr and "diagonal Gaussian" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp / "m").exists()


def test_registered_ale_ids_run(tmp_path):
    r = cli("--domain", "ALE/Pong-v5", "--tuner", "none", "--steps", "40", "--hidden", "8",
            "--quiet", "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "p" / "config.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("args,words", [
    (["--domain", "CartPole-v1", "--env-kwargs", "{nope"], "is not a JSON object"),
    (["--domain", "CartPole-v1", "--env-kwargs", "[1, 2]"], "is not a JSON object"),
    (["--domain", "CartPole-v1", "--env-kwargs", '{"1x": 2}'], "not a keyword argument name"),
    (["--domain", "CartPole-v1", "--env-kwargs", '{"bogus": 2}'], "bogus"),
    (["--domain", "mountaincar", "--env-kwargs", '{"n": 2}'], "does not apply"),
    (["--domain", "nosuchmodule:X-v0"], "No module named 'nosuchmodule'"),
    (["--domain", "Pendulum-v1x"], "unknown domain")])
def test_bad_gym_input_is_one_line_and_writes_nothing(args, words, tmp_path):
    r = cli(*args, "--out", str(tmp_path / "x"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not (tmp_path / "x").exists()


def test_envs_make_passes_keyword_arguments():
    env = envs.make("CartPole-v1", seed=0, sutton_barto_reward=True)
    env.reset(seed=0)
    rewards = []
    for _ in range(200):
        _, r, term, trunc, _ = env.step(0)
        rewards.append(r)
        if term or trunc:
            break
    assert rewards[-1] == -1.0 and set(rewards[:-1]) == {0.0}     # Sutton & Barto's reward
    with pytest.raises(ValueError, match="unknown domain"):
        envs.make("NoSuchEnv-v0")


def test_version_line():
    r = cli("--version")
    assert r.returncode == 0 and r.stdout == f"run.py {mt.__version__}\n"


def test_compile_note_is_one_line_once_per_process(monkeypatch, capsys, tmp_path):
    cold = SimpleNamespace(_cache=SimpleNamespace(_cache_file=SimpleNamespace(
        _index_path=str(tmp_path / "absent.nbi"))))
    monkeypatch.setattr(mt, "_ANNOUNCED", set())
    assert mt.compile_note(cold) is True
    assert mt.compile_note(cold) is False
    err = capsys.readouterr().err
    assert err == ("metatrace: compiling the Numba kernels (first use of this version on this "
                   "machine, tens of seconds)\n")
    warm_index = tmp_path / "here.nbi"
    warm_index.write_text("")
    monkeypatch.setattr(mt, "_ANNOUNCED", set())
    warm = SimpleNamespace(_cache=SimpleNamespace(_cache_file=SimpleNamespace(
        _index_path=str(warm_index))))
    assert mt.compile_note(warm) is False and capsys.readouterr().err == ""
    assert re.search(r"compile_note\(net_step\)", open(os.path.join(ROOT, "metatrace.py")).read())

"""The fault suite: kill -9 at random moments then resume (bit-identical CSVs), planted pickles,
a second writer, killed sweep parents, grids over every setting, changed budgets, corrupt and
foreign checkpoints, divergence, a full disk, and Ray on loopback only."""
import csv
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import metatrace as mt
import run
import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng()      # fresh moments every time; printed on failure


def rows_of(path):
    """Complete data rows of a CSV (a partial last line does not count)."""
    if not path.exists():
        return 0
    return max(path.read_bytes().count(b"\n") - 1, 0)


def start(args, **kw):
    return subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def kill_after(args, csv_path, n_rows, delay):
    """Start a run, wait for n_rows complete rows, wait `delay` s more, kill -9 it."""
    p = start(args)
    deadline = time.time() + 180
    while time.time() < deadline and rows_of(csv_path) < n_rows and p.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    return p.returncode


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


MC = ["--domain", "drifting_mountaincar", "--tuner", "mixed", "--alpha", "2^-10", "--mu", "2^-9",
      "--drift", "1e-4", "--episodes", "300", "--seed", "5", "--quiet", "--checkpoint-every", "7"]
MINATAR = ["--domain", "minatar-breakout", "--tuner", "mixed", "--steps", "3000", "--seed", "4",
           "--quiet", "--checkpoint-every", "5"]
ALE = ["--domain", "seaquest", "--tuner", "mixed", "--steps", "1600", "--seed", "1", "--quiet",
       "--checkpoint-every", "1"]


CARTPOLE = ["--domain", "CartPole-v1", "--tuner", "mixed", "--steps", "12000", "--seed", "2",
            "--quiet", "--checkpoint-every", "9", "--eval-every", "40", "--eval-episodes", "2"]


STREAM = ["--domain", "minatar-breakout", "--tuner", "adaptive_obgd", "--alpha", "1", "--steps",
          "3000", "--seed", "4", "--quiet", "--checkpoint-every", "5", "--sparse-init",
          "--layer-norm", "--normalize-obs", "--scale-reward", "--eval-every", "40",
          "--eval-episodes", "2"]


MUJOCO = ["--domain", "Hopper-v5", "--tuner", "mixed", "--alpha", "2^-10", "--steps", "4000",
          "--seed", "3", "--quiet", "--checkpoint-every", "5", "--normalize-obs", "--scale-reward",
          "--eval-every", "40", "--eval-episodes", "2"]


TOWERS = ["--domain", "minatar-breakout", "--tuner", "intentional", "--towers", "2", "--steps",
          "3000", "--seed", "6", "--quiet", "--checkpoint-every", "5", "--sparse-init",
          "--layer-norm", "--normalize-obs", "--scale-reward", "--minimal-actions"]


TOWERS_MUJOCO = ["--domain", "Hopper-v5", "--tuner", "stream_ac", "--towers", "2", "--alpha", "1",
                 "--steps", "4000", "--seed", "7", "--quiet", "--checkpoint-every", "5",
                 "--sparse-init", "--layer-norm", "--eval-every", "40", "--eval-episodes", "2"]


@pytest.mark.parametrize("args,kills,span", [(MC, 4, 60), (MINATAR, 3, 8), (ALE, 1, 1),
                                             (CARTPOLE, 3, 60), (STREAM, 3, 8), (MUJOCO, 3, 20),
                                             (TOWERS, 3, 8), (TOWERS_MUJOCO, 3, 20)],
                         ids=["mountaincar", "minatar", "ale", "gymnasium", "stream-ac", "mujoco",
                              "two-towers-intentional", "two-towers-stream-ac"])
def test_kill_9_at_random_moments_then_resume_is_identical(args, kills, span, tmp_path):
    """Each kill comes a random number of episodes (1..span) plus a random fraction of a second
    after the run (or its resumption) has written its rows so far."""
    full = tmp_path / "full"
    r = cli(*args, "--out", str(full))
    assert r.returncode == 0, r.stderr
    out, moments = tmp_path / "run", []
    for k in range(kills):
        n = rows_of(out / "episodes.csv") + int(RNG.integers(1, span + 1))
        delay = float(RNG.uniform(0, 0.3))
        moments.append((n, round(delay, 3)))
        resume = ["--resume"] if (out / "config.json").exists() else []
        kill_after([*args, "--out", str(out), *resume], out / "episodes.csv", n, delay)
    r = cli(*args, "--out", str(out), *(["--resume"] if (out / "config.json").exists() else []))
    assert r.returncode == 0, (moments, r.stderr)
    assert (out / "episodes.csv").read_bytes() == (full / "episodes.csv").read_bytes(), moments
    if (full / "eval.csv").exists():
        assert (out / "eval.csv").read_bytes() == (full / "eval.csv").read_bytes(), moments
    tm = (out / "timing.csv").read_text().splitlines()
    assert [x.split(",")[0] for x in tm] == [x.split(",")[0] for x in
                                            (out / "episodes.csv").read_text().splitlines()]
    with np.load(out / "agent.npz") as a, np.load(full / "agent.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert json.loads((out / "config.json").read_text())["status"] == "finished"
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def interrupted_run(out, args=MC):
    """A run stopped by SIGTERM after some episodes: config 'interrupted' and a checkpoint."""
    p = start([*args, "--out", str(out)])
    while rows_of(out / "episodes.csv") < 30:
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert (out / "checkpoint.npz").exists()


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path, kind, marker):
    """Overwrite a checkpoint with a pickle payload of the given kind."""
    if kind == "raw_pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "object_array":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["learner_W"] = np.array([Payload(marker)], dtype=object)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif kind == "npy_pickle":
        with open(path, "wb") as f:
            np.save(f, np.array([Payload(marker)], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("kind", ["raw_pickle", "object_array", "npy_pickle"])
def test_planted_pickle_is_refused_and_nothing_runs(kind, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    interrupted_run(out)
    for name in ("checkpoint.npz", "checkpoint.prev.npz"):
        if (out / name).exists():
            plant(out / name, kind, marker)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    r = cli(*MC, "--out", str(out), "--resume")
    assert r.returncode == 2 and "no usable checkpoint" in r.stderr.strip().splitlines()[-1]
    assert not marker.exists()
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
    # a sweep that meets it refuses that run too and runs nothing from it
    root = tmp_path / "sweep"
    s = run.settings(run.run_parser().parse_args(MC))
    d = root / run.run_name(s)
    root.mkdir()
    os.rename(out, d)
    sweep_args = [a for a in MC if a not in ("--seed", "5")] + ["--seeds", "6"]
    r = cli("sweep", *sweep_args, "--workers", "1", "--out", str(root), timeout=900)
    assert r.returncode == 1 and "no usable checkpoint" in r.stdout + r.stderr
    assert not marker.exists()


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "run"
    p = start(["--episodes", "1000000", "--quiet", "--out", str(out)])
    try:
        while rows_of(out / "episodes.csv") < 5:
            time.sleep(0.05)
        r = cli("--episodes", "1000000", "--quiet", "--out", str(out), "--resume")
        assert r.returncode == 2 and "in use" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        r = cli("sweep", "--episodes", "3", "--quiet", "--out", str(tmp_path / "sw"))
        assert r.returncode == 0
        q = start(["sweep", "--episodes", "1000000", "--quiet", "--out", str(tmp_path / "sw2"),
                   "--workers", "1"])
        while not (tmp_path / "sw2" / "sweep.json").exists():
            time.sleep(0.05)
        r = cli("sweep", "--episodes", "1000000", "--quiet", "--out", str(tmp_path / "sw2"))
        assert r.returncode == 2 and "in use by another sweep" in r.stderr, r.stderr
        q.send_signal(signal.SIGKILL)
        q.wait()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def descendants(pid):
    import psutil
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("sig,engine", [(signal.SIGKILL, "pool"), (signal.SIGTERM, "pool"),
                                        (signal.SIGINT, "pool"), (signal.SIGKILL, "ray"),
                                        (signal.SIGTERM, "ray")],
                         ids=["SIGKILL", "SIGTERM", "SIGINT", "ray-SIGKILL", "ray-SIGTERM"])
def test_killed_sweep_leaves_no_process_behind(sig, engine, tmp_path):
    psutil = pytest.importorskip("psutil")
    if engine == "ray":
        pytest.importorskip("ray")
    root = tmp_path / "sw"
    p = start(["sweep", "--alpha", "2^-9,2^-10", "--episodes", "1000000", "--workers", "2",
               "--quiet", "--out", str(root), "--checkpoint-every", "50",
               *(["--ray", "local"] if engine == "ray" else [])])
    deadline = time.time() + 120
    while time.time() < deadline:
        dirs = [d for d in root.glob("*") if (d / "episodes.csv").exists()] if root.exists() else []
        if len(dirs) == 2 and all(rows_of(d / "episodes.csv") > 60 for d in dirs):
            break
        time.sleep(0.1)
    kids = descendants(p.pid)
    assert len(kids) >= 2
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    gone, alive = psutil.wait_procs(kids, timeout=30)
    assert not alive, alive
    if sig != signal.SIGKILL:
        assert p.returncode == 130
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and "interrupted" in lines[0], err
        for d in dirs if engine == "pool" else []:  # the runs in flight checkpointed on the way out
            assert json.loads((d / "config.json").read_text())["status"] == "interrupted"
            assert (d / "checkpoint.npz").exists()


def test_grids_over_lambda_psi_drift_give_distinct_runs_with_their_settings(tmp_path):
    root = tmp_path / "sw"
    r = cli("sweep", "--domain", "drifting_mountaincar", "--lam", "0.8,0.9", "--psi", "0,0.01",
            "--drift", "6e-6,2e-5", "--episodes", "2", "--quiet", "--out", str(root))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((root / "sweep.json").read_text())
    runs = {m["dir"]: m["settings"] for m in manifest["runs"]}
    assert len(runs) == 8 and len(set(runs)) == 8
    assert {(s["lam"], s["psi"], s["drift"]) for s in runs.values()} == {
        (lam, psi, drift) for lam in (0.8, 0.9) for psi in (0.0, 0.01) for drift in (6e-6, 2e-5)}
    for d, s in runs.items():
        cfg = json.loads((root / d / "config.json").read_text())
        assert cfg["settings"] == s and cfg["status"] == "finished"
        assert d.endswith(store.settings_hash(s))
    assert "sweep done: 8 finished" in r.stdout


def test_rerun_with_another_budget_is_a_new_run_not_a_skip(tmp_path):
    root = tmp_path / "sw"
    assert cli("sweep", "--episodes", "3", "--quiet", "--out", str(root)).returncode == 0
    r = cli("sweep", "--episodes", "5", "--quiet", "--out", str(root))
    assert r.returncode == 0 and "0 already done, 1 to run" in r.stdout, r.stdout
    manifest = json.loads((root / "sweep.json").read_text())
    assert sorted(m["settings"]["episodes"] for m in manifest["runs"]) == [3, 5]
    for m in manifest["runs"]:
        rows = list(csv.DictReader(open(root / m["dir"] / "episodes.csv")))
        assert len(rows) == m["settings"]["episodes"]
    r = cli("sweep", "--episodes", "5", "--quiet", "--out", str(root))
    assert "1 already done, 0 to run" in r.stdout
    # a run directory whose stored settings differ from the name's is refused, not skipped
    d = next(m["dir"] for m in manifest["runs"] if m["settings"]["episodes"] == 5)
    cfg = json.loads((root / d / "config.json").read_text())
    cfg["settings"]["lam"] = 0.5
    (root / d / "config.json").write_text(json.dumps(cfg))
    r = cli("sweep", "--episodes", "5", "--quiet", "--out", str(root))
    assert r.returncode == 2 and "lam" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sweep_passes_run_flags_through(tmp_path):
    root = tmp_path / "sw"
    r = cli("sweep", "--episodes", "4", "--keep-checkpoint", "--checkpoint-every", "2", "--quiet",
            "--out", str(root))
    assert r.returncode == 0, r.stderr
    (d,) = [p for p in root.iterdir() if p.is_dir()]
    assert (d / "checkpoint.npz").exists() and (d / "checkpoint.prev.npz").exists()


# ---- checkpoints refused whole, the agent untouched ------------------------------------------

def settings_of(*argv):
    return run.settings(run.run_parser().parse_args(list(argv)))


def saved(runner, s, tmp_path, done=3):
    """A valid checkpoint of `runner` after `done` episodes, in tmp_path."""
    for _ in range(done):
        runner.next_row(10**9, lambda k: None)
    store.save_checkpoint(str(tmp_path), runner, s, done)
    return tmp_path / "checkpoint.npz"


def rewrite(path, change):
    """Apply change(arrays, meta) to a checkpoint file."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(arrays, meta)
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def snapshot(runner):
    arrays, meta = runner.get_state()
    return {k: v.copy() for k, v in arrays.items()}, json.dumps(meta, sort_keys=True)


def same(a, b):
    return a[1] == b[1] and a[0].keys() == b[0].keys() and all(
        np.array_equal(a[0][k], b[0][k], equal_nan=True) for k in a[0])


def _set(name, f):
    return lambda arrays, meta: arrays.__setitem__(name, f(arrays[name]))


def _W(f):
    def g(W):
        W = W.copy()
        f(W)
        return W
    return _set("learner_W", g)


LINEAR_CORRUPTIONS = {
    "foreign_seed": lambda a, m: m.update(seed=m["seed"] + 1),
    "foreign_settings": lambda a, m: m.update(settings_hash="0123456789"),
    "version": lambda a, m: m.update(version=1),
    "not_ours": lambda a, m: m.update(format="something-else"),
    "episodes_done_str": lambda a, m: m.update(episodes_done="3"),
    "extra_array": lambda a, m: a.update(extra=np.zeros(3)),
    "missing_array": lambda a, m: a.pop("signs"),
    "wrong_shape": _set("learner_W", lambda W: W[:, :-1]),
    "wrong_dtype": _set("learner_W", lambda W: W.astype(np.float32)),
    "nan_weight": _W(lambda W: W.__setitem__((0, 5), np.nan)),
    "zero_step_factor": _W(lambda W: W.__setitem__((mt.EB_, 5), 0.0)),
    "negative_normalizer": _W(lambda W: W.__setitem__((mt.VV_, 5), -1.0)),
    "active_list": _set("learner_ist", lambda ist: ist + np.array([7, 0])),
    "vt_future": _set("learner_vt", lambda vt: vt + 10**9),
    "sign_not_pm1": _set("signs", lambda s: s * 2),
    "negative_flip": _set("env_state", lambda e: e * 0 - 5),
    "rng_kind": lambda a, m: m["state"]["rngs"]["rng_env"].update(bit_generator="MT19937"),
    "rng_state": lambda a, m: m["state"]["rngs"]["rng_agent"]["state"].update(state="x"),
    "rng_missing": lambda a, m: m["state"]["rngs"].pop("rng_env"),
}


@pytest.mark.parametrize("corruption", sorted(LINEAR_CORRUPTIONS))
def test_corrupt_or_foreign_checkpoint_is_refused_and_agent_untouched(corruption, tmp_path):
    s = settings_of("--domain", "drifting_mountaincar", "--tuner", "mixed", "--seed", "2")
    src = run.LinearRunner(s)
    path = saved(src, s, tmp_path)
    rewrite(path, LINEAR_CORRUPTIONS[corruption])
    target = run.LinearRunner(s)
    target.next_row(10**9, lambda k: None)           # some state of its own
    before = snapshot(target)
    with pytest.raises(store.CheckpointError):
        store.read_checkpoint(str(path), target, s)
    assert same(snapshot(target), before)
    with pytest.raises(store.CheckpointError, match="no usable checkpoint"):
        store.load_checkpoint(str(tmp_path), target, s, 10)
    assert same(snapshot(target), before)


def test_valid_checkpoint_restores_exactly(tmp_path):
    s = settings_of("--domain", "drifting_mountaincar", "--tuner", "vector", "--seed", "2")
    src = run.LinearRunner(s)
    path = saved(src, s, tmp_path)
    target = run.LinearRunner(s)
    done, apply = store.read_checkpoint(str(path), target, s)
    apply()
    assert done == 3 and same(snapshot(target), snapshot(src))
    assert target.next_row(10**9, lambda k: None) == src.next_row(10**9, lambda k: None)


MINATAR_CORRUPTIONS = {
    "unknown_attribute": lambda a, m: m["state"]["env"]["game"].update(evil={"list": []}),
    "missing_attribute": lambda a, m: m["state"]["env"]["game"].pop("ball_x"),
    "wrong_type": lambda a, m: m["state"]["env"]["game"].update(ball_x="5"),
    "unknown_tag": lambda a, m: m["state"]["env"]["game"].update(
        brick_map={"object": "os.system"}),
    "rng_words": lambda a, m: [a.__setitem__(k, a[k][:100]) for k in list(a)
                               if k.startswith("env_") and a[k].shape == (624,)],
    "array_dtype": lambda a, m: [a.__setitem__(k, a[k].astype(np.complex64)) for k in list(a)
                                 if k.startswith("env_") and a[k].shape == (10, 10)],
    "stray_array": lambda a, m: a.update(env_99=np.zeros(2)),
    "sticky_prob_7.5": lambda a, m: m["state"]["env"]["outer"].update(sticky_action_prob=7.5),
    "int8_of_1000": lambda a, m: m["state"]["env"]["game"].update(ball_x={"np": "|i1", "v": 1000}),
    "channel_index": lambda a, m: m["state"]["env"]["game"]["channels"]["dict"].update(ball=9),
    "position_out_of_range": lambda a, m: m["state"]["env"]["game"].update(ball_y=1000),
}


@pytest.mark.parametrize("corruption", sorted(MINATAR_CORRUPTIONS))
def test_corrupt_game_state_is_refused_and_game_untouched(corruption, tmp_path):
    s = settings_of("--domain", "minatar-breakout", "--tuner", "none", "--steps", "500")
    src = run.NetRunner(s)
    path = saved(src, s, tmp_path, done=1)
    rewrite(path, MINATAR_CORRUPTIONS[corruption])
    target = run.NetRunner(s)
    before = snapshot(target)
    with pytest.raises(store.CheckpointError):
        store.read_checkpoint(str(path), target, s)
    assert same(snapshot(target), before)


def test_ale_state_round_trips_and_garbage_is_refused(tmp_path):
    import envs
    env = envs.make("seaquest", seed=3)
    env.reset()
    for t in range(50):
        env.step(t % 5)
    arrays, meta = envs.get_env_state(env)
    obs = [env.step(1)[0] for _ in range(20)]
    envs.set_env_state(env, arrays, meta)
    env.reset()
    other = envs.make("seaquest", seed=3)
    envs.set_env_state(other, arrays, meta)
    other.reset()
    assert all(np.array_equal(env.step(1)[0], other.step(1)[0]) for _ in range(20))
    assert len(obs) == 20
    for bad in (np.zeros(0, np.uint8), np.frombuffer(b"garbage" * 10, np.uint8),
                arrays["env"][: len(arrays["env"]) // 3], arrays["env"].astype(np.int16)):
        with pytest.raises(ValueError):
            envs.prepare_env_state(env, {"env": bad}, None)


def test_ale_state_of_another_game_is_refused_and_the_game_untouched():
    """A Seaquest state offered to Space Invaders is refused by prepare_env_state (ALE only
    refuses it when restoring), and the game goes on exactly as an untouched twin."""
    import envs
    src, env, twin = (envs.make(g, seed=3) for g in ("seaquest", "space_invaders",
                                                      "space_invaders"))
    for e in (src, env, twin):
        e.reset()
        for t in range(30):
            e.step(t % 4)
    arrays, meta = envs.get_env_state(src)
    with pytest.raises(ValueError, match="not a state of this game"):
        envs.prepare_env_state(env, arrays, meta)
    assert all(np.array_equal(env.step(t % 4)[0], twin.step(t % 4)[0]) for t in range(40))


def test_resume_falls_back_past_a_checkpoint_of_another_game(tmp_path, capsys):
    """The newest checkpoint holds another game's ALE state: load_checkpoint reports it and
    restores the valid one before it, which then continues exactly as the run it was saved
    from."""
    import envs
    s = settings_of("--domain", "space_invaders", "--tuner", "none", "--steps", "400")
    src = run.NetRunner(s)
    saved(src, s, tmp_path, done=1)
    after1 = snapshot(src)
    src.next_row(10**9, lambda k: None)
    store.save_checkpoint(str(tmp_path), src, s, 2)
    other = envs.make("seaquest", seed=0)
    other.reset()
    blob = envs.get_env_state(other)[0]["env"]
    rewrite(tmp_path / "checkpoint.npz", lambda a, m: a.update(env=blob))
    target = run.NetRunner(s)
    assert store.load_checkpoint(str(tmp_path), target, s, 2) == 1
    assert "not a state of this game" in capsys.readouterr().err
    assert same(snapshot(target), after1)


# ---- divergence ---------------------------------------------------------------------------------

def test_step_size_underflow_stops_the_run_as_diverged(tmp_path):
    """SID with a large mu drives beta to -750: alpha = exp(beta) underflows to exactly 0."""
    out = tmp_path / "sid"
    r = cli("--tuner", "sid", "--alpha", "2^-10", "--mu", "2^-10", "--domain",
            "drifting_mountaincar", "--episodes", "120", "--seed", "3", "--quiet", "--out", str(out))
    assert r.returncode == 0 and "diverged" in r.stderr
    rows = list(csv.DictReader(open(out / "episodes.csv")))
    assert rows[-1]["diverged"] == "1" and len(rows) < 120
    assert all(math.isfinite(float(v)) for row in rows for v in row.values())
    assert json.loads((out / "config.json").read_text())["status"] == "diverged"


def test_per_weight_step_size_underflow_is_divergence():
    """Vector tuner with e^{bv} = 0 (float64 underflow) on the linear model, and in float32 on
    the network: the first step that uses it reports not ok."""
    cfg = mt.Config(tuner="vector", alpha=2.0 ** -9, mu=2.0 ** -8)
    import envs
    agent = envs.MountainCarTask(cfg, seed=0)
    agent.learner.set_beta_vec(np.full(agent.learner.n, -800.0))
    assert not agent.learner.W[mt.EB_].any()
    ret, length, ok = agent.episode()
    assert not ok and length == 1
    import nets
    net = nets.MINATAR(4, 6)
    na = mt.NetAgent(net, mt.Config(tuner="mixed", alpha=2.0 ** -8, mu=0.001, psi=0.01), seed=0)
    na.learner.set_beta_vec(np.full(net.n_params, -120.0))
    obs = np.zeros(net.obs_shape, np.float32)
    obs[0, 1, 2] = 1
    A = na.policy(obs)
    assert not na.learn(A, 1.0, obs, 0.99)


def test_non_finite_statistic_stops_the_run_with_finite_last_row(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = run.LinearRunner.stats

    def stats(self):
        calls["n"] += 1
        out = real(self)
        if calls["n"] > 4:
            out["beta_actor"] = -math.inf
        return out
    monkeypatch.setattr(run.LinearRunner, "stats", stats)
    s = settings_of("--episodes", "20")
    meta = run.run(s, str(tmp_path / "r"), quiet=True)
    assert meta["status"] == "diverged"
    rows = list(csv.DictReader(open(tmp_path / "r" / "episodes.csv")))
    assert 2 <= len(rows) < 20 and rows[-1]["diverged"] == "1"
    assert all(row["diverged"] == "0" for row in rows[:-1])
    assert rows[-1]["beta_actor"] == rows[-2]["beta_actor"]
    assert all(math.isfinite(float(v)) for row in rows for v in row.values())


# ---- a full disk -------------------------------------------------------------------------------

def test_row_writer_keeps_whole_rows_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "e.csv"
    path.write_text("a,b\n")
    w = store.RowWriter(str(path), ["a", "b"])
    w.write({"a": 1, "b": 2})
    real = os.write

    def half(fd, data):
        if fd == w.fd:
            real(fd, bytes(data[:2]))
            raise OSError(28, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(os, "write", half)
    with pytest.raises(OSError):
        w.write({"a": 333333, "b": 444444})
    monkeypatch.setattr(os, "write", real)
    w.close()
    assert path.read_text() == "a,b\n1,2\n"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 kB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.parametrize("fills", ["checkpoint", "csv"])
def test_full_disk_is_one_line_whole_rows_no_temp_file(fills, tiny_disk):
    out = tiny_disk / "run"
    every = ["--checkpoint-every", "50"] if fills == "checkpoint" else [
        "--checkpoint-every", "1000000000", "--checkpoint-minutes", "100000"]
    r = cli("--episodes", "100000", "--quiet", "--out", str(out), *every)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left" in lines[0] and "--resume" in lines[0], r.stderr
    data = (out / "episodes.csv").read_bytes()
    assert data.endswith(b"\n")
    rows = list(csv.reader(data.decode().splitlines()))
    assert len(rows) > 1 and all(len(row) == len(rows[0]) for row in rows)
    assert [int(row[0]) for row in rows[1:]] == list(range(len(rows) - 1))
    assert not [f for f in os.listdir(out) if "tmp" in f]
    assert json.loads((out / "config.json").read_text())["status"] == "running"


# ---- provenance and Ray ------------------------------------------------------------------------

def test_config_records_provenance_and_one_blas_thread(tmp_path):
    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "run.py", "--domain", "minatar-breakout", "--steps", "50",
                        "--quiet", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    prov = json.loads((out / "config.json").read_text())["provenance"]
    assert prov["command"][1:] == ["--domain", "minatar-breakout", "--steps", "50", "--quiet",
                                   "--out", str(out)]
    assert prov["cpu"] and prov["numba_threads"] >= 1
    assert prov["blas"] and all(b["threads"] == 1 for b in prov["blas"])


def listening(pid):
    """(address, port) of every listening TCP socket in `pid`'s network namespace."""
    out = set()
    for proto in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{proto}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":
                addr, port = f[1].split(":")
                out.add((addr, int(port, 16)))
    return out


def test_ray_local_listens_on_loopback_only(tmp_path):
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    host_before = listening(os.getpid())
    p = start(["sweep", "--alpha", "2^-9,2^-10", "--episodes", "100000", "--ray", "local",
               "--workers", "2", "--quiet", "--out", str(tmp_path / "sw")])
    seen, spaces, host_during = set(), set(), set()
    deadline = time.time() + 180
    try:
        while time.time() < deadline and len(seen) < 2:
            for proc in descendants(p.pid):
                try:
                    if "raylet" in proc.name() or "gcs_server" in proc.name():
                        seen.add(proc.name())
                        spaces.add(os.readlink(f"/proc/{proc.pid}/ns/net"))
                        devs = open(f"/proc/{proc.pid}/net/dev").read().splitlines()[2:]
                        assert [d.split(":")[0].strip() for d in devs] == ["lo"]
                except (psutil.Error, OSError):
                    pass
            host_during |= listening(os.getpid())
            time.sleep(0.5)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    assert len(seen) == 2, "Ray did not start"
    assert os.readlink(f"/proc/{os.getpid()}/ns/net") not in spaces
    assert host_during <= host_before, host_during - host_before

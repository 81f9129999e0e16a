"""Bad input to every subcommand: exit status 2, one line on stderr naming the value, no
traceback, and nothing written or overwritten (the working directory and every path the case
names are compared before and after)."""
import json
import os
import subprocess
import sys
import time

import pytest

import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree(path):
    """Every file and folder under path with its size and modification time."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns)
    return out


def make_run(path, *args):
    """A finished 3-episode mountain-car run in `path`."""
    assert run.main(["--episodes", "3", "--quiet", "--out", str(path), *args]) == 0


def setup(tmp, kind):
    """The directories and files a case refers to, under tmp."""
    if kind == "file":
        (tmp / "afile").write_text("x")
    elif kind == "stray":
        (tmp / "stray").mkdir()
        (tmp / "stray" / "notes.txt").write_text("mine")
    elif kind == "empty":
        (tmp / "empty").mkdir()
    elif kind == "corrupt":
        (tmp / "corrupt").mkdir()
        (tmp / "corrupt" / "config.json").write_text("{not json")
        (tmp / "corrupt" / "episodes.csv").write_text("episode\n")
    elif kind == "run":
        make_run(tmp / "done")
    elif kind == "sweepjson":
        (tmp / "sw").mkdir()
        (tmp / "sw" / "sweep.json").write_text("[1, 2")
    elif kind == "badresults":
        (tmp / "res" / "r1").mkdir(parents=True)
        (tmp / "res" / "r1" / "config.json").write_text("{]")
        (tmp / "res" / "r1" / "episodes.csv").write_text("episode,return\n0,-200\n")
    elif kind == "garbage_csv":
        (tmp / "res" / "r1").mkdir(parents=True)
        cfg = {"settings": {"domain": "mountaincar", "tuner": "scalar", "normalized": True,
                            "alpha": 0.5, "mu": 0.25, "seed": 0},
               "status": "finished"}
        (tmp / "res" / "r1" / "config.json").write_text(json.dumps(cfg))
        (tmp / "res" / "r1" / "episodes.csv").write_bytes(b"\x00\xff garbage \n\x01,\x02\n")
    elif kind == "emptyres":
        (tmp / "res").mkdir()
    elif kind == "noagent":
        make_run(tmp / "done")
        os.remove(tmp / "done" / "agent.npz")
    elif kind in ("badagent", "pickledagent"):
        make_run(tmp / "done")
        if kind == "badagent":
            (tmp / "done" / "agent.npz").write_bytes(b"PK\x03\x04 not a zip")
        else:
            import numpy as np
            with open(tmp / "done" / "agent.npz", "wb") as f:
                np.savez(f, meta=np.array([{"format": "metatrace-agent"}], dtype=object))


E = ["--episodes", "2", "--quiet"]
MB = ["--domain", "minatar-breakout", "--steps", "10", "--quiet"]
CP = ["--domain", "CartPole-v1", "--steps", "10", "--quiet"]
CASES = [  # (argv, words the line must hold, set-up)
    (["--domain", "Blackjack-v1", "--steps", "10", "--quiet"], "observation space", None),
    (["--domain", "NoSuchEnv-v9", "--steps", "10", "--quiet"], "NoSuchEnv-v9", None),
    ([*CP, "--hidden", "0"], "--hidden 0 is not", None),
    ([*CP, "--hidden", "64,x"], "--hidden 64,x is not", None),
    ([*CP, "--hidden", "1,2,3,4,5,6,7,8,9"], "1 to 8 integers", None),
    ([*CP, "--hidden", "5000"], "[1, 4096]", None),
    ([*CP, "--episodes", "3"], "--episodes does not apply", None),
    ([*CP, "--frames", "40"], "--frames does not apply", None),
    (["--hidden", "64", *E], "--hidden does not apply", None),
    (["--eval-episodes", "3", *E], "--eval-episodes needs --eval-every", None),
    (["--eval-greedy", *E], "--eval-greedy needs --eval-every", None),
    (["--eval-every", "0", *E], "--eval-every 0 is outside", None),
    (["--eval-every", "5", "--eval-episodes", "0", *E], "--eval-episodes 0 is outside", None),
    (["sweep", "--domain", "CartPole-v1,Nope-v0", "--steps", "10", "--out", "{tmp}/sw"],
     "Nope-v0", None),
    (["evaluate", "{tmp}/nope"], "not a run directory", None),
    (["evaluate"], "OUT", None),
    (["evaluate", "{tmp}/empty"], "unreadable", "empty"),
    (["evaluate", "{tmp}/done", "--episodes", "0"], "--episodes 0 is outside", "run"),
    (["evaluate", "{tmp}/done", "--episodes", "x"], "malformed number", "run"),
    (["evaluate", "{tmp}/done", "--seed", "3"], "--seed", "run"),
    (["evaluate", "{tmp}/done"], "holds no agent.npz", "noagent"),
    (["evaluate", "{tmp}/done"], "not a readable agent file", "badagent"),
    (["evaluate", "{tmp}/done"], "not a readable agent file", "pickledagent"),
    (["--domain", "atlantis", *E], "atlantis", None),
    (["--tuner", "adam", *E], "adam", None),
    (["--alpha", "0", *E], "(0, inf)", None),
    (["--alpha", "-2^-3", *E], "(0, inf)", None),
    (["--alpha", "inf", *E], "(0, inf)", None),
    (["--alpha", "nan", *E], "nan", None),
    (["--alpha", "2^x", *E], "2^x", None),
    (["--alpha", "2^", *E], "2^", None),
    (["--alpha", "^3", *E], "^3", None),
    (["--alpha", "2^^3", *E], "2^^3", None),
    (["--alpha", "2^99999", *E], "2^99999", None),
    (["--alpha", "1e400", *E], "(0, inf)", None),
    (["--alpha", "(-8)^0.5", *E], "(-8)^0.5", None),
    (["--alpha", "-8^0.5", *E], "-8^0.5", None),
    (["--mu", "-1e-3", *E], "[0, inf)", None),
    (["--mu", "abc", *E], "abc", None),
    (["--mu", "inf", *E], "[0, inf)", None),
    (["--lam", "1.5", *E], "[0, 1]", None),
    (["--gamma", "-0.1", *E], "[0, 1]", None),
    (["--gamma", "2^1", *E], "[0, 1]", None),
    (["--psi", "nan", *E], "nan", None),
    (["--domain", "drifting_mountaincar", "--drift", "1.01", *E], "[0, 1]", None),
    (["--episodes", "0", "--quiet"], "--episodes 0", None),
    (["--episodes", "-3", "--quiet"], "--episodes -3", None),
    (["--episodes", "inf", "--quiet"], "--episodes inf", None),
    (["--episodes", "1e400", "--quiet"], "--episodes 1e400", None),
    (["--episodes", "2.5", "--quiet"], "--episodes 2.5", None),
    (["--episodes", "2^40", "--quiet"], "--episodes 2^40", None),
    (["--seed", "-1", *E], "--seed -1", None),
    (["--seed", "2^64", *E], "--seed 2^64", None),
    (["--seed", "1.5", *E], "--seed 1.5", None),
    (["--steps", "100", "--quiet"], "--steps", None),
    (["--frames", "100", "--quiet"], "--frames", None),
    (["--domain", "minatar-breakout", "--frames", "100", "--quiet"], "--frames", None),
    (["--domain", "minatar-breakout", "--episodes", "10", "--quiet"], "--episodes", None),
    ([*MB, "--no-clip-rewards"], "--no-clip-rewards", None),
    ([*MB, "--timeout-bootstrap"], "--timeout-bootstrap", None),
    ([*MB, "--steps", "0"], "--steps 0", None),
    (["--domain", "seaquest", "--steps", "10", "--frames", "40", "--quiet"], "--frames", None),
    (["--drift", "1e-5", *E], "--drift", None),
    (["--tuner", "none", "--mu", "2^-8", *E], "--mu", None),
    (["--tuner", "none", "--unnormalized", *E], "--unnormalized", None),
    (["--tuner", "sid", "--unnormalized", *E], "--unnormalized", None),
    (["--tuner", "scalar", "--no-alpha-bound", *E], "--no-alpha-bound", None),
    (["--blas-threads", "2", *E], "--blas-threads", None),
    ([*MB, "--blas-threads", "0"], "--blas-threads 0", None),
    (["--checkpoint-every", "0", *E], "--checkpoint-every 0", None),
    (["--checkpoint-every", "-5", *E], "--checkpoint-every -5", None),
    (["--checkpoint-every", "nan", *E], "nan", None),
    (["--checkpoint-minutes", "0", *E], "--checkpoint-minutes 0", None),
    (["--checkpoint-minutes", "nan", *E], "nan", None),
    (["--checkpoint-minutes", "-1", *E], "--checkpoint-minutes -1", None),
    ([*E, "--out", "{tmp}/afile"], "is a file", "file"),
    ([*E, "--out", "/proc/metatrace-test/run"], "/proc", None),
    ([*E, "--out", "{tmp}/stray"], "not a run", "stray"),
    ([*E, "--resume"], "--resume needs --out", None),
    ([*E, "--resume", "--out", "{tmp}/missing"], "does not exist", None),
    ([*E, "--resume", "--out", "{tmp}/empty"], "no config.json", "empty"),
    ([*E, "--resume", "--out", "{tmp}/corrupt"], "unreadable", "corrupt"),
    (["--episodes", "3", "--quiet", "--resume", "--out", "{tmp}/done", "--alpha", "2^-5"],
     "alpha", "run"),
    (["--episodes", "3", "--quiet", "--out", "{tmp}/done"], "--resume", "run"),
    (["--bogus", *E], "--bogus", None),
    (["--episodes"], "--episodes", None),
    # sweep
    (["sweep", "--alpha", "2^-5,2^x", *E], "2^x", None),
    (["sweep", "--alpha", "2^-5,", *E], "empty", None),
    (["sweep", "--alpha", "", *E], "empty", None),
    (["sweep", "--workers", "0", *E], "--workers 0", None),
    (["sweep", "--workers", "inf", *E], "--workers inf", None),
    (["sweep", "--alpha", "2^-5..3^-7", *E], "range", None),
    (["sweep", "--alpha", "2^-5..2^-6.5", *E], "integer exponents", None),
    (["sweep", "--mu", "2^-3,-1", *E], "[0, inf)", None),
    (["sweep", "--tuner", "scalar,adam", *E], "adam", None),
    (["sweep", "--domain", "mountaincar,atlantis", *E], "atlantis", None),
    (["sweep", "--seeds", "0", *E], "--seeds 0", None),
    (["sweep", "--seeds", "1e9", *E], "--seeds 1e9", None),
    (["sweep", "--alpha", "2^0..2^-200000", *E], "at most", None),
    (["sweep", "--alpha", "2^-1..2^-100", "--mu", "2^-1..2^-100", "--seeds", "100", *E],
     "at most", None),
    (["sweep", "--seed", "3", *E], "--seed", None),
    (["sweep", "--resume", *E], "--resume", None),
    (["sweep", "--drift", "1e-5", *E], "--drift", None),
    (["sweep", "--tuner", "none", "--mu", "2^-8", *E], "--mu", None),
    (["sweep", "--checkpoint-every", "0", *E], "--checkpoint-every 0", None),
    (["sweep", "--ray", "", *E], "--ray", None),
    (["sweep", "--ray", "nonsense", *E], "nonsense", None),
    (["sweep", *E, "--out", "{tmp}/afile"], "is a file", "file"),
    (["sweep", *E, "--out", "{tmp}/stray"], "not runs of a sweep", "stray"),
    (["sweep", *E, "--out", "{tmp}/sw"], "sweep.json", "sweepjson"),
    (["sweep", *E, "--out", "/proc/metatrace-test/sweep"], "/proc", None),
    # bench
    (["bench", "--repeats", "0"], "--repeats 0", None),
    (["bench", "--repeats", "nan"], "nan", None),
    (["bench", "--threads", "0"], "--threads 0", None),
    (["bench", "--domain", "atlantis"], "atlantis", None),
    (["bench", "--steps", "10"], "--steps", None),
    (["bench", "--domain", "minatar-breakout", "--episodes", "3"], "--episodes", None),
    (["bench", "--bogus"], "--bogus", None),
    # figures
    (["figures", "--fig", "10", "{tmp}", "--out", "{tmp}/figs"], "10", None),
    (["figures", "--fig", "x", "{tmp}", "--out", "{tmp}/figs"], "'x'", None),
    (["figures", "{tmp}"], "--fig", None),
    (["figures", "--fig", "2", "{tmp}/missing", "--out", "{tmp}/figs"], "does not exist", None),
    (["figures", "--fig", "2", "{tmp}/res", "--out", "{tmp}/figs"], "no run", "emptyres"),
    (["figures", "--fig", "2", "{tmp}/res", "--out", "{tmp}/figs"], "config.json", "badresults"),
    (["figures", "--fig", "2", "{tmp}/res", "--out", "{tmp}/figs"], "episodes.csv",
     "garbage_csv"),
    (["figures", "--fig", "2", "{tmp}/res", "--out", "{tmp}/afile"], "afile", "garbage_csv+file"),
    (["figures", "--fig", "2", "{tmp}", "--suite", "minatar", "--out", "{tmp}/figs"], "--suite",
     None),
]


def ids():
    return [f"{i:03d}-" + "_".join(a for a in argv[:3] if "{" not in a)[:40]
            for i, (argv, _, _) in enumerate(CASES)]


@pytest.mark.parametrize("argv,words,kind", CASES, ids=ids())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, words, kind, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for k in (kind or "").split("+"):
        setup(tmp_path, k)
    capsys.readouterr()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = tree(tmp_path)
    rc = run.main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    assert tree(tmp_path) == before


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    """The same rule through the real entry point (a few cases, one process each)."""
    for argv in (["--alpha", "2^99999"], ["--episodes", "inf"], ["sweep", "--seeds", "1e9"],
                 ["bench", "--repeats", "-1"], ["figures", "--fig", "2", str(tmp_path / "no")]):
        r = subprocess.run([sys.executable, "run.py", *argv, "--quiet"] if argv[0] != "figures"
                           else [sys.executable, "run.py", *argv], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
        assert "Traceback" not in r.stderr


def test_unreachable_ray_address_fails_within_30_s(tmp_path):
    pytest.importorskip("ray")
    t0 = time.time()
    r = subprocess.run([sys.executable, "run.py", "sweep", "--episodes", "2", "--ray",
                        "127.0.0.1:1", "--out", str(tmp_path / "s"), "--quiet"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert time.time() - t0 < 30
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "127.0.0.1:1" in r.stderr and not (tmp_path / "s").exists()


def test_mu_zero_works_without_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main(["--mu", "0", "--episodes", "3", "--quiet"]) == 0
    (d,) = os.listdir(tmp_path / "runs")
    assert "-mu0-" in d
    cfg = json.loads((tmp_path / "runs" / d / "config.json").read_text())
    assert cfg["settings"]["mu"] == 0.0 and cfg["status"] == "finished"


def test_tensorboard_without_a_writer_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util
    if any(importlib.util.find_spec(m) for m in ("tensorboardX", "torch")):
        pytest.skip("a TensorBoard writer is installed here")
    monkeypatch.chdir(tmp_path)
    rc = run.main(["--tensorboard", *E, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "tensorboardX" in err[0]
    assert os.listdir(tmp_path) == []

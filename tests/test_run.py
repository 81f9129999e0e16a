"""The command line: outputs, determinism, bad input, divergence, bench."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import metatrace as mt
import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=300):
    """Run `python run.py ARGS` in the repository root."""
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("text,value", [("2^-9", 2.0 ** -9), ("0.001", 0.001), ("1e-3", 1e-3),
                                        ("2^3", 8.0), ("0.5^2", 0.25), ("2 ^ -1", 0.5)])
def test_numbers_accept_decimals_and_powers(text, value):
    assert run.parse_number(text, "alpha") == value


def test_run_writes_config_and_csv_and_is_deterministic(tmp_path):
    """Same seed and config -> identical episodes.csv; config.json has settings and provenance."""
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        r = cli("--domain", "drifting_mountaincar", "--tuner", "mixed", "--alpha", "2^-10",
                "--mu", "2^-10", "--drift", "1e-4", "--episodes", "30", "--seed", "4",
                "--out", str(out), "--quiet")
        assert r.returncode == 0, r.stderr
        outs.append(out)
    a, b = [(o / "episodes.csv").read_bytes() for o in outs]
    assert a == b
    rows = read_csv(outs[0] / "episodes.csv")
    assert [int(r["episode"]) for r in rows] == list(range(30))
    assert {"return", "length", "steps", "diverged", "beta_critic", "beta_actor",
            "beta_critic_noise", "beta_actor_noise"} <= set(rows[0])
    assert all(-200 <= float(r["return"]) <= -1 for r in rows)
    cfg = json.loads((outs[0] / "config.json").read_text())
    assert cfg["status"] == "finished"
    assert cfg["settings"]["alpha"] == 2.0 ** -10 and cfg["settings"]["tuner"] == "mixed"
    assert cfg["settings"]["drift"] == 1e-4
    assert {"numpy", "numba", "gymnasium", "python", "git_commit"} <= set(cfg["provenance"])


def test_different_seeds_differ(tmp_path):
    rets = []
    for seed in ("1", "2"):
        r = cli("--episodes", "20", "--seed", seed, "--out", str(tmp_path / seed), "--quiet")
        assert r.returncode == 0, r.stderr
        rets.append((tmp_path / seed / "episodes.csv").read_text())
    assert rets[0] != rets[1]


@pytest.mark.parametrize("args,words", [
    (["--domain", "atlantis"], "atlantis"), (["--tuner", "adam"], "adam"),
    (["--alpha", "0"], "(0, inf)"), (["--alpha", "-2^-3"], "(0, inf)"),
    (["--mu", "-1e-3"], "[0, inf)"), (["--lam", "1.5"], "[0, 1]"), (["--gamma", "-0.1"], "[0, 1]"),
    (["--drift", "1.01"], "[0, 1]"), (["--episodes", "0"], ">= 1"), (["--episodes", "-3"], ">= 1"),
    (["--alpha", "2^x"], "2^x"), (["--mu", "abc"], "abc"), (["--psi", "nan"], "nan"),
    (["bench", "--repeats", "0"], ">= 1")])
def test_bad_input_is_one_line_error(args, words, tmp_path):
    """One line on stderr naming the value and the accepted range; exit status 2; no traceback."""
    r = cli(*args, "--out", str(tmp_path / "x"), "--quiet") if args[0] != "bench" else cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert words in lines[0]
    assert not (tmp_path / "x").exists()


def test_divergence_is_stopped_and_recorded(tmp_path):
    """A far too large fixed alpha: the run stops, keeps its episodes and records that it diverged."""
    out = tmp_path / "div"
    r = cli("--tuner", "none", "--alpha", "2^10", "--episodes", "50", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "diverged" in r.stderr
    rows = read_csv(out / "episodes.csv")
    assert 1 <= len(rows) < 50
    assert rows[-1]["diverged"] == "1" and all(row["diverged"] == "0" for row in rows[:-1])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "diverged" and cfg["diverged_at_episode"] == len(rows) - 1


def test_killed_run_keeps_its_episodes(tmp_path):
    """episodes.csv is flushed per episode: after SIGKILL the finished episodes are on disk, whole."""
    out = tmp_path / "k"
    p = subprocess.Popen([sys.executable, "run.py", "--tuner", "vector", "--episodes", "1000000",
                          "--out", str(out), "--quiet"], cwd=ROOT)
    path = out / "episodes.csv"
    deadline = time.time() + 120
    # the header and more than 20 episode rows
    while time.time() < deadline and not (path.exists() and path.read_text().count("\n") > 21):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    rows = read_csv(path)
    assert len(rows) > 20
    assert [int(r["episode"]) for r in rows] == list(range(len(rows)))
    assert json.loads((out / "config.json").read_text())["status"] == "running"


def test_bench_prints_every_tuner():
    r = cli("bench", "--repeats", "1", "--episodes", "3")
    assert r.returncode == 0, r.stderr
    for tuner in (t.name for t in mt.TUNER_TABLE if not t.two_tower):     # linear: one tower
        assert any(line.startswith(tuner) for line in r.stdout.splitlines())


def bench_rows(stdout):
    """{tuner: its 7 numbers} of a network bench's table."""
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("tuner"))
    return {line.split()[0]: list(map(float, line.split()[1:])) for line in lines[head + 1:]}


@pytest.mark.parametrize("domain", ["minatar-breakout", "HalfCheetah-v5"])
def test_net_bench_prints_a_breakdown_per_tuner(domain):
    r = cli("bench", "--domain", domain, "--repeats", "2", "--steps", "20")
    assert r.returncode == 0, r.stderr
    rows = bench_rows(r.stdout)
    assert sorted(rows) == ["adaptive_obgd", "mixed", "none", "obgd", "scalar", "vector"]
    assert "environment alone (random actions drawn beforehand)" in r.stdout
    for tuner, cols in rows.items():
        forward, backward, tune, learner, rest, rate, ratio, to_none = cols
        assert min(forward, backward, learner, rest, rate, ratio, to_none) > 0, (tuner, cols)
        assert tune > 0 or tuner == "none", (tuner, cols)
    assert rows["none"][-1] == 1.0
    if domain == "HalfCheetah-v5":
        assert "with the four stabilizers" in r.stdout


@pytest.mark.parametrize("domain", ["minatar-breakout", "HalfCheetah-v5"])
def test_two_tower_bench_prints_every_network_tuner(domain):
    """bench --towers 2: every network tuner on two towers, stream_ac and intentional among them,
    with the policy / learn split and the learner's time over the untuned learner's."""
    r = cli("bench", "--domain", domain, "--towers", "2", "--repeats", "2", "--steps", "20")
    assert r.returncode == 0, r.stderr
    rows = bench_rows(r.stdout)
    assert sorted(rows) == sorted(["adaptive_obgd", "intentional", "mixed", "none", "obgd",
                                   "scalar", "stream_ac", "vector"])
    for tuner, cols in rows.items():
        assert len(cols) == 7 and min(cols) > 0, (tuner, cols)
    assert rows["none"][-1] == 1.0


def run_until(args, path, rows, sig):
    """Start a run, wait until its CSV has more than `rows` episodes, then send it `sig`."""
    p = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (path.exists() and path.read_text().count("\n") > rows):
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    return p.returncode, err


RUN = ["--domain", "drifting_mountaincar", "--tuner", "mixed", "--alpha", "2^-10", "--mu", "2^-9",
       "--drift", "1e-4", "--episodes", "400", "--seed", "9", "--quiet", "--checkpoint-every", "15"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    r = cli(*RUN, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return (out / "episodes.csv").read_bytes()


def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted):
    """Kill -9 mid-run, resume: episodes.csv identical to the uninterrupted run's, byte for byte."""
    out = tmp_path / "run"
    rc, _ = run_until([*RUN, "--out", str(out)], out / "episodes.csv", 100, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert (out / "checkpoint.npz").exists()
    assert (out / "episodes.csv").read_bytes() != uninterrupted
    r = cli(*RUN, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert (out / "episodes.csv").read_bytes() == uninterrupted
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["resumed_from_episode"] > 0
    assert not (out / "checkpoint.npz").exists()


def test_sigterm_checkpoints_corrupt_checkpoint_falls_back(tmp_path, uninterrupted):
    """SIGTERM -> checkpoint and exit 130; a truncated checkpoint is reported and the previous used."""
    out = tmp_path / "run"
    rc, err = run_until([*RUN, "--out", str(out)], out / "episodes.csv", 60, signal.SIGTERM)
    assert rc == 130, err
    assert "--resume" in err
    assert json.loads((out / "config.json").read_text())["status"] == "interrupted"
    ck = out / "checkpoint.npz"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    r = cli(*RUN, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert "checkpoint.npz is unreadable" in r.stderr and "previous" in r.stderr
    assert (out / "episodes.csv").read_bytes() == uninterrupted


def test_resume_refuses_other_settings_and_plain_rerun_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    assert cli("--episodes", "5", "--out", str(out), "--quiet").returncode == 0
    r = cli("--episodes", "5", "--out", str(out), "--quiet")
    assert r.returncode == 2 and "--resume" in r.stderr
    r = cli("--episodes", "5", "--alpha", "2^-5", "--out", str(out), "--quiet", "--resume")
    assert r.returncode == 2 and "alpha" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    before = (out / "episodes.csv").read_bytes()
    r = cli("--episodes", "5", "--out", str(out), "--quiet", "--resume")   # finished: kept as is
    assert r.returncode == 0 and (out / "episodes.csv").read_bytes() == before


NET_RUN = ["--domain", "minatar-breakout", "--tuner", "mixed", "--steps", "4000", "--seed", "3",
           "--quiet", "--checkpoint-every", "20"]


def test_network_domain_sigkill_then_resume_is_identical(tmp_path):
    """MinAtar: kill -9 mid-run, resume from the checkpoint (learner, RNG, emulator state):
    episodes.csv identical to the uninterrupted run's."""
    full = tmp_path / "full"
    r = cli(*NET_RUN, "--out", str(full))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run"
    rc, _ = run_until([*NET_RUN, "--out", str(out)], out / "episodes.csv", 60, signal.SIGKILL)
    assert rc == -signal.SIGKILL and (out / "checkpoint.npz").exists()
    r = cli(*NET_RUN, "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["resumed_from_episode"] >= 20
    assert (out / "episodes.csv").read_bytes() == (full / "episodes.csv").read_bytes()
    rows = read_csv(out / "episodes.csv")
    assert int(rows[-1]["steps"]) == 4000 and {"score", "complete", "beta_mean"} <= set(rows[0])

"""Sweeps: grids, the process pool and Ray against one-by-one runs, skip/resume, crash retry."""
import json
import os
import subprocess
import sys

import pytest

import run
import sweep as sweep_mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = ["--alpha", "2^-7..2^-8", "--seeds", "2", "--episodes", "15",
        "--tuner", "scalar", "--quiet"]


def sweep(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "run.py", "sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def one_by_one(tmp_path_factory):
    """The sweep's four runs made one at a time with the single-run code: name -> CSV bytes."""
    root = tmp_path_factory.mktemp("single")
    out = {}
    for alpha in ("2^-7", "2^-8"):
        for seed in ("0", "1"):
            args = run.run_parser().parse_args(["--alpha", alpha, "--mu", "2^-8", "--seed", seed,
                                                "--episodes", "15"])
            s = run.settings(args)
            d = root / run.run_name(s)
            run.run(s, str(d), quiet=True)
            out[d.name] = (d / "episodes.csv").read_bytes()
    return out


def results(root):
    return {d: (root / d / "episodes.csv").read_bytes() for d in os.listdir(root)
            if (root / d / "episodes.csv").exists()}


def test_grid_parsing():
    assert sweep_mod.parse_grid("2^-5..2^-8", "alpha") == ["2^-5", "2^-6", "2^-7", "2^-8"]
    assert sweep_mod.parse_grid("2^-8..2^-6", "alpha") == ["2^-8", "2^-7", "2^-6"]
    assert sweep_mod.parse_grid("2^-5,0.001", "alpha") == ["2^-5", "0.001"]
    assert sweep_mod.parse_grid("0.9", "gamma") == ["0.9"]


def test_pool_sweep_equals_one_by_one_and_rerun_skips(tmp_path, one_by_one):
    r = sweep(*GRID, "--workers", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert results(tmp_path) == one_by_one
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["n_runs"] == 4 and {m["dir"] for m in manifest["runs"]} == set(one_by_one)
    # an unfinished run is resumed, finished ones are skipped
    victim = tmp_path / sorted(one_by_one)[0]
    cfg = json.loads((victim / "config.json").read_text())
    cfg["status"] = "running"
    (victim / "config.json").write_text(json.dumps(cfg))
    lines = (victim / "episodes.csv").read_text().splitlines(keepends=True)
    (victim / "episodes.csv").write_text("".join(lines[:6]))
    r = sweep(*GRID, "--workers", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "3 already done, 1 to run" in r.stdout
    assert results(tmp_path) == one_by_one


def test_crashed_worker_is_reported_and_retried(tmp_path, one_by_one):
    """kill -9 of a pool worker mid-run: the run is reported, retried, and its CSV still equals
    the one-by-one run's (the retry resumes it or starts it over)."""
    import signal
    import time
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "sweep"
    grid = [a if a != "15" else "400" for a in GRID]
    p = subprocess.Popen([sys.executable, "run.py", "sweep", *grid, "--workers", "2", "--out",
                          str(out), "--checkpoint-every", "20"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline, killed = time.time() + 120, None
    while time.time() < deadline and killed is None:
        for d in out.glob("*/episodes.csv") if out.exists() else []:
            if d.read_text().count("\n") > 50:
                workers = [c for c in psutil.Process(p.pid).children()
                           if "spawn_main" in " ".join(c.cmdline())]
                if workers:
                    killed = workers[0].pid
                    os.kill(killed, signal.SIGKILL)
                    break
        time.sleep(0.05)
    stdout, stderr = p.communicate(timeout=600)
    assert killed is not None and p.returncode == 0, stderr
    assert "failed" in stderr + stdout and "retrying" in stderr + stdout
    singles = {}
    for alpha in ("2^-7", "2^-8"):
        for seed in ("0", "1"):
            s = run.settings(run.run_parser().parse_args(["--alpha", alpha, "--mu", "2^-8",
                                                          "--seed", seed, "--episodes", "400"]))
            d = tmp_path / "single" / run.run_name(s)
            run.run(s, str(d), quiet=True)
            singles[d.name] = (d / "episodes.csv").read_bytes()
    assert results(out) == singles


def test_ray_sweep_equals_one_by_one(tmp_path, one_by_one):
    pytest.importorskip("ray")
    r = sweep(*GRID, "--workers", "2", "--ray", "local", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert results(tmp_path) == one_by_one


@pytest.mark.parametrize("args,words", [
    (["--alpha", "2^-5,2^x"], "2^x"), (["--alpha", "2^-5,"], "empty"), (["--alpha", ""], "empty"),
    (["--workers", "0"], "--workers 0"), (["--alpha", "2^-5..3^-7"], "range"),
    (["--mu", "2^-3,-1"], "[0, inf)"), (["--tuner", "scalar,adam"], "adam"),
    (["--seeds", "0"], ">= 1"), (["--first-seed", "-3"], "--first-seed -3")])
def test_bad_sweep_input_is_one_line_error(args, words, tmp_path):
    r = sweep(*args, "--episodes", "2", "--out", str(tmp_path / "s"), "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not (tmp_path / "s").exists()


def test_network_domain_sweep_equals_one_by_one(tmp_path):
    """The same sweep machinery on a MinAtar game (step budgets instead of episodes)."""
    grid = ["--domain", "minatar-breakout", "--tuner", "none,mixed", "--steps", "300", "--quiet"]
    r = sweep(*grid, "--workers", "2", "--out", str(tmp_path / "sweep"))
    assert r.returncode == 0, r.stderr
    swept = results(tmp_path / "sweep")
    assert len(swept) == 2
    for tuner in ("none", "mixed"):
        s = run.settings(run.run_parser().parse_args(
            ["--domain", "minatar-breakout", "--tuner", tuner, "--steps", "300"]))
        d = tmp_path / "single" / run.run_name(s)
        run.run(s, str(d), quiet=True)
        assert swept[d.name] == (d / "episodes.csv").read_bytes()


def test_first_seed_runs_fresh_seeds_equal_to_single_runs(tmp_path):
    """--first-seed 20 --seeds 2 makes seeds 20 and 21, each equal to `run.py --seed N`."""
    grid = ["--alpha", "2^-7", "--mu", "2^-8", "--episodes", "5", "--tuner", "scalar", "--quiet"]
    r = sweep(*grid, "--seeds", "2", "--first-seed", "20", "--workers", "1",
              "--out", str(tmp_path / "sweep"))
    assert r.returncode == 0, r.stderr
    swept = results(tmp_path / "sweep")
    seeds = sorted(json.loads((tmp_path / "sweep" / d / "config.json").read_text())["settings"]["seed"]
                   for d in swept)
    assert seeds == [20, 21]
    for seed in ("20", "21"):
        s = run.settings(run.run_parser().parse_args(
            ["--alpha", "2^-7", "--mu", "2^-8", "--episodes", "5", "--seed", seed]))
        d = tmp_path / "single" / run.run_name(s)
        run.run(s, str(d), quiet=True)
        assert swept[d.name] == (d / "episodes.csv").read_bytes()

"""Speed side by side: the authors' PyTorch Stream AC continuous script against this project's
whole loop (ObGD with the four stabilizers) on the same environment and hidden sizes, one core
each, interleaved, medians.

    python docs/peer_stream_ac.py --peer-python PEER_VENV/bin/python \
        --peer-dir streaming-drl/ [--env HalfCheetah-v5] [--steps 20000] [--repeats 3] \
        [--ours obgd|stream_ac]

PEER_VENV is a venv of its own with torch, gymnasium[mujoco] and numpy (torch is never a
dependency of this project); --peer-dir is a checkout of mohmdelsayed/streaming-drl. Their script
is run from a temporary copy with one compatibility change: gymnasium >= 1.0 reports an episode's
return as a scalar, so `info['episode']['r'][0]` becomes `float(info['episode']['r'])`. Both sides
run with hidden 128 x 128 (their default), γ 0.99, λ 0.8, α (their lr) 1, layer norm, sparse
initialization, observation normalization and reward scaling; theirs has two networks (κ 2 and
3); ours is, with --ours obgd (the default), one network with one bound (κ 2: docs/algorithms.md
§9), and with --ours stream_ac their two towers, LeakyReLU and ψ 0.01 (§11). Each side's rate is
(steps − start) / (t(steps) − t(start)) from two runs of start and `steps` agent steps, so process
start, imports and compilation cancel.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = 2000
PEER_FIX = ("info['episode']['r'][0]", "float(info['episode']['r'])")


def timed(cmd, cwd, core):
    """Wall seconds of one process pinned to `core`; raises on a failed run."""
    pin = ["taskset", "-c", str(core)] if shutil.which("taskset") else []
    t0 = time.perf_counter()
    r = subprocess.run(pin + cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {r.stderr.strip()[-300:]}")
    return time.perf_counter() - t0


def patched_copy(peer_dir, name):
    """Their checkout copied into a fresh temporary directory, with PEER_FIX made in the script
    `name` -> the copied script's path (WORK/peer/NAME)."""
    peer = os.path.join(tempfile.mkdtemp(prefix="peer-"), "peer")
    shutil.copytree(peer_dir, peer, ignore=shutil.ignore_patterns(".git"))
    script = os.path.join(peer, name)
    text = open(script).read()
    if PEER_FIX[0] not in text:
        sys.exit(f"{script} has no {PEER_FIX[0]!r}; another version of their code?")
    open(script, "w").write(text.replace(PEER_FIX[0], PEER_FIX[1]))
    return script


def main(argv=None):
    """Interleaved repeats of both sides; prints each side's median agent steps/s and the ratio."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", required=True)
    p.add_argument("--peer-dir", required=True)
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--ours", choices=("obgd", "stream_ac"), default="obgd")
    a = p.parse_args(argv)
    script = patched_copy(a.peer_dir, "stream_ac_continuous.py")
    peer = os.path.dirname(script)
    work = os.path.dirname(peer)

    def theirs(n):
        return [a.peer_python, script, "--env_name", a.env, "--total_steps", str(n), "--seed", "0"]

    def ours(n, k):
        two = ["--towers", "2", "--activation", "leaky_relu", "--psi", "0.01"] \
            if a.ours == "stream_ac" else []
        return [sys.executable, os.path.join(ROOT, "run.py"), "--domain", a.env, "--tuner", a.ours,
                "--alpha", "1", "--hidden", "128,128", "--sparse-init", "--layer-norm",
                "--normalize-obs", "--scale-reward", *two, "--steps", str(n), "--quiet",
                "--out", os.path.join(work, f"ours-{n}-{k}")]
    rates = {"theirs": [], "ours": []}
    for k in range(a.repeats):
        for side in ("theirs", "ours"):
            make = theirs if side == "theirs" else (lambda n: ours(n, k))
            cwd = peer if side == "theirs" else work
            t0, t1 = timed(make(START), cwd, a.core), timed(make(a.steps), cwd, a.core)
            rates[side].append((a.steps - START) / (t1 - t0))
            print(f"repeat {k}: {side} {rates[side][-1]:,.0f} agent steps/s", flush=True)
    m = {s: statistics.median(v) for s, v in rates.items()}
    print(f"{a.env}, one core each, median of {a.repeats}: theirs {m['theirs']:,.0f}, ours "
          f"{m['ours']:,.0f} agent steps/s; ours / theirs = {m['ours'] / m['theirs']:.1f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

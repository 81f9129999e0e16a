"""The authors' own scripts, run for the fidelity comparison of the Stream AC issue: their learning
curves, one CSV row per finished episode, written as each episode ends (a killed run keeps what it
finished; their scripts themselves save only at the very end).

    python docs/peer_runs.py --peer-python PEER_VENV/bin/python --method stream_ac \\
        --peer-dir streaming-drl/ --env HalfCheetah-v5 --seeds 0,1,2 --steps 500000 \\
        --out runs/peer/stream_ac_HalfCheetah-v5.csv
    python docs/peer_runs.py --peer-python PEER_VENV/bin/python --method intentional \\
        --peer-dir Intentional_RL/ --env HalfCheetah-v5 --seeds 0,1,2 --steps 500000 \\
        --out runs/peer/intentional_HalfCheetah-v5.csv

PEER_VENV is a venv of its own with torch, gymnasium[mujoco] and numpy (torch is never a
dependency of this project). The scripts run from a temporary copy, at their own defaults except
the environment, the budget and the seed, with `--debug` (which prints each episode's return and
time step) and one compatibility change under gymnasium >= 1.0, which reports an episode's return
as a scalar: `info['episode']['r'][0]` becomes `float(info['episode']['r'])`; for MinAtar ids a
first line registers MinAtar's environments (gymnasium >= 1.0 no longer loads them as a plugin;
PEER_VENV then needs `minatar`). Methods:
stream_ac (`stream_ac_continuous.py`; MinAtar ids go to `stream_ac_discrete_minatar.py`) and
intentional (`intentional_ac.py`). Columns: method, env, seed, episode, step (agent steps at the
episode's end), return (the raw episodic return their RecordEpisodeStatistics reports). A seed
already complete in OUT is skipped; an incomplete one is run again from its start.
"""
import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import time

from peer_stream_ac import patched_copy       # the copy and its one gymnasium >= 1.0 fix

SCRIPTS = {"stream_ac": "stream_ac_continuous.py", "intentional": "intentional_ac.py"}
MINATAR_SCRIPT = "stream_ac_discrete_minatar.py"
MINATAR_FIX = "import minatar.gym; minatar.gym.register_envs()\n"   # gymnasium >= 1.0 loads no plugins
LINE = re.compile(r"^Episodic Return: (\S+), Time Step (\d+)(?:, Episode Number \d+)?$")
FIELDS = ("method", "env", "seed", "episode", "step", "return")


def script_copy(peer_dir, method, env):
    """Their script for (method, env), copied with PEER_FIX into a temporary directory -> its
    path."""
    minatar = env.startswith("MinAtar/")
    script = patched_copy(peer_dir, MINATAR_SCRIPT if method == "stream_ac" and minatar
                          else SCRIPTS[method])
    if minatar:
        text = open(script).read()
        open(script, "w").write(MINATAR_FIX + text)
    return script


def done_seeds(out, method, env, steps):
    """Seeds whose episodes in OUT reach the budget's last complete episode (within 1000 steps,
    an episode's longest) -> set; the rows of the others are dropped from OUT."""
    if not os.path.exists(out):
        return set()
    rows = list(csv.DictReader(open(out)))
    last = {}
    for r in rows:
        if r["method"] == method and r["env"] == env:
            last[r["seed"]] = max(last.get(r["seed"], 0), int(r["step"]))
    complete = {s for s, t in last.items() if t > steps - 1000}
    keep = [r for r in rows if not (r["method"] == method and r["env"] == env
                                    and r["seed"] not in complete)]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(keep)
    return {int(s) for s in complete}


def run_seed(python, script, method, env, seed, steps, out):
    """One run of their script, its episodes appended to OUT as they end -> exit status."""
    cmd = [python, script, "--env_name", env, "--seed", str(seed), "--total_steps", str(steps),
           "--debug"]
    env_vars = dict(os.environ, **{k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS")})   # one core
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(script), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env_vars)
    episode = 0
    with open(out, "a", newline="") as f:
        w = csv.writer(f)
        for line in proc.stdout:
            m = LINE.match(line.strip())
            if m:
                w.writerow([method, env, seed, episode, int(m.group(2)), float(m.group(1))])
                f.flush()
                episode += 1
    return proc.wait()


def main(argv=None):
    """Run each seed not yet complete in OUT, one after another."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", required=True)
    p.add_argument("--peer-dir", required=True)
    p.add_argument("--method", required=True, choices=sorted(SCRIPTS))
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=500_000)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    skip = done_seeds(a.out, a.method, a.env, a.steps)
    if not os.path.exists(a.out):
        with open(a.out, "w", newline="") as f:
            csv.writer(f).writerow(FIELDS)
    script = script_copy(a.peer_dir, a.method, a.env)
    for seed in seeds:
        if seed in skip:
            print(f"{a.method} {a.env} seed {seed}: complete in {a.out}, skipped", flush=True)
            continue
        t0 = time.time()
        rc = run_seed(a.peer_python, script, a.method, a.env, seed, a.steps, a.out)
        took = time.time() - t0
        print(f"{a.method} {a.env} seed {seed}: exit {rc}, {took:.0f} s, "
              f"{a.steps / took:.0f} agent steps/s", flush=True)
        if rc:
            return rc
    shutil.rmtree(os.path.dirname(os.path.dirname(script)), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

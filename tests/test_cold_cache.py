"""A run's results must not depend on whether this process compiled the Numba kernels or loaded
them from the on-disk cache (the first use on a machine against every later one).  With `contract`
(FMA fusion) in metatrace's tuner kernels they did: a process that compiled them gave roundings of
its own (docs/performance.md, "Reproducibility of a first run")."""
import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAB = ["--sparse-init", "--layer-norm", "--normalize-obs", "--scale-reward"]
CASES = [["--domain", "minatar-freeway", "--tuner", "none", *STAB, "--steps", "1500"],
         ["--domain", "minatar-breakout", "--tuner", "none", "--steps", "1500"],
         ["--domain", "CartPole-v1", "--tuner", "none", "--layer-norm", "--steps", "1500"],
         ["--domain", "minatar-breakout", "--tuner", "mixed", "--steps", "1000"]]
SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import run
for i, c in enumerate(json.loads(sys.argv[1])):
    run.run(run.settings(run.run_parser().parse_args(c + ["--seed", "3"])), sys.argv[2] + str(i),
            quiet=True)
"""


def _runs(cache, out):
    """md5 of each case's episodes.csv, run in one fresh process with NUMBA_CACHE_DIR=cache."""
    import json
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT), json.dumps(CASES), str(out)],
                   env=env, check=True, capture_output=True, cwd=ROOT, timeout=600)
    return [hashlib.md5(open(os.path.join(f"{out}{i}", "episodes.csv"), "rb").read()).hexdigest()
            for i in range(len(CASES))]


def test_compiled_equals_cached(tmp_path):
    cold = _runs(tmp_path / "numba", tmp_path / "cold")     # an empty cache: every kernel compiles
    warm = _runs(tmp_path / "numba", tmp_path / "warm")     # the same kernels, from the cache
    assert cold == warm

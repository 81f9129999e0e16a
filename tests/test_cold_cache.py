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


PROBE = "import sys; sys.path.insert(0, sys.argv[1]); import nets; print(nets.kernel_cache_dir())"


def _cache_dir(src, **env):
    e = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    r = subprocess.run([sys.executable, "-c", PROBE, str(src)], env={**e, **env}, check=True,
                       capture_output=True, text=True, timeout=120)
    return r.stdout.strip()


def test_a_change_to_any_kernel_file_gets_a_fresh_cache(tmp_path):
    """A cached kernel carries the code of the kernels it calls in other files, and Numba checks
    only its own file: a changed nets.py once left metatrace.py's cached kernels running the old
    nets code (a LeakyReLU fix that did not take).  The cache directory is therefore keyed by every
    kernel file's bytes: a change to any one gives a fresh directory."""
    import nets
    src = tmp_path / "src"
    src.mkdir()
    for name in nets.KERNEL_FILES:
        (src / name).write_bytes(open(os.path.join(ROOT, name), "rb").read())
    seen = [_cache_dir(src)]
    for name in ("nets.py", "metatrace.py", "envs.py"):
        with open(src / name, "a") as f:
            f.write("\n# a change\n")
        seen.append(_cache_dir(src))
    assert len(set(seen)) == len(seen)
    assert all(d.startswith(str(src / "__pycache__")) for d in seen)
    mine = _cache_dir(src, NUMBA_CACHE_DIR=str(tmp_path / "mine"))
    assert mine.startswith(str(tmp_path / "mine")) and os.path.basename(mine) == \
        os.path.basename(seen[-1])
    assert _cache_dir(src, NUMBA_CACHE_DIR=mine) == mine       # a child process keeps it

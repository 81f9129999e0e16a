"""metatrace experiment runner.

    python run.py --domain mountaincar                       one run on the defaults
    python run.py --domain mountaincar --tuner scalar --alpha 2^-9 --mu 2^-8 --episodes 1000 \
                  --seed 0 --out runs/x                      one run, every setting explicit
    python run.py bench --domain mountaincar                 agent steps/s for every tuner
    python run.py sweep --alpha 2^-3..2^-12 --mu 2^-6,2^-8 --seeds 10 --out runs/s   a grid of runs
    python run.py figures --fig 2 runs/s --out figs          a paper figure from results

A run writes OUT/config.json (every setting, package versions, git commit, status) and
OUT/episodes.csv (one row per episode, flushed as episodes finish, so a killed run keeps them).
Numbers accept decimals (0.001, 1e-3) and powers of two (2^-9).
"""
import os

# one BLAS thread per run: the network's small products are fastest single-threaded, and runs of a
# sweep must not fight over cores (set before numpy is imported)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import csv
import itertools
import json
import math
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

import envs
import metatrace as mt

DEFAULTS = dict(tuner="scalar", alpha="2^-9", mu="2^-8", gamma="0.99", lam="0.8", psi="0",
                drift="6e-6", episodes="1000", seed="0")
# network domains (spec §6.3): mixed Metatrace, mu = 0.001, psi = 0.01, 12.5 M agent steps on ALE
NET_DEFAULTS = dict(tuner="mixed", alpha="2^-8", mu="0.001", psi="0.01")
NET_STEPS = {"atari": 12_500_000, "minatar": 5_000_000}
RANGES = {  # name: (check, accepted range in words)
    "alpha": (lambda x: 0 < x < math.inf, "(0, inf)"),
    "mu": (lambda x: 0 <= x < math.inf, "[0, inf)"),
    "gamma": (lambda x: 0 <= x <= 1, "[0, 1]"),
    "lam": (lambda x: 0 <= x <= 1, "[0, 1]"),
    "psi": (lambda x: 0 <= x < math.inf, "[0, inf)"),
    "drift": (lambda x: 0 <= x <= 1, "[0, 1]"),
    "episodes": (lambda x: x >= 1 and x == int(x), "integers >= 1"),
    "steps": (lambda x: x >= 1 and x == int(x), "integers >= 1"),
    "frames": (lambda x: x >= 1 and x == int(x), "integers >= 1"),
    "seed": (lambda x: 0 <= x < 2**63 and x == int(x), "integers in [0, 2^63)"),
}
RUN_NUMBERS = ("alpha", "mu", "gamma", "lam", "psi", "drift", "episodes", "seed")
for _k in ("seeds", "workers", "repeats", "cores", "threads"):
    RANGES[_k] = RANGES["episodes"]
INTEGERS = ("episodes", "seed", "seeds", "workers", "repeats", "cores", "threads", "steps", "frames")
_NUMBER = re.compile(r"^\s*([-+]?\d+(\.\d*)?)\s*\^\s*([-+]?\d+(\.\d*)?)\s*$")


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit status 2."""


def parse_number(text, name):
    """A decimal (0.001, 1e-3) or a power (2^-9) -> float; UsageError naming the value otherwise."""
    m = _NUMBER.match(text)
    try:
        x = float(m.group(1)) ** float(m.group(3)) if m else float(text)
    except (ValueError, OverflowError, ZeroDivisionError):
        x = None
    if x is None or math.isnan(x):
        raise UsageError(f"--{name.replace('_', '-')}: malformed number {text!r}; "
                         "expected a decimal like 0.001 or a power like 2^-9")
    return x


def checked(name, text):
    """Parse and range-check one numeric flag."""
    x = parse_number(text, name)
    ok, words = RANGES[name]
    if not ok(x):
        raise UsageError(f"--{name} {text} is outside the accepted range {words}")
    return int(x) if name in INTEGERS else x


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message):
        raise UsageError(message)


def join_numbers(argv):
    """`--alpha -2^-3` -> `--alpha=-2^-3`, so a negative value reaches the range check."""
    out, it = [], iter(argv)
    for tok in it:
        if tok.lstrip("-").replace("-", "_") in RANGES:
            out.append(f"{tok}={next(it, '')}")
        else:
            out.append(tok)
    return out


def run_parser():
    """Flags of a single run (spec §6.1 defaults)."""
    p = Parser(prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", default="mountaincar", choices=envs.DOMAINS)
    p.add_argument("--tuner", default=None, choices=mt.TUNERS,
                   help="step-size tuner (default scalar on mountain car, mixed on the networks)")
    p.add_argument("--unnormalized", action="store_true",
                   help="scalar/vector/mixed Metatrace without the normalizations (v, u/M)")
    p.add_argument("--alpha", default=None, help="initial (or fixed) step-size alpha_0")
    p.add_argument("--mu", default=None, help="meta step-size")
    p.add_argument("--gamma", default=DEFAULTS["gamma"], help="discount")
    p.add_argument("--lam", default=DEFAULTS["lam"], help="trace decay lambda")
    p.add_argument("--psi", default=None, help="entropy weight")
    p.add_argument("--drift", default=DEFAULTS["drift"],
                   help="sign-flip rate per feature per step (drifting_mountaincar only)")
    p.add_argument("--episodes", default=DEFAULTS["episodes"], help="mountain car: episodes")
    p.add_argument("--steps", default=None,
                   help="network domains: agent steps (default 12.5 M on ALE, 5 M on MinAtar)")
    p.add_argument("--frames", default=None,
                   help="ALE: emulator frames (= 4 x agent steps), instead of --steps")
    p.add_argument("--no-clip-rewards", action="store_true",
                   help="ALE: learn from the raw game score instead of rewards clipped to [-1, 1]")
    p.add_argument("--seed", default=DEFAULTS["seed"])
    p.add_argument("--out", default=None, help="run directory (default runs/<name>)")
    p.add_argument("--timeout-bootstrap", action="store_true",
                   help="bootstrap from the state at the 200-step time limit (spec §1.6); "
                        "default treats it as terminal, as the paper did")
    p.add_argument("--no-alpha-bound", action="store_true",
                   help="NOSID without its overshoot guard (spec §4.3 N2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (a finished run is kept)")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help="checkpoint every N episodes (default %(default)s)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, metavar="M",
                   help="... or every M minutes, whichever comes first (default %(default)s)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint of a finished run (removed by default)")
    return p


def is_net(domain):
    """Network domains (ALE and MinAtar) versus the linear mountain-car domains."""
    return domain not in envs.LINEAR_DOMAINS


def settings(args):
    """The validated settings of a run as a plain dict (defaults depend on the domain)."""
    net = is_net(args.domain)
    for k in ("tuner", "alpha", "mu", "psi"):
        if getattr(args, k) is None:
            setattr(args, k, (NET_DEFAULTS if net else DEFAULTS)[k])
    s = {k: checked(k, getattr(args, k)) for k in RUN_NUMBERS}
    s.update(domain=args.domain, tuner=args.tuner, normalized=not args.unnormalized,
             timeout_bootstrap=args.timeout_bootstrap, nosid_alpha_bound=not args.no_alpha_bound)
    if args.domain != "drifting_mountaincar":
        s["drift"] = 0.0
    if net:
        if args.steps is not None and args.frames is not None:
            raise UsageError("give --steps or --frames, not both")
        family = "minatar" if args.domain.startswith(envs.MINATAR_PREFIX) else "atari"
        if args.frames is not None:
            if family != "atari":
                raise UsageError(f"--frames is for ALE games; {args.domain} takes --steps")
            steps = -(-checked("frames", args.frames) // 4)
        else:
            steps = checked("steps", args.steps) if args.steps is not None else NET_STEPS[family]
        s.update(episodes=None, steps=steps, clip_rewards=not args.no_clip_rewards)
    else:
        for k in ("steps", "frames"):
            if getattr(args, k) is not None:
                raise UsageError(f"--{k} is for the network domains; {args.domain} takes --episodes")
    return s


def config_of(s):
    """metatrace.Config from run settings."""
    return mt.Config(tuner=s["tuner"], normalized=s["normalized"], alpha=s["alpha"], mu=s["mu"],
                     gamma=s["gamma"], lam=s["lam"], psi=s["psi"],
                     timeout_bootstrap=s["timeout_bootstrap"],
                     nosid_alpha_bound=s["nosid_alpha_bound"])


class NetRunner:
    """A network-domain run (spec §6.3): gymnasium env + NetAgent, stepped in Python."""

    def __init__(self, s):
        import nets
        opts = {"clip_rewards": s["clip_rewards"]} if s["domain"] in envs.ATARI_DOMAINS else {}
        self.env = envs.make(s["domain"], seed=s["seed"], **opts)
        self.obs, _ = self.env.reset(seed=s["seed"])
        c, A = self.obs.shape[0], int(self.env.action_space.n)
        net = nets.MINATAR(c, A) if s["domain"].startswith(envs.MINATAR_PREFIX) else nets.ATARI(A)
        self.agent = mt.NetAgent(net, config_of(s), seed=s["seed"])
        self.learner = self.agent.learner
        self.gamma, self.boot_at_limit = s["gamma"], s["timeout_bootstrap"]

    def get_state(self):
        """Learner arrays, agent RNG and emulator state, between episodes (for checkpoints)."""
        arrays = {f"learner_{k}": v.copy() for k, v in self.learner.state().items()}
        arrays["env"] = np.frombuffer(envs.get_env_state(self.env), np.uint8)
        return arrays, {"rng_agent": self.agent.rng.bit_generator.state}

    def set_state(self, arrays, rngs):
        """Restore `get_state`; the next episode starts with a reset of the restored emulator."""
        for k, v in self.learner.state().items():
            v[...] = arrays[f"learner_{k}"]
        self.agent.rng.bit_generator.state = rngs["rng_agent"]
        envs.set_env_state(self.env, arrays["env"].tobytes())
        self.obs = None

    def fields(self):
        """Columns of episodes.csv."""
        return ["episode", "return", "score", "length", "steps", "complete", "diverged",
                "beta_mean"]

    def next_row(self, steps_left, tick):
        """One episode, cut at the step budget -> (CSV row without episode/steps, ok)."""
        ret, score, length, ok, complete = self.episode(steps_left, tick)
        return {"return": ret, "score": score, "length": length, "complete": int(complete),
                "diverged": int(not ok), "beta_mean": float(self.learner.beta().mean())}, ok

    def episode(self, max_steps, tick=None):
        """Up to max_steps agent steps of one episode -> (return, score, length, ok, complete)."""
        agent, env = self.agent, self.env
        obs = self.obs if self.obs is not None else env.reset()[0]
        self.obs = None
        ret = score = 0.0
        t, ok, done = 0, True, False
        while t < max_steps:
            A = agent.policy(obs)
            obs1, R, term, trunc, info = env.step(A)
            boot = not term and (self.boot_at_limit or not trunc)
            ok = agent.learn(A, float(R), obs1, self.gamma if boot else 0.0)
            ret += R
            score += info.get("score", R)
            t += 1
            if tick is not None and t % 256 == 0:
                tick(256)
            done = term or trunc
            if not ok or done:
                break
            obs = obs1
        if tick is not None:
            tick(t % 256)
        agent.end_episode()
        return ret, score, t, ok, done or not ok


def make_agent(s):
    """The linear agent for a mountain-car domain."""
    n_noise = envs.N_NOISE if s["domain"] == "drifting_mountaincar" else 0
    return mt.LinearAgent(config_of(s), envs.N_TILE_FEATURES + n_noise, envs.MC_ACTIONS,
                          n_noise=n_noise, drift=s["drift"], seed=s["seed"])


def run_name(s):
    """A readable run directory name from the settings."""
    norm = "" if s["normalized"] or s["tuner"] in ("none", "sid", "nosid") else "-unnorm"
    a, m = math.log2(s["alpha"]), math.log2(s["mu"]) if s["mu"] > 0 else "0"
    fmt = lambda x: f"{x:g}" if isinstance(x, str) or x != int(x) else f"{int(x)}"
    return f"{s['domain']}-{s['tuner']}{norm}-a2^{fmt(a)}-mu2^{fmt(m)}-s{s['seed']}"


def provenance():
    """Package versions and the git commit of the code."""
    import gymnasium
    import numba
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        r = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=here, capture_output=True,
                           text=True, timeout=10)
        commit = r.stdout.strip() if r.returncode == 0 else None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=here, capture_output=True, text=True, timeout=10).stdout)
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "gymnasium": gymnasium.__version__,
            "git_commit": commit, "git_dirty": dirty, "host": platform.node()}


def write_json(path, obj):
    """Atomic JSON write (temp file + rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def beta_columns(s, learner):
    """Mean log step-size over groups of weights (spec §6.2 Fig. 7 groups on the drifting domain)."""
    beta = learner.beta()
    nf = envs.N_TILE_FEATURES + (envs.N_NOISE if s["domain"] == "drifting_mountaincar" else 0)
    critic, actor = beta[:nf], beta[nf:].reshape(envs.MC_ACTIONS, nf)
    cols = {"beta_critic": critic[:envs.N_TILE_FEATURES].mean(),
            "beta_actor": actor[:, :envs.N_TILE_FEATURES].mean()}
    if nf > envs.N_TILE_FEATURES:
        cols["beta_critic_noise"] = critic[envs.N_TILE_FEATURES:].mean()
        cols["beta_actor_noise"] = actor[:, envs.N_TILE_FEATURES:].mean()
    return cols


CKPT, CKPT_PREV = "checkpoint.npz", "checkpoint.prev.npz"


def save_checkpoint(out, agent, episodes_done):
    """Atomic checkpoint between episodes (temp + rename); the previous one is kept as a fallback."""
    arrays, rngs = agent.get_state()
    meta = json.dumps({"episodes_done": episodes_done, "rngs": rngs})
    tmp = os.path.join(out, "checkpoint.tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.array(meta), **arrays)
        f.flush()
        os.fsync(f.fileno())
    cur, prev_tmp = os.path.join(out, CKPT), os.path.join(out, "checkpoint.prev.tmp")
    if os.path.exists(cur):               # keep it as the fallback; CKPT never goes missing
        if os.path.exists(prev_tmp):
            os.remove(prev_tmp)
        try:
            os.link(cur, prev_tmp)
        except OSError:                   # a file system without hard links
            shutil.copyfile(cur, prev_tmp)
        os.replace(prev_tmp, os.path.join(out, CKPT_PREV))
    os.replace(tmp, cur)


def load_checkpoint(out, agent):
    """Restore the newest readable checkpoint into agent; returns episodes done (0 if none).

    A truncated or corrupt file (zip CRC, missing or misshapen arrays) is reported on stderr and
    the previous checkpoint is tried."""
    want, _ = agent.get_state()
    for name in (CKPT, CKPT_PREV):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            continue
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in want}
                meta = json.loads(str(z["meta"]))
            bad = [k for k in want if k != "env" and arrays[k].shape != want[k].shape]
            if bad:
                raise ValueError(f"array {bad[0]} has the wrong shape")
            agent.set_state(arrays, meta["rngs"])
            return int(meta["episodes_done"])
        except Exception as e:  # any failure to read means: not a usable checkpoint
            print(f"run.py: checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                  "falling back to the previous one", file=sys.stderr)
    return 0


def read_rows(path, n):
    """The first n data rows of a CSV (all if fewer), as dicts."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[:n]


class Interrupt:
    """SIGINT/SIGTERM set a flag; the run checkpoints after the current episode and stops."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        import signal
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, sig, frame):
        self.signal = sig

    def __exit__(self, *exc):
        import signal
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class LinearRunner:
    """A mountain-car run: the Numba episode loop of metatrace.LinearAgent."""

    def __init__(self, s):
        self.s, self.agent = s, make_agent(s)
        self.learner = self.agent.learner

    def get_state(self):
        """See metatrace.LinearAgent.get_state."""
        return self.agent.get_state()

    def set_state(self, arrays, rngs):
        """See metatrace.LinearAgent.set_state."""
        self.agent.set_state(arrays, rngs)

    def fields(self):
        """Columns of episodes.csv."""
        return ["episode", "return", "length", "steps", "diverged"] + list(
            beta_columns(self.s, self.learner))

    def next_row(self, steps_left, tick):
        """One episode -> (CSV row without episode/steps, ok)."""
        ret, length, ok = self.agent.episode()
        tick(1)
        return {"return": ret, "length": length, "diverged": int(not ok),
                **beta_columns(self.s, self.learner)}, ok


def run(s, out, quiet=False, resume=False, every=100, minutes=5.0, keep=False):
    """One run: episodes to OUT/episodes.csv as they finish, config and outcome to OUT/config.json.

    Mountain car runs `episodes` episodes, the network domains `steps` agent steps. Checkpoints
    between episodes every `every` episodes or `minutes` minutes and on SIGINT/SIGTERM; with
    resume=True an unfinished run continues from its last checkpoint (bit-identical results)."""
    from tqdm import tqdm
    cfg_path, csv_path = os.path.join(out, "config.json"), os.path.join(out, "episodes.csv")
    if os.path.exists(cfg_path):
        if not resume:
            raise UsageError(f"{out} already holds a run; pass --resume to continue it, "
                             "or choose another --out")
        with open(cfg_path) as f:
            old = json.load(f)
        changed = [k for k in s if old["settings"].get(k) != s[k]]
        if changed:
            k = changed[0]
            raise UsageError(f"--resume: {k} is {s[k]!r} but the run in {out} has "
                             f"{old['settings'].get(k)!r}")
        if old["status"] in ("finished", "diverged"):
            return old
    os.makedirs(out, exist_ok=True)
    meta = {"settings": s, "provenance": provenance(), "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    net = is_net(s["domain"])
    runner = NetRunner(s) if net else LinearRunner(s)
    done = load_checkpoint(out, runner) if resume else 0
    rows = read_rows(csv_path, done)
    if len(rows) < done:
        print(f"run.py: {csv_path} has {len(rows)} of the checkpoint's {done} episodes; "
              "starting over", file=sys.stderr)
        runner, done, rows = (NetRunner(s) if net else LinearRunner(s)), 0, []
    if done:
        meta["resumed_from_episode"] = done
    write_json(cfg_path, meta)
    returns = [float(r["score" if net else "return"]) for r in rows]
    steps = int(rows[-1]["steps"]) if rows else 0
    fields = runner.fields()
    tmp = csv_path + ".tmp"
    with open(tmp, "w", newline="") as f:       # the episodes up to the checkpoint, atomically
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, csv_path)
    more = (lambda ep, st: st < s["steps"]) if net else (lambda ep, st: ep < s["episodes"])
    t0 = last_ckpt = time.perf_counter()
    steps0, status, ep = steps, "finished", done
    with open(csv_path, "a", newline="") as f, Interrupt() as stop, \
            tqdm(total=s["steps"] if net else s["episodes"], initial=steps if net else done,
                 unit="step" if net else "ep", unit_scale=net, disable=quiet,
                 dynamic_ncols=True) as bar:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        while more(ep, steps):
            row, ok = runner.next_row(s["steps"] - steps if net else 0,
                                      bar.update if net else (lambda k: None))
            steps += row["length"]
            returns.append(row["score" if net else "return"])
            writer.writerow({"episode": ep, "steps": steps, **row})
            f.flush()
            ep += 1
            if not net:
                bar.update(1)
            if not quiet and (ep % 10 == 0 or not more(ep, steps)):
                bar.set_postfix({"score10" if net else "ret100":
                                 f"{np.mean(returns[-10 if net else -100:]):.1f}"}, refresh=False)
            if not ok:
                status = "diverged"
                break
            now = time.perf_counter()
            if stop.signal is not None or ep % every == 0 or now - last_ckpt > 60 * minutes:
                save_checkpoint(out, runner, ep)
                last_ckpt = now
            if stop.signal is not None:
                status = "interrupted"
                break
    wall = time.perf_counter() - t0
    meta.update(status=status, episodes_done=ep, agent_steps=steps, wall_seconds=round(wall, 3),
                steps_per_second=round((steps - steps0) / wall, 1) if wall > 0 else None,
                mean_return_last100=float(np.mean(returns[-100:])) if returns else None)
    if status == "diverged":
        meta["diverged_at_episode"] = ep - 1
    write_json(cfg_path, meta)
    if status != "interrupted" and not keep:
        for name in (CKPT, CKPT_PREV):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    return meta


def main_run(argv):
    """`python run.py [flags]`: one run."""
    args = run_parser().parse_args(join_numbers(argv))
    s = settings(args)
    try:
        mt.check_config(config_of(s))
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = args.out or os.path.join("runs", run_name(s) + time.strftime("-%Y%m%d-%H%M%S"))
    meta = run(s, out, quiet=args.quiet, resume=args.resume, every=args.checkpoint_every,
               minutes=args.checkpoint_minutes, keep=args.keep_checkpoint)
    last100 = meta.get("mean_return_last100")
    msg = (f"{meta['status']}: {meta['episodes_done']} episodes, {meta['agent_steps']} steps in "
           f"{meta['wall_seconds']:.1f} s; mean return of the last 100 episodes "
           f"{last100 if last100 is None else round(last100, 1)}; results in {out}")
    if meta["status"] == "finished":
        print(msg)
        return 0
    if meta["status"] == "diverged":
        print(f"diverged (non-finite weights or step-sizes) in episode "
              f"{meta['diverged_at_episode']}; {msg}", file=sys.stderr)
        return 0
    print(f"{msg}; continue it with the same command and --resume", file=sys.stderr)
    return 130


GRID_FLAGS = ("alpha", "mu", "gamma", "lam", "psi", "drift", "episodes")


def parse_grid(text, name):
    """A grid: '2^-5,2^-7' (a list) or '2^-5..2^-14' (every power of two between); one value too."""
    if ".." in text:
        ends = text.split("..")
        ms = [_NUMBER.match(e) for e in ends]
        if len(ends) != 2 or not all(ms) or ms[0].group(1) != ms[1].group(1):
            raise UsageError(f"--{name}: malformed range {text!r}; expected powers of one base "
                             "like 2^-5..2^-14")
        a, b = (parse_number(e, name) for e in ends)
        base = float(ms[0].group(1))
        k0, k1 = float(ms[0].group(3)), float(ms[1].group(3))
        if k0 != int(k0) or k1 != int(k1):
            raise UsageError(f"--{name}: range {text!r} needs integer exponents")
        step = 1 if k1 >= k0 else -1
        values = [f"{ms[0].group(1)}^{k}" for k in range(int(k0), int(k1) + step, step)]
    else:
        values = [v.strip() for v in text.split(",")]
        if any(v == "" for v in values):
            raise UsageError(f"--{name}: empty element in grid {text!r}")
    for v in values:
        checked(name, v)
    return values


def sweep_parser():
    """Flags of `run.py sweep`: the run flags, each numeric one taking a grid."""
    p = run_parser()
    p.prog = "run.py sweep"
    for a in p._actions:
        if a.dest in ("domain", "tuner"):
            a.choices = None          # comma lists, checked in expand()
        if a.dest in ("out", "seed", "resume"):
            a.help = argparse.SUPPRESS
    p.add_argument("--seeds", default="1", help="runs per setting: seeds 0..N-1")
    p.add_argument("--workers", default=str(os.cpu_count() or 1),
                   help="parallel runs on this machine (default: all cores)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on Ray: 'local' starts a local instance, 'auto' or host:port joins a cluster")
    return p


def expand(args):
    """The cartesian product of every grid -> a list of validated settings (defaults per domain)."""
    grids = {k: parse_grid(getattr(args, k), k) for k in GRID_FLAGS + ("steps", "frames")
             if getattr(args, k) is not None}
    for name, choices in (("domain", envs.DOMAINS), ("tuner", mt.TUNERS)):
        if getattr(args, name) is None:
            continue
        vals = [v.strip() for v in getattr(args, name).split(",")]
        for v in vals:
            if v not in choices:
                raise UsageError(f"--{name}: unknown value {v!r}; accepted: {', '.join(choices)}")
        grids[name] = vals
    seeds = checked("seeds", args.seeds)
    keys = list(grids)
    out = []
    for combo in itertools.product(*(grids[k] for k in keys)):
        for seed in range(seeds):
            ns = argparse.Namespace(**vars(args))
            ns.__dict__.update(zip(keys, combo))
            ns.seed = str(seed)
            s = settings(ns)
            try:
                mt.check_config(config_of(s))
            except ValueError as e:
                raise UsageError(str(e)) from None
            if s not in out:
                out.append(s)
    return out


def sweep_task(s, out):
    """One run of a sweep (resumes an unfinished one); returns (status, mean return of last 100)."""
    crash = os.environ.get("METATRACE_TEST_CRASH")   # fault injection for the tests: one worker dies
    if crash and os.path.exists(crash):
        os.remove(crash)
        os.kill(os.getpid(), 9)
    meta = run(s, out, quiet=True, resume=True)
    return meta["status"], meta.get("mean_return_last100")


def _pool_engine(tasks, workers, report):
    """Local process pool, one run per worker; a crashed worker's runs are retried once."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    pending = [(t, 0) for t in tasks]
    while pending:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        inflight = {}
        try:
            while pending or inflight:
                while pending and len(inflight) < workers:
                    t, k = pending.pop(0)
                    inflight[pool.submit(sweep_task, *t)] = (t, k)
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    t, k = inflight.pop(fut)
                    try:
                        report(t, fut.result(), None)
                    except Exception as e:  # a run that raised, or a worker that died
                        retry = k == 0
                        report(t, None, f"{type(e).__name__}: {e}" + ("; retrying" if retry else ""))
                        if retry:
                            pending.append((t, 1))
                if any(f.done() and f.exception() is not None and
                       type(f.exception()).__name__ == "BrokenProcessPool" for f in done):
                    for fut, (t, k) in inflight.items():   # the pool is gone: requeue its runs
                        pending.append((t, k))
                    inflight = {}
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_engine(tasks, workers, report, address):
    """Ray: the same runs as remote tasks (retried once on failure); results on a shared disk."""
    import ray
    here = os.path.dirname(os.path.abspath(__file__))
    env = {"env_vars": {k: "1" for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}}
    if address == "local":      # workers import this checkout (and reuse its Numba cache)
        env["env_vars"]["PYTHONPATH"] = here
    else:                       # a cluster: ship the code; results go to --out on a shared disk
        env.update(working_dir=here, excludes=["runs/", ".git/", ".venv*/", "docs/", ".hypothesis/"])
    if address == "local":
        ray.init(num_cpus=workers, runtime_env=env, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=True)(sweep_task)
        refs = {remote.remote(*t): t for t in tasks}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            t = refs.pop(done[0])
            try:
                report(t, ray.get(done[0]), None)
            except Exception as e:
                report(t, None, f"{type(e).__name__}: {str(e).splitlines()[0]}")
    finally:
        ray.shutdown()


def main_sweep(argv):
    """`python run.py sweep ...`: every combination of the grids, --seeds runs each."""
    from tqdm import tqdm
    args = sweep_parser().parse_args(join_numbers(argv))
    workers = checked("workers", args.workers)
    runs = expand(args)
    root = os.path.abspath(args.out or "runs/sweep")
    os.makedirs(root, exist_ok=True)
    tasks = [(s, os.path.join(root, run_name(s))) for s in runs]
    write_json(os.path.join(root, "sweep.json"),
               {"command": ["run.py", "sweep", *argv], "n_runs": len(tasks),
                "runs": [{"dir": os.path.basename(o), "settings": s} for s, o in tasks]})

    def status_of(out):
        try:
            with open(os.path.join(out, "config.json")) as f:
                return json.load(f)["status"]
        except (OSError, ValueError, KeyError):
            return None

    todo = [t for t in tasks if status_of(t[1]) not in ("finished", "diverged")]
    print(f"sweep: {len(tasks)} runs in {root}; {len(tasks) - len(todo)} already done, "
          f"{len(todo)} to run on {'Ray ' + args.ray if args.ray else f'{workers} workers'}",
          flush=True)
    failed = {}
    os.environ.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="run", disable=args.quiet,
              dynamic_ncols=True) as bar:
        def report(t, result, error):
            name = os.path.basename(t[1])
            if error is None:
                failed.pop(name, None)
                bar.update(1)
            else:
                failed[name] = error
                bar.write(f"run {name} failed: {error}")
            bar.set_postfix(failed=len(failed), refresh=False)

        if args.ray:
            _ray_engine(todo, workers, report, args.ray)
        else:
            _pool_engine(todo, workers, report)
    counts = {}
    for _, o in tasks:
        counts[status_of(o)] = counts.get(status_of(o), 0) + 1
    print("sweep done: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=str)))
    if failed:
        print(f"run.py: {len(failed)} runs failed twice: {', '.join(sorted(failed))}", file=sys.stderr)
        return 1
    return 0


BENCH_TUNERS = [("none", "2^-7", "0"), ("scalar", "2^-9", "2^-8"), ("vector", "2^-9", "2^-8"),
                ("mixed", "2^-9", "2^-8"), ("sid", "2^-9", "2^-16"), ("nosid", "2^-9", "2^-12")]


def bench_net(domain, repeats, steps, where):
    """Per tuner: median learner time per step split into forward / backward / tuner update, and
    agent steps/s of the whole loop (emulator included).  The repeats go round the four tuners in
    turn, so that a slow spell of a shared machine falls on all of them alike; each repeat starts
    with 50 unmeasured steps, which bring the caches back from the previous tuner."""
    print(f"{domain}: median over {repeats} repeats of {steps} agent steps after a warm-up, the "
          f"tuners taking turns; {where}; float32; times in ms per agent step")
    tuners = ("none", "scalar", "vector", "mixed")
    runners = {}
    for tuner in tuners:
        s = settings(run_parser().parse_args(["--domain", domain, "--tuner", tuner]))
        runners[tuner] = NetRunner(s)
        runners[tuner].episode(64)                           # compile and warm up
    rows = {tuner: [] for tuner in tuners}
    for _ in range(repeats):
        for tuner in tuners:
            runner = runners[tuner]
            agent = runner.agent
            runner.episode(50)                               # caches back from the last tuner
            agent.clock = np.zeros(3)
            t0, n = time.perf_counter(), 0
            while n < steps:
                n += runner.episode(steps - n)[2]
            wall = time.perf_counter() - t0
            rows[tuner].append([*(agent.clock * 1e3 / n), wall * 1e3 / n, n / wall])
    print(f"{'tuner':<8}{'forward':>9}{'backward':>10}{'tuner':>8}{'learner':>9}{'env+rest':>10}"
          f"{'steps/s':>9}")
    for tuner in tuners:
        med = np.median(np.array(rows[tuner]), axis=0)
        print(f"{tuner:<8}{med[0]:>9.3f}{med[1]:>10.3f}{med[2]:>8.3f}{med[:3].sum():>9.3f}"
              f"{med[3] - med[:3].sum():>10.3f}{med[4]:>9.0f}", flush=True)
    return 0


def main_bench(argv):
    """`python run.py bench`: median agent steps/s (environment included) per tuner, one core."""
    p = Parser(prog="run.py bench", description=main_bench.__doc__)
    p.add_argument("--domain", default="mountaincar", choices=envs.DOMAINS)
    p.add_argument("--repeats", default="7")
    p.add_argument("--episodes", default="200", help="mountain car: episodes per repeat")
    p.add_argument("--steps", default="300", help="network domains: agent steps per repeat")
    p.add_argument("--threads", "--cores", dest="threads", default="1",
                   help="CPU cores (and Numba threads) to use (default 1: one core)")
    args = p.parse_args(join_numbers(argv))
    repeats = checked("repeats", args.repeats)
    threads = checked("threads", args.threads)
    if hasattr(os, "sched_setaffinity"):
        avail = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(avail[:threads]))
        where = f"pinned to CPU {','.join(map(str, avail[:threads]))}"
    else:
        where = "not pinned"
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if is_net(args.domain):
        return bench_net(args.domain, repeats, checked("steps", args.steps), where)
    episodes = checked("episodes", args.episodes)
    print(f"{args.domain}: agent steps/s, environment included, median of {repeats} repeats of "
          f"{episodes} episodes after a 100-episode warm-up; {where}")
    print(f"{'tuner':<18}{'alpha0':>8}{'mu':>8}{'median':>12}{'min':>12}{'max':>12}")
    for tuner, alpha, mu in BENCH_TUNERS:
        for norm in ([True, False] if tuner in ("scalar", "vector", "mixed") else [True]):
            args_run = run_parser().parse_args(
                ["--domain", args.domain, "--tuner", tuner, "--alpha", alpha,
                 "--mu", mu if norm else "2^-16"] + ([] if norm else ["--unnormalized"]))
            agent = make_agent(settings(args_run))
            for _ in range(100):
                agent.episode()
            rates = []
            for _ in range(repeats):
                t0, n = time.perf_counter(), 0
                for _ in range(episodes):
                    n += agent.episode()[1]
                rates.append(n / (time.perf_counter() - t0))
            name = tuner + ("" if norm or tuner == "none" else " (unnorm.)")
            print(f"{name:<18}{alpha:>8}{mu if norm else '2^-16':>8}{statistics.median(rates):>12,.0f}"
                  f"{min(rates):>12,.0f}{max(rates):>12,.0f}", flush=True)
    return 0


def main(argv=None):
    """Dispatch `run.py [bench] ...`; bad input -> one line on stderr, exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "bench":
            return main_bench(argv[1:])
        if argv and argv[0] == "sweep":
            return main_sweep(argv[1:])
        if argv and argv[0] == "figures":
            import figures
            return figures.main(argv[1:], prog="run.py figures")
        return main_run(argv)
    except UsageError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

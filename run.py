"""metatrace experiment runner.

    python run.py --domain mountaincar                       one run on the defaults
    python run.py --domain mountaincar --tuner scalar --alpha 2^-9 --mu 2^-8 --episodes 1000
                  --seed 0 --out runs/x                      one run, every setting explicit
    python run.py bench --domain mountaincar                 agent steps/s for every tuner
    python run.py sweep --alpha 2^-3..2^-12 --mu 2^-6,2^-8 --seeds 10 --out runs/s   a grid of runs
    python run.py figures --fig 2 runs/s --out figs          a paper figure from results
    python run.py --domain CartPole-v1 --steps 50000         any gymnasium id (discrete actions)
    python run.py evaluate OUT --episodes 100 --greedy       a finished run's agent, no learning
    python run.py plot runs/s --by alpha --out curves.png    learning curves grouped by a setting

A run writes OUT/config.json (every setting, provenance, status), OUT/episodes.csv (one row
per episode, written whole as each episode finishes, so a killed run keeps them), OUT/timing.csv
(wall-clock seconds per episode) and, when it finishes, OUT/agent.npz (the trained agent). One
process at a time holds a run directory. Numbers accept decimals (0.001, 1e-3) and powers (2^-9).
"""
import os

# one BLAS thread per run, whatever the caller's environment says (set before numpy is imported):
# the network's small products are fastest single-threaded, a sweep's runs must not fight over
# cores, and another thread count changes a network run's sums in the last digits
# (`--blas-threads N` asks for more)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import decimal
import math
import re
import statistics
import sys
import time
from typing import NamedTuple

import numpy as np

import envs
import metatrace as mt
from store import (AGENT_FILE, CKPT, CKPT_PREV, EVAL_FIELDS, TIMING_FIELDS, CheckpointError,
                   Interrupt, RunLock, UsageError, _remove, check_arrays, check_learner,
                   check_out, check_rng, finite_stats, load_checkpoint, out_flag, provenance,
                   differing, read_config,
                   read_rows, restart_csv, rows_until, save_agent,
                   save_checkpoint, settings_hash, write_json)

R = mt.Range


class Setting(NamedTuple):
    """One command-line setting, defined here once: its default (one value, or one per domain
    family: linear, ale, minatar), its accepted values (a Range, a tuple of choices, or None for
    an on/off flag), its help text, and the runs it applies to (a key of WHERE)."""
    default: object
    accepted: object
    help: str
    where: str = "all"


_P, _N = mt.PAPER_DEFAULTS["linear"], mt.PAPER_DEFAULTS["network"]


def _families(linear, network):
    return {"linear": linear, "ale": network, "minatar": network, "gym": network}


class Widths(NamedTuple):
    """Accepted values of --hidden: comma-separated layer widths."""
    lo: int = 1
    hi: int = 4096
    most: int = 8

    def words(self):
        return f"a comma list of 1 to {self.most} integers in [{self.lo}, {self.hi}]"


GYM_HIDDEN = (64, 64)       # README "Any gymnasium environment": chosen from a CartPole pilot


RUN_SETTINGS = {  # every setting that changes a result (docs/algorithms.md §6)
    "domain": Setting("mountaincar", envs.DOMAINS, "the problem: a built-in domain or any "
                      "registered gymnasium id with discrete actions (CartPole-v1, ...)"),
    "tuner": Setting(_families(_P.tuner, _N.tuner), mt.TUNERS,
                     "step-size tuner (" + "; ".join(f"{t.name}: {t.summary}"
                                                     for t in mt.TUNER_TABLE) + ")"),
    "unnormalized": Setting(False, None, "Metatrace without its normalizations (v, u/M)",
                            "tuner"),
    "alpha": Setting(_families(_P.alpha, _N.alpha), mt.CONFIG_RANGES["alpha"],
                     "initial (or fixed) step-size alpha_0"),
    "mu": Setting(_families(_P.mu, _N.mu), mt.CONFIG_RANGES["mu"], "meta step-size", "tuner"),
    "gamma": Setting(_P.gamma, mt.CONFIG_RANGES["gamma"], "discount"),
    "lam": Setting(_P.lam, mt.CONFIG_RANGES["lam"], "trace decay lambda"),
    "psi": Setting(_families(_P.psi, _N.psi), mt.CONFIG_RANGES["psi"], "entropy weight"),
    "drift": Setting(6e-6, R(0, 1), "sign-flip rate per feature per step", "drifting"),
    "episodes": Setting(1000, R(1, 10**9, integer=True), "episodes", "linear"),
    "steps": Setting({"ale": 12_500_000, "minatar": 5_000_000, "gym": 100_000},
                     R(1, 10**12, integer=True), "agent steps", "network"),
    "hidden": Setting({"gym": GYM_HIDDEN}, Widths(), "hidden dense layers' widths (SiLU; "
                      "after the conv layers on an image)", "gym"),
    "frames": Setting(None, R(1, 4 * 10**12, integer=True),
                      "emulator frames (= 4 x agent steps), instead of --steps", "ale"),
    "no_clip_rewards": Setting(False, None, "learn from the raw game score, not rewards clipped "
                               "to [-1, 1]", "ale"),
    "seed": Setting(0, R(0, 2**63 - 1, integer=True), "random seed"),
    "timeout_bootstrap": Setting(False, None, "bootstrap from the state at the time limit "
                                 "(docs/algorithms.md §1.6); off: terminal, as the paper did",
                                 "time_limited"),
    "no_alpha_bound": Setting(False, None, "NOSID without its overshoot guard "
                              "(docs/algorithms.md §4.3 N2)", "tuner"),
    "kappa": Setting(mt.Config().kappa, mt.CONFIG_RANGES["kappa"], "the bound factor kappa of "
                     "the step (docs/algorithms.md §9 O3; 0: never bounded)", "tuner"),
    "beta2": Setting(mt.Config().beta2, mt.CONFIG_RANGES["beta2"], "decay of the RMS of "
                     "delta z (docs/algorithms.md §9 O5)", "tuner"),
    "blas_threads": Setting(1, R(1, 1024, integer=True), "BLAS threads (more changes the last "
                            "digits of a network run)", "network"),
    "sparse_init": Setting(False, None, "sparse initialization: 90%% of each unit's input "
                           "weights set to 0 (Elsayed et al. 2024; docs/algorithms.md §9)",
                           "network"),
    "layer_norm": Setting(False, None, "layer normalization of every hidden layer's "
                          "pre-activation, no gain or bias (docs/algorithms.md §9)", "network"),
    "normalize_obs": Setting(False, None, "observations standardized by their running mean "
                             "and variance (docs/algorithms.md §9)", "network"),
    "scale_reward": Setting(False, None, "rewards divided by the running std of the discounted "
                            "return (docs/algorithms.md §9)", "network"),
}
OPTIONS = {  # settings of the harness, which change no result
    "checkpoint_every": Setting(None, R(1, 10**9, integer=True),
                                "also checkpoint every N episodes (off by default)"),
    "checkpoint_minutes": Setting(2.0, R(0, 10**6, lo_open=True),
                                  "checkpoint every M minutes of wall time, and at every clean "
                                  "stop"),
    "seeds": Setting(1, R(1, 10_000, integer=True), "runs per setting: seeds 0..N-1"),
    "workers": Setting(os.cpu_count() or 1, R(1, 1024, integer=True),
                       "parallel runs on this machine, all its cores by default"),
    "repeats": Setting(7, R(1, 10_000, integer=True), "repeats of the benchmark"),
    "threads": Setting(1, R(1, 1024, integer=True), "CPU cores (and Numba threads) to use"),
    "eval_every": Setting(None, R(1, 10**9, integer=True), "evaluate the agent every K episodes "
                          "(no learning, fresh environment seeds) into OUT/eval.csv; off by default"),
    "eval_episodes": Setting(10, R(1, 10**6, integer=True), "episodes per evaluation"),
}
WHERE = {  # which runs a setting applies to
    "all": lambda domain, tuner: True,
    "linear": lambda domain, tuner: domain in envs.LINEAR_DOMAINS,
    "drifting": lambda domain, tuner: domain == "drifting_mountaincar",
    "network": lambda domain, tuner: domain not in envs.LINEAR_DOMAINS,
    "ale": lambda domain, tuner: domain in envs.ATARI_DOMAINS,
    "gym": lambda domain, tuner: envs.is_gym_id(domain),
    "time_limited": lambda domain, tuner: not domain.startswith(envs.MINATAR_PREFIX),
}   # and "tuner": the settings a tuner's row lists as its own (applies())
RANGES = {k: v.accepted for k, v in {**RUN_SETTINGS, **OPTIONS}.items()
          if isinstance(v.accepted, mt.Range)}
NUMBERS = ("alpha", "mu", "gamma", "lam", "psi", "seed")     # of every run
STABILIZERS = ("sparse_init", "layer_norm", "normalize_obs", "scale_reward")   # Stream AC's
# a tuner's own numbers (kappa, beta2, ...) enter a run's settings only where they apply; mu,
# older than that rule, is in every run at its canonical value where it does not
TUNER_NUMBERS = tuple(k for k, v in RUN_SETTINGS.items()
                      if v.where == "tuner" and isinstance(v.accepted, mt.Range) and k != "mu")
DOMAIN_FLAGS = tuple(k for k, v in RUN_SETTINGS.items() if v.where != "all")
MAX_RUNS = 100_000        # a sweep larger than this is a typo, not a plan
_NUMBER = re.compile(r"^\s*([-+]?\d+(\.\d*)?)\s*\^\s*([-+]?\d+(\.\d*)?)\s*$")


def flag(name):
    """The command-line spelling of a setting's name."""
    return "--" + name.replace("_", "-")


def parse_number(text, name):
    """A decimal (0.001, 1e-3) or a power (2^-9) -> finite float; UsageError naming the value."""
    m = _NUMBER.match(text)
    try:
        x = float(m.group(1)) ** float(m.group(3)) if m else float(text)
    except (ValueError, OverflowError, ZeroDivisionError):
        x = None
    if x is None or isinstance(x, complex) or math.isnan(x) or (m and math.isinf(x)):
        raise UsageError(f"{flag(name)}: malformed number {text!r}; expected a finite decimal "
                         "like 0.001 or a power like 2^-9")
    return x


def exact_integer(text):
    """The exact integer a decimal (12, 1e3) or power (2^40) literal denotes, without rounding
    through a float; None if it is not one, or is beyond 2^64 in size (out of every range)."""
    m = _NUMBER.match(text)
    try:
        if m:
            if m.group(2) or m.group(4):
                return None
            b, e = int(m.group(1)), int(m.group(3))
            return b ** e if 0 <= e <= 64 and abs(b) <= 2**64 else None
        d = decimal.Decimal(text.strip())
    except (ValueError, ArithmeticError):
        return None
    if not d.is_finite() or abs(d) > 2**64 or d != d.to_integral_value():
        return None
    return int(d)


def checked(name, text):
    """Parse and range-check one numeric flag (infinite values are outside every range);
    integer settings are read exactly (exact_integer), not through a float."""
    x = parse_number(text, name)
    r = RANGES[name]
    if r.integer:
        exact = exact_integer(text)
        x = x if exact is None else exact
    if not r.ok(x):
        raise UsageError(f"{flag(name)} {text} is outside the accepted range {r.words()}")
    return int(x) if r.integer else x


def option(args, name):
    """A harness option's value: the one given (checked) or its default."""
    given = getattr(args, name)
    return checked(name, given) if given is not None else OPTIONS[name].default


def family(domain):
    """The domain family whose defaults a run takes: linear, ale, minatar or gym."""
    if domain in envs.LINEAR_DOMAINS:
        return "linear"
    if domain in envs.MINATAR_DOMAINS:
        return "minatar"
    return "ale" if domain in envs.ATARI_DOMAINS else "gym"


def default(name, domain):
    """The default of a setting for a run on `domain`."""
    d = {**RUN_SETTINGS, **OPTIONS}[name].default
    return d.get(family(domain)) if isinstance(d, dict) else d


def shown(x):
    """A default as --help shows it: powers of two as 2^k."""
    if isinstance(x, (tuple, list)):
        return ",".join(str(v) for v in x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if x > 0 and math.log2(x) == int(math.log2(x)) and x < 1:
        return f"2^{int(math.log2(x))}"
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def default_words(name):
    """The default of a setting in words, per domain family where it depends on it."""
    d = {**RUN_SETTINGS, **OPTIONS}[name].default
    if not isinstance(d, dict):
        return shown(d)
    names = {"linear": "mountain car", "ale": "ALE", "minatar": "MinAtar", "gym": "gymnasium ids"}
    vals = {}
    for fam, v in d.items():
        vals.setdefault(shown(v), []).append(names[fam])
    if len(vals) == 1:
        return next(iter(vals))
    return "; ".join(f"{v} on {' and '.join(f)}" for v, f in vals.items())


def add_setting(p, name, s):
    """One argparse flag from a Setting (None = not given: the default depends on the run)."""
    where = {"all": "", "linear": "mountain car: ", "drifting": "drifting_mountaincar: ",
             "network": "network domains: ", "ale": "ALE: ", "time_limited": "mountain car, "
             "ALE and gymnasium ids: ", "gym": "gymnasium ids: "}
    owners = ", ".join(t.name for t in mt.TUNER_TABLE if name in t.params)
    text = (f"{owners}: " if s.where == "tuner" else where[s.where]) + s.help
    if name == "domain":
        p.add_argument(flag(name), default=None, metavar="DOMAIN",
                       help=f"{text} (default {s.default}; built in: {', '.join(s.accepted)})")
    elif isinstance(s.accepted, Widths):
        p.add_argument(flag(name), default=None, metavar="W1,W2",
                       help=f"{text} (default {default_words(name)}); {s.accepted.words()}")
    elif s.accepted is None:
        p.add_argument(flag(name), action="store_true", default=None, help=text)
    elif not isinstance(s.accepted, mt.Range):
        p.add_argument(flag(name), default=None, choices=s.accepted, metavar=name.upper(),
                       help=f"{text} (default {default_words(name)}; one of "
                            f"{', '.join(s.accepted)})")
    else:
        d = "" if s.default is None else f" (default {default_words(name)})"
        p.add_argument(flag(name), default=None, metavar=name.upper().split("_")[-1],
                       help=f"{text}{d}; {s.accepted.words()}")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and no abbreviated flags (`--seed` is not `--seeds`)."""

    def __init__(self, *a, **k):
        super().__init__(*a, allow_abbrev=False, **k)

    def error(self, message):
        raise UsageError(message)


def join_numbers(argv):
    """`--alpha -2^-3` -> `--alpha=-2^-3`, so a negative value reaches the range check."""
    out, it = [], iter(argv)
    for tok in it:
        if tok.startswith("--") and "=" not in tok and tok[2:].replace("-", "_") in RANGES:
            nxt = next(it, None)
            out.append(tok if nxt is None else f"{tok}={nxt}")
        else:
            out.append(tok)
    return out


def run_parser():
    """Flags of a single run, generated from RUN_SETTINGS and OPTIONS; None = not given."""
    p = Parser(prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, s in RUN_SETTINGS.items():
        add_setting(p, name, s)
    p.set_defaults(domain=RUN_SETTINGS["domain"].default)
    p.add_argument("--out", default=None, help="run directory (default runs/<name>-<date>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (a finished run is kept)")
    for name in ("checkpoint_every", "checkpoint_minutes"):
        add_setting(p, name, OPTIONS[name])
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint of a finished run (removed by default)")
    for name in ("eval_every", "eval_episodes"):
        add_setting(p, name, OPTIONS[name])
    p.add_argument("--eval-greedy", action="store_true",
                   help="evaluate the most probable action (default: actions sampled from pi)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars to OUT/tensorboard (needs tensorboardX, "
                        "or tensorboard with torch)")
    return p


def is_net(domain):
    """Network domains (ALE and MinAtar) versus the linear mountain-car domains."""
    return domain not in envs.LINEAR_DOMAINS


def applies(name, domain, tuner):
    """Whether a setting means anything for a run on `domain` with `tuner` (RUN_SETTINGS; a
    tuner's own settings are those its row of metatrace.TUNER_TABLE lists)."""
    if name not in RUN_SETTINGS:
        return True
    where = RUN_SETTINGS[name].where
    return name in mt.TUNER[tuner].params if where == "tuner" else WHERE[where](domain, tuner)


def tuner_of(args):
    """The tuner a run will use: the one given, or its domain's default."""
    return args.tuner or default("tuner", args.domain)


def inapplicable(args):
    """The first flag given in `args` that does not apply to its domain and tuner, or None."""
    for k in DOMAIN_FLAGS:
        if getattr(args, k) is not None and not applies(k, args.domain, tuner_of(args)):
            return k
    return None


def refuse(name, args):
    """UsageError for a flag that does not apply to the run's domain or tuner."""
    on_tuner = RUN_SETTINGS[name].where == "tuner"
    why = f"tuner {tuner_of(args)}" if on_tuner else f"domain {args.domain}"
    hint = {"episodes": "; the network domains take --steps",
            "steps": "; mountain car takes --episodes",
            "frames": "; MinAtar takes --steps"}.get(name, "")
    if name == "frames" and not is_net(args.domain):
        hint = "; mountain car takes --episodes"
    raise UsageError(f"{flag(name)} does not apply to {why}{hint}")


def settings(args, strict=True):
    """The validated settings of a run as a plain dict: every setting that changes a result,
    with the ones that do not apply to the domain and tuner at one canonical value.
    strict: a flag given that does not apply is an error (a single run; a sweep checks itself)."""
    domain, tuner = args.domain, tuner_of(args)
    check_domain(domain)
    for k in NUMBERS + DOMAIN_FLAGS:       # a malformed value is reported before anything else
        if k in RANGES and isinstance(getattr(args, k, None), str):
            checked(k, getattr(args, k))
    if strict and inapplicable(args):
        refuse(inapplicable(args), args)

    def value(k):
        given = getattr(args, k)
        return checked(k, given) if isinstance(given, str) else default(k, domain)

    def on(k):                             # an on/off flag, where it applies
        return bool(getattr(args, k)) and applies(k, domain, tuner)
    s = {k: value(k) for k in NUMBERS}
    if not mt.TUNER[tuner].meta:           # mu changes nothing there: one canonical value
        s["mu"] = default("mu", domain)
    for k in TUNER_NUMBERS:                # only where they apply, so other runs keep their identity
        if applies(k, domain, tuner):
            s[k] = value(k)
    s.update(domain=domain, tuner=tuner, normalized=not on("unnormalized"),
             timeout_bootstrap=on("timeout_bootstrap"),
             nosid_alpha_bound=not on("no_alpha_bound"),
             drift=value("drift") if applies("drift", domain, tuner) else 0.0)
    if is_net(domain):
        ale = applies("frames", domain, tuner)
        if args.steps is not None and args.frames is not None and ale:
            raise UsageError("give --steps or --frames, not both")
        if args.frames is not None and ale:
            steps = -(-checked("frames", args.frames) // 4)
        else:
            steps = value("steps")
        s.update(episodes=None, steps=steps, clip_rewards=not on("no_clip_rewards"),
                 blas_threads=value("blas_threads"))
        s.update({k: True for k in STABILIZERS if on(k)})   # only when on: runs keep identity
        if envs.is_gym_id(domain):          # only here, so built-in runs keep their identity
            s["hidden"] = list(parse_widths(args.hidden) if args.hidden is not None
                               else default("hidden", domain))
    else:
        s.update(episodes=value("episodes"))
    try:
        mt.check_config(config_of(s))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return s


SWITCHES = {"normalized": "unnormalized", "timeout_bootstrap": "timeout_bootstrap",
            "nosid_alpha_bound": "no_alpha_bound", "clip_rewards": "no_clip_rewards",
            **{k: k for k in STABILIZERS}}     # a stored switch -> its flag (on when they differ)


def stored_settings(s, where, complete=True):
    """A config.json's settings read back through the command line's rules: the same dict that
    `settings` makes of the flags they stand for, or UsageError naming `where` and the first
    setting that is mistyped, out of range, unknown, missing or not at its canonical value.
    complete=False (figures of partial records): types and ranges of the settings present, and
    domain, tuner and seed."""
    def bad(why):
        raise UsageError(f"{where}: {why}; it is not a run this code can read")
    if not isinstance(s, dict):
        bad("its settings are not a table")
    for k in ("domain", "tuner"):
        if not isinstance(s.get(k), str):
            bad(f"setting {k} is {s.get(k, '(absent)')!r}, not a name")
    if s["tuner"] not in mt.TUNERS:
        bad(f"tuner {s['tuner']!r} is not one of {', '.join(mt.TUNERS)}")
    argv = ["--domain", s["domain"], "--tuner", s["tuner"]]
    for k, v in s.items():
        if k in SWITCHES:
            if type(v) is not bool:
                bad(f"setting {k} is {v!r}, not true or false")
            if v != (SWITCHES[k] != k):         # an inverted switch: its flag turns it off
                argv.append(flag(SWITCHES[k]))
        elif k == "hidden":
            if not (isinstance(v, list) and all(type(x) is int for x in v)):
                bad(f"setting hidden is {v!r}, not a list of widths")
            argv += ["--hidden", ",".join(map(str, v))]
        elif k in RANGES and v is not None:
            if type(v) not in (int, float) or (RANGES[k].integer and type(v) is not int):
                bad(f"setting {k} is {v!r}, not {'an integer' if RANGES[k].integer else 'a number'}")
            if not complete and not RANGES[k].ok(v):
                bad(f"setting {k} = {v!r} is outside the accepted range {RANGES[k].words()}")
            if k == "mu" and not mt.TUNER[s["tuner"]].meta or k == "drift" and v == 0.0:
                continue                   # canonical where they do not apply: compared below
            argv += [flag(k), repr(v)]
    if not complete:
        if type(s.get("seed")) is not int:
            bad(f"setting seed is {s.get('seed', '(absent)')!r}, not an integer")
        return s
    try:
        again = settings(run_parser().parse_args(argv))
    except (UsageError, SystemExit) as e:
        bad(str(e) if isinstance(e, UsageError) else "its settings are not flags of a run")
    k = differing(s, again)
    if k is not None:
        bad(f"setting {k} is {s.get(k, '(absent)')!r} where a run of these settings has "
            f"{again.get(k, '(absent)')!r}")
    return s


def check_domain(domain):
    """UsageError unless `domain` is built in or a usable gymnasium id (envs.check_gym_id)."""
    if domain not in envs.DOMAINS:
        try:
            envs.check_gym_id(domain)
        except ValueError as e:
            raise UsageError(f"--domain: {e}") from None


def parse_widths(text):
    """--hidden '64,64' -> (64, 64); UsageError naming the value and the accepted form."""
    w = RUN_SETTINGS["hidden"].accepted
    parts = [p.strip() for p in text.split(",")]
    if not (1 <= len(parts) <= w.most and all(re.fullmatch(r"\d+", p) for p in parts)
            and all(w.lo <= int(p) <= w.hi for p in parts)):
        raise UsageError(f"--hidden {text} is not {w.words()}")
    return tuple(int(p) for p in parts)


def config_of(s):
    """metatrace.Config from run settings: every field the settings hold (same names), the
    Config default for a tuner's own setting that the run does not take."""
    return mt.Config(**{k: s[k] for k in mt.Config._fields if k in s})


def run_name(s):
    """A run directory's name: a readable prefix plus the hash of all its settings."""
    norm = "" if s["normalized"] or not mt.TUNER[s["tuner"]].normalizable else "-unnorm"

    def p2(x):
        if x <= 0:
            return "0"
        k = math.log2(x)
        return f"2^{int(k)}" if k == int(k) else f"{x:g}"
    meta = f"-k{s['kappa']:g}" if "kappa" in s else f"-mu{p2(s['mu'])}"
    return (f"{s['domain']}-{s['tuner']}{norm}-a{p2(s['alpha'])}{meta}-s{s['seed']}-"
            f"{settings_hash(s)}")


def make_env(s, seed=None, moments=None):
    """The gymnasium environment of a network run (seeded with the run's seed by default), in
    the normalization wrappers the run asks for.  moments: an evaluation's environment, whose
    observations are standardized by these frozen statistics (envs.RunningMoments) and whose
    rewards are not scaled."""
    opts = {"clip_rewards": s["clip_rewards"]} if s["domain"] in envs.ATARI_DOMAINS else {}
    env = envs.make(s["domain"], seed=s["seed"] if seed is None else seed, **opts)
    if s.get("normalize_obs"):
        env = envs.NormalizeObservation(env, frozen=moments)
    if s.get("scale_reward") and moments is None:
        env = envs.ScaleReward(env, gamma=s["gamma"])
    return env


def make_net(s, env):
    """The network of a run: the paper's Atari net, MinAtar's, or envs.gym_net for a gymnasium id."""
    import nets
    shape, A, ln = env.observation_space.shape, int(env.action_space.n), bool(s.get("layer_norm"))
    if envs.is_gym_id(s["domain"]):
        return envs.gym_net(shape, A, s["hidden"], layer_norm=ln)
    if s["domain"] in envs.MINATAR_DOMAINS:
        return nets.MINATAR(shape[0], A, layer_norm=ln)
    return nets.ATARI(A, layer_norm=ln)


LAYER_EVERY = 10_000      # agent steps between two rows of layers.csv
SPARSITY = 0.9            # --sparse-init: streaming-drl's sparsity


class LayerLog:
    """OUT/layers.csv of a network run: beta per layer at the end of the first episode after
    every LAYER_EVERY agent steps (and of the first episode); a resumed run writes the same rows."""

    def __init__(self, runner, path, done, resume):
        self.runner = runner
        rows = rows_until(path, done) if resume else []
        self.next = (int(rows[-1]["steps"]) // LAYER_EVERY + 1) * LAYER_EVERY if rows else 0
        self.writer = restart_csv(path, runner.layer_fields(), rows)

    def after(self, episodes, steps):
        """After an episode: a row if `steps` reached the next multiple of LAYER_EVERY."""
        if steps >= self.next:
            self.writer.write({"episode": episodes, "steps": steps,
                               **self.runner.layer_stats()})
            self.next = (steps // LAYER_EVERY + 1) * LAYER_EVERY

    def close(self):
        self.writer.close()


def layer_slices(net):
    """(name, start, end) of each layer's weights and biases in theta: conv1.., dense1.., head."""
    import nets
    out, counts = [], {nets.CONV: 0, nets.DENSE: 0}
    for i, ly in enumerate(net.layers):
        counts[ly.kind] += 1
        name = ("head" if i == len(net.layers) - 1 else
                f"{'conv' if ly.kind == nets.CONV else 'dense'}{counts[ly.kind]}")
        out.append((name, ly.w_off, ly.b_off + ly.fan_out))
    return out


class NetRunner:
    """A network-domain run (docs/algorithms.md §6.3): gymnasium env + NetAgent, stepped in Python."""

    def __init__(self, s):
        self.env = make_env(s)
        self.obs, _ = self.env.reset(seed=s["seed"])
        self.agent = mt.NetAgent(make_net(s, self.env), config_of(s), seed=s["seed"],
                                 sparsity=SPARSITY if s.get("sparse_init") else 0.0)
        self.learner = self.agent.learner
        self.gamma, self.boot_at_limit = s["gamma"], s["timeout_bootstrap"]
        self.last = envs.EpisodeStats()
        self.layers = layer_slices(self.agent.net)

    def policy_of(self):
        """(agent, start) for an evaluation: the NetAgent, and the observation statistics of
        --normalize-obs (None without it)."""
        w = envs.normalizers(self.env).get("obs")
        return self.agent, None if w is None else w.moments

    def save_agent(self, path, run):
        """The trained NetAgent to `path`, with the running statistics of its normalization
        wrappers (an evaluation standardizes observations with them) and the record `run`."""
        self.agent.save(path, run=run, **envs.get_wrapper_state(self.env))

    def warm_up(self):
        """Compile (or load) the step's kernels on a throwaway agent: no state of this run."""
        agent = mt.NetAgent(self.agent.net, self.agent.config, seed=0)
        obs = np.zeros(agent.net.obs_shape, agent.dtype)
        for gamma1 in (self.gamma, 0.0):
            agent.learn(agent.policy(obs), 0.0, obs, gamma1)
        agent.end_episode()
        agent.act(obs, greedy=True)
        agent.act(obs)

    def get_state(self):
        """Learner arrays, agent RNG and emulator state, between episodes -> (arrays, meta)."""
        arrays = {f"learner_{k}": v.copy() for k, v in self.learner.state().items()}
        env_arrays, env_meta = envs.get_env_state(self.env)
        arrays.update(env_arrays)
        arrays.update(envs.get_wrapper_state(self.env))
        return arrays, {"rng_agent": self.agent.rng.bit_generator.state, "env": env_meta}

    def prepare_state(self, arrays, meta):
        """Validate a `get_state` result completely; returns a function that applies it."""
        learner = {k: v for k, v in arrays.items() if k.startswith("learner_")}
        check_learner(self.learner, learner)
        if not (isinstance(meta, dict) and set(meta) == {"rng_agent", "env"}):
            raise CheckpointError("the state's table is not that of a network run")
        rng = check_rng(meta["rng_agent"], self.agent.rng)
        try:
            apply_env = envs.prepare_env_state(
                self.env, {k: v for k, v in arrays.items() if not k.startswith(("learner_", "norm_"))},
                meta["env"])
            apply_norm = envs.prepare_wrapper_state(
                self.env, {k: v for k, v in arrays.items() if k.startswith("norm_")})
        except ValueError as e:
            raise CheckpointError(str(e)) from None

        def apply():
            for k, v in self.learner.state().items():
                v[...] = learner[f"learner_{k}"]
            self.agent.rng.bit_generator.state = rng
            apply_env()
            apply_norm()
            self.obs = None
        return apply

    def fields(self):
        """Columns of episodes.csv."""
        return ["episode", "return", "score", "length", "steps", "complete", "diverged",
                *self.stats()]

    def stats(self):
        """The logged statistics: mean beta over all weights, the last episode's mean |delta|
        and policy entropy."""
        return {"beta_mean": float(self.learner.beta().mean()), "abs_delta": self.last.abs_delta,
                "entropy": self.last.entropy}

    def layer_fields(self):
        """Columns of layers.csv."""
        return ["episode", "steps", *self.layer_stats()]

    def layer_stats(self):
        """beta per layer: its mean and 10/50/90 % quantiles (the lower order statistic)."""
        L = self.learner
        beta, cols = L.beta(), {}
        for name, lo, hi in self.layers:
            cols[f"beta_{name}_mean"] = float(beta[lo:hi].mean())
            qs = L.beta_quantiles(beta, lo, hi, (0.1, 0.5, 0.9))
            for q, v in zip((10, 50, 90), qs):
                cols[f"beta_{name}_q{q}"] = float(v)
        return cols


    def next_row(self, steps_left, tick):
        """One episode, cut at the step budget -> (CSV row without episode/steps/stats, ok)."""
        ret, score, length, ok, complete = self.episode(steps_left, tick)
        return {"return": ret, "score": score, "length": length, "complete": int(complete),
                "diverged": int(not ok)}, ok

    def episode(self, max_steps, tick=None):
        """Up to max_steps agent steps of one episode -> (return, score, length, ok, complete)."""
        agent, env = self.agent, self.env
        obs = self.obs if self.obs is not None else env.reset()[0]
        self.obs = None
        ret = score = abs_delta = entropy = 0.0
        t, ok, done = 0, True, False
        while t < max_steps:
            A = agent.policy(obs)
            entropy += agent.H0
            obs1, R, term, trunc, info = env.step(A)
            boot = not term and (self.boot_at_limit or not trunc)
            ok = agent.learn(A, float(R), obs1, self.gamma if boot else 0.0)
            abs_delta += abs(agent.delta)
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
        self.last = envs.EpisodeStats(abs_delta / max(t, 1), entropy / max(t, 1))
        return ret, score, t, ok, done or not ok


def make_agent(s):
    """The linear agent on its mountain-car domain (envs.MountainCarTask)."""
    return envs.MountainCarTask(config_of(s), drifting=s["domain"] == "drifting_mountaincar",
                                drift=s["drift"], seed=s["seed"])


class LinearRunner:
    """A mountain-car run: the Numba episode loop of metatrace.LinearAgent."""

    def __init__(self, s):
        self.s, self.agent = s, make_agent(s)
        self.learner = self.agent.learner

    def get_state(self):
        """See metatrace.LinearAgent.get_state -> (arrays, meta)."""
        arrays, rngs = self.agent.get_state()
        return arrays, {"rngs": rngs}

    def prepare_state(self, arrays, meta):
        """Validate a `get_state` result completely; returns a function that applies it."""
        live, _ = self.agent.get_state()
        check_arrays(live, arrays)
        check_learner(self.learner, arrays)
        if not np.isin(arrays["signs"], (-1.0, 1.0)).all() or arrays["env_state"][0] < 0:
            raise CheckpointError("the drift state is out of range")
        if not (isinstance(meta, dict) and set(meta) == {"rngs"} and isinstance(meta["rngs"], dict)
                and set(meta["rngs"]) == {"rng_env", "rng_agent"}):
            raise CheckpointError("the state's table is not that of a mountain-car run")
        like = {"rng_env": self.agent.rng_env, "rng_agent": self.agent.agent.rng}
        rngs = {k: check_rng(v, like[k]) for k, v in meta["rngs"].items()}
        return lambda: self.agent.set_state(arrays, rngs)

    def fields(self):
        """Columns of episodes.csv."""
        return ["episode", "return", "length", "steps", "diverged"] + list(self.stats())

    def stats(self):
        """Mean log step-size over groups of weights (docs/algorithms.md §6.2 Fig. 7 groups on the
        drifting domain), and the last episode's mean |delta| and policy entropy."""
        s, beta = self.s, self.learner.beta()
        nf = envs.N_TILE_FEATURES + (envs.N_NOISE if s["domain"] == "drifting_mountaincar" else 0)
        critic, actor = beta[:nf], beta[nf:].reshape(envs.MC_ACTIONS, nf)
        cols = {"beta_critic": critic[:envs.N_TILE_FEATURES].mean(),
                "beta_actor": actor[:, :envs.N_TILE_FEATURES].mean()}
        if nf > envs.N_TILE_FEATURES:
            cols["beta_critic_noise"] = critic[envs.N_TILE_FEATURES:].mean()
            cols["beta_actor_noise"] = actor[:, envs.N_TILE_FEATURES:].mean()
        cols.update(abs_delta=self.agent.last.abs_delta, entropy=self.agent.last.entropy)
        return cols

    def policy_of(self):
        """(agent, drift signs) for an evaluation: the LinearAgent and the signs it meets now."""
        return self.agent.agent, self.agent.signs

    def save_agent(self, path, run):
        """The trained LinearAgent to `path`, with the drift signs at the end of the run and the
        record `run`."""
        self.agent.agent.save(path, run=run, drift_signs=self.agent.signs)

    def warm_up(self):
        """Compile (or load) the episode loop on a throwaway task: no state of this run."""
        task = make_agent(self.s)
        task.episode()
        envs.mc_evaluate(task.agent, task.signs, self.s["drift"], 1, True, 0)

    def next_row(self, steps_left, tick):
        """One episode -> (CSV row without episode/steps/stats, ok)."""
        ret, length, ok = self.agent.episode()
        tick(1)
        return {"return": ret, "length": length, "diverged": int(not ok)}, ok


class Harness(NamedTuple):
    """How a run is kept and watched (none of it changes a result): checkpoints every `minutes`
    minutes, at a clean stop and, unless `every` is None, every `every` episodes, kept at the
    end or not; an evaluation of `eval_episodes` episodes every `eval_every` episodes (None:
    none), greedy or sampled; TensorBoard scalars."""
    every: object = None
    minutes: float = 2.0
    keep: bool = False
    eval_every: object = None
    eval_episodes: int = 10
    eval_greedy: bool = False
    tensorboard: bool = False


def run(s, out, quiet=False, resume=False, harness=Harness()):
    """One run: episodes to OUT/episodes.csv as they finish, config and outcome to OUT/config.json,
    the trained agent to OUT/agent.npz, wall-clock times to OUT/timing.csv.

    Mountain car runs `episodes` episodes, the network domains `steps` agent steps. Checkpoints
    between episodes (see Harness) and on SIGINT/SIGTERM; with resume=True an unfinished run
    continues from its last checkpoint (bit-identical results).
    The process holds OUT's lock throughout; a finished or diverged run is returned untouched."""
    old = check_out(out, s, resume)
    if old is not None:
        return old
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out} cannot be created ({e.strerror})") from None
    with RunLock(out):
        old = check_out(out, s, resume)          # again, now that no one else can write here
        if old is not None:
            return old
        return _run_locked(s, out, quiet, resume, harness)


def compile_note(net, quiet):
    """One line on stderr when the run's Numba kernels are not in the on-disk cache yet."""
    fn = mt.net_step if net else envs.mc_episode
    try:
        cold = not os.path.exists(fn._cache._cache_file._index_path)
    except AttributeError:          # another Numba: say nothing rather than guess
        cold = False
    if cold and not quiet:
        print("run.py: compiling the Numba kernels (first run on this machine only, tens of "
              "seconds)", file=sys.stderr, flush=True)


def tensorboard_writer():
    """TensorBoard's SummaryWriter class (torch's, or tensorboardX's); UsageError if neither."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs a TensorBoard writer: pip install tensorboardX "
                             "(or tensorboard with torch)") from None
    return SummaryWriter


def eval_seed(s, *key):
    """A fresh seed for an evaluation (never a training stream): SeedSequence(seed, *key)."""
    return int(np.random.SeedSequence([s["seed"], *key]).generate_state(1)[0] >> 1)


def evaluate_returns(agent, start, s, episodes, greedy, key):
    """Returns (the game score on network domains) of `episodes` episodes of `agent` without
    learning, on environment and action streams seeded from `key` alone; `start`: the drift
    signs a mountain-car agent meets at the start, or on the network domains the observation
    statistics of --normalize-obs, frozen (None without it)."""
    if not is_net(s["domain"]):
        return envs.mc_evaluate(agent, start, s["drift"], episodes, greedy, eval_seed(s, *key))
    env = make_env(s, seed=eval_seed(s, *key), moments=start)
    rng = np.random.default_rng(eval_seed(s, *key, 1))
    scores = []
    try:
        for _ in range(episodes):
            obs, _ = env.reset()
            score, done = 0.0, False
            while not done:
                obs, R, term, trunc, info = env.step(agent.act(obs, greedy, rng))
                score += info.get("score", R)
                done = term or trunc
            scores.append(score)
    finally:
        env.close()
    return scores


def mean_se(xs):
    """(mean, standard error) of a list of numbers (s.e. 0 for one number)."""
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0)


def _run_locked(s, out, quiet, resume, hz):
    """`run` once OUT is locked and checked."""
    from tqdm import tqdm
    path = {k: os.path.join(out, k) for k in ("config.json", "episodes.csv", "timing.csv",
                                               "eval.csv")}
    net = is_net(s["domain"])
    blas = None
    if net and s["blas_threads"] != 1:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(s["blas_threads"], user_api="blas")
    compile_note(net, quiet)
    runner = NetRunner(s) if net else LinearRunner(s)
    tc = time.perf_counter()
    runner.warm_up()
    compile_seconds = time.perf_counter() - tc
    rows = read_rows(path["episodes.csv"], 10**12) if resume else []
    done = load_checkpoint(out, runner, s, len(rows)) if resume else 0
    rows = rows[:done]
    meta = {"settings": s, "settings_hash": settings_hash(s), "provenance": provenance(),
            "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "compile_seconds": round(compile_seconds, 3)}
    if done:
        meta["resumed_from_episode"] = done
    write_json(path["config.json"], meta)
    returns = [float(r["score" if net else "return"]) for r in rows]
    steps = int(rows[-1]["steps"]) if rows else 0
    fields = runner.fields()
    timing = read_rows(path["timing.csv"], done) if resume else []
    evals = rows_until(path["eval.csv"], done) if resume else []
    tb = tensorboard_writer()(os.path.join(out, "tensorboard")) if hz.tensorboard else None
    more = (lambda ep, st: st < s["steps"]) if net else (lambda ep, st: ep < s["episodes"])
    steps0, status, ep = steps, "finished", done
    last_stats, _ = finite_stats(runner.stats(), {})
    writers = []
    try:
        writer = restart_csv(path["episodes.csv"], fields, rows)
        writers.append(writer)
        twriter = restart_csv(path["timing.csv"], TIMING_FIELDS, timing, buffered=True)
        writers.append(twriter)
        layers = LayerLog(runner, os.path.join(out, "layers.csv"), done, resume) if net else None
        if layers is not None:
            writers.append(layers)
        ewriter = None
        if hz.eval_every is not None:
            ewriter = restart_csv(path["eval.csv"], EVAL_FIELDS, evals)
            writers.append(ewriter)
        elapsed0 = float(timing[-1]["elapsed_seconds"]) if timing else 0.0
        t0 = last_ckpt = t_ep = time.perf_counter()
        with Interrupt() as stop, \
                tqdm(total=s["steps"] if net else s["episodes"], initial=steps if net else done,
                     unit="step" if net else "ep", unit_scale=net, disable=quiet,
                     dynamic_ncols=True) as bar:
            while more(ep, steps):
                row, ok = runner.next_row(s["steps"] - steps if net else 0,
                                          bar.update if net else (lambda k: None))
                stats, finite = finite_stats(runner.stats(), last_stats)
                ok = ok and finite
                row["diverged"] = int(not ok)
                last_stats = stats
                steps += row["length"]
                returns.append(row["score" if net else "return"])
                writer.write({"episode": ep, "steps": steps, **row, **stats})
                now = time.perf_counter()
                twriter.write({"episode": ep, "seconds": round(now - t_ep, 6),
                               "elapsed_seconds": round(elapsed0 + now - t0, 6)})
                t_ep = now
                if tb is not None:
                    for k, v in {"return": returns[-1], "length": row["length"], **stats}.items():
                        tb.add_scalar(k, v, steps)
                ep += 1
                if layers is not None and ok:
                    layers.after(ep, steps)
                if ewriter is not None and ok and ep % hz.eval_every == 0:
                    m, se = mean_se(evaluate_returns(*runner.policy_of(), s, hz.eval_episodes,
                                                     hz.eval_greedy, (1, ep)))
                    ewriter.write({"episode": ep, "steps": steps, "eval_mean": m, "eval_se": se,
                                   "eval_episodes": hz.eval_episodes,
                                   "greedy": int(hz.eval_greedy)})
                    if tb is not None:
                        tb.add_scalar("eval_mean", m, steps)
                    t_ep = time.perf_counter()
                if not net:
                    bar.update(1)
                if not quiet and (ep % 10 == 0 or not more(ep, steps)):
                    bar.set_postfix({"score10" if net else "ret100":
                                     f"{np.mean(returns[-10 if net else -100:]):.1f}"},
                                    refresh=False)
                if not ok:
                    status = "diverged"
                    break
                now = time.perf_counter()
                if (stop.signal is not None or now - last_ckpt > 60 * hz.minutes
                        or hz.every is not None and ep % hz.every == 0):
                    twriter.flush()              # complete up to the checkpoint's episode
                    save_checkpoint(out, runner, s, ep)
                    last_ckpt = now
                if stop.signal is not None:
                    status = "interrupted"
                    break
        wall = time.perf_counter() - t0
    except OSError:                  # a full or failing disk: main_run says how to resume
        raise
    except Exception as e:           # the run stops here: say so in config.json, keep the rows
        meta.update(status="failed", error=f"{type(e).__name__}: {e}"[:300], episodes_done=ep,
                    agent_steps=steps)
        try:
            write_json(path["config.json"], meta)
        except OSError:
            pass
        raise
    finally:
        failed = sys.exc_info()[0] is not None
        for w in writers:
            try:
                w.close()
            except OSError:
                if not failed:   # else the error already on its way is the one reported
                    raise
        if tb is not None:
            tb.close()
        if blas is not None:
            blas.unregister()
    if status == "finished":
        save_agent(runner, out, {"settings_hash": settings_hash(s), "seed": s["seed"]})
    meta.update(status=status, episodes_done=ep, agent_steps=steps, wall_seconds=round(wall, 3),
                steps_per_second=round((steps - steps0) / wall, 1) if wall > 0 else None,
                mean_return_last100=float(np.mean(returns[-100:])) if returns else None)
    if status == "diverged":
        meta["diverged_at_episode"] = ep - 1
    write_json(path["config.json"], meta)
    if status != "interrupted" and not hz.keep:
        for name in (CKPT, CKPT_PREV):
            _remove(os.path.join(out, name))
    return meta


def run_options(args):
    """The harness options of a run (checkpoints, evaluation, TensorBoard), validated."""
    if args.eval_every is None:
        for name in ("eval_episodes", "eval_greedy"):
            if getattr(args, name) not in (None, False):
                raise UsageError(f"{flag(name)} needs --eval-every")
    if args.tensorboard:
        tensorboard_writer()
    return Harness(every=option(args, "checkpoint_every"),
                   minutes=option(args, "checkpoint_minutes"), keep=args.keep_checkpoint,
                   eval_every=option(args, "eval_every") if args.eval_every is not None else None,
                   eval_episodes=option(args, "eval_episodes"),
                   eval_greedy=bool(args.eval_greedy), tensorboard=bool(args.tensorboard))


def main_run(argv):
    """`python run.py [flags]`: one run."""
    args = run_parser().parse_args(join_numbers(argv))
    s = settings(args)
    opts = run_options(args)
    out = out_flag(args.out, os.path.join("runs", run_name(s) + time.strftime("-%Y%m%d-%H%M%S")))
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out, the directory of the run to continue")
    if args.resume and not os.path.isdir(args.out):
        raise UsageError(f"--resume: {args.out} is not a run directory (it does not exist)")
    if args.resume and not os.path.exists(os.path.join(args.out, "config.json")):
        raise UsageError(f"--resume: {args.out} holds no run (no config.json)")
    if args.resume:
        stored_settings(read_config(out)["settings"], os.path.join(out, "config.json"))
    try:
        meta = run(s, out, quiet=args.quiet, resume=args.resume, harness=opts)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        rows = max(len(read_rows(os.path.join(out, "episodes.csv"), 10**12)), 0)
        print(f"run.py: error: writing to {out} failed ({e.strerror or e}); episodes.csv keeps "
              f"{rows} whole episodes; free the space and continue with the same command and "
              "--resume", file=sys.stderr)
        return 1
    last100 = meta.get("mean_return_last100")
    msg = (f"{meta['status']}: {meta['episodes_done']} episodes, {meta['agent_steps']} steps in "
           f"{meta['wall_seconds']:.1f} s; mean return of the last 100 episodes "
           f"{last100 if last100 is None else round(last100, 1)}; results in {out}")
    if meta["status"] == "finished":
        print(msg)
        return 0
    if meta["status"] == "diverged":
        print(f"diverged (non-finite or vanishing weights, step-sizes or statistics) in episode "
              f"{meta['diverged_at_episode']}; {msg}", file=sys.stderr)
        return 0
    print(f"{msg}; continue it with the same command and --resume", file=sys.stderr)
    return 130


def main_bench(argv):
    """`python run.py bench`: median agent steps/s (environment included) per tuner, one core."""
    p = Parser(prog="run.py bench", description=main_bench.__doc__)
    p.add_argument("--domain", default="mountaincar", choices=envs.DOMAINS)
    add_setting(p, "repeats", OPTIONS["repeats"])
    p.add_argument("--episodes", default=None, help="mountain car: episodes per repeat (200)")
    p.add_argument("--steps", default=None, help="network domains: agent steps per repeat (300)")
    add_setting(p, "threads", OPTIONS["threads"])
    args = p.parse_args(join_numbers(argv))
    if args.episodes is not None and is_net(args.domain):
        raise UsageError(f"--episodes does not apply to domain {args.domain}; it takes --steps")
    if args.steps is not None and not is_net(args.domain):
        raise UsageError(f"--steps does not apply to domain {args.domain}; it takes --episodes")
    args.episodes, args.steps = args.episodes or "200", args.steps or "300"
    repeats, threads = option(args, "repeats"), option(args, "threads")
    if hasattr(os, "sched_setaffinity"):
        avail = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(avail[:threads]))
        where = f"pinned to CPU {','.join(map(str, avail[:threads]))}"
    else:
        where = "not pinned"
    import numba

    import bench
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    if is_net(args.domain):
        def make_runner(tuner):
            return NetRunner(settings(run_parser().parse_args(["--domain", args.domain,
                                                               "--tuner", tuner])))
        return bench.agent_steps(args.domain, repeats, checked("steps", args.steps), where,
                                 make_runner)

    def make(tuner, alpha, mu, norm):
        flags = ["--domain", args.domain, "--tuner", tuner, "--alpha", alpha]
        flags += ([] if mu is None else ["--mu", mu]) + ([] if norm else ["--unnormalized"])
        return make_agent(settings(run_parser().parse_args(flags)))
    return bench.linear(args.domain, repeats, checked("episodes", args.episodes), where, make)


def load_run_agent(out):
    """(settings, agent, drift signs) of a finished run directory; UsageError if it has none."""
    if not os.path.isdir(out):
        raise UsageError(f"{out} is not a run directory")
    cfg = read_config(out)
    s = stored_settings(cfg["settings"], os.path.join(out, "config.json"))
    path = os.path.join(out, AGENT_FILE)
    if not os.path.exists(path):
        raise UsageError(f"{out} holds no {AGENT_FILE} (run status {cfg['status']}; only a "
                         "finished run keeps its agent)")
    try:
        meta, _ = mt.read_agent(path)
        made_by = meta.get("run")
        if not (isinstance(made_by, dict) and made_by.get("settings_hash") == settings_hash(s)
                and made_by.get("seed") == s["seed"]):
            raise ValueError("it was not saved by this run (its record of the run that made it "
                             f"is {made_by!r}, this run's settings hash is {settings_hash(s)})")
        agent = mt.load(path)
        if agent.config != config_of(s):
            raise ValueError("its settings are not those of the run's config.json")
        signs = meta["extra"].get("drift_signs")
        if is_net(s["domain"]) and s.get("normalize_obs"):
            signs = envs.saved_moments(meta["extra"], agent.net.obs_shape)
        if not is_net(s["domain"]):
            want = (envs.N_TILE_FEATURES,)
            if signs is None or signs.shape != want or not np.isin(signs, (-1.0, 1.0)).all():
                raise ValueError("its drift signs are missing or not +-1")
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: {e}") from None
    return s, agent, signs


def main_evaluate(argv):
    """`run.py evaluate OUT --episodes N [--greedy]`: the trained agent of run OUT on fresh
    environment seeds, without learning; prints the mean return (game score) and its s.e."""
    p = Parser(prog="run.py evaluate", description=main_evaluate.__doc__)
    p.add_argument("out", metavar="OUT", help="a finished run's directory (holds agent.npz)")
    p.add_argument("--episodes", default="10", metavar="N",
                   help="evaluation episodes (default 10); integers >= 1 and <= 1,000,000")
    p.add_argument("--greedy", action="store_true",
                   help="the most probable action (default: actions sampled from pi)")
    args = p.parse_args(argv)
    n = parse_number(args.episodes, "episodes")
    if not mt.Range(1, 10**6, integer=True).ok(n):
        raise UsageError(f"--episodes {args.episodes} is outside the accepted range integers "
                         ">= 1 and <= 1,000,000")
    s, agent, signs = load_run_agent(args.out)
    returns = evaluate_returns(agent, signs, s, int(n), args.greedy, (2,))
    m, se = mean_se(returns)
    game = s["domain"] in envs.ATARI_DOMAINS + envs.MINATAR_DOMAINS
    print(f"{s['domain']} {s['tuner']}: mean {'score' if game else 'return'} "
          f"{m:.2f} ± {se:.2f} (s.e.) over {int(n)} episodes, "
          f"{'greedy' if args.greedy else 'sampled'} actions, fresh environment seeds")
    return 0


def main(argv=None):
    """Dispatch `run.py [bench|sweep|figures|plot|evaluate] ...`; bad input -> one line on
    stderr, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "evaluate":
            return main_evaluate(argv[1:])
        if argv and argv[0] == "plot":
            import figures
            return figures.plot_main(argv[1:], prog="run.py plot")
        if argv and argv[0] == "bench":
            return main_bench(argv[1:])
        if argv and argv[0] == "sweep":
            import sweep
            return sweep.main_sweep(argv[1:])
        if argv and argv[0] == "figures":
            import figures
            return figures.main(argv[1:], prog="run.py figures")
        return main_run(argv)
    except UsageError as e:
        prog = "metatrace" if os.path.basename(sys.argv[0]) == "metatrace" else "run.py"
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

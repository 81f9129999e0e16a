"""The settings of a run: every setting that changes a result, and the rules that read them.

`RUN_SETTINGS` (and `OPTIONS`, the harness's) hold each setting's default (per domain family
where it differs), accepted range and help, and where it applies: everywhere, to a family of
domains, or to the tuners whose row of metatrace.TUNER_TABLE lists it.  From them come the
command line (`run_parser`, `add_setting`), the checked settings of a run (`settings`: a plain
dict, each setting that does not apply at one canonical value; it is what config.json holds and
what store.settings_hash hashes), a stored config.json read back (`stored_settings`, through the
same rules), metatrace's Config (`config_of`) and a run's directory name (`run_name`).
"""
import argparse
import decimal
import json
import math
import os
import re
import sys
from typing import NamedTuple

import envs
import metatrace as mt
from store import UsageError, differing, settings_hash


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


def _families(linear, network, **other):
    return {"linear": linear, "ale": network, "minatar": network, "gym": network,
            "continuous": network, **other}


class Widths(NamedTuple):
    """Accepted values of --hidden: comma-separated layer widths."""
    lo: int = 1
    hi: int = 4096
    most: int = 8

    def words(self):
        return f"a comma list of 1 to {self.most} integers in [{self.lo}, {self.hi}]"


class Kwargs(NamedTuple):
    """Accepted values of --env-kwargs: a JSON object of gymnasium.make keyword arguments."""

    def words(self):
        return "a JSON object of keyword arguments for gymnasium.make"


CONTINUOUS_HIDDEN = (128, 128)   # docs/continuous.md: Stream AC's network, the pilot's
GYM_HIDDEN = (64, 64)       # README "Any gymnasium environment": chosen from a CartPole pilot


RUN_SETTINGS = {  # every setting that changes a result (docs/algorithms.md §6)
    "domain": Setting("mountaincar", envs.DOMAINS, "the problem: a built-in domain, any "
                      "registered gymnasium id with discrete or continuous actions (CartPole-v1, "
                      "HalfCheetah-v5, ALE/Pong-v5, ...), or gymnasium's module:id form "
                      "(pkg.module:EnvId-v0 imports pkg.module first)"),
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
    "psi": Setting(_families(_P.psi, _N.psi, continuous=0.0), mt.CONFIG_RANGES["psi"],
                   "entropy weight (0 for a Gaussian policy: its entropy has no bound, and "
                   "psi g^H drives sigma up without end; docs/continuous.md)"),
    "drift": Setting(6e-6, R(0, 1), "sign-flip rate per feature per step", "drifting"),
    "episodes": Setting(1000, R(1, 10**9, integer=True), "episodes", "linear"),
    "steps": Setting({"ale": 12_500_000, "minatar": 5_000_000, "gym": 100_000,
                      "continuous": 1_000_000},
                     R(1, 10**12, integer=True), "agent steps", "network"),
    "env_kwargs": Setting(None, Kwargs(), "keyword arguments for gymnasium.make, as JSON "
                          "('{\"sutton_barto_reward\": true}'); part of the run's settings", "gym"),
    "hidden": Setting({"gym": GYM_HIDDEN, "continuous": CONTINUOUS_HIDDEN}, Widths(), "hidden dense layers' widths (SiLU; "
                      "after the conv layers on an image)", "gym"),
    "frames": Setting(None, R(1, 4 * 10**12, integer=True),
                      "emulator frames (= 4 x agent steps), instead of --steps", "ale"),
    "no_clip_rewards": Setting(False, None, "learn from the raw game score, not rewards clipped "
                               "to [-1, 1]", "ale"),
    "minimal_actions": Setting(False, None, "the game's minimal action set (3 on Breakout, as "
                               "gymnasium's MinAtar ids and Stream AC's scripts have it), not all "
                               "6 (the MinAtar paper's)", "minatar"),
    "seed": Setting(0, R(0, 2**63 - 1, integer=True), "random seed"),
    "timeout_bootstrap": Setting(False, None, "bootstrap from the state at the time limit "
                                 "(docs/algorithms.md §1.6); off: terminal, as the paper did",
                                 "time_limited"),
    "no_alpha_bound": Setting(False, None, "NOSID without its overshoot guard "
                              "(docs/algorithms.md §4.3 N2)", "tuner"),
    **{k: Setting(p.default, p.accepted, p.help, "tuner") for k, p in mt.TUNER_PARAMS.items()},
    "activation": Setting("paper", ("paper", "leaky_relu"), "hidden units: the paper's (SiLU "
                          "convs, dSiLU dense layers on MinAtar and ALE, SiLU MLPs) or "
                          "LeakyReLU(0.01) in every hidden layer (Stream AC's and Intentional "
                          "AC's networks)", "network"),
    "towers": Setting(1, R(1, 2, integer=True), "networks: 1, a shared torso with value and "
                      "policy outputs (the paper's); 2, a critic and an actor network, each with "
                      "its own trace (docs/algorithms.md §11; the default, and the only choice, "
                      "of stream_ac and intentional)", "network"),
    "blas_threads": Setting(1, R(1, 1024, integer=True), "BLAS threads (more changes the last "
                            "digits of a network run)", "network"),
    "sparse_init": Setting(False, None, "sparse initialization: 90%% of each unit's input "
                           "weights set to 0 (Elsayed et al. 2024; docs/algorithms.md §9)",
                           "network"),
    "layer_norm": Setting(False, None, "layer normalization of every hidden layer's "
                          "pre-activation, no gain or bias (docs/algorithms.md §9)", "network"),
    "normalize_obs": Setting(_families(False, False, continuous=True), None, "observations "
                             "standardized by their running mean and variance (docs/algorithms.md "
                             "§9); on by default for continuous-action ids (docs/continuous.md, "
                             "the stabilizer pilot)", "network"),
    "scale_reward": Setting(_families(False, False, continuous=True), None, "rewards divided by "
                            "the running std of the discounted return (docs/algorithms.md §9); on "
                            "by default for continuous-action ids", "network"),
}
OPTIONS = {  # settings of the harness, which change no result
    "checkpoint_every": Setting(None, R(1, 10**9, integer=True),
                                "also checkpoint every N episodes (off by default)"),
    "checkpoint_minutes": Setting(2.0, R(0, 10**6, lo_open=True),
                                  "checkpoint every M minutes of wall time, and at every clean "
                                  "stop"),
    "seeds": Setting(1, R(1, 10_000, integer=True), "runs per setting: seeds S..S+N-1, S the "
                     "--first-seed"),
    "first_seed": Setting(0, R(0, 2**63 - 10_000, integer=True), "the first seed of a sweep "
                          "(fresh seeds for a rerun of chosen settings)"),
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
    "minatar": lambda domain, tuner: domain in envs.MINATAR_DOMAINS,
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


def flag(name, on=True):
    """The command-line spelling of a setting's name (on=False: an on/off flag's off form)."""
    return ("--" if on else "--no-") + name.replace("_", "-")


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


def family(domain, env_kwargs=None):
    """The domain family whose defaults a run takes: linear, ale, minatar, gym (discrete
    actions) or continuous (a gymnasium id with a Box action space, made with env_kwargs)."""
    if domain in envs.LINEAR_DOMAINS:
        return "linear"
    if domain in envs.MINATAR_DOMAINS:
        return "minatar"
    if domain in envs.ATARI_DOMAINS:
        return "ale"
    try:
        continuous = envs.is_gym_id(domain) and \
            envs.gym_policy(domain, **(env_kwargs or {})) == "gaussian"
    except ValueError:      # an env that cannot be made: check_domain says why
        continuous = False
    return "continuous" if continuous else "gym"


def default(name, domain, env_kwargs=None):
    """The default of a setting for a run on `domain` (made with env_kwargs)."""
    d = {**RUN_SETTINGS, **OPTIONS}[name].default
    return d.get(family(domain, env_kwargs)) if isinstance(d, dict) else d


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
    names = {"linear": "mountain car", "ale": "ALE", "minatar": "MinAtar", "gym": "gymnasium ids",
             "continuous": "continuous-action ids"}
    vals = {}
    for fam, v in d.items():
        vals.setdefault(shown(v), []).append(names[fam])
    if len(vals) == 1:
        return next(iter(vals))
    return "; ".join(f"{v} on {' and '.join(f)}" for v, f in vals.items())


def add_setting(p, name, s):
    """One argparse flag from a Setting (None = not given: the default depends on the run)."""
    where = {"all": "", "linear": "mountain car: ", "drifting": "drifting_mountaincar: ",
             "network": "network domains: ", "ale": "ALE: ", "minatar": "MinAtar: ",
             "time_limited": "mountain car, "
             "ALE and gymnasium ids: ", "gym": "gymnasium ids: "}
    owners = ", ".join(t.name for t in mt.TUNER_TABLE if name in t.params)
    text = (f"{owners}: " if s.where == "tuner" else where[s.where]) + s.help
    if name == "domain":
        p.add_argument(flag(name), default=None, metavar="DOMAIN",
                       help=f"{text} (default {s.default}; built in: {', '.join(s.accepted)})")
    elif isinstance(s.accepted, Kwargs):
        p.add_argument(flag(name), default=None, metavar="JSON", help=f"{text}; {s.accepted.words()}")
    elif isinstance(s.accepted, Widths):
        p.add_argument(flag(name), default=None, metavar="W1,W2",
                       help=f"{text} (default {default_words(name)}); {s.accepted.words()}")
    elif s.accepted is None:               # an on/off flag; --no-X too where its default varies
        action = argparse.BooleanOptionalAction if isinstance(s.default, dict) else "store_true"
        p.add_argument(flag(name), action=action, default=None, help=text)
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


def prog():
    """The command's name in usage lines and errors: metatrace when run as the installed
    command, run.py otherwise."""
    return "metatrace" if os.path.basename(sys.argv[0]) == "metatrace" else "run.py"


def run_parser(description=None):
    """Flags of a single run, generated from RUN_SETTINGS and OPTIONS; None = not given.
    description: the usage text of --help (run.py's docstring)."""
    p = Parser(prog=prog(), description=description,
               formatter_class=argparse.RawDescriptionHelpFormatter)
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
    typed = flag(name, getattr(args, name, None) is not False)      # --no-X where it was given so
    raise UsageError(f"{typed} does not apply to {why}{hint}")


def settings(args, strict=True, user=True):
    """The validated settings of a run as a plain dict: every setting that changes a result,
    with the ones that do not apply to the domain and tuner at one canonical value.
    strict: a flag given that does not apply is an error (a single run; a sweep checks itself).
    user: the flags are the user's own (a command line), so a module:id domain may import its
    module; False for settings read from a file (stored_settings), which never import code."""
    domain, tuner = args.domain, tuner_of(args)
    if user:
        envs.allow_module(domain)
    kwargs = parse_env_kwargs(args.env_kwargs) if args.env_kwargs is not None else None
    check_domain(domain, kwargs)
    for k in NUMBERS + DOMAIN_FLAGS:       # a malformed value is reported before anything else
        if k in RANGES and isinstance(getattr(args, k, None), str):
            checked(k, getattr(args, k))
    if strict and inapplicable(args):
        refuse(inapplicable(args), args)

    def value(k):
        given = getattr(args, k)
        return checked(k, given) if isinstance(given, str) else default(k, domain, kwargs)

    def on(k):                             # an on/off flag (its default if not given), where
        given = getattr(args, k)           # it applies
        return bool(default(k, domain, kwargs) if given is None else given) and \
            applies(k, domain, tuner)
    s = {k: value(k) for k in NUMBERS}
    if not mt.TUNER[tuner].meta:           # mu changes nothing there: one canonical value
        s["mu"] = default("mu", domain, kwargs)
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
        if on("minimal_actions"):           # only when on, so other runs keep their identity
            s["minimal_actions"] = True
        towers = value("towers") if args.towers is not None else \
            (2 if mt.TUNER[tuner].two_tower else 1)      # a per-tower tuner's default is 2
        if towers == 2:                     # only when 2, so one-tower runs keep their identity
            s["towers"] = 2
        if args.activation not in (None, "paper"):     # likewise
            s["activation"] = args.activation
        if envs.is_gym_id(domain):          # only here, so built-in runs keep their identity
            s["hidden"] = list(parse_widths(args.hidden) if args.hidden is not None
                               else default("hidden", domain, kwargs))
            if kwargs is not None:          # only when given, so other runs keep their identity
                s["env_kwargs"] = kwargs
    else:
        s.update(episodes=value("episodes"))
    if mt.TUNER[tuner].two_tower and s.get("towers") != 2:
        raise UsageError(f"--tuner {tuner} keeps a state per tower: it runs on network domains, "
                         "on two towers (--towers 2, its default; docs/algorithms.md §11-§12)")
    try:
        mt.check_config(config_of(s))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return s


SWITCHES = {"normalized": "unnormalized", "timeout_bootstrap": "timeout_bootstrap",
            "nosid_alpha_bound": "no_alpha_bound", "clip_rewards": "no_clip_rewards",
            "minimal_actions": "minimal_actions",
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
        elif k == "activation":
            if v not in RUN_SETTINGS["activation"].accepted:
                bad(f"setting activation is {v!r}, not one of "
                    f"{', '.join(RUN_SETTINGS['activation'].accepted)}")
            argv += ["--activation", v]
        elif k == "env_kwargs":
            if not isinstance(v, dict):
                bad(f"setting env_kwargs is {v!r}, not a table")
            argv += ["--env-kwargs", json.dumps(v)]
        elif k in RANGES and v is not None:
            if type(v) not in (int, float) or (RANGES[k].integer and type(v) is not int):
                bad(f"setting {k} is {v!r}, not {'an integer' if RANGES[k].integer else 'a number'}")
            if not complete and not RANGES[k].ok(v):
                bad(f"setting {k} = {v!r} is outside the accepted range {RANGES[k].words()}")
            if (k == "mu" and not mt.TUNER[s["tuner"]].meta) or (k == "drift" and v == 0.0):
                continue                   # canonical where they do not apply: compared below
            argv += [flag(k), repr(v)]
    if not complete:
        if type(s.get("seed")) is not int:
            bad(f"setting seed is {s.get('seed', '(absent)')!r}, not an integer")
        return s
    for k in STABILIZERS:                  # off (absent) where the domain's default is on
        if k not in s and default(k, s["domain"], s.get("env_kwargs")) is True:
            argv.append(flag(k, on=False))
    try:
        again = settings(run_parser().parse_args(argv), user=False)
    except (UsageError, SystemExit) as e:
        bad(str(e) if isinstance(e, UsageError) else "its settings are not flags of a run")
    k = differing(s, again)
    if k is not None:
        bad(f"setting {k} is {s.get(k, '(absent)')!r} where a run of these settings has "
            f"{again.get(k, '(absent)')!r}")
    return s


def check_domain(domain, kwargs=None):
    """UsageError unless `domain` is built in or a usable gymnasium id (envs.check_gym_id), made
    with `kwargs` (--env-kwargs) where given."""
    if domain not in envs.DOMAINS:
        try:
            envs.check_gym_id(domain, **(kwargs or {}))
        except ValueError as e:
            raise UsageError(f"--domain: {e}") from None


def parse_env_kwargs(text):
    """--env-kwargs JSON -> dict; UsageError naming the value and the accepted form."""
    try:
        return envs.check_env_kwargs(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


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
    meta += ("-2t" if s.get("towers") == 2 else "") + \
        ("-lrelu" if s.get("activation") == "leaky_relu" else "")
    return (f"{s['domain']}-{s['tuner']}{norm}-a{p2(s['alpha'])}{meta}-s{s['seed']}-"
            f"{settings_hash(s)}")

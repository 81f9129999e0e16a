"""The benchmark of docs/benchmark.md: which online step-size method for streaming actor-critic.

    python docs/benchmark.py all [SUITE] [--workers 2]          every cell in order (resumable)
    python docs/benchmark.py commands PHASE SUITE --root DIR    the sweeps of one cell, one a line
    python docs/benchmark.py run PHASE SUITE --root DIR [--queue I/N]   run them (resumable)
    python docs/benchmark.py compact PHASE SUITE --root DIR     -> docs/figures/bench_*_runs.csv
    python docs/benchmark.py select SUITE                       the pilot's choice per arm
    python docs/benchmark.py report                             tables and figures from the CSVs

PHASE is `pilot` (seeds 1000-1002, the shorter budget, every setting of an arm's grid) or `eval`
(fresh seeds 0..N-1, the full budget, the one setting `select` chose on the pilot).  Every arm
gets the same number of settings.  A cell is one (phase, suite, arm); `run` runs each cell's sweeps
with `run.py sweep`, which skips finished runs and resumes the others, so a killed `run` goes on
where it stopped.  The compact CSVs hold one row per run and BIN-step bin; everything in
docs/benchmark.md is drawn from them alone.
"""
import argparse
import collections
import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIGURES = os.path.join(HERE, "figures")

STABILIZERS = ("--sparse-init", "--layer-norm", "--normalize-obs", "--scale-reward")
UNSTABILIZED = ("--no-normalize-obs", "--no-scale-reward")      # on by default on MuJoCo

Arm = collections.namedtuple("Arm", "name tuner stabilized towers activation fixed grid")
# fixed: flags every run of the arm takes; grid: its settings, each a dict flag -> value (or
# {suite: settings} where the suites differ: Intentional AC's eta_pi is centred on the default of
# its authors' continuous code, 0.05, on MuJoCo, and lower on MinAtar, where 0.05 collapses).
# fixed may be {suite: flags} too: on MuJoCo Stream AC and Intentional AC keep their authors'
# entropy weight 0.01 (their signed entropy term), the one-tower arms this project's 0.
# Metatrace and untuned AC(lambda) run as the paper does (one tower, its activations); Stream AC
# and Intentional AC as their authors do (two towers, LeakyReLU).  Every arm has 5 settings.
POWERS = ("2^-6", "2^-8", "2^-10", "2^-12", "2^-14")
ARMS = (
    Arm("none+stab", "none", True, 1, "paper", (), tuple({"alpha": a} for a in POWERS)),
    Arm("mixed+stab", "mixed", True, 1, "paper", ("--alpha", "2^-6"),
        tuple({"mu": m} for m in POWERS)),
    Arm("stream_ac", "stream_ac", True, 2, "leaky_relu",
        {"minatar": ("--alpha", "1"), "mujoco": ("--alpha", "1", "--psi", "0.01")},
        tuple({"kappa": f"{2 * f:g}", "kappa_pi": f"{3 * f:g}"}
              for f in (0.125, 0.25, 0.5, 1, 2))),
    Arm("intentional", "intentional", True, 2, "leaky_relu", {"minatar": (), "mujoco": ("--psi", "0.01")},
        {"minatar": tuple({"eta_pi": e} for e in ("0.001", "0.002", "0.005", "0.01", "0.02")),
         "mujoco": tuple({"eta_pi": e} for e in ("0.0125", "0.025", "0.05", "0.1", "0.2"))}),
    Arm("none", "none", False, 1, "paper", (), tuple({"alpha": a} for a in POWERS)),
    Arm("mixed", "mixed", False, 1, "paper", ("--alpha", "2^-6"),
        tuple({"mu": m} for m in POWERS)),
    Arm("scalar+stab", "scalar", True, 1, "paper", ("--alpha", "2^-6"),
        tuple({"mu": m} for m in POWERS)),
)
ARM = {a.name: a for a in ARMS}
ARM_ORDER = {a.name: i for i, a in enumerate(ARMS)}

Suite = collections.namedtuple("Suite", "name domains pilot_steps eval_steps eval_seeds bin flags")
SUITES = {
    "minatar": Suite("minatar", tuple(f"minatar-{g}" for g in
                                      ("asterix", "breakout", "freeway", "seaquest",
                                       "space_invaders")),
                     100_000, 500_000, 10, 10_000, ()),
    "mujoco": Suite("mujoco", ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"),
                    200_000, 1_000_000, 5, 20_000, ("--timeout-bootstrap",)),
}
PILOT_SEEDS = (1000, 3)           # first seed, seeds
FINAL = 0.2                       # the final score: episodes ending in the last 20 % of the budget


def setting_label(setting):
    """'kappa=0.5,kappa_pi=0.75': a setting as one string (a directory name and a CSV value)."""
    return ",".join(f"{k}={v}" for k, v in setting.items())


def flags(setting):
    """A setting as run.py flags."""
    return [x for k, v in setting.items() for x in (f"--{k.replace('_', '-')}", v)]


def sweeps(phase, suite, root, chosen=None):
    """[(arm, label, directory, argv)]: the run.py sweeps of a phase.  Pilot: one per arm and
    setting over every task (the arm's grid, and the extensions `select` asked for where a best
    lay on an edge).  Evaluation: one per task and arm, task by task, so that each finished task
    holds every arm."""
    s = SUITES[suite]
    chosen = chosen or {}
    if phase == "pilot":
        todo = [(arm, st, s.domains) for arm in ARMS for st in pilot_grid(arm, suite)]
    else:
        todo = [(arm, chosen[arm.name], (d,)) for d in s.domains for arm in ARMS
                if arm.name in chosen]
    out = []
    for arm, setting, domains in todo:
        label = setting_label(setting)
        d = os.path.join(root, phase, suite, arm.name, label, *domains[:phase == "eval"])
        first, n = PILOT_SEEDS if phase == "pilot" else (0, s.eval_seeds)
        argv = ["run.py", "sweep", "--domain", ",".join(domains), "--tuner", arm.tuner,
                "--towers", str(arm.towers), "--activation", arm.activation,
                *(STABILIZERS if arm.stabilized else UNSTABILIZED), *s.flags,
                *(arm.fixed[suite] if isinstance(arm.fixed, dict) else arm.fixed),
                *flags(setting),
                "--steps", str(s.pilot_steps if phase == "pilot" else s.eval_steps),
                "--first-seed", str(first), "--seeds", str(n), "--workers", "1", "--quiet",
                "--out", d]
        out.append((arm.name, label, d, argv))
    return out


# ------------------------------------------------------------------------------ the random policy

RANDOM_STEPS = 100_000


def random_path():
    """docs/figures/bench_random.csv: the uniform random policy's mean episode score per task."""
    return os.path.join(FIGURES, "bench_random.csv")


def measure_random(domain, steps=RANDOM_STEPS, seed=0):
    """(episodes, mean score) of uniformly random actions for `steps` steps (complete episodes)."""
    sys.path.insert(0, REPO)
    import envs
    env = envs.make(domain, seed=seed)
    env.action_space.seed(seed)
    env.reset()
    total, n, score = 0.0, 0, 0.0
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        score += info.get("score", 0.0)
        if terminated or truncated:
            total, n, score = total + score, n + 1, 0.0
            env.reset()
    env.close()
    return n, total / max(n, 1)


def random_scores():
    """{domain: the random policy's mean score} from bench_random.csv."""
    with open(random_path(), newline="") as f:
        return {r["domain"]: float(r["mean_score"]) for r in csv.DictReader(f)}


def write_random(suite):
    """Measure and record the random policy on every task of a suite (other suites' rows kept)."""
    rows = {}
    if os.path.exists(random_path()):
        with open(random_path(), newline="") as f:
            rows = {r["domain"]: r for r in csv.DictReader(f)}
    for domain in SUITES[suite].domains:
        n, mean = measure_random(domain)
        rows[domain] = dict(domain=domain, steps=RANDOM_STEPS, episodes=n, mean_score=f"{mean:.6g}")
        print(f"{domain}: {n} episodes, mean score {mean:.4g}")
    with open(random_path(), "w", newline="") as f:
        w = csv.DictWriter(f, ("domain", "steps", "episodes", "mean_score"), lineterminator="\n")
        w.writeheader()
        w.writerows(rows[d] for d in sorted(rows))
    return 0


# ------------------------------------------------------------------------------ statistics
# rliable (Agarwal et al. 2021) installs beside the requirements but does not import (arch 7.2's
# deprecate_kwarg fails under pandas 3), so its measures are computed here, and their intervals
# with scipy.stats.bootstrap: percentile intervals, every task's runs resampled on their own
# (the stratified bootstrap).

def iqm(x, axis=-1):
    """Interquartile mean: the mean of the middle 50 % (scipy's trim_mean, 25 % off each end)."""
    from scipy import stats
    return stats.trim_mean(x, 0.25, axis=axis)


def optimality_gap(x, axis=-1, gamma=1.0):
    """gamma - mean(min(x, gamma)): how far the runs fall short of the normalized score gamma."""
    return gamma - np.mean(np.minimum(x, gamma), axis=axis)


def poi_task(x, y):
    """P(X > Y) + P(X = Y)/2 over every pair of a run of X and a run of Y (last axes: runs)."""
    x, y = np.asarray(x)[..., :, None], np.asarray(y)[..., None, :]
    return np.mean((x > y) + 0.5 * (x == y), axis=(-2, -1))


def probability_of_improvement(xs, ys):
    """The mean over tasks of poi_task: X's runs against Y's, task by task."""
    return np.mean([poi_task(x, y) for x, y in zip(xs, ys)], axis=0)


def stratified_ci(statistic, samples, n_resamples=5000, seed=0):
    """95 % percentile interval of statistic(*samples), each sample resampled independently."""
    from scipy import stats
    r = stats.bootstrap(tuple(np.asarray(x, float) for x in samples), statistic, paired=False,
                        vectorized=True, axis=-1, n_resamples=n_resamples, method="percentile",
                        random_state=np.random.default_rng(seed))
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


def aggregate(tasks, n_resamples=5000, seed=0):
    """IQM and optimality gap of one method's normalized scores, with 95 % stratified intervals.
    tasks: one array of normalized per-run scores per task."""
    def stat_iqm(*xs, axis=-1):
        return iqm(np.concatenate(xs, axis=axis), axis=axis)

    def stat_gap(*xs, axis=-1):
        return optimality_gap(np.concatenate(xs, axis=axis), axis=axis)

    flat = np.concatenate([np.asarray(x, float) for x in tasks])
    return dict(iqm=float(iqm(flat)), iqm_ci=stratified_ci(stat_iqm, tasks, n_resamples, seed),
                gap=float(optimality_gap(flat)),
                gap_ci=stratified_ci(stat_gap, tasks, n_resamples, seed))


def poi_ci(xs, ys, n_resamples=5000, seed=0):
    """P(X > Y) with its 95 % stratified interval (every task's runs of each resampled)."""
    t = len(xs)

    def stat(*zs, axis=-1):
        return probability_of_improvement(zs[:t], zs[t:])

    p = float(probability_of_improvement(xs, ys))
    return p, stratified_ci(stat, (*xs, *ys), n_resamples, seed)


def mean_ci(x, n_resamples=5000, seed=0):
    """(mean, 95 % percentile bootstrap interval) of one task's per-run scores."""
    x = np.asarray(x, float)
    return float(np.mean(x)), stratified_ci(lambda v, axis=-1: np.mean(v, axis=axis), (x,),
                                            n_resamples, seed)


def welch(x, y):
    """Welch's t-test: (difference of means, p) of two independent samples."""
    from scipy import stats
    return float(np.mean(x) - np.mean(y)), float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def holm(ps):
    """Holm-Bonferroni adjusted p-values, in the order given."""
    ps = np.asarray(ps, float)
    order = np.argsort(ps)
    adj = np.empty_like(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adj[i] = running
    return adj


def normalize(score, random, best):
    """(score - random) / (best - random): 0 the random policy, 1 the best arm's mean on the task."""
    return (np.asarray(score, float) - random) / (best - random)


def performance_profile(tasks, taus):
    """The fraction of all runs (tasks pooled, each task weighted equally) whose normalized score
    exceeds each tau."""
    return np.mean([[np.mean(np.asarray(x) > t) for t in taus] for x in tasks], axis=0)


# ------------------------------------------------------------------------------ the pilot's choice

MAX_EXTENSIONS = 2       # settings added past one edge of an arm's grid, one at a time
SCALAR_MARGIN = 0.05     # scalar+stab is evaluated if its pilot score is within this of mixed's


def value_of(v):
    """A setting's value as a float ('2^-6' too)."""
    if "^" in v:
        b, k = v.split("^")
        return float(b) ** float(k)
    return float(v)


def beyond(edge, neighbour):
    """The setting one grid step past `edge`, away from `neighbour` (each value times the ratio;
    a power of 2 stays one)."""
    out = {}
    for k, v in edge.items():
        if "^" in v and "^" in neighbour[k]:
            e, n = int(v.split("^")[1]), int(neighbour[k].split("^")[1])
            out[k] = f"2^{2 * e - n}"
        else:
            out[k] = f"{value_of(v) ** 2 / value_of(neighbour[k]):.6g}"
    return out


def pilot_table(suite):
    """{arm: {label: (mean normalized pilot score over tasks, {domain: mean raw final score})}},
    and the list of (domain, arm, label) whose pilot runs are missing."""
    s = SUITES[suite]
    rand = random_scores()
    finals, missing = {}, []
    for d in s.domains:
        path = compact_path("pilot", d)
        finals[d] = final_scores(read_compact(path), rand[d]) if os.path.exists(path) else {}
    best = {d: max((np.mean(list(v.values())) for v in finals[d].values()), default=np.nan)
            for d in s.domains}
    out = {}
    for arm in ARMS:
        out[arm.name] = {}
        for setting in pilot_grid(arm, suite):
            label, raw = setting_label(setting), {}
            for d in s.domains:
                got = finals[d].get((arm.name, label), {})
                if len(got) < PILOT_SEEDS[1]:
                    missing.append((d, arm.name, label))
                    continue
                raw[d] = float(np.mean(list(got.values())))
            norm = [float(normalize(raw[d], rand[d], best[d])) for d in raw]
            out[arm.name][label] = (float(np.mean(norm)) if len(raw) == len(s.domains)
                                    else float("nan"), raw)
    return out, missing


def select(suite):
    """Choose each arm's setting: the best mean normalized pilot score over the suite's tasks.  A
    best on the edge of the arm's settings asks for the next setting past it (up to
    MAX_EXTENSIONS a side); the choice stays pending until those are piloted."""
    table, missing = pilot_table(suite)
    old = read_choice(suite)
    out = {}
    for arm in ARMS:
        settings = pilot_grid(arm, suite)
        vals = table[arm.name]
        exts = list(old.get(arm.name, {}).get("extensions", []))
        if any(math.isnan(v) for v, _ in vals.values()):
            out[arm.name] = dict(setting=None, extensions=exts, pilot={k: v for k, (v, _) in
                                                                      vals.items()})
            continue
        order = sorted(settings, key=lambda st: value_of(next(iter(st.values()))))
        best = max(order, key=lambda st: vals[setting_label(st)][0])
        i = order.index(best)
        first = [value_of(next(iter(st.values()))) for st in grid_of(arm, suite)]
        below = [e for e in exts if value_of(next(iter(e.values()))) < min(first)]
        above = [e for e in exts if value_of(next(iter(e.values()))) > max(first)]
        pending = []
        if i == 0 and len(below) < MAX_EXTENSIONS:
            pending.append(beyond(order[0], order[1]))
        if i == len(order) - 1 and len(above) < MAX_EXTENSIONS:
            pending.append(beyond(order[-1], order[-2]))
        out[arm.name] = dict(setting=best, label=setting_label(best),
                             pilot={k: v for k, (v, _) in vals.items()},
                             per_task={k: raw for k, (_, raw) in vals.items()},
                             extensions=exts + pending, extensions_pending=bool(pending))
    mixed, scalar = out.get("mixed+stab", {}), out.get("scalar+stab", {})
    if scalar.get("label") and mixed.get("label"):
        scalar["evaluate"] = (scalar["pilot"][scalar["label"]] >=
                              mixed["pilot"][mixed["label"]] - SCALAR_MARGIN)
    with open(choice_path(suite), "w") as f:
        json.dump(out, f, indent=1)
    for name, c in out.items():
        state = ("incomplete pilot" if c["setting"] is None else
                 "not evaluated (its pilot score is below mixed+stab's by more than "
                 f"{SCALAR_MARGIN})" if c.get("evaluate") is False else
                 "pending: pilot " + ", ".join(setting_label(e) for e in c["extensions"][-2:])
                 if c.get("extensions_pending") else "chosen")
        print(f"{name:12s} {c.get('label', '-'):28s} {state}")
    if missing:
        print(f"{len(missing)} (task, arm, setting) cells lack pilot runs", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------ the compact files

FIELDS = ("domain", "arm", "tuner", "stabilized", "towers", "activation", "setting", "seed",
          "budget", "bin", "episodes", "mean_score", "mean_entropy", "seconds", "diverged")


def compact_path(phase, domain):
    """docs/figures/bench_<task>_runs.csv (eval) or bench_pilot_<task>_runs.csv."""
    return os.path.join(FIGURES, f"bench_{'pilot_' if phase == 'pilot' else ''}{domain}_runs.csv")


def run_rows(run_dir, arm, label, bin_steps):
    """The compact rows of one finished or diverged run: one per BIN-step bin that has an episode
    ending in it (complete episodes only; a diverged run's bins stop where it stopped)."""
    with open(os.path.join(run_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("status") not in ("finished", "diverged"):
        return None
    st = cfg["settings"]
    with open(os.path.join(run_dir, "episodes.csv"), newline="") as f:
        eps = list(csv.DictReader(f))
    with open(os.path.join(run_dir, "timing.csv"), newline="") as f:
        seconds = {r["episode"]: float(r["seconds"]) for r in csv.DictReader(f)}
    diverged = cfg["status"] == "diverged"
    bins = collections.OrderedDict()
    for r in eps:
        b = -(-int(r["steps"]) // bin_steps) * bin_steps       # the bin's last step
        k = bins.setdefault(b, [0, 0.0, 0.0, 0.0, 0])
        k[3] += seconds.get(r["episode"], 0.0)
        if r["complete"] == "1" and r["diverged"] != "1":
            k[0] += 1
            k[1] += float(r["score"])
            k[2] += float(r.get("entropy") or "nan")
        k[4] |= r["diverged"] == "1"
    if diverged and bins:
        bins[next(reversed(bins))][4] = 1
    out = []
    for b, (n, score, ent, sec, div) in bins.items():
        out.append(dict(domain=st["domain"], arm=arm, tuner=st["tuner"],
                        stabilized=int(st.get("layer_norm", False)), towers=st.get("towers", 1),
                        activation=st.get("activation", "paper"), setting=label, seed=st["seed"],
                        budget=st["steps"], bin=b, episodes=n,
                        mean_score=f"{score / n:.6g}" if n else "",
                        mean_entropy=f"{ent / n:.4g}" if n else "", seconds=f"{sec:.4g}",
                        diverged=int(div)))
    return out


def compact(phase, suite, root):
    """Write the compact CSV of each task of a cell from its run directories; a summary line."""
    s = SUITES[suite]
    rows = collections.defaultdict(list)
    n_runs = unfinished = 0
    for arm, label, d, _ in sweeps(phase, suite, root, chosen_settings(suite)):
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            run_dir = os.path.join(d, name)
            if not os.path.exists(os.path.join(run_dir, "config.json")):
                continue
            got = run_rows(run_dir, arm, label, s.bin)
            if got is None:
                unfinished += 1
                continue
            n_runs += 1
            if got:
                rows[got[0]["domain"]].extend(got)
    for domain in s.domains:
        if not rows[domain]:
            continue
        with open(compact_path(phase, domain), "w", newline="") as f:
            w = csv.DictWriter(f, FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(sorted(rows[domain], key=lambda r: (ARM_ORDER[r["arm"]], r["setting"],
                                                           r["seed"], r["bin"])))
    print(f"{phase} {suite}: {n_runs} runs compacted, {unfinished} not finished")
    return 0


def read_compact(path):
    """The rows of a compact CSV, numbers as numbers."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("seed", "budget", "bin", "episodes", "towers", "stabilized", "diverged"):
            r[k] = int(r[k])
        for k in ("mean_score", "mean_entropy", "seconds"):
            r[k] = float(r[k]) if r[k] != "" else float("nan")
    return rows


def final_scores(rows, random_score):
    """{(arm, setting): {seed: final score}}: the mean score of the complete episodes ending in the
    last FINAL of the budget; a run that diverged, or has no such episode, scores random_score."""
    runs = collections.defaultdict(list)
    for r in rows:
        runs[(r["arm"], r["setting"], r["seed"])].append(r)
    out = collections.defaultdict(dict)
    for (arm, setting, seed), rs in runs.items():
        budget = rs[0]["budget"]
        last = [r for r in rs if r["bin"] > budget * (1 - FINAL) and r["episodes"]]
        n = sum(r["episodes"] for r in last)
        bad = any(r["diverged"] for r in rs) or n == 0
        out[(arm, setting)][seed] = (random_score if bad else
                                     sum(r["episodes"] * r["mean_score"] for r in last) / n)
    return out


def run_cell(phase, suite, root, queue, chosen):
    """Run this queue's share (every N-th sweep, from the I-th) of a cell's sweeps, in order."""
    i, n = queue
    return run_parallel(sweeps(phase, suite, root, chosen)[i::n], 1)


def choice_path(suite):
    """docs/figures/bench_choice_<suite>.json: select's choice per arm, and the grid extensions."""
    return os.path.join(FIGURES, f"bench_choice_{suite}.json")


def read_choice(suite):
    """The choice file's content ({} before the first select)."""
    if not os.path.exists(choice_path(suite)):
        return {}
    with open(choice_path(suite)) as f:
        return json.load(f)


def grid_of(arm, suite):
    """The arm's grid on a suite."""
    return tuple(arm.grid[suite] if isinstance(arm.grid, dict) else arm.grid)


def pilot_grid(arm, suite):
    """The arm's settings in the pilot: its grid and the extensions select asked for."""
    ext = read_choice(suite).get(arm.name, {}).get("extensions", [])
    return grid_of(arm, suite) + tuple(ext)


def run_parallel(todo, workers, after_each=lambda: None):
    """Run the sweeps of todo, `workers` at a time; after_each() whenever one ends.  Returns
    the first exit status other than 0 (a sweep with a diverged run) and 1, else 0."""
    running, status, queue = [], 0, list(todo)
    while queue or running:
        while queue and len(running) < workers:
            arm, label, _, argv = queue.pop(0)
            print(f"start {arm} {label} {argv[argv.index('--domain') + 1]}", flush=True)
            running.append(subprocess.Popen([sys.executable, *argv], cwd=REPO))
        done = [p for p in running if p.poll() is not None]
        if not done:
            time.sleep(2)
            continue
        for p in done:
            running.remove(p)
            if p.returncode not in (0, 1):
                print(f"benchmark.py: {shlex.join(p.args[1:])} exited {p.returncode}",
                      file=sys.stderr)
                status = status or p.returncode
        after_each()
    return status


def run_all(root, workers, suites):
    """Every cell in the design's order: per suite the pilot (and its extensions, as select
    asks), then the evaluation, compacting after each sweep.  Resumable like `run`."""
    for suite in suites:
        for _ in range(1 + 2 * MAX_EXTENSIONS):
            if run_parallel(sweeps("pilot", suite, root), workers):
                return 1
            compact("pilot", suite, root)
            select(suite)
            if not any(c.get("extensions_pending") for c in read_choice(suite).values()):
                break
        short_of = [a for a, c in read_choice(suite).items()
                    if not c.get("setting") or c.get("extensions_pending")]
        if short_of:
            print(f"benchmark.py: {suite}: no setting chosen for {', '.join(short_of)} (a pilot "
                  "run missing or failed?); the evaluation waits", file=sys.stderr)
            return 1
        if run_parallel(sweeps("eval", suite, root, chosen_settings(suite)), workers,
                        lambda: compact("eval", suite, root)):
            return 1
    return 0


def chosen_settings(suite):
    """{arm: setting} chosen on the pilot, from docs/figures/bench_choice_<suite>.json."""
    return {k: v["setting"] for k, v in read_choice(suite).items()
            if v.get("setting") and not v.get("extensions_pending") and v.get("evaluate", True)}


# ------------------------------------------------------------------------------ the report

BLOCK = re.compile(r"(<!-- bench: (\w+) -->\n)(.*?)(<!-- /bench -->)", re.S)   # not tables.py's
MINUS = "\u2212"


def fmt(x, digits=2):
    """x with a true minus sign; '–' for NaN."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}".replace("-", MINUS)


def table_md(head, rows):
    """A markdown table."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def short(domain):
    """minatar-space_invaders -> Space Invaders; HalfCheetah-v5 -> HalfCheetah."""
    return (domain[len("minatar-"):].replace("_", " ").title() if domain.startswith("minatar-")
            else domain.split("-v")[0])


def pilot_block(suite):
    """The pilot: each arm's mean normalized score per setting (the choice in bold), its spread
    over the settings, and the choice's mean raw score per task."""
    table, missing = pilot_table(suite)
    choice = read_choice(suite)
    doms = SUITES[suite].domains
    rows = []
    for arm in ARMS:
        vals = table[arm.name]
        c = choice.get(arm.name, {})
        cells = []
        for label, (v, _) in vals.items():
            text = f"{label.replace('=', ' ')}: {fmt(v)}"
            cells.append(f"**{text}**" if label == c.get("label") else text)
        finite = [v for v, _ in vals.values() if math.isfinite(v)]
        spread = max(finite) - min(finite) if len(finite) == len(vals) and finite else float("nan")
        raw = vals.get(c.get("label"), (None, {}))[1]
        state = (" (pending: settings past the edge)" if c.get("extensions_pending") else "")
        rows.append([arm.name, "; ".join(cells) + state, fmt(spread)]
                    + [fmt(raw.get(d, float("nan")), 1) for d in doms])
    head = ["arm", "setting: mean normalized pilot score (chosen in bold)", "spread"] + \
        [f"{short(d)} (chosen)" for d in doms]
    note = f"\n{len(missing)} (task, arm, setting) cells still lack their pilot runs.\n" if missing else ""
    return table_md(head, rows) + note


HEADLINE_PAIRS = (("mixed+stab", "none+stab"), ("mixed+stab", "stream_ac"),
                  ("mixed+stab", "intentional"), ("intentional", "stream_ac"),
                  ("stream_ac", "none+stab"), ("intentional", "none+stab"),
                  ("none+stab", "none"), ("mixed+stab", "mixed"), ("scalar+stab", "mixed+stab"))


def eval_finals(suite):
    """{domain: {arm: np.array of per-seed final scores}} of the evaluation, the random policy's
    scores, and {(domain, arm): runs that diverged}."""
    rand = random_scores()
    out, diverged = {}, collections.Counter()
    for d in SUITES[suite].domains:
        path = compact_path("eval", d)
        if not os.path.exists(path):
            continue
        rows = read_compact(path)
        got = final_scores(rows, rand[d])
        out[d] = {arm: np.array([v[k] for k in sorted(v)]) for (arm, _), v in got.items()}
        for r in rows:
            diverged[(d, r["arm"])] += r["diverged"]
    return out, rand, diverged


def eval_blocks(suite):
    """The evaluation's tables: per task mean [95 % CI] (seeds, and runs diverged), the aggregate
    IQM and optimality gap, P(X > Y) for every pair, the headline pairs per task, speed and
    progress; {} before any evaluation run."""
    finals, rand, div = eval_finals(suite)
    if not finals:
        return {}
    doms, arms = complete(suite, finals)
    progress = table_md(["task"] + [a.name for a in ARMS if a.name in chosen_settings(suite)],
                        [[short(d)] + [f"{len(finals.get(d, {}).get(a, ()))}/"
                                       f"{SUITES[suite].eval_seeds}"
                                       for a in chosen_settings(suite)]
                         for d in SUITES[suite].domains])
    if not doms:
        return {f"bench_{suite}_progress": progress}
    rows = []
    for a in arms:
        cells = []
        for d in doms:
            m, (lo, hi) = mean_ci(finals[d][a])
            k = f", {div[(d, a)]} diverged" if div[(d, a)] else ""
            cells.append(f"{fmt(m, 1)} [{fmt(lo, 1)}, {fmt(hi, 1)}] ({len(finals[d][a])}{k})")
        rows.append([a] + cells)
    per_task = table_md(["arm"] + [short(d) for d in doms], rows)
    best = {d: max(np.mean(finals[d][a]) for a in arms) for d in doms}
    norm = {a: [normalize(finals[d][a], rand[d], best[d]) for d in doms] for a in arms}
    agg_rows = []
    for a in arms:
        g = aggregate(norm[a])
        agg_rows.append([a, f"{fmt(g['iqm'])} [{fmt(g['iqm_ci'][0])}, {fmt(g['iqm_ci'][1])}]",
                         f"{fmt(g['gap'])} [{fmt(g['gap_ci'][0])}, {fmt(g['gap_ci'][1])}]"])
    agg = table_md(["arm", "IQM [95 % CI]", "optimality gap [95 % CI]"], agg_rows)
    poi_rows = []
    for i, x in enumerate(arms):
        for y in arms[i + 1:]:
            p, (lo, hi) = poi_ci(norm[x], norm[y])
            sep = "yes" if lo > 0.5 or hi < 0.5 else "no"
            poi_rows.append([f"{x} > {y}", f"{fmt(p)} [{fmt(lo)}, {fmt(hi)}]", sep])
    poi = table_md(["claim", "P(X > Y) [95 % CI]", "separable"], poi_rows)
    pairs = [(x, y) for x, y in HEADLINE_PAIRS if x in arms and y in arms]
    task_rows = [[f"{x} − {y}"] for x, y in pairs]
    for d in doms:
        tests = [welch(finals[d][x], finals[d][y]) for x, y in pairs]
        adj = holm([p for _, p in tests]) if tests else []
        for row, (diff, _), q in zip(task_rows, tests, adj):
            text = f"{fmt(diff, 1)} (p {q:.2g})".replace("-", MINUS)
            row.append(f"**{text}**" if q < 0.05 else text)
    claims = table_md(["difference of means"] + [short(d) for d in doms], task_rows)
    return {f"bench_{suite}_tasks": per_task, f"bench_{suite}_aggregate": agg,
            f"bench_{suite}_poi": poi, f"bench_{suite}_claims": claims,
            f"bench_{suite}_speed": speed_block(suite), f"bench_{suite}_progress": progress}


def complete(suite, finals):
    """(tasks, arms): the tasks on which every chosen arm has all its evaluation seeds, and those
    arms (the statistics use complete tasks only)."""
    arms = [a.name for a in ARMS if a.name in chosen_settings(suite)]
    n = SUITES[suite].eval_seeds
    doms = [d for d in SUITES[suite].domains
            if d in finals and all(len(finals[d].get(a, ())) == n for a in arms)]
    return doms, arms


def run_rates(phase, suite):
    """{(arm, task): [agent steps/s of each run that did not diverge]}: budget / its episodes'
    wall seconds, from a phase's compact files."""
    rates = collections.defaultdict(list)
    for d in SUITES[suite].domains:
        path = compact_path(phase, d)
        if not os.path.exists(path):
            continue
        runs = collections.defaultdict(list)
        for r in read_compact(path):
            runs[(r["arm"], r["setting"], r["seed"])].append(r)
        for (arm, _, _), rs in runs.items():
            if not any(r["diverged"] for r in rs):
                rates[(arm, d)].append(rs[0]["budget"] / sum(r["seconds"] for r in rs))
    return rates


def speed_block(suite):
    """Agent steps per second of each arm's evaluation runs (whole runs: environment, learner and
    logging; two runs at a time on the machine of docs/benchmark.md): median and range."""
    rates = run_rates("eval", suite)
    doms = [d for d in SUITES[suite].domains if any(k[1] == d for k in rates)]
    rows = [[a.name] + [f"{np.median(rates[(a.name, d)]):,.0f}" if rates[(a.name, d)] else "–"
                        for d in doms] for a in ARMS if any(rates[(a.name, d)] for d in doms)]
    return table_md(["arm"] + [short(d) for d in doms], rows)


DMC_RUNS = "dmc_fresh_seeds_runs.csv"
DMC_TRIED = {"none": "1 (α₀ 2⁻¹⁰, the paper's)", "scalar": "5 µ", "vector": "5 µ", "mixed": "5 µ",
             "obgd": "12 α × κ (after a 17-setting pilot)"}


def dmc_block():
    """Drifting mountain car (6e-6), the committed fresh-seed runs: each tuner's final return
    (the mean of its last 100 episodes) over seeds 20-39 with a 95 % bootstrap interval, the
    settings it was chosen from, and its difference from mixed (Welch, Holm over the four)."""
    with open(os.path.join(FIGURES, DMC_RUNS), newline="") as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["episode"]) for r in rows)
    finals = collections.defaultdict(dict)
    for r in rows:
        if int(r["episode"]) == last:
            finals[r["tuner"]][int(r["seed"])] = float(r["return"])
    x = {t: np.array([v[k] for k in sorted(v)]) for t, v in finals.items()}
    others = [t for t in DMC_TRIED if t != "mixed" and t in x]
    w = [welch(x["mixed"], x[t]) for t in others]
    tests = dict(zip(others, zip(w, holm([p for _, p in w]))))
    out = []
    for t in DMC_TRIED:
        if t not in x:
            continue
        m, (lo, hi) = mean_ci(x[t])
        vs = ("" if t == "mixed" else
              f"{fmt(tests[t][0][0], 1)} (p {tests[t][1]:.2g})".replace("-", MINUS))
        out.append([t, f"{fmt(m, 1)} [{fmt(lo, 1)}, {fmt(hi, 1)}] ({len(x[t])})", DMC_TRIED[t], vs])
    return table_md(["tuner", "final return [95 % CI] (seeds)", "settings it was chosen from",
                     "mixed − it (Holm p)"], out)


def cost_block(suite):
    """The cost table: each arm's pilot rate (median agent steps/s of its pilot runs per task, two
    runs at a time on this 2-core machine) and the core-hours its evaluation cells need at it."""
    s = SUITES[suite]
    rates = run_rates("pilot", suite)
    rows, total = [], 0.0
    for a in ARMS:
        hours = [s.eval_seeds * s.eval_steps / np.median(rates[(a.name, d)]) / 3600
                 if rates[(a.name, d)] else float("nan") for d in s.domains]
        cells = [f"{np.median(rates[(a.name, d)]):,.0f} / {h:.2f}" if math.isfinite(h) else "–"
                 for d, h in zip(s.domains, hours)]
        rows.append([a.name] + cells + [f"{sum(hours):.1f}"])
        total += sum(hours)
    head = ["arm"] + [f"{short(d)}: steps/s / core-h" for d in s.domains] + ["core-h"]
    return table_md(head, rows) + f"\nAll arms: {total:.1f} core-hours " \
        f"({s.eval_seeds} seeds × {s.eval_steps:,} steps per task and arm).\n"


def blocks():
    """{block name: its text} of every table docs/benchmark.md can hold now."""
    out = {"bench_dmc": dmc_block()} if os.path.exists(os.path.join(FIGURES, DMC_RUNS)) else {}
    for suite in SUITES:
        if any(os.path.exists(compact_path("pilot", d)) for d in SUITES[suite].domains):
            out[f"bench_pilot_{suite}"] = pilot_block(suite)
            out[f"bench_cost_{suite}"] = cost_block(suite)
        out.update(eval_blocks(suite))
    return out


def report(check=False, md=os.path.join(HERE, "benchmark.md")):
    """Rewrite (or, with check, compare) docs/benchmark.md's generated blocks; draw the figures."""
    with open(md) as f:
        text = f.read()
    made = blocks()
    stale = []

    def fill(m):
        name = m.group(2)
        if name not in made:
            return m.group(0)
        if m.group(3) != made[name]:
            stale.append(name)
        return m.group(1) + made[name] + m.group(4)

    new = BLOCK.sub(fill, text)
    if check:
        for name in stale:
            print(f"out of date: {name}")
        return 1 if stale else 0
    if new != text:
        with open(md, "w") as f:
            f.write(new)
    figures()
    return 0


def figures():
    """figures/bench_pilot_<suite>.png (normalized pilot score per setting) and, with evaluation
    runs, bench_<suite>.png (learning curves) and bench_aggregate_<suite>.png (IQM, gap)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for suite in SUITES:
        eval_figures(suite, plt)
        if not any(os.path.exists(compact_path("pilot", d)) for d in SUITES[suite].domains):
            continue
        table, _ = pilot_table(suite)
        choice = read_choice(suite)
        fig, axes = plt.subplots(2, 4, figsize=(12, 5), sharey=True)
        for ax, arm in zip(axes.flat, ARMS):
            order = sorted(pilot_grid(arm, suite), key=lambda st: value_of(next(iter(st.values()))))
            labels = [setting_label(st) for st in order]
            ax.plot(range(len(order)), [table[arm.name][k][0] for k in labels], "o-")
            if choice.get(arm.name, {}).get("label") in labels:
                i = labels.index(choice[arm.name]["label"])
                ax.plot([i], [table[arm.name][labels[i]][0]], "r*", ms=12)
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels([next(iter(st.values())) for st in order], fontsize=7, rotation=30)
            ax.set_title(f"{arm.name}: {next(iter(order[0]))}", fontsize=9)
            ax.axhline(0, color="grey", lw=0.5)
        axes.flat[-1].axis("off")
        axes[0][0].set_ylabel("mean normalized pilot score")
        axes[1][0].set_ylabel("mean normalized pilot score")
        fig.suptitle(f"{suite}: pilot, seeds 1000-1002, {SUITES[suite].pilot_steps:,} steps "
                     "(red star: the choice)", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(FIGURES, f"bench_pilot_{suite}.png"), dpi=80)
        plt.close(fig)


def curves(rows):
    """{arm: (bin ends, mean over seeds, s.e.)} of the mean score per bin (bins every run has)."""
    by = collections.defaultdict(dict)
    for r in rows:
        if r["episodes"]:
            by[r["arm"]].setdefault(r["seed"], {})[r["bin"]] = r["mean_score"]
    out = {}
    for arm, seeds in by.items():
        bins = sorted(set.intersection(*(set(v) for v in seeds.values())))
        y = np.array([[seeds[k][b] for b in bins] for k in sorted(seeds)])
        se = y.std(axis=0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros(len(bins))
        out[arm] = (np.array(bins), y.mean(axis=0), se)
    return out


def eval_figures(suite, plt):
    """bench_<suite>.png: learning curves per task (mean +- s.e. over seeds, per bin);
    bench_aggregate_<suite>.png: IQM and optimality gap with their 95 % intervals, and the
    performance profiles."""
    finals, rand, _ = eval_finals(suite)
    doms, arms = complete(suite, finals)
    if not doms:
        return
    fig, axes = plt.subplots(1, len(doms), figsize=(3.2 * len(doms), 3), squeeze=False)
    for ax, d in zip(axes[0], doms):
        for arm, (x, m, se) in curves(read_compact(compact_path("eval", d))).items():
            ax.plot(x, m, label=arm, lw=1)
            ax.fill_between(x, m - se, m + se, alpha=0.2)
        ax.set_title(short(d), fontsize=9)
        ax.set_xlabel("agent steps", fontsize=8)
    axes[0][0].set_ylabel("score (mean of a bin's episodes)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(FIGURES, f"bench_{suite}.png"), dpi=80)
    plt.close(fig)
    best = {d: max(np.mean(finals[d][a]) for a in arms) for d in doms}
    norm = {a: [normalize(finals[d][a], rand[d], best[d]) for d in doms] for a in arms}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    taus = np.linspace(-0.25, 1.5, 71)
    for i, a in enumerate(arms):
        g = aggregate(norm[a])
        for ax, key in ((axes[0], "iqm"), (axes[1], "gap")):
            lo, hi = g[key + "_ci"]
            ax.plot([lo, hi], [i, i], lw=5, alpha=0.6)
            ax.plot([g[key]], [i], "k|", ms=12)
        axes[2].plot(taus, performance_profile(norm[a], taus), label=a)
    for ax, t in zip(axes[:2], ("IQM", "optimality gap")):
        ax.set_yticks(range(len(arms)))
        ax.set_yticklabels(arms, fontsize=7)
        ax.set_title(f"{t}, 95 % stratified bootstrap", fontsize=9)
    axes[1].set_yticklabels([])
    axes[2].set_title("performance profile", fontsize=9)
    axes[2].set_xlabel("normalized score τ", fontsize=8)
    axes[2].set_ylabel("fraction of runs > τ", fontsize=8)
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(FIGURES, f"bench_aggregate_{suite}.png"), dpi=80)
    plt.close(fig)


def main(argv=None):
    """The subcommands of the module docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("all", "commands", "run", "compact", "random", "select",
                                       "report"))
    p.add_argument("--workers", type=int, default=2, help="all: sweeps at a time")
    p.add_argument("--check", action="store_true",
                   help="report: write nothing; exit 1 if a table of docs/benchmark.md is stale")
    p.add_argument("phase", nargs="?", help="pilot or eval (random and select: the SUITE)")
    p.add_argument("suite", nargs="?", choices=tuple(SUITES))
    p.add_argument("--root", default=os.path.expanduser("~/metatrace-runs/bench"))
    p.add_argument("--queue", default="0/1", help="I/N: run every N-th sweep from the I-th")
    a = p.parse_args(argv)
    if a.command in ("commands", "run", "compact") and not (a.phase and a.suite):
        p.error(f"{a.command} needs PHASE and SUITE")
    if a.command == "all":
        suites = [a.phase] if a.phase else list(SUITES)
        if not set(suites) <= set(SUITES) or a.workers < 1:
            p.error("all [SUITE] --workers N: SUITE one of " + ", ".join(SUITES) + ", N >= 1")
        return run_all(a.root, a.workers, suites)
    if a.command in ("random", "select"):
        a.suite = a.suite or a.phase         # `random SUITE`, `select SUITE`
        if a.suite not in SUITES:
            p.error(f"{a.command} needs SUITE, one of {', '.join(SUITES)}")
    if a.command in ("commands", "run", "compact") and a.phase not in ("pilot", "eval"):
        p.error(f"PHASE {a.phase!r}: pilot or eval")
    chosen = chosen_settings(a.suite) if a.suite else {}
    if a.command == "commands":
        for _, _, _, cmd in sweeps(a.phase, a.suite, a.root, chosen):
            print("python " + shlex.join(cmd))
        return 0
    if a.command == "run":
        i, n = (int(x) for x in a.queue.split("/"))
        if not 0 <= i < n:
            p.error(f"--queue {a.queue}: I must be in [0, N)")
        return run_cell(a.phase, a.suite, a.root, (i, n), chosen)
    if a.command == "compact":
        return compact(a.phase, a.suite, a.root)
    if a.command == "random":
        return write_random(a.suite)
    if a.command == "select":
        return select(a.suite)
    return report(a.check)


if __name__ == "__main__":
    sys.exit(main())

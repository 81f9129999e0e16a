"""Redraw the paper's figures (Young, Wang & Taylor 2018, Figs. 1-9) from runs or compact results.

    python figures.py --fig 2 runs/ --out figs/            (or: python run.py figures ...)
    python run.py figures --fig 7 docs/figures/fig6_drift6e-6_runs.csv --out figs/
    python run.py plot runs/ --by lam --out lam.png        learning curves by any setting

reads every run directory under each RESULTS path (a folder with config.json and episodes.csv, at
any depth, as written by `python run.py`) or the runs of a compact results file (*_runs.csv, written
by docs/compact.py: each run's returns and β as means of B-episode bins), groups the runs whose
settings differ only in `seed`, and writes FIGDIR/figN.png, FIGDIR/figN.pdf and
FIGDIR/figN_summary.csv (the summary is also printed; with --suite minatar, figN_minatar.*).

Protocol (docs/algorithms.md §6): each run's episode returns (the unclipped `score` column where present) are
smoothed by a trailing mean over the last K episodes, fewer at the start (K = 20 for mountain car,
Figs. 1-5; K = 40 for drifting mountain car and Atari, Figs. 6-9); a curve is the mean over the runs
of one setting with a shaded band of ±1 standard error (sample std / sqrt(n)). Figs. 1-7 are drawn
against episodes; Figs. 8-9 against agent steps, each run's smoothed curve interpolated onto a common
step grid. The summary's final return is the mean over runs of the mean of the last 100 episode
returns (docs/algorithms.md §6.2 selection rule).  From compact results a curve point is a bin's
mean at the bin's last episode, the trailing mean covers round(K / B) bins (at least one), and the
final return is the mean of the bins covering the last 100 episodes, weighted by their episode
counts (exact when the bin edges fall 100 episodes before the end; the figure says so otherwise).

Drawing: legends outside the axes (one shared legend when every panel has the same entries), one
well-spaced colour per α0 (the same in every panel), "(n=N)" runs per curve, tick labels on every
panel, and a thin dotted median curve beside the mean of a setting whose mean and median final
return differ by at least the s.e. (bimodal outcomes, e.g. a few seeds stuck at -200).

Diverged runs are not dropped: the mean curve and the final return use the runs that did not
diverge, each diverged run is drawn thin up to its last episode with an × there, and the legend and
the table say "k/n diverged". A setting whose runs all diverged keeps its legend entry and its row.
"""
import argparse
import csv
import io
import json
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field, replace

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import text_to_path
from matplotlib.ticker import EngFormatter

import envs
import metatrace as mt

K_MOUNTAIN_CAR = 20     # docs/algorithms.md §6.1: trailing mean of the last 20 episode returns (Figs. 1-5)
K_DRIFT_ALE = 40        # docs/algorithms.md §6.2, §6.3: 40 episodes (Figs. 6-9)
LAST = 100              # final return: mean of the last 100 episodes (docs/algorithms.md §6.2, §6.3)
GRID_POINTS = 400       # common agent-step grid of Figs. 8-9
METATRACE = tuple(t.name for t in mt.TUNER_TABLE if t.normalizable)       # scalar, vector, mixed
ALE_GAMES = envs.ATARI_DOMAINS                                             # docs/algorithms.md §6.3
DRIFT_ALPHA0, FIG7_DRIFT, FIG7_MU = 2.0 ** -10, 6e-6, 2.0 ** -10                # docs/algorithms.md §6.2
TUNER_NAMES = {t.name: t.label for t in mt.TUNER_TABLE}
TUNER_COLORS = {t.name: t.color for t in mt.TUNER_TABLE}
BASELINE = tuple(t.name for t in mt.TUNER_TABLE if t.baseline)             # none
ONE_BETA = tuple(t.name for t in mt.TUNER_TABLE if t.meta and not t.vector)   # one β: Fig. 7 (b)
BETA_COLUMNS = (("beta_critic", "critic, informative", "C0", "-"),
                ("beta_critic_noise", "critic, noise", "C0", "--"),
                ("beta_actor", "actor, informative", "C3", "-"),
                ("beta_actor_noise", "actor, noise", "C3", "--"))
COMPACT_KEYS = ("domain", "tuner", "normalized", "drift", "alpha", "mu", "seed")   # docs/compact.py
COMPACT_OPTIONAL = ("kappa", "beta2", "sparse_init", "layer_norm", "normalize_obs", "scale_reward")
FLAGS = ("normalized", "sparse_init", "layer_norm", "normalize_obs", "scale_reward")
COMPACT_BINS = ("episode", "episodes", "diverged")
LEGEND_FONT = 7
SUMMARY_COLUMNS = ("figure", "panel", "domain", "tuner", "normalized", "drift", "mu", "alpha0",
                   "n_runs", "n_diverged", "n_unfinished", "final_return", "final_return_se",
                   "mean_return", "spread_alpha0", "best_mu", "note")


class FigureError(ValueError):
    """Bad input (no runs, unknown figure): reported as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# Statistics (docs/algorithms.md §6)

def smooth(returns, k):
    """Trailing mean of the last k returns, fewer at the start (docs/algorithms.md §6.1: k = 20; §6.2-6.3: 40)."""
    x = np.asarray(returns, dtype=float)
    if k < 1:
        raise ValueError(f"smoothing window must be >= 1, got {k}")
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(i - k, 0)
    return (c[i] - c[lo]) / (i - lo)


def final_return(returns, last=LAST):
    """Mean of the last `last` episode returns of one run (all of them if fewer; NaN if none)."""
    x = np.asarray(returns, dtype=float)[-last:]
    return float(x.mean()) if len(x) else math.nan


def binned_final(means, counts, last=LAST):
    """Final return from bin means: the whole bins covering the last `last` episodes, weighted by
    their episode counts (exact when a bin edge falls `last` episodes before the end).

    Returns (value, exact); value is NaN for no bins.
    """
    m, c = np.asarray(means, dtype=float), np.asarray(counts, dtype=float)
    if not len(m):
        return math.nan, True
    j = min(int(np.searchsorted(np.cumsum(c[::-1]), last)) + 1, len(c))
    covered = float(c[-j:].sum())
    exact = covered == last or (j == len(c) and covered < last)
    return float(np.sum(m[-j:] * c[-j:]) / covered), exact


def median_apart(values):
    """True when the mean and the median of values (3 or more finite ones) differ by at least their
    standard error: bimodal outcomes, e.g. most seeds near -100 and some stuck at -200."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 3:
        return False
    gap = abs(float(v.mean()) - float(np.median(v)))
    return gap > 0 and gap >= float(v.std(ddof=1)) / math.sqrt(len(v)) * (1 - 1e-9)


def mean_se(curves):
    """Mean over runs and its standard error std(ddof=1)/sqrt(n) at each x; NaN entries are absent.

    curves: 2-d array (runs × points). Returns (mean, se, n); se is NaN where n < 2.
    """
    a = np.atleast_2d(np.asarray(curves, dtype=float))
    ok = np.isfinite(a)
    n = ok.sum(axis=0)
    total = np.where(ok, a, 0.0).sum(axis=0)
    mean = np.divide(total, n, out=np.full(a.shape[1], np.nan), where=n > 0)
    sq = np.where(ok, (a - mean) ** 2, 0.0).sum(axis=0)
    var = np.divide(sq, n - 1, out=np.full(a.shape[1], np.nan), where=n > 1)
    return mean, np.sqrt(var) / np.sqrt(np.maximum(n, 1)), n


def align_by_steps(steps, curves, grid):
    """Each run's curve (given at its cumulative agent steps) interpolated onto a common step grid.

    Figs. 8-9: runs have different episode lengths, so they are compared at equal agent steps;
    outside a run's own range of steps its entry is NaN. Returns a runs × len(grid) array.
    """
    grid = np.asarray(grid, dtype=float)
    out = np.full((len(curves), len(grid)), np.nan)
    for r, (s, y) in enumerate(zip(steps, curves)):
        s, y = np.asarray(s, dtype=float), np.asarray(y, dtype=float)
        if len(s) == 0:
            continue
        inside = (grid >= s[0]) & (grid <= s[-1])
        out[r, inside] = np.interp(grid[inside], s, y)
    return out


def best_mu(items):
    """The µ with the highest mean final return over its α0's (docs/algorithms.md §6.2 "best µ"), or None.

    items: (mu, alpha0, final_return) triples; final_return is NaN where every run diverged.
    A µ with an α0 whose runs all diverged ranks below every µ without one (a mean over the
    surviving α0's alone would reward divergence); ties go to the first µ seen.
    """
    by_mu = {}
    for mu, _, fr in items:
        by_mu.setdefault(mu, []).append(fr)
    best, best_key = None, None
    for mu, frs in by_mu.items():
        finite = [f for f in frs if math.isfinite(f)]
        if not finite:
            continue
        key = (len(finite) == len(frs), float(np.mean(finite)))
        if best_key is None or key > best_key:
            best, best_key = mu, key
    return best


# --------------------------------------------------------------------------------------------
# Loading

@dataclass
class Run:
    """One run directory (episodes.csv is read on first use), or one run of a compact file (its
    data given: one point per bin of `bin` episodes, the counts in data["episodes"])."""
    path: str
    settings: dict
    status: str
    _data: dict = field(default=None, repr=False)
    bin: int = 1

    @property
    def data(self):
        """Columns of episodes.csv as float arrays (a malformed last line of a killed run is dropped)."""
        if self._data is None:
            self._data = read_episodes(os.path.join(self.path, "episodes.csv"))
        return self._data

    @property
    def returns(self):
        """Episode returns; the unclipped game `score` where the domain records one (docs/algorithms.md §6.3)."""
        return self.data["score"] if "score" in self.data else self.data["return"]

    @property
    def diverged(self):
        """Status "diverged", or a 1 in the diverged column."""
        d = self.data.get("diverged")
        return self.status == "diverged" or bool(d is not None and len(d) and np.nansum(d) > 0)

    @property
    def n_episodes(self):
        """Episodes the run covers (the sum of its bins' counts for a compact run)."""
        return len(self.returns) if self.bin == 1 else int(np.sum(self.data["episodes"]))

    @property
    def episode_x(self):
        """Episode number of each point: 1..n, or each bin's last episode for a compact run."""
        if self.bin == 1:
            return np.arange(1, len(self.returns) + 1, dtype=float)
        return self.data["episode"] + self.data["episodes"]

    def final(self, last=LAST):
        """Mean of the last `last` episode returns (final_return; from the bins: binned_final)."""
        if self.bin == 1:
            return final_return(self.returns, last)
        return binned_final(self.returns, self.data["episodes"], last)[0]

    def mean(self):
        """Mean return over all episodes (a compact run's bins weighted by their counts)."""
        if self.bin == 1:
            return float(np.mean(self.returns))
        return float(np.average(self.returns, weights=self.data["episodes"]))


def read_episodes(path):
    """episodes.csv -> {column: float array}.  Only a last line without its newline (a run killed
    while writing it) is dropped; any other row that does not parse is a FigureError."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise FigureError(f"{path} is unreadable ({type(e).__name__})") from None
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {"return": np.zeros(0)}
    header, good = rows[0], []
    if not ({"return", "score"} & set(header)) or len(set(header)) != len(header):
        raise FigureError(f"{path} is not an episodes table (header {','.join(header)[:60]!r})")
    for n, row in enumerate(rows[1:], 2):
        try:
            if len(row) != len(header):
                raise ValueError
            good.append([float(v) if v != "" else math.nan for v in row])
        except ValueError:
            raise FigureError(f"{path} line {n} does not parse as {len(header)} numbers") from None
    a = np.array(good, dtype=float).reshape(len(good), len(header))
    return {h: a[:, j] for j, h in enumerate(header)}


def load_runs(results_dir):
    """Every run directory (config.json + episodes.csv) under results_dir, at any depth.

    A directory that does not exist, or a run whose config.json does not parse, raises
    FigureError (a figure never leaves out a run silently).
    """
    if not os.path.isdir(results_dir):
        raise FigureError(f"results directory {results_dir} does not exist")
    import schema
    runs, bad = [], []
    for root, dirs, files in os.walk(results_dir):
        dirs.sort()
        if "config.json" in files and "episodes.csv" in files:
            path = os.path.join(root, "config.json")
            try:
                with open(path) as f:
                    cfg = json.load(f)
                if not isinstance(cfg, dict):
                    raise ValueError("not a table")
                s = schema.stored_settings(cfg.get("settings"), path, complete=False)
                runs.append(Run(root, dict(s), str(cfg.get("status", "unknown"))))
            except (OSError, ValueError, RecursionError) as e:
                bad.append(f"{path} ({type(e).__name__})")
            except schema.UsageError as e:
                bad.append(str(e))
    if bad:
        raise FigureError(f"{len(bad)} run directories have an unreadable or invalid config.json "
                          f"(first: {bad[0]}); fix or move them")
    return runs


def compact_value(key, text):
    """One key column of a compact file as its setting's type: normalized and the stabilizers
    bool, drift/alpha/mu/kappa/beta2 float, seed int, domain/tuner str; ValueError when it does
    not parse."""
    if key in FLAGS:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError
        return text.lower() in ("true", "1")
    if key == "seed":
        return int(text)
    return float(text) if key in ("drift", "alpha", "mu", "kappa", "beta2") else text


def compact_row(header, row):
    """(settings with seed, {column: float}) of one compact row; ValueError (column, text) if bad.
    An empty key is an unset setting; an empty value is NaN."""
    if len(row) != len(header):
        raise ValueError("columns", f"{len(row)} fields, not {len(header)}")
    settings, values = {}, {}
    for h, text in zip(header, row):
        try:
            if h in COMPACT_KEYS + COMPACT_OPTIONAL:
                if text != "":
                    settings[h] = compact_value(h, text)
            elif h in ("episode", "episodes", "diverged"):
                values[h] = float(int(text))
            else:
                values[h] = float(text) if text != "" else math.nan
        except ValueError:
            raise ValueError(h, text) from None
    if values["episodes"] < 1 or values["episode"] < 0 or values["diverged"] not in (0, 1):
        raise ValueError("episode, episodes, diverged",
                         f"{values['episode']:g}, {values['episodes']:g}, {values['diverged']:g}")
    return settings, values


def compact_run(path, line, settings, bins):
    """One Run from its (line, values) bins in a compact file; FigureError unless they follow each
    other from episode 0."""
    bins = sorted(bins, key=lambda b: b[1]["episode"])
    end = 0.0
    for n, b in bins:
        if b["episode"] != end:
            raise FigureError(f"{path} line {n}: bin at episode {b['episode']:g} of run "
                              f"{json.dumps(settings, default=str)} does not start where the one "
                              f"before ends ({end:g}); one run per (settings, seed) and file")
        end += b["episodes"]
    data = {h: np.array([b[h] for _, b in bins]) for h in bins[0][1]}
    status = "diverged" if np.any(data["diverged"] > 0) else "finished"
    return Run(f"{path}:{line}", settings, status, data, bin=int(data["episodes"].max()))


def read_compact(path):
    """A compact results file (docs/compact.py) -> one Run per distinct (settings, seed), in file
    order; FigureError for a missing column or a row that does not parse."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FigureError(f"{path} is unreadable ({type(e).__name__})") from None
    header = rows[0] if rows else []
    missing = [c for c in COMPACT_KEYS + COMPACT_BINS if c not in header]
    missing += [] if {"return", "score"} & set(header) else ["return"]
    if missing or len(set(header)) != len(header):
        what = f"no column {', '.join(missing)}" if missing else "repeated columns"
        raise FigureError(f"{path} is not a compact results file of docs/compact.py ({what})")
    runs = {}
    for n, row in enumerate(rows[1:], 2):
        try:
            settings, values = compact_row(header, row)
        except ValueError as e:
            col, text = e.args
            raise FigureError(f"{path} line {n} does not parse ({col}: {str(text)[:40]!r})") \
                from None
        key = json.dumps(settings, sort_keys=True, default=str)
        runs.setdefault(key, (n, settings, []))[2].append((n, values))
    return [compact_run(path, n, settings, bins) for n, settings, bins in runs.values()]


def as_compact(runs):
    """Run directories with only the settings a compact file records (COMPACT_KEYS), so that they
    group with compact runs; FigureError when that merges runs that differ in other settings."""
    seen, keys = {}, COMPACT_KEYS + COMPACT_OPTIONAL
    for r in runs:
        key = json.dumps({k: r.settings.get(k) for k in keys if k != "seed"},
                         sort_keys=True, default=str)
        full = {k: v for k, v in r.settings.items() if k != "seed"}
        other = seen.setdefault(key, (r, full))
        diff = sorted(k for k in set(full) | set(other[1])
                      if k not in keys and full.get(k) != other[1].get(k))
        if diff:
            raise FigureError(f"runs {other[0].path} and {r.path} differ in {', '.join(diff)}, "
                              f"which compact files do not record; draw them without compact files")
    return [replace(r, settings={k: r.settings[k] for k in keys if k in r.settings}) for r in runs]


def load_results(paths):
    """The runs of every RESULTS path: a folder of run directories (load_runs) or a compact file
    (read_compact).  Mixed, run directories are compared on the compact files' settings only."""
    dirs, compact = [], []
    for path in paths:
        if os.path.isfile(path):
            compact += read_compact(path)
        else:
            dirs += load_runs(path)
    return (as_compact(dirs) if compact else dirs) + compact


@dataclass
class Group:
    """The runs of one setting (settings minus seed)."""
    settings: dict
    runs: list

    def get(self, key, default=None):
        return self.settings.get(key, default)

    @property
    def ok_runs(self):
        return [r for r in self.runs if not r.diverged]

    @property
    def n_diverged(self):
        return len(self.runs) - len(self.ok_runs)

    @property
    def n_unfinished(self):
        return sum(r.status not in ("finished", "diverged") and not r.diverged for r in self.runs)

    def mean_return(self):
        """Mean over the non-diverged runs of each run's mean return over all its episodes
        (the area under the learning curve: how fast it learned); NaN when none."""
        vals = [r.mean() for r in self.ok_runs if len(r.returns)]
        return float(np.mean(vals)) if vals else math.nan

    def finals(self, last=LAST):
        """Each non-diverged run's final return (Run.final)."""
        return [r.final(last) for r in self.ok_runs]

    def median_differs(self, last=LAST):
        """median_apart of the final returns: bimodal outcomes, so the median curve is drawn too."""
        return median_apart(self.finals(last))

    def final(self, last=LAST):
        """(mean, se, n) over the non-diverged runs of each run's final return; NaN when none."""
        vals = self.finals(last)
        if not vals:
            return math.nan, math.nan, 0
        m, se, n = mean_se(np.array(vals)[:, None])
        return float(m[0]), float(se[0]), int(n[0])


def group_runs(runs):
    """Runs whose settings differ only in `seed` -> one Group each (repeats of one setting).

    Two runs with identical settings and seed are the same run written twice: the one with more
    episodes is kept and a warning is printed.
    """
    groups, dupes = {}, 0
    for run in runs:
        key = json.dumps({k: v for k, v in run.settings.items() if k != "seed"}, sort_keys=True,
                         default=str)
        g = groups.setdefault(key, Group({k: v for k, v in run.settings.items() if k != "seed"}, []))
        same = [r for r in g.runs if r.settings.get("seed") == run.settings.get("seed")]
        if same:
            dupes += 1
            if run.n_episodes > same[0].n_episodes:
                g.runs[g.runs.index(same[0])] = run
            continue
        g.runs.append(run)
    if dupes:
        print(f"figures: warning: {dupes} duplicate runs (same settings and seed) ignored",
              file=sys.stderr)
    return list(groups.values())


# --------------------------------------------------------------------------------------------
# Selecting the curves of each figure (docs/algorithms.md §6, §7)

@dataclass
class Curve:
    group: Group
    label: str
    color: object
    linestyle: str = "-"
    role: str = ""          # e.g. "best constant α" (Fig. 9); rows with a role stay out of spreads
    under: bool = False     # drawn wide and pale beneath the others, no band: it repeats a curve


@dataclass
class Panel:
    title: str
    curves: list
    kind: str = "return"    # "return" or "beta" (Fig. 7 b,d,f)


def pick(groups, domain, tuner=None, normalized=None, **equal):
    """Groups of one domain (and tuner; `normalized` only filters Metatrace tuners)."""
    out = []
    for g in groups:
        if g.get("domain") != domain or (tuner is not None and g.get("tuner") != tuner):
            continue
        if normalized is not None and g.get("tuner") in METATRACE \
                and bool(g.get("normalized", True)) != normalized:
            continue
        if all(np.isclose(g.get(k, math.nan), v, rtol=1e-9, atol=0) for k, v in equal.items()):
            out.append(g)
    return out


def closest(values, target):
    """The value nearest to target in log scale (Figs. 6-7: α0, µ, drift nearest to the paper's);
    None for no values; values <= 0 only when there is nothing else."""
    key = lambda v: (abs(math.log(v) - math.log(target)) if v > 0 else math.inf, -v)
    return min(values, key=key) if values else None


def pow2(x, tex=False):
    """2^-10 for exact powers of two (as the paper's legends), else 3 significant digits."""
    if x is None or not math.isfinite(x):
        return "-"
    if x > 0 and float(math.log2(x)).is_integer():
        k = int(math.log2(x))
        return f"$2^{{{k}}}$" if tex else f"2^{k}"
    return f"{x:.3g}"


def plain(text):
    """Mathtext powers of two back to plain text for the table: "$2^{-6}$" -> "2^-6"."""
    return re.sub(r"\$2\^\{(-?\d+)\}\$", r"2^\1", text)


def distinct_colors(n):
    """n colours that neighbours tell apart: tab10 up to 10; up to 20, tab20's dark hue k next to
    its light hue k + 3; else turbo at golden-ratio steps."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        order = [j for k in range(10) for j in (2 * k, 2 * ((k + 3) % 10) + 1)]
        return [colormaps["tab20"](j) for j in order[:n]]
    return [colormaps["turbo"]((0.05 + 0.618034 * i) % 1.0) for i in range(n)]


def value_colors(values):
    """One distinct colour per value, largest first (distinct_colors)."""
    values = sorted(set(values), reverse=True)
    return dict(zip(values, distinct_colors(len(values))))


def alpha_colors(groups):
    """One colour per α0 over the whole figure (same α0, same colour in every panel)."""
    return value_colors(g.get("alpha") for g in groups)


def varying(groups, shown):
    """Settings other than `shown` that differ among groups, so equal labels get told apart."""
    keys = set().union(*(g.settings for g in groups)) - set(shown) if groups else set()
    return sorted(k for k in keys if len({json.dumps(g.get(k), default=str) for g in groups}) > 1)


def labelled(groups, text, shown, color, linestyle="-"):
    """Curves for groups, label text(g) plus any other setting that varies among them."""
    extra = varying(groups, shown)
    value = lambda v: pow2(v, True) if isinstance(v, float) else str(v)
    return [Curve(g, text(g) + "".join(f", {k}={value(g.get(k))}" for k in extra), color(g),
                  linestyle) for g in groups]


def by_alpha(groups):
    return sorted(groups, key=lambda g: -g.get("alpha"))


def panels_untuned(groups, options):
    """Fig. 1: no tuning on mountain car, one curve per α (docs/algorithms.md §7 Fig. 1)."""
    gs = by_alpha(pick(groups, "mountaincar", BASELINE[0]))
    if not gs:
        return [], "domain mountaincar, tuner none"
    col = alpha_colors(gs)
    return [Panel("no tuning", labelled(gs, lambda g: f"α={pow2(g.get('alpha'), True)}",
                                        ("alpha",), lambda g: col[g.get("alpha")]))], ""


def panels_per_mu(tuner, normalized):
    """Figs. 2-5: one panel per µ, one curve per α0 (docs/algorithms.md §6.1 µ grids, §7 Figs. 2-5)."""
    def build(groups, options):
        gs = pick(groups, "mountaincar", tuner, normalized)
        if not gs:
            norm = "" if tuner not in METATRACE else f", normalized {str(normalized).lower()}"
            return [], f"domain mountaincar, tuner {tuner}{norm}"
        col = alpha_colors(gs)
        panels = []
        for mu in sorted({g.get("mu") for g in gs}, reverse=True):
            sub = by_alpha([g for g in gs if g.get("mu") == mu])
            panels.append(Panel(f"µ = {pow2(mu, True)}", labelled(
                sub, lambda g: f"α0={pow2(g.get('alpha'), True)}", ("alpha", "mu"),
                lambda g: col[g.get("alpha")])))
        return panels, ""
    return build


def at_alpha0(gs, target, notes):
    """Groups at the α0 nearest to target (docs/algorithms.md §6.2: α0 = 2^-10); a note if it is not exact."""
    a = closest({g.get("alpha") for g in gs}, target)
    if a is not None and a != target:
        notes.add(f"α0 = {pow2(a, True)} (closest to {pow2(target, True)})")
    return [g for g in gs if g.get("alpha") == a]


def panels_drifting(groups, options):
    """Fig. 6: one panel per drift rate; none / scalar / vector / mixed, each at its best µ."""
    dom = pick(groups, "drifting_mountaincar", normalized=True)
    dom = [g for g in dom if g.get("tuner") in BASELINE + METATRACE]
    if not dom:
        return [], "domain drifting_mountaincar, tuner none/scalar/vector/mixed (normalized)"
    panels, notes = [], set()
    for drift in sorted({g.get("drift") for g in dom}):
        curves = []
        for tuner in BASELINE + METATRACE:
            cands = at_alpha0([g for g in dom if g.get("drift") == drift and g.get("tuner") == tuner],
                              DRIFT_ALPHA0, notes)
            if not cands:
                continue
            mu = best_mu([(g.get("mu"), g.get("alpha"), g.final()[0]) for g in cands])
            chosen = [g for g in cands if g.get("mu") == mu] or cands[:1]
            for c in labelled(chosen, lambda g: TUNER_NAMES.get(tuner, tuner) + (
                    "" if tuner in BASELINE else f" (best µ={pow2(g.get('mu'), True)})"),
                    ("alpha", "mu", "tuner"), lambda g: TUNER_COLORS.get(tuner, 'C4')):
                c.role = "" if tuner in BASELINE else "best µ"
                curves.append(c)
        panels.append(Panel(f"drift {drift:g}", curves))
    return panels, "; ".join(sorted(notes))


def panels_fig7(groups, options):
    """Fig. 7 at drift 6e-6: (a,c,e) every µ per method; (b,d,f) mean β per weight group."""
    dom = [g for g in pick(groups, "drifting_mountaincar", normalized=True)
           if g.get("tuner") in METATRACE]
    if not dom:
        return [], "domain drifting_mountaincar, tuner scalar/vector/mixed (normalized)"
    notes = set()
    drift = closest({g.get("drift") for g in dom}, FIG7_DRIFT)
    if drift != FIG7_DRIFT:
        notes.add(f"drift {drift:g} (closest to {FIG7_DRIFT:g})")
    panels, per_tuner = [], {}
    for tuner in METATRACE:
        gs = at_alpha0([g for g in dom if g.get("tuner") == tuner and g.get("drift") == drift],
                       DRIFT_ALPHA0, notes)
        if gs:
            per_tuner[tuner] = gs
    col = value_colors(g.get("mu") for gs in per_tuner.values() for g in gs)   # same µ, same colour
    for tuner, gs in per_tuner.items():
        mus = sorted({g.get("mu") for g in gs}, reverse=True)
        gs = sorted(gs, key=lambda g: -g.get("mu"))
        panels.append(Panel(f"{TUNER_NAMES.get(tuner, tuner)}: every µ", labelled(
            gs, lambda g: f"µ={pow2(g.get('mu'), True)}", ("alpha", "mu"), lambda g: col[g.get("mu")])))
        mu = closest(mus, FIG7_MU)
        title = f"{TUNER_NAMES.get(tuner, tuner)}: mean β, µ = {pow2(mu, True)}"
        if mu != FIG7_MU:
            title += f" (closest to {pow2(FIG7_MU, True)})"
        beta = [g for g in gs if g.get("mu") == mu]
        panels.append(Panel(title, [Curve(g, "", "k") for g in beta[:1]], kind="beta"))
    return panels, "; ".join(sorted(notes))


def games(options):
    """Domain names of the five games (docs/algorithms.md §6.3) by game, or with --suite minatar
    MinAtar's five (Breakout in place of Beam Rider, which MinAtar does not have)."""
    if options.get("suite") == "minatar":
        return {d[len(envs.MINATAR_PREFIX):]: d for d in envs.MINATAR_DOMAINS}
    return {g: g for g in ALE_GAMES}


def panels_fig8(groups, options):
    """Fig. 8: Seaquest (or the one other game of the suite that the runs hold), one panel per
    tuner (none, scalar, vector, mixed), one curve per α."""
    game = games(options)["seaquest"]
    present = [d for d in games(options).values() if pick(groups, d)]
    if game not in present and len(present) == 1:
        game = present[0]
    gs = [g for g in pick(groups, game, normalized=True) if g.get("tuner") in BASELINE + METATRACE]
    if not gs:
        return [], f"domain {game}, tuner none/scalar/vector/mixed"
    col = alpha_colors(gs)
    panels = []
    for tuner in BASELINE + METATRACE:
        sub = by_alpha([g for g in gs if g.get("tuner") == tuner])
        if sub:
            sym = "α" if tuner in BASELINE else "α0"
            panels.append(Panel(f"{game}: {TUNER_NAMES.get(tuner, tuner)}", labelled(
                sub, lambda g: f"{sym}={pow2(g.get('alpha'), True)}", ("alpha",),
                lambda g: col[g.get("alpha")])))
    return panels, ""


def panels_fig9(groups, options):
    """Fig. 9: per game, mixed Metatrace at its 3 best α0 (solid), no tuning at the same α (dashed),
    and the best constant α (highest final return among the untuned runs; docs/algorithms.md §6.3)."""
    panels, missing, notes = [], [], set()
    for game in games(options).values():
        mixed = pick(groups, game, "mixed", True)
        none = pick(groups, game, BASELINE[0])
        if not mixed and not none:
            missing.append(game)
            continue
        if len({g.get("alpha") for g in mixed}) > 3:   # "the 3 best α of the sweep"
            ranked = sorted(mixed, key=lambda g: (math.isfinite(g.final()[0]), g.final()[0]),
                            reverse=True)
            keep = []
            for g in ranked:
                if len({k.get("alpha") for k in keep} | {g.get("alpha")}) <= 3:
                    keep.append(g)
            notes.add("mixed: the 3 best α0")
            mixed = keep
        alphas = {g.get("alpha") for g in mixed}
        col = alpha_colors(mixed + [g for g in none if g.get("alpha") in alphas])
        curves = labelled(by_alpha(mixed), lambda g: f"mixed α0={pow2(g.get('alpha'), True)}",
                          ("alpha", "tuner", "normalized"), lambda g: col[g.get("alpha")])
        same = by_alpha([g for g in none if g.get("alpha") in alphas])
        curves += labelled(same, lambda g: f"no tuning α={pow2(g.get('alpha'), True)}",
                           ("alpha", "tuner", "normalized"), lambda g: col[g.get("alpha")], "--")
        finals = [(g, g.final()[0]) for g in none if math.isfinite(g.final()[0])]
        if finals:
            best = max(finals, key=lambda t: t[1])[0]
            shown = any(c.group is best for c in curves)    # then a wide grey band beneath it
            curves.append(Curve(best, f"best constant α={pow2(best.get('alpha'), True)}", "k",
                                "-" if shown else ":", role="best constant α", under=shown))
        panels.append(Panel(game, curves))
    if not panels:
        return [], f"domains {', '.join(games(options).values())}, tuner mixed or none"
    if missing:
        notes.add("no runs: " + ", ".join(missing))
    return panels, "; ".join(sorted(notes))


@dataclass
class FigSpec:
    title: str
    build: object
    k: int
    by_steps: bool = False
    ncols: int = 3
    share: bool = True      # panels on common axes (one domain per figure)
    same_y: bool = False    # without shared axes, the return panels on one y-range still
    suite_title: bool = False   # the title names the suite: ALE, or MinAtar (an analogue)


FIGURES = {
    1: FigSpec("Fig. 1: no tuning, mountain car", panels_untuned, K_MOUNTAIN_CAR, ncols=1),
    2: FigSpec("Fig. 2: normalized scalar Metatrace, mountain car", panels_per_mu("scalar", True),
               K_MOUNTAIN_CAR),
    3: FigSpec("Fig. 3: unnormalized scalar Metatrace, mountain car", panels_per_mu("scalar", False),
               K_MOUNTAIN_CAR),
    4: FigSpec("Fig. 4: SID (reconstruction SID-R), mountain car", panels_per_mu("sid", None),
               K_MOUNTAIN_CAR),
    5: FigSpec("Fig. 5: NOSID (reconstruction NOSID-R), mountain car", panels_per_mu("nosid", None),
               K_MOUNTAIN_CAR),
    6: FigSpec("Fig. 6: drifting mountain car, α0 = $2^{-10}$, each method at its best µ",
               panels_drifting, K_DRIFT_ALE, ncols=2),
    7: FigSpec("Fig. 7: drifting mountain car, drift 6e-06, α0 = $2^{-10}$", panels_fig7, K_DRIFT_ALE,
               ncols=2, share=False, same_y=True),
    8: FigSpec("Fig. 8: α sweep per tuner", panels_fig8, K_DRIFT_ALE, by_steps=True,
               ncols=2, suite_title=True),
    9: FigSpec("Fig. 9: mixed Metatrace (solid) vs no tuning (dashed)", panels_fig9, K_DRIFT_ALE,
               by_steps=True, share=False, suite_title=True),
}


# --------------------------------------------------------------------------------------------
# Drawing

def window(run, k):
    """The trailing-mean window in points: k episodes, or round(k / bin) bins (at least 1) of a
    compact run."""
    return k if run.bin == 1 else max(1, round(k / run.bin))


def run_curve(run, k, by_steps):
    """x (episode number, a compact run's bin ends, or cumulative agent steps) and the smoothed
    returns of one run."""
    y = smooth(run.returns, window(run, k))
    if by_steps and "steps" in run.data:
        return run.data["steps"], y
    return run.episode_x, y


def on_common_x(bins, xs, ys, whole=False):
    """(x, runs × points array) of curves given at episode numbers xs.

    Curves whose x are prefixes of the longest one's stay as they are: cut to the shortest, or with
    whole=True padded with NaN past their end. Otherwise (runs of different bins in one curve) they
    are interpolated onto the x of the coarsest-binned run (bins: each run's Run.bin).
    """
    longest = max(xs, key=len)
    if all(np.array_equal(x, longest[:len(x)]) for x in xs):
        n = len(longest) if whole else min(map(len, xs))
        a = np.full((len(ys), n), np.nan)
        for i, y in enumerate(ys):
            a[i, :min(len(y), n)] = y[:n]
        return longest[:n], a
    grid = np.asarray(xs[int(np.argmax(bins))], dtype=float)
    if not whole:
        grid = grid[(grid >= max(x[0] for x in xs)) & (grid <= min(x[-1] for x in xs))]
    return grid, align_by_steps(xs, ys, grid)


def stacked(group, k, by_steps, grid_points=GRID_POINTS):
    """(x, runs × points array) of the smoothed returns of the group's non-diverged runs, on the x
    where every such run has data (episodes, or a common agent-step grid); None when none."""
    runs = [r for r in group.ok_runs if len(r.returns)]
    if not runs:
        return None
    xs, ys = zip(*(run_curve(r, k, by_steps) for r in runs))
    if by_steps:
        grid = np.linspace(max(x[0] for x in xs), min(x[-1] for x in xs), grid_points)
        return grid, align_by_steps(xs, ys, grid)
    return on_common_x([r.bin for r in runs], xs, ys)


def group_curve(group, k, by_steps, grid_points=GRID_POINTS):
    """Mean over the group's non-diverged runs of their smoothed returns, its s.e. and n, on x.

    The mean is drawn only where every such run has data (up to the shortest run's last episode,
    or its last agent step), so a curve never jumps where one run stops contributing.
    """
    curves = stacked(group, k, by_steps, grid_points)
    if curves is None:
        return None
    m, se, n = mean_se(curves[1])
    return curves[0], m, se, n


def group_median(group, k, by_steps, grid_points=GRID_POINTS):
    """x and the median over the group's non-diverged runs of their smoothed returns (or None)."""
    curves = stacked(group, k, by_steps, grid_points)
    return None if curves is None else (curves[0], np.median(curves[1], axis=0))


def run_count(group):
    """"n=N" runs of a group, with "k/N diverged" when any diverged."""
    n, d = len(group.runs), group.n_diverged
    return f"n={n}" + (f", {d}/{n} diverged" if d else "")


def draw_return_panel(ax, panel, k, by_steps):
    """Mean curves with ±1 s.e. bands, a thin dotted median where Group.median_differs; diverged
    runs thin, ending in an × (Figs. 1-9)."""
    medians = False
    for c in panel.curves:
        g = c.group
        label = f"{c.label} ({run_count(g)})"
        curve = group_curve(g, k, by_steps)
        if curve is not None and c.under:
            ax.plot(curve[0], curve[1], color=c.color, linestyle="-", lw=5, alpha=0.25, zorder=1,
                    label=label)
            continue
        if curve is not None:
            x, m, se, _ = curve
            ax.plot(x, m, color=c.color, linestyle=c.linestyle, lw=1.4, label=label)
            ax.fill_between(x, m - se, m + se, color=c.color, alpha=0.2, lw=0)
            if g.median_differs():
                ax.plot(*group_median(g, k, by_steps), color=c.color, linestyle=":", lw=0.9)
                medians = True
        else:   # every run diverged: keep the legend entry
            ax.plot([], [], color=c.color, linestyle=c.linestyle, marker="x", label=label)
        for r in g.runs:
            if r.diverged and len(r.returns):
                x, y = run_curve(r, k, by_steps)
                ax.plot(x, y, color=c.color, linestyle=c.linestyle, lw=0.7, alpha=0.7)
                ax.plot(x[-1:], y[-1:], color=c.color, marker="x", ms=8, mew=2, linestyle="none")
    if medians:
        ax.plot([], [], color="0.3", linestyle=":", lw=0.9, label="median")
    ax.set_xlabel("agent steps" if by_steps else "episode")
    if by_steps:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    score = any("score" in c.group.runs[0].data for c in panel.curves)
    spans = sorted({window(r, k) * r.bin for c in panel.curves for r in c.group.runs}) or [k]
    ax.set_ylabel(f"{'score' if score else 'return'} (trailing mean of "
                  f"{'/'.join(map(str, spans))} episodes)")


def draw_beta_panel(ax, panel):
    """Fig. 7 (b,d,f): mean β = log α per group of weights, mean over runs per episode (or per bin
    of compact runs) (docs/algorithms.md §6.2); the title says how many runs."""
    for c in panel.curves:
        g = c.group
        ok = g.ok_runs
        columns = BETA_COLUMNS
        if g.get("tuner") in ONE_BETA:      # one β for every weight: one line, named so
            columns = ((BETA_COLUMNS[0][0], "β (one for every weight)", "C3", "-"),)
        for col, name, color, ls in columns:
            have = [r for r in ok if col in r.data and len(r.data[col])]
            if not have:
                continue
            x, a = on_common_x([r.bin for r in have], [r.episode_x for r in have],
                               [r.data[col] for r in have], whole=True)
            m, se, _ = mean_se(a)
            ax.plot(x, m, color=color, linestyle=ls, lw=1.4, label=name)
            ax.fill_between(x, m - se, m + se, color=color, alpha=0.2, lw=0)
        ax.set_title(ax.get_title() + f" ({run_count(g)})", fontsize=9 if g.n_diverged else 10)
    ax.set_xlabel("episode")
    ax.set_ylabel("mean β = log α")


def text_width(text, size=LEGEND_FONT):
    """Width in points of one line of text (mathtext where it has $...$) at the given size."""
    try:
        return float(text_to_path.get_text_width_height_descent(
            text, FontProperties(size=size), ismath="$" in text)[0])
    except ValueError:      # not valid mathtext: about 0.55 em a character
        return len(text) * size * 0.55


def legend_width(labels):
    """Inches a legend of these labels needs right of its axes: the widest label, the line sample
    and the padding."""
    return 0.55 + max((text_width(label) for label in labels), default=0.0) / 72


def place_legends(fig, axes):
    """Legends outside the axes, so that no curve is hidden: one for the figure right of the panels
    when every panel has the same entries, else one right of each panel.

    Returns the width (inches) each legend needs, one per axes, or [width] for a shared one.
    """
    entries = [ax.get_legend_handles_labels() for ax in axes]
    style = lambda h, lab: (lab, to_rgba(h.get_color()), h.get_linestyle(), h.get_marker())
    keys = [[style(h, lab) for h, lab in zip(*e)] for e in entries]
    if keys and keys[0] and all(k == keys[0] for k in keys):
        fig.legend(*entries[0], loc="outside right upper", fontsize=LEGEND_FONT)
        return [legend_width(entries[0][1])]
    for ax, (handles, labels) in zip(axes, entries):
        if handles:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      borderaxespad=0.0, fontsize=LEGEND_FONT)
    return [legend_width(labels) if labels else 0.0 for _, labels in entries]


def subtitle(panels, n_runs, k):
    """The protocol line under the title: runs, mean ± s.e., diverged ×, the median rule, and the
    bins of compact results."""
    runs = {id(r): r for p in panels for c in p.curves for r in c.group.runs}.values()
    bins = sorted({r.bin for r in runs if r.bin > 1})
    text = (f"{n_runs} runs; mean over runs, ±1 s.e. shaded; × = diverged run; thin dotted = "
            f"median over runs, drawn where a setting's mean and median final return differ by "
            f"at least its s.e.")
    if bins:
        width = sorted({max(1, round(k / b)) for b in bins})
        text += (f"; from compact results: means of {'/'.join(map(str, bins))}-episode bins, "
                 f"trailing mean of {'/'.join(map(str, width))} bin(s)")
    return text


def draw(spec, panels, note, n_runs):
    """The figure: one axes per panel, spec.ncols per row, tick labels on every panel, legends
    outside (place_legends), a title with the protocol."""
    ncols = min(spec.ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.5 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=spec.share, sharey=spec.share).ravel()
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        ax.set_title(panel.title, fontsize=10)
        if panel.kind == "beta":
            draw_beta_panel(ax, panel)
        else:
            draw_return_panel(ax, panel, spec.k, spec.by_steps)
        if spec.share and i % ncols:
            ax.set_ylabel("")
        ax.tick_params(labelbottom=True, labelleft=True)    # shared axes hide them on inner panels
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.remove()
    if spec.same_y:         # the return panels on one y-range (Fig. 7 a, c, e)
        ret = [ax for ax, p in zip(axes, panels) if p.kind == "return"]
        lo, hi = min(ax.get_ylim()[0] for ax in ret), max(ax.get_ylim()[1] for ax in ret)
        for ax in ret:
            ax.set_ylim(lo, hi)
    legends = place_legends(fig, axes[:len(panels)])
    shared = bool(fig.legends)
    width = 4.6 * ncols + (legends[0] if shared else
                           sum(max(legends[c::ncols]) for c in range(ncols)))
    span = 4.6 * ncols if shared else width     # the title stays clear of a shared legend
    lines = [spec.title, subtitle(panels, n_runs, spec.k)] + ([note] if note else [])
    text = "\n".join(textwrap.fill(line, int(12 * span)) for line in lines)
    fig.set_size_inches(width, 3.5 * nrows + 0.2 * (text.count("\n") + 1) + 0.2)
    fig.suptitle(text, fontsize=11, x=span / 2 / width)
    return fig


# --------------------------------------------------------------------------------------------
# Summary table

def summary(number, panels, last=LAST):
    """One row per curve of the return panels: counts, final return ± s.e. (non-diverged runs),
    spread_alpha0 = max - min final return over the α0 of one panel and method (needs 2 α0 with a
    final return), best_mu = best µ of the method (domain, tuner, normalization, drift) in this
    figure (`best_mu`; blank for no tuning)."""
    rows = []
    for panel in panels:
        if panel.kind != "return":
            continue
        for c in panel.curves:
            g = c.group
            fr, se, _ = g.final(last)
            rows.append({"figure": number, "panel": plain(panel.title),
                         "domain": g.get("domain"), "tuner": g.get("tuner"),
                         "normalized": g.get("normalized", True), "drift": g.get("drift", 0.0),
                         "mu": g.get("mu"), "alpha0": g.get("alpha"), "n_runs": len(g.runs),
                         "n_diverged": g.n_diverged, "n_unfinished": g.n_unfinished,
                         "final_return": fr, "final_return_se": se,
                         "mean_return": g.mean_return(), "note": c.role})
    method = lambda r: (r["domain"], r["tuner"], r["normalized"], r["drift"])
    curve_set = lambda r: (r["panel"], r["mu"]) + method(r)     # the α0 of one panel and method
    spread_of = {}
    for r in rows:
        if not r["note"]:
            spread_of.setdefault(curve_set(r), {})[r["alpha0"]] = r["final_return"]
    best = {}
    for r in rows:
        if r["tuner"] not in BASELINE:
            best.setdefault(method(r), {})[(r["mu"], r["alpha0"], r["panel"])] = r["final_return"]
    best = {m: best_mu([(mu, a, fr) for (mu, a, _), fr in v.items()]) for m, v in best.items()}
    for r in rows:
        finals = [] if r["note"] else [v for v in spread_of[curve_set(r)].values()
                                        if math.isfinite(v)]
        r["spread_alpha0"] = max(finals) - min(finals) if len(finals) >= 2 else math.nan
        r["best_mu"] = best.get(method(r))
    return rows


def format_summary(rows):
    """The summary as an aligned text table (α0, µ as powers of two; final ± s.e.)."""
    head = ["fig", "panel", "domain", "tuner", "norm", "drift", "mu", "alpha0", "runs", "diverged",
            "final return", "mean return", "spread(α0)", "best mu", "note"]
    num = lambda x: "" if x is None or not math.isfinite(x) else f"{x:.1f}"
    body = [[str(r["figure"]), r["panel"], str(r["domain"]), str(r["tuner"]),
             "yes" if r["normalized"] else "no", f"{r['drift']:g}" if r["drift"] else "0",
             pow2(r["mu"]), pow2(r["alpha0"]), str(r["n_runs"]),
             f"{r['n_diverged']}/{r['n_runs']}" + (f" ({r['n_unfinished']} unfinished)"
                                                   if r["n_unfinished"] else ""),
             (num(r["final_return"]) + (f" ± {num(r['final_return_se'])}"
                                        if math.isfinite(r["final_return_se"]) else ""))
             or ("all diverged" if r["n_diverged"] == r["n_runs"] else "-"), num(r["mean_return"]),
             num(r["spread_alpha0"]),
             pow2(r["best_mu"]) if r["best_mu"] is not None else "", r["note"]] for r in rows]
    width = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, width)).rstrip()
                     for line in [head] + body)


def write_summary(rows, path):
    """figN_summary.csv: SUMMARY_COLUMNS, numbers at full precision, NaN as empty."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v))
                            else v) for k, v in r.items()})


# --------------------------------------------------------------------------------------------
# Entry points

def compact_notes(panels, paths, last=LAST):
    """Notes on compact results: final returns from whole bins that overrun the last `last`
    episodes, and run directories compared on the compact settings only."""
    runs = {id(r): r for p in panels for c in p.curves for r in c.group.runs}.values()
    over = [r for r in runs
            if r.bin > 1 and not binned_final(r.returns, r.data["episodes"], last)[1]]
    notes = []
    if over:
        notes.append(f"{len(over)} compact runs: final return over the whole bins covering their "
                     f"last {last} episodes (bin edges do not fall {last} episodes before the end)")
    if any(os.path.isfile(p) for p in paths) and any(os.path.isdir(p) for p in paths):
        notes.append("run directories and compact files: settings compared on "
                     + ", ".join(k for k in COMPACT_KEYS if k != "seed"))
    return notes


def lacking_steps(panels):
    """Runs of the return panels without a steps column (Figs. 8-9 need agent steps)."""
    runs = {id(r): r for p in panels if p.kind == "return" for c in p.curves for r in c.group.runs}
    return [r for r in runs.values() if len(r.returns) and "steps" not in r.data]


def figure_spec(spec, panels, suite):
    """The spec as drawn: the suite in the title of Figs. 8-9, and one smoothing window for the
    whole figure, the widest any of its runs needs (compact runs of different bins)."""
    runs = [r for p in panels for c in p.curves for r in c.group.runs]
    k = max([window(r, spec.k) * r.bin for r in runs] or [spec.k])
    title = spec.title
    if spec.suite_title:
        head, _, rest = title.partition(":")
        title = f"{head} ({'MinAtar, an analogue of the ALE figure' if suite == 'minatar' else 'ALE'}):{rest}"
    return replace(spec, k=k, title=title)


def figure_base(out, number, suite="ale"):
    """out/figN, or out/figN_minatar for MinAtar's Figs. 8-9 (so they never overwrite ALE's)."""
    return os.path.join(out, f"fig{number}" + ("_minatar" if suite == "minatar" else ""))


def make_figure(number, results, out, suite="ale", name=None):
    """Draw figure `number` from results (a path or a list: folders of run directories or compact
    *_runs.csv files) into out/figN.{png,pdf,_summary.csv} (figN_minatar.* with suite "minatar").

    Returns (matplotlib Figure, summary rows). FigureError on an unknown figure or no runs; every
    check runs before anything is written.
    """
    paths = [results] if isinstance(results, str) else list(results)
    if number not in FIGURES:
        raise FigureError(f"--fig {number} is outside 1..9")
    for path in paths:
        if not os.path.exists(path):
            raise FigureError(f"results {path} does not exist (figure {number})")
    if os.path.exists(out) and not os.path.isdir(out):
        raise FigureError(f"--out {out} is a file, not a directory")
    where = ", ".join(paths)
    runs = load_results(paths)
    if not runs:
        raise FigureError(f"no runs (config.json + episodes.csv, or compact rows) under {where} "
                          f"for figure {number}")
    groups = group_runs(runs)
    spec = FIGURES[number]
    panels, note = spec.build(groups, {"suite": suite})
    if not panels:
        found = sorted({f"{g.get('domain')}/{g.get('tuner')}" for g in groups})
        raise FigureError(f"no runs for figure {number} under {where}: it needs {note} "
                          f"(found domain/tuner: {', '.join(found)})")
    lacking = lacking_steps(panels) if spec.by_steps else []
    if lacking:
        raise FigureError(f"figure {number} is drawn against agent steps, but {len(lacking)} runs "
                          f"have no steps column (first: {lacking[0].path})")
    note = "; ".join(([note] if note else []) + compact_notes(panels, paths))
    n_runs = len({id(r) for p in panels for c in p.curves for r in c.group.runs})
    fig = draw(figure_spec(spec, panels, suite), panels, note, n_runs)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise FigureError(f"--out {out} cannot be created ({e.strerror})") from None
    base = os.path.join(out, name) if name else figure_base(out, number, suite)
    fig.savefig(base + ".png", dpi=120)
    fig.savefig(base + ".pdf")
    rows = summary(number, panels)
    write_summary(rows, base + "_summary.csv")
    return fig, rows


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no abbreviated flags."""

    def __init__(self, *a, **k):
        super().__init__(*a, allow_abbrev=False, **k)

    def error(self, message):
        raise FigureError(message)


def parser(prog="figures.py"):
    p = _Parser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fig", required=True, help="figure number, 1..9")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="folders holding run directories, or compact *_runs.csv files "
                        "(docs/compact.py); several may be combined")
    p.add_argument("--out", default="figures", help="output folder (default %(default)s)")
    p.add_argument("--name", default=None, metavar="BASE",
                   help="file name of the outputs, without extension (default figN, or "
                        "figN_minatar with --suite minatar)")
    p.add_argument("--suite", choices=("ale", "minatar"), default=None,
                   help="Figs. 8-9 only: the ALE games (default) or their MinAtar versions")
    return p


def main(argv=None, prog="figures.py"):
    """`python figures.py --fig N RESULTS... --out FIGDIR`; bad input -> one line, exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser(prog).parse_args(argv)
        try:
            number = int(args.fig)
        except ValueError:
            raise FigureError(f"--fig {args.fig!r} is not a figure number 1..9") from None
        if not args.out.strip():
            raise FigureError(f"--out {args.out!r} is empty; give a folder (default figures)")
        if args.suite is not None and number not in (8, 9):
            raise FigureError(f"--suite applies to Figs. 8-9 only, not to --fig {number}")
        if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", args.name):
            raise FigureError(f"--name {args.name!r} must be a file name of letters, digits and "
                              "_ . + -, without a folder")
        fig, rows = make_figure(number, args.results, args.out, args.suite or "ale", args.name)
    except FigureError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(rows))
    base = (os.path.join(args.out, args.name) if args.name
            else figure_base(args.out, number, args.suite or "ale"))
    print(f"wrote {base}.png, {base}.pdf, {base}_summary.csv")
    return 0


# --------------------------------------------------------------------------------------------
# Learning curves of any runs, one curve per value of chosen settings (run.py plot)

PLOT_USAGE = "RUNS... --by KEY[,KEY...] --out FILE.png [--window K] [--x episodes|steps]"


def plot_parser(prog="run.py plot"):
    """Arguments of `run.py plot` (one-line errors, no abbreviated flags)."""
    p = _Parser(prog=prog, usage=f"%(prog)s {PLOT_USAGE}",
                description="Learning curves of run directories, one curve per value of --by: each "
                            "run's returns (score where recorded) smoothed by a trailing mean, then "
                            "mean ±1 s.e. over the group's runs that did not diverge.")
    p.add_argument("runs", nargs="+", metavar="RUNS",
                   help="run directories (config.json + episodes.csv) or folders searched for them")
    p.add_argument("--by", required=True, metavar="KEY[,KEY...]",
                   help="setting(s) to group by, e.g. lam or tuner,alpha")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="PNG to write; FILE.csv beside it holds the plotted numbers")
    p.add_argument("--window", default=str(K_MOUNTAIN_CAR), metavar="K",
                   help="trailing-mean window in episodes, an integer >= 1 (default %(default)s)")
    p.add_argument("--x", choices=("episodes", "steps"), default="episodes",
                   help="x axis: episodes, or agent steps on a common grid (default %(default)s)")
    return p


def parse_window(text):
    """--window K as an int >= 1; anything else is a FigureError."""
    try:
        k = int(text)
    except (TypeError, ValueError):
        k = 0
    if k < 1:
        raise FigureError(f"--window {text!r} is not an integer >= 1 (accepted: 1, 2, 3, ...)")
    return k


def plot_paths(out):
    """(png, csv) paths for --out FILE.png; FigureError for a directory, a missing directory or no .png."""
    if os.path.isdir(out):
        raise FigureError(f"--out {out} is a directory; give a file such as "
                          f"{os.path.join(out, 'curves.png')}")
    base, ext = os.path.splitext(out)
    if ext.lower() != ".png":
        raise FigureError(f"--out {out} does not end in .png")
    folder = os.path.dirname(out) or "."
    if not os.path.isdir(folder):
        raise FigureError(f"--out {out}: directory {folder} does not exist")
    return out, base + ".csv"


def collect_runs(paths):
    """The runs under every path (load_runs), each run directory once; FigureError when there are none."""
    runs, seen = [], set()
    for path in paths:
        if os.path.isfile(path):
            raise FigureError(f"RUNS {path} is a file; give its run directory or a folder of runs")
        for run in load_runs(path):
            real = os.path.realpath(run.path)
            if real not in seen:
                seen.add(real)
                runs.append(run)
    if not runs:
        raise FigureError(f"no runs (config.json + episodes.csv) under {', '.join(paths)}")
    return runs


def parse_by(text, runs):
    """--by "tuner,alpha" -> ("tuner", "alpha"); FigureError naming an unknown key and the known ones."""
    keys = tuple(dict.fromkeys(k.strip() for k in text.split(",")))
    known = sorted(set().union(*(r.settings for r in runs)))
    for k in keys:
        if k not in known:
            name = f"setting {k!r}" if k else "an empty setting name"
            raise FigureError(f"--by {text!r}: the runs have no {name}; their settings are "
                              f"{', '.join(known)}")
    return keys


def value_order(v):
    """Sort key for setting values: numbers by size, then text, then unset."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (2, 0.0, "") if v is None else (1, 0.0, str(v))


def setting_text(v, tex=False):
    """A setting's value for a label: exact powers of two (but 1) as 2^k (pow2), floats %g, else str."""
    if v is None:
        return "(unset)"
    if isinstance(v, float):
        if math.isfinite(v) and v > 0 and v != 1.0 and math.log2(v).is_integer():
            return pow2(v, tex)
        return f"{v:.6g}"
    return str(v).replace("$", r"\$") if tex else str(v)


def group_by(runs, keys):
    """Runs -> one Group per tuple of values of keys (Group.settings = those values), sorted by them."""
    number = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    groups = {}
    for run in runs:
        values = tuple(run.settings.get(k) for k in keys)
        ident = json.dumps([number(v) for v in values], sort_keys=True, default=str)
        groups.setdefault(ident, Group(dict(zip(keys, values)), [])).runs.append(run)
    return sorted(groups.values(), key=lambda g: tuple(value_order(g.get(k)) for k in keys))


def group_label(group, keys, tex=False):
    """'KEY=value, KEY=value' of one group."""
    return ", ".join(f"{k}={setting_text(group.get(k), tex)}" for k in keys)


def count_label(group):
    """'(n runs)' or '(n runs, d diverged)'."""
    n, d = len(group.runs), group.n_diverged
    return f"({n} run{'' if n == 1 else 's'}" + (f", {d} diverged" if d else "") + ")"


def uneven(group, by_steps):
    """True when the group's non-diverged runs end at different episodes (or agent steps)."""
    runs = [r for r in group.ok_runs if len(r.returns)]
    ends = {float(r.data["steps"][-1]) if by_steps else len(r.returns) for r in runs}
    return len(ends) > 1


def plot_notes(setting_groups, groups, keys, by_steps):
    """Lines for the figure's title: settings that vary but are not grouped by, unequal run lengths,
    runs without episodes, unfinished runs.  setting_groups: group_runs (settings minus seed)."""
    notes = []
    other = varying(setting_groups, keys)
    if other:
        notes.append(f"also varying, not grouped by: {', '.join(other)}")
    short = [g for g in groups if uneven(g, by_steps)]
    if short:
        what = "agent steps" if by_steps else "episodes"
        notes.append(f"runs of unequal length in {len(short)} of {len(groups)} groups: each mean "
                     f"covers only the {what} all its runs reached")
    empty = sum(not len(r.returns) for g in groups for r in g.runs)
    if empty:
        notes.append(f"{empty} runs have no episodes yet")
    unfinished = sum(g.n_unfinished for g in groups)
    if unfinished:
        notes.append(f"{unfinished} runs not finished (status neither finished nor diverged)")
    return notes


def group_colors(n):
    """n distinct colours: the default cycle up to 10, else viridis."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = colormaps["viridis"]
    return [cmap(i / (n - 1) * 0.9) for i in range(n)]


def draw_plot(groups, curves, keys, k, by_steps, notes):
    """One axes of mean curves (±1 s.e. bands, diverged runs thin ending in ×), legend right of it."""
    fig = Figure(figsize=(9.5, 5.0), layout="constrained")
    ax = fig.subplots()
    for g, curve, color in zip(groups, curves, group_colors(len(groups))):
        label = f"{group_label(g, keys, tex=True)} {count_label(g)}"
        if curve is not None:
            x, m, se, _ = curve
            ax.plot(x, m, color=color, lw=1.4, label=label)
            ax.fill_between(x, m - se, m + se, color=color, alpha=0.2, lw=0)
        else:   # every run diverged (or has no episodes): keep the legend entry
            ax.plot([], [], color=color, marker="x", label=label)
        for r in g.runs:
            if r.diverged and len(r.returns):
                rx, ry = run_curve(r, k, by_steps)
                ax.plot(rx, ry, color=color, lw=0.7, alpha=0.7)
                ax.plot(rx[-1:], ry[-1:], color=color, marker="x", ms=8, mew=2, linestyle="none")
    ax.set_xlabel("agent steps" if by_steps else "episode")
    if by_steps:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    cols = {"score" if "score" in r.data else "return" for g in groups for r in g.runs}
    ax.set_ylabel(f"{' / '.join(sorted(cols, reverse=True))} (trailing mean of {k} episodes)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, ncols=math.ceil(len(groups) / 24))
    n_runs = sum(len(g.runs) for g in groups)
    lines = [f"Learning curves by {', '.join(keys)}",
             f"{n_runs} runs; mean over the runs that did not diverge, ±1 s.e. shaded; "
             f"× = diverged run"] + notes
    ax.set_title("\n".join(textwrap.fill(line, 90) for line in lines), fontsize=9)
    return fig


def curve_rows(groups, curves, keys):
    """The plotted numbers: one {group, x, mean, se, n} row per point of every curve."""
    rows = []
    for g, curve in zip(groups, curves):
        if curve is None:
            continue
        for x, m, se, n in zip(*curve):
            rows.append({"group": group_label(g, keys), "x": int(x) if float(x).is_integer() else
                         float(x), "mean": float(m), "se": float(se), "n": int(n)})
    return rows


def write_curve_rows(rows, path):
    """FILE.csv: group, x, mean, se, n; NaN (s.e. of a single run) as empty."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=("group", "x", "mean", "se", "n"))
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if isinstance(v, float) and not math.isfinite(v) else v
                        for k, v in r.items()})


def make_plot(paths, by, out, k, by_steps):
    """Learning curves of the runs under paths grouped by `by`, written to out (PNG) and its .csv.

    Returns (Figure, groups, csv rows, (png, csv) paths). Every check runs before anything is written.
    """
    png, csv_path = plot_paths(out)
    runs = collect_runs(paths)
    keys = parse_by(by, runs)
    if by_steps:
        lacking = [r.path for r in runs if len(r.returns) and "steps" not in r.data]
        if lacking:
            raise FigureError(f"--x steps: {len(lacking)} runs have no steps column (first: "
                              f"{lacking[0]}); use --x episodes")
    setting_groups = group_runs(runs)         # repeats of one run (same settings, seed) once
    groups = group_by([r for g in setting_groups for r in g.runs], keys)
    curves = [group_curve(g, k, by_steps) for g in groups]
    notes = plot_notes(setting_groups, groups, keys, by_steps)
    fig = draw_plot(groups, curves, keys, k, by_steps, notes)
    rows = curve_rows(groups, curves, keys)
    try:
        fig.savefig(png, dpi=120)
        write_curve_rows(rows, csv_path)
    except OSError as e:
        raise FigureError(f"--out {out} cannot be written ({e.strerror or e})") from None
    return fig, groups, rows, (png, csv_path)


def plot_main(argv=None, prog="run.py plot"):
    """`run.py plot RUNS... --by KEY --out FILE.png [--window K] [--x episodes|steps]` -> exit status
    (bad input: one line on stderr, status 2, nothing written)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = plot_parser(prog).parse_args(argv)
        k = parse_window(args.window)
        _, groups, rows, paths = make_plot(args.runs, args.by, args.out, k, args.x == "steps")
    except FigureError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    keys = tuple(groups[0].settings)
    last = {}
    for r in rows:
        last[r["group"]] = r
    for g in groups:
        r = last.get(group_label(g, keys))
        end = f"{r['mean']:.1f} at {args.x[:-1]} {r['x']:g}" if r else "no curve (all diverged)"
        print(f"{group_label(g, keys)} {count_label(g)}: {end}")
    print(f"wrote {paths[0]}, {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

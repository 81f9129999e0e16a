"""The tables of docs/*.md that state figures, generated from the committed summary and compact
CSVs, so that the text and the data cannot drift apart.

    python docs/tables.py            rewrite every generated block of docs/*.md
    python docs/tables.py --check    exit status 1, naming each block that is out of date
    python docs/tables.py docs/figures/fig2_summary.csv     print one α0 × µ table

A generated block in a .md file sits between `<!-- table: NAME -->` and `<!-- /table -->`; NAME
is a key of TABLES.  Final return = the figures' final return (figures.py: the mean of the last
100 episodes; from compact files, of the whole bins covering them); ± is one standard error over
seeds; a difference of two methods has the combined s.e. √(s₁² + s₂²) (independent runs).
"""
import argparse
import csv
import math
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import figures  # noqa: E402
import metatrace as mt  # noqa: E402

DOCS = os.path.dirname(os.path.abspath(__file__))
FIGS = os.path.join(DOCS, "figures")
DRIFTS = ("4e-6", "6e-6", "8e-6", "1e-5")
FIG9_GAMES = ("breakout", "space_invaders", "seaquest", "asterix", "freeway")
BLOCK = re.compile(r"(<!-- table: (\w+) -->\n)(.*?)(<!-- /table -->)", re.S)
MINUS = "\u2212"


# -------------------------------------------------------------------------------- formatting

def num(x, digits=1, sign=False):
    """x with a true minus sign; '+' too with sign=True; '–' for NaN."""
    if x is None or not math.isfinite(x):
        return "–"
    text = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    return text.replace("-", MINUS)


def sig3(x):
    """x to 3 significant digits, trailing zeros kept (0.110, 2.48, 23.6)."""
    if x is None or not math.isfinite(x) or x == 0:
        return num(x, 2)
    return num(x, max(0, 2 - math.floor(math.log10(abs(x)))))


def pm(m, se, digits=1, sign=False):
    """mean ± s.e. (just the mean where the s.e. is undefined)."""
    return num(m, digits, sign) + ("" if se is None or not math.isfinite(se)
                                   else f" ± {num(se, digits)}")


def p2(x):
    """2^k as plain text for a power of two."""
    return f"2^{round(math.log2(float(x)))}"


def sup(x):
    """2⁻ᵏ in superscripts for a power of two."""
    k = round(math.log2(float(x)))
    digits = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
    return "2" + str(k).translate(digits)


def rate(d):
    """6e-06 -> 6×10⁻⁶ (1e-05 -> 1×10⁻⁵)."""
    m, e = f"{float(d):.0e}".split("e")
    return f"{m}×10" + str(int(e)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fl(r, key):
    """A summary cell as a float (NaN when empty)."""
    return float(r[key]) if r.get(key) not in (None, "") else math.nan


def table_md(head, rows):
    """A markdown table."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


# -------------------------------------------------------------------------------- Figs. 1-5

def cell(r):
    """final (mean over all episodes), or the count of diverged runs."""
    if not r["final_return"]:
        return f"diverged {r['n_diverged']}/{r['n_runs']}"
    d = f", {r['n_diverged']}/{r['n_runs']} div." if int(r["n_diverged"]) else ""
    return f"{float(r['final_return']):.0f} ({float(r['mean_return']):.0f}{d})"


def table(path):
    """The α0 × µ markdown table of one summary CSV (Figs. 1-5); spread = max − min over α0."""
    rows = read(path)
    mus = sorted({r["mu"] for r in rows}, key=lambda x: -float(x))
    alphas = sorted({r["alpha0"] for r in rows}, key=lambda x: -float(x))
    untuned = mt.TUNER[rows[0]["tuner"]].baseline
    out = ["| µ \\ α0 | " + " | ".join(p2(a) for a in alphas) + " | spread |",
           "|---" * (len(alphas) + 2) + "|"]
    for mu in mus:
        rr = {r["alpha0"]: r for r in rows if r["mu"] == mu}
        spread = rr[alphas[0]]["spread_alpha0"]
        tail = f" | {float(spread):.1f} |" if spread else " | – |"
        out.append(f"| {'—' if untuned else p2(mu)} | " + " | ".join(cell(rr[a]) for a in alphas)
                   + tail)
    return "\n".join(out)


# -------------------------------------------------------------------------------- Figs. 6-7

def best_rows(fig_dir):
    """fig6_summary.csv: {(drift, tuner): row} of each method at its best µ."""
    return {(float(r["drift"]), r["tuner"]): r for r in read(os.path.join(fig_dir, "fig6_summary.csv"))}


def fig6_best(fig_dir=FIGS):
    """Fig. 6: each method at its best µ per drift rate, final ± s.e., mixed − scalar, and the
    mean return over the whole run."""
    best = best_rows(fig_dir)
    out = [row_fig6(best, d) for d in sorted({k[0] for k in best})]
    return table_md(["drift", "no tuning", "scalar (µ)", "vector (µ)", "mixed (µ)",
                     "mixed − scalar", "mean over the run: none / scalar / vector / mixed"], out)


def row_fig6(best, d):
    """One drift rate of fig6_best."""
    cells = [rate(d)]
    for t in ("none", "scalar", "vector", "mixed"):
        r = best[(d, t)]
        mu = "" if t == "none" else f" ({sup(r['mu'])})"
        cells.append(pm(fl(r, "final_return"), fl(r, "final_return_se")) + mu)
    m, s = best[(d, "mixed")], best[(d, "scalar")]
    cells.append(pm(fl(m, "final_return") - fl(s, "final_return"),
                    math.hypot(fl(m, "final_return_se"), fl(s, "final_return_se")), sign=True))
    cells.append(" / ".join(num(fl(best[(d, t)], "mean_return"))
                            for t in ("none", "scalar", "vector", "mixed")))
    return cells


def fig6_margins(fig_dir=FIGS):
    """Fig. 6: each tuner at its best µ minus no tuning, in points and in combined s.e."""
    best = best_rows(fig_dir)
    out = []
    for d in sorted({k[0] for k in best}):
        n = best[(d, "none")]
        cells = [rate(d)]
        for t in ("scalar", "vector", "mixed"):
            r = best[(d, t)]
            diff = fl(r, "final_return") - fl(n, "final_return")
            se = math.hypot(fl(r, "final_return_se"), fl(n, "final_return_se"))
            cells.append(f"{pm(diff, se, sign=True)} ({num(diff / se)} s.e.)")
        out.append(cells)
    return table_md(["drift", "scalar − none", "vector − none", "mixed − none"], out)


def fig6_groups(fig_dir=FIGS):
    """Every drifting-mountain-car group of the Fig. 6 files (seeds 0-19), by (drift, tuner, µ)."""
    paths = sorted(os.path.join(fig_dir, f) for f in os.listdir(fig_dir)
                   if re.fullmatch(r"fig6_drift.*_runs\.csv", f))
    groups = figures.group_runs(figures.load_results(paths))
    return {(g.get("drift"), g.get("tuner"), g.get("mu")): g for g in groups
            if g.get("alpha") == figures.DRIFT_ALPHA0}


def fig6_grid(fig_dir=FIGS):
    """Fig. 6: the final return of every µ tried, per drift rate and method; the best in bold,
    and whether it lies on the edge of the µ tried."""
    groups = fig6_groups(fig_dir)
    mus = sorted({k[2] for k in groups if k[1] != "none"}, reverse=True)
    out = []
    for d in sorted({k[0] for k in groups}):
        for t in ("scalar", "vector", "mixed"):
            mine = {k[2]: g for k, g in groups.items() if k[0] == d and k[1] == t}
            if not mine:
                continue
            best = figures.best_mu([(mu, None, g.final()[0]) for mu, g in mine.items()])
            tried = sorted(mine)
            cells = [rate(d), t]
            for mu in mus:
                g = mine.get(mu)
                if g is None:
                    cells.append("")
                    continue
                fr, _, _ = g.final()
                text = num(fr) + (f" ({g.n_diverged} div.)" if g.n_diverged else "")
                cells.append(f"**{text}**" if mu == best else text)
            edge = "upper edge" if best == tried[-1] else "lower edge" if best == tried[0] else "inside"
            cells.append(edge)
            out.append(cells)
    return table_md(["drift", "method", *(sup(m) for m in mus), "best µ lies"], out)


def fig7_mu(fig_dir=FIGS):
    """Fig. 7 (a, c, e): final return ± s.e. (mean over the run) of every µ at drift 6×10⁻⁶."""
    rows = read(os.path.join(fig_dir, "fig7_summary.csv"))
    mus = sorted({float(r["mu"]) for r in rows}, reverse=True)
    out = []
    for t in ("scalar", "vector", "mixed"):
        mine = {float(r["mu"]): r for r in rows if r["tuner"] == t}
        cells = [t]
        for mu in mus:
            r = mine.get(mu)
            cells.append("" if r is None else f"{pm(fl(r, 'final_return'), fl(r, 'final_return_se'))}"
                         f" ({num(fl(r, 'mean_return'))})")
        out.append(cells)
    return table_md(["method", *(f"µ = {sup(m)}" for m in mus)], out)


def fig7_beta(fig_dir=FIGS):
    """Fig. 7 (b, d, f): mean β over the last 100 episodes at α0 = µ = 2⁻¹⁰, drift 6×10⁻⁶, per
    group of weights, mean over the seeds."""
    groups = fig6_groups(fig_dir)
    cols = ("beta_critic", "beta_critic_noise", "beta_actor", "beta_actor_noise")
    out = []
    for t in ("scalar", "vector", "mixed"):
        g = groups.get((6e-6, t, figures.FIG7_MU))
        if g is None:
            continue
        last = [np.mean([r.data[c][-1] for r in g.ok_runs]) for c in cols]
        out.append([t, *(num(v, 2) for v in last), num(last[0] - last[1], 2),
                    num(last[2] - last[3], 2)])
    return table_md(["method", "critic, informative", "critic, noise", "actor, informative",
                     "actor, noise", "critic gap", "actor gap"], out)


def finals_by_seed(paths, **equal):
    """{seed: final return} of the one group of runs in paths whose settings match equal."""
    runs = [r for r in figures.load_results(paths)
            if all(r.settings.get(k) == v for k, v in equal.items())]
    return {r.settings["seed"]: r.final() for r in runs if not r.diverged}


FRESH = (  # method, its chosen setting at drift 6e-6, the file of its selection seeds 0-19
    ("no tuning", "α = 2⁻¹⁰", "fig6_drift6e-6_runs.csv",
     dict(tuner="none", alpha=2.0 ** -10)),
    ("scalar", "α0 = 2⁻¹⁰, µ = 2⁻⁸", "fig6_drift6e-6_runs.csv",
     dict(tuner="scalar", alpha=2.0 ** -10, mu=2.0 ** -8)),
    ("vector", "α0 = 2⁻¹⁰, µ = 2⁻⁸", "fig6_drift6e-6_runs.csv",
     dict(tuner="vector", alpha=2.0 ** -10, mu=2.0 ** -8)),
    ("mixed", "α0 = 2⁻¹⁰, µ = 2⁻¹⁰", "fig6_drift6e-6_runs.csv",
     dict(tuner="mixed", alpha=2.0 ** -10, mu=2.0 ** -10)),
    ("ObGD", "α = 2⁻⁶, κ = 0.125", "cmp_dmc_obgd_runs.csv",
     dict(tuner="obgd", alpha=2.0 ** -6, kappa=0.125)),
)


def mean_se(values):
    """(mean, s.e., n) of a list of numbers (figures.mean_se of one column)."""
    m, se, n = figures.mean_se(np.asarray(list(values), dtype=float)[:, None])
    return float(m[0]), float(se[0]), int(n[0])


def dmc_fresh(fig_dir=FIGS):
    """Each method's chosen setting at drift 6×10⁻⁶: the seeds it was chosen on (0-19) and 20
    fresh seeds (20-39), final return ± s.e."""
    fresh = os.path.join(fig_dir, "dmc_fresh_seeds_runs.csv")
    out = []
    for name, setting, sel_file, equal in FRESH:
        sel = finals_by_seed([os.path.join(fig_dir, sel_file)], drift=6e-6, **equal)
        new = finals_by_seed([fresh], drift=6e-6, **equal)
        (a, sa, na), (b, sb, nb) = mean_se(sel.values()), mean_se(new.values())
        out.append([name, setting, f"{pm(a, sa)} (n={na}, seeds {min(sel)}–{max(sel)})",
                    f"{pm(b, sb)} (n={nb}, seeds {min(new)}–{max(new)})",
                    pm(b - a, math.hypot(sa, sb), sign=True)])
    return table_md(["method", "chosen setting", "selection seeds", "fresh seeds",
                     "fresh − selection"], out)


def dmc_fresh_pairs(fig_dir=FIGS):
    """Pairwise differences on the fresh seeds alone, with Welch's t-test."""
    from scipy import stats
    fresh = [os.path.join(fig_dir, "dmc_fresh_seeds_runs.csv")]
    f = {name: finals_by_seed(fresh, drift=6e-6, **eq) for name, _, _, eq in FRESH}
    out = []
    for a, b in (("mixed", "scalar"), ("mixed", "ObGD"), ("scalar", "ObGD"), ("mixed", "vector"),
                 ("vector", "no tuning"), ("scalar", "no tuning")):
        x, y = list(f[a].values()), list(f[b].values())
        (ma, sa, _), (mb, sb, _) = mean_se(x), mean_se(y)
        p = stats.ttest_ind(x, y, equal_var=False).pvalue
        out.append([f"{a} − {b}", pm(ma - mb, math.hypot(sa, sb), sign=True), f"{p:.2g}",
                    "separable" if p < 0.05 else "not separable"])
    return table_md(["pair (fresh seeds 20–39)", "difference", "Welch p", "at p < 0.05"], out)


# -------------------------------------------------------------------------------- Figs. 8-9

def fig8(fig_dir=FIGS, name="fig8_minatar_breakout_summary.csv", digits=2, mean=True):
    """Fig. 8 (MinAtar): final score (mean over the run) per α0 and tuner, and the spread over
    α0; '—' for a setting not run."""
    rows = read(os.path.join(fig_dir, name))
    tuners = ("none", "scalar", "vector", "mixed")
    by = {(r["tuner"], float(r["alpha0"])): r for r in rows}
    alphas = sorted({k[1] for k in by}, reverse=True)
    cell = lambda r: "—" if r is None else num(fl(r, "final_return"), digits) + (
        f" ({num(fl(r, 'mean_return'), digits)})" if mean else "")
    out = [[sup(a)] + [cell(by.get((t, a))) for t in tuners] for a in alphas]
    out.append(["spread"] + [num(max(fl(r, "spread_alpha0") for k, r in by.items() if k[0] == t),
                                 digits) for t in tuners])
    return table_md(["α₀", *tuners], out)


def fig8_seaquest(fig_dir=FIGS):
    """The first Fig. 8 attempt, MinAtar Seaquest (15 runs): final score per α0 and tuner."""
    return fig8(fig_dir, "fig8_minatar_summary.csv", mean=False)


def fig9_rows(fig_dir=FIGS):
    """fig9_minatar_summary.csv: {(game, tuner, α0): row} (the best-constant-α rows left out)."""
    return {(r["domain"].replace("minatar-", ""), r["tuner"], float(r["alpha0"])): r
            for r in read(os.path.join(fig_dir, "fig9_minatar_summary.csv")) if not r["note"]}


def fig9(fig_dir=FIGS):
    """Fig. 9 (MinAtar): final score ± s.e. over 3 seeds (mean over the run) per game and setting,
    diverged runs left out and counted, and the spread over α0 of mixed and of no tuning."""
    by = fig9_rows(fig_dir)
    alphas = (2.0 ** -5, 2.0 ** -6, 2.0 ** -7)
    digits = {"space_invaders": 1}
    out = []
    for game in FIG9_GAMES:
        k = digits.get(game, 2)
        cells = [game.replace("_", " ").title()]
        for t in ("mixed", "none"):
            for a in alphas:
                r = by[(game, t, a)]
                d = int(r["n_diverged"])
                text = (pm(fl(r, "final_return"), fl(r, "final_return_se"), k)
                        if r["final_return"] else "all diverged")
                text += f" ({num(fl(r, 'mean_return'), k)})"
                cells.append(text + (f", {d}/{r['n_runs']} diverged" if d else ""))
        cells.append(" / ".join(sig3(fl(by[(game, t, alphas[0])], "spread_alpha0"))
                                for t in ("mixed", "none")))
        out.append(cells)
    return table_md(["game", *(f"mixed {sup(a)}" for a in alphas),
                     *(f"none {sup(a)}" for a in alphas), "spread mixed / none"], out)


def fig9_runs(fig_dir=FIGS):
    """Fig. 9 (MinAtar), per run (18 per game): the ranges over runs of the first bin's mean, the
    final score, the whole-run mean and the highest bin mean."""
    out = []
    for game in FIG9_GAMES:
        runs = figures.load_results([os.path.join(fig_dir, f"fig9_minatar_{game}_runs.csv")])
        bins = {r.bin for r in runs}
        first = [r.returns[0] for r in runs]
        final = [r.final() for r in runs if not r.diverged]
        whole = [r.mean() for r in runs if not r.diverged]
        top = [max(r.returns) for r in runs]
        rng = lambda v: f"{num(min(v), 2)}–{num(max(v), 2)}"
        out.append([game.replace("_", " ").title(), str(len(runs)),
                    "/".join(map(str, sorted(bins))), rng(first), rng(final), rng(whole),
                    num(max(top), 2)])
    return table_md(["game", "runs", "bin (episodes)", "first bin", "final (runs that did not "
                     "diverge)", "whole run", "highest bin"], out)


def fig9_groups(game, fig_dir=FIGS):
    """{(tuner, α0): [runs]} of one game's Fig. 9 compact file."""
    out = {}
    for r in figures.load_results([os.path.join(fig_dir, f"fig9_minatar_{game}_runs.csv")]):
        out.setdefault((r.settings["tuner"], r.settings["alpha"]), []).append(r)
    return out


def spread_interval(finals_by_alpha, reps=2000, seed=0):
    """95 % bootstrap interval of the spread (max − min over α0 of the mean final score),
    resampling seeds within each α0 (numpy's Generator(PCG64(seed)), percentile method)."""
    rng = np.random.default_rng(seed)
    sets = [np.asarray(v, dtype=float) for v in finals_by_alpha if len(v)]
    draws = []
    for _ in range(reps):
        means = [rng.choice(v, len(v)).mean() for v in sets]
        draws.append(max(means) - min(means))
    return np.percentile(draws, [2.5, 97.5])


def fig9_tests(fig_dir=FIGS):
    """Fig. 9 (MinAtar): the spread over α0 with its 95 % bootstrap interval over seeds, and each
    mixed α0 against the best constant α (difference of final scores, Welch's t-test)."""
    from scipy import stats
    out = []
    for game in FIG9_GAMES:
        groups = fig9_groups(game, fig_dir)
        finals = {k: [r.final() for r in rs if not r.diverged] for k, rs in groups.items()}
        spreads = []
        for t in ("mixed", "none"):
            sets = [finals[(t, a)] for a in (2.0 ** -5, 2.0 ** -6, 2.0 ** -7)]
            means = [np.mean(v) for v in sets if v]
            lo, hi = spread_interval(sets)
            spreads.append(f"{num(max(means) - min(means), 2)} [{num(lo, 2)}, {num(hi, 2)}]")
        best = max((a for (t, a) in finals if t == "none" and len(finals[(t, a)]) >= 2),
                   key=lambda a: np.mean(finals[("none", a)]))
        y = finals[("none", best)]
        cells = [game.replace("_", " ").title(), *spreads, sup(best)]
        for a in (2.0 ** -5, 2.0 ** -6, 2.0 ** -7):
            x = finals[("mixed", a)]
            (mx, sx, _), (my, sy, _) = mean_se(x), mean_se(y)
            p = stats.ttest_ind(x, y, equal_var=False).pvalue
            cells.append(f"{pm(mx - my, math.hypot(sx, sy), 2, sign=True)} (p = {p:.2g})")
        out.append(cells)
    return table_md(["game", "spread mixed [95 % CI]", "spread none [95 % CI]",
                     "best constant α", *(f"mixed {sup(a)} − best α (Welch)" for a in
                                         (2.0 ** -5, 2.0 ** -6, 2.0 ** -7))], out)


def fig9_beta(fig_dir=FIGS):
    """Fig. 9 (MinAtar), mixed: mean β over the weights (log of the step-size), mean over seeds,
    in the first bin, at 100 k agent steps and in the last bin, against log α0."""
    out = []
    for game in FIG9_GAMES:
        groups = fig9_groups(game, fig_dir)
        for a in (2.0 ** -5, 2.0 ** -6, 2.0 ** -7):
            rs = [r for r in groups[("mixed", a)] if not r.diverged]
            at = lambda r: r.data["beta_mean"][min(int(np.searchsorted(r.data["steps"], 100_000)),
                                                   len(r.data["steps"]) - 1)]
            b = [np.mean([r.data["beta_mean"][0] for r in rs]), np.mean([at(r) for r in rs]),
                 np.mean([r.data["beta_mean"][-1] for r in rs])]
            out.append([game.replace("_", " ").title(), f"{sup(a)} ({num(math.log(a), 2)})",
                        *(num(v, 2) for v in b), num(b[2] - b[0], 2, sign=True)])
    return table_md(["game", "α₀ (log α₀)", "β, first bin", "β at 100 k steps", "β, last bin",
                     "last − first"], out)


def fig9_reach(fig_dir=FIGS, game="breakout", level=4.0):
    """Fig. 9 (MinAtar Breakout): the agent steps at which each run's 100-episode bin mean first
    reaches a score of 4, per setting (seeds in order; 'never' if it does not)."""
    groups = fig9_groups(game, fig_dir)
    out = []
    for t in ("mixed", "none"):
        for a in (2.0 ** -5, 2.0 ** -6, 2.0 ** -7):
            cells = []
            for r in sorted(groups[(t, a)], key=lambda r: r.settings["seed"]):
                hit = np.flatnonzero(np.asarray(r.returns) >= level)
                cells.append(f"{r.data['steps'][hit[0]] / 1000:.0f} k" if len(hit) else
                             "never" + (" (diverged)" if r.diverged else ""))
            out.append([t, sup(a), ", ".join(cells)])
    return table_md(["tuner", "α₀", f"steps to a bin mean of {level:g}, seeds 0, 1, 2"], out)


def cmp_minatar(fig_dir=FIGS):
    """The MinAtar ObGD comparison (docs/compare.py's cmp_minatar_table.csv): each method at its
    best setting, final ± s.e. (mean over the run), the spread over its 3 settings, and the runs
    that diverged of the 9 of each method (from the compact curves)."""
    rows = read(os.path.join(fig_dir, "cmp_minatar_table.csv"))
    by = {(r["domain"].replace("minatar-", ""), r["method"]): r for r in rows}
    out = []
    for game in FIG9_GAMES:
        k = 1 if game == "space_invaders" else 2
        runs = figures.load_results([os.path.join(fig_dir, f"fig9_minatar_{game}_runs.csv"),
                                     os.path.join(fig_dir, f"cmp_minatar_obgd_{game}_runs.csv")])
        cells = [game.replace("_", " ").title()]
        for m in ("none", "mixed", "obgd+stream"):
            r = by[(game, m)]
            setting = f"κ {float(r['best_kappa']):g}" if r["best_kappa"] else sup(r["best_alpha0"])
            cells.append(f"{pm(fl(r, 'final_return'), fl(r, 'final_return_se'), k)} "
                         f"({num(fl(r, 'mean_return'), k)}), {setting}")
        cells.append(" / ".join(sig3(fl(by[(game, m)], "spread_settings"))
                                for m in ("none", "mixed", "obgd+stream")))
        div = {m: sum(r.diverged for r in runs if r.settings["tuner"] == t)
               for m, t in (("none", "none"), ("mixed", "mixed"), ("obgd+stream", "obgd"))}
        n = {t: sum(1 for r in runs if r.settings["tuner"] == t) for t in ("none", "mixed", "obgd")}
        of = (f"{n['none']}" if len(set(n.values())) == 1
              else f"{n['none']} / {n['mixed']} / {n['obgd']}")
        cells.append(f"{div['none']} / {div['mixed']} / {div['obgd+stream']} of {of}")
        out.append(cells)
    return table_md(["game", "none, best α (2⁻⁵…2⁻⁷)", "mixed, best α₀", "ObGD + stabilizers, best κ",
                     "spread none / mixed / ObGD", "diverged none / mixed / ObGD"], out)


def cmp_minatar_kappa(fig_dir=FIGS):
    """ObGD with the four stabilizers on MinAtar: final score ± s.e. (mean over the run) per κ,
    and on Breakout the steps at which each run's 100-episode mean first reaches 4."""
    out = []
    for game in FIG9_GAMES:
        k = 1 if game == "space_invaders" else 2
        runs = figures.load_results([os.path.join(fig_dir, f"cmp_minatar_obgd_{game}_runs.csv")])
        cells = [game.replace("_", " ").title()]
        for kappa in (2.0, 0.5, 0.125):
            rs = sorted((r for r in runs if r.settings["kappa"] == kappa),
                        key=lambda r: r.settings["seed"])
            m, se, _ = mean_se(r.final() for r in rs if not r.diverged)
            text = f"{pm(m, se, k)} ({num(np.mean([r.mean() for r in rs]), k)})"
            if game == "breakout":
                hits = [np.flatnonzero(np.asarray(r.returns) >= 4.0) for r in rs]
                text += "; 4 at " + ", ".join(f"{r.data['steps'][h[0]] / 1000:.0f} k" if len(h)
                                               else "never" for r, h in zip(rs, hits))
            cells.append(text)
        out.append(cells)
    return table_md(["game", "κ = 2", "κ = 0.5", "κ = 0.125"], out)


CONTINUOUS = ("HalfCheetah-v5", "Hopper-v5")
STABILIZERS = ("sparse_init", "layer_norm", "normalize_obs", "scale_reward")


def method_of(settings):
    """A run's method: its tuner and its stabilizers ('all four', or the ones on)."""
    on = [k for k in STABILIZERS if settings.get(k)]
    return settings["tuner"], ("all four" if len(on) == 4 else " + ".join(on) or "none")


def cont_evidence(fig_dir=FIGS):
    """docs/continuous.md: per MuJoCo body and method, the final score (mean of the whole bins
    covering the last 100 episodes) ± s.e. over seeds, the mean over the run, the runs and the
    diverged ones."""
    out = []
    for env in CONTINUOUS:
        path = os.path.join(fig_dir, f"cont_{env}_runs.csv")
        if not os.path.exists(path):
            continue
        runs = figures.load_results([path])
        by = {}
        for r in runs:
            by.setdefault(method_of(r.settings) + (r.settings["alpha"], r.settings.get("kappa")),
                          []).append(r)
        for (tuner, stab, alpha, kappa), rs in sorted(by.items()):
            ok = [r for r in rs if not r.diverged]
            m, se, _ = mean_se(r.final() for r in ok) if len(ok) > 1 else (math.nan,) * 3
            setting = (f"α = {alpha:g}, κ = {kappa:g}" if kappa is not None else
                       f"{'α' if mt.TUNER[tuner].baseline else 'α₀'} = {sup(alpha)}")
            out.append([env, tuner, stab, setting, f"{pm(m, se, 0)}",
                        num(np.mean([r.mean() for r in ok]), 0) if ok else "–",
                        f"{len(rs)} ({len(rs) - len(ok)} diverged)"])
    return table_md(["body", "tuner", "stabilizers", "setting", "final score", "mean over the run",
                     "runs"], out)


TABLES = {
    **{f"fig{n}": (lambda n: lambda fig_dir=FIGS: table(os.path.join(fig_dir, f"fig{n}_summary.csv")))(n)
       for n in range(1, 6)},
    "fig6_best": fig6_best, "fig6_margins": fig6_margins, "fig6_grid": fig6_grid,
    "fig7_mu": fig7_mu, "fig7_beta": fig7_beta, "dmc_fresh": dmc_fresh,
    "dmc_fresh_pairs": dmc_fresh_pairs, "fig8": fig8, "fig8_seaquest": fig8_seaquest, "fig9": fig9, "fig9_runs": fig9_runs,
    "fig9_tests": fig9_tests, "fig9_beta": fig9_beta, "fig9_reach": fig9_reach,
    "cmp_minatar": cmp_minatar, "cmp_minatar_kappa": cmp_minatar_kappa,
    "cont_evidence": cont_evidence,
}


# -------------------------------------------------------------------------------- the .md files

def render(text, fig_dir=FIGS):
    """text with every generated block rewritten; (new text, names of the blocks that changed).
    KeyError for a block whose name is not in TABLES."""
    changed = []

    def sub(m):
        body = TABLES[m.group(2)](fig_dir) + "\n"
        if body != m.group(3):
            changed.append(m.group(2))
        return m.group(1) + body + m.group(4)
    return BLOCK.sub(sub, text), changed


def md_files(docs=DOCS):
    return sorted(os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))


def main(argv=None):
    """Rewrite (or --check) the generated blocks; with CSV paths, print their α0 × µ tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", nargs="*", help="summary CSVs of Figs. 1-5 to print as tables")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block differs")
    a = p.parse_args(argv)
    if a.summaries:
        for path in a.summaries:
            if not os.path.isfile(path):
                print(f"tables.py: error: {path} is not a file", file=sys.stderr)
                return 2
            print(table(path))
        return 0
    stale = []
    for path in md_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            new, changed = render(text)
        except KeyError as e:
            print(f"tables.py: error: {path}: no table named {e.args[0]!r}; known: "
                  f"{', '.join(TABLES)}", file=sys.stderr)
            return 2
        stale += [f"{os.path.relpath(path)}: {n}" for n in changed]
        if changed and not a.check:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
    for s in stale:
        print(("out of date: " if a.check else "rewrote: ") + s)
    return 1 if a.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

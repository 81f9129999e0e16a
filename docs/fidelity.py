"""The fidelity check of docs/comparison.md: this project's `--tuner stream_ac --towers 2` and
`--tuner intentional --towers 2` beside their authors' own scripts, same environment, budget,
stabilizers and net sizes, seeds 0..2 each side.

    python docs/fidelity.py compact --ours RUN_DIR... --theirs PEER_CSV... --out docs/figures
    python docs/fidelity.py report docs/figures

`compact` bins every run's episodes by the agent step at which they end (BIN steps a bin) into
docs/figures/fidelity_<env>_runs.csv: side (ours, theirs), method, env, seed, bin (its last step),
episodes, mean_return (the raw episodic return: the game score, or MuJoCo's reward sum).  Our runs
are run directories (episodes.csv, config.json); theirs are docs/peer_runs.py's CSVs.

`report` reads those files alone and prints, per env and method, each side's final score per
seed (the mean return of the episodes that end in the last FINAL of the budget), their means, the
ratio ours / theirs, and Welch's t-test on the per-seed final scores and on the per-seed means
over the whole run (area under the curve); it draws docs/figures/fidelity_<env>.png (mean +-
s.e. over seeds per bin).  "Agree within noise" means p > 0.05 on both: with 3 seeds a side, a
test this weak separates only large differences, which the report says beside each verdict.
"""
import argparse
import csv
import glob
import json
import os
import sys

import numpy as np

BIN = 10_000
FINAL = 0.2
FIELDS = ("side", "method", "env", "seed", "bin", "episodes", "mean_return")
ENV_NAMES = {"minatar-breakout": "MinAtar/Breakout-v1"}   # ours -> their gymnasium id


def binned(steps, returns, budget):
    """(bin end, episodes, mean return) of each non-empty BIN-step bin."""
    steps, returns = np.asarray(steps), np.asarray(returns, float)
    out = []
    for end in range(BIN, budget + BIN, BIN):
        m = (steps > end - BIN) & (steps <= end)
        if m.any():
            out.append((end, int(m.sum()), float(returns[m].mean())))
    return out


def ours(run):
    """(method, env, seed, budget, steps, returns) of one of our finished run directories."""
    s = json.load(open(os.path.join(run, "config.json")))
    if s.get("status") != "finished":
        sys.exit(f"{run}: not finished ({s.get('status')})")
    st = s["settings"]
    rows = [r for r in csv.DictReader(open(os.path.join(run, "episodes.csv")))
            if r["complete"] == "1"]
    return (st["tuner"], ENV_NAMES.get(st["domain"], st["domain"]), st["seed"], st["steps"],
            [int(r["steps"]) for r in rows], [float(r["score"]) for r in rows])


def theirs(path):
    """[(method, env, seed, steps, returns)] of one docs/peer_runs.py CSV."""
    runs = {}
    for r in csv.DictReader(open(path)):
        k = (r["method"], r["env"], int(r["seed"]))
        runs.setdefault(k, ([], []))
        runs[k][0].append(int(r["step"]))
        runs[k][1].append(float(r["return"]))
    return [(*k, *v) for k, v in sorted(runs.items())]


def compact(a):
    """Write the binned curves of both sides, one file per env."""
    rows = []
    budgets = {}
    for run in a.ours:
        method, env, seed, budget, steps, rets = ours(run)
        budgets[env] = budget
        rows += [("ours", method, env, seed, *b) for b in binned(steps, rets, budget)]
    for path in a.theirs:
        for method, env, seed, steps, rets in theirs(path):
            rows += [("theirs", method, env, seed, *b)
                     for b in binned(steps, rets, budgets.get(env, max(steps)))]
    os.makedirs(a.out, exist_ok=True)
    for env in sorted({r[2] for r in rows}):
        path = os.path.join(a.out, f"fidelity_{env.replace('/', '-')}_runs.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FIELDS)
            w.writerows(sorted(r for r in rows if r[2] == env))
        print(f"wrote {path}")


def welch(x, y):
    """Welch's t statistic, two-sided p-value and 95% interval of mean(x) - mean(y)."""
    from scipy import stats
    r = stats.ttest_ind(x, y, equal_var=False)
    ci = r.confidence_interval(0.95)
    return float(r.statistic), float(r.pvalue), (float(ci.low), float(ci.high))


def per_seed(rows, budget):
    """{seed: (final score, mean over the run)} of one side's binned rows: episode-weighted."""
    out = {}
    for seed in sorted({r["seed"] for r in rows}):
        b = [r for r in rows if r["seed"] == seed]
        n = np.array([r["episodes"] for r in b], float)
        m = np.array([r["mean_return"] for r in b])
        end = np.array([r["bin"] for r in b])
        last = end > budget * (1 - FINAL)
        out[seed] = (float((n * m)[last].sum() / n[last].sum()), float((n * m).sum() / n.sum()))
    return out


def report(a):
    """Print the verdicts and draw the curves from the compact files in a.dir."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for path in sorted(glob.glob(os.path.join(a.dir, "fidelity_*_runs.csv"))):
        rows = [dict(r, seed=int(r["seed"]), bin=int(r["bin"]), episodes=int(r["episodes"]),
                     mean_return=float(r["mean_return"])) for r in csv.DictReader(open(path))]
        env = rows[0]["env"]
        budget = max(r["bin"] for r in rows)
        methods = sorted({r["method"] for r in rows})
        fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
        print(f"\n{env}, {budget:,} steps; final = episodes ending in the last {FINAL:.0%} of the "
              f"budget; Welch's t on per-seed values")
        for ax, method in zip(axes[0], methods):
            side = {}
            for s in ("theirs", "ours"):
                rs = [r for r in rows if r["method"] == method and r["side"] == s]
                if not rs:
                    continue
                side[s] = per_seed(rs, budget)
                bins = sorted({r["bin"] for r in rs})
                curves = np.full((len(side[s]), len(bins)), np.nan)
                for i, seed in enumerate(sorted(side[s])):
                    for r in rs:
                        if r["seed"] == seed:
                            curves[i, bins.index(r["bin"])] = r["mean_return"]
                mean = np.nanmean(curves, 0)
                se = np.nanstd(curves, 0, ddof=1) / np.sqrt(np.sum(~np.isnan(curves), 0))
                ax.plot(bins, mean, label=f"{s} ({len(side[s])} seeds)",
                        color="C0" if s == "ours" else "C3")
                ax.fill_between(bins, mean - se, mean + se, alpha=0.25,
                                color="C0" if s == "ours" else "C3")
                fin = [v[0] for v in side[s].values()]
                print(f"  {method:<12} {s:<7} final per seed "
                      f"{', '.join(f'{x:.1f}' for x in fin)}; mean {np.mean(fin):.1f}; "
                      f"run mean {np.mean([v[1] for v in side[s].values()]):.1f}")
            if len(side) == 2:
                f = [[v[0] for v in side[s].values()] for s in ("ours", "theirs")]
                u = [[v[1] for v in side[s].values()] for s in ("ours", "theirs")]
                (tf, pf, cf), (tu, pu, cu) = welch(*f), welch(*u)
                verdict = "agree within noise" if min(pf, pu) > 0.05 else "DIFFER"
                print(f"  {method:<12} ours / theirs: final {np.mean(f[0]) / np.mean(f[1]):.2f} "
                      f"(ours - theirs {np.mean(f[0]) - np.mean(f[1]):.1f}, 95% CI "
                      f"[{cf[0]:.1f}, {cf[1]:.1f}], t {tf:.2f}, p {pf:.3f}); run mean "
                      f"{np.mean(u[0]) / np.mean(u[1]):.2f} ({np.mean(u[0]) - np.mean(u[1]):.1f}, "
                      f"[{cu[0]:.1f}, {cu[1]:.1f}], t {tu:.2f}, p {pu:.3f}): {verdict}")
            ax.set_title(f"{env}: {method}")
            ax.set_xlabel("agent steps")
            ax.set_ylabel("episodic return")
            ax.legend(fontsize=8)
        fig.tight_layout()
        out = os.path.join(a.dir, f"fidelity_{env.replace('/', '-')}.png")
        fig.savefig(out, dpi=80)
        print(f"  drew {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compact")
    c.add_argument("--ours", nargs="+", required=True)
    c.add_argument("--theirs", nargs="+", required=True)
    c.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("dir")
    a = p.parse_args(argv)
    return compact(a) if a.cmd == "compact" else report(a)


if __name__ == "__main__":
    sys.exit(main())

"""The ObGD comparison of docs/comparison.md: one panel per domain, each method at its best
setting, and a table of final returns and of sensitivity.

    python docs/compare.py RESULTS... --out DIR [--name cmp_minatar]

RESULTS are run directories or compact *_runs.csv files (docs/compact.py), as for `run.py
figures`.  A method is a tuner plus the Stream AC stabilizers its runs have on; its settings are
the values of alpha, mu and kappa its runs were tried at.  Per domain and method the best setting
is the one with the highest final return (mean over seeds of the last-100-episode mean); the
panel shows it (mean +- s.e. over seeds); the table gives it, its final return +- s.e., its mean
return over the whole run, the spread of the final return over the alpha0 tried (each alpha0
at its best mu / kappa) and over every setting tried (for ObGD at one alpha, where alpha cancels
in alpha/M, that is the spread over kappa).  Writes DIR/NAME.png and DIR/NAME_table.csv and
prints the table.
"""
import argparse
import csv
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import figures  # noqa: E402

STABILIZERS = ("sparse_init", "layer_norm", "normalize_obs", "scale_reward")
ORDER = figures.mt.TUNERS
COLUMNS = ("domain", "method", "best_alpha0", "best_mu", "best_kappa", "n_runs", "n_diverged",
           "final_return", "final_return_se", "mean_return", "settings_tried", "alpha0_tried",
           "spread_alpha0", "spread_settings")


def method(g):
    """A group's method: its tuner, and '+stream' when every Stream AC stabilizer is on (the
    first of them that is on otherwise)."""
    on = [k for k in STABILIZERS if g.get(k)]
    extra = "+stream" if len(on) == len(STABILIZERS) else "".join(f"+{k}" for k in on)
    return g.get("tuner") + extra


def sort_key(name):
    base = name.split("+")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), name)


def best(groups):
    """The group with the highest finite final return (None if none has one)."""
    scored = [(g.final()[0], i, g) for i, g in enumerate(groups) if math.isfinite(g.final()[0])]
    return max(scored)[2] if scored else None


def compare(groups):
    """Table rows and panels: per domain, per method, its best setting."""
    rows, panels = [], []
    for domain in sorted({g.get("domain") for g in groups}):
        mine = [g for g in groups if g.get("domain") == domain]
        curves = []
        for k, name in enumerate(sorted({method(g) for g in mine}, key=sort_key)):
            gs = [g for g in mine if method(g) == name]
            top = best(gs)
            alphas = sorted({g.get("alpha") for g in gs})
            per_alpha = [best([g for g in gs if g.get("alpha") == a]) for a in alphas]
            finals = [g.final()[0] for g in per_alpha if g is not None]
            every = [f for f in (g.final()[0] for g in gs) if math.isfinite(f)]
            m, se, n = top.final() if top else (math.nan, math.nan, 0)
            rows.append({"domain": domain, "method": name,
                         "best_alpha0": top.get("alpha") if top else "",
                         "best_mu": top.get("mu") if top and top.get("tuner") in figures.METATRACE
                         else "",
                         "best_kappa": top.get("kappa", "") if top else "",
                         "n_runs": len(top.runs) if top else 0,
                         "n_diverged": top.n_diverged if top else 0,
                         "final_return": m, "final_return_se": se,
                         "mean_return": top.mean_return() if top else math.nan,
                         "settings_tried": len(gs), "alpha0_tried": len(alphas),
                         "spread_alpha0": max(finals) - min(finals) if len(finals) > 1 else math.nan,
                         "spread_settings": max(every) - min(every) if len(every) > 1 else math.nan})
            if top is not None:
                base = name.split("+")[0]
                color = figures.TUNER_COLORS.get(base, f"C{k}")
                dashed = "--" if name.endswith("+stream") else "-." if "+" in name else "-"
                curves.append(figures.Curve(top, f"{name} α0={figures.pow2(top.get('alpha'), True)}"
                                            + (f" κ={top.get('kappa'):g}" if top.get("kappa") else ""),
                                            color, dashed))
        panels.append(figures.Panel(domain, curves))
    return rows, panels


def fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else (figures.pow2(v) if 0 < v < 1 and math.log2(v).is_integer()
                                         else f"{v:.4g}")
    return str(v)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="cmp")
    p.add_argument("--steps", action="store_true", help="x axis in agent steps (network domains)")
    a = p.parse_args(argv)
    try:
        for path in a.results:
            if not os.path.exists(path):
                raise figures.FigureError(f"results {path} does not exist")
        groups = figures.group_runs(figures.load_results(a.results))
        if not groups:
            raise figures.FigureError("no runs")
        rows, panels = compare(groups)
        domains = {g.get("domain") for g in groups}
        suite = ("MinAtar: " if all(d.startswith(figures.envs.MINATAR_PREFIX) for d in domains)
                 else "ALE: " if domains <= set(figures.ALE_GAMES) else "")
        spec = figures.FigSpec(f"{suite}{'e' if suite else 'E'}ach method at its best setting "
                               "(mean ± s.e. over seeds)", None,
                               figures.K_DRIFT_ALE, by_steps=a.steps, share=False)
        n_runs = len({id(r) for pn in panels for c in pn.curves for r in c.group.runs})
        fig = figures.draw(spec, panels, "", n_runs)
    except figures.FigureError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    fig.savefig(os.path.join(a.out, a.name + ".png"), dpi=110)
    with open(os.path.join(a.out, a.name + "_table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print("| domain | method | best α0 | best µ / κ | final (± s.e.) | mean | spread over α0 "
          "| spread over settings |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        extra = fmt(r["best_mu"]) or (fmt(r["best_kappa"]) if r["best_kappa"] != "" else "")
        print(f"| {r['domain']} | {r['method']} | {fmt(r['best_alpha0'])} | {extra} | "
              f"{fmt(r['final_return'])} ± {fmt(r['final_return_se'])} | {fmt(r['mean_return'])} "
              f"| {fmt(r['spread_alpha0'])} ({r['alpha0_tried']} α0) "
              f"| {fmt(r['spread_settings'])} ({r['settings_tried']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

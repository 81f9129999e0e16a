"""docs/tables.py: the generated tables on planted data with known answers, the block rewriting,
and the committed docs up to date with the committed data."""
import csv
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs"))
import tables  # noqa: E402

SUMMARY = ("figure", "panel", "domain", "tuner", "normalized", "drift", "mu", "alpha0", "n_runs",
           "n_diverged", "n_unfinished", "final_return", "final_return_se", "mean_return",
           "spread_alpha0", "best_mu", "note")
COMPACT = ("domain", "tuner", "normalized", "drift", "alpha", "mu", "seed", "episode", "episodes",
           "return", "beta_critic", "beta_actor", "beta_critic_noise", "beta_actor_noise",
           "diverged")
A0 = 2.0 ** -10


def write(path, head, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=head)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in head})


def summary_row(**kw):
    return dict(dict(figure=6, domain="drifting_mountaincar", normalized=True, alpha0=A0, n_runs=20,
                     n_diverged=0, n_unfinished=0, note=""), **kw)


def compact_rows(tuner, mu, finals, drift=6e-6, seed0=0, alpha=A0, beta=(-5.0, -6.0, -7.0, -8.0),
                 **extra):
    """One 100-episode bin per seed, its mean return the seed's final return."""
    return [dict(domain="drifting_mountaincar", tuner=tuner, normalized=True, drift=drift,
                 alpha=alpha, mu=mu, seed=seed0 + i, episode=0, episodes=100, diverged=0,
                 beta_critic=beta[0], beta_critic_noise=beta[1], beta_actor=beta[2],
                 beta_actor_noise=beta[3], **{"return": f}, **extra)
            for i, f in enumerate(finals)]


def test_alpha_mu_table_by_hand(tmp_path):
    p = tmp_path / "fig2_summary.csv"
    write(p, SUMMARY, [
        summary_row(figure=2, tuner="scalar", mu=2 ** -8, alpha0=a, final_return=f, mean_return=m,
                    spread_alpha0=20.0, n_runs=10, n_diverged=d)
        for a, f, m, d in ((2 ** -5, -100.4, -110.6, 0), (2 ** -6, -120.0, -130.0, 1))])
    assert tables.table(str(p)).splitlines() == [
        "| µ \\ α0 | 2^-5 | 2^-6 | spread |", "|---|---|---|---|",
        "| 2^-8 | -100 (-111) | -120 (-130, 1/10 div.) | 20.0 |"]


def test_fig6_best_and_margins_by_hand(tmp_path):
    write(tmp_path / "fig6_summary.csv", SUMMARY, [
        summary_row(tuner="none", drift=6e-6, mu=0.0, final_return=-170.0, final_return_se=4.0,
                    mean_return=-160.0),
        summary_row(tuner="scalar", drift=6e-6, mu=2 ** -8, final_return=-125.0,
                    final_return_se=4.0, mean_return=-127.0, note="best µ"),
        summary_row(tuner="vector", drift=6e-6, mu=2 ** -7, final_return=-150.0,
                    final_return_se=3.0, mean_return=-151.0, note="best µ"),
        summary_row(tuner="mixed", drift=6e-6, mu=2 ** -10, final_return=-122.0,
                    final_return_se=3.0, mean_return=-124.5, note="best µ")])
    best = tables.fig6_best(str(tmp_path)).splitlines()
    assert best[2] == ("| 6×10⁻⁶ | −170.0 ± 4.0 | −125.0 ± 4.0 (2⁻⁸) | −150.0 ± 3.0 (2⁻⁷) | "
                       "−122.0 ± 3.0 (2⁻¹⁰) | +3.0 ± 5.0 | −160.0 / −127.0 / −151.0 / −124.5 |")
    margins = tables.fig6_margins(str(tmp_path)).splitlines()
    # scalar: +45 ± √32 = 5.66 (7.95 s.e.); vector: +20 ± 5 (4.0 s.e.); mixed +48 ± 5 (9.6 s.e.)
    assert margins[2] == ("| 6×10⁻⁶ | +45.0 ± 5.7 (8.0 s.e.) | +20.0 ± 5.0 (4.0 s.e.) | "
                          "+48.0 ± 5.0 (9.6 s.e.) |")


def test_fig6_grid_marks_best_and_edge(tmp_path):
    rows = (compact_rows("scalar", 2 ** -8, [-120, -130]) + compact_rows("scalar", 2 ** -9, [-140, -150])
            + compact_rows("scalar", 2 ** -10, [-150, -160])
            + compact_rows("mixed", 2 ** -8, [-140, -140]) + compact_rows("mixed", 2 ** -9, [-120, -122])
            + compact_rows("mixed", 2 ** -10, [-130, -130]))
    write(tmp_path / "fig6_drift6e-6_runs.csv", COMPACT, rows)
    write(tmp_path / "dmc_fresh_seeds_runs.csv", COMPACT, compact_rows("scalar", 2 ** -10, [0, 0]))
    lines = tables.fig6_grid(str(tmp_path)).splitlines()
    assert lines[0] == "| drift | method | 2⁻⁸ | 2⁻⁹ | 2⁻¹⁰ | best µ lies |"
    assert lines[2] == "| 6×10⁻⁶ | scalar | **−125.0** | −145.0 | −155.0 | upper edge |"
    assert lines[3] == "| 6×10⁻⁶ | mixed | −140.0 | **−121.0** | −130.0 | inside |"


def test_fresh_seeds_table_and_welch_by_hand(tmp_path):
    finals = {"none": ([-170, -172], [-160, -166]), "scalar": ([-120, -130], [-130, -140]),
              "vector": ([-150, -150], [-150, -152]), "mixed": ([-120, -124], [-110, -114])}
    mus = {"none": 2 ** -8, "scalar": 2 ** -8, "vector": 2 ** -8, "mixed": 2 ** -10}
    sel, fresh = [], []
    for t, (a, b) in finals.items():
        sel += compact_rows(t, mus[t], a)
        fresh += compact_rows(t, mus[t], b, seed0=20)
    obgd = dict(kappa=0.125)
    write(tmp_path / "fig6_drift6e-6_runs.csv", COMPACT, sel)
    write(tmp_path / "cmp_dmc_obgd_runs.csv", COMPACT + ("kappa",),
          compact_rows("obgd", 2 ** -8, [-121, -123], alpha=2 ** -6, **obgd))
    write(tmp_path / "dmc_fresh_seeds_runs.csv", COMPACT + ("kappa",),
          fresh + compact_rows("obgd", 2 ** -8, [-125, -127], seed0=20, alpha=2 ** -6, **obgd))
    lines = tables.dmc_fresh(str(tmp_path)).splitlines()
    # mixed: selection -122 ± 2, fresh -112 ± 2, fresh - selection +10 ± 2.83
    assert lines[5] == ("| mixed | α0 = 2⁻¹⁰, µ = 2⁻¹⁰ | −122.0 ± 2.0 (n=2, seeds 0–1) | "
                        "−112.0 ± 2.0 (n=2, seeds 20–21) | +10.0 ± 2.8 |")
    assert lines[6].startswith("| ObGD | α = 2⁻⁶, κ = 0.125 | −122.0 ± 1.0 (n=2, seeds 0–1) | "
                               "−126.0 ± 1.0 (n=2, seeds 20–21)")
    pairs = tables.dmc_fresh_pairs(str(tmp_path)).splitlines()
    # mixed - scalar on fresh seeds: -112 - (-135) = +23 ± √(4 + 25); Welch t = 23 / 5.385
    from scipy import stats
    p = stats.ttest_ind([-110, -114], [-130, -140], equal_var=False).pvalue
    assert pairs[2] == f"| mixed − scalar | +23.0 ± 5.4 | {p:.2g} | " + (
        "separable |" if p < 0.05 else "not separable |")


def test_render_rewrites_blocks_and_refuses_unknown_names(tmp_path):
    write(tmp_path / "fig8_minatar_breakout_summary.csv", SUMMARY, [
        summary_row(figure=8, domain="minatar-breakout", tuner=t, alpha0=a, final_return=f,
                    mean_return=f / 2, spread_alpha0=s, n_runs=1)
        for t, s in (("none", 3.0), ("scalar", 0.5), ("vector", 1.0), ("mixed", 0.25))
        for a, f in ((2 ** -5, 6.0), (2 ** -6, 3.0))])
    text = "intro\n<!-- table: fig8 -->\nstale\n<!-- /table -->\nafter\n"
    new, changed = tables.render(text, str(tmp_path))
    assert changed == ["fig8"]
    assert new.startswith("intro\n<!-- table: fig8 -->\n| α₀ | none | scalar | vector | mixed |")
    assert "| 2⁻⁵ | 6.00 (3.00) | 6.00 (3.00) | 6.00 (3.00) | 6.00 (3.00) |" in new
    assert "| spread | 3.00 | 0.50 | 1.00 | 0.25 |\n<!-- /table -->\nafter\n" in new
    assert tables.render(new, str(tmp_path)) == (new, [])
    with pytest.raises(KeyError):
        tables.render("<!-- table: nope -->\n<!-- /table -->", str(tmp_path))


def test_committed_docs_match_committed_data():
    """Every generated table in docs/*.md equals what the committed CSVs give."""
    r = subprocess.run([sys.executable, "docs/tables.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    blocks = sum(open(p, encoding="utf-8").read().count("<!-- table: ")
                 for p in tables.md_files())
    assert blocks >= len(tables.TABLES)      # every table is used somewhere


def test_numbers_format_with_true_minus():
    assert tables.pm(-1.25, 0.04, 2) == "−1.25 ± 0.04"
    assert tables.pm(3.0, math.nan) == "3.0"
    assert tables.num(2.0, sign=True) == "+2.0" and tables.rate(1e-5) == "1×10⁻⁵"
    assert tables.sup(2.0 ** -12) == "2⁻¹²"

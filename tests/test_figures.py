"""figures.py: smoothing and statistics against hand-computed numbers, the summary table (spread
over α0, best µ, diverged counts) on synthetic results, all nine figure commands, bad input.

The synthetic results are built so that every number in the table can be checked by hand: each
run climbs linearly from -200 over 50 episodes, then stays at a plateau for its last 100 episodes,
so its final return is the plateau; seeds shift the plateau by -1, 0, +1 (3 seeds) or -1, +1 (2).
"""
import csv
import json
import math
import os
import subprocess
import sys

import re

import numpy as np
import pytest
from matplotlib.colors import to_rgb

import figures

pytestmark = pytest.mark.filterwarnings("error::matplotlib.MatplotlibDeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPISODES, RAMP = 150, 50
OFFSETS = {3: (-1.0, 0.0, 1.0), 2: (-1.0, 1.0), 1: (0.0,)}

# (tuner, normalized): {mu exponent: {alpha exponent: plateau}}; None = every seed diverges.
MOUNTAIN_CAR = {
    ("none", True): {-8: {-5: -195.0, -7: -100.0, -9: -125.0}},
    ("scalar", True): {-6: {-5: -120.0, -7: -100.0, -9: -110.0},
                       -8: {-5: -105.0, -7: -102.0, -9: -108.0}},
    ("scalar", False): {-14: {-5: None, -7: -90.0, -9: -95.0},
                        -16: {-5: -110.0, -7: -100.0, -9: -104.0}},
    ("sid", True): {-14: {-5: -150.0, -7: -110.0}, -16: {-5: -140.0, -7: -120.0}},
    ("nosid", True): {-10: {-5: -130.0, -7: -110.0}, -12: {-5: -135.0, -7: -125.0}},
}
DIVERGED_ONE = ("scalar", True, -6, -5, 2)      # (tuner, normalized, mu, alpha, seed) diverges
DRIFTS = (4e-6, 6e-6)
DRIFTING = {"none": {-8: -150.0}, "scalar": {-8: -120.0, -10: -125.0},
            "vector": {-8: -118.0, -10: -117.0}, "mixed": {-8: -115.0, -10: -110.0}}
NONE_ALPHAS = {-6: 300.0, -8: 200.0, -10: 150.0, -12: 100.0}     # Atari, no tuning: score plateau
MIXED_ALPHAS = {-8: 250.0, -10: 240.0, -12: 230.0}


def plateau(value, n=EPISODES, ramp=RAMP):
    return list(np.linspace(-200.0, value, ramp)) + [value] * (n - ramp)


def write_run(root, settings, returns, diverged=False, score=None, lengths=None, betas=False):
    """One run directory as run.py writes it (config.json + episodes.csv)."""
    s = dict(dict(gamma=0.99, lam=0.8, psi=0.0, drift=0.0, episodes=EPISODES, normalized=True,
                  timeout_bootstrap=False, nosid_alpha_bound=True), **settings)
    name = "-".join(f"{k}{s[k]}" for k in ("domain", "tuner", "normalized", "alpha", "mu", "drift",
                                           "seed"))
    out = os.path.join(root, s["domain"], name)
    os.makedirs(out)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"settings": s, "status": "diverged" if diverged else "finished"}, f)
    lengths = lengths or [-int(r) for r in returns]
    steps = np.cumsum(lengths)
    head = ["episode", "return", "length", "steps", "diverged", "beta_critic", "beta_actor"]
    head += ["beta_critic_noise", "beta_actor_noise"] if betas else []
    head += ["score"] if score is not None else []
    with open(os.path.join(out, "episodes.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for ep, ret in enumerate(returns):
            b = math.log(s["alpha"]) - 0.001 * ep
            row = [ep, ret, lengths[ep], steps[ep], int(diverged and ep == len(returns) - 1), b, b]
            row += [b - 0.002 * ep, b - 0.0005 * ep] if betas else []
            row += [score[ep]] if score is not None else []
            w.writerow(row)


def build_results(root):
    for (tuner, norm), by_mu in MOUNTAIN_CAR.items():
        for mu, by_alpha in by_mu.items():
            for alpha, value in by_alpha.items():
                for seed, off in enumerate(OFFSETS[3]):
                    s = dict(domain="mountaincar", tuner=tuner, normalized=norm, alpha=2.0 ** alpha,
                             mu=2.0 ** mu, seed=seed)
                    if value is None or (tuner, norm, mu, alpha, seed) == DIVERGED_ONE:
                        write_run(root, s, plateau(-200.0)[:60], diverged=True)
                    else:
                        write_run(root, s, plateau(value + off))
    for drift in DRIFTS:
        for tuner, by_mu in DRIFTING.items():
            for mu, value in by_mu.items():
                for seed, off in enumerate(OFFSETS[2]):
                    s = dict(domain="drifting_mountaincar", tuner=tuner, alpha=2.0 ** -10,
                             mu=2.0 ** mu, seed=seed, drift=drift)
                    write_run(root, s, plateau(value + off + 1e6 * drift), betas=True)
    for game in figures.ALE_GAMES:
        runs = [("none", a, v, 2) for a, v in NONE_ALPHAS.items()]
        runs += [("mixed", a, v, 2) for a, v in MIXED_ALPHAS.items()]
        if game == "seaquest":
            runs += [(t, a, 100.0, 1) for t in ("scalar", "vector") for a in (-8, -10, -12)]
        for tuner, alpha, value, n_seeds in runs:
            for seed, off in enumerate(OFFSETS[n_seeds]):
                s = dict(domain=game, tuner=tuner, alpha=2.0 ** alpha, mu=0.001, seed=seed,
                         psi=0.01)
                score = [v + 10 * off for v in plateau(value)]
                rets = [min(x, 1.0) for x in score]            # clipped "return" must be ignored
                lengths = [500 + 37 * seed + ep % 7 for ep in range(EPISODES)]
                write_run(root, s, rets, score=score, lengths=lengths)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("results"))
    build_results(root)
    return root


@pytest.fixture(scope="module")
def drawn(results, tmp_path_factory):
    """Every figure drawn once: {N: (Figure, summary rows, output folder)}."""
    out = str(tmp_path_factory.mktemp("figs"))
    return {n: (*figures.make_figure(n, results, out), out) for n in range(1, 10)}


def rows_by(rows, **eq):
    return [r for r in rows if all(r[k] == v for k, v in eq.items())]


def legends(fig):
    """Every legend of a figure: a shared one and those of its axes."""
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]


def legend_texts(fig):
    return [t.get_text() for leg in legends(fig) for t in leg.get_texts()]


# -------------------------------------------------------------------------- statistics

def test_smooth_trailing_mean_by_hand():
    assert figures.smooth([1, 2, 3, 4, 5], 2) == pytest.approx([1, 1.5, 2.5, 3.5, 4.5])
    assert figures.smooth([1, 2, 3, 4, 5], 3) == pytest.approx([1, 1.5, 2, 3, 4])
    assert figures.smooth([4, 0, 8], 1) == pytest.approx([4, 0, 8])
    assert figures.smooth([4, 0, 8], 20) == pytest.approx([4, 2, 4])   # fewer at the start
    assert len(figures.smooth([], 20)) == 0
    with pytest.raises(ValueError):
        figures.smooth([1, 2], 0)


def test_final_return_by_hand():
    assert figures.final_return(range(1, 151)) == 100.5        # mean of 51..150
    assert figures.final_return([1, 2, 3]) == 2.0               # fewer than 100: all of them
    assert figures.final_return([1, 2, 3, 10], last=2) == 6.5
    assert math.isnan(figures.final_return([]))


def test_mean_se_by_hand():
    m, se, n = figures.mean_se([[1, 2, np.nan], [3, 4, 7], [5, 9, np.nan]])
    assert m == pytest.approx([3, 5, 7])
    assert se[0] == pytest.approx(2 / math.sqrt(3))             # std [1,3,5] (ddof 1) = 2
    assert se[1] == pytest.approx(math.sqrt(13) / math.sqrt(3))  # var [2,4,9] = 13
    assert math.isnan(se[2]) and list(n) == [3, 3, 1]


def test_align_by_steps_by_hand():
    a = figures.align_by_steps([[10, 20, 30], [15, 35]], [[1, 2, 3], [0, 4]],
                               [10, 15, 20, 25, 30, 35])
    assert a[0] == pytest.approx([1, 1.5, 2, 2.5, 3, np.nan], nan_ok=True)
    assert a[1] == pytest.approx([np.nan, 0, 1, 2, 3, 4], nan_ok=True)


def test_best_mu_ranks_mu_with_an_all_diverged_alpha_last():
    assert figures.best_mu([(1, 0, -110.0), (1, 1, -100.0), (2, 0, -104.0), (2, 1, -104.0)]) == 2
    assert figures.best_mu([(1, 0, math.nan), (1, 1, -90.0), (2, 0, -110.0), (2, 1, -100.0)]) == 2
    assert figures.best_mu([(1, 0, math.nan), (2, 0, math.nan)]) is None


# -------------------------------------------------------------------------- loading

def test_load_runs_groups_settings_minus_seed(results):
    runs = figures.load_runs(results)
    mc = sum(len(a) for by_mu in MOUNTAIN_CAR.values() for a in by_mu.values())
    assert len(runs) == 3 * mc + 2 * 2 * 7 + 5 * 2 * 7 + 6
    groups = figures.group_runs(runs)
    assert len(groups) == mc + 2 * 7 + 5 * 7 + 6
    g = figures.pick(groups, "mountaincar", "scalar", True, alpha=2.0 ** -5, mu=2.0 ** -6)
    assert len(g) == 1 and len(g[0].runs) == 3 and g[0].n_diverged == 1
    assert "seed" not in g[0].settings


def test_duplicate_seed_counted_once(tmp_path, capsys):
    s = dict(domain="mountaincar", tuner="none", alpha=2.0 ** -7, mu=0.0, seed=0)
    write_run(str(tmp_path / "a"), s, plateau(-100.0))
    write_run(str(tmp_path / "b"), s, plateau(-100.0))
    groups = figures.group_runs(figures.load_runs(str(tmp_path)))
    assert len(groups) == 1 and len(groups[0].runs) == 1
    assert "duplicate" in capsys.readouterr().err


# -------------------------------------------------------------------------- figures

@pytest.mark.parametrize("n", range(1, 10))
def test_every_figure_writes_png_pdf_and_summary(drawn, n):
    _, rows, out = drawn[n]
    png, pdf = os.path.join(out, f"fig{n}.png"), os.path.join(out, f"fig{n}.pdf")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 10_000
    with open(pdf, "rb") as f:
        assert f.read(5) == b"%PDF-" and os.path.getsize(pdf) > 5_000
    with open(os.path.join(out, f"fig{n}_summary.csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == figures.SUMMARY_COLUMNS and len(table) == len(rows) > 0


def test_fig2_summary_spread_best_mu_and_diverged_by_hand(drawn):
    rows = drawn[2][1]
    assert len(rows) == 6
    r = rows_by(rows, mu=2.0 ** -6, alpha0=2.0 ** -5)[0]
    assert (r["n_runs"], r["n_diverged"]) == (3, 1)
    assert r["final_return"] == pytest.approx(-120.5)   # seeds 0, 1: -121, -120; seed 2 diverged
    assert r["final_return_se"] == pytest.approx(0.5)   # std(-121, -120) = 0.7071, / sqrt 2
    r = rows_by(rows, mu=2.0 ** -8, alpha0=2.0 ** -9)[0]
    assert r["final_return"] == pytest.approx(-108.0)
    assert r["final_return_se"] == pytest.approx(1 / math.sqrt(3))
    assert [r["spread_alpha0"] for r in rows_by(rows, mu=2.0 ** -6)] == pytest.approx([20.5] * 3)
    assert [r["spread_alpha0"] for r in rows_by(rows, mu=2.0 ** -8)] == pytest.approx([6.0] * 3)
    # mean over α0: µ=2^-6 (-120.5 - 100 - 110) / 3 = -110.17, µ=2^-8 -105 -> best µ = 2^-8
    assert {r["best_mu"] for r in rows} == {2.0 ** -8}


def test_fig1_spread_and_no_best_mu_for_untuned(drawn):
    rows = drawn[1][1]
    assert [r["alpha0"] for r in rows] == [2.0 ** -5, 2.0 ** -7, 2.0 ** -9]
    assert rows[0]["spread_alpha0"] == pytest.approx(95.0)      # -100 - (-195)
    assert all(r["best_mu"] is None for r in rows)


def test_all_diverged_setting_kept_in_table_and_legend(drawn):
    fig, rows, out = drawn[3]
    r = rows_by(rows, mu=2.0 ** -14, alpha0=2.0 ** -5)[0]
    assert (r["n_runs"], r["n_diverged"]) == (3, 3) and math.isnan(r["final_return"])
    assert rows_by(rows, mu=2.0 ** -14)[0]["spread_alpha0"] == pytest.approx(5.0)   # -90 - (-95)
    # µ=2^-14 has the higher mean over its surviving α0 (-92.5) but an α0 that always diverged
    assert {r["best_mu"] for r in rows} == {2.0 ** -16}
    assert any("n=3, 3/3 diverged" in t for t in legend_texts(fig))
    assert any("n=3, 1/3 diverged" in t for t in legend_texts(drawn[2][0]))
    with open(os.path.join(out, "fig3_summary.csv"), newline="") as f:
        line = [x for x in csv.DictReader(f) if x["n_diverged"] == "3"][0]
    assert line["n_runs"] == "3" and line["final_return"] == ""


def test_fig6_picks_best_mu_per_method_and_drift(drawn):
    rows = drawn[6][1]
    assert len(rows) == 2 * 4
    for drift in DRIFTS:
        got = {r["tuner"]: r["mu"] for r in rows_by(rows, drift=drift)}
        assert got["scalar"] == 2.0 ** -8 and got["vector"] == 2.0 ** -10
        assert got["mixed"] == 2.0 ** -10
        mixed = rows_by(rows, drift=drift, tuner="mixed")[0]
        assert mixed["final_return"] == pytest.approx(-110.0 + 1e6 * drift)
        assert mixed["best_mu"] == 2.0 ** -10


def test_fig7_every_mu_and_beta_panels(drawn):
    fig, rows, _ = drawn[7]
    assert {(r["tuner"], r["mu"]) for r in rows} == {
        (t, 2.0 ** m) for t in ("scalar", "vector", "mixed") for m in (-8, -10)}
    assert all(r["drift"] == 6e-6 for r in rows)
    beta_axes = [ax for ax in fig.axes if "mean β" in ax.get_title()]
    assert len(beta_axes) == 3 and "closest" not in beta_axes[0].get_title()
    labels = [t.get_text() for t in beta_axes[2].get_legend().get_texts()]
    assert labels == ["critic, informative", "critic, noise", "actor, informative", "actor, noise"]
    assert all(ax.get_title().endswith("(n=2)") for ax in beta_axes)     # runs per β panel


def test_fig7_takes_closest_mu_and_says_so(tmp_path):
    for tuner in ("scalar", "vector", "mixed"):
        for mu in (-9, -12):
            write_run(str(tmp_path), dict(domain="drifting_mountaincar", tuner=tuner, alpha=2.0 ** -10,
                                          mu=2.0 ** mu, seed=0, drift=6e-6),
                      plateau(-120.0, n=60, ramp=20), betas=True)
    panels, note = figures.panels_fig7(figures.group_runs(figures.load_runs(str(tmp_path))), {})
    titles = [p.title for p in panels if p.kind == "beta"]
    assert len(titles) == 3
    assert all("$2^{-9}$" in t and "closest to $2^{-10}$" in t for t in titles)


def test_fig8_panels_per_tuner_and_steps_axis(drawn):
    fig, rows, _ = drawn[8]
    assert [ax.get_title() for ax in fig.axes] == [f"seaquest: {t}" for t in
                                                   ("no tuning", "scalar", "vector", "mixed")]
    assert fig.axes[0].get_xlabel() == "agent steps"
    # the mean over seeds 0, 1 (episodes of 500 + 37 * seed + ep % 7 steps) spans the steps both
    # runs cover: from seed 1's first episode to seed 0's last
    first, last = 537, sum(500 + ep % 7 for ep in range(EPISODES))
    x = fig.axes[3].get_lines()[0].get_xdata()
    assert (x[0], x[-1]) == pytest.approx((first, last))


def test_fig9_uses_score_and_shows_best_constant_alpha(drawn):
    fig, rows, _ = drawn[9]
    assert len(fig.axes) == 5
    sea = rows_by(rows, domain="seaquest")
    r = rows_by(sea, tuner="mixed", alpha0=2.0 ** -8)[0]
    assert r["final_return"] == pytest.approx(250.0)          # score column, not clipped return
    assert r["final_return_se"] == pytest.approx(10.0)        # scores 240, 260: std 14.14 / sqrt 2
    assert [r["spread_alpha0"] for r in rows_by(sea, tuner="mixed")] == pytest.approx([20.0] * 3)
    untuned = [r for r in rows_by(sea, tuner="none") if not r["note"]]
    assert sorted(r["alpha0"] for r in untuned) == [2.0 ** -12, 2.0 ** -10, 2.0 ** -8]
    assert [r["spread_alpha0"] for r in untuned] == pytest.approx([100.0] * 3)
    best = rows_by(sea, note="best constant α")
    assert len(best) == 1 and best[0]["alpha0"] == 2.0 ** -6
    assert math.isnan(best[0]["spread_alpha0"])


def test_fig8_takes_the_one_game_the_runs_hold(tmp_path):
    """Without Seaquest runs, Fig. 8 is drawn for the one game present (a pilot's choice)."""
    for tuner in ("none", "vector"):
        write_run(str(tmp_path), dict(domain="minatar-breakout", tuner=tuner, alpha=2.0 ** -7,
                                      mu=0.001, seed=0), plateau(3.0, n=60, ramp=20))
    groups = figures.group_runs(figures.load_runs(str(tmp_path)))
    panels, _ = figures.panels_fig8(groups, {"suite": "minatar"})
    assert [p.title for p in panels] == ["minatar-breakout: no tuning", "minatar-breakout: vector"]
    write_run(str(tmp_path), dict(domain="minatar-asterix", tuner="none", alpha=2.0 ** -7,
                                  mu=0.001, seed=0), plateau(3.0, n=60, ramp=20))
    groups = figures.group_runs(figures.load_runs(str(tmp_path)))
    assert figures.panels_fig8(groups, {"suite": "minatar"})[0] == []      # two games: ambiguous


def test_suite_minatar_reads_minatar_games(tmp_path):
    for tuner in ("none", "mixed"):
        write_run(str(tmp_path), dict(domain="minatar-seaquest", tuner=tuner, alpha=2.0 ** -8,
                                      mu=0.001, seed=0), plateau(10.0, n=60, ramp=20))
    groups = figures.group_runs(figures.load_runs(str(tmp_path)))
    assert figures.panels_fig8(groups, {"suite": "ale"})[0] == []
    panels, _ = figures.panels_fig8(groups, {"suite": "minatar"})
    assert [p.title for p in panels] == ["minatar-seaquest: no tuning", "minatar-seaquest: mixed"]
    panels, note = figures.panels_fig9(groups, {"suite": "minatar"})
    assert [p.title for p in panels] == ["minatar-seaquest"] and "minatar-asterix" in note


def test_suite_minatar_files_do_not_overwrite_the_ale_figure(tmp_path, capsys):
    runs, out = tmp_path / "runs", str(tmp_path / "figs")
    for domain in ("seaquest", "minatar-seaquest"):
        for tuner in ("none", "mixed"):
            write_run(str(runs), dict(domain=domain, tuner=tuner, alpha=2.0 ** -8, mu=0.001,
                                      seed=0), plateau(10.0, n=60, ramp=20))
    assert figures.main(["--fig", "9", str(runs), "--out", out]) == 0
    assert figures.main(["--fig", "9", str(runs), "--suite", "minatar", "--out", out]) == 0
    assert "fig9_minatar.png" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(f"fig9{s}{e}" for s in ("", "_minatar")
                                             for e in (".png", ".pdf", "_summary.csv"))
    with open(os.path.join(out, "fig9_summary.csv")) as f:
        ale = f.read()
    with open(os.path.join(out, "fig9_minatar_summary.csv")) as f:
        minatar = f.read()
    assert ",seaquest," in ale and "minatar-seaquest" not in ale
    assert "minatar-seaquest" in minatar


# -------------------------------------------------------------------------- readability

@pytest.mark.parametrize("n", range(1, 10))
def test_legends_lie_outside_every_axes(drawn, n):
    fig = drawn[n][0]
    fig.draw_without_rendering()
    assert legends(fig)
    for leg in legends(fig):
        box = leg.get_window_extent()
        assert box.x1 <= fig.bbox.x1 + 1 and box.x0 >= -1            # inside the figure
        for ax in fig.axes:                                         # over no panel's plot area
            a = ax.get_window_extent()
            assert box.x0 >= a.x1 or box.x1 <= a.x0 or box.y0 >= a.y1 or box.y1 <= a.y0
        if leg.axes is not None:                                    # right of its own panel
            assert box.x0 > leg.axes.get_window_extent().x1


def test_shared_legend_when_every_panel_has_the_same_entries(drawn):
    assert len(drawn[5][0].legends) == 1 and not any(ax.get_legend() for ax in drawn[5][0].axes)
    assert not drawn[2][0].legends          # "1/3 diverged" in one panel only: one legend each


def rgb_distance(a, b):
    return float(np.linalg.norm(np.array(to_rgb(a)) - np.array(to_rgb(b))))


@pytest.mark.parametrize("count", [3, 8, 10, 15, 20, 30])
def test_neighbouring_alpha_colours_are_told_apart(count):
    groups = [figures.Group({"alpha": 2.0 ** -k}, []) for k in range(count)]
    col = figures.alpha_colors(groups)
    alphas = sorted(col, reverse=True)
    assert len({to_rgb(col[a]) for a in alphas}) == count
    assert min(rgb_distance(col[a], col[b]) for a, b in zip(alphas, alphas[1:])) > 0.25


def test_same_alpha_same_colour_in_every_panel(drawn):
    fig = drawn[8][0]
    colour = {}
    for ax in fig.axes:
        for line, text in zip(ax.get_legend().get_lines(), ax.get_legend().get_texts()):
            alpha = text.get_text().split("=")[1].split(" ")[0]
            colour.setdefault(alpha, set()).add(to_rgb(line.get_color()))
    assert len(colour) == 4 and all(len(c) == 1 for c in colour.values())
    assert len({c.pop() for c in colour.values()}) == 4


def test_run_counts_in_every_label(drawn):
    for n in (1, 2, 6, 8, 9):
        labels = [t for t in legend_texts(drawn[n][0]) if t != "median"]
        assert labels and all(re.search(r"\(n=\d+(, \d+/\d+ diverged)?\)$", t) for t in labels)
    assert "α0=$2^{-9}$ (n=3)" in legend_texts(drawn[2][0])


def test_median_rule_by_hand():
    assert figures.median_apart([-100.0] * 9 + [-200.0])     # mean -110, median -100, s.e. 10
    assert figures.median_apart([-100.0] * 7 + [-200.0] * 3)
    assert not figures.median_apart([-101.0, -100.0, -99.0] * 3)
    assert not figures.median_apart([-100.0, -200.0])         # two runs: mean = median
    assert not figures.median_apart([-100.0] * 5)


def test_median_curve_only_for_a_bimodal_group(tmp_path):
    stuck, spread = 2.0 ** -7, 2.0 ** -9
    for seed in range(10):
        base = dict(domain="mountaincar", tuner="none", mu=0.0, seed=seed)
        write_run(str(tmp_path / "res"), dict(base, alpha=stuck),
                  plateau(-200.0 if seed == 0 else -100.0))
        write_run(str(tmp_path / "res"), dict(base, alpha=spread), plateau(-120.0 + seed - 4.5))
    fig, rows = figures.make_figure(1, str(tmp_path / "res"), str(tmp_path / "out"))
    ax = fig.axes[0]
    colour = {a: to_rgb(c) for a, c in figures.alpha_colors(
        [figures.Group({"alpha": a}, []) for a in (stuck, spread)]).items()}
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":" and len(ln.get_xdata())]
    assert [to_rgb(ln.get_color()) for ln in dotted] == [colour[stuck]]
    assert dotted[0].get_ydata()[-1] == pytest.approx(-100.0)            # the median of the runs
    mean = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata())
            and to_rgb(ln.get_color()) == colour[stuck]][0]
    assert mean.get_ydata()[-1] == pytest.approx(-110.0)
    assert "median" in legend_texts(fig)
    title = " ".join(fig.get_suptitle().split())
    assert "median over runs, drawn where a setting's mean and median final return differ by at " \
           "least its s.e." in title
    assert [r["final_return"] for r in rows] == pytest.approx([-110.0, -120.0])


@pytest.mark.parametrize("n,panel", [(5, 1), (8, 1), (8, 2), (2, 1)])
def test_tick_labels_on_shared_inner_panels(drawn, n, panel):
    fig = drawn[n][0]
    fig.draw_without_rendering()
    ax = fig.axes[panel]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        assert [t for t in labels if t.get_visible() and t.get_text()]


# -------------------------------------------------------------------------- command line, bad input

def test_command_line_prints_summary(results, tmp_path):
    r = subprocess.run([sys.executable, "figures.py", "--fig", "2", results, "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "best mu" in r.stdout and "1/3" in r.stdout and "2^-8" in r.stdout
    assert (tmp_path / "fig2.png").stat().st_size > 0


def one_line_error(argv, capsys):
    code = figures.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("figures.py: error:")
    return err


def test_empty_directory_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = one_line_error(["--fig", "1", str(tmp_path / "empty"), "--out", str(tmp_path)], capsys)
    assert str(tmp_path / "empty") in err and "figure 1" in err
    err = one_line_error(["--fig", "1", str(tmp_path / "nowhere"), "--out", str(tmp_path)], capsys)
    assert "does not exist" in err and "nowhere" in err and "figure 1" in err


def test_no_runs_for_figure_is_one_line_error(tmp_path, capsys):
    write_run(str(tmp_path / "res"), dict(domain="mountaincar", tuner="none", alpha=2.0 ** -7,
                                          mu=0.0, seed=0), plateau(-100.0))
    for n in (2, 6, 8, 9):
        err = one_line_error(["--fig", str(n), str(tmp_path / "res"), "--out", str(tmp_path)],
                             capsys)
        assert f"figure {n}" in err and str(tmp_path / "res") in err
    assert not list(tmp_path.glob("fig*"))


@pytest.mark.parametrize("fig", ["0", "10", "abc"])
def test_bad_figure_number_is_one_line_error(tmp_path, capsys, fig):
    assert "1..9" in one_line_error(["--fig", fig, str(tmp_path), "--out", str(tmp_path)], capsys)


def test_missing_arguments_are_one_line_errors(capsys):
    one_line_error([], capsys)

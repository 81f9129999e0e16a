"""figures.py from compact results (docs/compact.py *_runs.csv): the committed Fig. 6-7 files
against their committed summaries, a round trip run directories -> compact file -> the same
summary, agent steps for Figs. 8-9, mixed inputs, bins that do not align with the last 100
episodes, and bad compact files (one line, exit status 2, nothing written).
"""
import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import figures
from tests.test_figures import plateau, write_run

pytestmark = pytest.mark.filterwarnings("error::matplotlib.MatplotlibDeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, "docs", "figures")
ROUNDING = 5e-4         # 4 significant digits per bin mean: at most half a unit of the 4th digit


def compact(root, out, bin_size=100):
    """docs/compact.py ROOT OUT --bin B, as a user runs it."""
    r = subprocess.run([sys.executable, os.path.join("docs", "compact.py"), str(root), str(out),
                        "--bin", str(bin_size)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return str(out)


def title(fig):
    """The figure's title with its line breaks as spaces."""
    return " ".join(fig.get_suptitle().split())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def random_runs(root, n_runs=3, episodes=500, **settings):
    """n_runs seeds of one setting with noisy returns climbing from -200 to about -110."""
    rng = np.random.default_rng(5)
    s = dict(dict(domain="mountaincar", tuner="none", alpha=2.0 ** -7, mu=0.0, episodes=episodes),
             **settings)
    for seed in range(n_runs):
        ramp = np.minimum(np.arange(episodes) / 200.0, 1.0)
        returns = list(np.round(-200 + 90 * ramp + rng.normal(0, 8, episodes) - 5 * seed, 3))
        lengths = [int(rng.integers(90, 200)) for _ in range(episodes)]
        write_run(str(root), dict(s, seed=seed), returns, lengths=lengths, betas=True)
    return os.path.join(str(root), s["domain"])


# -------------------------------------------------------------------------- committed files

def test_committed_fig6_compact_file_gives_the_committed_summary(tmp_path):
    fig, rows = figures.make_figure(6, os.path.join(COMMITTED, "fig6_drift6e-6_runs.csv"),
                                    str(tmp_path))
    committed = read_csv(os.path.join(COMMITTED, "fig6_drift6e-6_summary.csv"))
    assert [(r["tuner"], r["mu"]) for r in rows] == [(c["tuner"], float(c["mu"])) for c in committed]
    best = [(r, c) for r, c in zip(rows, committed) if c["note"] == "best µ"]
    assert len(best) == 3
    for r, c in best + [(rows[0], committed[0])]:           # the best µ of each method, and none
        assert r["final_return"] == pytest.approx(float(c["final_return"]), rel=ROUNDING)
        assert r["mean_return"] == pytest.approx(float(c["mean_return"]), rel=ROUNDING)
        assert r["best_mu"] == (float(c["best_mu"]) if c["best_mu"] else None)
        assert (r["n_runs"], r["n_diverged"]) == (int(c["n_runs"]), int(c["n_diverged"]))
    assert "from compact results: means of 100-episode bins" in title(fig)
    assert fig.axes[0].get_ylabel() == "return (trailing mean of 100 episodes)"
    x = fig.axes[0].get_lines()[0].get_xdata()
    assert (x[0], x[-1], len(x)) == (100, 5000, 50)           # each bin's last episode


def test_committed_files_redraw_fig6_with_three_panels_and_fig7(tmp_path, capsys):
    files = [os.path.join(COMMITTED, f"fig6_drift{d}_runs.csv") for d in ("4e-6", "6e-6", "8e-6")]
    assert figures.main(["--fig", "6", *files, "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["fig6.pdf", "fig6.png", "fig6_summary.csv"]
    table = read_csv(tmp_path / "fig6_summary.csv")
    assert sorted({r["panel"] for r in table}) == ["drift 4e-06", "drift 6e-06", "drift 8e-06"]
    for d in ("4e-6", "6e-6", "8e-6"):
        committed = read_csv(os.path.join(COMMITTED, f"fig6_drift{d}_summary.csv"))
        mine = [r for r in table if r["drift"] == committed[0]["drift"]]
        assert [(r["tuner"], r["mu"]) for r in mine] == [(c["tuner"], c["mu"]) for c in committed]
        assert [float(r["final_return"]) for r in mine] == pytest.approx(
            [float(c["final_return"]) for c in committed], rel=ROUNDING)
    capsys.readouterr()
    six = sorted(os.path.join(COMMITTED, f) for f in os.listdir(COMMITTED)
                 if f.startswith("fig6_drift6e-6_") and f.endswith("runs.csv"))
    assert len(six) == 3                    # the grid, and its extensions past the edges
    fig, rows = figures.make_figure(7, six, str(tmp_path / "f7"))
    committed = read_csv(os.path.join(COMMITTED, "fig7_summary.csv"))
    assert [(r["tuner"], r["mu"], r["best_mu"]) for r in rows] == [
        (c["tuner"], float(c["mu"]), float(c["best_mu"])) for c in committed]
    assert [r["final_return"] for r in rows] == pytest.approx(
        [float(c["final_return"]) for c in committed], rel=ROUNDING)
    beta = [ax for ax in fig.axes if "mean β" in ax.get_title()]
    assert len(beta) == 3 and "scalar" in beta[0].get_title() and len(beta[1].get_lines()) == 4
    assert [ln.get_label() for ln in beta[0].get_lines()] == ["β (one for every weight)"]
    assert beta[0].get_lines()[0].get_xdata()[-1] == 5000
    returns = [ax for ax in fig.axes if "every µ" in ax.get_title()]
    assert len(returns) == 3 and len({ax.get_ylim() for ax in returns}) == 1   # one y-range


# -------------------------------------------------------------------------- round trip

def test_round_trip_run_directories_and_their_compact_file_agree(tmp_path):
    runs = random_runs(tmp_path / "runs")
    path = compact(runs, tmp_path / "fig1_runs.csv")
    header = next(csv.reader(open(path)))
    assert header[:9] == [*figures.COMPACT_KEYS, "episode", "episodes"] and header[-2:] == [
        "diverged", "steps"]
    loaded = figures.read_compact(path)
    assert [(r.bin, r.status, r.n_episodes, len(r.returns)) for r in loaded] == [
        (100, "finished", 500, 5)] * 3
    assert loaded[0].settings == dict(domain="mountaincar", tuner="none", normalized=True,
                                      drift=0.0, alpha=2.0 ** -7, mu=0.0, seed=0)
    _, from_dirs = figures.make_figure(1, runs, str(tmp_path / "a"))
    _, from_file = figures.make_figure(1, path, str(tmp_path / "b"))
    assert len(from_dirs) == len(from_file) == 1
    a, b = from_dirs[0], from_file[0]
    assert b["final_return"] == pytest.approx(a["final_return"], rel=ROUNDING)
    assert b["mean_return"] == pytest.approx(a["mean_return"], rel=ROUNDING)
    same = [k for k in figures.SUMMARY_COLUMNS if "return" not in k and k != "spread_alpha0"]
    assert {k: b[k] for k in same} == {k: a[k] for k in same}
    assert math.isnan(a["spread_alpha0"]) and math.isnan(b["spread_alpha0"])   # one α0


def test_steps_column_gives_figs_8_9_their_agent_steps(tmp_path):
    runs = random_runs(tmp_path / "runs", n_runs=2, episodes=300, domain="seaquest", mu=0.001)
    path = compact(runs, tmp_path / "sq_runs.csv")
    ends = [float(read_csv(os.path.join(runs, d, "episodes.csv"))[-1]["steps"])
            for d in sorted(os.listdir(runs))]
    assert [r.data["steps"][-1] for r in figures.read_compact(path)] == ends     # exact, not rounded
    fig, _ = figures.make_figure(8, path, str(tmp_path / "out"))
    x = fig.axes[0].get_lines()[0].get_xdata()
    assert fig.axes[0].get_xlabel() == "agent steps" and x[-1] == pytest.approx(min(ends))
    old = tmp_path / "old_runs.csv"                     # a compact file written before steps
    with open(path) as f, open(old, "w") as g:
        g.writelines(",".join(line.rstrip("\n").split(",")[:-1]) + "\n" for line in f)
    with pytest.raises(figures.FigureError, match="agent steps.*no steps column"):
        figures.make_figure(8, str(old), str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()


def test_run_directories_and_compact_files_combine(tmp_path, capsys):
    drifting = dict(domain="drifting_mountaincar", tuner="mixed", alpha=2.0 ** -10,
                    mu=2.0 ** -10)
    a = random_runs(tmp_path / "a", episodes=300, drift=4e-6, **drifting)
    b = random_runs(tmp_path / "b", episodes=300, drift=6e-6, **drifting)
    b_file = compact(b, tmp_path / "b_runs.csv")
    fig, rows = figures.make_figure(6, [a, b_file], str(tmp_path / "out"))
    assert [ax.get_title() for ax in fig.axes] == ["drift 4e-06", "drift 6e-06"]
    assert [r["n_runs"] for r in rows] == [3, 3]
    _, dirs = figures.make_figure(6, [a, b], str(tmp_path / "dirs"))
    assert [r["final_return"] for r in rows] == pytest.approx(
        [r["final_return"] for r in dirs], rel=ROUNDING)
    assert "settings compared on domain, tuner" in title(fig)
    capsys.readouterr()
    _, rows = figures.make_figure(6, [b, b_file], str(tmp_path / "twice"))    # one run, twice
    assert [r["n_runs"] for r in rows] == [3] and "duplicate" in capsys.readouterr().err


def test_bins_that_do_not_end_on_the_last_100_episodes_are_whole_and_noted(tmp_path):
    assert figures.binned_final([1.0, 2.0, 4.0], [100, 100, 100]) == (4.0, True)
    assert figures.binned_final([1.0, 2.0, 4.0], [100, 100, 50]) == (
        pytest.approx((2.0 * 100 + 4.0 * 50) / 150), False)
    assert figures.binned_final([3.0], [60]) == (3.0, True)       # fewer episodes: all of them
    runs = random_runs(tmp_path / "runs", episodes=250)
    path = compact(runs, tmp_path / "r_runs.csv")
    fig, rows = figures.make_figure(1, path, str(tmp_path / "out"))
    finals = [np.mean([float(r["return"]) for r in read_csv(os.path.join(runs, d, "episodes.csv"))
                       ][-150:]) for d in sorted(os.listdir(runs))]     # bins of 100 and 50
    assert rows[0]["final_return"] == pytest.approx(np.mean(finals), rel=ROUNDING)
    assert "whole bins covering their last 100 episodes" in title(fig)


def test_curves_of_runs_and_bins_on_a_common_x():
    x, a = figures.on_common_x([1, 1], [np.array([1.0, 2, 3]), np.array([1.0, 2])],
                               [np.array([4.0, 5, 6]), np.array([7.0, 8])])
    assert list(x) == [1, 2] and a.tolist() == [[4, 5], [7, 8]]
    x, a = figures.on_common_x([1, 1], [np.array([1.0, 2, 3]), np.array([1.0, 2])],
                               [np.array([4.0, 5, 6]), np.array([7.0, 8])], whole=True)
    assert list(x) == [1, 2, 3] and a[1].tolist()[:2] == [7, 8] and math.isnan(a[1, 2])
    episodes = np.arange(1.0, 301.0)                      # one run per episode, one in 3 bins
    x, a = figures.on_common_x([1, 100], [episodes, np.array([100.0, 200, 300])],
                               [episodes * 2, np.array([1.0, 2, 3])])
    assert list(x) == [100, 200, 300] and a.tolist() == [[200, 400, 600], [1, 2, 3]]


def test_diverged_bin_makes_a_diverged_run(tmp_path):
    path = tmp_path / "d_runs.csv"
    head = ",".join([*figures.COMPACT_KEYS, "episode", "episodes", "return", "diverged"])
    rows = [f"mountaincar,none,True,0.0,0.0078125,0.0,{s},{e},100,-150,{int(s == 1 and e == 100)}"
            for s in (0, 1, 2) for e in (0, 100)]
    path.write_text("\n".join([head, *rows]) + "\n")
    runs = figures.read_compact(str(path))
    assert [r.status for r in runs] == ["finished", "diverged", "finished"]
    group, = figures.group_runs(runs)
    assert group.n_diverged == 1 and group.final() == (-150.0, 0.0, 2)


# -------------------------------------------------------------------------- bad input

GOOD = "mountaincar,none,True,0.0,0.0078125,0.0,0,0,100,-150.5,0"


@pytest.mark.parametrize("head,row,words", [
    ("episode,return", "0,-100", "not a compact results file"),
    ("domain,tuner,normalized,drift,alpha,mu,episode,episodes,return,diverged",
     "mountaincar,none,True,0.0,0.0078125,0.0,0,100,-150.5,0", "no column seed"),
    ("domain,tuner,normalized,drift,alpha,mu,seed,episode,episodes,beta_actor,diverged",
     GOOD, "no column return"),
    (None, GOOD.replace("-150.5", "abc"), "line 2 does not parse (return: 'abc')"),
    (None, GOOD.replace("True", "maybe"), "normalized: 'maybe'"),
    (None, GOOD.replace(",0,0,100,", ",x,0,100,"), "seed: 'x'"),
    (None, GOOD + ",7", "12 fields, not 11"),
    (None, GOOD.replace(",100,", ",0,"), "episodes"),
    (None, GOOD + "\n" + GOOD, "does not start where the one before ends"),
    ("", "", "not a compact results file"),
])
def test_bad_compact_file_is_one_line_error_and_writes_nothing(tmp_path, capsys, head, row,
                                                                words):
    head = ",".join([*figures.COMPACT_KEYS, "episode", "episodes", "return", "diverged"]) \
        if head is None else head
    path = tmp_path / "bad_runs.csv"
    path.write_text(f"{head}\n{row}\n" if head else "")
    before = sorted(os.listdir(tmp_path))
    code = figures.main(["--fig", "1", str(path), "--out", str(tmp_path / "out")],
                        prog="run.py figures")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("run.py figures: error: "), err
    assert words in err and str(path) in err
    assert sorted(os.listdir(tmp_path)) == before


def test_unreadable_compact_file_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "bin_runs.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\x00\n")
    assert figures.main(["--fig", "1", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and not (tmp_path / "out").exists()


def test_run_directories_that_differ_outside_the_compact_keys_are_not_merged(tmp_path, capsys):
    for lam in (0.8, 0.9):
        write_run(str(tmp_path / f"l{lam}"), dict(domain="mountaincar", tuner="none",
                                                  alpha=2.0 ** -7, mu=0.0, seed=0, lam=lam),
                  plateau(-100.0))
    write_run(str(tmp_path / "c"), dict(domain="mountaincar", tuner="none", alpha=2.0 ** -9,
                                        mu=0.0, seed=0), plateau(-120.0))
    path = compact(tmp_path / "c" / "mountaincar", tmp_path / "c_runs.csv")
    code = figures.main(["--fig", "1", str(tmp_path / "l0.8"), str(tmp_path / "l0.9"), path,
                         "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "differ in lam" in err and not (tmp_path / "out").exists()
    assert math.isfinite(figures.make_figure(1, [str(tmp_path / "l0.8"), path],
                                             str(tmp_path / "ok"))[1][0]["final_return"])


def test_obgd_settings_are_compact_keys_only_where_runs_have_them(tmp_path):
    """Runs that differ only in kappa (or a stabilizer) stay apart in a compact file; a file of
    runs without them has no such columns (older files read as before)."""
    for kappa in (2.0, 0.125):        # write_run's names omit kappa: one folder, renamed
        src = random_runs(tmp_path / f"k{kappa}", n_runs=2, tuner="obgd", kappa=kappa,
                          layer_norm=True)
        os.makedirs(tmp_path / "o", exist_ok=True)
        for d in os.listdir(src):
            os.rename(os.path.join(src, d), tmp_path / "o" / f"{d}-k{kappa}")
    path = compact(tmp_path / "o", tmp_path / "o_runs.csv")
    header = open(path).readline().strip().split(",")
    assert "kappa" in header and "layer_norm" in header and "beta2" not in header
    runs = figures.read_compact(path)
    assert sorted({r.settings["kappa"] for r in runs}) == [0.125, 2.0]
    assert all(r.settings["layer_norm"] is True for r in runs)
    assert len(figures.group_runs(runs)) == 2
    random_runs(tmp_path / "n", n_runs=1)
    plain = compact(tmp_path / "n" / "mountaincar", tmp_path / "n_runs.csv")
    assert not set(open(plain).readline().strip().split(",")) & set(figures.COMPACT_OPTIONAL)


# -------------------------------------------------------------------------- issue 22: consistency

def test_fig9_one_window_suite_in_title_and_untuned_curve_visible_under_best(tmp_path):
    """Fig. 9 from compact files of 10- and 100-episode bins: every panel smoothed over 100
    episodes; the title names MinAtar; the untuned curve that is also the best constant α stays a
    dashed curve, with the best-α line a pale band beneath it (not a line drawn over it)."""
    for game, b in (("minatar-freeway", 10), ("minatar-breakout", 100)):
        root = tmp_path / game
        for tuner, alpha, level in (("none", 2.0 ** -6, 5.0), ("none", 2.0 ** -7, 3.0),
                                    ("mixed", 2.0 ** -6, 6.0), ("mixed", 2.0 ** -7, 6.0)):
            for seed in (0, 1):
                write_run(str(root), dict(domain=game, tuner=tuner, alpha=alpha, mu=0.001,
                                          seed=seed), plateau(level + seed, n=400, ramp=50))
        compact(root / game, tmp_path / f"{game}_runs.csv", b)
    files = [str(tmp_path / f"{g}_runs.csv") for g in ("minatar-freeway", "minatar-breakout")]
    fig, rows = figures.make_figure(9, files, str(tmp_path / "out"), suite="minatar")
    assert "(MinAtar, an analogue of the ALE figure)" in title(fig)
    assert {ax.get_ylabel() for ax in fig.axes} == {"return (trailing mean of 100 episodes)"}
    for ax in fig.axes:
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        dashed = lines["no tuning α=$2^{-6}$ (n=2)"]
        band = lines["best constant α=$2^{-6}$ (n=2)"]
        assert dashed.get_linestyle() == "--" and dashed.get_zorder() > band.get_zorder()
        assert band.get_linewidth() > dashed.get_linewidth() and band.get_alpha() < 0.5
        np.testing.assert_allclose(band.get_ydata(), dashed.get_ydata())
    best = [r for r in rows if r["note"] == "best constant α"]
    assert len(best) == 2 and all(r["alpha0"] == 2.0 ** -6 for r in best)


def test_fig8_ale_title_and_name_flag(tmp_path, capsys):
    for tuner in ("none", "mixed"):
        write_run(str(tmp_path / "runs"), dict(domain="seaquest", tuner=tuner, alpha=2.0 ** -8,
                                               mu=0.001, seed=0), plateau(10.0, n=60, ramp=20))
    out = tmp_path / "out"
    assert figures.main(["--fig", "8", str(tmp_path / "runs"), "--out", str(out),
                         "--name", "fig8_seaquest"]) == 0
    assert sorted(os.listdir(out)) == ["fig8_seaquest.pdf", "fig8_seaquest.png",
                                       "fig8_seaquest_summary.csv"]
    assert "wrote " + str(out / "fig8_seaquest") + ".png" in capsys.readouterr().out
    assert figures.main(["--fig", "8", str(tmp_path / "runs"), "--out", str(out),
                         "--name", "../x"]) == 2
    assert "--name '../x'" in capsys.readouterr().err
    fig, _ = figures.make_figure(8, str(tmp_path / "runs"), str(tmp_path / "o2"))
    assert title(fig).startswith("Fig. 8 (ALE): α sweep per tuner")

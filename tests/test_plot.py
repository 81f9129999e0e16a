"""figures.plot_main (`run.py plot`): learning curves of fabricated runs grouped by any setting.

Every run is written here by hand (config.json + episodes.csv) so that the groups, the counts and
the plotted numbers can be checked against a plain NumPy computation.
"""
import csv
import json
import math
import os

import numpy as np
import pytest

import figures

pytestmark = pytest.mark.filterwarnings("error::matplotlib.MatplotlibDeprecationWarning")

BASE = dict(domain="mountaincar", tuner="scalar", alpha=2.0 ** -7, mu=2.0 ** -8, gamma=0.99,
            lam=0.8, seed=0, normalized=True, episodes=60)


def write_run(root, returns, diverged=False, score=None, lengths=None, status=None, **settings):
    """One run directory as run.py writes it; returns its path."""
    s = dict(BASE, **settings)
    name = "-".join(f"{k}{s[k]}" for k in ("domain", "tuner", "alpha", "mu", "lam", "seed"))
    out = os.path.join(str(root), name)
    os.makedirs(out)
    status = status or ("diverged" if diverged else "finished")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"settings": s, "status": status}, f)
    lengths = lengths if lengths is not None else [max(1, -int(r)) for r in returns]
    steps = np.cumsum(lengths)
    with open(os.path.join(out, "episodes.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["episode", "return", "length", "steps", "diverged"]
                   + (["score"] if score is not None else []))
        for ep, ret in enumerate(returns):
            w.writerow([ep, ret, lengths[ep], steps[ep], int(diverged and ep == len(returns) - 1)]
                       + ([score[ep]] if score is not None else []))
    return out


def trailing_mean(x, k):
    """Plain loop: mean of the last k values, fewer at the start."""
    return np.array([np.mean(x[max(0, i + 1 - k):i + 1]) for i in range(len(x))])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot(argv, capsys):
    """plot_main(argv) -> (exit code, stdout, stderr)."""
    code = figures.plot_main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def legend_labels(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


@pytest.fixture
def lam_runs(tmp_path):
    """lam 0.8 and 0.9, alpha 2^-7 and 2^-9, 3 seeds each, 60 episodes of random returns."""
    rng = np.random.default_rng(1)
    root = tmp_path / "runs"
    for lam in (0.8, 0.9):
        for a in (-7, -9):
            for seed in range(3):
                write_run(root, list(-200 + 50 * rng.random(60)), lam=lam, alpha=2.0 ** a,
                          seed=seed)
    return root


# -------------------------------------------------------------------------- grouping

def test_group_by_one_key_gives_groups_and_counts(lam_runs, tmp_path, capsys):
    out = tmp_path / "lam.png"
    code, stdout, err = plot([str(lam_runs), "--by", "lam", "--out", str(out)], capsys)
    assert code == 0, err
    assert out.stat().st_size > 0 and (tmp_path / "lam.csv").exists()
    rows = read_csv(tmp_path / "lam.csv")
    assert sorted({r["group"] for r in rows}) == ["lam=0.8", "lam=0.9"]
    assert {r["n"] for r in rows} == {"6"}
    assert "lam=0.8 (6 runs)" in stdout and "lam=0.9 (6 runs)" in stdout
    fig, groups, _, _ = figures.make_plot([str(lam_runs)], "lam", str(tmp_path / "b.png"), 20,
                                          False)
    assert [(g.get("lam"), len(g.runs)) for g in groups] == [(0.8, 6), (0.9, 6)]
    assert legend_labels(fig) == ["lam=0.8 (6 runs)", "lam=0.9 (6 runs)"]


def test_group_by_two_keys_gives_the_tuples(lam_runs, tmp_path):
    fig, groups, rows, _ = figures.make_plot([str(lam_runs)], "lam,alpha", str(tmp_path / "x.png"),
                                             20, False)
    assert [(g.get("lam"), g.get("alpha"), len(g.runs)) for g in groups] == [
        (0.8, 2.0 ** -9, 3), (0.8, 2.0 ** -7, 3), (0.9, 2.0 ** -9, 3), (0.9, 2.0 ** -7, 3)]
    assert sorted({r["group"] for r in rows}) == ["lam=0.8, alpha=2^-7", "lam=0.8, alpha=2^-9",
                                                  "lam=0.9, alpha=2^-7", "lam=0.9, alpha=2^-9"]
    assert legend_labels(fig)[0] == "lam=0.8, alpha=$2^{-9}$ (3 runs)"
    title = fig.axes[0].get_title()
    assert "also varying" not in title      # nothing but seed varies within the groups


def test_other_varying_settings_are_named(lam_runs, tmp_path):
    fig, *_ = figures.make_plot([str(lam_runs)], "lam", str(tmp_path / "x.png"), 20, False)
    assert "also varying, not grouped by: alpha" in fig.axes[0].get_title()


def test_several_paths_and_a_run_directory_count_each_run_once(lam_runs, tmp_path):
    one = sorted(p for p in lam_runs.iterdir())[0]
    _, groups, _, _ = figures.make_plot([str(lam_runs), str(one)], "lam", str(tmp_path / "x.png"),
                                        20, False)
    assert sum(len(g.runs) for g in groups) == 12
    _, groups, _, _ = figures.make_plot([str(one)], "tuner", str(tmp_path / "y.png"), 20, False)
    assert [len(g.runs) for g in groups] == [1]


# -------------------------------------------------------------------------- numbers

def test_csv_mean_and_se_equal_numpy(tmp_path):
    rng = np.random.default_rng(7)
    returns = rng.normal(-150, 20, size=(4, 30))
    for seed, r in enumerate(returns):
        write_run(tmp_path / "runs", list(r), seed=seed)
    out = tmp_path / "c.png"
    assert figures.plot_main([str(tmp_path / "runs"), "--by", "tuner", "--out", str(out),
                              "--window", "5"]) == 0
    rows = read_csv(tmp_path / "c.csv")
    smoothed = np.array([trailing_mean(r, 5) for r in returns])
    mean = smoothed.mean(axis=0)
    se = smoothed.std(axis=0, ddof=1) / math.sqrt(4)
    assert [int(r["x"]) for r in rows] == list(range(1, 31))
    assert [float(r["mean"]) for r in rows] == pytest.approx(mean, rel=1e-12)
    assert [float(r["se"]) for r in rows] == pytest.approx(se, rel=1e-9)
    assert {r["n"] for r in rows} == {"4"} and {r["group"] for r in rows} == {"tuner=scalar"}


def test_unequal_lengths_use_the_common_prefix_and_say_so(tmp_path):
    a, b = [-100.0] * 10, [-50.0] * 7
    write_run(tmp_path / "runs", a, seed=0)
    write_run(tmp_path / "runs", b, seed=1)
    fig, _, rows, _ = figures.make_plot([str(tmp_path / "runs")], "lam", str(tmp_path / "u.png"),
                                        3, False)
    assert [r["x"] for r in rows] == list(range(1, 8))
    assert [r["mean"] for r in rows] == pytest.approx([-75.0] * 7)
    assert "unequal length" in fig.axes[0].get_title()


def test_score_is_plotted_when_present(tmp_path):
    score = [float(i) for i in range(12)]
    write_run(tmp_path / "runs", [1.0] * 12, score=score, lengths=[10] * 12)
    fig, _, rows, _ = figures.make_plot([str(tmp_path / "runs")], "lam", str(tmp_path / "s.png"),
                                        1, False)
    assert [r["mean"] for r in rows] == pytest.approx(score)
    assert fig.axes[0].get_ylabel().startswith("score")


def test_steps_axis_is_a_common_grid_where_every_run_is_defined(tmp_path):
    rng = np.random.default_rng(3)
    lengths = {0: [100] * 20, 1: [150] * 20}
    returns = {s: list(rng.normal(-120, 10, 20)) for s in lengths}
    for s in lengths:
        write_run(tmp_path / "runs", returns[s], lengths=lengths[s], seed=s)
    code = figures.plot_main([str(tmp_path / "runs"), "--by", "lam", "--out",
                              str(tmp_path / "st.png"), "--window", "4", "--x", "steps"])
    assert code == 0
    rows = read_csv(tmp_path / "st.csv")
    x = np.array([float(r["x"]) for r in rows])
    assert x[0] == 150 and x[-1] == 2000 and np.all(np.diff(x) > 0)
    curves = [np.interp(x, np.cumsum(lengths[s]), trailing_mean(np.array(returns[s]), 4))
              for s in lengths]
    assert [float(r["mean"]) for r in rows] == pytest.approx(np.mean(curves, axis=0))
    assert {r["n"] for r in rows} == {"2"}


# -------------------------------------------------------------------------- drawing

def test_legend_lies_right_of_the_axes(lam_runs, tmp_path):
    fig, *_ = figures.make_plot([str(lam_runs)], "lam,alpha", str(tmp_path / "x.png"), 20, False)
    fig.draw_without_rendering()
    legend = fig.legends[0].get_window_extent()
    axes = fig.axes[0].get_window_extent()
    assert legend.x0 > axes.x1
    assert legend.x1 <= fig.bbox.x1 + 1          # and inside the figure


def test_diverged_runs_are_counted_in_the_label(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, [-100.0 - seed] * 20, lam=0.8, seed=seed, diverged=seed == 2)
    for seed in range(2):
        write_run(root, [-90.0] * (5 + seed), lam=0.9, seed=seed, diverged=True)
    fig, groups, rows, _ = figures.make_plot([str(root)], "lam", str(tmp_path / "d.png"), 20,
                                             False)
    assert legend_labels(fig) == ["lam=0.8 (3 runs, 1 diverged)", "lam=0.9 (2 runs, 2 diverged)"]
    assert {r["n"] for r in rows} == {2} and {r["group"] for r in rows} == {"lam=0.8"}
    assert [r["mean"] for r in rows] == pytest.approx([-100.5] * 20)


def test_unfinished_runs_are_noted(tmp_path):
    write_run(tmp_path / "runs", [-100.0] * 5, status="running")
    fig, *_ = figures.make_plot([str(tmp_path / "runs")], "lam", str(tmp_path / "r.png"), 2,
                                False)
    assert "1 runs not finished" in fig.axes[0].get_title()


# -------------------------------------------------------------------------- bad input

def one_line_error(argv, capsys, folder):
    """plot_main fails with status 2, one stderr line `run.py plot: error: ...`, nothing written."""
    before = sorted(os.listdir(folder))
    code, _, err = plot(argv, capsys)
    err = err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("run.py plot: error: "), err
    assert sorted(os.listdir(folder)) == before
    return err


def test_unknown_key_names_it_and_lists_the_keys(lam_runs, tmp_path, capsys):
    err = one_line_error([str(lam_runs), "--by", "lamb", "--out", str(tmp_path / "x.png")],
                         capsys, tmp_path)
    assert "'lamb'" in err and "lam, mu" in err and "tuner" in err
    err = one_line_error([str(lam_runs), "--by", "tuner,bogus", "--out", str(tmp_path / "x.png")],
                         capsys, tmp_path)
    assert "'bogus'" in err


def test_no_runs_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = one_line_error([str(tmp_path / "empty"), "--by", "lam", "--out",
                          str(tmp_path / "x.png")], capsys, tmp_path)
    assert "no runs" in err and "empty" in err
    err = one_line_error([str(tmp_path / "nowhere"), "--by", "lam", "--out",
                          str(tmp_path / "x.png")], capsys, tmp_path)
    assert "nowhere" in err and "does not exist" in err


@pytest.mark.parametrize("window", ["0", "-3", "abc", "2.5", ""])
def test_bad_window_gives_the_accepted_range(lam_runs, tmp_path, capsys, window):
    err = one_line_error([str(lam_runs), "--by", "lam", "--out", str(tmp_path / "x.png"),
                          "--window", window], capsys, tmp_path)
    assert "integer >= 1" in err


def test_bad_out_is_one_line(lam_runs, tmp_path, capsys):
    err = one_line_error([str(lam_runs), "--by", "lam", "--out",
                          str(tmp_path / "missing" / "x.png")], capsys, tmp_path)
    assert "missing" in err and "does not exist" in err
    err = one_line_error([str(lam_runs), "--by", "lam", "--out", str(tmp_path)], capsys, tmp_path)
    assert "is a directory" in err
    err = one_line_error([str(lam_runs), "--by", "lam", "--out", str(tmp_path / "x.pdf")], capsys,
                         tmp_path)
    assert ".png" in err


@pytest.mark.parametrize("argv", [[], ["--by", "lam", "--out", "x.png"], ["runs"],
                                  ["runs", "--by", "lam", "--out", "x.png", "--x", "time"]])
def test_usage_errors_are_one_line(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    one_line_error(argv, capsys, tmp_path)


def test_steps_axis_needs_a_steps_column(tmp_path, capsys):
    run = write_run(tmp_path / "runs", [-100.0] * 5)
    with open(os.path.join(run, "episodes.csv"), "w") as f:
        f.write("episode,return\n0,-100\n1,-90\n")
    err = one_line_error([str(tmp_path / "runs"), "--by", "lam", "--out", str(tmp_path / "x.png"),
                          "--x", "steps"], capsys, tmp_path)
    assert "steps column" in err


def test_a_run_written_twice_counts_once(tmp_path, capsys):
    write_run(tmp_path / "a", [-100.0] * 5, seed=0)
    write_run(tmp_path / "b", [-100.0] * 8, seed=0)
    code, _, err = plot([str(tmp_path / "a"), str(tmp_path / "b"), "--by", "lam", "--out",
                         str(tmp_path / "x.png")], capsys)
    assert code == 0 and "duplicate" in err
    assert {r["n"] for r in read_csv(tmp_path / "x.csv")} == {"1"}
    assert len(read_csv(tmp_path / "x.csv")) == 8      # the longer copy is kept

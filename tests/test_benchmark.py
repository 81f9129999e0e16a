"""docs/benchmark.py: its statistics on planted data with known answers, the compact files, the
pilot's choice and its edge rule, and the report's tables."""
import csv
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs"))
import benchmark as b  # noqa: E402


# ------------------------------------------------------------------------ the measures

def test_iqm_is_the_mean_of_the_middle_half():
    """1..8: the middle half is 3, 4, 5, 6."""
    assert b.iqm(np.arange(1.0, 9.0)) == 4.5


def test_optimality_gap_clips_at_one():
    """min(x, 1) = (0.5, 1, 1, 0): the gap is 1 - 0.625."""
    assert b.optimality_gap(np.array([0.5, 1.5, 1.0, 0.0])) == pytest.approx(0.375, abs=1e-15)


def test_probability_of_improvement_counts_pairs():
    """(1, 2, 3) against (0, 2): 4 wins and a tie of 6 pairs; tasks average."""
    assert b.poi_task([1, 2, 3], [0, 2]) == 0.75
    assert b.probability_of_improvement([[1, 2, 3], [5, 5]], [[0, 2], [9, 9]]) == 0.375
    assert b.probability_of_improvement([[1.0, 1.0]], [[1.0, 1.0]]) == 0.5


def test_holm():
    """p = (0.01, 0.04, 0.03): 3 x 0.01, then max(0.03, 2 x 0.03), then max(0.06, 0.04)."""
    assert b.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_the_bootstrap_is_stratified():
    """Runs constant within each task but different between tasks: resampling within tasks never
    changes the pooled IQM or gap, so their intervals are the point; a pooled resampling would
    mix the tasks and give a wide interval.  18 runs: the IQM drops 4 from each end, leaving two
    0.2, six 0.6 and two 1.4 (mean 0.68); the gap is (0.8 + 0.4 + 0) / 3."""
    tasks = [np.full(6, 0.2), np.full(6, 0.6), np.full(6, 1.4)]
    g = b.aggregate(tasks, n_resamples=500)
    assert g["iqm_ci"] == pytest.approx((g["iqm"], g["iqm"]))
    assert g["gap_ci"] == pytest.approx((g["gap"], g["gap"]))
    assert g["iqm"] == pytest.approx(0.68) and g["gap"] == pytest.approx((0.8 + 0.4) / 3)


def test_mean_interval_has_the_normal_width():
    """400 draws of N(3, 1): the 95 % interval holds 3 and is about +-1.96/20 wide."""
    x = np.random.default_rng(0).normal(3.0, 1.0, 400)
    m, (lo, hi) = b.mean_ci(x, n_resamples=4000)
    assert lo < 3.0 < hi and lo < m < hi
    assert 0.08 < (hi - lo) / 2 < 0.12


def test_poi_separates_a_planted_gap_and_not_noise():
    """X = Y + 10 on every task: P = 1, interval [1, 1]; X and Y from one distribution: the
    interval holds 0.5."""
    rng = np.random.default_rng(1)
    ys = [rng.normal(0, 1, 10) for _ in range(5)]
    p, (lo, hi) = b.poi_ci([y + 10 for y in ys], ys, n_resamples=500)
    assert p == 1.0 and lo == 1.0 and hi == 1.0
    xs = [rng.normal(0, 1, 10) for _ in range(5)]
    p, (lo, hi) = b.poi_ci(xs, ys, n_resamples=2000)
    assert lo < 0.5 < hi


def test_measures_agree_with_rliable_formulas():
    """rliable's metrics as published: IQM = the mean of the middle 26 of 50 pooled runs (12
    dropped at each end, as a 25 % trim of 50 drops), gap = mean of
    max(1 - x, 0), P(X > Y) = the Mann-Whitney U over n m per task, averaged."""
    from scipy import stats
    rng = np.random.default_rng(2)
    x, y = rng.normal(1, 0.3, (5, 10)), rng.normal(0.8, 0.3, (5, 10))
    assert b.iqm(x.ravel()) == pytest.approx(np.sort(x.ravel())[12:38].mean(), abs=1e-15)
    assert b.optimality_gap(x.ravel()) == pytest.approx(np.mean(np.maximum(1 - x, 0)), abs=1e-15)
    u = [stats.mannwhitneyu(x[t], y[t]).statistic / 100 for t in range(5)]
    assert b.probability_of_improvement(x, y) == pytest.approx(np.mean(u), abs=1e-15)


# ------------------------------------------------------------------------ planted runs

def write_run(d, settings, episodes, status="finished"):
    """A run directory as run.py leaves it: config.json, episodes.csv, timing.csv."""
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(settings=settings, status=status), f)
    with open(os.path.join(d, "episodes.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["episode", "return", "score", "length", "steps", "complete", "diverged",
                    "entropy"])
        for i, (steps, score, complete, diverged) in enumerate(episodes):
            w.writerow([i, score, score, 1, steps, complete, diverged, 0.5])
    with open(os.path.join(d, "timing.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["episode", "seconds", "elapsed_seconds"])
        for i in range(len(episodes)):
            w.writerow([i, 0.5, 0.5 * (i + 1)])


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A two-task suite ('a', 'b'), two arms with three settings each, figures in tmp_path."""
    figs = tmp_path / "figures"
    figs.mkdir()
    monkeypatch.setattr(b, "FIGURES", str(figs))
    suite = b.Suite("toy", ("minatar-breakout", "minatar-freeway"), 100, 200, 4, 10, ())
    monkeypatch.setattr(b, "SUITES", {"toy": suite})
    arms = (b.Arm("A", "none", True, 1, "paper", (), tuple({"alpha": f"2^-{k}"} for k in (6, 8, 10))),
            b.Arm("B", "mixed", False, 1, "paper", (), tuple({"mu": f"2^-{k}"} for k in (6, 8, 10))))
    monkeypatch.setattr(b, "ARMS", arms)
    monkeypatch.setattr(b, "ARM", {a.name: a for a in arms})
    monkeypatch.setattr(b, "ARM_ORDER", {a.name: i for i, a in enumerate(arms)})
    with open(figs / "bench_random.csv", "w") as f:
        f.write("domain,steps,episodes,mean_score\nminatar-breakout,1,1,0\nminatar-freeway,1,1,0\n")
    return tmp_path, suite


def plant(root, phase, suite, arm, label, seed, domain, score, budget, diverge_at=None):
    """One run of the planted suite: an episode every 5 steps scoring `score`."""
    s = dict(domain=domain, tuner=b.ARM[arm].tuner, seed=seed, steps=budget, towers=1,
             activation="paper", layer_norm=b.ARM[arm].stabilized)
    eps = []
    for t in range(5, budget + 1, 5):
        if diverge_at is not None and t >= diverge_at:
            eps.append((t, "nan", 1, 1))
            break
        eps.append((t, score, 1, 0))
    sub = (domain,) if phase == "eval" else ()        # evaluation sweeps: one per task and arm
    d = os.path.join(root, phase, suite, arm, label, *sub, f"{domain}-s{seed}")
    write_run(d, s, eps, "diverged" if diverge_at is not None else "finished")


def test_compact_bins_and_final_scores(planted):
    """Bins of 10 steps hold 2 episodes each; the final score reads the last 20 % (2 bins); a
    diverged run keeps its bins up to the divergence and scores the random policy (0)."""
    root, suite = planted
    plant(root, "pilot", "toy", "A", "alpha=2^-6", 1000, "minatar-breakout", 7.0, 100)
    plant(root, "pilot", "toy", "A", "alpha=2^-6", 1001, "minatar-breakout", 9.0, 100, 55)
    assert b.compact("pilot", "toy", str(root)) == 0
    rows = b.read_compact(b.compact_path("pilot", "minatar-breakout"))
    one = [r for r in rows if r["seed"] == 1000]
    assert [r["bin"] for r in one] == list(range(10, 101, 10))
    assert all(r["episodes"] == 2 and r["mean_score"] == 7.0 for r in one)
    two = [r for r in rows if r["seed"] == 1001]
    assert two[-1]["bin"] == 60 and two[-1]["diverged"] == 1 and two[-1]["episodes"] == 0
    f = b.final_scores(rows, 0.0)[("A", "alpha=2^-6")]
    assert f == {1000: 7.0, 1001: 0.0}


def test_select_chooses_the_best_and_extends_an_edge(planted):
    """A's scores peak inside its grid (2^-8): chosen.  B's rise to its edge (2^-10): select asks
    for 2^-12 and holds the choice; once 2^-12 is piloted and lower, 2^-10 is chosen."""
    root, suite = planted
    levels = {("A", "alpha=2^-6"): 2, ("A", "alpha=2^-8"): 8, ("A", "alpha=2^-10"): 4,
              ("B", "mu=2^-6"): 1, ("B", "mu=2^-8"): 3, ("B", "mu=2^-10"): 6}
    for (arm, label), level in levels.items():
        for d in suite.domains:
            for seed in (1000, 1001, 1002):
                plant(root, "pilot", "toy", arm, label, seed, d, level + (seed - 1001) * 0.1, 100)
    b.compact("pilot", "toy", str(root))
    b.select("toy")
    c = b.read_choice("toy")
    assert c["A"]["label"] == "alpha=2^-8" and not c["A"]["extensions_pending"]
    assert c["B"]["extensions"] == [{"mu": "2^-12"}] and c["B"]["extensions_pending"]
    assert b.chosen_settings("toy") == {"A": {"alpha": "2^-8"}}
    assert c["A"]["pilot"]["alpha=2^-8"] == pytest.approx(1.0)       # the best normalizes to 1
    assert c["A"]["pilot"]["alpha=2^-6"] == pytest.approx(0.25)
    dirs = [d for arm, _, d, _ in b.sweeps("pilot", "toy", "/r") if arm == "B"]
    assert dirs[-1].endswith(os.path.join("B", "mu=2^-12"))
    for d in suite.domains:
        for seed in (1000, 1001, 1002):
            plant(root, "pilot", "toy", "B", "mu=2^-12", seed, d, 5.0, 100)
    b.compact("pilot", "toy", str(root))
    b.select("toy")
    c = b.read_choice("toy")
    assert c["B"]["label"] == "mu=2^-10" and not c["B"]["extensions_pending"]
    assert b.chosen_settings("toy") == {"A": {"alpha": "2^-8"}, "B": {"mu": "2^-10"}}


def test_report_tables_on_planted_evaluation(planted, tmp_path):
    """Evaluation: A scores 10 on every run of both tasks, B 5: normalized A = 1, B = 0.5, so
    IQM 1.00 and 0.50 with zero-width intervals, gap 0 and 0.5, P(A > B) = 1, separable."""
    root, suite = planted
    with open(b.choice_path("toy"), "w") as f:
        json.dump({"A": {"setting": {"alpha": "2^-8"}}, "B": {"setting": {"mu": "2^-10"}}}, f)
    for arm, label, level in (("A", "alpha=2^-8", 10.0), ("B", "mu=2^-10", 5.0)):
        for d in suite.domains:
            for seed in range(4):
                plant(root, "eval", "toy", arm, label, seed, d, level, 200)
    b.compact("eval", "toy", str(root))
    t = b.eval_blocks("toy")
    agg = t["bench_toy_aggregate"]
    assert "| A | 1.00 [1.00, 1.00] | 0.00 [0.00, 0.00] |" in agg
    assert "| B | 0.50 [0.50, 0.50] | 0.50 [0.50, 0.50] |" in agg
    assert "| A > B | 1.00 [1.00, 1.00] | yes |" in t["bench_toy_poi"]
    assert "10.0 [10.0, 10.0] (4)" in t["bench_toy_tasks"]
    assert "| arm | Breakout | Freeway |\n|---|---|---|\n| A | 10 | 10 |\n| B | 10 | 10 |" in \
        t["bench_toy_speed"]                       # 200 steps: 40 episodes of 0.5 s
    md = tmp_path / "b.md"
    md.write_text("x\n<!-- bench: bench_toy_aggregate -->\nold\n<!-- /bench -->\n")
    assert b.report(check=True, md=str(md)) == 1
    assert b.report(md=str(md)) == 0 and b.report(check=True, md=str(md)) == 0
    assert agg in md.read_text()
    assert os.path.exists(os.path.join(b.FIGURES, "bench_aggregate_toy.png"))


def test_design_commands_are_valid_sweeps():
    """Every pilot sweep of both suites parses as a run.py sweep (expanded, not run)."""
    sys.path.insert(0, ROOT)
    import sweep
    for suite in ("minatar", "mujoco"):
        for _, _, _, argv in b.sweeps("pilot", suite, "/nowhere"):
            args = sweep.sweep_parser().parse_args(argv[2:])
            runs = sweep.expand(args)
            assert len(runs) == len(b.SUITES[suite].domains) * b.PILOT_SEEDS[1]


def test_committed_tables_are_up_to_date():
    """docs/benchmark.md's generated tables equal what the committed compact files give."""
    assert b.report(check=True) == 0


def test_statistics_use_complete_tasks_only(planted):
    """B has 3 of its 4 seeds on Freeway: Freeway stays out of the tables (the progress table
    says 3/4), Breakout, where both arms are whole, is in; A's diverged run there scores the
    random policy (0): A's mean is (3 + 4 + 5 + 0) / 4."""
    root, suite = planted
    with open(b.choice_path("toy"), "w") as f:
        json.dump({"A": {"setting": {"alpha": "2^-8"}}, "B": {"setting": {"mu": "2^-10"}}}, f)
    for arm, label in (("A", "alpha=2^-8"), ("B", "mu=2^-10")):
        for d in suite.domains:
            for seed in range(3 if (arm, d) == ("B", "minatar-freeway") else 4):
                div = 100 if (arm, d, seed) == ("A", "minatar-breakout", 3) else None
                plant(root, "eval", "toy", arm, label, seed, d, 3.0 + seed, 200, div)
    b.compact("eval", "toy", str(root))
    t = b.eval_blocks("toy")
    assert "| A | 3.0 [" in t["bench_toy_tasks"] and "(4, 1 diverged) |" in t["bench_toy_tasks"]
    assert "| Freeway | 4/4 | 3/4 |" in t["bench_toy_progress"]
    assert t["bench_toy_tasks"].splitlines()[0] == "| arm | Breakout |"


def test_all_runs_pilot_select_and_evaluation(tmp_path, monkeypatch):
    """`all` on a one-task suite of 300-step runs: the pilot of two arms (two settings each,
    3 seeds), the choice, and the chosen settings' evaluation (2 seeds), all compacted."""
    figs = tmp_path / "figures"
    figs.mkdir()
    monkeypatch.setattr(b, "FIGURES", str(figs))
    monkeypatch.setattr(b, "MAX_EXTENSIONS", 0)
    suite = b.Suite("toy", ("minatar-breakout",), 300, 400, 2, 100, ())
    monkeypatch.setattr(b, "SUITES", {"toy": suite})
    arms = (b.Arm("A", "none", True, 1, "paper", (), ({"alpha": "2^-6"}, {"alpha": "2^-8"})),
            b.Arm("B", "stream_ac", True, 2, "leaky_relu", ("--alpha", "1"),
                  ({"kappa": "1", "kappa_pi": "1.5"}, {"kappa": "2", "kappa_pi": "3"})))
    monkeypatch.setattr(b, "ARMS", arms)
    monkeypatch.setattr(b, "ARM", {a.name: a for a in arms})
    monkeypatch.setattr(b, "ARM_ORDER", {a.name: i for i, a in enumerate(arms)})
    with open(figs / "bench_random.csv", "w") as f:
        f.write("domain,steps,episodes,mean_score\nminatar-breakout,1,1,0.5\n")
    assert b.run_all(str(tmp_path / "runs"), 2, ["toy"]) == 0
    choice = b.read_choice("toy")
    assert set(b.chosen_settings("toy")) == {"A", "B"}
    pilot = b.read_compact(b.compact_path("pilot", "minatar-breakout"))
    assert {(r["arm"], r["setting"], r["seed"]) for r in pilot} == {
        (a.name, b.setting_label(st), seed) for a in arms for st in a.grid
        for seed in (1000, 1001, 1002)}
    ev = b.read_compact(b.compact_path("eval", "minatar-breakout"))
    assert {(r["arm"], r["setting"], r["seed"]) for r in ev} == {
        (a, choice[a]["label"], seed) for a in ("A", "B") for seed in (0, 1)}
    assert {r["budget"] for r in ev} == {400} and {r["budget"] for r in pilot} == {300}

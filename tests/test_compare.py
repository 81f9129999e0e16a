"""docs/compare.py: each method at its best setting, its final return and its spread over alpha0."""
import csv
import os
import subprocess
import sys

import pytest

from tests.test_figures import plateau, write_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_best_setting_final_and_spread(tmp_path):
    """none at alpha 2^-7 / 2^-9 plateaus at -120 / -150; obgd at (2^-4, kappa 2) -> -200,
    (2^-4, 0.125) -> -110, (2^-6, 0.125) -> -130: obgd's best is (2^-4, 0.125) at -110, its
    spread over alpha0 compares each alpha0 at its best kappa (-110 against -130)."""
    cases = [("none", 2.0 ** -7, None, -120.0), ("none", 2.0 ** -9, None, -150.0),
             ("obgd", 2.0 ** -4, 2.0, -200.0), ("obgd", 2.0 ** -4, 0.125, -110.0),
             ("obgd", 2.0 ** -6, 0.125, -130.0)]
    for k, (tuner, alpha, kappa, level) in enumerate(cases):
        for seed in range(2):
            s = dict(domain="drifting_mountaincar", tuner=tuner, alpha=alpha, mu=0.0, seed=seed)
            if kappa is not None:
                s["kappa"] = kappa
            write_run(str(tmp_path / f"c{k}"), s, plateau(level + seed))
    r = subprocess.run([sys.executable, "docs/compare.py", *[str(tmp_path / f"c{k}")
                                                             for k in range(len(cases))],
                        "--out", str(tmp_path / "out"), "--name", "t"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {row["method"]: row for row in csv.DictReader(open(tmp_path / "out" / "t_table.csv"))}
    assert set(rows) == {"none", "obgd"} and (tmp_path / "out" / "t.png").exists()
    assert float(rows["none"]["best_alpha0"]) == 2.0 ** -7
    assert float(rows["none"]["final_return"]) == pytest.approx(-119.5, abs=0.01)
    assert float(rows["none"]["spread_alpha0"]) == pytest.approx(30.0, abs=0.01)
    assert (float(rows["obgd"]["best_alpha0"]), float(rows["obgd"]["best_kappa"])) == (2.0 ** -4, 0.125)
    assert float(rows["obgd"]["final_return"]) == pytest.approx(-109.5, abs=0.01)
    assert float(rows["obgd"]["spread_alpha0"]) == pytest.approx(20.0, abs=0.01)
    assert rows["obgd"]["settings_tried"] == "3" and rows["obgd"]["alpha0_tried"] == "2"
    assert float(rows["none"]["spread_settings"]) == pytest.approx(30.0, abs=0.01)
    assert float(rows["obgd"]["spread_settings"]) == pytest.approx(90.0, abs=0.01)


def test_missing_results_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "docs/compare.py", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and not (tmp_path / "o").exists()

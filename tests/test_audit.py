"""Classes of bad input and crafted files from the audit of issue 21: each is refused with one
line (exit status 2, no traceback, nothing written) or handled exactly."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def one_line_refusal(p, *words):
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    for w in words:
        assert w in p.stderr, p.stderr


@pytest.mark.parametrize("text,value", [("9007199254740993", 9007199254740993),
                                        ("9223372036854775807", 2**63 - 1), ("1e3", 1000),
                                        ("2^40", 2**40), ("12", 12)])
def test_integer_settings_are_read_exactly(text, value):
    """Seeds are not rounded through a float (2^53 + 1 stays itself), and the documented
    maximum 2^63 - 1 is accepted."""
    assert run.checked("seed", text) == value
    assert type(run.checked("seed", text)) is int


@pytest.mark.parametrize("text", ["9223372036854775808", "2^63", "1.5", "-1", "1e30"])
def test_integer_settings_out_of_range_are_refused(text):
    with pytest.raises(run.UsageError, match="outside the accepted range"):
        run.checked("seed", text)


@pytest.mark.parametrize("domain,budget", [("minatar-breakout", ["--steps", "50"]),
                                           ("mountaincar", ["--episodes", "2"])])
def test_the_largest_seed_runs_and_is_stored_exactly(domain, budget, tmp_path):
    """2^63 - 1 runs (MinAtar's 32-bit generator gets a hash of it) and config.json keeps it."""
    out = tmp_path / "r"
    p = cli("--domain", domain, *budget, "--seed", "9223372036854775807", "--quiet",
            "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "config.json").read_text())["settings"]["seed"] == 2**63 - 1


@pytest.mark.parametrize("cmd", [["--domain", "mountaincar", "--episodes", "2"],
                                 ["sweep", "--episodes", "2", "--seeds", "1"],
                                 ["figures", "--fig", "2", "docs/figures/fig2_runs.csv"]])
@pytest.mark.parametrize("out", ["", "  "])
def test_empty_out_is_refused(cmd, out, tmp_path):
    """--out '' (or blank) is refused with one line and writes nothing, for runs, sweeps and
    figures (it used to mean the default directory, or the current one)."""
    before = set(os.listdir(tmp_path))
    p = cli(*cmd, "--out", out, cwd=str(tmp_path))
    one_line_refusal(p, "--out", "empty")
    assert set(os.listdir(tmp_path)) == before


def test_a_finished_run_cut_short_is_not_done(tmp_path):
    """A finished run whose episodes.csv lost rows is not counted as done: the sweep and
    --resume refuse it with one line naming it, and change nothing."""
    root = tmp_path / "sw"
    p = cli("sweep", "--episodes", "3", "--seeds", "2", "--tuner", "scalar", "--quiet",
            "--workers", "1", "--out", str(root))
    assert p.returncode == 0, p.stderr
    runs = sorted(d for d in os.listdir(root) if os.path.isdir(root / d))
    csv_path = root / runs[0] / "episodes.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(lines[:-1]))
    snapshot = {d: sorted(os.listdir(root / d)) for d in runs}
    p = cli("sweep", "--episodes", "3", "--seeds", "2", "--tuner", "scalar", "--quiet",
            "--workers", "1", "--out", str(root))
    one_line_refusal(p, runs[0], "cut short")
    cfg = json.loads((root / runs[0] / "config.json").read_text())["settings"]
    p = cli("--domain", "mountaincar", "--episodes", "3", "--tuner", "scalar", "--seed",
            str(cfg["seed"]), "--quiet", "--resume", "--out", str(root / runs[0]))
    one_line_refusal(p, "cut short")
    assert {d: sorted(os.listdir(root / d)) for d in runs} == snapshot
    assert csv_path.read_text() == "".join(lines[:-1])


def craft_agent(src, dst, edit):
    """A copy of agent file src at dst with its JSON table changed by edit(meta)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")[()]))
    edit(meta)
    with open(dst, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished mountain-car runs (seeds 0 and 1) and one MinAtar run, with their agents."""
    root = tmp_path_factory.mktemp("agents")
    for name, args in (("s0", ["--seed", "0"]), ("s1", ["--seed", "1"])):
        p = cli("--domain", "mountaincar", "--episodes", "2", *args, "--quiet",
                "--out", str(root / name))
        assert p.returncode == 0, p.stderr
    p = cli("--domain", "minatar-breakout", "--steps", "100", "--quiet", "--out", str(root / "net"))
    assert p.returncode == 0, p.stderr
    return root


def test_an_agent_from_another_run_is_refused(two_runs, tmp_path):
    """agent.npz records the run that made it (settings hash and seed); `evaluate` refuses an
    agent of another seed, and one that records no run."""
    import shutil
    d = tmp_path / "s0"
    shutil.copytree(two_runs / "s0", d)
    assert cli("evaluate", str(d), "--episodes", "1").returncode == 0
    shutil.copy(two_runs / "s1" / "agent.npz", d / "agent.npz")
    one_line_refusal(cli("evaluate", str(d), "--episodes", "1"), "not saved by this run")
    craft_agent(two_runs / "s0" / "agent.npz", d / "agent.npz", lambda m: m.pop("run"))
    one_line_refusal(cli("evaluate", str(d), "--episodes", "1"), "not saved by this run")


@pytest.mark.parametrize("run_dir,edit", [
    ("s0", lambda m: m["shape"].update(n_features=10**12)),
    ("s0", lambda m: m["shape"].update(max_active=10**12)),
    ("s0", lambda m: m.update(shape=[1, 2])),
    ("net", lambda m: m["shape"].update(obs_shape=[4, 100000, 100000])),
    ("net", lambda m: m["shape"].update(dense=[10**9])),
])
def test_an_agent_with_a_huge_or_wrong_shape_is_refused(two_runs, tmp_path, run_dir, edit):
    """A crafted shape is checked against the arrays the file holds before anything is built:
    one line, no MemoryError."""
    import shutil
    d = tmp_path / run_dir
    shutil.copytree(two_runs / run_dir, d)
    craft_agent(two_runs / run_dir / "agent.npz", d / "agent.npz", edit)
    one_line_refusal(cli("evaluate", str(d), "--episodes", "1"), "agent.npz")


def test_a_described_net_too_large_to_build_is_refused():
    """nets.from_spec refuses a description whose activations would not fit, weights or not."""
    import nets
    d = nets.spec(nets.MINATAR(4, 3))
    d["obs_shape"], d["convs"] = [1, 40000, 40000], [[1, [1, 1], [1, 1]]]
    with pytest.raises(ValueError, match="entries in one array"):
        nets.from_spec(d)


CRAFTED = {   # config.json settings edits, each one a class of the audit
    "deep": None,
    "list value": lambda s: s.update(alpha=[1]),
    "no seed": lambda s: s.pop("seed"),
    "alpha 0": lambda s: s.update(alpha=0),
    "mu -1": lambda s: s.update(mu=-1),
    "tuner a table": lambda s: s.update(tuner={"a": 1}),
    "seed a string": lambda s: s.update(seed="0"),
    "seed a float": lambda s: s.update(seed=0.0),
    "switch a number": lambda s: s.update(normalized=1),
    "nested": lambda s: (s.clear(), s.update(x={"y": [1, {"z": []}]})),
}


@pytest.fixture(scope="module")
def crafted_runs(two_runs, tmp_path_factory):
    """Copies of a finished run with a crafted config.json each."""
    import shutil
    root = tmp_path_factory.mktemp("crafted")
    base = json.loads((two_runs / "s0" / "config.json").read_text())
    for name, edit in CRAFTED.items():
        d = root / name.replace(" ", "_")
        shutil.copytree(two_runs / "s0", d)
        if edit is None:
            text = '{"settings": ' + "[" * 100000 + "]" * 100000 + ', "status": "finished"}'
        else:
            cfg = json.loads(json.dumps(base))
            edit(cfg["settings"])
            text = json.dumps(cfg)
        (d / "config.json").write_text(text)
    return root


@pytest.mark.parametrize("name", list(CRAFTED))
@pytest.mark.parametrize("command", ["evaluate", "figures", "plot", "resume"])
def test_a_crafted_config_json_gets_one_line(crafted_runs, tmp_path, name, command):
    """A deeply nested or mistyped config.json, or one with values out of range, is refused
    with one line by every command that reads it, and nothing is written."""
    d = str(crafted_runs / name.replace(" ", "_"))
    before = sorted(os.listdir(d))
    args = {"evaluate": ["evaluate", d, "--episodes", "1"],
            "figures": ["figures", "--fig", "2", d, "--out", str(tmp_path / "f")],
            "plot": ["plot", d, "--by", "alpha", "--out", str(tmp_path / "p.png")],
            "resume": ["--domain", "mountaincar", "--episodes", "2", "--resume", "--out", d]}
    one_line_refusal(cli(*args[command]))
    assert sorted(os.listdir(d)) == before
    assert not os.listdir(tmp_path)


def test_real_runs_read_back_and_a_non_canonical_value_does_not(two_runs):
    """stored_settings accepts a real run's settings (linear and network), and refuses the same
    settings with one value off its canonical one (drift on plain mountain car, mu for ObGD)."""
    for d in ("s0", "net"):
        s = json.loads((two_runs / d / "config.json").read_text())["settings"]
        run.stored_settings(s, d)
        run.stored_settings(s, d, complete=False)
    s = json.loads((two_runs / "s0" / "config.json").read_text())["settings"]
    with pytest.raises(run.UsageError, match="drift"):
        run.stored_settings(dict(s, drift=1e-3), "s0")
    with pytest.raises(run.UsageError, match="mu"):
        run.stored_settings(dict(s, tuner="obgd", kappa=2.0, mu=0.5), "s0")


def test_a_crash_mid_run_is_recorded_as_failed(tmp_path, monkeypatch):
    """An exception in the middle of a run leaves config.json at status 'failed' with the
    error, every whole episode before it in episodes.csv, and the run resumable."""
    s = run.settings(run.run_parser().parse_args(["--domain", "mountaincar", "--episodes", "6"]))
    real, calls = run.LinearRunner.next_row, []

    def flaky(self, *a):
        calls.append(1)
        if len(calls) == 4:
            raise IndexError("a game state it cannot play")
        return real(self, *a)
    monkeypatch.setattr(run.LinearRunner, "next_row", flaky)
    out = str(tmp_path / "r")
    with pytest.raises(IndexError):
        run.run(s, out, quiet=True, harness=run.Harness(every=1))
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["status"] == "failed" and cfg["error"].startswith("IndexError")
    assert cfg["episodes_done"] == 3
    assert len((tmp_path / "r" / "episodes.csv").read_text().splitlines()) == 1 + 3
    monkeypatch.setattr(run.LinearRunner, "next_row", real)
    assert run.run(s, out, quiet=True, resume=True)["status"] == "finished"
    fresh = run.run(s, str(tmp_path / "fresh"), quiet=True)
    assert fresh["status"] == "finished"
    assert ((tmp_path / "r" / "episodes.csv").read_text()
            == (tmp_path / "fresh" / "episodes.csv").read_text())

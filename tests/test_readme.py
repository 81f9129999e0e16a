"""Every Python example in README.md runs, and says what README says it says."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def examples():
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_examples_are_short():
    """The linear example is at most 15 lines; making a network agent for a gymnasium env takes
    at most 10 lines (imports included), the first loop excluded."""
    codes = examples()
    assert len(codes) == 3
    lines = [line for line in codes[0].splitlines() if line.strip()]
    assert len(lines) <= 15 and "LinearAgent" in codes[0]
    head = codes[1].split("for t in")[0]
    assert "agent_for" in head and len([x for x in head.splitlines() if x.strip()]) <= 10


def test_every_readme_example_runs(tmp_path):
    for k, code in enumerate(examples()):
        path = tmp_path / f"example{k}.py"
        path.write_text(code)
        r = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
        assert r.returncode == 0, r.stderr
        out = r.stdout.split()
        if k == 0:   # the corridor: the greedy policy goes right everywhere
            assert r.stdout.strip() == "[1, 1, 1, 1, 1, 1, 1, 1, 1]", r.stdout
        elif k == 1:   # CartPole: well beyond the random policy's 22; the agent file is kept
            assert float(out[1]) > 50 and int(out[2]) in (0, 1), r.stdout
            assert (tmp_path / "cartpole_agent.npz").exists()
        else:          # tile-coded MountainCar-v0: reaches the goal well within 200 steps
            assert float(out[0]) > -180, r.stdout


def test_readme_acrobot_command_learns(tmp_path):
    """README's Acrobot command, as written (seed 0), learns: its last 50 complete episodes
    average well above the -500 of an episode that never swings up."""
    import csv
    text = open(os.path.join(ROOT, "README.md")).read()
    line = next(x for x in text.splitlines() if x.startswith("python run.py --domain Acrobot-v1"))
    args = line.split()[2:]
    out = tmp_path / "acrobot"
    r = subprocess.run([sys.executable, "run.py", *args, "--quiet", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with open(out / "episodes.csv", newline="") as f:
        scores = [float(x["score"]) for x in csv.DictReader(f) if x["complete"] == "1"]
    assert sum(scores[-50:]) / 50 > -300, scores[-50:]

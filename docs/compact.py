"""Compact per-run curves of a sweep: episode returns and mean beta per group, binned.

    python docs/compact.py RESULTS_DIR OUT.csv [--bin 100]

One row per run and bin: the run's settings that vary in a sweep (domain, tuner, normalized,
drift, alpha, mu, seed, and the ObGD settings kappa, beta2 and Stream AC's stabilizers where a
run of the file has them), the bin's first episode and its mean return, score and beta columns, with
4 significant digits (about 3 kB per run of 5000 episodes at --bin 100), whether the bin diverged
and, when episodes.csv records them, the cumulative agent steps at the end of the bin (last
column, exact).  Raw run directories are not committed; these rows are.
`python run.py figures --fig N OUT.csv` redraws a figure from them.
"""
import argparse
import csv
import json
import math
import os
import sys

KEYS = ("domain", "tuner", "normalized", "drift", "alpha", "mu", "seed")
OPTIONAL = ("kappa", "beta2", "sparse_init", "layer_norm", "normalize_obs", "scale_reward")
VALUES = ("return", "score", "beta_critic", "beta_actor", "beta_critic_noise", "beta_actor_noise",
          "beta_mean")


class CompactError(Exception):
    """A run directory this script cannot read: one line, exit status 2."""


def runs(root):
    """(settings, rows) of every finished or diverged run under root."""
    for d in sorted(os.listdir(root)):
        cfg_path, csv_path = os.path.join(root, d, "config.json"), os.path.join(root, d, "episodes.csv")
        if not (os.path.exists(cfg_path) and os.path.exists(csv_path)):
            continue
        try:
            with open(cfg_path) as f:
                cfg = json.load(f)
            if not (isinstance(cfg, dict) and isinstance(cfg.get("settings"), dict)):
                raise ValueError("no settings")
        except (OSError, ValueError, RecursionError) as e:
            raise CompactError(f"{cfg_path} is unreadable ({type(e).__name__})") from None
        if cfg.get("status") not in ("finished", "diverged"):
            continue
        with open(csv_path, newline="") as f:
            yield cfg["settings"], list(csv.DictReader(f))


def main(argv=None):
    """Write the compact CSV; one line of summary on stdout."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir")
    p.add_argument("out")
    p.add_argument("--bin", type=int, default=100)
    a = p.parse_args(argv)
    if a.bin < 1 or not os.path.isdir(a.results_dir):
        print("compact.py: error: --bin must be >= 1 and RESULTS_DIR a directory", file=sys.stderr)
        return 2
    n_runs = n_rows = 0
    try:
        found = list(runs(a.results_dir))
    except CompactError as e:
        print(f"compact.py: error: {e}", file=sys.stderr)
        return 2
    keys = KEYS + tuple(k for k in OPTIONAL if any(k in s for s, _ in found))
    with open(a.out, "w", newline="") as f:
        w = None
        for s, rows in found:
            if w is None:           # the first run's columns, for every run (one header)
                cols = [c for c in VALUES if rows and c in rows[0]]
                steps = bool(rows) and "steps" in rows[0]
                w = csv.writer(f, lineterminator="\n")
                w.writerow([*keys, "episode", "episodes", *cols, "diverged"] + ["steps"] * steps)
            for b0 in range(0, len(rows), a.bin):
                chunk = rows[b0:b0 + a.bin]
                means = [sum(float(r.get(c) or "nan") for r in chunk) / len(chunk) for c in cols]
                w.writerow([s.get(k) for k in keys] + [b0, len(chunk)]
                           + [f"{m:.4g}" if math.isfinite(m) else "" for m in means]
                           + [max(int(r["diverged"]) for r in chunk)]
                           + [chunk[-1].get("steps", "")] * steps)
                n_rows += 1
            n_runs += 1
    print(f"{n_runs} runs, {n_rows} rows -> {a.out} ({os.path.getsize(a.out) / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the α0 × µ tables of docs/reproduction.md from the figures' summary CSVs.

    python docs/tables.py docs/figures/fig2_summary.csv
Each cell: final return (mean of the last 100 episodes, mean over runs) and, in parentheses, the
mean return over all episodes (how fast it learned); the last column is the spread over α0.
"""
import csv
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import metatrace as mt  # noqa: E402


def p2(x):
    """2^k for a power of two."""
    return f"2^{round(math.log2(float(x)))}"


def cell(r):
    """final (mean over all episodes), or the count of diverged runs."""
    if not r["final_return"]:
        return f"diverged {r['n_diverged']}/{r['n_runs']}"
    d = f", {r['n_diverged']}/{r['n_runs']} div." if int(r["n_diverged"]) else ""
    return f"{float(r['final_return']):.0f} ({float(r['mean_return']):.0f}{d})"


def table(path):
    """The markdown table of one summary CSV."""
    rows = list(csv.DictReader(open(path)))
    mus = sorted({r["mu"] for r in rows}, key=lambda x: -float(x))
    alphas = sorted({r["alpha0"] for r in rows}, key=lambda x: -float(x))
    untuned = mt.TUNER[rows[0]["tuner"]].baseline
    out = ["| µ \\ α0 | " + " | ".join(p2(a) for a in alphas) + " | spread |",
           "|---" * (len(alphas) + 2) + "|"]
    for mu in mus:
        rr = {r["alpha0"]: r for r in rows if r["mu"] == mu}
        spread = rr[alphas[0]]["spread_alpha0"]
        tail = f" | {float(spread):.1f} |" if spread else " | – |"
        out.append(f"| {'—' if untuned else p2(mu)} | " + " | ".join(cell(rr[a]) for a in alphas)
                   + tail)
    return "\n".join(out)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(table(p))

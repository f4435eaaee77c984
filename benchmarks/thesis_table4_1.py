"""Thesis table 4.I and figure 4.1: grid, random and biased random search compared.

    python benchmarks/thesis_table4_1.py [--budget-minutes 60] [--trials 100] [--jobs 2] [--resume]

The task of thesis 4.2: SGD on the MNIST autoencoder (4.1.1), each trial 100
updates (minibatch 200) from a fresh initialization, tuning two
hyperparameters: the learning rate and the initialization scale (init_scale =
alpha, Var W = alpha x Glorot's, thesis 2.4.2); the cost of a trial is its
final training loss on a fixed 2,000-image subset of the training set (the
empirical risk, thesis 4.1.1, on a subset: evaluating 60,000 images would
cost more than the 100 updates). Each
search has 100 trials (`--trials`); search r uses seed r for its own draws and
for every trial's initialization and minibatch order, so the three methods of
round r face the same cost landscape. Rounds of (grid, random, brs) run until
`--budget-minutes` of wall time is spent (a started round is finished).

For each method: mean and standard deviation over the searches of the best
cost found (thesis table 4.I: BRS 26.61 +- 0.13 < random 27.02 +- 0.28 < grid
27.23 +- 0.42), and the fraction of each search's trials within 0.25 (in
log10 units) of the best point of all searches of that round: where the
samples went (figure 4.1: "with biased random search the majority of
experiments is launched around the region with best performing values").

Writes thesis_table4_1.md, thesis_table4_1.png (round 0's three searches side
by side, as figure 4.1) and the trials of every search under
table4_1/<method>-<seed>.csv in --out.
"""
import argparse
import os
import platform
import time

import numpy as np

from tinynet.tune import search
from tinynet.tune.objective import INFO_COLUMNS, TrainObjective
from tinynet.tune.plot import scatter

SPACE = "lr=log:1e-3:100,init_scale=log:0.01:100"
METHODS = ("grid", "random", "brs")
THESIS = {"grid": (27.23, 0.42), "random": (27.02, 0.28), "brs": (26.61, 0.13)}
RADIUS = 0.25      # log10 units, in the space's coordinates


def near_fraction(trials, center, radius=RADIUS):
    U = np.array([trials.space.to_u(t.params) for t in trials])
    return float(np.mean(np.linalg.norm(U - center, axis=1) <= radius))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-minutes", type=float, default=60.0)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--eval-subset", type=int, default=2000)
    ap.add_argument("--max-rounds", type=int, default=100)
    ap.add_argument("--resume", action="store_true", help="reuse the searches already in --out/table4_1")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    raw = os.path.join(args.out, "table4_1")
    os.makedirs(raw, exist_ok=True)

    t0 = time.perf_counter()
    rounds = []
    for r in range(args.max_rounds):
        if (time.perf_counter() - t0) / 60 >= args.budget_minutes:
            break
        obj = TrainObjective(model="mnist-autoencoder", optimizer="sgd", steps=args.steps, batch_size=200,
                             seed=r, eval_subset=args.eval_subset)
        found = {}
        for m in METHODS:
            path = os.path.join(raw, f"{m}-{r}.csv")
            resume = args.resume and os.path.exists(path)
            ts = time.perf_counter()
            found[m] = search(obj, SPACE, method=m, trials=args.trials, seed=r, jobs=args.jobs, results=path,
                              resume=resume, info_columns=INFO_COLUMNS)
            b = found[m].best
            print(f"round {r} {m:>6}: best {b.cost:.4f} at lr={b.params['lr']:.3g} "
                  f"init_scale={b.params['init_scale']:.3g} ({time.perf_counter() - ts:.0f} s; "
                  f"{(time.perf_counter() - t0) / 60:.1f} min in all)", flush=True)
        rounds.append(found)
    minutes = (time.perf_counter() - t0) / 60
    if not rounds:
        raise SystemExit("no round finished")

    best = {m: np.array([f[m].best.cost for f in rounds]) for m in METHODS}
    near = {m: [] for m in METHODS}
    for f in rounds:
        top = min((f[m].best for m in METHODS), key=lambda t: t.cost)
        c = f["brs"].space.to_u(top.params)
        for m in METHODS:
            near[m].append(near_fraction(f[m], c))
    status = {m: sum(sum(t.status != "ok" for t in f[m]) for f in rounds) for m in METHODS}
    secs = np.array([t.seconds for f in rounds for m in METHODS for t in f[m]])

    lines = ["# Thesis table 4.I: grid vs random vs biased random search", "",
             f"Command: `python benchmarks/thesis_table4_1.py --budget-minutes {args.budget_minutes:g} "
             f"--trials {args.trials} --jobs {args.jobs} --eval-subset {args.eval_subset}` ({secs.sum() / 60:.0f} min of trials in all, "
             f"{minutes:.0f} min of wall time in this invocation{' (resumed)' if args.resume else ''}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.jobs} worker processes "
             f"with one BLAS thread each; median trial {np.median(secs):.2f} s).", "",
             f"SGD on the MNIST autoencoder, {args.steps} updates of minibatch 200 per trial from a fresh "
             f"initialization; space `{SPACE}`; cost = final training loss on a fixed "
             f"{args.eval_subset:,}-image subset; {args.trials} trials per search; {len(rounds)} searches per "
             f"method (round r: seed r for the draws, the initialization and the minibatch order).", "",
             "| search | searches | best cost: mean | std | min | max | thesis (mean +- std) | "
             f"trials within {RADIUS} of the round's best point | diverged / failed trials |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in METHODS:
        b = best[m]
        lines.append(f"| {m} | {len(b)} | {b.mean():.3f} | {b.std(ddof=1) if len(b) > 1 else float('nan'):.3f} | "
                     f"{b.min():.3f} | {b.max():.3f} | {THESIS[m][0]} +- {THESIS[m][1]} | "
                     f"{100 * np.mean(near[m]):.0f}% | {status[m]} |")
    lines += ["", "Best cost per search (rows: rounds):", "",
              "| round | " + " | ".join(METHODS) + " |", "|---:|" + "---:|" * len(METHODS)]
    for r, f in enumerate(rounds):
        lines.append(f"| {r} | " + " | ".join(f"{f[m].best.cost:.3f}" for m in METHODS) + " |")
    with open(os.path.join(args.out, "thesis_table4_1.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    scatter([rounds[0][m] for m in METHODS], os.path.join(args.out, "thesis_table4_1.png"),
            titles=[f"{m} search, {args.trials} trials (round 0)" for m in METHODS],
            cost_label=f"training loss after {args.steps} SGD updates")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Thesis figures 6.1-6.3 and the per-step cost of the chapter-6 methods.

  python benchmarks/thesis_fig6.py [--budget SECONDS] [--sweep-seconds S] [--tune-trials N] [--cost-repeats R]
                                   [--data-dir DIR] [--skip-cifar] [--skip-figures]

1. Cost: one step of each method on the MNIST autoencoder (batch 200, float32,
   CPU) as a multiple of an SGD step, all measured in one run, round-robin
   (blocks of 10 steps of each method in turn, so that the other processes of
   the machine load every method alike), median over the blocks. KFAC with
   factor statistics every 10 and every step, inverses every 100 updates, with
   and without its trust region (kl_clip).
2. Figures (thesis 6.5): minibatch 200, amortization T = 100 (6.5.2). Each
   method's hyperparameters are picked by tinynet.tune over its space in
   SPACES (`--tune-method`, default biased random search, thesis algorithm 1;
   `--tune-trials` trials, each training for `--sweep-seconds` of training
   time: the stated budget); the lowest training loss (or error, on CIFAR)
   wins and is then run for `--budget` seconds. The spaces span the ranges
   that benchmarks/chapter6_sweep.py (per-update sweep,
   results/chapter6_sweep.md) found good.
   6.1: SGD, mean-only BN + SGD, centered, ACP (fixed alpha) on the
   autoencoder; 6.2: ACP fixed / heuristic alpha, NNN, KFAC, BN + SGD, SGD on
   the autoencoder; 6.3: the CIFAR-10 MLP (train and test error), KFAC-GN and
   KFAC-Fisher too. Evaluation on fixed 2000-example train / test subsets, in
   eval mode, excluded from the clock. The thesis ran 3 x 10^5 updates on a
   GPU; the budget here is a minute or so per run on a 2-core CPU, so the curves
   show the first stretch of training.
3. The quality check of issue 6: at equal training time (the end of the
   budget), the training loss of KFAC and of ACP (fixed and heuristic alpha)
   against SGD's on the autoencoder, read from the runs of figure 6.2.

Writes benchmarks/results/thesis_fig6.md and thesis_fig6_{1,2,3}.png
(with --skip-figures: the cost table alone, to thesis_fig6_cost.md).
"""
import argparse
import os
import sys
import time

import numpy as np

from tinynet.data import load_dataset
from tinynet.models import build_model
from tinynet.optim import OPTIMIZERS
from tinynet.tune import METHODS as TUNE_METHODS
from tinynet.tune import search

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# name -> (optimizer, fixed options, batchnorm)
METHODS = {
    "SGD": ("sgd", {}, None),
    "mean-only BN + SGD": ("sgd", {}, "mean-only"),
    "BN + SGD": ("sgd", {}, "full"),
    "centered": ("centered", {}, None),
    "ACP fixed alpha": ("acp", dict(T=100, alpha=1.0), None),
    # step lr, not algorithm 4's lr/alpha: the reading results/thesis_fig6.md was measured with (before
    # ACP's step_scale existed); benchmarks/long_run.py runs both readings (issue 20 part 3)
    "ACP heuristic alpha": ("acp", dict(T=100, alpha="heuristic", step_scale="none"), None),
    "NNN": ("nnn", dict(T=100), None),
    "KFAC": ("kfac", dict(T=100, stats_every=10, curvature="gn"), None),
    "KFAC-GN": ("kfac", dict(T=100, stats_every=10, curvature="gn"), None),
    "KFAC-Fisher": ("kfac", dict(T=100, stats_every=10, curvature="fisher"), None),
}
FIG = {
    "6.1": ("mnist-autoencoder", ["SGD", "mean-only BN + SGD", "centered", "ACP fixed alpha"]),
    "6.2": ("mnist-autoencoder", ["ACP fixed alpha", "ACP heuristic alpha", "NNN", "KFAC", "BN + SGD", "SGD"]),
    "6.3": ("cifar-mlp", ["ACP fixed alpha", "ACP heuristic alpha", "NNN", "KFAC-GN", "KFAC-Fisher",
                          "BN + SGD", "SGD"]),
}


# each method's search space, by model then method (options on top of METHODS'):
# autoencoder ranges from benchmarks/chapter6_sweep.py (SGD: 0.3 - 0.5 best per
# update, 1 diverges; ACP fixed alpha: lr / eps ~ 3 best, ~10 diverges; KFAC:
# eps 1e-3 - 1e-2 with kl_clip 0.01 - 0.1, lr 1); CIFAR-10 ranges a decade or
# so around the previous runs' picks.
_KFAC = "eps=log:1e-3:1e-2,kl_clip=log:1e-2:1e-1"
SPACES = {
    "mnist-autoencoder": {
        "SGD": "lr=log:0.1:1", "mean-only BN + SGD": "lr=log:0.01:0.3", "BN + SGD": "lr=log:0.01:0.3",
        "centered": "lr=log:0.1:1",
        "ACP fixed alpha": "lr=log:0.03:1,eps=log:0.01:0.3",
        "ACP heuristic alpha": "lr=log:0.1:1,eps=log:3e-3:3e-2",
        "NNN": "lr=log:0.003:0.1",
        "KFAC": _KFAC,
    },
    "cifar-mlp": {
        "SGD": "lr=log:0.003:0.1", "BN + SGD": "lr=log:0.01:0.3",
        "ACP fixed alpha": "lr=log:0.003:0.1,eps=log:0.003:0.03",
        "ACP heuristic alpha": "lr=log:0.01:0.3,eps=log:1e-3:1e-2",
        "NNN": "lr=log:1e-3:0.03",
        "KFAC-GN": _KFAC, "KFAC-Fisher": _KFAC,
    },
}
# fixed lr where the space has none (KFAC: lr 1 with the trust region setting the step), else eps
FIXED = {"KFAC": dict(lr=1.0), "KFAC-GN": dict(lr=1.0), "KFAC-Fisher": dict(lr=1.0), "NNN": dict(eps=1e-2)}
BATCH = 200


def make(model, method, cand, seed=0):
    """(net, optimizer) of a method with the candidate's options (lr among them)."""
    opt_name, opts, bn = METHODS[method]
    net = build_model(model, seed=seed, **({"batchnorm": bn} if bn else {}))
    options = {**opts, **cand}
    return net, OPTIMIZERS[opt_name](net, options.pop("lr"), **options)


def label(cand):
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in cand.items())


def evaluate(net, X, Y, autoencode):
    net.train(False)
    F, _ = net.forward_ctx(X)
    value, _ = net.loss_stage.forward(F, net.as_target(X if autoencode else Y))
    err = None if autoencode else float(np.mean(np.argmax(net.bk.to_host(F), 1) != Y))
    net.train(True)
    return float(value), err


def run(model, method, cand, data, budget, eval_every, seed=0):
    """Train for `budget` seconds of training time; history rows (updates,
    seconds, train loss, test loss, train err, test err). Stops early when the
    training loss is no longer finite."""
    (Xtr, Ytr), (Xte, Yte), sub = data
    auto = model == "mnist-autoencoder"
    net, opt = make(model, method, cand, seed)
    rng = np.random.default_rng(seed)
    hist = []
    t, k = 0.0, 0
    while t < budget:
        if k % eval_every == 0:
            tr, te = evaluate(net, Xtr[sub], Ytr[sub], auto), evaluate(net, Xte[sub], Yte[sub], auto)
            hist.append((k, t, tr[0], te[0], tr[1], te[1]))
            if not np.isfinite(tr[0]):
                break
        idx = rng.integers(0, len(Xtr), BATCH)
        X = Xtr[idx]
        t0 = time.perf_counter()
        opt.step(X, X if auto else Ytr[idx])
        t += time.perf_counter() - t0
        k += 1
    tr, te = evaluate(net, Xtr[sub], Ytr[sub], auto), evaluate(net, Xte[sub], Yte[sub], auto)
    hist.append((k, t, tr[0], te[0], tr[1], te[1]))
    return np.array(hist, dtype=float)


def score(h, model):
    """What the sweep minimizes: the final training loss (autoencoder) or
    training error (CIFAR); a run that went non-finite scores inf."""
    v = h[-1, 2] if model == "mnist-autoencoder" else h[-1, 4]
    return v if np.isfinite(h[-1, 2]) else np.inf


def sweep(model, method, data, seconds, eval_every, trials, how="brs"):
    """[(candidate, score)] of the trials of a tinynet.tune search over the
    method's space, each after `seconds` of training."""
    fixed = FIXED.get(method, {})
    res = search(lambda p: score(run(model, method, {**fixed, **p}, data, seconds, eval_every), model),
                 SPACES[model][method], method=how, trials=trials, seed=0)
    return [({**fixed, **t.params}, t.cost) for t in res]


def cost_table(repeats, X):
    """Median step time of each method (round-robin blocks of 10 steps)."""
    rows = [("SGD", "sgd", {}, None), ("centered", "centered", {}, None),
            ("ACP (T=100)", "acp", dict(T=100), None),
            ("ACP heuristic (T=100)", "acp", dict(T=100, alpha="heuristic"), None),
            ("KFAC-GN (stats 10, inv 100)", "kfac", dict(T=100, stats_every=10), None),
            ("KFAC-GN (stats 10, inv 100, no kl_clip)", "kfac", dict(T=100, stats_every=10, kl_clip=None), None),
            ("KFAC-GN (stats 1, inv 100)", "kfac", dict(T=100, stats_every=1), None),
            ("KFAC-Fisher (stats 10, inv 100)", "kfac", dict(T=100, stats_every=10, curvature="fisher"), None),
            ("NNN (T=100)", "nnn", dict(T=100), None),
            ("mean-only BN + SGD", "sgd", {}, "mean-only"), ("BN + SGD", "sgd", {}, "full")]
    opts = []
    for name, o, kw, bn in rows:
        net = build_model("mnist-autoencoder", **({"batchnorm": bn} if bn else {}))
        opt = OPTIMIZERS[o](net, 1e-4, **kw)
        opt.step(X, X)          # compile, first statistics and inverses
        opts.append(opt)
    times = {name: [] for name, *_ in rows}
    for r in range(repeats):
        for (name, *_), opt in zip(rows, opts):
            t0 = time.perf_counter()
            for _ in range(10):
                opt.step(X, X)
            times[name].append((time.perf_counter() - t0) / 10)
    # the inversions every 100 updates, timed apart and amortized over T = 100
    extra = {}
    for (name, o, kw, bn), opt in zip(rows, opts):
        if o in ("acp", "kfac", "nnn"):
            opt.k = 0
            t0 = time.perf_counter()
            opt.step(X, X)
            t_amort = time.perf_counter() - t0
            extra[name] = max(t_amort - np.median(times[name]), 0.0) / 100
    med = {n: float(np.median(v)) + extra.get(n, 0.0) for n, v in times.items()}
    return med, extra


def plot(fig, model, hists, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cls = model == "cifar-mlp"
    cols = 4 if cls else 2
    f, ax = plt.subplots(1, cols, figsize=(5 * cols, 4))
    for name, (cand, h) in hists.items():
        lab = f"{name} ({label(cand)})"
        ax[0].plot(h[:, 1], h[:, 2], label=lab)
        ax[1].plot(h[:, 0], h[:, 2], label=lab)
        if cls:
            ax[2].plot(h[:, 1], 100 * h[:, 4], label=lab)
            ax[3].plot(h[:, 1], 100 * h[:, 5], label=lab)
    ax[0].set_xlabel("training seconds")
    ax[1].set_xlabel("updates")
    for a in ax[:2]:
        a.set_ylabel("training loss (2000-example subset)")
        a.set_yscale("log")
    if cls:
        ax[2].set_ylabel("train error %")
        ax[3].set_ylabel("test error %")
        for a in ax[2:]:
            a.set_xlabel("training seconds")
    ax[0].legend(fontsize=7)
    f.suptitle(f"thesis figure {fig}: {model}, minibatch {BATCH}, T = 100")
    f.tight_layout()
    f.savefig(path, dpi=90)
    plt.close(f)


def quality_check(hists):
    """Issue 6: KFAC and ACP below SGD's training loss at equal training time
    on the autoencoder. Each run's loss is read at the time the shortest of
    them ended (linear interpolation between evaluations)."""
    t_eq = min(h[-1, 1] for _, h in hists.values())
    at = {m: float(np.interp(t_eq, h[:, 1], h[:, 2])) for m, (_, h) in hists.items()}
    rows = [f"| {m} | {at[m]:.2f} | {'yes' if at[m] < at['SGD'] else 'no'} |"
            for m in ("KFAC", "ACP fixed alpha", "ACP heuristic alpha") if m in at]
    return t_eq, at, rows


# the shared data folder beside the repository (DESIGN.md: ../shared/data/), found from this file
DEFAULT_CIFAR = os.path.join("..", "shared", "data", "cifar10")
REPO = os.path.dirname(HERE)


def cifar_dir(given):
    """The CIFAR-10 folder: --data-dir, else $TINYNET_DATA, else ../shared/data/cifar10
    beside the repository; exits with one line when it does not exist."""
    path = given or os.environ.get("TINYNET_DATA") or os.path.normpath(os.path.join(REPO, DEFAULT_CIFAR))
    if not os.path.isdir(path):
        how = "--data-dir" if given else "$TINYNET_DATA" if os.environ.get("TINYNET_DATA") else "the default"
        sys.exit(f"thesis_fig6.py: CIFAR-10 folder {path} ({how}) does not exist: pass --data-dir DIR, "
                 f"set TINYNET_DATA=DIR, or --skip-cifar")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per run (default 60)")
    ap.add_argument("--sweep-seconds", type=float, default=None,
                    help="training seconds per search trial (default budget / 3)")
    ap.add_argument("--tune-trials", type=int, default=4, help="trials of each method's search")
    ap.add_argument("--tune-method", choices=TUNE_METHODS, default="brs")
    ap.add_argument("--cost-repeats", type=int, default=7)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--data-dir", default=None,
                    help=f"CIFAR-10 folder (default $TINYNET_DATA, else {DEFAULT_CIFAR}, relative to the repository)")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--skip-figures", action="store_true",
                    help="the cost table only (written to results/thesis_fig6_cost.md)")
    args = ap.parse_args(argv)
    if not (args.skip_figures or args.skip_cifar):
        args.data_dir = cifar_dir(args.data_dir)
    sweep_s = args.budget / 3 if args.sweep_seconds is None else args.sweep_seconds
    os.makedirs(RESULTS, exist_ok=True)
    t_start = time.time()
    lines = ["# Thesis figures 6.1-6.3 and per-step costs (chapter 6)", "",
             f"Command: `python benchmarks/thesis_fig6.py --budget {args.budget:g} --sweep-seconds {sweep_s:g} "
             f"--tune-trials {args.tune_trials} --tune-method {args.tune_method} "
             f"--cost-repeats {args.cost_repeats}" + (" --skip-cifar" if args.skip_cifar else "")
             + (" --skip-figures" if args.skip_figures else "")
             + f"`; CPU backend, float32, {os.cpu_count()} cores, "
             f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}.", ""]

    mn = load_dataset("mnist-autoencode", "train"), load_dataset("mnist-autoencode", "test")
    Xa = mn[0][0][:BATCH]
    med, extra = cost_table(args.cost_repeats, np.ascontiguousarray(Xa))
    sgd = med["SGD"]
    lines += ["## Per-step cost on the MNIST autoencoder, batch 200 (multiple of an SGD step)", "",
              "| method | ms / step | x SGD |", "|---|---:|---:|"]
    lines += [f"| {n} | {1e3 * v:.1f} | {v / sgd:.2f} |" for n, v in med.items()]
    lines += ["", "Round-robin blocks of 10 steps, median over blocks; the amortized inversion "
              "(timed apart, every 100 updates) is added / 100. Targets (issue 6): ACP <= 1.6x, "
              "KFAC (stats every 10) <= 2.2x. KFAC's trust region (kl_clip, on by default) costs "
              "two n x n GEMMs per layer; the no-kl_clip row is the thesis's plain step.", ""]
    print("\n".join(lines[-18:]), flush=True)

    rng = np.random.default_rng(1)
    figs = [] if args.skip_figures else [("6.1", "6.2")] + ([] if args.skip_cifar else [("6.3",)])
    cache = {}
    for group in figs:
        model = FIG[group[0]][0]
        if model == "cifar-mlp":
            data = load_dataset("cifar10", "train", args.data_dir), load_dataset("cifar10", "test", args.data_dir)
        else:
            data = mn
        sub = rng.choice(min(len(data[0][0]), len(data[1][0])), 2000, replace=False)
        d3 = (data[0], data[1], sub)
        for fig in group:
            hists, sweeps = {}, {}
            for method in FIG[fig][1]:
                key = (model, method)
                if key not in cache:
                    scores = sweep(model, method, d3, sweep_s, args.eval_every, args.tune_trials, args.tune_method)
                    best = min(scores, key=lambda cs: cs[1])[0]
                    cache[key] = (best, run(model, method, best, d3, args.budget, args.eval_every), scores)
                    h = cache[key][1]
                    print(f"{fig} {method}: {label(best)}, {int(h[-1, 0])} updates, train loss {h[-1, 2]:.4g}",
                          flush=True)
                hists[method] = cache[key][:2]
                sweeps[method] = cache[key][2]
            png = f"thesis_fig6_{fig.split('.')[1]}.png"
            plot(fig, model, hists, os.path.join(RESULTS, png))
            crit = "training loss" if model == "mnist-autoencoder" else "training error"
            lines += [f"## Figure {fig}: {model}", "", f"![figure {fig}]({png})", "",
                      "| method | picked by the search | updates | train loss | test loss | train err | test err |",
                      "|---|---|---:|---:|---:|---:|---:|"]
            for m, (cand, h) in hists.items():
                e = (lambda v: "" if np.isnan(v) else f"{100 * v:.1f}%")
                lines.append(f"| {m} | {label(cand)} | {int(h[-1, 0])} | {h[-1, 2]:.4g} | {h[-1, 3]:.4g} | "
                             f"{e(h[-1, 4])} | {e(h[-1, 5])} |")
            lines += ["", f"Search ({args.tune_method}, {args.tune_trials} trials per method over SPACES; "
                      f"{crit} after {sweep_s:g} s per trial; inf = diverged):", ""]
            lines += [f"- {m}: " + "; ".join(f"{label(c)}: {v:.4g}" for c, v in sc) for m, sc in sweeps.items()]
            lines.append("")
            if fig == "6.2":
                t_eq, at, rows = quality_check(hists)
                lines += ["### Quality check (issue 6): below SGD at equal training time", "",
                          f"Training loss at {t_eq:.1f} s of training (SGD: {at['SGD']:.2f}):", "",
                          "| method | train loss | below SGD |", "|---|---:|---|"] + rows + [""]
    lines += [f"Training budget {args.budget:g} s per run after a search of {args.tune_trials} x "
              f"{sweep_s:g} s per method; "
              f"total wall time {time.time() - t_start:.0f} s.", ""]
    # the cost table alone goes to its own file, so that it never replaces the figures' results
    out = "thesis_fig6_cost.md" if args.skip_figures else "thesis_fig6.md"
    with open(os.path.join(RESULTS, out), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

"""Thesis figure 5.1 on real MNIST, and the per-step cost of UBP, in one run.

MNIST autoencoder (784-1000-500-250-30-250-500-1000-784, logistic units,
squared error; thesis 4.1.1), float32, minibatches of 200 from the 60,000
training images (pixels / 255), the same minibatch sequence for every run.

1. Cost: median seconds per step of SGD, UBP matrix-free (GN and exact
   curvature) at batch 200, and of UBP explicit (GN) at a smaller batch
   (`--explicit-batch`: its Jacobians are n x 784 x width arrays, 2.7 GB at
   batch 200 over all layers) against SGD at that same batch; each as a
   multiple of the SGD step measured in the same run, rounds interleaved.
   Target (issue 4): matrix-free UBP <= 4x an SGD step. Thesis anchor: 10x.
2. Figure 5.1: each method's lr picked by tinynet.tune (`--tune-method`,
   default biased random search, `--tune-trials` trials of `--updates` updates
   each over `--sgd-space` / `--ubp-space`: the stated budget); every trial
   is kept, and the best of each (lowest final loss on a fixed subset of
   training images) is plotted: training loss (minibatch, and the subset at
   geometric checkpoints) vs updates and vs seconds, log scales. The spaces
   come from longer probes: SGD leaves the ~53 plateau (the mean image) only
   at lr ~0.3, after ~800 updates; UBP at lr >= 0.03 degrades (its
   first-order correction fails, thesis 5.5), below 0.01 it is slower.

    python benchmarks/ubp.py [--updates 1200] [--tune-trials 4] [--out benchmarks/results]

Writes ubp.md (tables) and ubp.png (the figure) under --out.
"""
import argparse
import gzip
import os
import time

import numpy as np

from tinynet import tune
from tinynet.models import build_model
from tinynet.optim import SGD, UBP

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
N = 200


def load_images():
    """MNIST training images (60000, 784) in [0, 1], float32."""
    try:
        from tinynet.data import load_mnist          # the package reader, where it exists
        X = load_mnist("train")[0]
        return np.asarray(X, np.float32).reshape(len(X), -1)
    except ImportError:
        path = os.path.join(os.environ.get("MNIST_DIR", MNIST), "train-images-idx3-ubyte.gz")
        with gzip.open(path) as f:
            raw = f.read()
        if int.from_bytes(raw[:4], "big") != 2051:
            raise ValueError(f"{path}: not an IDX image file")
        return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255


def make(method, lr, seed=0, **kw):
    net = build_model("mnist-autoencoder", seed=seed)
    return net, (SGD(net, lr) if method == "sgd" else UBP(net, lr, **kw))


# ---------------------------------------------------------------- 1. cost per step
def cost(X, repeats, explicit_batch):
    """Two groups, each timed in interleaved rounds (noise hits a group's
    members alike): batch 200 (SGD, UBP matrix-free GN and exact), and the
    explicit mode with SGD at its smaller batch (kept apart: its large numpy
    arrays would disturb the timing of the others)."""
    groups = [
        {"SGD": ("sgd", {}, N),
         "UBP matrix-free, GN": ("ubp", dict(mode="matrix_free"), N),
         "UBP matrix-free, exact": ("ubp", dict(mode="matrix_free", curvature="exact"), N)},
        {f"SGD (batch {explicit_batch})": ("sgd", {}, explicit_batch),
         f"UBP explicit, GN (batch {explicit_batch})": ("ubp", dict(mode="explicit", max_jacobian_bytes=2 ** 31),
                                                       explicit_batch)},
    ]
    rows = []
    for cases in groups:
        steps, times = {}, {name: [] for name in cases}
        for name, (m, kw, n) in cases.items():
            _, opt = make(m, 1e-3, **kw)
            Xb = X[:n]
            opt.step(Xb, Xb)                         # warm-up (compilation)
            steps[name] = (opt, Xb)
        for _ in range(repeats):
            for name, (opt, Xb) in steps.items():
                t = time.perf_counter()
                opt.step(Xb, Xb)
                times[name].append(time.perf_counter() - t)
        med = {name: float(np.median(v)) for name, v in times.items()}
        ref = med[next(iter(cases))]                 # the group's SGD step
        rows += [(name, cases[name][2], med[name] * 1e3, med[name] / ref) for name in cases]
        del steps
    return rows


# ---------------------------------------------------------------- 2. figure 5.1
def checkpoints(updates):
    """Geometric checkpoints 1, 2, 5, 10, 20, 50, ... and the last update."""
    ks = [m * 10 ** e for e in range(7) for m in (1, 2, 5) if m * 10 ** e < updates]
    return set(ks + [updates])


def train(method, lr, X, updates, Xeval):
    """Minibatch losses (before each update), optimizer seconds, and
    (update, seconds, loss on Xeval) at the checkpoints; stops on a non-finite loss."""
    net, opt = make(method, lr)
    perm = np.random.default_rng(1).permutation(len(X))
    marks = checkpoints(updates)
    losses, secs, evals, rho = [], [], [], []
    elapsed = 0.0
    for k in range(updates):
        a = (k * N) % len(X)
        idx = perm[a:a + N]
        t = time.perf_counter()
        loss = opt.step(X[idx], X[idx])
        elapsed += time.perf_counter() - t
        losses.append(loss)
        secs.append(elapsed)
        rho.append(opt.metrics.get("correction_ratio", 0.0))
        if not np.isfinite(loss):
            break
        if k + 1 in marks:
            evals.append((k + 1, elapsed, float(np.mean([net.loss(Xeval[j:j + 1000], Xeval[j:j + 1000])
                                                           for j in range(0, len(Xeval), 1000)]))))
    return np.array(losses), np.array(secs), evals, np.array(rho)


def smooth(v):
    """Trailing mean over min(20, k/5) minibatches: little smoothing early, where
    the loss falls fast."""
    c = np.cumsum(np.insert(np.asarray(v, float), 0, 0.0))
    out = np.empty(len(v))
    for i in range(len(v)):
        w = max(1, min(20, (i + 1) // 5))
        out[i] = (c[i + 1] - c[i + 1 - w]) / w
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=1200)
    ap.add_argument("--sgd-space", default="lr=log:0.03:1")
    ap.add_argument("--ubp-space", default="lr=log:0.003:0.1")
    ap.add_argument("--tune-method", choices=tune.METHODS, default="brs")
    ap.add_argument("--tune-trials", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--explicit-batch", type=int, default=20)
    ap.add_argument("--eval-size", type=int, default=5000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    X = load_images()
    Xeval = X[:args.eval_size]
    t_start = time.time()

    rows = cost(X, args.repeats, args.explicit_batch)
    for r in rows:
        print(f"{r[0]:45s} batch {r[1]:4d} {r[2]:9.1f} ms  {r[3]:6.2f}x", flush=True)

    runs = {}

    def final(key):
        losses, _, evals, _ = runs[key]
        return evals[-1][2] if len(losses) == args.updates and evals and np.isfinite(evals[-1][2]) else np.inf

    best = {}
    for method, space in (("sgd", args.sgd_space), ("ubp", args.ubp_space)):
        def objective(p, method=method):
            lr = p["lr"]
            runs[method, lr] = train(method, lr, X, args.updates, Xeval)
            losses, secs, evals, rho = runs[method, lr]
            print(f"{method} lr {lr:.4g}: subset loss {evals[-1][2] if evals else float('nan'):.3f} after "
                  f"{len(losses)} updates, {secs[-1]:.1f} s; max correction ratio {np.max(rho):.3g}", flush=True)
            return final((method, lr))
        res = tune.search(objective, space, method=args.tune_method, trials=args.tune_trials, seed=0)
        best[method] = (res.best or res[0]).params["lr"]
    _figure({m: runs[m, best[m]] for m in best}, best, os.path.join(args.out, "ubp.png"))
    _table(rows, runs, best, args, time.time() - t_start, os.path.join(args.out, "ubp.md"))


def _figure(runs, best, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"sgd": "tab:blue", "ubp": "tab:orange"}
    for m, (losses, secs, evals, _) in runs.items():
        label = f"{'SGD' if m == 'sgd' else 'UBP'} (lr {best[m]:.3g})"
        k = np.arange(1, len(losses) + 1)
        for ax, x in ((axes[0], k), (axes[1], secs)):
            ax.plot(x, losses, color=colors[m], alpha=0.2, lw=0.6)
            ax.plot(x, smooth(losses), color=colors[m], label=label + ", minibatch (trailing mean)")
        e = np.array(evals)
        axes[0].plot(e[:, 0], e[:, 2], "o--", color=colors[m], ms=4, label=label + ", fixed training subset")
        axes[1].plot(e[:, 1], e[:, 2], "o--", color=colors[m], ms=4)
    for ax, xl in ((axes[0], "updates"), (axes[1], "seconds (optimizer steps only)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("training loss (squared error per image)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[0].set_title("Thesis fig. 5.1: SGD vs UBP, MNIST autoencoder")
    axes[1].set_title("the same vs time (2 CPU cores, float32)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _table(rows, runs, best, args, wall, path):
    blas = os.environ.get("OPENBLAS_CORETYPE", "default (auto-detected)")
    L = ["# UBP (thesis chapter 5): cost per step and figure 5.1 on MNIST", "",
         f"Command: `python benchmarks/ubp.py --updates {args.updates} --sgd-space '{args.sgd_space}' "
         f"--ubp-space '{args.ubp_space}' --tune-method {args.tune_method} --tune-trials {args.tune_trials} "
         f"--repeats {args.repeats} --explicit-batch {args.explicit_batch}`; "
         f"whole run {wall:.0f} s. MNIST autoencoder, float32, batch 200, 2 CPU cores shared with other "
         f"jobs, OPENBLAS_CORETYPE: {blas}.", "",
         "## Cost of one step (median over interleaved repeats, same run)", "",
         "| optimizer | batch | ms / step | x SGD step (same batch) |", "|---|---:|---:|---:|"]
    L += [f"| {name} | {n} | {ms:.1f} | {x:.2f} |" for name, n, ms, x in rows]
    L += ["", "Target (issue 4): matrix-free UBP <= 4x an SGD step. Thesis 5.4: UBP (explicit Jacobians) ~10x.", "",
          f"## Training loss ({args.updates} updates per run; loss on {args.eval_size} training images "
          "after k updates)", "",
          "| method | lr | " + " | ".join(f"k={k}" for k in sorted(checkpoints(args.updates))) +
          " | optimizer s | max correction ratio |",
          "|---|---:|" + "---:|" * (len(checkpoints(args.updates)) + 2)]
    for (m, lr), (losses, secs, evals, rho) in runs.items():
        vals = {k: v for k, _, v in evals}
        cells = " | ".join(f"{vals[k]:.2f}" if k in vals else "-" for k in sorted(checkpoints(args.updates)))
        star = " (best)" if best[m] == lr else ""
        L.append(f"| {m.upper()}{star} | {lr:.4g} | {cells} | {secs[-1]:.1f} | {np.max(rho):.3g} |")
    L += ["", f"Learning rates picked by tinynet.tune ({args.tune_method}, {args.tune_trials} trials of "
          f"{args.updates} updates per method, seed 0; cost: the final loss on the subset, inf if the run "
          f"did not finish): SGD over `{args.sgd_space}`, UBP over `{args.ubp_space}`.", "",
          f"Figure 5.1 (best lr of each by the final loss: SGD {best['sgd']:.4g}, UBP {best['ubp']:.4g}):", "",
          "![ubp](ubp.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()

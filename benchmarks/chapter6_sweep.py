"""Hyperparameter sweep of the chapter-6 preconditioners on the MNIST
autoencoder, per update: the grid behind the defaults of KFAC and ACP and the
candidates that benchmarks/thesis_fig6.py sweeps.

  python benchmarks/chapter6_sweep.py [--updates 1500] [--workers 2] [--grid default|quick]

Every configuration trains the autoencoder (batch 200, float32, CPU, seed 0,
the same minibatch sequence) for `--updates` updates and is evaluated every
100 updates on a fixed 2000-image training subset. Configurations run in
`--workers` processes with one BLAS thread each, so the per-update curves do
not depend on the load; the seconds column is that single-thread time and
comparable only within one run of this script. A run whose subset loss is
above 150 after update 0 (initial loss 193, the mean-image plateau ~53; above
150 the sigmoids have saturated) is stopped and marked diverged.

Writes benchmarks/results/chapter6_sweep.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# (label, optimizer, options); lr is an option like the others
GRIDS = {
    "default": [
        ("SGD lr 0.1", "sgd", dict(lr=0.1)),
        ("SGD lr 0.3", "sgd", dict(lr=0.3)),
        ("SGD lr 0.5", "sgd", dict(lr=0.5)),
        ("SGD lr 1", "sgd", dict(lr=1.0)),
        ("SGD lr 0.1 momentum 0.9", "sgd", dict(lr=0.1, momentum=0.9)),
        ("KFAC eps 1 no clip lr 0.3", "kfac", dict(lr=0.3, eps=1.0, kl_clip=None)),
        ("KFAC eps 0.1 no clip lr 0.3", "kfac", dict(lr=0.3, eps=0.1, kl_clip=None)),
        ("KFAC eps 1e-3 clip 1e-3", "kfac", dict(lr=1.0, eps=1e-3, kl_clip=1e-3)),
        ("KFAC eps 1e-3 clip 0.01", "kfac", dict(lr=1.0, eps=1e-3, kl_clip=0.01)),
        ("KFAC eps 0.01 clip 0.1", "kfac", dict(lr=1.0, eps=1e-2, kl_clip=0.1)),
        ("KFAC eps 0.1 clip 0.01", "kfac", dict(lr=1.0, eps=0.1, kl_clip=0.01)),
        ("ACP alpha 1 eps 0.03 lr 0.1", "acp", dict(lr=0.1, eps=0.03)),
        ("ACP alpha 1 eps 0.03 lr 0.3", "acp", dict(lr=0.3, eps=0.03)),
        ("ACP alpha 1 eps 0.1 lr 0.3", "acp", dict(lr=0.3, eps=0.1)),
        ("ACP alpha 1 eps 0.1 lr 1", "acp", dict(lr=1.0, eps=0.1)),
        ("ACP alpha 1 eps 0.3 lr 1", "acp", dict(lr=1.0, eps=0.3)),
        ("ACP alpha 1 eps 1 lr 0.3", "acp", dict(lr=0.3, eps=1.0)),
        # step_scale "none": the reading results/chapter6_sweep.md was measured with (issue 20 part 3)
        ("ACP heuristic eps 0.01 lr 0.3", "acp", dict(lr=0.3, eps=0.01, alpha="heuristic", step_scale="none")),
        ("ACP heuristic eps 1e-3 lr 0.1", "acp", dict(lr=0.1, eps=1e-3, alpha="heuristic", step_scale="none")),
    ],
    "quick": [
        ("SGD lr 0.3", "sgd", dict(lr=0.3)),
        ("KFAC eps 1e-3 clip 0.01", "kfac", dict(lr=1.0, eps=1e-3, kl_clip=0.01)),
        ("ACP alpha 1 eps 0.03 lr 0.1", "acp", dict(lr=0.1, eps=0.03)),
    ],
}
EVAL_EVERY, BATCH, SUBSET = 100, 200, 2000


def worker(opt_name, options, updates):
    """One configuration; prints one JSON line [(update, seconds, loss), ...]."""
    import numpy as np
    from tinynet.data import load_dataset
    from tinynet.models import build_model
    from tinynet.optim import OPTIMIZERS
    X, _ = load_dataset("mnist-autoencode", "train")
    sub = X[np.random.default_rng(1).choice(len(X), SUBSET, replace=False)]
    net = build_model("mnist-autoencoder", seed=0)
    options = dict(options)
    opt = OPTIMIZERS[opt_name](net, options.pop("lr"), **options)
    rng = np.random.default_rng(0)
    out, t = [], 0.0
    for k in range(updates + 1):
        if k % EVAL_EVERY == 0 or k == updates:
            F, _ = net.forward_ctx(sub)
            loss = float(net.loss_stage.forward(F, net.as_target(sub))[0])
            out.append((k, round(t, 2), loss))
            if not (0 <= loss <= 150 or k == 0):
                out.append("diverged")
                break
        if k == updates:
            break
        batch = X[rng.integers(0, len(X), BATCH)]
        t0 = time.perf_counter()
        opt.step(batch, batch)
        t += time.perf_counter() - t0
    print(json.dumps(out), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--grid", choices=list(GRIDS), default="default")
    ap.add_argument("--worker", nargs=2, metavar=("OPTIMIZER", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], json.loads(args.worker[1]), args.updates)

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    grid = GRIDS[args.grid]
    t_start = time.time()
    pending, running, results = list(enumerate(grid)), {}, {}
    while pending or running:
        while pending and len(running) < args.workers:
            j, (label, opt_name, options) = pending.pop(0)
            cmd = [sys.executable, os.path.abspath(__file__), "--updates", str(args.updates),
                   "--worker", opt_name, json.dumps(options)]
            running[j] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        for j, p in list(running.items()):
            if p.poll() is not None:
                text = p.stdout.read().strip().splitlines()
                results[j] = json.loads(text[-1]) if p.returncode == 0 and text else ["failed"]
                del running[j]
                print(f"{grid[j][0]}: {results[j][-1]}", flush=True)
        time.sleep(0.5)

    marks = [m for m in (300, 600, 1000, args.updates) if m <= args.updates]
    marks = sorted(set(marks))
    lines = ["# Chapter-6 sweep on the MNIST autoencoder, per update", "",
             f"Command: `python benchmarks/chapter6_sweep.py --updates {args.updates} --grid {args.grid}`; "
             f"batch {BATCH}, float32, CPU, one BLAS thread per configuration, {args.workers} at a time; "
             f"loss on a fixed {SUBSET}-image training subset (initial 192.98). "
             f"Total {time.time() - t_start:.0f} s.", "",
             "| configuration | " + " | ".join(f"loss @ {m}" for m in marks) + " | ms / update (1 thread) |",
             "|---|" + "---:|" * (len(marks) + 1)]
    for j, (label, _, _) in enumerate(grid):
        rows = results.get(j, ["failed"])
        pts = {r[0]: r for r in rows if isinstance(r, list)}
        cells = [f"{pts[m][2]:.2f}" if m in pts else ("diverged" if "diverged" in rows else "-") for m in marks]
        last = [r for r in rows if isinstance(r, list)][-1] if pts else None
        ms = f"{1e3 * last[1] / last[0]:.1f}" if last and last[0] else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ms} |")
    lines.append("")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "chapter6_sweep.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

"""Issue 20 part 2: UBP against SGD at the *same* lr, per update (thesis
figure 5.1 compares each at its own best lr). MNIST autoencoder, float32,
batch 200, the same minibatch sequence and initialization for both (the
machinery of benchmarks/ubp.py). For each lr: the subset training loss at
geometric checkpoints and the ratio UBP / SGD, and UBP's largest correction
ratio rho = ||C|| / ||B|| (thesis 5.5's explosion) over the run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/ubp_equal_lr.py [--updates 1000] \
        [--lrs 0.001,0.003,0.01,0.03] > benchmarks/results/ubp_equal_lr.md
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ubp import checkpoints, load_images, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    a = ap.parse_args()
    X = load_images()
    Xeval = X[np.random.default_rng(2).choice(len(X), 5000, replace=False)]
    ks = sorted(checkpoints(a.updates))
    t0 = time.time()
    print("# UBP against SGD at equal lr, per update (issue 20 part 2)\n")
    print(f"Command: `OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')} python "
          f"benchmarks/ubp_equal_lr.py --updates {a.updates} --lrs {a.lrs}`. MNIST autoencoder, float32, batch "
          "200, the same initialization and minibatches for both; loss on 5000 training images after k "
          "updates.\n")
    print("| lr | method | " + " | ".join(f"k={k}" for k in ks) + " | max rho |")
    print("|---:|---|" + "---:|" * len(ks) + "---:|")
    for lr in (float(v) for v in a.lrs.split(",")):
        res = {}
        for m in ("sgd", "ubp"):
            _, _, evals, rho = train(m, lr, X, a.updates, Xeval)
            res[m] = {k: v for k, _, v in evals}
            rho_cell = f"{rho.max():.3g}" if m == "ubp" else ""
            print(f"| {lr:g} | {m.upper()} | " + " | ".join(f"{res[m][k]:.2f}" if k in res[m] else "" for k in ks)
                  + f" | {rho_cell} |", flush=True)
        print(f"| {lr:g} | UBP / SGD | " + " | ".join(f"{res['ubp'][k] / res['sgd'][k]:.3f}"
                                                   if k in res['ubp'] and k in res['sgd'] else "" for k in ks)
              + " | |", flush=True)
    print(f"\nWhole run {time.time() - t0:.0f} s.")


if __name__ == "__main__":
    main()

"""Cost of the optimizer's finite guard (tinynet.optim.base._guard_step): the
MNIST autoencoder's step (batch 200, float32) with the guard and without it
(`step.unguarded`), interleaved in one run, median of R repeats of N steps.

    OPENBLAS_NUM_THREADS=1 python benchmarks/guard_overhead.py [--steps 20 --repeats 5]
"""
import argparse
import platform
import time

import numpy as np

from tinynet.data import load_dataset
from tinynet.models import build_model
from tinynet.optim import build_optimizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--optimizers", default="sgd,adam,kfac")
    a = ap.parse_args()
    X, _ = load_dataset("mnist-autoencode", "train")
    X = X[:200 * a.steps]
    print(f"CPU: {platform.processor() or platform.machine()}; numpy {np.__version__}")
    print("| optimizer | guard full ms/step | guard inputs ms/step | unguarded ms/step | full / unguarded | "
          "inputs / unguarded |\n|---|---|---|---|---|---|")
    for name in a.optimizers.split(","):
        net = build_model("mnist-autoencoder", dtype=np.float32, seed=0)
        opt = build_optimizer(name, net, 1e-3 if name == "adam" else 0.01)
        raw = type(opt).step.unguarded
        times = {"full": [], "inputs": [], "unguarded": []}
        batches = [X[i * 200:(i + 1) * 200] for i in range(a.steps)]
        opt.step(batches[0], batches[0])                       # compile, allocate
        for _ in range(a.repeats):
            for kind in ("full", "inputs", "unguarded"):
                opt.guard = kind if kind != "unguarded" else "full"
                fn = (lambda B: raw(opt, B, B)) if kind == "unguarded" else (lambda B: opt.step(B, B))
                t0 = time.perf_counter()
                for B in batches:
                    fn(B)
                times[kind].append((time.perf_counter() - t0) / a.steps * 1e3)
        f, i, u = (np.median(times[k]) for k in ("full", "inputs", "unguarded"))
        print(f"| {name} | {f:.2f} | {i:.2f} | {u:.2f} | {f / u:.3f} | {i / u:.3f} |")


if __name__ == "__main__":
    main()

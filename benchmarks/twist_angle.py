"""Seed 003's point about natural gradient "with a twist": a normalizer per
block turns the update, a global one only rescales it. On the MNIST classifier
(784-100-10, tanh; real MNIST, batch 200, float64) after `--steps` steps of the
twist with a per-layer normalizer, the angle in degrees between the update
with a global normalizer and with one per layer / neuron / weight, for G = I
and for the per-neuron E[g_j^2] I metric (the same statistics, the same batch).

    python benchmarks/twist_angle.py [--steps 50] > benchmarks/results/twist_angle.md
"""
import argparse

import numpy as np

from tinynet.data import load_dataset
from tinynet.models import build_model
from tinynet.optim import NaturalTwist
from tinynet.optim.twist import direction_angle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    X, y = load_dataset("mnist-labels", "train")
    rng = np.random.default_rng(0)
    batches = [rng.choice(X.shape[0], 200, replace=False) for _ in range(a.steps + 1)]
    print("# Natural gradient with a twist: how much a per-block normalizer turns the update\n")
    print(f"MNIST 784-100-10 tanh, float64, batch 200; statistics after {a.steps} steps (rho 0.9); "
          f"command: `python benchmarks/twist_angle.py --steps {a.steps}`\n")
    print("| metric G | angle(global, layer) | angle(global, neuron) | angle(global, weight) |\n|---|---|---|---|")
    for metric in ("identity", "neuron"):
        net = build_model("mnist-mlp", dtype=np.float64, seed=0)
        opt = NaturalTwist(net, lr=0.01, metric=metric, normalizer="layer")
        for idx in batches[:-1]:
            opt.step(X[idx], y[idx])
        theta, idx = net.get_flat(), batches[-1]
        dirs = {}
        for norm in ("global", "layer", "neuron", "weight"):
            probe = NaturalTwist(net, lr=0.01, metric=metric, normalizer=norm)
            probe.g2 = {i: v.copy() for i, v in opt.g2.items()}
            net.set_flat(theta)
            _, dirs[norm] = probe.direction(X[idx], y[idx])
        print(f"| {metric} | " + " | ".join(f"{direction_angle(dirs['global'], dirs[n]):.1f}"
                                            for n in ("layer", "neuron", "weight")) + " |")
    print("\nThe normalizers start from this step's statistics only (a fresh running average), the metric's "
          "E[g_j^2] from the trained run's.")


if __name__ == "__main__":
    main()

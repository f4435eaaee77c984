"""Seed 003's point about natural gradient "with a twist": a normalizer per
block turns the update, a global one only rescales it. On the MNIST classifier
(784-100-10, tanh; real MNIST, batch 200, float64) after `--steps` steps of the
twist with a per-layer normalizer, the angle in degrees between the update
with a global normalizer and with one per layer / neuron / weight, for G = I
for the per-neuron E[g_j^2] I metric (the same statistics, the same batch), and, on the
7x7 MNIST MLP (tiny-mlp), for G = the exact block-diagonal Gauss-Newton / empirical Fisher.

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
    print("# Natural gradient with a twist: how much a per-block normalizer turns the update\n")
    print(f"mnist-mlp: MNIST 784-100-10 tanh; tiny-mlp: 7x7 MNIST 49-8-6-10 tanh; float64, batch 200; "
          f"statistics after {a.steps} steps (rho 0.9; eps 1e-3 on the gn / fisher blocks); "
          f"command: `python benchmarks/twist_angle.py --steps {a.steps}`\n")
    print("| network | metric G | angle(global, layer) | angle(global, neuron) | angle(global, weight) |\n"
          "|---|---|---|---|---|")
    # the exact block GN / Fisher metrics need dense blocks: on the 7x7 MNIST MLP (tiny-mlp, 524
    # parameters), not on 784-100-10 (a 78,500-square first block)
    for model, data, metric, eps in (("mnist-mlp", "mnist-labels", "identity", 1e-8),
                                     ("mnist-mlp", "mnist-labels", "neuron", 1e-8),
                                     ("tiny-mlp", "mnist7-labels", "identity", 1e-8),
                                     ("tiny-mlp", "mnist7-labels", "gn", 1e-3),
                                     ("tiny-mlp", "mnist7-labels", "fisher", 1e-3)):
        X, y = load_dataset(data, "train")
        rng = np.random.default_rng(0)
        batches = [rng.choice(X.shape[0], 200, replace=False) for _ in range(a.steps + 1)]
        net = build_model(model, dtype=np.float64, seed=0)
        opt = NaturalTwist(net, lr=0.01, metric=metric, normalizer="layer", eps=eps)
        for idx in batches[:-1]:
            opt.step(X[idx], y[idx])
        theta, idx = net.get_flat(), batches[-1]
        dirs = {}
        for norm in ("global", "layer", "neuron", "weight"):
            probe = NaturalTwist(net, lr=0.01, metric=metric, normalizer=norm, eps=eps)
            probe.g2 = {i: v.copy() for i, v in opt.g2.items()}
            probe.G = {i: v.copy() for i, v in opt.G.items()}
            net.set_flat(theta)
            _, dirs[norm] = probe.direction(X[idx], y[idx])
        print(f"| {model} | {metric} | " + " | ".join(f"{direction_angle(dirs['global'], dirs[n]):.1f}"
                                            for n in ("layer", "neuron", "weight")) + " |")
    print("\nThe normalizers start from this step's statistics only (a fresh running average), the metric's "
          "E[g_j^2] or G blocks from the trained run's.")


if __name__ == "__main__":
    main()

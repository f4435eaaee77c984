"""Slides 003, "Why line searches?": F(w1, w2) = 1/2 w1^2 + log(e^{w2} + e^{-w2})
from (3, 3), where the Newton direction is far worse than the gradient.

  grad F = [w1, tanh w2],   hess F = diag(1, cosh(w2)^{-2})

The Newton direction is computed by tinynet's own damped-Newton code path
(`tinynet.optim.newton.newton_direction`, eps = 0, the function every Newton
optimizer uses), and the alignment with the minimizer (0, 0) by
`tinynet.alignment.alignment` (seed 001's criterion). Runs compared for 30
iterations: gradient descent (stepsize 1), pure Newton (stepsize 1), Newton
with the small stepsize 0.03 the first step calls for, and Newton with an
Armijo backtracking line search.

Run: python benchmarks/line_search_example.py
Writes benchmarks/results/line_search_example.md and .png.
"""
import os

import numpy as np

from tinynet.alignment import alignment
from tinynet.optim.newton import newton_direction

RESULTS = os.path.join(os.path.dirname(__file__), "results")
W0 = np.array([3.0, 3.0])


def F(w):
    a = abs(w[1])
    return 0.5 * w[0] ** 2 + a + np.log1p(np.exp(-2 * a))   # log(e^w + e^-w), overflow-free


def grad(w):
    return np.array([w[0], np.tanh(w[1])])


def hess(w):
    return np.diag([1.0, 1.0 / np.cosh(w[1]) ** 2])


def newton(w):
    return newton_direction(grad(w), hess(w), eps=0.0)[0]


def gradient_dir(w):
    return -grad(w)


def run(direction, step, iters=30, line_search=False):
    w, path = W0.copy(), [W0.copy()]
    for _ in range(iters):
        d = direction(w)
        a = step
        if line_search:                         # Armijo: F(w + a d) <= F(w) + 1e-4 a g.d
            while F(w + a * d) > F(w) + 1e-4 * a * grad(w) @ d and a > 1e-12:
                a *= 0.5
        with np.errstate(over="ignore", invalid="ignore"):
            w = w + a * d
        path.append(w.copy())
        if not np.all(np.isfinite(w)) or abs(w[1]) > 1e6:
            break
    return np.array(path)


def main():
    g0, n0 = gradient_dir(W0), newton(W0)
    rows = [("-grad F(3, 3)", g0, alignment(g0, W0, np.zeros(2))),
            ("-(hess F)^-1 grad F(3, 3)", n0, alignment(n0, W0, np.zeros(2)))]
    runs = {"gradient, step 1": run(gradient_dir, 1.0),
            "Newton, step 1": run(newton, 1.0),
            "Newton, step 0.03": run(newton, 0.03),
            "Newton + Armijo line search": run(newton, 1.0, line_search=True)}
    os.makedirs(RESULTS, exist_ok=True)
    lines = ["# Slides 003 \"Why line searches?\": F(w1, w2) = ½ w1² + log(e^w2 + e^-w2) from (3, 3)", "",
             "Directions at (3, 3) (Newton from `tinynet.optim.newton.newton_direction`, eps = 0) and their",
             "alignment (cosine) with the way to the minimizer (0, 0) (`tinynet.alignment.alignment`):", "",
             "| direction | value | alignment with (0,0) - w |", "|---|---|---|"]
    for name, d, c in rows:
        lines.append(f"| {name} | [{d[0]:.3f}, {d[1]:.3f}] | {c:.4f} |")
    lines += ["", "30 iterations from (3, 3):", "",
              "| method | w after 1 step | w after 2 steps | final w (iterations) | final F "
              "| first iteration with ‖w‖ < 1e-3 |",
              "|---|---|---|---|---|---|"]
    for name, p in runs.items():
        fin = p[-1]
        fF = F(fin) if np.all(np.isfinite(fin)) else float("nan")
        close = np.nonzero(np.linalg.norm(np.nan_to_num(p, nan=np.inf), axis=1) < 1e-3)[0]
        hit = str(close[0]) if len(close) else "never"
        lines.append(f"| {name} | ({p[1][0]:.3g}, {p[1][1]:.3g}) | ({p[2][0]:.3g}, {p[2][1]:.3g}) | "
                     f"({fin[0]:.3g}, {fin[1]:.3g}) ({len(p) - 1}) | {fF:.4g} | {hit} |")
    lines += ["", "F(0, 0) = log 2 = 0.6931. The Newton step is ~100 times too long along w2: with",
              "step 1 it overshoots to w2 ≈ -97 and diverges; the step 0.03 the first update needs",
              "then crawls along w1 (10x too small once w2 ≈ 0); a line search picks each step length.",
              "", "![trajectories](line_search_example.png)", ""]
    with open(os.path.join(RESULTS, "line_search_example.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    _plot(runs)


def _plot(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 5))
    a, b = np.meshgrid(np.linspace(-1, 4, 200), np.linspace(-4, 4, 200))
    Z = 0.5 * a ** 2 + np.logaddexp(b, -b)
    ax.contour(a, b, Z, levels=20, cmap="Greys", linewidths=0.6)
    for name, p in runs.items():
        p = p[np.all(np.isfinite(p), axis=1)]
        ax.plot(np.clip(p[:, 0], -1, 4), np.clip(p[:, 1], -4, 4), "o-", ms=3, label=name)
    ax.plot(0, 0, "k*", ms=12)
    ax.set(xlim=(-1, 4), ylim=(-4, 4), xlabel="w1", ylabel="w2",
           title="F = ½ w1² + log(e^w2 + e^-w2) from (3, 3) (clipped to the box)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "line_search_example.png"), dpi=110)


if __name__ == "__main__":
    main()

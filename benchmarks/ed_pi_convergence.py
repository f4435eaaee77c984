"""The power-iteration gradient converging to the analytic ED gradient as K grows
(seed 004; draft eq. 6-7: the PI gradient is the analytic one's geometric series
truncated after K terms, so the error falls like (lam_2 / lam_1)^K).

For d = 8 matrices with lam = (1, ratio, ratio/2, ratio/4, ...) + 1e-4 and the
loss L = <g, v_1> (the leading eigenvector), the relative error
||dL/dM_rule - dL/dM_analytic|| / ||dL/dM_analytic|| of the hybrid rule (eigh
forward, K PI steps backward) and of the pure PI rule (K PI steps forward from a
random start, and back), median over 20 matrices, against K for several ratios,
and against the ratio at K = 19 (the paper's choice).

  OMP_NUM_THREADS=1 python benchmarks/ed_pi_convergence.py
writes benchmarks/results/ed_pi_convergence.png and ed_pi_convergence.md.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinynet.ed import ed_vjp  # noqa: E402

D, N, EPS = 8, 20, 1e-4
RATIOS = (0.5, 0.8, 0.9, 0.95, 0.99)
KS = (1, 2, 4, 8, 16, 19, 32, 64, 128, 256, 512)
OUT = os.path.join(os.path.dirname(__file__), "results")


def matrices(ratio, rng):
    lam = np.concatenate([[1.0], ratio * 0.5 ** np.arange(D - 1)]) + EPS
    Q, _ = np.linalg.qr(rng.standard_normal((N, D, D)))
    return (Q * lam) @ np.swapaxes(Q, 1, 2), rng.standard_normal((N, D, 1))


def errors(rule, M, g, K):
    ga, Va, _ = ed_vjp(M, g, rule="svd")
    if rule == "pi":     # align the sign of PI's vector with eigh's before comparing
        _, V, _ = ed_vjp(M, g, rule="pi", K=K, seed=1)
        g = g * np.sign(np.sum(V * Va, axis=1, keepdims=True))
    gr, _, _ = ed_vjp(M, g, rule=rule, K=K, seed=1)
    return np.median(np.linalg.norm(gr - ga, axis=(1, 2)) / np.linalg.norm(ga, axis=(1, 2)))


def main():
    rng = np.random.default_rng(0)
    res = {}
    for ratio in RATIOS:
        M, g = matrices(ratio, rng)
        for rule in ("hybrid", "pi"):
            res[rule, ratio] = [errors(rule, M, g, K) for K in KS]
    fine = np.linspace(0.3, 0.995, 30)
    at19 = {rule: [] for rule in ("hybrid", "pi")}
    for ratio in fine:
        M, g = matrices(ratio, rng)
        for rule in at19:
            at19[rule].append(errors(rule, M, g, 19))
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for j, rule in enumerate(("hybrid", "pi")):
        for ratio in RATIOS:
            ax[j].loglog(KS, np.maximum(res[rule, ratio], 1e-17), "o-", ms=3, label=f"lam2/lam1 = {ratio}")
            ax[j].loglog(KS, np.array(ratio, float) ** np.array(KS, float), ":", color=ax[j].lines[-1].get_color(), lw=0.8)
        ax[j].set(xlabel="power iterations K", ylabel="relative error vs analytic gradient",
                  title=f"{rule}: error against K (dotted: ratio^K)", ylim=(1e-17, 10))
        ax[j].axvline(19, color="gray", lw=0.6)
        ax[j].legend(fontsize=7)
    for rule, mk in (("hybrid", "o-"), ("pi", "s-")):
        ax[2].semilogy(fine, np.maximum(at19[rule], 1e-17), mk, ms=3, label=rule)
    ax[2].semilogy(fine, fine ** 19, ":", color="gray", label="ratio^19")
    ax[2].set(xlabel="lam2 / lam1", ylabel="relative error at K = 19", title="error against the ratio, K = 19")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "ed_pi_convergence.png"), dpi=110)
    L = ["# PI gradient -> analytic ED gradient (seed 004, issue 16)", "",
         "`python benchmarks/ed_pi_convergence.py`: d = 8, lam = (1, r, r/2, r/4, ...) + 1e-4, loss <g, v_1>,",
         f"median relative error over {N} matrices. Plot: `ed_pi_convergence.png`.", "",
         "| rule | lam2/lam1 | " + " | ".join(f"K={K}" for K in KS) + " |", "|---|---|" + "---|" * len(KS)]
    for rule in ("hybrid", "pi"):
        for ratio in RATIOS:
            L.append(f"| {rule} | {ratio} | " + " | ".join(f"{e:.1e}" for e in res[rule, ratio]) + " |")
    with open(os.path.join(OUT, "ed_pi_convergence.md"), "w") as fh:
        fh.write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()

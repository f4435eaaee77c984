"""The SG theorems of seed 003 measured (issue 15, part 5): E[F(w_k) - F*]
against the bounds of Bottou-Curtis-Nocedal section 4 (tinynet.theory.sg) on
two strongly convex problems whose constants are exact (tinynet.theory.problems):

  Q1, Q10  F(w) = 1/2 w^T A w, d = 20, condition number 1 and 10, L = 1,
           additive N(0, 0.05 I) gradient noise: M = 1, M_V = 0, mu = mu_G = M_G = 1
  MNIST-LS L2-regularized least squares (lam = 0.01) on the first 20 principal
           components of the 60,000 MNIST training images (target: digit >= 5),
           single-example SG with replacement; L, c from H = X^T X / n + lam I,
           M, M_V the exact smallest pairs of (4.8) (LeastSquares.constants)

Each measurement is given twice: the exact expectation (a moment recursion,
no sampling) and the mean over --seeds SG runs (+- 2 standard errors).
Parts: theorem 4.6 at several fixed stepsizes; beyond (4.13) (where SG
diverges); theorem 4.7 for beta/(gamma+k) including beta < 1/(c mu); the halving
protocol; minibatch n_mb at alpha vs single examples at alpha/n_mb; the
extrapolation F* ~ 2 F_{alpha/2} - F_alpha.

  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/sg_theory.py [--seeds 100] [--quick]
writes benchmarks/results/sg_theory.md and sg_theory_{fixed,diminishing,halving,minibatch}.png.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinynet.theory import sg  # noqa: E402
from tinynet.theory.problems import LeastSquares, NoisyQuadratic, simulate  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "results")
COLORS = ["C0", "C1", "C2", "C3", "C4", "C5"]
HALVING_COLORS = {"bound-driven halving": "C0", "oracle halving (2 F_alpha of the bound)": "C1",
                  "oracle halving (2 x true floor)": "C2", "fixed alpha_1": "C3", "beta/(gamma+k)": "C4"}


def log_grid(K, n=70):
    return np.unique(np.geomspace(1, K + 1, n).astype(np.int64))


def fmt(x):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.3g}"


def mc(problem, w1, alphas, seeds, record, n_mb=1, seed=0):
    g = simulate(problem, w1, alphas, seeds, seed=seed, n_mb=n_mb, record=record)
    return g.mean(axis=1), 2 * g.std(axis=1, ddof=1) / np.sqrt(seeds)


def start_point(problem, gap1, seed=1):
    """w_1 = w* + t v, v a random unit vector, t so that F(w_1) - F* = gap1."""
    v = np.random.default_rng(seed).standard_normal(problem.d)
    v /= np.linalg.norm(v)
    t = np.sqrt(gap1 / problem.gap(problem.w_star + v))
    return problem.w_star + t * v


def consts(problem, alpha, n_mb=1):
    if isinstance(problem, NoisyQuadratic):
        return problem.constants(n_mb)
    return problem.constants(alpha, n_mb)


def zscore(mean, err, exact):
    """largest |MC mean - exact| / standard error, over the recorded k > 1 (w_1 is not random)."""
    keep = err > 0
    keep[0] = False
    return float(np.max(np.abs(mean[keep] - exact[keep]) / (err[keep] / 2)))


# ---------------------------------------------------------------- theorem 4.6
def part_fixed(problems, seeds, K_of, fracs_of, lines, figs):
    lines += ["## Theorem 4.6: fixed stepsizes", "",
              "bound = (4.14) with the problem's exact constants; exact = E[F(w_k) - F*] from the moment "
              "recursion; MC = mean of the SG runs +- 2 s.e.; ratio = bound / exact. 'floor' rows compare "
              "F_alpha = alpha L M / (2 c mu) with the exact stationary gap lim E[F(w_k) - F*] (the fixed point "
              "of the moment recursion, `stationary_gap`). z = the largest |MC - exact| / s.e. over the recorded k.", "",
              "| problem | alpha / (mu/(L M_G)) | alpha | k | bound | exact | MC | bound / exact |",
              "|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(problems), figsize=(5.2 * len(problems), 4.2))
    summary = {}
    for ax, (name, prob, w1) in zip(axes, problems):
        gap1 = float(prob.gap(w1))
        K = K_of[name]
        rec = log_grid(K)
        amax = 1.0 / prob.L if isinstance(prob, NoisyQuadratic) else prob.sup_stepsize()
        for i, f in enumerate(fracs_of[name]):
            a = f * amax
            C = consts(prob, a)
            alphas = np.full(K, a)
            ex = prob.expected_gap(w1, alphas)
            mean, err = mc(prob, w1, alphas, seeds, rec)
            b = sg.fixed_stepsize_bound(np.arange(1, K + 2), a, C["L"], C["c"], C["mu"], C["M"], gap1, M_G=C["M_G"])
            floor = sg.noise_floor(a, C["L"], C["c"], C["mu"], C["M"])
            st = prob.stationary_gap(a)
            z = zscore(mean, err, ex[rec - 1])
            ks = [k for k in (2, 11, 101, 1001, 10001) if k < K] + [K + 1]
            for k in ks:
                j = np.searchsorted(rec, k)
                mcs = f"{mean[j]:.3g} +- {err[j]:.2g}" if j < rec.size and rec[j] == k else "-"
                lines.append(f"| {name} | {f:g} | {a:.4g} | {k} | {b[k - 1]:.4g} | {ex[k - 1]:.4g} | {mcs} | "
                             f"{b[k - 1] / ex[k - 1]:.2f} |")
            lines.append(f"| {name} | {f:g} | {a:.4g} | floor | {floor:.4g} | {st:.4g} | (z = {z:.1f}) | "
                         f"**{floor / st:.2f}** |")
            summary[(name, f)] = (floor, st, b, ex)
            col = COLORS[i]
            ax.loglog(np.arange(1, K + 2), ex, color=col, lw=1.5, label=f"alpha = {f:g} alpha_max: exact")
            ax.errorbar(rec, mean, yerr=err, fmt="o", ms=2.5, color=col, alpha=0.6, lw=0.8)
            ax.loglog(np.arange(1, K + 2), b, "--", color=col, lw=1.2)
        ax.set_title(f"{name}: L/c = {prob.L / prob.c:.3g}")
        ax.set_xlabel("k")
        ax.set_ylabel("E[F(w_k) - F*]")
        ax.legend(fontsize=7, title="dashed: theorem 4.6 bound; dots: MC", title_fontsize=7)
    fig.tight_layout()
    path = os.path.join(OUT, "sg_theory_fixed.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    figs.append(path)
    lines.append("")
    return summary


# ---------------------------------------------------------------- theorem 4.7
def part_diminishing(items, seeds, lines, figs):
    lines += ["## Theorem 4.7: alpha_k = beta / (gamma + k)", "",
              "gamma is set so that alpha_1 = beta/(gamma+1) is the largest stepsize covered "
              "(mu/(L M_G) for the quadratic, 0.9 of the sup for MNIST-LS). The bound (4.19) exists only "
              "for beta c mu > 1. slope = least-squares slope of log E[F(w_k) - F*] against log k over the "
              "last decade of k (exact expectation): O(1/k) is slope -1.", "",
              "| problem | beta c mu | beta | gamma | k | bound nu/(gamma+k) | exact | MC | bound / exact | "
              "(gamma+k) x exact | slope |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(items), figsize=(5.6 * len(items), 4.2))
    out = {}
    for ax, (name, prob, w1, K, bcs, a1) in zip(axes, items):
        gap1 = float(prob.gap(w1))
        rec = log_grid(K)
        C = consts(prob, a1)
        for i, bc in enumerate(bcs):
            beta = bc / (prob.c * C["mu"])
            gamma = max(beta / a1 - 1.0, 1e-9)
            alphas = sg.diminishing_stepsizes(K, beta, gamma)
            ex = prob.expected_gap(w1, alphas)
            mean, err = mc(prob, w1, alphas, seeds, rec)
            k_all = np.arange(1, K + 2)
            tail = k_all >= (K + 1) / 10
            slope = np.polyfit(np.log(k_all[tail]), np.log(ex[tail]), 1)[0]
            if bc > 1:
                b = sg.diminishing_bound(k_all, beta, gamma, C["L"], C["c"], C["mu"], C["M"], gap1, M_G=C["M_G"])
            else:
                b = None
            for k in [k for k in (11, 101, 1001, 10001) if k < K] + [K + 1]:
                j = np.searchsorted(rec, k)
                mcs = f"{mean[j]:.3g} +- {err[j]:.2g}" if j < rec.size and rec[j] == k else "-"
                bk = b[k - 1] if b is not None else None
                lines.append(f"| {name} | {bc:g} | {beta:.4g} | {gamma:.4g} | {k} | {fmt(bk)} | {ex[k - 1]:.3g} | "
                             f"{mcs} | {fmt(bk / ex[k - 1]) if bk is not None else 'no bound (beta c mu <= 1)'} | "
                             f"{(gamma + k) * ex[k - 1]:.3g} | {slope:.2f} |")
            nu_terms = (beta * beta * C["L"] * C["M"] / (2 * (bc - 1)) if bc > 1 else np.inf, (gamma + 1) * gap1)
            out[(name, bc)] = (slope, ex, b, nu_terms)
            col = COLORS[i]
            ax.loglog(k_all, ex, color=col, lw=1.5, label=f"beta c mu = {bc:g} (slope {slope:.2f})")
            ax.errorbar(rec, mean, yerr=err, fmt="o", ms=2.5, color=col, alpha=0.6, lw=0.8)
            if b is not None:
                ax.loglog(k_all, b, "--", color=col, lw=1.2)
        ax.set_title(f"{name}: theorem 4.7 (dashed: nu/(gamma+k))")
        ax.set_xlabel("k")
        ax.set_ylabel("E[F(w_k) - F*]")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(OUT, "sg_theory_diminishing.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    figs.append(path)
    lines.append("")
    return out


# ---------------------------------------------------------------- halving
def oracle_halving_quadratic(q, w1, K, a1, true_floor=False):
    """The slides' protocol driven by the true expectation: halve alpha when the
    exact E[F(w_k) - F*] reaches alpha L M / (c mu) (twice the bound's floor), or,
    with true_floor, twice the true stationary gap at alpha."""
    C = q.constants()
    p = (q.Q.T @ w1) ** 2
    a = a1
    alphas, ex = np.empty(K), np.empty(K + 1)
    ex[0] = 0.5 * q.lam @ p

    def floor(a):
        return q.stationary_gap(a) if true_floor else sg.noise_floor(a, C["L"], C["c"], C["mu"], C["M"])
    for i in range(K):
        if ex[i] <= 2 * floor(a):
            a /= 2
        alphas[i] = a
        p = (1 - a * q.lam) ** 2 * p + a * a * q.s
        ex[i + 1] = 0.5 * q.lam @ p
    return alphas, ex


def part_halving(items, seeds, lines, figs):
    lines += ["## The halving protocol", "",
              "'bound-driven': alpha is halved when the bound (4.21) along the run reaches 2 F_alpha = "
              "alpha L M / (c mu) (the schedule is computable in advance, and the bound holds along it); "
              "'oracle' (quadratic only): when the exact expected gap reaches it, or reaches twice the true "
              "stationary gap at alpha (the protocol with the true floor in place of the bound's). Compared with the "
              "fixed alpha_1 and theorem 4.7 at beta c mu = 2 from the same alpha_1. Phase lengths after "
              "the first are predicted as tau = log 3 / -log(1 - alpha c mu).", "",
              "| problem | schedule | halvings | k | bound | exact | MC | k x exact | bound / exact |",
              "|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(items), figsize=(5.6 * len(items), 4.2))
    out = {}
    for ax, (name, prob, w1, K, a1) in zip(axes, items):
        gap1 = float(prob.gap(w1))
        C = consts(prob, a1)
        rec = log_grid(K)
        k_all = np.arange(1, K + 2)
        al_h, b_h, sw = sg.halving_schedule(K, a1, C["L"], C["c"], C["mu"], C["M"], gap1, M_G=C["M_G"])
        runs = [("bound-driven halving", al_h, b_h, len(sw))]
        if isinstance(prob, NoisyQuadratic):
            al_o, _ = oracle_halving_quadratic(prob, w1, K, a1)
            runs.append(("oracle halving (2 F_alpha of the bound)", al_o,
                         sg.recursion_bound(al_o, C["L"], C["c"], C["mu"], C["M"], gap1, M_G=C["M_G"]),
                         int(np.sum(np.diff(al_o) < 0))))
            al_t, _ = oracle_halving_quadratic(prob, w1, K, a1, true_floor=True)
            runs.append(("oracle halving (2 x true floor)", al_t,
                         sg.recursion_bound(al_t, C["L"], C["c"], C["mu"], C["M"], gap1, M_G=C["M_G"]),
                         int(np.sum(np.diff(al_t) < 0))))
        runs.append((f"fixed alpha_1", np.full(K, a1), sg.fixed_stepsize_bound(k_all, a1, C["L"], C["c"], C["mu"],
                                                                                 C["M"], gap1, M_G=C["M_G"]), 0))
        beta = 2.0 / (prob.c * C["mu"])
        gamma = beta / a1 - 1
        runs.append(("beta/(gamma+k), beta c mu = 2", sg.diminishing_stepsizes(K, beta, gamma),
                     sg.diminishing_bound(k_all, beta, gamma, C["L"], C["c"], C["mu"], C["M"], gap1, M_G=C["M_G"]),
                     0))
        if sw:
            taus = np.diff(sw)
            pred = [sg.halving_phase_length(a1 / 2 ** (r + 1), C["c"], C["mu"]) for r in range(len(taus))]
            out[(name, "phases")] = (taus, pred)
        for i, (lab, al, b, nh) in enumerate(runs):
            ex = prob.expected_gap(w1, al)
            mean, err = mc(prob, w1, al, seeds, rec)
            for k in [k for k in (101, 1001, 10001) if k < K] + [K + 1]:
                j = np.searchsorted(rec, k)
                mcs = f"{mean[j]:.3g} +- {err[j]:.2g}" if j < rec.size and rec[j] == k else "-"
                lines.append(f"| {name} | {lab} | {nh} | {k} | {b[k - 1]:.3g} | {ex[k - 1]:.3g} | {mcs} | "
                             f"{k * ex[k - 1]:.3g} | {b[k - 1] / ex[k - 1]:.2f} |")
            out[(name, lab)] = (ex, b)
            col = HALVING_COLORS[lab.split(",")[0].split(" (")[0]] if "oracle" not in lab else HALVING_COLORS[lab]
            ax.loglog(k_all, ex, color=col, lw=1.5, label=f"{lab}: exact")
            ax.errorbar(rec, mean, yerr=err, fmt="o", ms=2.5, color=col, alpha=0.6, lw=0.8)
            ax.loglog(k_all, b, "--", color=col, lw=1.2)
        ax.set_title(f"{name}: halving protocol (dashed: bounds)")
        ax.set_xlabel("k")
        ax.set_ylabel("E[F(w_k) - F*]")
        ax.legend(fontsize=7)
    for key, (taus, pred) in out.items():
        if key[1] == "phases":
            lines.append("")
            lines.append(f"{key[0]}: bound-driven phase lengths {list(map(int, taus[:8]))} vs predicted "
                         f"log 3 / -log(1 - alpha c mu) = {[int(round(p)) for p in pred[:8]]}"
                         f" (each twice the previous: tau proportional to 1/alpha).")
    fig.tight_layout()
    path = os.path.join(OUT, "sg_theory_halving.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    figs.append(path)
    lines.append("")
    return out


# ---------------------------------------------------------------- minibatch
def part_minibatch(items, seeds, lines, figs, n_mb=8):
    lines += [f"## Minibatches: n_mb = {n_mb} at alpha against single examples at alpha / n_mb", "",
              "Both at the same number of examples processed e (k = e / n_mb minibatch iterations, or e "
              "single-example ones). Bounds: the slides' two formulas, each with the sharpest valid "
              "constants for its own stepsize and noise (for MNIST-LS: M, M_V of the minibatch's variance, "
              "V / n_mb).", "",
              "| problem | alpha | examples e | bound minibatch | bound single | exact minibatch | exact single | "
              "MC minibatch | MC single | exact minibatch / single |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    fig, axes = plt.subplots(1, len(items), figsize=(5.6 * len(items), 4.2))
    out = {}
    for ax, (name, prob, w1, K, a) in zip(axes, items):
        gap1 = float(prob.gap(w1))
        Cm = consts(prob, a, n_mb)
        Cs = consts(prob, a / n_mb, 1)
        ex_m = prob.expected_gap(w1, np.full(K, a), n_mb=n_mb)
        ex_s = prob.expected_gap(w1, np.full(K * n_mb, a / n_mb))
        rec_m = log_grid(K, 50)
        rec_s = (rec_m - 1) * n_mb + 1
        mean_m, err_m = mc(prob, w1, np.full(K, a), seeds, rec_m, n_mb=n_mb)
        mean_s, err_s = mc(prob, w1, np.full(K * n_mb, a / n_mb), seeds, rec_s)
        km = np.arange(1, K + 2)
        ks = np.arange(1, K * n_mb + 2)
        b_m = sg.fixed_stepsize_bound(km, a, Cm["L"], Cm["c"], Cm["mu"], Cm["M"], gap1, M_G=Cm["M_G"])
        b_s = sg.fixed_stepsize_bound(ks, a / n_mb, Cs["L"], Cs["c"], Cs["mu"], Cs["M"], gap1, M_G=Cs["M_G"])
        for k in [k for k in (11, 101, 1001) if k < K] + [K + 1]:
            e = (k - 1) * n_mb
            j = np.searchsorted(rec_m, k)
            mm = f"{mean_m[j]:.3g} +- {err_m[j]:.2g}" if j < rec_m.size and rec_m[j] == k else "-"
            ms = f"{mean_s[j]:.3g} +- {err_s[j]:.2g}" if j < rec_m.size and rec_m[j] == k else "-"
            lines.append(f"| {name} | {a:.4g} | {e} | {b_m[k - 1]:.3g} | {b_s[e]:.3g} | {ex_m[k - 1]:.3g} | "
                         f"{ex_s[e]:.3g} | {mm} | {ms} | {ex_m[k - 1] / ex_s[e]:.3f} |")
        floors = (sg.noise_floor(a, Cm["L"], Cm["c"], Cm["mu"], Cm["M"]),
                  sg.noise_floor(a / n_mb, Cs["L"], Cs["c"], Cs["mu"], Cs["M"]))
        lines.append(f"| {name} | {a:.4g} | floor | {floors[0]:.3g} | {floors[1]:.3g} | {ex_m[-1]:.3g} | "
                     f"{ex_s[-1]:.3g} | | | {ex_m[-1] / ex_s[-1]:.3f} |")
        out[name] = (ex_m, ex_s, floors)
        ax.loglog((km - 1) * n_mb + 1, ex_m, "C0", label=f"n_mb = {n_mb}, alpha = {a:.3g}: exact")
        ax.loglog(ks, ex_s, "C1", label=f"single, alpha / {n_mb}: exact")
        ax.errorbar(rec_s, mean_m, yerr=err_m, fmt="o", ms=2.5, color="C0", alpha=0.6, lw=0.8)
        ax.errorbar(rec_s, mean_s, yerr=err_s, fmt="s", ms=2.5, color="C1", alpha=0.6, lw=0.8)
        ax.loglog((km - 1) * n_mb + 1, b_m, "--", color="C0", lw=1.2)
        ax.loglog(ks, b_s, ":", color="C1", lw=1.5)
        ax.set_title(f"{name}: minibatch vs single (dashed/dotted: bounds)")
        ax.set_xlabel("examples processed")
        ax.set_ylabel("E[F(w) - F*]")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(OUT, "sg_theory_minibatch.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    figs.append(path)
    lines.append("")
    return out


# ---------------------------------------------------------------- extrapolation
def part_extrapolation(ls, q, seeds, a0, lines, n_levels=3, length=24):
    lines += ["## Extrapolating F* ~ 2 F_{alpha/2} - F_alpha", "",
              "F_a = the stationary E[F(w_k)] at stepsize a. MNIST-LS: 'exact' F_a - F* from the fixed point of "
              "the moment recursion (`stationary_gap`); 'MC' uses F computed from its definition on the 60,000 "
              f"examples, averaged over the seeds and over the second half of a run of {length} / (a c) "
              "iterations from w* (+- 2 s.e. of the per-seed means), and F* is not used to form it. Quadratic Q10: "
              "F* = 0 and the stationary gap is exactly sum_i a s_i / (2 (2 - a lam_i)).", "",
              "| problem | alpha | F* | F_alpha - F* | F_{alpha/2} - F* | 2F_{alpha/2} - F_alpha - F* | "
              "(F_{alpha/2} - F*) / extrapolation error | MC: F_alpha | MC: F_{alpha/2} | MC: 2F_{alpha/2} - F_alpha |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    out = []
    levels = [a0 / 2 ** i for i in range(n_levels)]
    mcF = {}
    for aa in levels:
        K = int(length / (aa * ls.c))
        rec = np.arange(K // 2, K + 2, max(1, int(0.25 / (aa * ls.c))))
        Fk = simulate(ls, ls.w_star, np.full(K, aa), seeds, seed=3, record=rec, value="F")
        per_seed = Fk.mean(axis=0)
        mcF[aa] = (per_seed.mean(), 2 * per_seed.std(ddof=1) / np.sqrt(seeds))
    for a in levels[:-1]:
        e_a, e_h = ls.stationary_gap(a), ls.stationary_gap(a / 2)
        extra = sg.extrapolate_F_star(ls.F_star + e_a, ls.F_star + e_h) - ls.F_star
        (Fa, ea), (Fh, eh) = mcF[a], mcF[a / 2]
        mc_extra = sg.extrapolate_F_star(Fa, Fh)
        mc_err = np.hypot(2 * eh, ea)
        lines.append(f"| MNIST-LS | {a:.4g} ({a / ls.sup_stepsize():.3g} sup) | {ls.F_star:.6f} | {e_a:.3e} | "
                     f"{e_h:.3e} | {extra:.2e} | {abs(e_h / extra):.0f} | {Fa:.6f} +- {ea:.1e} | {Fh:.6f} +- {eh:.1e} | "
                     f"{mc_extra:.6f} +- {mc_err:.1e} (error {mc_extra - ls.F_star:+.1e}) |")
        out.append(("MNIST-LS", a, e_a, e_h, extra, mc_extra - ls.F_star, mc_err))
    for a in (1.0, 0.5, 0.25):
        e_a, e_h = q.stationary_gap(a), q.stationary_gap(a / 2)
        extra = sg.extrapolate_F_star(e_a, e_h)
        lines.append(f"| Q10 | {a:g} | 0 | {e_a:.3e} | {e_h:.3e} | {extra:.2e} | {abs(e_h / extra):.0f} | - | - | - |")
        out.append(("Q10", a, e_a, e_h, extra, None, None))
    lines.append("")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test, not the results)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    S = args.seeds
    sc = 0.1 if args.quick else 1.0
    q1 = NoisyQuadratic(20, 1.0, L=1.0, noise_var=0.05, seed=0)
    q10 = NoisyQuadratic(20, 10.0, L=1.0, noise_var=0.05, seed=0)
    ls = LeastSquares.from_mnist(d=20, lam=1e-2)
    w_q1, w_q10, w_ls = start_point(q1, 50.0), start_point(q10, 50.0), start_point(ls, 20.0)
    lines = ["# The SG theorems of seed 003 measured (`benchmarks/sg_theory.py`)", "",
             f"Command: `OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/sg_theory.py --seeds {S}"
             f"{' --quick' if args.quick else ''}`", ""]
    lsM = ls.constants(0.5 * ls.sup_stepsize())
    lines += ["## Problems and their exact constants", "",
              "| problem | d | L | c | L / c | mu = mu_G | M | M_V | max stepsize mu/(L M_G) | F(w_1) - F* |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p, w in (("Q1", q1, w_q1), ("Q10", q10, w_q10)):
        C = p.constants()
        lines.append(f"| {name} | {p.d} | {C['L']:.4g} | {C['c']:.4g} | {C['L'] / C['c']:.4g} | 1 | {C['M']:.4g} | 0 | "
                     f"{1 / C['L']:.4g} | {float(p.gap(w)):.3g} |")
    lines.append(f"| MNIST-LS (n = {ls.n}) | {ls.d} | {ls.L:.4g} | {ls.c:.4g} | {ls.L / ls.c:.4g} | 1 | "
                 f"{lsM['M']:.4g} at M_V = {lsM['M_V']:.4g}; -> V* = {ls.V_star:.4g} as M_V -> inf | "
                 f"> {ls.smallest_M_V():.4g} | sup {ls.sup_stepsize():.4g} (not attained) | {float(ls.gap(w_ls)):.3g} |")
    lines += ["", "MNIST-LS constants: with u = w - w*, grad f_i(w) - grad F(w) = B_i u + r_i, B_i = x_i x_i^T - "
              "X^T X / n, r_i = grad f_i(w*), so V[g] = u^T S u + 2 q^T u + V* exactly (S = mean B_i^2, q = mean "
              "B_i r_i, V* = mean ||r_i||^2). (4.8) holds for all w iff M_V H^2 - S >= 0 and M >= V* + q^T (M_V H^2 "
              "- S)^-1 q; M_V must exceed lambda_max(H^-1 S H^-1). At stepsize alpha the run uses M_V = 1/(alpha L) - "
              "1 (so alpha = mu/(L M_G) exactly) and the smallest M for it.", ""]
    figs = []
    fixed = part_fixed([("Q1", q1, w_q1), ("Q10", q10, w_q10), ("MNIST-LS", ls, w_ls)], S,
                       {"Q1": int(3000 * sc), "Q10": int(3000 * sc), "MNIST-LS": int(25000 * sc)},
                       {"Q1": (1.0, 0.25, 1 / 16), "Q10": (1.0, 0.25, 1 / 16), "MNIST-LS": (0.9, 0.3, 0.1)},
                       lines, figs)
    a_div = ls.divergence_stepsize()
    lines += ["## Beyond (4.13): where SG actually diverges", "",
              f"- Quadratics (additive noise): E[F] diverges exactly for alpha >= 2/L = 2 mu/(L M_G), as the slides "
              f"say ('SG usually diverges when alpha is above 2 mu/(L M_G)').",
              f"- MNIST-LS: the second moment of single-example SG stays bounded up to alpha = {a_div:.4g} "
              f"(spectral radius of the moment map = 1), i.e. {a_div / ls.sup_stepsize():.1f}x the sup "
              f"{ls.sup_stepsize():.4g} of mu/(L M_G) over valid constants and {a_div * ls.L:.3g} / L. "
              f"The 2 mu/(L M_G) rule of thumb is {'conservative' if a_div > 2 * ls.sup_stepsize() else 'optimistic'} "
              f"here by a factor {a_div / (2 * ls.sup_stepsize()):.2g}: M_G = 1 + M_V is set by the worst "
              f"direction of the variance, lambda_max(H^-1 S H^-1) = {ls.smallest_M_V():.3g}.", ""]
    t_fixed = time.time() - t0
    a1_ls = 0.9 * ls.sup_stepsize()
    dim = part_diminishing([("Q10", q10, w_q10, int(100000 * sc), (0.25, 0.5, 0.75, 1.5, 3.0), 1.0),
                            ("MNIST-LS", ls, w_ls, int(60000 * sc), (0.25, 0.75, 2.0), a1_ls)], S, lines, figs)
    halv = part_halving([("Q10", q10, w_q10, int(20000 * sc), 1.0), ("MNIST-LS", ls, w_ls, int(20000 * sc), a1_ls)],
                        S, lines, figs)
    mb = part_minibatch([("Q10", q10, w_q10, int(1000 * sc), 1.0),
                         ("MNIST-LS", ls, w_ls, int(3000 * sc), 0.9 * ls.sup_stepsize(8))], S, lines, figs)
    ext = part_extrapolation(ls, q10, S, 0.9 * ls.sup_stepsize(), lines, length=int(24 * sc) or 3)
    lines += summary_section(fixed, dim, halv, mb, ext, q10, ls)
    lines += slides_vs_paper()
    lines += ["", f"Run time {time.time() - t0:.0f} s (theorem 4.6 part {t_fixed:.0f} s), one thread, "
              f"{S} seeds. Plots: " + ", ".join(f"`{os.path.relpath(f, os.path.dirname(OUT))}`" for f in figs), ""]
    with open(os.path.join(OUT, "sg_theory.md"), "w") as fh:
        fh.write("\n".join(lines))
    print("\n".join(lines))


def summary_section(fixed, dim, halv, mb, ext, q10, ls):
    L = ["## Where the bounds are tight and where loose", ""]
    f = fixed[("Q1", 1.0)]
    L.append(f"- **Tight**: Q1 (L = c) at alpha = mu/(L M_G) = 1/L: every inequality of the proof of theorem "
             f"4.6 is an equality, and the bound equals the expectation from k = 2 on (floor {f[0]:.4g} vs "
             f"{f[1]:.4g}, ratio {f[0] / f[1]:.3f}).")
    r = [fixed[("Q1", a)][0] / fixed[("Q1", a)][1] for a in (1.0, 0.25, 1 / 16)]
    L.append(f"- Q1 at smaller alpha: the floor ratio is 2 - alpha L ({r[1]:.3f} at alpha = 1/4, {r[2]:.3f} at "
             f"1/16): the step (mu - alpha L M_G / 2) >= mu / 2 of the proof loses that factor; the transient "
             f"contracts as (1 - alpha c)^2 in truth but (1 - alpha c) in the bound, so away from alpha = 1/L the "
             f"bound's transient is the square root of the true one.")
    r = [fixed[("Q10", a)][0] / fixed[("Q10", a)][1] for a in (1.0, 0.25, 1 / 16)]
    L.append(f"- Q10 (L/c = 10, isotropic noise): floor loose by {r[0]:.1f}x, {r[1]:.1f}x, {r[2]:.1f}x at alpha = 1, "
             f"1/4, 1/16 of 1/L. Two factors: L/c (the bound uses L for the noise's curvature and c for the "
             f"contraction, true for no single direction) times ~2 - alpha lam (as for Q1), averaged over the "
             f"spectrum: exact floor = sum_i alpha s_i / (2 (2 - alpha lam_i)) against alpha L sum_i s_i / (2 c).")
    r = [fixed[("MNIST-LS", a)][0] / fixed[("MNIST-LS", a)][1] for a in (0.9, 0.3, 0.1)]
    L.append(f"- MNIST-LS (L/c = {ls.L / ls.c:.2f}): floor loose by {r[0]:.1f}x, {r[1]:.1f}x, {r[2]:.1f}x at "
             f"0.9, 0.3, 0.1 of the sup stepsize: the same L/c x 2 effect, plus M >= V* at the finite M_V "
             f"that the stepsize allows. The covered stepsizes are themselves small: SG stays stable far above "
             f"them (previous section).")
    s = {bc: dim[("Q10", bc)][0] for bc in (0.25, 0.5, 0.75, 1.5, 3.0)}
    L.append(f"- Theorem 4.7 on Q10: slopes of log gap vs log k over the last decade: " +
             ", ".join(f"{s[bc]:.2f} at beta c mu = {bc:g}" for bc in s) +
             f". The O(1/k) rate needs beta c > 1/2 on a quadratic (the deterministic part decays as "
             f"k^(-2 beta c)): the theorem's beta > 1/(c mu) is sufficient, not necessary; at beta c mu = 0.25 "
             f"the predicted rate is k^(-2 beta c) = k^(-1/2) (the measured slope approaches it from above as the "
             f"faster modes die out). Bound / exact at the last k: " +
             ", ".join(f"{dim[('Q10', bc)][2][-1] / dim[('Q10', bc)][1][-1]:.0f}x (beta c mu = {bc:g}; the two "
                       f"terms of nu: beta^2 L M / (2 (beta c mu - 1)) = {dim[('Q10', bc)][3][0]:.4g}, "
                       f"(gamma + 1)(F(w_1) - F*) = {dim[('Q10', bc)][3][1]:.4g})" for bc in (1.5, 3.0)) +
             ". The first term blows up as beta c mu -> 1 while the true (gamma + k) x gap does not (it is "
             "finite down to beta c = 1/2); the second, forced up by gamma >= beta L M_G / mu - 1 "
             "(alpha_1 <= mu/(L M_G)), dominates here.")
    sl = {bc: dim[("MNIST-LS", bc)][0] for bc in (0.25, 0.75, 2.0)}
    L.append("- Theorem 4.7 on MNIST-LS: slopes " + ", ".join(f"{sl[bc]:.2f} (beta c mu = {bc:g})" for bc in sl) +
             f" over k in [{(dim[('MNIST-LS', 2.0)][1].size - 1) // 10}, {dim[('MNIST-LS', 2.0)][1].size}]. A slope "
             f"near -1 is O(1/k). Below beta c = 1 the transient from w_1 decays like k^(-2 beta c): at beta c mu = "
             f"0.75 (k^-1.5) it still dominates the 1/k noise term at this k, and at 0.25 the slope heads for -0.5. "
             f"Bound / exact at the last k "
             f"{dim[('MNIST-LS', 2.0)][2][-1] / dim[('MNIST-LS', 2.0)][1][-1]:.0f}x (beta c mu = 2, nu = "
             f"max({dim[('MNIST-LS', 2.0)][3][0]:.4g}, {dim[('MNIST-LS', 2.0)][3][1]:.4g}): gamma = "
             f"beta / alpha_1 - 1 is ~900, so the initial-gap term dominates).")
    for name in ("Q10", "MNIST-LS"):
        ex, b = halv[(name, "bound-driven halving")]
        exf, bf = halv[(name, "fixed alpha_1")]
        exd, bd = halv[(name, "beta/(gamma+k), beta c mu = 2")]
        K = ex.size - 1
        L.append(f"- Halving on {name}: at k = {K + 1} the exact gap is {ex[-1]:.3g} (bound {b[-1]:.3g}) against "
                 f"{exf[-1]:.3g} at the fixed alpha_1 and {exd[-1]:.3g} for beta/(gamma+k); k x gap "
                 f"{K * ex[K // 10] / 10:.3g} at k = {K // 10} and {(K + 1) * ex[-1]:.3g} at k = {K + 1}, bound's "
                 f"k x bound {K * b[K // 10] / 10:.3g} and {(K + 1) * b[-1]:.3g}: k x gap stays bounded (O(1/k)), "
                 f"while at the fixed alpha_1 it grows like k ({(K + 1) * exf[-1]:.3g} at k = {K + 1}).")
    exo, _ = halv[("Q10", "oracle halving (2 F_alpha of the bound)")]
    ext_, _ = halv[("Q10", "oracle halving (2 x true floor)")]
    L.append(f"- Halving driven by the true expectation on Q10: with the bound's threshold 2 F_alpha it halves long "
             f"before the true floor (which is ~15x lower) and ends at {exo[-1]:.3g} (k x gap "
             f"{exo.size * exo[-1]:.3g}); with twice the true floor it ends at {ext_[-1]:.3g} (k x gap "
             f"{ext_.size * ext_[-1]:.3g}), the best schedule here. The bound-driven schedule sits between because "
             f"its bound contracts like (1 - alpha c) instead of (1 - alpha c)^2, so it waits longer in each phase.")
    for name, (ex_m, ex_s, floors) in mb.items():
        L.append(f"- Minibatch on {name}: stationary gaps {ex_m[-1]:.4g} (n_mb = 8 at alpha) and {ex_s[-1]:.4g} "
                 f"(single at alpha / 8), ratio {ex_m[-1] / ex_s[-1]:.3f}; the bounds' floors {floors[0]:.4g} and "
                 f"{floors[1]:.4g} (the slides' 'same' is a statement about the bounds; the true floors differ by "
                 f"the factor (2 - alpha lam/n_mb)/(2 - alpha lam) that the bound drops, largest at large alpha).")
    for row in ext:
        name, a, e_a, e_h, extra = row[:5]
        L.append(f"- Extrapolation on {name}, alpha = {a:.3g}: F_alpha - F* = {e_a:.3e}, F_(alpha/2) - F* = "
                 f"{e_h:.3e}, 2F_(alpha/2) - F_alpha - F* = {extra:.2e}"
                 + (f" (MC {row[5]:.1e} +- {row[6]:.1e})" if row[5] is not None else "") + ".")
    L.append("")
    return L


def slides_vs_paper():
    return ["## Where the slides' text (seed 003 OCR) differs from the paper", "",
            "Checked against Bottou, Curtis, Nocedal, SIAM Review 60(2), 2018, section 4; tinynet.theory.sg "
            "follows the paper.", "",
            "- Theorems 4.6 and 4.7 ((4.13), (4.14), (4.18)-(4.20)), lemma 4.4 and assumption 4.3 read as in the "
            "paper. The second copy of theorem 4.7 on the annotated slide is OCR-garbled ('Same maximal stepsize "
            "(as in 4.1, 4.3, and 4.5 (with r_inf = r_*)...)'); the first copy is the statement used.",
            "- Halving slide: 'Divide alpha by 2 whenever E[F(w_k)] reaches alpha L M / c mu' omits '- F*': "
            "the paper's protocol halves when the expected *gap* E[F(w_k) - F*] reaches 2 F_alpha = alpha L M / "
            "(c mu) (twice the noise floor of (4.14)); with that reading the 1/3 in (1 - alpha c mu)^tau = 1/3 "
            "follows: the phase starts at 2 F_{2 alpha} = 4 F_alpha, i.e. 3 F_alpha above the new floor, and "
            "ends at F_alpha above it.",
            "- Annotated theorem 4.8 slide: (4.26a) is printed without its K alpha L M / mu term (the clean "
            "copy on the previous slide and the paper have it). Not used here (nonconvex).",
            "- 'Batch versus Stochastic' slide: 'Stochastic algorithm: T(n, eps) ~ 1/n' should read 1/eps (the "
            "table below it on the same slide has 1/eps).",
            "- Minibatch slide: states only M -> M / n_mb; the mean of n_mb independent draws also divides M_V "
            "by n_mb, so M_G = mu_G^2 + M_V / n_mb and the largest covered stepsize grows with n_mb (used here "
            "for MNIST-LS, where M_V > 0).",
            "- 'Condition numbers' slide: 'with mu = 1, M_V = 0, the optimal stepsize is alpha = 1/L' is (4.13) "
            "with M_G = mu_G^2 = 1 (it assumes mu_G = 1 as well).", ""]


if __name__ == "__main__":
    main()

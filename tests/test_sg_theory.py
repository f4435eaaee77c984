"""Seed 003's SG theory (tinynet.theory): each bound formula on a case worked by
hand, the problems' constants against their definitions, the exact expected
gaps against brute-force enumeration of every sampling path, and SG runs
against theorem 4.6's bound (below it, and not vacuous)."""
import itertools
import math

import numpy as np
import pytest

from tinynet.theory import sg
from tinynet.theory.problems import LeastSquares, NoisyQuadratic, simulate


# ------------------------------------------------------------ formulas by hand
def test_noise_floor_by_hand():
    # alpha L M / (2 c mu) = 0.1 * 2 * 3 / (2 * 0.5 * 1) = 0.6; minibatch of 3: 0.2
    assert sg.noise_floor(0.1, L=2.0, c=0.5, mu=1.0, M=3.0) == pytest.approx(0.6, rel=1e-15)
    assert sg.noise_floor(0.1, L=2.0, c=0.5, mu=1.0, M=3.0, n_mb=3) == pytest.approx(0.2, rel=1e-15)


def test_fixed_stepsize_bound_by_hand():
    # (4.14): 0.6 + (1 - 0.1 * 0.5)^(3 - 1) (5.6 - 0.6) = 0.6 + 0.9025 * 5 = 5.1125
    b = sg.fixed_stepsize_bound(np.array([1, 3]), 0.1, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=5.6)
    assert b == pytest.approx([5.6, 5.1125], rel=1e-14)


def test_max_stepsize_and_check():
    assert sg.max_fixed_stepsize(L=2.0, mu=0.5, M_G=4.0) == pytest.approx(0.0625, rel=1e-15)  # mu/(L M_G)
    assert sg.M_G(3.0, 2.0) == 7.0  # M_V + mu_G^2
    sg.check_stepsize(0.0625, L=2.0, mu=0.5, M_G=4.0)
    with pytest.raises(ValueError, match="4.13"):
        sg.check_stepsize(0.07, L=2.0, mu=0.5, M_G=4.0)
    with pytest.raises(ValueError, match="4.13"):
        sg.fixed_stepsize_bound(2, 0.07, L=2.0, c=0.5, mu=0.5, M=1.0, gap1=1.0, M_G=4.0)


def test_diminishing_nu_by_hand():
    # beta c mu = 4 * 0.5 = 2: beta^2 L M / (2 (beta c mu - 1)) = 16 * 2 * 3 / 2 = 48; (gamma + 1) gap1 = 2
    assert sg.diminishing_nu(4.0, 1.0, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=1.0) == pytest.approx(48.0, rel=1e-15)
    # gap1 = 30: (gamma + 1) gap1 = 60 wins the max
    assert sg.diminishing_nu(4.0, 1.0, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=30.0) == pytest.approx(60.0, rel=1e-15)
    # (4.19) at k = 5: 48 / (1 + 5) = 8
    assert sg.diminishing_bound(5, 4.0, 1.0, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=1.0) == pytest.approx(8.0, rel=1e-15)
    assert sg.diminishing_stepsizes(3, 2.0, 1.0) == pytest.approx([1.0, 2 / 3, 0.5], rel=1e-15)


def test_diminishing_needs_beta_above_one_over_c_mu():
    with pytest.raises(ValueError, match="beta > 1/\\(c mu\\)"):
        sg.diminishing_nu(2.0, 1.0, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=1.0)  # beta c mu = 1
    with pytest.raises(ValueError, match="4.13"):  # alpha_1 = 4 / 2 = 2 > mu/(L M_G) = 0.5
        sg.diminishing_bound(2, 4.0, 1.0, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=1.0, M_G=1.0)


def test_recursion_is_the_closed_forms():
    # fixed alpha: iterating (4.15) gives (4.14) exactly
    b = sg.recursion_bound(np.full(50, 0.1), L=2.0, c=0.5, mu=1.0, M=3.0, gap1=5.6)
    closed = sg.fixed_stepsize_bound(np.arange(1, 52), 0.1, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=5.6)
    np.testing.assert_allclose(b, closed, rtol=1e-13)
    # beta/(gamma+k): the iterated (4.21) stays below nu/(gamma+k) (the induction of theorem 4.7)
    beta, gamma = 4.0, 3.0
    b = sg.recursion_bound(sg.diminishing_stepsizes(2000, beta, gamma), L=2.0, c=0.5, mu=1.0, M=3.0, gap1=7.0)
    nu = sg.diminishing_bound(np.arange(1, 2002), beta, gamma, L=2.0, c=0.5, mu=1.0, M=3.0, gap1=7.0)
    assert np.all(b <= nu * (1 + 1e-12))
    assert b[-1] > 0.5 * nu[-1]  # and the bound is of the recursion's order, not vacuous


def test_halving_by_hand():
    assert sg.halving_phase_length(0.1, c=0.5, mu=1.0) == pytest.approx(math.log(3) / -math.log(0.95), rel=1e-14)
    assert sg.halving_phase_length(0.1, c=0.5, mu=1.0) == pytest.approx(21.4183, abs=1e-4)
    # L = M = mu = 1, c = 0.5: F_alpha = alpha. From gap1 = 4 at alpha = 1:
    # b = 4, 2.5, 1.75 (<= 2 F_1 = 2: halve at iteration 3), then at alpha 1/2 (2 F = 1):
    # 1.4375, 1.203125, 1.02734375, 0.8955078125 (<= 1: halve at iteration 7)
    alphas, b, switches = sg.halving_schedule(8, 1.0, L=1.0, c=0.5, mu=1.0, M=1.0, gap1=4.0)
    assert switches == [3, 7]
    np.testing.assert_array_equal(alphas, [1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(b[:7], [4, 2.5, 1.75, 1.4375, 1.203125, 1.02734375, 0.8955078125], rtol=1e-15)


def test_minibatch_and_extrapolation_by_hand():
    assert sg.minibatch_constants(4.0, 6.0, 1.0, 2) == (2.0, 3.0, 4.0)  # M/2, M_V/2, 1 + M_V/2
    assert sg.extrapolate_F_star(1.3, 1.15) == pytest.approx(1.0, rel=1e-14)
    F_star, C = 0.7, 2.5  # exact when F_a - F* is linear in a
    assert sg.extrapolate_F_star(F_star + C * 0.2, F_star + C * 0.1) == pytest.approx(F_star, rel=1e-14)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="integers >= 1"):
        sg.fixed_stepsize_bound(0, 0.1, L=1.0, c=0.5, mu=1.0, M=1.0, gap1=1.0)
    with pytest.raises(ValueError, match="alpha must be"):
        sg.noise_floor(-0.1, L=1.0, c=0.5, mu=1.0, M=1.0)


# ------------------------------------------------------------ the noisy quadratic
def test_quadratic_constants_equal_their_definitions():
    q = NoisyQuadratic(6, kappa=10.0, L=2.0, noise_var=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], seed=3)
    ev, V = np.linalg.eigh(q.A)
    C = q.constants()
    assert C["L"] == pytest.approx(ev[-1], rel=1e-12) and C["c"] == pytest.approx(ev[0], rel=1e-12)
    assert C["L"] / C["c"] == pytest.approx(10.0, rel=1e-12)
    rng = np.random.default_rng(0)
    w, wb = rng.standard_normal((2, 200, 6))
    # (4.1): ||grad F(w) - grad F(wb)|| <= L ||w - wb||, with equality along the top eigenvector
    ratio = np.linalg.norm(q.grad(w) - q.grad(wb), axis=1) / np.linalg.norm(w - wb, axis=1)
    assert ratio.max() <= C["L"] * (1 + 1e-12)
    assert np.linalg.norm(q.grad(V[:, -1])) == pytest.approx(C["L"], rel=1e-12)
    # (4.11): F(wb) >= F(w) + grad F(w)^T (wb - w) + c/2 ||wb - w||^2, equality along the bottom one
    slack = q.F(wb) - q.F(w) - np.einsum("sd,sd->s", q.grad(w), wb - w) - 0.5 * C["c"] * np.sum((wb - w) ** 2, 1)
    assert slack.min() >= -1e-12
    e = V[:, 0]
    assert q.F(2 * e) - q.F(e) - q.grad(e) @ e - 0.5 * C["c"] == pytest.approx(0.0, abs=1e-12)
    # (4.7), (4.8): E[g] = grad F (mu = mu_G = 1), V[g] = tr Sigma = M, M_V = 0; minibatch of 4: M / 4
    assert np.trace(q.Sigma) == pytest.approx(C["M"], rel=1e-12)
    w0 = rng.standard_normal(6)
    for n_mb in (1, 4):
        G = q.stoch_grad(np.tile(w0, (40000, 1)), rng, n_mb)
        np.testing.assert_allclose(G.mean(0), q.grad(w0), atol=5 * np.sqrt(q.s.max() / n_mb / 40000))
        var = np.sum((G - q.grad(w0)) ** 2, axis=1)
        assert abs(var.mean() - C["M"] / n_mb) < 5 * var.std() / np.sqrt(40000)


def test_quadratic_expected_gap_matches_sampling_and_fixed_point():
    q = NoisyQuadratic(4, kappa=5.0, noise_var=0.2, seed=1)
    w1 = np.array([3.0, -1.0, 2.0, 0.5])
    alphas = np.full(40, 0.5)
    ex = q.expected_gap(w1, alphas, n_mb=2)
    g = simulate(q, w1, alphas, 4000, seed=5, n_mb=2)
    se = g.std(axis=1, ddof=1) / np.sqrt(4000)
    assert np.all(np.abs(g.mean(axis=1) - ex)[1:] <= 4.5 * se[1:])
    assert q.expected_gap(w1, np.full(3000, 0.5), n_mb=2)[-1] == pytest.approx(q.stationary_gap(0.5, 2), rel=1e-12)


def test_tight_case_bound_equals_the_measured_gap():
    """L = c and alpha = mu/(L M_G) = 1/L: every inequality in the proof of theorem
    4.6 is an equality, so the measured mean gap must equal the bound, not only stay
    below it: a wrong constant in (4.14) fails this test."""
    q = NoisyQuadratic(5, kappa=1.0, L=2.0, noise_var=0.3, seed=0)
    C = q.constants()
    w1 = np.full(5, 1.5)
    K, S = 8, 4000
    alpha = sg.max_fixed_stepsize(C["L"], C["mu"], C["M_G"])
    g = simulate(q, w1, np.full(K, alpha), S, seed=11)
    b = sg.fixed_stepsize_bound(np.arange(1, K + 2), alpha, C["L"], C["c"], C["mu"], C["M"], float(q.gap(w1)),
                                M_G=C["M_G"])
    mean, se = g.mean(axis=1), g.std(axis=1, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(mean[1:] - b[1:]) <= 4.5 * se[1:])  # ~ 3% standard errors
    assert b[-1] == pytest.approx(sg.noise_floor(alpha, C["L"], C["c"], C["mu"], C["M"]), rel=1e-12)


def test_measured_gap_below_the_bound_and_bound_not_vacuous():
    """Q with L/c = 10, alpha = 1/(4 L): the SG mean stays below (4.14) (margin 4.5
    s.e.), and at the noise floor the bound is within K = 2 L/c of the
    measurement: the exact floor is sum_i alpha s / (2 (2 - alpha lam_i)), the bound
    alpha L M / (2 c), so their ratio lies in [L/c, 2 L/c]."""
    kappa = 10.0
    q = NoisyQuadratic(5, kappa=kappa, L=1.0, noise_var=0.2, seed=2)
    C = q.constants()
    w1 = np.array([4.0, -3.0, 2.0, 1.0, -2.0])
    alpha, K, S = 0.25, 400, 1500
    rec = np.unique(np.geomspace(1, K + 1, 30).astype(int))
    g = simulate(q, w1, np.full(K, alpha), S, seed=4, record=rec)
    b = sg.fixed_stepsize_bound(rec, alpha, C["L"], C["c"], C["mu"], C["M"], float(q.gap(w1)), M_G=C["M_G"])
    mean, se = g.mean(axis=1), g.std(axis=1, ddof=1) / np.sqrt(S)
    assert np.all(mean <= b * (1 + 1e-12) + 4.5 * se)
    tail = slice(-5, None)  # the last recorded k: stationary (alpha c K = 10)
    floor_measured = g[tail].mean()
    ratio = sg.noise_floor(alpha, C["L"], C["c"], C["mu"], C["M"]) / floor_measured
    assert kappa * 0.9 <= ratio <= 2 * kappa


# ------------------------------------------------------------ least squares on a finite sum
@pytest.fixture(scope="module")
def tiny_ls():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((5, 3)) * np.array([1.0, 0.6, 0.3])
    y = rng.standard_normal(5)
    return LeastSquares(X, y, lam=0.1)


def per_example_grads(ls, w):
    """grad f_i(w) = x_i (x_i^T w - y_i) + lam w, from the definition, (n, d)."""
    return ls.X * (ls.X @ w - ls.y)[:, None] + ls.lam * w


def test_ls_constants_equal_their_definitions(tiny_ls):
    ls = tiny_ls
    rng = np.random.default_rng(1)
    for w in rng.standard_normal((5, 3)) * 3:
        G = per_example_grads(ls, w)
        np.testing.assert_allclose(ls.grad(w), G.mean(0), rtol=1e-12, atol=1e-13)
        assert ls.variance(w) == pytest.approx(np.mean(np.sum((G - G.mean(0)) ** 2, axis=1)), rel=1e-12)
        assert ls.variance(w, n_mb=3) == pytest.approx(ls.variance(w) / 3, rel=1e-14)
        assert ls.F(w) - ls.F_star == pytest.approx(ls.gap(w), rel=1e-10, abs=1e-13)
    # Hessian column by column from gradient differences (exact for a quadratic) -> L, c
    Hd = np.stack([(per_example_grads(ls, e).mean(0) - per_example_grads(ls, 0 * e).mean(0)) for e in np.eye(3)], 1)
    ev = np.linalg.eigvalsh((Hd + Hd.T) / 2)
    assert (ls.L, ls.c) == pytest.approx((ev[-1], ev[0]), rel=1e-12)
    np.testing.assert_allclose(ls.grad(ls.w_star), 0, atol=1e-13)


def test_ls_smallest_M_is_exact(tiny_ls):
    ls = tiny_ls
    M_V = 1.5 * ls.smallest_M_V()
    M = ls.smallest_M(M_V)
    assert M >= ls.V_star
    rng = np.random.default_rng(2)
    W = ls.w_star + rng.standard_normal((500, 3)) * 5
    gn2 = np.sum(ls.grad(W) ** 2, axis=1)
    assert np.all(ls.variance(W) <= M + M_V * gn2 + 1e-12)  # (4.8) for all these w
    w = ls.worst_point(M_V)  # ... with equality here, so no smaller M works
    G = per_example_grads(ls, w)
    v = np.mean(np.sum((G - G.mean(0)) ** 2, axis=1))
    assert v == pytest.approx(M + M_V * np.sum(ls.grad(w) ** 2), rel=1e-9)
    with pytest.raises(ValueError, match="no finite M"):
        ls.smallest_M(0.9 * ls.smallest_M_V())
    C = ls.constants(0.5 * ls.sup_stepsize())
    assert sg.max_fixed_stepsize(C["L"], C["mu"], C["M_G"]) == pytest.approx(0.5 * ls.sup_stepsize(), rel=1e-12)
    with pytest.raises(ValueError, match="does not cover"):
        ls.constants(1.01 * ls.sup_stepsize())


def test_ls_expected_gap_equals_enumeration_of_all_paths(tiny_ls):
    ls = tiny_ls
    n = ls.n
    w1 = ls.w_star + np.array([1.0, -2.0, 0.5])

    def brute(alphas, n_mb):
        total = np.zeros(len(alphas) + 1)
        steps = list(itertools.product(range(n), repeat=n_mb))
        for path in itertools.product(steps, repeat=len(alphas)):
            w = w1.copy()
            total[0] += ls.gap(w)
            for k, (a, batch) in enumerate(zip(alphas, path)):
                w = w - a * per_example_grads(ls, w)[list(batch)].mean(0)
                total[k + 1] += ls.gap(w)
        return total / len(steps) ** len(alphas)

    alphas = np.array([0.3, 0.2, 0.25])
    np.testing.assert_allclose(ls.expected_gap(w1, alphas), brute(alphas, 1), rtol=1e-12)
    np.testing.assert_allclose(ls.expected_gap(w1, alphas[:2], n_mb=2), brute(alphas[:2], 2), rtol=1e-12)
    a = 0.3
    assert ls.is_stable(a)
    assert ls.expected_gap(w1, np.full(2000, a))[-1] == pytest.approx(ls.stationary_gap(a), rel=1e-10)
    a_div = ls.divergence_stepsize()  # beyond it the exact second moment grows without bound
    assert ls.expected_gap(w1, np.full(800, 1.2 * a_div))[-1] > 1e3 * ls.expected_gap(w1, np.full(800, 0.8 * a_div))[-1]
    with pytest.raises(ValueError, match="diverges"):
        ls.stationary_gap(1.2 * a_div)


def test_ls_sgd_below_the_bound(tiny_ls):
    ls = tiny_ls
    alpha = 0.9 * ls.sup_stepsize()
    C = ls.constants(alpha)
    w1 = ls.w_star + np.array([2.0, -1.0, 1.0])
    K = 300
    rec = np.array([1, 2, 5, 20, 100, K + 1])
    g = simulate(ls, w1, np.full(K, alpha), 2000, seed=0, record=rec)
    b = sg.fixed_stepsize_bound(rec, alpha, C["L"], C["c"], C["mu"], C["M"], float(ls.gap(w1)), M_G=C["M_G"])
    mean, se = g.mean(axis=1), g.std(axis=1, ddof=1) / np.sqrt(2000)
    np.testing.assert_allclose(mean[1:], ls.expected_gap(w1, np.full(K, alpha))[rec[1:] - 1], rtol=0,
                               atol=float(4.5 * se[1:].max()))
    assert np.all(mean <= b * (1 + 1e-12) + 4.5 * se)


def test_simulate_is_seeded_and_checks_input():
    q = NoisyQuadratic(3, kappa=2.0, seed=0)
    a = simulate(q, np.ones(3), np.full(10, 0.1), 5, seed=9)
    np.testing.assert_array_equal(a, simulate(q, np.ones(3), np.full(10, 0.1), 5, seed=9))
    assert not np.array_equal(a, simulate(q, np.ones(3), np.full(10, 0.1), 5, seed=8))
    with pytest.raises(ValueError, match="record"):
        simulate(q, np.ones(3), np.full(10, 0.1), 5, record=[0, 3])
    with pytest.raises(ValueError, match="shape"):
        q.F(np.ones(4))


@pytest.mark.slow
def test_mnist_least_squares_constants():
    ls = LeastSquares.from_mnist(d=5, lam=1e-2, n=2000)
    assert ls.L == pytest.approx(1.0 + 1e-2, rel=1e-10)  # features scaled to lambda_max(X^T X / n) = 1
    np.testing.assert_allclose(ls.X.mean(0), 0, atol=1e-12)
    w = ls.worst_point(2 * ls.smallest_M_V())
    G = per_example_grads(ls, w)
    v = np.mean(np.sum((G - G.mean(0)) ** 2, axis=1))
    assert v == pytest.approx(ls.smallest_M(2 * ls.smallest_M_V()) + 2 * ls.smallest_M_V() * np.sum(ls.grad(w) ** 2),
                              rel=1e-9)

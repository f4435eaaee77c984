"""The strongly convex SG bounds of seed 003 (slides "Part II - The theory of SG"
= Bottou, Curtis, Nocedal 2018, section 4), one function per formula.

Symbols as in the seed (assumptions 4.1, 4.3, 4.5):
  L      Lipschitz constant of grad F (4.1)                 [F is L-smooth]
  c      strong-convexity constant (4.11)                   [c <= L]
  mu     sufficient descent: grad F^T E[g] >= mu ||grad F||^2          (4.7a)
  mu_G   ||E[g]|| <= mu_G ||grad F||                                   (4.7b)
  M, M_V V[g] <= M + M_V ||grad F||^2, V = E||g - E g||^2 (trace)      (4.8)
  M_G    := M_V + mu_G^2, so E||g||^2 <= M + M_G ||grad F||^2          (4.9)
  gap1   F(w_1) - F*
  k      iteration index, k = 1 for the initial iterate w_1 (algorithm 4.1)

Everything here is plain float / numpy arithmetic; bad input gives a one-line
ValueError. Where the seed's OCR differs from the published paper, the paper's
statement is used (listed in benchmarks/results/sg_theory.md).
"""
import math

import numpy as np


def _positive(**kw):
    for name, v in kw.items():
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _nonnegative(**kw):
    for name, v in kw.items():
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def _iterations(k):
    k = np.asarray(k, dtype=np.float64)
    if np.any(k < 1) or np.any(k != np.floor(k)):
        raise ValueError("iteration indices k must be integers >= 1 (w_1 is the initial iterate)")
    return k


def M_G(M_V, mu_G):
    """M_G := M_V + mu_G^2 (after (4.9)): E||g||^2 <= M + M_G ||grad F||^2."""
    _nonnegative(M_V=M_V)
    _positive(mu_G=mu_G)
    return M_V + mu_G ** 2


def max_fixed_stepsize(L, mu, M_G):
    """Largest stepsize covered by theorems 4.6 / 4.8: alpha_bar <= mu / (L M_G), (4.13) = (4.25)."""
    _positive(L=L, mu=mu, M_G=M_G)
    return mu / (L * M_G)


def check_stepsize(alpha, L, mu, M_G):
    """Raise ValueError unless 0 < alpha <= mu / (L M_G) (condition (4.13))."""
    _positive(alpha=alpha)
    amax = max_fixed_stepsize(L, mu, M_G)
    if alpha > amax * (1 + 1e-12):
        raise ValueError(f"stepsize {alpha:.6g} exceeds mu/(L M_G) = {amax:.6g}: (4.13) fails, the bound does not apply")


def noise_floor(alpha, L, c, mu, M, n_mb=1):
    """The limit of theorem 4.6's bound, F_alpha := alpha L M / (2 c mu), (4.14);
    with minibatches of n_mb examples M becomes M / n_mb (slide "Mini batching")."""
    _positive(alpha=alpha, L=L, c=c, mu=mu, n_mb=n_mb)
    _nonnegative(M=M)
    return alpha * L * M / (2.0 * c * mu * n_mb)


def fixed_stepsize_bound(k, alpha, L, c, mu, M, gap1, M_G=None, n_mb=1):
    """Theorem 4.6, (4.14): for a fixed stepsize alpha_bar <= mu/(L M_G),
        E[F(w_k) - F*] <= F_a + (1 - alpha c mu)^(k-1) (F(w_1) - F* - F_a),
    F_a = alpha L M / (2 c mu n_mb) (the noise floor; n_mb = 1 is the theorem,
    n_mb > 1 the slides' minibatch version). k: int or array of ints >= 1.
    With M_G given, condition (4.13) is checked."""
    k = _iterations(k)
    _nonnegative(gap1=gap1)
    if M_G is not None:
        check_stepsize(alpha, L, mu, M_G)
    Fa = noise_floor(alpha, L, c, mu, M, n_mb)
    return Fa + (1.0 - alpha * c * mu) ** (k - 1) * (gap1 - Fa)


def recursion_bound(alphas, L, c, mu, M, gap1, M_G=None, n_mb=1):
    """The one-step bound behind theorems 4.6 and 4.7, (4.21) (with (4.15) as
    its fixed-alpha case), iterated along any stepsize sequence:
        b_1 = F(w_1) - F*,   b_{k+1} = (1 - alpha_k c mu) b_k + alpha_k^2 L M / (2 n_mb).
    It bounds E[F(w_k) - F*] whenever every alpha_k <= mu/(L M_G) (checked
    when M_G is given). alphas: alpha_1 .. alpha_K; returns b_1 .. b_{K+1}."""
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or np.any(alphas <= 0):
        raise ValueError("alphas must be a 1-D array of stepsizes > 0")
    _positive(L=L, c=c, mu=mu, n_mb=n_mb)
    _nonnegative(M=M, gap1=gap1)
    if M_G is not None and alphas.size:
        check_stepsize(float(alphas.max()), L, mu, M_G)
    b = np.empty(alphas.size + 1)
    b[0] = gap1
    for i, a in enumerate(alphas):
        b[i + 1] = (1.0 - a * c * mu) * b[i] + 0.5 * a * a * L * M / n_mb
    return b


def diminishing_stepsizes(K, beta, gamma):
    """alpha_k = beta / (gamma + k), k = 1 .. K, the schedule of theorem 4.7, (4.18)."""
    _positive(beta=beta, gamma=gamma)
    return beta / (gamma + np.arange(1, int(K) + 1, dtype=np.float64))


def diminishing_nu(beta, gamma, L, c, mu, M, gap1):
    """Theorem 4.7, (4.20): nu = max(beta^2 L M / (2 (beta c mu - 1)), (gamma + 1)(F(w_1) - F*)).
    Requires beta > 1 / (c mu) (4.18)."""
    _positive(beta=beta, gamma=gamma, L=L, c=c, mu=mu)
    _nonnegative(M=M, gap1=gap1)
    if beta * c * mu <= 1.0:
        raise ValueError(f"theorem 4.7 needs beta > 1/(c mu) = {1.0 / (c * mu):.6g}, got beta = {beta:.6g}")
    return max(beta * beta * L * M / (2.0 * (beta * c * mu - 1.0)), (gamma + 1.0) * gap1)


def diminishing_bound(k, beta, gamma, L, c, mu, M, gap1, M_G=None):
    """Theorem 4.7, (4.19): E[F(w_k) - F*] <= nu / (gamma + k) for alpha_k = beta/(gamma+k)
    with beta > 1/(c mu), gamma > 0 and alpha_1 = beta/(gamma+1) <= mu/(L M_G)
    (checked when M_G is given); nu from (4.20)."""
    k = _iterations(k)
    if M_G is not None:
        check_stepsize(beta / (gamma + 1.0), L, mu, M_G)
    return diminishing_nu(beta, gamma, L, c, mu, M, gap1) / (gamma + k)


def halving_phase_length(alpha, c, mu):
    """Slide "Diminishing the stepsizes faster": once alpha is halved at
    E[F - F*] = 2 F_{2 alpha} = 4 F_alpha, the bound (4.15) reaches 2 F_alpha
    when (1 - alpha c mu)^tau = 1/3, tau = log 3 / -log(1 - alpha c mu) ~ log 3 / (alpha c mu)."""
    _positive(alpha=alpha, c=c, mu=mu)
    if alpha * c * mu >= 1.0:
        raise ValueError("alpha c mu must be < 1 (see (4.16))")
    return math.log(3.0) / -math.log1p(-alpha * c * mu)


def halving_schedule(K, alpha1, L, c, mu, M, gap1, M_G=None, n_mb=1):
    """The halving protocol (slide "Diminishing the stepsizes faster"; paper
    section 4.2): run alpha_r, and divide it by 2 as soon as the expected gap
    reaches 2 F_{alpha_r} = alpha_r L M / (c mu). The expected gap is replaced by
    its bound (4.21), so the schedule is computable in advance and the bound
    holds along it. Returns (alphas (K,), bound b_1 .. b_{K+1}, switch
    iterations): alphas[k-1] is the stepsize of iteration k."""
    _positive(alpha1=alpha1)
    if M_G is not None:
        check_stepsize(alpha1, L, mu, M_G)
    alphas = np.empty(int(K))
    b = np.empty(int(K) + 1)
    b[0] = gap1
    a = alpha1
    switches = []
    for i in range(int(K)):
        if b[i] <= 2.0 * noise_floor(a, L, c, mu, M, n_mb):
            a = a / 2.0
            switches.append(i + 1)
        alphas[i] = a
        b[i + 1] = (1.0 - a * c * mu) * b[i] + 0.5 * a * a * L * M / n_mb
    return alphas, b, switches


def minibatch_constants(M, M_V, mu_G, n_mb):
    """The mean of n_mb independent stochastic gradients has variance V/n_mb
    (slide "Mini batching": noise M -> M / n_mb), so (4.8) holds with M/n_mb and
    M_V/n_mb, and M_G = mu_G^2 + M_V/n_mb (the slides state only M -> M/n_mb).
    Returns (M', M_V', M_G')."""
    _nonnegative(M=M, M_V=M_V)
    _positive(mu_G=mu_G, n_mb=n_mb)
    return M / n_mb, M_V / n_mb, mu_G ** 2 + M_V / n_mb


def extrapolate_F_star(F_alpha, F_half_alpha):
    """Slide "Diminishing the stepsizes": F* ~ 2 F_{alpha/2} - F_alpha, where F_a is
    the stationary E[F(w_k)] at stepsize a. Exact when F_a - F* is linear in a
    (as the floor of (4.14) is); the error is O(alpha^2) when it is smooth in a."""
    return 2.0 * F_half_alpha - F_alpha

"""Strongly convex problems whose SG constants (seed 003, assumptions 4.1, 4.3,
4.5) are known exactly, each with an SG simulator vectorized over seeds and its
exact expected optimality gap E[F(w_k) - F*] (a linear recursion on the first
two moments of w_k, no sampling).

Shapes: a batch of iterates W is (S, d), one seed per row; u = w - w*.

NoisyQuadratic   F(w) = 1/2 w^T A w, g(w, xi) = A w + eps, eps ~ N(0, Sigma):
                 L = lambda_max(A), c = lambda_min(A), mu = mu_G = 1,
                 M = tr Sigma, M_V = 0, M_G = 1, w* = 0, F* = 0.
LeastSquares     F(w) = 1/(2n) ||X w - y||^2 + lam/2 ||w||^2 = (1/n) sum_i f_i(w),
                 g(w, xi) = grad f_xi(w) for xi uniform on {1..n} (with
                 replacement; a minibatch averages n_mb such draws):
                 H = X^T X / n + lam I, L = lambda_max(H), c = lambda_min(H),
                 mu = mu_G = 1 (g is unbiased), and the variance is the
                 exact quadratic V(w) = u^T S u + 2 q^T u + V* (see `variance`),
                 so the pairs (M, M_V) of (4.8) are known exactly: for each
                 M_V > lambda_max(H^-1 S H^-1) the smallest M is
                 V* + q^T (M_V H^2 - S)^-1 q (`smallest_M`).
"""
import numpy as np


def _batch(W, d):
    W = np.asarray(W, dtype=np.float64)
    one = W.ndim == 1
    W = W[None, :] if one else W
    if W.ndim != 2 or W.shape[1] != d:
        raise ValueError(f"iterates must have shape (d,) or (S, d) with d = {d}, got {np.shape(W)}")
    return W, one


def _alphas(alphas):
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or np.any(alphas <= 0):
        raise ValueError("alphas must be a 1-D array of stepsizes > 0 (alpha_1 .. alpha_K)")
    return alphas


class NoisyQuadratic:
    """F(w) = 1/2 w^T A w with A = Q diag(lam) Q^T, lam log-spaced from L/kappa to L
    (condition number kappa), Q a random orthogonal matrix from `seed`; the
    stochastic gradient adds Gaussian noise with covariance Sigma = Q diag(s) Q^T,
    s = noise_var (a scalar for isotropic noise, or d variances along the
    eigenvectors of A, largest eigenvalue last)."""

    def __init__(self, d, kappa, L=1.0, noise_var=1.0, seed=0):
        if int(d) != d or d < 1:
            raise ValueError(f"d must be an integer >= 1, got {d!r}")
        if not kappa >= 1:
            raise ValueError(f"condition number kappa must be >= 1, got {kappa!r}")
        if not L > 0:
            raise ValueError(f"L must be > 0, got {L!r}")
        self.d = d = int(d)
        self.lam = np.geomspace(L / kappa, L, d) if d > 1 else np.array([float(L)])
        s = np.broadcast_to(np.asarray(noise_var, dtype=np.float64), (d,)).copy()
        if np.any(s < 0):
            raise ValueError("noise variances must be >= 0")
        self.s = s
        rng = np.random.default_rng(seed)
        Q, R = np.linalg.qr(rng.standard_normal((d, d)))
        self.Q = Q * np.sign(np.diag(R))
        self.A = (self.Q * self.lam) @ self.Q.T
        self.Sigma = (self.Q * s) @ self.Q.T
        self.L, self.c = float(self.lam.max()), float(self.lam.min())
        self.w_star = np.zeros(d)
        self.F_star = 0.0

    def constants(self, n_mb=1):
        """L, c, mu, mu_G, M, M_V, M_G of assumptions 4.1, 4.3, 4.5 (exact); the noise of a
        minibatch of n_mb draws has covariance Sigma / n_mb."""
        M = float(self.s.sum()) / n_mb
        return dict(L=self.L, c=self.c, mu=1.0, mu_G=1.0, M=M, M_V=0.0, M_G=1.0)

    def F(self, W):
        W, one = _batch(W, self.d)
        f = 0.5 * np.einsum("sd,de,se->s", W, self.A, W)
        return f[0] if one else f

    gap = F

    def grad(self, W):
        W, one = _batch(W, self.d)
        g = W @ self.A
        return g[0] if one else g

    def stoch_grad(self, W, rng, n_mb=1):
        """A w + mean of n_mb independent N(0, Sigma) draws, i.e. one N(0, Sigma / n_mb) draw."""
        W, _ = _batch(W, self.d)
        z = rng.standard_normal(W.shape) * np.sqrt(self.s / n_mb)
        return W @ self.A + z @ self.Q.T

    def expected_gap(self, w1, alphas, n_mb=1):
        """Exact E[F(w_k) - F*], k = 1 .. K+1, for w_{k+1} = w_k - alpha_k g(w_k): in
        the eigenbasis v = Q^T w, E[v_i^2] <- (1 - alpha lam_i)^2 E[v_i^2] + alpha^2 s_i / n_mb."""
        alphas = _alphas(alphas)
        p = (self.Q.T @ np.asarray(w1, dtype=np.float64)) ** 2
        out = np.empty(alphas.size + 1)
        out[0] = 0.5 * self.lam @ p
        for i, a in enumerate(alphas):
            p = (1.0 - a * self.lam) ** 2 * p + a * a * self.s / n_mb
            out[i + 1] = 0.5 * self.lam @ p
        return out

    def stationary_gap(self, alpha, n_mb=1):
        """lim_k E[F(w_k) - F*] at a fixed alpha < 2/L: sum_i alpha s_i / (2 n_mb (2 - alpha lam_i))
        (the fixed point of expected_gap's recursion)."""
        if not 0 < alpha < 2.0 / self.L:
            raise ValueError(f"the expectation is stationary only for 0 < alpha < 2/L = {2.0 / self.L:.6g}")
        return float(np.sum(alpha * self.s / (2.0 * n_mb * (2.0 - alpha * self.lam))))


class LeastSquares:
    """L2-regularized least squares on a finite sum (see the module docstring).
    X (n, d), y (n,), lam > 0."""

    def __init__(self, X, y, lam):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0 (strong convexity), got {lam!r}")
        self.X, self.y, self.lam = X, y, float(lam)
        self.n, self.d = n, d = X.shape
        self.G = X.T @ X / n
        self.H = self.G + self.lam * np.eye(d)
        ev = np.linalg.eigvalsh(self.H)
        self.L, self.c = float(ev[-1]), float(ev[0])
        self.w_star = np.linalg.solve(self.H, X.T @ y / n)
        self.F_star = float(self.F(self.w_star))
        # r_i = grad f_i(w*); grad f_i(w) = C_i u + r_i with C_i = x_i x_i^T + lam I
        self.r = X * (X @ self.w_star - y)[:, None] + self.lam * self.w_star
        sq = np.einsum("nd,nd->n", X, X)
        self.S = (X * sq[:, None]).T @ X / n - self.G @ self.G
        self.q = X.T @ np.einsum("nd,nd->n", X, self.r) / n
        self.V_star = float(np.einsum("nd,nd->", self.r, self.r) / n)
        self._K4 = None

    @classmethod
    def from_mnist(cls, d=20, lam=1e-2, n=None, split="train", data_dir=None):
        """The first d principal components of MNIST `split` (centered pixels,
        scores divided by the square root of the top variance, so that
        lambda_max(X^T X / n) = 1), target +1 for digits 5-9 and -1 for 0-4, minus
        its mean (the features are centered, so this is the intercept), on the
        first n images (all by default)."""
        from tinynet.data import load_dataset
        Xp, labels = load_dataset("mnist-labels", split, data_dir)
        if n is not None:
            Xp, labels = Xp[:n], labels[:n]
        Xc = np.asarray(Xp, dtype=np.float64)
        Xc = Xc - Xc.mean(axis=0)
        ev, V = np.linalg.eigh(Xc.T @ Xc / Xc.shape[0])
        V = V[:, ::-1][:, :d]
        Z = Xc @ V / np.sqrt(ev[-1])
        y = np.where(labels >= 5, 1.0, -1.0)
        return cls(Z, y - y.mean(), lam)

    # ---- the constants -------------------------------------------------------
    def variance(self, W, n_mb=1):
        """V[g(w, xi)] = E||g - grad F||^2 = (u^T S u + 2 q^T u + V*) / n_mb, exact:
        grad f_i(w) - grad F(w) = B_i u + r_i with B_i = x_i x_i^T - X^T X / n, so
        S = (1/n) sum B_i^2, q = (1/n) sum B_i r_i, V* = (1/n) sum ||r_i||^2."""
        W, one = _batch(W, self.d)
        U = W - self.w_star
        v = (np.einsum("sd,de,se->s", U, self.S, U) + 2 * U @ self.q + self.V_star) / n_mb
        return v[0] if one else v

    def smallest_M_V(self, n_mb=1):
        """inf of the M_V for which some M makes (4.8) hold for all w:
        lambda_max(H^-1 S H^-1) / n_mb (the quadratic part of V must be dominated)."""
        Hi = np.linalg.inv(self.H)
        return float(np.linalg.eigvalsh(Hi @ self.S @ Hi)[-1]) / n_mb

    def smallest_M(self, M_V, n_mb=1):
        """For M_V > smallest_M_V: the smallest M with V(w) <= M + M_V ||grad F(w)||^2 for
        all w, M = V* + q^T K^-1 q with K = M_V H^2 - S (all over n_mb): the maximum
        over u of V - M_V ||H u||^2 = -u^T K u + 2 q^T u + V*, reached at u = K^-1 q."""
        K = M_V * self.H @ self.H - self.S / n_mb
        try:
            Lc = np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            raise ValueError(f"M_V = {M_V:.6g} is not above lambda_max(H^-1 S H^-1)/n_mb = "
                             f"{self.smallest_M_V(n_mb):.6g}: no finite M satisfies (4.8)") from None
        z = np.linalg.solve(Lc, self.q / n_mb)
        return self.V_star / n_mb + float(z @ z)

    def worst_point(self, M_V, n_mb=1):
        """The w where (4.8) with M = smallest_M(M_V) holds with equality."""
        K = M_V * self.H @ self.H - self.S / n_mb
        return self.w_star + np.linalg.solve(K, self.q / n_mb)

    def sup_stepsize(self, n_mb=1):
        """sup of the stepsizes theorem 4.6 covers: mu/(L M_G) with mu = mu_G = 1 and M_G =
        1 + M_V, M_V just above smallest_M_V (not attained: M -> infinity there)."""
        return 1.0 / (self.L * (1.0 + self.smallest_M_V(n_mb)))

    def constants(self, alpha, n_mb=1):
        """The constants that make theorem 4.6 sharpest at stepsize alpha: mu = mu_G = 1,
        M_V = 1/(alpha L) - 1 (the largest M_V with alpha <= mu/(L M_G), (4.13)) and the
        smallest M for it. Raises ValueError for alpha >= sup_stepsize(n_mb)."""
        M_V = 1.0 / (alpha * self.L) - 1.0
        if not M_V > self.smallest_M_V(n_mb):
            raise ValueError(f"stepsize {alpha:.6g} >= {self.sup_stepsize(n_mb):.6g}, the sup of mu/(L M_G) over "
                             f"valid (M, M_V): theorem 4.6 does not cover it")
        return dict(L=self.L, c=self.c, mu=1.0, mu_G=1.0, M=self.smallest_M(M_V, n_mb), M_V=M_V, M_G=1.0 + M_V)

    # ---- F and SG ------------------------------------------------------------
    def F(self, W):
        W, one = _batch(W, self.d)
        R = W @ self.X.T - self.y
        f = 0.5 * np.mean(R * R, axis=1) + 0.5 * self.lam * np.einsum("sd,sd->s", W, W)
        return f[0] if one else f

    def gap(self, W):
        """F(w) - F* = 1/2 u^T H u (exact: F is quadratic)."""
        W, one = _batch(W, self.d)
        U = W - self.w_star
        g = 0.5 * np.einsum("sd,de,se->s", U, self.H, U)
        return g[0] if one else g

    def grad(self, W):
        W, one = _batch(W, self.d)
        g = (W - self.w_star) @ self.H
        return g[0] if one else g

    def stoch_grad(self, W, rng, n_mb=1):
        """(1/n_mb) sum_j grad f_{i_j}(w), i_j uniform on {0..n-1}, independent, per row of W."""
        W, _ = _batch(W, self.d)
        idx = rng.integers(self.n, size=(W.shape[0], n_mb))
        Xi = self.X[idx]
        res = np.einsum("sbd,sd->sb", Xi, W) - self.y[idx]
        return np.einsum("sbd,sb->sd", Xi, res) / n_mb + self.lam * W

    def _fourth_moment(self):
        if self._K4 is None:
            d = self.d
            K4 = np.zeros((d * d, d * d))
            K3 = np.zeros((d * d, d))
            for s in range(0, self.n, 5000):
                x = self.X[s:s + 5000]
                Z = (x[:, :, None] * x[:, None, :]).reshape(x.shape[0], d * d)  # vec(x x^T)
                K4 += Z.T @ Z
                K3 += Z.T @ self.r[s:s + 5000]  # [(a, b), c] = sum x_a x_b r_c
            self._K4 = K4 / self.n
            K3 = (K3 / self.n).reshape(d, d, d).transpose(0, 2, 1)
            self._K3 = np.ascontiguousarray(K3).reshape(d * d, d)  # [(a, c), b]
            self._R = self.r.T @ self.r / self.n
        return self._K4, self._K3, self._R

    def expected_gap(self, w1, alphas, n_mb=1):
        """Exact E[F(w_k) - F*], k = 1 .. K+1, from the recursion on m = E[u], P = E[u u^T]:
            m <- (I - a H) m,
            P <- P - a (H P + P H) + a^2 E[g g^T],
            E[g g^T] = (1 - 1/n_mb) H P H + (1/n_mb) (T(P) + E[C m r^T] + E[r m^T C] + R),
        T(P) = E_i[C_i P C_i] (from the fourth moments of x), R = E_i[r_i r_i^T]."""
        alphas = _alphas(alphas)
        K4, K3, R = self._fourth_moment()
        d, H, lam, G = self.d, self.H, self.lam, self.G
        m = np.asarray(w1, dtype=np.float64) - self.w_star
        P = np.outer(m, m)
        out = np.empty(alphas.size + 1)
        out[0] = 0.5 * np.sum(H * P)
        for i, a in enumerate(alphas):
            T = (K4 @ P.ravel()).reshape(d, d) + lam * (G @ P + P @ G) + lam * lam * P
            Cm = (K3 @ m).reshape(d, d)  # E_i[(x_i^T m) x_i r_i^T]
            HP = H @ P
            Egg = (1.0 - 1.0 / n_mb) * HP @ H + (T + Cm + Cm.T + R) / n_mb
            P = P - a * (HP + HP.T) + a * a * Egg
            P = 0.5 * (P + P.T)  # exact P is symmetric; rounding's antisymmetric part can be unstable
            m = m - a * (H @ m)
            out[i + 1] = 0.5 * np.sum(H * P)
        return out


    def _moment_map(self, alpha, n_mb=1):
        """The linear part of the recursion on P = E[u u^T] (expected_gap) at a fixed
        alpha, P <- P - A(P) + ..., restricted to symmetric P: returns (A_s, D) with D
        an orthonormal basis of the symmetric matrices (columns = vec of
        (e_i e_j^T + e_j e_i^T)/sqrt 2, i < j, and e_i e_i^T) and A_s = D^T A D."""
        K4, _, _ = self._fourth_moment()
        d, H, G, lam, a = self.d, self.H, self.G, self.lam, float(alpha)
        I = np.eye(d)
        KT = K4 + lam * (np.kron(G, I) + np.kron(I, G)) + lam * lam * np.eye(d * d)
        A = a * (np.kron(H, I) + np.kron(I, H)) - a * a * ((1.0 - 1.0 / n_mb) * np.kron(H, H) + KT / n_mb)
        cols = []
        for i in range(d):
            for j in range(i, d):
                E = np.zeros((d, d))
                E[i, j] = E[j, i] = 1.0 if i == j else 1.0 / np.sqrt(2.0)
                cols.append(E.ravel())
        D = np.array(cols).T
        return D.T @ A @ D, D

    def is_stable(self, alpha, n_mb=1):
        """Whether E[u_k u_k^T] of SG at the fixed stepsize alpha stays bounded: the
        symmetric moment map I - A_s has spectral radius < 1, i.e. eig(A_s) in (0, 2)."""
        ev = np.linalg.eigvalsh(self._moment_map(alpha, n_mb)[0])
        return bool(ev[0] > 0 and ev[-1] < 2)

    def divergence_stepsize(self, n_mb=1, iters=60):
        """The largest fixed alpha at which SG's second moment stays bounded (bisection on is_stable)."""
        lo = hi = self.sup_stepsize(n_mb)
        while self.is_stable(hi, n_mb):
            lo, hi = hi, 2 * hi
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.is_stable(mid, n_mb) else (lo, mid)
        return lo

    def stationary_gap(self, alpha, n_mb=1):
        """lim_k E[F(w_k) - F*] at a fixed alpha: m = 0 and P the fixed point of the
        recursion of expected_gap, i.e. the symmetric solution of
            a (H P + P H) - a^2 [(1 - 1/n_mb) H P H + T(P) / n_mb] = a^2 R / n_mb.
        Raises ValueError where no stationary second moment exists (SG diverges)."""
        _, _, R = self._fourth_moment()
        A_s, D = self._moment_map(alpha, n_mb)
        ev = np.linalg.eigvalsh(A_s)
        if ev[0] <= 0 or ev[-1] >= 2:
            raise ValueError(f"stepsize {alpha:.6g}: the second moment of SG diverges (no stationary gap)")
        P = (D @ np.linalg.solve(A_s, D.T @ (alpha * alpha * R / n_mb).ravel())).reshape(self.d, self.d)
        return 0.5 * float(np.sum(self.H * P))


def simulate(problem, w1, alphas, n_seeds, seed=0, n_mb=1, record=None, value="gap"):
    """Run SG (algorithm 4.1) w_{k+1} = w_k - alpha_k g(w_k, xi_k) from w1 for
    n_seeds independent seeds at once (one numpy Generator from `seed`).
    record: the iteration indices k (1 .. K+1) at which to evaluate (default
    all); value "gap" gives F(w_k) - F*, "F" gives F(w_k) from its definition.
    Returns (len(record), n_seeds)."""
    alphas = _alphas(alphas)
    K = alphas.size
    record = np.arange(1, K + 2) if record is None else np.asarray(record, dtype=np.int64)
    if record.size and (record.min() < 1 or record.max() > K + 1 or np.any(np.diff(record) <= 0)):
        raise ValueError(f"record must be increasing iteration indices in 1 .. {K + 1}")
    if value not in ("gap", "F"):
        raise ValueError(f"value must be 'gap' or 'F', got {value!r}")
    f = problem.gap if value == "gap" else problem.F
    rng = np.random.default_rng(seed)
    W = np.tile(np.asarray(w1, dtype=np.float64), (int(n_seeds), 1))
    out = np.empty((record.size, int(n_seeds)))
    j = 0
    for k in range(1, K + 2):
        if j < record.size and record[j] == k:
            out[j] = f(W)
            j += 1
            if j == record.size:
                break
        if k <= K:
            W -= alphas[k - 1] * problem.stoch_grad(W, rng, n_mb)
    return out

"""Backpropagation-friendly symmetric eigendecomposition (seed 004: Wang, Dang, Hu,
Fua, Salzmann, NeurIPS 2019; equations as in the paper draft,
../shared/reference/poster/neurips_2019_draft.tex).

Index legend: G groups (a batch of matrices), d the matrix size, r the number of
eigenpairs kept (the leading ones, eigenvalues descending), K power iterations.

  M = U diag(lam) U^T  (G, d, d), symmetric; V = U[:, :, :r] (G, d, r); lam (G, r)

`SymmetricED(rule, r, K, eps)` computes (V, lam) of a batch of symmetric matrices
and the cotangent dL/dM from (dL/dV, dL/dlam) by one of three rules:

- "svd" (analytic): forward by LAPACK `eigh` on the host; backward by matrix
  backpropagation, draft eq. (1)-(2) (Ionescu et al. 2015):
      dL/dM = sym U (Kt^T o (U^T dL/dU) + diag(dL/dlam)) U^T,  Kt_ij = 1/(lam_i - lam_j).
  It divides by lam_i - lam_j: with (near-)repeated eigenvalues the gradient
  overflows. tinynet refuses it with `EDError` when a gap is zero to working
  precision (|lam_i - lam_j| <= d * machine-eps * max|lam|) and never returns a
  non-finite gradient.
- "pi" (power iteration): forward by K power iterations from random unit vectors
  with deflation (draft eq. 3; algorithm 1's deflation written symmetrically,
  M_{i+1} = M_i - lam_i v_i v_i^T with the Rayleigh quotient lam_i = v_i^T M_i v_i);
  backward: the exact reverse mode of that computation (draft eq. 4, Ye et al.).
- "hybrid" (the poster's method): forward by `eigh`; backward: the same power-
  iteration reverse mode, with every iterate equal to the eigh eigenvector (the
  poster's eq. (2), draft eq. 5): for the leading vector
      dL/dM = sum_{k=0}^{K-1} M^k (I - v v^T) / ||M v||^{k+1} dL/dv v^T.
  With M + eps I, ||dL/dM|| <= n K / eps ||dL/dv_1|| (poster, "PI gradients are
  bounded"). As K grows the gradient tends to the analytic one geometrically,
  with ratio lam_j / lam_i. Through the deflation, with exact eigenvectors, this
  recursion has a closed form (`hybrid_coefficients`): the analytic rule with
  1/(lam_i - lam_j) replaced by truncated geometric series of K (and K - 1)
  terms, each term at most 1/lam_min. tinynet computes the hybrid by that closed
  form (the `spectral_vjp` kernel with K > 0): O(d^3) per matrix instead of the
  literal recursion's O(K d^3) (`pi_vjp` at stationary iterates, equal to it to
  round-off in float64, tests/test_ed.py), and no deflated matrices M_i, whose
  float32 round-off is ~1e-7 ||M||.

The per-step work (power iterations, the three backward rules and their forward-
mode twins) runs in the kernel pairs of tinynet.kernels.ed through `bk.launch`;
only the eigh factorization and the small checks (eigenvalue gaps, finiteness)
run on the host.

Numerical hygiene (issue 16, part 4):
- `eigh_desc` checks a float32 decomposition (finite, residual, orthogonality)
  and retries it in float64 when it fails; a failure in float64 too is an EDError;
- eigenvalues below the floor `eps` (which M + eps I cannot have but a float32
  eigh returns once ||M|| is large: its round-off is ~1e-7 ||M||, and eigenvalues
  of -0.1 were seen on conv features with ||M|| ~ 5e6) are raised to eps for
  "svd" and "hybrid" (counted in `info["floored"]`), in the forward and in the
  backward coefficients: without the floor 1/lam_i and (lam_j/lam_i)^k overflow;
  for "pi" the stages floor the Rayleigh quotients where they use them;
- the minimum relative eigenvalue gap of each call is recorded (`info["min_gap"]`),
  the analytic rule refuses zero gaps, and every backward checks that its result
  is finite: a clear EDError instead of a silent NaN.
"""
import numpy as np

from tinynet.kernels import ed as K

RULES = ("svd", "pi", "hybrid")


class EDError(FloatingPointError):
    """A decomposition or an ED gradient that cannot be computed in finite numbers."""


def _check_rule(rule):
    if rule not in RULES:
        raise ValueError(f"backward must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
    return rule


def _decomposition_ok(S, lam, U):
    """Finite, residual ||S U - U diag(lam)|| and orthogonality within tolerance of S's dtype."""
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(U))):
        return False
    d = S.shape[-1]
    tol = 64 * d * np.finfo(S.dtype).eps
    scale = np.maximum(np.abs(lam).max(axis=-1), np.finfo(S.dtype).tiny)
    res = np.linalg.norm(S @ U - U * lam[:, None, :], axis=(1, 2)) / scale
    orth = np.linalg.norm(np.swapaxes(U, 1, 2) @ U - np.eye(d), axis=(1, 2))
    return bool(np.all(res <= tol) and np.all(orth <= tol))


def eigh_desc(S, eps=0.0, retry=True):
    """Eigendecomposition of a batch of symmetric matrices S (G, d, d) on the host:
    (lam (G, d) descending, U (G, d, d), info). A float32 decomposition that fails
    (LAPACK error, non-finite, residual or orthogonality off) is recomputed in
    float64 and cast back (info["retried"]: how many batches were); info["floored"]
    counts eigenvalues below `eps`."""
    S = np.asarray(S)
    if S.ndim != 3 or S.shape[1] != S.shape[2]:
        raise ValueError(f"eigh_desc: expected a batch of square matrices (G, d, d), got {S.shape}")
    if not np.all(np.isfinite(S)):
        bad = int(np.flatnonzero(~np.isfinite(S).reshape(S.shape[0], -1).all(axis=1))[0])
        raise EDError(f"eigendecomposition: matrix {bad} of the batch has non-finite entries")
    info = dict(retried=0, floored=0)
    lam = U = None
    try:
        lam, U = np.linalg.eigh(S)
        ok = _decomposition_ok(S, lam, U)
    except np.linalg.LinAlgError:
        ok = False
    if not ok:
        if not retry or S.dtype == np.float64:
            raise EDError(f"eigendecomposition failed in {S.dtype} (LAPACK error, non-finite result or "
                          "residual/orthogonality check off)")
        S64 = S.astype(np.float64)
        try:
            lam, U = np.linalg.eigh(S64)
        except np.linalg.LinAlgError as e:
            raise EDError(f"eigendecomposition failed in float32 and in the float64 retry: {e}") from None
        if not _decomposition_ok(S64, lam, U):
            raise EDError("eigendecomposition failed in float32 and in the float64 retry")
        lam, U = lam.astype(S.dtype), U.astype(S.dtype)
        info["retried"] = 1
    lam, U = lam[:, ::-1].copy(), U[:, :, ::-1].copy()
    info["floored"] = int(np.sum(lam < eps)) if eps > 0 else 0
    return lam, U, info


def relative_gaps(lam, r):
    """min over pairs (i < r, j != i) of |lam_i - lam_j| / max|lam|, per group (G,):
    the gaps the analytic rule divides by (those between kept eigenpairs and all)."""
    lam = np.asarray(lam, dtype=np.float64)
    G, d = lam.shape
    if d < 2:
        return np.full(G, np.inf)
    diff = np.abs(lam[:, :r, None] - lam[:, None, :])
    diff[:, np.arange(r), np.arange(r)] = np.inf
    return diff.min(axis=(1, 2)) / np.maximum(np.abs(lam).max(axis=1), np.finfo(np.float64).tiny)


def hybrid_coefficients(lam, K):
    """The hybrid rule in closed form (derived from the deflation recursion with
    exact eigenvectors): dL/dM = sym U (C o (U^T dL/dU) + diag(dL/dlam)) U^T with,
    for i the column (the eigenvector whose cotangent is propagated), j the row,
      C_ji = c_K(lam_i, lam_j)       for j > i (lam_j <= lam_i),
      C_ji = -c_{K-1}(lam_j, lam_i)  for j < i,
      c_K(a, b) = (1/a) sum_{k<K} (b/a)^k  (-> 1/(a - b) as K grows: the analytic Kt),
    a host reference for the tests and the convergence plot. lam (d,) descending."""
    lam = np.asarray(lam, dtype=np.float64)
    d = lam.shape[0]
    C = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            if j > i:
                C[j, i] = sum((lam[j] / lam[i]) ** k for k in range(K)) / lam[i]
            elif j < i:
                C[j, i] = -sum((lam[i] / lam[j]) ** k for k in range(K - 1)) / lam[j]
    return C


class SymmetricED:
    """`SymmetricED(rule, r, K=19, eps=1e-4, seed=0)`: (V, lam) of the r leading
    eigenpairs of a batch of symmetric matrices, with the backward rule `rule`
    ("svd", "pi" or "hybrid"; see the module docstring). `eps` is the eigenvalue
    floor (eigh's eigenvalues below it are raised to it; 0: none); `seed` seeds
    the random start vectors of "pi".

      forward(bk, M)          -> V (G, d, r), lam (G, r) backend arrays, ctx
      vjp(bk, ctx, gV, glam)  -> dL/dM (G, d, d), symmetric (the cotangent over
                                 symmetric matrices: the symmetric part)
      jvp(bk, ctx, dM)        -> (dV, dlam), dM symmetric

    `info` (after each call): retried (float64 retries of eigh), floored
    (eigenvalues below eps), min_gap (smallest relative gap seen, "svd" and
    "hybrid"), pi_failures (groups where power iteration met ||M v|| = 0)."""

    def __init__(self, rule, r, K=19, eps=1e-4, seed=0):
        self.rule = _check_rule(rule)
        if int(K) != K or K < 1:
            raise ValueError(f"pi_iters must be a positive integer, got {K}")
        if int(r) != r or r < 1:
            raise ValueError(f"the number of eigenpairs must be a positive integer, got {r}")
        self.r, self.K, self.eps = int(r), int(K), float(eps)
        self.rng = np.random.default_rng(seed)
        self.info = {}

    def forward(self, bk, M):
        G, d, _ = M.shape
        r, dt = self.r, M.dtype
        if r > d:
            raise ValueError(f"cannot keep {r} eigenpairs of {d} x {d} matrices")
        if self.rule == "pi":
            V0 = bk.asarray(self.rng.standard_normal((G, r, d)).astype(dt))
            iters, V = bk.empty((G, r, self.K + 1, d), dt), bk.empty((G, d, r), dt)
            lam, work, status = bk.empty((G, r), dt), bk.empty((G, 2, d, d), dt), bk.zeros(G, np.int32)
            bk.launch(K, "pi_forward", G, M, V0, iters, V, lam, work, status,
                      flops=2.0 * G * r * (self.K + 2) * d * d)
            st, lam_h = np.asarray(bk.to_host(status)), np.asarray(bk.to_host(lam))
            self.info = dict(retried=0, floored=int(np.sum(lam_h < self.eps)), min_gap=np.nan,
                             pi_failures=int(st.sum()))
            if st.any() or not np.all(np.isfinite(lam_h)):
                g = int(np.flatnonzero(st)[0]) if st.any() else int(np.flatnonzero(~np.isfinite(lam_h))[0] // r)
                raise EDError(f"power iteration broke down in group {g} (||M v|| = 0 or not finite after "
                              "deflation); backward='hybrid' computes the forward by eigh")
            return V, lam, (M, iters, lam, None)
        lam_h, U_h, info = eigh_desc(np.asarray(bk.to_host(M)), self.eps)
        if self.eps > 0:
            lam_h = np.maximum(lam_h, lam_h.dtype.type(self.eps))
        info["min_gap"] = float(relative_gaps(lam_h, r).min())
        info["pi_failures"] = 0
        self.info = info
        U = bk.asarray(U_h)
        V = bk.asarray(np.ascontiguousarray(U_h[:, :, :r]))
        lam_full = bk.asarray(lam_h)
        lam = bk.asarray(np.ascontiguousarray(lam_h[:, :r]))
        return V, lam, (M, U, lam_full, lam_h)

    def _refuse_repeated(self, lam_h, dtype):
        gaps = relative_gaps(lam_h, self.r)
        tol = lam_h.shape[1] * np.finfo(dtype).eps
        if np.any(gaps <= tol):
            g = int(np.argmin(gaps))
            raise EDError(f"analytic ED gradient (backward='svd') refused: group {g} has eigenvalues "
                          f"equal to working precision (relative gap {gaps[g]:.1e}), where "
                          "1/(lam_i - lam_j) overflows; use backward='hybrid' or 'pi'")

    def _finite(self, bk, a, what):
        h = np.asarray(bk.to_host(a))
        if not np.all(np.isfinite(h)):
            g = int(np.flatnonzero(~np.isfinite(h).reshape(h.shape[0], -1).all(axis=1))[0])
            hint = "; use backward='hybrid'" if self.rule != "hybrid" else ""
            raise EDError(f"ED {what} (backward={self.rule!r}) is not finite in group {g}{hint}")

    def vjp(self, bk, ctx, gV, glam):
        M = ctx[0]
        G, d, _ = M.shape
        dt = M.dtype
        out, work = bk.empty((G, d, d), dt), bk.empty((G, 2, d, d), dt)
        if self.rule == "pi":
            _, iters, lam, _ = ctx
            vec = bk.empty((G, 3, d), dt)
            bk.launch(K, "pi_vjp", G, M, iters, lam, gV, glam, out, self.K, work, vec,
                      flops=G * self.r * (4.0 * self.K + 8) * d * d)
        else:
            _, U, lam_full, lam_h = ctx
            if self.rule == "svd":
                self._refuse_repeated(lam_h, dt)
            bk.launch(K, "spectral_vjp", G, U, lam_full, gV, glam, out, work, self._spectral_K(),
                      flops=6.0 * G * d * d * self.r)
        self._finite(bk, out, "gradient")
        return out

    def jvp(self, bk, ctx, dM):
        M = ctx[0]
        G, d, _ = M.shape
        dt = M.dtype
        dV, dlam, work = bk.empty((G, d, self.r), dt), bk.empty((G, self.r), dt), bk.empty((G, 2, d, d), dt)
        if self.rule == "pi":
            _, iters, lam, _ = ctx
            vec = bk.empty((G, 3, d), dt)
            bk.launch(K, "pi_jvp", G, M, iters, lam, dM, dV, dlam, self.K, work, vec,
                      flops=G * self.r * (6.0 * self.K + 8) * d * d)
        else:
            _, U, lam_full, lam_h = ctx
            if self.rule == "svd":
                self._refuse_repeated(lam_h, dt)
            bk.launch(K, "spectral_jvp", G, U, lam_full, dM, dV, dlam, work, self._spectral_K(),
                      flops=6.0 * G * d * d * self.r)
        self._finite(bk, dV, "tangent")
        return dV, dlam

    def _spectral_K(self):
        """K of the spectral kernels: 0 selects the analytic coefficients."""
        return 0 if self.rule == "svd" else self.K


def ed_vjp(M, gV, glam=None, rule="hybrid", K=19, seed=0, device="cpu"):
    """Host convenience: dL/dM (G, d, d) (or (d, d)) of L through the r leading
    eigenpairs of the symmetric M, r = gV.shape[-1], by `rule`; glam defaults to 0.
    Returns (dL/dM, V, lam) as host arrays (the forward of that rule)."""
    from tinynet.backend import get_backend
    bk = get_backend(device)
    M = np.asarray(M)
    single = M.ndim == 2
    M3, gV3 = (M[None], np.asarray(gV)[None]) if single else (M, np.asarray(gV))
    r = gV3.shape[-1]
    gl3 = np.zeros(gV3.shape[::2], dtype=M.dtype) if glam is None else np.asarray(glam).reshape(gV3.shape[0], r)
    ed = SymmetricED(rule, r, K=K, eps=0.0, seed=seed)
    V, lam, ctx = ed.forward(bk, bk.asarray(M3))
    gM = ed.vjp(bk, ctx, bk.asarray(gV3.astype(M.dtype)), bk.asarray(gl3.astype(M.dtype)))
    out = [np.asarray(bk.to_host(a)) for a in (gM, V, lam)]
    return tuple(a[0] for a in out) if single else tuple(out)

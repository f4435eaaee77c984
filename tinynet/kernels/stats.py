"""Statistics kernels for the Kronecker-factored and covariance preconditioners
(thesis chapter 6). CPU `@njit` functions; GPU twins may be appended below.

Index legend: n batch, i layer inputs (n_in), o layer outputs (n_out).
H (n, i) is a Linear layer's input batch, B (n, o) a batch of back-propagated
vectors at its pre-activations.

  col_mean(H)           mu = 1/n sum_n h_n                          (i,)
  centered_cov(H, mu)   C = 1/n sum_n (h_n - mu)(h_n - mu)^T        (6.1.1), (i, i)
  kfac_A(H)             A = 1/n sum_n [h h^T, h; h^T, 1]            (6.2.2), (i+1, i+1)
  kfac_G(B)             G = 1/n sum_n b_n b_n^T                     (6.2.2), (o, o)
  gram(M)               M^T M (unscaled)
  running_update_upper(R, S, rho, c)   exponential running average of a symmetric
                        factor from a raw sum S (c = 1/n), upper triangle only:
                        R[r, s] for s >= r of S's top-left block <- rho R + (1 - rho) c S
  kfac_A_running(R, H, rho, scale)   R <- rho R + (1 - rho) scale kfac_A(H) on the upper
                        triangle, in one pass over R (the KFAC statistics step)
  symmetric_from_upper(U, out)  out = U's upper triangle mirrored (host, inversions)

Twins for `Backend.launch` (`name_cpu` / `name_cuda`, one CUDA thread per
written entry), used by the device-resident running factors
(tinynet/optim/device_factors.py):
  running_upper(R, S, rho, c)               = running_update_upper
  col_mean(H, mu)                           mu = col_mean(H), written into mu
  kfac_bias_running(R, mu, rho, scale)      A's bias column and corner:
                        R[c, i] <- rho R[c, i] + (1 - rho) scale mu[c], R[i, i] = scale
  sq_max(x, c, partial)                     partial[t] = max over j = t, t + P, ... of
                        (c x_j)^2 in x's dtype (P = len(partial)); a NaN wins. The host takes
                        the max of the P partials: ACP's heuristic alpha (thesis 6.3.2) from the
                        device's signal rows, P numbers copied back instead of the rows. A max
                        is exact in any order, so the result has the host formula's bits.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def col_mean(H):
    n, i = H.shape
    mu = np.zeros(i, dtype=H.dtype)
    for r in range(n):
        for c in range(i):
            mu[c] += H[r, c]
    for c in range(i):
        mu[c] /= n
    return mu


@njit(cache=True)
def centered_cov(H, mu):
    """C = 1/n (H - 1 mu^T)^T (H - 1 mu^T)  (thesis 6.1.1)."""
    n = H.shape[0]
    Hc = H - mu                       # broadcast over rows
    C = Hc.T @ Hc
    return C / n


@njit(cache=True)
def kfac_A(H):
    """A = 1/n sum_n (h^T 1)^T (h^T 1): the activation factor with the bias as the
    LAST row/column, matching the flat layout [vec(W); b] (J_theta = (h^T 1) ⊗ J_a)."""
    n, i = H.shape
    HtH = H.T @ H
    A = np.empty((i + 1, i + 1), dtype=H.dtype)
    for r in range(i):                # scale and copy in one pass (no temporaries)
        for c in range(i):
            A[r, c] = HtH[r, c] / n
    s = np.zeros(i, dtype=H.dtype)
    for r in range(n):
        for c in range(i):
            s[c] += H[r, c]
    for c in range(i):
        A[c, i] = s[c] / n
        A[i, c] = s[c] / n
    A[i, i] = 1.0
    return A


@njit(cache=True)
def gram(M):
    """M^T M, unscaled (the raw sum behind kfac_G and the running factors)."""
    return M.T @ M


@njit(cache=True)
def kfac_G(B):
    """G = 1/n B^T B, with rows b_n = J_a^T s_n for square-root factors s_n of D
    (so that E b b^T = J_a^T D J_a), thesis 6.2.2."""
    return (B.T @ B) / B.shape[0]


@njit(cache=True)
def running_update_upper(R, S, rho, c):
    """Upper triangle of R's top-left S-sized block <- rho R + (1 - rho) c S, S a
    raw (unscaled) symmetric sum such as B^T B: the scaling by c = 1/n and the
    average share one pass, and the lower triangle is left alone (half the
    memory traffic; tinynet.optim.stats.RunningFactors mirrors it when read)."""
    d = S.shape[0]
    w = (1.0 - rho) * c
    for r in range(d):
        for s in range(r, d):
            R[r, s] = rho * R[r, s] + w * S[r, s]


@njit(cache=True)
def pack_upper(S, out):
    """out (d(d+1)/2,) <- the upper triangle of S, row by row, converted to
    out's dtype (what data-parallel ranks send of a symmetric matrix). Host only."""
    d = S.shape[0]
    k = 0
    for r in range(d):
        for c in range(r, d):
            out[k] = S[r, c]
            k += 1


@njit(cache=True)
def unpack_upper(v, out):
    """out (d, d) <- the symmetric matrix whose upper triangle is v (pack_upper's order)."""
    d = out.shape[0]
    k = 0
    for r in range(d):
        for c in range(r, d):
            out[r, c] = v[k]
            out[c, r] = v[k]
            k += 1


@njit(cache=True)
def running_update_packed(R, v, rho, c):
    """running_update_upper with S given as its packed upper triangle v: R's upper
    triangle <- rho R + (1 - rho) c S (the data-parallel factor update, one pass)."""
    d = R.shape[0]
    w = (1.0 - rho) * c
    k = 0
    for r in range(d):
        for s in range(r, d):
            R[r, s] = rho * R[r, s] + w * v[k]
            k += 1


@njit(cache=True)
def kfac_A_running(R, H, rho, scale=1.0):
    """R <- rho R + (1 - rho) scale A, A = kfac_A(H) (bias last), on R's upper
    triangle, without forming A: the GEMM H^T H, then one pass over R. scale:
    the rows per example of a convolution's patch rows (KFC's sum over
    positions), 1 for a Linear layer."""
    n, i = H.shape
    running_update_upper(R, H.T @ H, rho, scale / n)
    kfac_bias_running_cpu(R, col_mean(H), rho, scale)     # the bias column E h


@njit(cache=True)
def kfac_bias_running_cpu(R, mu, rho, scale):
    """A's bias column in the running average, R[c, i] <- rho R[c, i] + (1 - rho)
    scale mu[c] (mu = col_mean(H)), and the corner R[i, i] = scale (A's 1,
    times the KFC share)."""
    i = mu.shape[0]
    for c in range(i):
        R[c, i] = rho * R[c, i] + (1.0 - rho) * scale * mu[c]
    R[i, i] = scale


@njit(cache=True)
def col_mean_cpu(H, mu):
    """col_mean written into mu (the Backend.launch form; twin of col_mean_cuda)."""
    mu[:] = col_mean(H)


running_upper_cpu = running_update_upper


@njit(cache=True)
def sq_max_cpu(x, c, partial):
    P = partial.shape[0]
    for t in range(P):
        m = x.dtype.type(0)
        for j in range(t, x.shape[0], P):
            v = c * x[j]
            v = v * v
            if v > m or v != v:       # NaN: no later comparison replaces it
                m = v
        partial[t] = m


@njit(cache=True)
def symmetric_from_upper(U, out):
    """out = the symmetric matrix whose upper triangle is U's (LAPACK potri
    leaves the lower one unset), converted to out's dtype; `out` may be U
    itself. Host only: the amortized inversions and the running factors."""
    d = U.shape[0]
    for r in range(d):
        for c in range(r, d):
            v = U[r, c]
            out[r, c] = v
            out[c, r] = v


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# Same meaning as the CPU twins above, results written into `out` arrays, one
# thread per output entry. The products H^T H, B^T B and Hc^T Hc of the device
# statistics are backend GEMMs (device_factors, device_moments), not kernels
# here: the tiled GEMM beats a thread per entry looping over the batch. Typed
# constants keep float32 kernels in float32. Launch: `launch_1d(size)`.
from numba import cuda  # noqa: E402  (CUDA section of the module)

TPB_1D = 256


def launch_1d(size):
    return (size + TPB_1D - 1) // TPB_1D, TPB_1D


@cuda.jit
def col_mean_cuda(H, mu):
    """mu[c] = 1/n sum_r H[r, c]; one thread per column."""
    c = cuda.grid(1)
    n = H.shape[0]
    if c < H.shape[1]:
        s = H.dtype.type(0)
        for r in range(n):
            s += H[r, c]
        mu[c] = s / H.dtype.type(n)


@cuda.jit
def running_upper_cuda(R, S, rho, c):
    """running_update_upper for Backend.launch: one thread per entry of S's
    d x d block (flat index), the lower ones idle. R may be float64 and S the
    network's float32: the arithmetic is in R's dtype, as on the host."""
    k = cuda.grid(1)
    d = S.shape[0]
    if k < d * d:
        r = k // d
        col = k - r * d
        if col >= r:
            R[r, col] = rho * R[r, col] + (R.dtype.type(1) - rho) * c * S[r, col]


@cuda.jit
def kfac_bias_running_cuda(R, mu, rho, scale):
    """Twin of kfac_bias_running_cpu: thread c < i updates R[c, i], thread i sets R[i, i]."""
    c = cuda.grid(1)
    i = mu.shape[0]
    if c < i:
        R[c, i] = rho * R[c, i] + (R.dtype.type(1) - rho) * scale * mu[c]
    elif c == i:
        R[i, i] = scale


@cuda.jit
def sq_max_cuda(x, c, partial):
    """Twin of sq_max_cpu: thread t < P walks entries t, t + P, ..."""
    t = cuda.grid(1)
    P = partial.shape[0]
    if t < P:
        m = x.dtype.type(0)
        for j in range(t, x.shape[0], P):
            v = c * x[j]
            v = v * v
            if v > m or v != v:
                m = v
        partial[t] = m

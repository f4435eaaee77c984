"""The quasi-diagonal reparametrization's update on the device (seed 003,
tinynet.optim.reparam): one layer's step from its plain gradient, applied to
its parameters in place, with no copy of the gradient to the host.

Index legend: n fan-in (i), m fan-out (j); g the layer's gradient slice
[vec(g_W); g_b] with vec(g_W) = g_W^T C-ordered (n, m) (DESIGN.md layout), theta
the layer's parameter slice in the same layout; mu, a2 (alpha^2) (n,), b2
(beta^2) (m,) float64:

    dW^T_ij = -lr a2_i (g_ij - mu_i gb_j) b2_j
    db_j    = -lr b2_j gb_j - sum_i mu_i dW^T_ij
    theta  += [vec(dW^T); db]   (each entry rounded to theta's dtype once)

Each entry is formed in float64 in the order of the host expression it
replaces (so dW keeps its bits); the sum over i runs in row order (the host's
BLAS product summed in its own order: db agrees to float64 rounding).

The statistics (every `stats_every` steps) stay on the device too, as one
float64 vector run = [mu; var] (2n) per layer, H (r, n) the layer's input
rows:

  qd_observe   m_i = 1/r sum_rows H_i,  v_i = max(1/r sum_rows H_i^2 - m_i^2, 0)
               (float64 sums in row order, one pass), then run <- [m; v] on the
               first batch, else run <- (1 - rate) run + rate [m; v]
  qd_vectors   mu_i = run_i (0 without centring),
               a2_i = 1 / (var_i + eps) (1 without the variance scale)

so a statistics step copies nothing either: QuasiDiagonal.stats reads host
copies.
"""
import numpy as np
from numba import cuda, njit


def _observe_one(i, H, run, rate, first):
    """Column i of qd_observe (one plain body, compiled for both twins)."""
    rows, n = H.shape
    s = 0.0
    q = 0.0
    for r in range(rows):
        h = np.float64(H[r, i])
        s += h
        q += h * h
    m = s / rows
    v = max(q / rows - m * m, 0.0)
    if first:
        run[i] = m
        run[n + i] = v
    else:
        run[i] = (1.0 - rate) * run[i] + rate * m
        run[n + i] = (1.0 - rate) * run[n + i] + rate * v


def _vectors_one(i, run, center, scale, eps, mu, a2):
    n = mu.shape[0]
    mu[i] = run[i] if center else 0.0
    a2[i] = 1.0 / (run[n + i] + eps) if scale else 1.0


_observe_c, _vectors_c = njit(cache=True)(_observe_one), njit(cache=True)(_vectors_one)
_observe_d, _vectors_d = cuda.jit(device=True)(_observe_one), cuda.jit(device=True)(_vectors_one)


@njit(cache=True)
def qd_observe_cpu(H, run, rate, first):
    for i in range(H.shape[1]):
        _observe_c(i, H, run, rate, first)


@njit(cache=True)
def qd_vectors_cpu(run, center, scale, eps, mu, a2):
    for i in range(mu.shape[0]):
        _vectors_c(i, run, center, scale, eps, mu, a2)


@njit(cache=True)
def qd_update_cpu(g, mu, a2, b2, lr, theta, acc):
    """acc: (m,) float64 scratch for the sums over i (rows are walked in memory order)."""
    n, m = mu.shape[0], b2.shape[0]
    k = n * m
    nlr = -lr
    for j in range(m):
        acc[j] = 0.0
    for i in range(n):
        for j in range(m):
            d = nlr * ((a2[i] * (np.float64(g[i * m + j]) - mu[i] * np.float64(g[k + j]))) * b2[j])
            theta[i * m + j] += theta.dtype.type(d)
            acc[j] += mu[i] * d
    for j in range(m):
        db = nlr * b2[j] * np.float64(g[k + j]) - acc[j]
        theta[k + j] += theta.dtype.type(db)


@cuda.jit
def qd_update_cuda(g, mu, a2, b2, lr, theta, acc):
    """One thread per output j: its column of dW^T (coalesced across j), then db_j."""
    n, m = mu.shape[0], b2.shape[0]
    k = n * m
    nlr = -lr
    for j in range(cuda.grid(1), m, cuda.gridsize(1)):
        gb = np.float64(g[k + j])
        s = 0.0
        for i in range(n):
            d = nlr * ((a2[i] * (np.float64(g[i * m + j]) - mu[i] * gb)) * b2[j])
            theta[i * m + j] += theta.dtype.type(d)
            s += mu[i] * d
        acc[j] = s
        theta[k + j] += theta.dtype.type(nlr * b2[j] * gb - s)


@cuda.jit
def qd_observe_cuda(H, run, rate, first):
    """One thread per input column (coalesced across the row's entries)."""
    for i in range(cuda.grid(1), H.shape[1], cuda.gridsize(1)):
        _observe_d(i, H, run, rate, first)


@cuda.jit
def qd_vectors_cuda(run, center, scale, eps, mu, a2):
    for i in range(cuda.grid(1), mu.shape[0], cuda.gridsize(1)):
        _vectors_d(i, run, center, scale, eps, mu, a2)

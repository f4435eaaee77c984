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
"""
from numba import cuda, njit


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
            d = nlr * ((a2[i] * (float(g[i * m + j]) - mu[i] * float(g[k + j]))) * b2[j])
            theta[i * m + j] += theta.dtype.type(d)
            acc[j] += mu[i] * d
    for j in range(m):
        db = nlr * b2[j] * float(g[k + j]) - acc[j]
        theta[k + j] += theta.dtype.type(db)


@cuda.jit
def qd_update_cuda(g, mu, a2, b2, lr, theta, acc):
    """One thread per output j: its column of dW^T (coalesced across j), then db_j."""
    n, m = mu.shape[0], b2.shape[0]
    k = n * m
    nlr = -lr
    for j in range(cuda.grid(1), m, cuda.gridsize(1)):
        gb = float(g[k + j])
        s = 0.0
        for i in range(n):
            d = nlr * ((a2[i] * (float(g[i * m + j]) - mu[i] * gb)) * b2[j])
            theta[i * m + j] += theta.dtype.type(d)
            s += mu[i] * d
        acc[j] = s
        theta[k + j] += theta.dtype.type(nlr * b2[j] * gb - s)

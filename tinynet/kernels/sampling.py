"""Curvature rows at the network output for the softmax cross-entropy, formed
where the outputs live (KFAC's statistics on the device,
tinynet.optim.device_factors). The random numbers come from the optimizer's
numpy generator on the host (the same draws as the host path,
tinynet.optim.stats.curvature_rows) and are uploaded; these kernels only
transform them. One CUDA thread per example row; float64 arithmetic, as the
host path (`probabilities(...).astype(float64)`), the result stored in the
output's dtype.

Index legend: n examples, k classes; P (n, k) the softmax probabilities (the
network's dtype), Y (n, k) the targets.

  softmax_sqrt_d_rows(P, Y, E, out)   out_n = S_n e_n with S_n S_n^T = D_n, the
        softmax CE's d2l/df2 = sum(y_n) (diag p - p p^T):
        S_n e = sqrt(sum y_n) (sqrt(p) * e - p <sqrt(p), e>)
  softmax_sample(P, U, out)           one-hot out_n = e_c, c the first class
        with U_n < cumsum(p_n)_c (the last class closes the interval), i.e.
        c ~ Categorical(p_n) for U_n uniform on [0, 1)

The binary cross-entropy and the squared error, one thread per entry
(F (n, k) the network's outputs, E standard normal, U uniform on [0, 1),
float64; [lo, hi] BCE's clip in F's dtype, tinynet.losses.bce):

  bce_sqrt_d_rows(F, Y, E, out, lo, hi)   out = sqrt(d) e, BCE's diagonal
        d = y / f^2 + (1 - y) / (1 - f)^2 at f = clip(F, lo, hi), d in F's
        dtype as BCELoss.hess_f_vp forms it
  bce_sample(F, U, out, lo, hi)           out = 1 where U < f, else 0:
        targets ~ Bernoulli(f) (BCELoss.sample_targets)
  gauss_sample(F, E, c, out)              out = F + c e: targets ~ N(F, c^2)
        (MSELoss.sample_targets, c = sqrt(1/2))
  unit_column(out, c, v)                  out = v e_c on every row: KFAC's exact GN
        columns (exact=True) are the square-root rows at these unit "draws"
"""
import math

import numpy as np
from numba import cuda, njit


@njit(cache=True)
def softmax_sqrt_d_rows_cpu(P, Y, E, out):
    n, k = P.shape
    for i in range(n):
        ys = 0.0
        dot = 0.0
        for j in range(k):
            ys += Y[i, j]
            dot += math.sqrt(np.float64(P[i, j])) * E[i, j]
        c = math.sqrt(ys)
        for j in range(k):
            p = np.float64(P[i, j])
            out[i, j] = c * (math.sqrt(p) * E[i, j] - p * dot)


@njit(cache=True)
def softmax_sample_cpu(P, U, out):
    n, k = P.shape
    for i in range(n):
        cdf = 0.0
        c = k - 1
        for j in range(k - 1):
            cdf += np.float64(P[i, j])
            if U[i] < cdf:
                c = j
                break
        for j in range(k):
            out[i, j] = 0.0
        out[i, c] = 1.0


@njit(cache=True)
def bce_sqrt_d_rows_cpu(F, Y, E, out, lo, hi):
    n, k = F.shape
    one = F.dtype.type(1)
    for i in range(n):
        for j in range(k):
            f = min(max(F[i, j], lo), hi)
            y = Y[i, j]
            g = one - f
            d = y / (f * f) + (one - y) / (g * g)
            out[i, j] = F.dtype.type(math.sqrt(d)) * E[i, j]


@njit(cache=True)
def bce_sample_cpu(F, U, out, lo, hi):
    n, k = F.shape
    for i in range(n):
        for j in range(k):
            f = min(max(F[i, j], lo), hi)
            out[i, j] = 1.0 if U[i, j] < np.float64(f) else 0.0


@njit(cache=True)
def gauss_sample_cpu(F, E, c, out):
    n, k = F.shape
    for i in range(n):
        for j in range(k):
            out[i, j] = np.float64(F[i, j]) + c * E[i, j]


@njit(cache=True)
def unit_column_cpu(out, c, v):
    n, k = out.shape
    for i in range(n):
        for j in range(k):
            out[i, j] = v if j == c else 0.0


@cuda.jit
def unit_column_cuda(out, c, v):
    n, k = out.shape
    for t in range(cuda.grid(1), n * k, cuda.gridsize(1)):
        i, j = t // k, t % k
        out[i, j] = v if j == c else 0.0


@cuda.jit
def bce_sqrt_d_rows_cuda(F, Y, E, out, lo, hi):
    n, k = F.shape
    one = F.dtype.type(1)
    for t in range(cuda.grid(1), n * k, cuda.gridsize(1)):
        i, j = t // k, t % k
        f = min(max(F[i, j], lo), hi)
        y = Y[i, j]
        g = one - f
        d = y / (f * f) + (one - y) / (g * g)
        out[i, j] = F.dtype.type(math.sqrt(d)) * E[i, j]


@cuda.jit
def bce_sample_cuda(F, U, out, lo, hi):
    n, k = F.shape
    for t in range(cuda.grid(1), n * k, cuda.gridsize(1)):
        i, j = t // k, t % k
        f = min(max(F[i, j], lo), hi)
        out[i, j] = 1.0 if U[i, j] < np.float64(f) else 0.0


@cuda.jit
def gauss_sample_cuda(F, E, c, out):
    n, k = F.shape
    for t in range(cuda.grid(1), n * k, cuda.gridsize(1)):
        i, j = t // k, t % k
        out[i, j] = np.float64(F[i, j]) + c * E[i, j]


@cuda.jit
def softmax_sqrt_d_rows_cuda(P, Y, E, out):
    i = cuda.grid(1)
    n, k = P.shape
    if i < n:
        ys = 0.0
        dot = 0.0
        for j in range(k):
            ys += Y[i, j]
            dot += math.sqrt(np.float64(P[i, j])) * E[i, j]
        c = math.sqrt(ys)
        for j in range(k):
            p = np.float64(P[i, j])
            out[i, j] = c * (math.sqrt(p) * E[i, j] - p * dot)


@cuda.jit
def softmax_sample_cuda(P, U, out):
    i = cuda.grid(1)
    n, k = P.shape
    if i < n:
        cdf = 0.0
        c = k - 1
        for j in range(k - 1):
            cdf += np.float64(P[i, j])
            if U[i] < cdf:
                c = j
                break
        for j in range(k):
            out[i, j] = 0.0
        out[i, c] = 1.0

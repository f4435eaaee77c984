"""BatchNorm2d kernels: per-channel statistics over the batch and the positions,
the normalize + affine map, and the centering that its Jacobian applies.

Index legend: n batch, C channels, P = H*W positions, D = C*P entries of a row,
m = n*P values per channel (the batch AND the positions, as torch.nn.BatchNorm2d).

  Z, V, Xhat, Y, out  (n, D)   image rows, C-major: Z[e, c*P + p]      (DESIGN.md, "Images")
  mu, var, s, ...     (C,)     one entry per channel

  channel_stats    mu[c] = 1/m sum_{e,p} Z[e, cP+p],  var[c] = 1/m sum (Z - mu[c])^2
                   (two passes), s[c] = sqrt(var[c] + eps)
  bn_forward       Xhat = (Z - mu[c]) / s[c],  Y = gamma[c] Xhat + beta[c]
  channel_sums     sv[c] = sum_{e,p} V[e, cP+p],  svx[c] = sum_{e,p} V Xhat
  bn_center_scale  out = gamma[c] / s[c] (V - inv_m (sv[c] + Xhat svx[c]))
                   with inv_m = 1/m: the coupled (training) Jacobian of the input,
                   self-adjoint, so the same kernel gives vjp and jvp; inv_m = 0:
                   the per-example (evaluation) one, gamma / s
  bn_affine        out (+)= a[c] Xhat + b[c]   (the parameter part of jvp)

CPU twins are serial `@njit` loops over the rows in memory order; CUDA twins run
one thread per written entry (grid-stride loops), the reductions one thread per
channel looping over its m values (e-major, p-minor: the CPU twins' summation
order, so both give the same sums up to FMA contraction). Float32 arrays are
computed in float32 throughout (no float64 constant in a float32 kernel).
"""
import math

from numba import njit

# ---------------------------------------------------------------- CPU (@njit)


@njit(cache=True, error_model="numpy")
def channel_stats_cpu(Z, mu, var, s, eps, P):
    """mu, var (biased, 1/m), s = sqrt(var + eps) per channel; all three overwritten."""
    n = Z.shape[0]
    C = mu.shape[0]
    zero = Z.dtype.type(0)
    fm = Z.dtype.type(n * P)
    for c in range(C):
        mu[c] = zero
        var[c] = zero
    for e in range(n):
        for c in range(C):
            for p in range(P):
                mu[c] += Z[e, c * P + p]
    for c in range(C):
        mu[c] = mu[c] / fm
    for e in range(n):
        for c in range(C):
            for p in range(P):
                t = Z[e, c * P + p] - mu[c]
                var[c] += t * t
    for c in range(C):
        var[c] = var[c] / fm
        s[c] = math.sqrt(var[c] + eps)


@njit(cache=True, error_model="numpy")
def bn_forward_cpu(Z, mu, s, gamma, beta, Xhat, Y, P):
    """Xhat = (Z - mu) / s, Y = gamma Xhat + beta, per channel."""
    n = Z.shape[0]
    C = mu.shape[0]
    for e in range(n):
        for c in range(C):
            for p in range(P):
                j = c * P + p
                x = (Z[e, j] - mu[c]) / s[c]
                Xhat[e, j] = x
                Y[e, j] = gamma[c] * x + beta[c]


@njit(cache=True, error_model="numpy")
def channel_sums_cpu(V, Xhat, sv, svx, P):
    """sv[c] = sum of V over channel c, svx[c] = sum of V * Xhat; both overwritten."""
    n = V.shape[0]
    C = sv.shape[0]
    zero = V.dtype.type(0)
    for c in range(C):
        sv[c] = zero
        svx[c] = zero
    for e in range(n):
        for c in range(C):
            for p in range(P):
                j = c * P + p
                sv[c] += V[e, j]
                svx[c] += V[e, j] * Xhat[e, j]


@njit(cache=True, error_model="numpy")
def bn_center_scale_cpu(V, Xhat, gamma, s, sv, svx, out, inv_m, P):
    """out = gamma / s (V - inv_m (sv + Xhat svx)), per channel."""
    n = V.shape[0]
    C = s.shape[0]
    for e in range(n):
        for c in range(C):
            g = gamma[c] / s[c]
            for p in range(P):
                j = c * P + p
                out[e, j] = g * (V[e, j] - inv_m * (sv[c] + Xhat[e, j] * svx[c]))


@njit(cache=True, error_model="numpy")
def bn_affine_cpu(Xhat, a, b, out, P, accumulate):
    """out = a Xhat + b per channel, or out += that when `accumulate`."""
    n = Xhat.shape[0]
    C = a.shape[0]
    for e in range(n):
        for c in range(C):
            for p in range(P):
                j = c * P + p
                t = a[c] * Xhat[e, j] + b[c]
                if accumulate:
                    out[e, j] += t
                else:
                    out[e, j] = t


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# Same meaning and argument order as the CPU twins; launched by the backend
# with one thread per entry of the array each kernel writes (grid-stride loops).
from numba import cuda  # noqa: E402  (CUDA section of the module)


@cuda.jit
def channel_stats_cuda(Z, mu, var, s, eps, P):
    """One thread per channel: two passes over its n*P values."""
    n = Z.shape[0]
    C = mu.shape[0]
    fm = Z.dtype.type(n * P)
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        acc = Z.dtype.type(0)
        for e in range(n):
            for p in range(P):
                acc += Z[e, c * P + p]
        m = acc / fm
        acc = Z.dtype.type(0)
        for e in range(n):
            for p in range(P):
                t = Z[e, c * P + p] - m
                acc += t * t
        v = acc / fm
        mu[c] = m
        var[c] = v
        s[c] = math.sqrt(v + eps)


@cuda.jit
def bn_forward_cuda(Z, mu, s, gamma, beta, Xhat, Y, P):
    """One thread per entry of Xhat and Y."""
    n, D = Z.shape
    for t in range(cuda.grid(1), n * D, cuda.gridsize(1)):
        e = t // D
        j = t - e * D
        c = j // P
        x = (Z[e, j] - mu[c]) / s[c]
        Xhat[e, j] = x
        Y[e, j] = gamma[c] * x + beta[c]


@cuda.jit
def channel_sums_cuda(V, Xhat, sv, svx, P):
    """One thread per channel."""
    n = V.shape[0]
    C = sv.shape[0]
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        a = V.dtype.type(0)
        ax = V.dtype.type(0)
        for e in range(n):
            for p in range(P):
                j = c * P + p
                a += V[e, j]
                ax += V[e, j] * Xhat[e, j]
        sv[c] = a
        svx[c] = ax


@cuda.jit
def bn_center_scale_cuda(V, Xhat, gamma, s, sv, svx, out, inv_m, P):
    """One thread per entry of out."""
    n, D = V.shape
    for t in range(cuda.grid(1), n * D, cuda.gridsize(1)):
        e = t // D
        j = t - e * D
        c = j // P
        g = gamma[c] / s[c]
        out[e, j] = g * (V[e, j] - inv_m * (sv[c] + Xhat[e, j] * svx[c]))


@cuda.jit
def bn_affine_cuda(Xhat, a, b, out, P, accumulate):
    """One thread per entry of out."""
    n, D = Xhat.shape
    for t in range(cuda.grid(1), n * D, cuda.gridsize(1)):
        e = t // D
        j = t - e * D
        c = j // P
        v = a[c] * Xhat[e, j] + b[c]
        if accumulate:
            out[e, j] += v
        else:
            out[e, j] = v

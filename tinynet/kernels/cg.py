"""Conjugate gradient's scalars on the device (tinynet.optim.cg_device; issue
18, part 4: no host round trip inside a step). Hessian-free's inner CG needs
four dot products per iteration, and each, as a host float, is a copy back
and a wait for the GPU; here they stay in a float64 backend vector `acc`:

  acc[ACTIVE]   1 while CG runs, 0 once a stopping rule fired (the vector
                updates below then leave x, r, d as they are)
  acc[STOP]     why it stopped: STOP_CODES
  acc[ITERS]    products of A used;  acc[I]  the iteration i
  acc[BNORM]    ||b||;  acc[RR]  r^T r;  acc[ALPHA], acc[BETA], acc[ONE] = 1
  acc[DAD], acc[RRNEW], acc[XB], acc[XR], acc[BB], acc[XX]
                bk.dot_acc accumulators (d^T A d, r^T r, x^T b, x^T r, b^T b,
                x0^T x0), zeroed by the kernel that reads them
  acc[PHI + i]  phi_i = -1/2 x_i^T (b + r_i), i = 0 .. max_iters

The rules are tinynet.optim.cg's, evaluated in the same order on the same
float64 numbers, so a CPU run keeps the host CG's bits; `cg_stop_rules` also
checks the next iteration's residual test, so the host learns of any stop
from the one entry acc[ACTIVE].
"""
import math

from numba import cuda, float64, njit

from tinynet.kernels.scalars import axpy_s_cpu, scale_s_cpu

ACTIVE, STOP, ITERS, I, BNORM, RR, ALPHA, BETA, ONE = range(9)
DAD, RRNEW, XB, XR, BB, XX = range(9, 15)
PHI = 15
STOP_CODES = ("max_iters", "tol", "progress", "negative_curvature")


@njit(cache=True, error_model="numpy")
def cg_start_cpu(acc, iters0, tol, max_iters):
    """After r_0 and the accumulators BB (b^T b), RRNEW (r_0^T r_0), XB, XR:
    iteration 0's state, and the residual test before the first product."""
    bnorm = math.sqrt(acc[BB])
    acc[BNORM] = bnorm
    acc[RR] = acc[RRNEW]
    acc[PHI] = -0.5 * (acc[XB] + acc[XR])
    acc[RRNEW] = acc[XB] = acc[XR] = acc[BB] = acc[XX] = 0.0
    acc[ITERS], acc[I], acc[ONE] = iters0, 0.0, 1.0
    acc[ACTIVE], acc[STOP] = 1.0, 0.0
    if iters0 < max_iters and math.sqrt(acc[RR]) <= tol * bnorm:
        acc[ACTIVE], acc[STOP] = 0.0, 1.0


@njit(cache=True, error_model="numpy")
def cg_step_length_cpu(acc):
    """After d^T A d: count the product; stop on non-positive (or NaN)
    curvature, else alpha = r^T r / d^T A d."""
    if acc[ACTIVE] != 0:
        acc[ITERS] += 1.0
        dAd = acc[DAD]
        if not dAd > 0.0:
            acc[ACTIVE], acc[STOP] = 0.0, 3.0
        else:
            acc[ALPHA] = acc[RR] / dAd
    acc[DAD] = 0.0


@njit(cache=True, error_model="numpy")
def cg_direction_cpu(acc):
    """After r_new^T r_new: beta = r_new^T r_new / r^T r (Fletcher-Reeves)."""
    if acc[ACTIVE] != 0:
        acc[BETA] = acc[RRNEW] / acc[RR]
        acc[RR] = acc[RRNEW]
    acc[RRNEW] = 0.0


@njit(cache=True, error_model="numpy")
def cg_stop_rules_cpu(acc, i, k, progress, progress_tol, tol, max_iters):
    """After x^T b and x^T r: phi_i, then Martens's relative-progress rule
    (checked when `progress`, i.e. i > k = max(min_window, ceil(0.1 i))), then
    the next iteration's residual test (when products remain)."""
    if acc[ACTIVE] != 0:
        phi = -0.5 * (acc[XB] + acc[XR])
        acc[PHI + i] = phi
        acc[I] = i
        if progress and phi < 0 and (phi - acc[PHI + i - k]) / phi < k * progress_tol:
            acc[ACTIVE], acc[STOP] = 0.0, 2.0
        elif acc[ITERS] < max_iters and math.sqrt(acc[RR]) <= tol * acc[BNORM]:
            acc[ACTIVE], acc[STOP] = 0.0, 1.0
    acc[XB] = acc[XR] = 0.0


@njit(cache=True)
def cg_axpy_if_cpu(c, s, j, x, y):
    """scalars.axpy_s (y += (c s[j]) x) while s[ACTIVE] != 0."""
    if s[ACTIVE] != 0:
        axpy_s_cpu(c, s, j, x, y)


@njit(cache=True)
def cg_scale_if_cpu(s, j, x):
    """scalars.scale_s (x *= s[j]) while s[ACTIVE] != 0."""
    if s[ACTIVE] != 0:
        scale_s_cpu(s, j, x)


# ---------------------------------------------------------------- CUDA twins
@cuda.jit
def cg_start_cuda(acc, iters0, tol, max_iters):
    if cuda.grid(1) == 0:
        bnorm = math.sqrt(acc[BB])
        acc[BNORM] = bnorm
        acc[RR] = acc[RRNEW]
        acc[PHI] = float64(-0.5) * (acc[XB] + acc[XR])
        acc[RRNEW] = acc[XB] = acc[XR] = acc[BB] = acc[XX] = float64(0)
        acc[ITERS], acc[I], acc[ONE] = float64(iters0), float64(0), float64(1)
        acc[ACTIVE], acc[STOP] = float64(1), float64(0)
        if iters0 < max_iters and math.sqrt(acc[RR]) <= tol * bnorm:
            acc[ACTIVE], acc[STOP] = float64(0), float64(1)


@cuda.jit
def cg_step_length_cuda(acc):
    if cuda.grid(1) == 0:
        if acc[ACTIVE] != 0:
            acc[ITERS] += float64(1)
            dAd = acc[DAD]
            if not dAd > 0:
                acc[ACTIVE], acc[STOP] = float64(0), float64(3)
            else:
                acc[ALPHA] = acc[RR] / dAd
        acc[DAD] = float64(0)


@cuda.jit
def cg_direction_cuda(acc):
    if cuda.grid(1) == 0:
        if acc[ACTIVE] != 0:
            acc[BETA] = acc[RRNEW] / acc[RR]
            acc[RR] = acc[RRNEW]
        acc[RRNEW] = float64(0)


@cuda.jit
def cg_stop_rules_cuda(acc, i, k, progress, progress_tol, tol, max_iters):
    if cuda.grid(1) == 0:
        if acc[ACTIVE] != 0:
            phi = float64(-0.5) * (acc[XB] + acc[XR])
            acc[PHI + i] = phi
            acc[I] = float64(i)
            if progress and phi < 0 and (phi - acc[PHI + i - k]) / phi < k * progress_tol:
                acc[ACTIVE], acc[STOP] = float64(0), float64(2)
            elif acc[ITERS] < max_iters and math.sqrt(acc[RR]) <= tol * acc[BNORM]:
                acc[ACTIVE], acc[STOP] = float64(0), float64(1)
        acc[XB] = acc[XR] = float64(0)


@cuda.jit
def cg_axpy_if_cuda(c, s, j, x, y):
    if s[ACTIVE] != 0:
        a = y.dtype.type(c * s[j])
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            y[i] += a * x[i]


@cuda.jit
def cg_scale_if_cuda(s, j, x):
    if s[ACTIVE] != 0:
        a = x.dtype.type(s[j])
        for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
            x[i] *= a

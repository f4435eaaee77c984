"""Second-order kernels: the contracted second derivatives that the matrix-free
Hessian, Gauss-Newton and Fisher products (tinynet.curvature) apply per step.

Index legend: S, B, V, out are (n, d) arrays, one example per row; F, Y (n, k)
network outputs and targets. All are elementwise or row-wise, so one pass.

  `<f>_d2_mul_cpu(S, B, V, out)`: out = f''(z) * B * V, f'' written from the
      forward output S = f(z). This is (b^T ⊗ I) grad_zz f dz for an
      elementwise stage (seed 001, B_b D_zz): grad_zz f is diag(f'') spread
      over the (d, d, d) diagonal, so contracting it with b and dz leaves a
      product of three vectors.
  `mul_cpu(x, y, out)`: out = x * y (flat vectors).
  `bce_hess_vp_cpu(F, Y, V, scale, eps, fisher, out)`: out = scale * d * V with
      d = y/f^2 + (1-y)/(1-f)^2 (the loss's d2l/df2, thesis table 3.I) or, with
      fisher set, d = 1/(f(1-f)) (the Fisher's D(f), table 3.II); f clipped to
      [eps, 1-eps] as in the loss kernel.
  `softmax_hess_vp_cpu(F, Y, V, scale, fisher, out)`: out = scale * s *
      (p * V - p (p . V)) with p = softmax(F) and s = sum_j Y_j (s = 1 for the
      Fisher, whose D does not see the targets): (diag p - p p^T) V, appendix A.3
      / B.3 written on logits.
"""
import math

from numba import njit


@njit(cache=True, error_model="numpy")
def sigmoid_d2_mul_cpu(S, B, V, out):
    # constants in S's dtype, as in the CUDA twins (a bare 1 is float64 under Numba)
    n, d = S.shape
    one, two = S.dtype.type(1), S.dtype.type(2)
    for i in range(n):
        for j in range(d):
            s = S[i, j]
            out[i, j] = s * (one - s) * (one - two * s) * B[i, j] * V[i, j]


@njit(cache=True, error_model="numpy")
def tanh_d2_mul_cpu(S, B, V, out):
    n, d = S.shape
    one, two = S.dtype.type(1), S.dtype.type(2)
    for i in range(n):
        for j in range(d):
            t = S[i, j]
            out[i, j] = -two * t * (one - t * t) * B[i, j] * V[i, j]


@njit(cache=True, error_model="numpy")
def relu_d2_mul_cpu(S, B, V, out):
    # f'' = 0 away from the kink (and taken as 0 at it, as in relu_d2)
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = 0


@njit(cache=True, error_model="numpy")
def mul_cpu(x, y, out):
    for i in range(x.shape[0]):
        out[i] = x[i] * y[i]


@njit(cache=True, error_model="numpy")
def bce_hess_vp_cpu(F, Y, V, scale, eps, fisher, out):
    n, k = F.shape
    for i in range(n):
        for j in range(k):
            f = min(max(F[i, j], eps), 1 - eps)
            if fisher:
                d = 1 / (f * (1 - f))
            else:
                y = Y[i, j]
                d = y / (f * f) + (1 - y) / ((1 - f) * (1 - f))
            out[i, j] = scale * d * V[i, j]


@njit(cache=True, error_model="numpy")
def softmax_hess_vp_cpu(F, Y, V, scale, fisher, out):
    n, k = F.shape
    for i in range(n):
        m = F[i, 0]
        for j in range(1, k):
            m = max(m, F[i, j])
        se = 0.0
        for j in range(k):
            se += math.exp(F[i, j] - m)
        pv = 0.0
        ys = 0.0
        for j in range(k):
            pv += math.exp(F[i, j] - m) / se * V[i, j]
            ys += Y[i, j]
        if fisher:
            ys = 1.0
        for j in range(k):
            p = math.exp(F[i, j] - m) / se
            out[i, j] = scale * ys * p * (V[i, j] - pv)


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# Twins of the kernels above, same arguments. Elementwise ones: one thread per
# entry, grid-stride over n*d (e -> (i, j) = divmod(e, d)), as in
# tinynet.kernels.activations; the softmax one: one thread per row. Constants
# take the array's dtype so float32 stays float32 on the device.
# Backend wiring (CUDABackend): act_d2_mul -> <f>_d2_mul_cuda over S.size entries;
# mul -> mul_cuda over x.size; loss_hess_vp -> bce_hess_vp_cuda over F.size entries,
# softmax_hess_vp_cuda over F.shape[0] rows, mse = copy + scale(2 * scale).
from numba import cuda  # noqa: E402  (CUDA section of the module)


@cuda.jit
def sigmoid_d2_mul_cuda(S, B, V, out):
    n, d = S.shape
    one = S.dtype.type(1)
    two = S.dtype.type(2)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        s = S[i, j]
        out[i, j] = s * (one - s) * (one - two * s) * B[i, j] * V[i, j]


@cuda.jit
def tanh_d2_mul_cuda(S, B, V, out):
    n, d = S.shape
    one = S.dtype.type(1)
    two = S.dtype.type(2)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        t = S[i, j]
        out[i, j] = -two * t * (one - t * t) * B[i, j] * V[i, j]


@cuda.jit
def relu_d2_mul_cuda(S, B, V, out):
    n, d = S.shape
    zero = S.dtype.type(0)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        out[i, e - i * d] = zero


@cuda.jit
def mul_cuda(x, y, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = x[i] * y[i]


@cuda.jit
def bce_hess_vp_cuda(F, Y, V, scale, eps, fisher, out):
    n, k = F.shape
    one = F.dtype.type(1)
    for e in range(cuda.grid(1), n * k, cuda.gridsize(1)):
        i = e // k
        j = e - i * k
        f = min(max(F[i, j], eps), one - eps)
        if fisher:
            d = one / (f * (one - f))
        else:
            y = Y[i, j]
            d = y / (f * f) + (one - y) / ((one - f) * (one - f))
        out[i, j] = scale * d * V[i, j]


@cuda.jit
def softmax_hess_vp_cuda(F, Y, V, scale, fisher, out):
    n, k = F.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = F[i, 0]
        for j in range(1, k):
            m = max(m, F[i, j])
        se = F.dtype.type(0)
        for j in range(k):
            se += math.exp(F[i, j] - m)
        pv = F.dtype.type(0)
        ys = F.dtype.type(0)
        for j in range(k):
            pv += math.exp(F[i, j] - m) / se * V[i, j]
            ys += Y[i, j]
        if fisher:
            ys = F.dtype.type(1)
        for j in range(k):
            p = math.exp(F[i, j] - m) / se
            out[i, j] = scale * ys * p * (V[i, j] - pv)

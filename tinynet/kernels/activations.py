"""Elementwise activation kernels: forward, first and second derivatives.

Index legend: Z, S, G, out are (n, d) arrays, one example per row.
Each activation f is given by three kernels:
  `<f>_fwd(Z, out)`:      out = f(Z)
  `<f>_mul_d1(S, G, out)`: out = f'(Z) * G, with f' written in terms of the
                           forward output S = f(Z) (sigmoid, tanh) or of Z itself
                           (relu, where S > 0 iff Z > 0 so either works);
                           the same product is the vjp and the jvp of a
                           diagonal-Jacobian stage.
  `<f>_d2(S, out)`:        out = f''(Z), used by the second-order pieces.
"""
import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def sigmoid_fwd_cpu(Z, out):
    # branch-free: for very negative z, exp(-z) overflows to inf and 1 / inf = 0,
    # the exact limit; constants in Z's dtype keep float32 in float32
    n, d = Z.shape
    one = Z.dtype.type(1)
    for i in range(n):
        for j in range(d):
            out[i, j] = one / (one + math.exp(-Z[i, j]))


@njit(cache=True, error_model="numpy")
def sigmoid_fwd_f32_cpu(Z, out):
    """float32 sigmoid with a vectorizable exp: Numba has no SIMD exp, and the
    scalar libm call dominated the autoencoder's forward pass. exp(t) =
    2^k e^r with k = round(t / ln 2), r = t - k ln 2 (ln 2 split in two
    for an exact product), e^r by its degree-6 Taylor polynomial (|r| <= ln2/2:
    truncation 1.2e-7), and 2^k built from its IEEE bits. Relative error
    <= 4e-7 against float64 for |z| <= 80; for |z| > 87 the result is within
    1e-38 of the true value. float64 nets use `sigmoid_fwd_cpu`."""
    n, d = Z.shape
    p = np.empty(d, np.float32)
    kb = np.empty(d, np.int32)
    log2e = np.float32(1.4426950408889634)
    ln2hi = np.float32(0.693359375)
    ln2lo = np.float32(-2.12194440e-4)
    one = np.float32(1)
    for i in range(n):
        for j in range(d):
            t = min(max(-Z[i, j], np.float32(-87.0)), np.float32(88.0))
            k128 = np.int32(t * log2e + np.float32(128.5))          # k + 128, k = floor(t log2 e + 1/2)
            # k as a float from the int32 directly: Numba types any integer
            # arithmetic (k128 - 128) as int64, and AVX2 has no vector int64 -> float
            # convert, so float32(k) made the loop scalar there (1.9x slower on Zen 3)
            kf = np.float32(k128) - np.float32(128)
            r = t - kf * ln2hi - kf * ln2lo
            q = np.float32(1 / 720) * r + np.float32(1 / 120)
            q = q * r + np.float32(1 / 24)
            q = q * r + np.float32(1 / 6)
            q = q * r + np.float32(0.5)
            q = q * r + one
            p[j] = q * r + one
            kb[j] = (k128 - 1) << 23                                  # bits of 2^k: (k + 127) << 23
        s = kb.view(np.float32)
        for j in range(d):
            out[i, j] = one / (one + p[j] * s[j])


@njit(cache=True, error_model="numpy")
def sigmoid_mul_d1_cpu(S, G, out):
    # constants in S's dtype, as in the CUDA twins: a bare `1 - s` is float64
    # under Numba, which made the float32 loop convert every entry twice (1.4x slower)
    n, d = S.shape
    one = S.dtype.type(1)
    for i in range(n):
        for j in range(d):
            s = S[i, j]
            out[i, j] = G[i, j] * s * (one - s)


@njit(cache=True, error_model="numpy")
def sigmoid_d2_cpu(S, out):
    n, d = S.shape
    one, two = S.dtype.type(1), S.dtype.type(2)
    for i in range(n):
        for j in range(d):
            s = S[i, j]
            out[i, j] = s * (one - s) * (one - two * s)


@njit(cache=True, error_model="numpy")
def tanh_fwd_cpu(Z, out):
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = math.tanh(Z[i, j])


@njit(cache=True, error_model="numpy")
def tanh_mul_d1_cpu(S, G, out):
    n, d = S.shape
    one = S.dtype.type(1)
    for i in range(n):
        for j in range(d):
            t = S[i, j]
            out[i, j] = G[i, j] * (one - t * t)


@njit(cache=True, error_model="numpy")
def tanh_d2_cpu(S, out):
    n, d = S.shape
    one, two = S.dtype.type(1), S.dtype.type(2)
    for i in range(n):
        for j in range(d):
            t = S[i, j]
            out[i, j] = -two * t * (one - t * t)


@njit(cache=True, error_model="numpy")
def relu_fwd_cpu(Z, out):
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            z = Z[i, j]
            out[i, j] = z if z > 0 else 0


@njit(cache=True, error_model="numpy")
def relu_mul_d1_cpu(S, G, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = G[i, j] if S[i, j] > 0 else 0


@njit(cache=True, error_model="numpy")
def relu_d2_cpu(S, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = 0


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# One thread per entry (grid-stride over the n*d entries, e -> (i, j) = divmod(e, d)),
# so any launch size covers any shape. Constants take the array's dtype so float32
# stays float32 on the device. The GPU sigmoid uses the device's exp (fast in
# float32 there), so it needs no twin of sigmoid_fwd_f32_cpu.
from numba import cuda  # noqa: E402  (CUDA section of the module)


@cuda.jit
def sigmoid_fwd_cuda(Z, out):
    n, d = Z.shape
    one = Z.dtype.type(1)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        out[i, j] = one / (one + math.exp(-Z[i, j]))


@cuda.jit
def sigmoid_mul_d1_cuda(S, G, out):
    n, d = S.shape
    one = S.dtype.type(1)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        s = S[i, j]
        out[i, j] = G[i, j] * s * (one - s)


@cuda.jit
def sigmoid_d2_cuda(S, out):
    n, d = S.shape
    one = S.dtype.type(1)
    two = S.dtype.type(2)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        s = S[i, j]
        out[i, j] = s * (one - s) * (one - two * s)


@cuda.jit
def tanh_fwd_cuda(Z, out):
    n, d = Z.shape
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        out[i, j] = math.tanh(Z[i, j])


@cuda.jit
def tanh_mul_d1_cuda(S, G, out):
    n, d = S.shape
    one = S.dtype.type(1)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        t = S[i, j]
        out[i, j] = G[i, j] * (one - t * t)


@cuda.jit
def tanh_d2_cuda(S, out):
    n, d = S.shape
    one = S.dtype.type(1)
    two = S.dtype.type(2)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        t = S[i, j]
        out[i, j] = -two * t * (one - t * t)


@cuda.jit
def relu_fwd_cuda(Z, out):
    n, d = Z.shape
    zero = Z.dtype.type(0)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        z = Z[i, j]
        out[i, j] = z if z > zero else zero


@cuda.jit
def relu_mul_d1_cuda(S, G, out):
    n, d = S.shape
    zero = S.dtype.type(0)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        out[i, j] = G[i, j] if S[i, j] > zero else zero


@cuda.jit
def relu_d2_cuda(S, out):
    n, d = S.shape
    zero = S.dtype.type(0)
    for e in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = e // d
        j = e - i * d
        out[i, j] = zero

"""Pooling kernels: max and average pooling over kh x kw windows with stride
(sh, sw) and no padding, their input gradients, and max pooling's tangent map.

Index legend: n batch, C channels, H x W input size, kh x kw kernel, sh, sw
stride, Ho x Wo output size (Ho = (H - kh) / sh + 1), P = Ho*Wo output
positions per channel, D = C*H*W input entries, Q = C*P output entries.

  X  (n, D)   image rows, C-major: X[e, c*H*W + y*W + x]           (DESIGN.md, "Images")
  Y  (n, Q)   Y[e, c*P + oy*Wo + ox] = pool over the window
              {X[e, c, oy*sh + i, ox*sw + j] : 0 <= i < kh, 0 <= j < kw}
  A  (n, Q)   int64: for max pooling, the column of X holding the window's max
              (the first max in row-major window order, as PyTorch; a NaN wins,
              as in PyTorch, so NaNs propagate)
  B  (n, Q)   a signal on the output;  dX (n, D) the signal it gives the input

  max:  Y[e, q] = X[e, A[e, q]]        dX[e, m] = sum_{q : A[e, q] = m} B[e, q]
  avg:  Y[e, q] = mean of the window   dX[e, m] = sum_{q : m in window q} B[e, q] / (kh*kw)

Both pooling maps are linear in X once A is fixed, so a tangent dZ maps to
maxpool_jvp(dZ, A) (the entries at the argmax) and to avgpool_fwd(dZ).

CPU twins are serial `@njit` loops, the input gradients as scatters (each
output entry adds onto its input pixels). CUDA twins run one thread per
written entry; the input gradients are gathers (each input pixel sums the
windows that contain it, in the same (oy, ox) row-major order as the CPU
scatter), so no atomics, the same result on every run, and the same
summation order as the CPU twin.
"""
import math

from numba import njit

# ---------------------------------------------------------------- CPU (@njit)


@njit(cache=True, error_model="numpy")
def _maxpool2x2_fwd_cpu(X, Y, A, C, H, W, Ho, Wo):
    """maxpool_fwd_cpu for 2 x 2 windows at stride 2 (the CNNs' geometry), the
    four entries in straight-line code in the same order: the same Y and A
    (ties, NaN), 3.9 -> 2.7 ms on cifar-cnn's (128, 6, 28, 28) on a Zen 3,
    where the generic loop nest of 2-trip loops was the step's top kernel."""
    n = X.shape[0]
    P = Ho * Wo
    for e in range(n):
        x, y, a = X[e], Y[e], A[e]
        for c in range(C):
            for oy in range(Ho):
                r0 = c * H * W + 2 * oy * W
                q0 = c * P + oy * Wo
                for ox in range(Wo):
                    b = r0 + 2 * ox
                    m = x[b]
                    for i in (b + 1, b + W, b + W + 1):
                        v = x[i]
                        take = (v > m) | (v != v)          # a NaN wins (module docstring)
                        m = v if take else m
                        b = i if take else b
                    y[q0 + ox] = m
                    a[q0 + ox] = b


@njit(cache=True, error_model="numpy")
def maxpool_fwd_cpu(X, Y, A, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """Y = the window maxima of X, A = the column of X each comes from."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2:
        _maxpool2x2_fwd_cpu(X, Y, A, C, H, W, Ho, Wo)
        return
    n = X.shape[0]
    P = Ho * Wo
    for e in range(n):
        for c in range(C):
            base = c * H * W
            for oy in range(Ho):
                for ox in range(Wo):
                    best = base + oy * sh * W + ox * sw
                    m = X[e, best]
                    for i in range(kh):
                        row = base + (oy * sh + i) * W + ox * sw
                        for j in range(kw):
                            v = X[e, row + j]
                            if v > m or math.isnan(v):
                                m = v
                                best = row + j
                    q = c * P + oy * Wo + ox
                    Y[e, q] = m
                    A[e, q] = best


@njit(cache=True, error_model="numpy")
def maxpool_bwd_cpu(B, A, dX, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """dX[e, m] = sum of B[e, q] over the outputs q whose argmax is m
    (dX is overwritten)."""
    n, Q = B.shape
    dX[:, :] = 0
    for e in range(n):
        for q in range(Q):
            dX[e, A[e, q]] += B[e, q]


@njit(cache=True, error_model="numpy")
def maxpool_jvp_cpu(dZ, A, dY):
    """dY[e, q] = dZ[e, A[e, q]]: the tangent of max pooling at fixed argmax."""
    n, Q = dY.shape
    for e in range(n):
        for q in range(Q):
            dY[e, q] = dZ[e, A[e, q]]


@njit(cache=True, error_model="numpy")
def avgpool_fwd_cpu(X, Y, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """Y = the window means of X (the window sum divided by kh*kw)."""
    n = X.shape[0]
    P = Ho * Wo
    area = Y.dtype.type(kh * kw)
    for e in range(n):
        for c in range(C):
            base = c * H * W
            for oy in range(Ho):
                for ox in range(Wo):
                    acc = Y.dtype.type(0)
                    for i in range(kh):
                        row = base + (oy * sh + i) * W + ox * sw
                        for j in range(kw):
                            acc += X[e, row + j]
                    Y[e, c * P + oy * Wo + ox] = acc / area


@njit(cache=True, error_model="numpy")
def avgpool_bwd_cpu(B, dX, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """dX[e, m] = (sum of B[e, q] over the windows q containing m) / (kh*kw)
    (dX is overwritten)."""
    n = B.shape[0]
    P = Ho * Wo
    area = dX.dtype.type(kh * kw)
    dX[:, :] = 0
    for e in range(n):
        for c in range(C):
            base = c * H * W
            for oy in range(Ho):
                for ox in range(Wo):
                    b = B[e, c * P + oy * Wo + ox]
                    for i in range(kh):
                        row = base + (oy * sh + i) * W + ox * sw
                        for j in range(kw):
                            dX[e, row + j] += b
    for e in range(n):
        for m in range(dX.shape[1]):
            dX[e, m] = dX[e, m] / area


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# Same meaning and argument order as the CPU twins; launched by the backend
# with one thread per entry of the array each kernel writes (grid-stride loops).
from numba import cuda  # noqa: E402  (CUDA section of the module)


# The output positions o (along one axis) whose window [o*s, o*s + k) contains
# input position y form the range [lo, hi) with lo = 0 if y < k else
# (y - k) // s + 1 and hi = min(y // s + 1, n_out). Written inline in the two
# gathers below: a @cuda.jit(device=True) helper would keep them out of the
# PTX compile check (tests/test_cuda_compile.py), which cannot link one
# without a GPU.


@cuda.jit
def maxpool_fwd_cuda(X, Y, A, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """Y, A as the CPU twin; one thread per entry of Y."""
    n, Q = Y.shape
    P = Ho * Wo
    for t in range(cuda.grid(1), n * Q, cuda.gridsize(1)):
        e = t // Q
        q = t - e * Q
        c = q // P
        p = q - c * P
        oy = p // Wo
        ox = p - oy * Wo
        base = c * H * W
        best = base + oy * sh * W + ox * sw
        m = X[e, best]
        for i in range(kh):
            row = base + (oy * sh + i) * W + ox * sw
            for j in range(kw):
                v = X[e, row + j]
                if v > m or math.isnan(v):
                    m = v
                    best = row + j
        Y[e, q] = m
        A[e, q] = best


@cuda.jit
def maxpool_bwd_cuda(B, A, dX, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """dX as the CPU twin, as a gather: one thread per input pixel sums B over
    the windows that contain it and whose argmax it is."""
    n, D = dX.shape
    P = Ho * Wo
    HW = H * W
    for t in range(cuda.grid(1), n * D, cuda.gridsize(1)):
        e = t // D
        f = t - e * D
        c = f // HW
        g = f - c * HW
        y = g // W
        x = g - y * W
        ylo = 0 if y < kh else (y - kh) // sh + 1
        yhi = min(y // sh + 1, Ho)
        xlo = 0 if x < kw else (x - kw) // sw + 1
        xhi = min(x // sw + 1, Wo)
        acc = dX.dtype.type(0)
        for oy in range(ylo, yhi):
            for ox in range(xlo, xhi):
                q = c * P + oy * Wo + ox
                if A[e, q] == f:
                    acc += B[e, q]
        dX[e, f] = acc


@cuda.jit
def maxpool_jvp_cuda(dZ, A, dY):
    """dY[e, q] = dZ[e, A[e, q]]; one thread per entry of dY."""
    n, Q = dY.shape
    for t in range(cuda.grid(1), n * Q, cuda.gridsize(1)):
        e = t // Q
        q = t - e * Q
        dY[e, q] = dZ[e, A[e, q]]


@cuda.jit
def avgpool_fwd_cuda(X, Y, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """Y as the CPU twin; one thread per entry of Y."""
    n, Q = Y.shape
    P = Ho * Wo
    area = Y.dtype.type(kh * kw)
    for t in range(cuda.grid(1), n * Q, cuda.gridsize(1)):
        e = t // Q
        q = t - e * Q
        c = q // P
        p = q - c * P
        oy = p // Wo
        ox = p - oy * Wo
        base = c * H * W
        acc = Y.dtype.type(0)
        for i in range(kh):
            row = base + (oy * sh + i) * W + ox * sw
            for j in range(kw):
                acc += X[e, row + j]
        Y[e, q] = acc / area


@cuda.jit
def avgpool_bwd_cuda(B, dX, C, H, W, kh, kw, sh, sw, Ho, Wo):
    """dX as the CPU twin, as a gather: one thread per input pixel sums B over
    the windows that contain it, then divides by kh*kw."""
    n, D = dX.shape
    P = Ho * Wo
    HW = H * W
    area = dX.dtype.type(kh * kw)
    for t in range(cuda.grid(1), n * D, cuda.gridsize(1)):
        e = t // D
        f = t - e * D
        c = f // HW
        g = f - c * HW
        y = g // W
        x = g - y * W
        ylo = 0 if y < kh else (y - kh) // sh + 1
        yhi = min(y // sh + 1, Ho)
        xlo = 0 if x < kw else (x - kw) // sw + 1
        xhi = min(x // sw + 1, Wo)
        acc = dX.dtype.type(0)
        for oy in range(ylo, yhi):
            for ox in range(xlo, xhi):
                acc += B[e, c * P + oy * Wo + ox]
        dX[e, f] = acc / area

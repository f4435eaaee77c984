"""Convolution kernels: the patch matrix (im2col), its adjoint (col2im), and the
two layouts of a convolution's output (per-position rows and C-major images).

Index legend: n batch, C in-channels, H x W input size, kh x kw kernel, sh, sw
stride, ph, pw zero padding, Ho x Wo output size, P = Ho*Wo output positions,
K = C*kh*kw patch entries, O out-channels.

  X  (n, C*H*W)   image rows, C-major: X[e, c*H*W + y*W + x]        (DESIGN.md, "Images")
  U  (n*P, K)     patch rows: U[e*P + oy*Wo + ox, c*kh*kw + i*kw + j]
                  = X[e, c, oy*sh - ph + i, ox*sw - pw + j]  (0 outside the image)
  R  (n*P, O)     one row per output position (what U @ W^T gives)
  Y  (n, O*P)     the image layout of the same numbers: Y[e, o*P + p] = R[e*P + p, o]

The column order of U is that of PyTorch's weight.reshape(O, -1), so a
convolution is U @ W^T + b with W = torch_weight.reshape(O, K): Linear's
product on patch rows. col2im is the transpose of im2col (the sum over the
patches that contain each input pixel), which is what back-propagation and
the Hessian products need.

CPU twins are serial `@njit` loops (the GEMMs, not these, carry the flops);
CUDA twins run one thread per output entry, col2im as a gather (each input
pixel sums its own patches), so no atomics and the same summation order on
every run.
"""
import numpy as np
from numba import njit

# ---------------------------------------------------------------- CPU (@njit)


@njit(cache=True)
def im2col_cpu(X, U, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """U = the patch rows of X (module docstring); every entry of U is written."""
    n = X.shape[0]
    P = Ho * Wo
    z = U.dtype.type(0)
    for e in range(n):
        for oy in range(Ho):
            for ox in range(Wo):
                r = e * P + oy * Wo + ox
                k = 0
                for c in range(C):
                    base = c * H * W
                    for i in range(kh):
                        y = oy * sh - ph + i
                        for j in range(kw):
                            x = ox * sw - pw + j
                            if 0 <= y < H and 0 <= x < W:
                                U[r, k] = X[e, base + y * W + x]
                            else:
                                U[r, k] = z
                            k += 1


@njit(cache=True)
def col2im_cpu(dU, dX, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """dX = im2col^T dU: each patch entry added back onto its input pixel
    (dX is overwritten)."""
    n = dX.shape[0]
    P = Ho * Wo
    dX[:, :] = 0
    for e in range(n):
        for oy in range(Ho):
            for ox in range(Wo):
                r = e * P + oy * Wo + ox
                k = 0
                for c in range(C):
                    base = c * H * W
                    for i in range(kh):
                        y = oy * sh - ph + i
                        for j in range(kw):
                            x = ox * sw - pw + j
                            if 0 <= y < H and 0 <= x < W:
                                dX[e, base + y * W + x] += dU[r, k]
                            k += 1


@njit(cache=True)
def rows_to_chw_cpu(R, Y, P):
    """Y[e, o*P + p] = R[e*P + p, o]: per-position rows -> C-major image rows."""
    n = Y.shape[0]
    O = R.shape[1]
    for e in range(n):
        for p in range(P):
            for o in range(O):
                Y[e, o * P + p] = R[e * P + p, o]


@njit(cache=True)
def chw_to_rows_cpu(Y, R, P):
    """R[e*P + p, o] = Y[e, o*P + p]: the inverse of rows_to_chw."""
    n = Y.shape[0]
    O = R.shape[1]
    for e in range(n):
        for o in range(O):
            for p in range(P):
                R[e * P + p, o] = Y[e, o * P + p]


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# Same meaning and argument order as the CPU twins; launched by the backend
# with one thread per entry of the array each kernel writes (grid-stride loops).
from numba import cuda  # noqa: E402  (CUDA section of the module)


@cuda.jit
def im2col_cuda(X, U, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """U = the patch rows of X; one thread per entry of U."""
    m, K = U.shape
    P = Ho * Wo
    khw = kh * kw
    for t in range(cuda.grid(1), m * K, cuda.gridsize(1)):
        r = t // K
        k = t - r * K
        e = r // P
        p = r - e * P
        oy = p // Wo
        ox = p - oy * Wo
        c = k // khw
        q = k - c * khw
        i = q // kw
        j = q - i * kw
        y = oy * sh - ph + i
        x = ox * sw - pw + j
        if 0 <= y < H and 0 <= x < W:
            U[r, k] = X[e, c * H * W + y * W + x]
        else:
            U[r, k] = U.dtype.type(0)


@cuda.jit
def col2im_cuda(dU, dX, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """dX = im2col^T dU as a gather: one thread per input pixel sums the patch
    entries that read it (kernel offsets (i, j) with oy*sh - ph + i = y)."""
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
        acc = dX.dtype.type(0)
        for i in range(kh):
            ty = y + ph - i
            if ty >= 0 and ty % sh == 0 and ty // sh < Ho:
                oy = ty // sh
                for j in range(kw):
                    tx = x + pw - j
                    if tx >= 0 and tx % sw == 0 and tx // sw < Wo:
                        ox = tx // sw
                        acc += dU[e * P + oy * Wo + ox, (c * kh + i) * kw + j]
        dX[e, f] = acc


@cuda.jit
def rows_to_chw_cuda(R, Y, P):
    """Y[e, o*P + p] = R[e*P + p, o]; one thread per entry of Y."""
    n, D = Y.shape
    for t in range(cuda.grid(1), n * D, cuda.gridsize(1)):
        e = t // D
        f = t - e * D
        o = f // P
        p = f - o * P
        Y[e, f] = R[e * P + p, o]


@cuda.jit
def chw_to_rows_cuda(Y, R, P):
    """R[e*P + p, o] = Y[e, o*P + p]; one thread per entry of R."""
    m, O = R.shape
    for t in range(cuda.grid(1), m * O, cuda.gridsize(1)):
        r = t // O
        o = t - r * O
        e = r // P
        p = r - e * P
        R[r, o] = Y[e, o * P + p]

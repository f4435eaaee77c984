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

The training path (Conv2d.forward / vjp) never forms U: three kernels read
the image rows themselves and write or take the image layout, so neither the
patch matrix nor a layout change is needed (the GEMMs of a small convolution
are skinny, (n*P) x K x O with O = 6 or 16, where BLAS runs at a few
GFLOP/s, and U is the step's largest array):

  conv_fwd    Y[e, o*P + p] = b[o] + sum_k W[o, k] U[e*P + p, k]      (U W^T + 1 b^T, image layout)
  conv_wgrad  gW^T[k, o] = sum_{e,p} U[e*P + p, k] B[e, o*P + p],  gb[o] = sum_{e,p} B[e, o*P + p]
  conv_igrad  dX = col2im(B_r W),  B_r[e*P + p, o] = B[e, o*P + p]

with B a signal in the image layout of Y. Their CPU twins work one example
at a time in a scratch that stays in cache:
  stride 1 ("wide rows"): on the zero-padded example Xp (C, Hp, Wp) flattened,
    patch entry k = (c, i, j) of output (oy, ox) is Xp.flat[off_k + q] with
    off_k = c*Hp*Wp + i*Wp + j and q = oy*Wp + ox, so each product is a sum
    of shifted contiguous rows of length L = (Ho-1)*Wp + Wo; the Wp - Wo
    columns of each output row past Wo are computed and dropped (forward),
    or carried as zeros (gradients);
  other strides: the example's patch columns S (K, P), S[k, p] = U[e*P + p, k],
    are formed in the scratch (the same sums with off_k = k*P and L = P).
The products are register-blocked (two outputs and four summed terms per
pass over the rows) with each sum kept in the order of the plain loop
(y + a0 + a1 + a2 + a3, left to right), so conv_fwd and conv_igrad sum in k
and o order; conv_wgrad's dot products over positions (eight per pass) are
vectorized with reassociation (fastmath "reassoc", deterministic for a given
build). U itself (im2col, also through the per-example scratch) is formed only
for the Kronecker-rows hook and the host methods.

CPU twins are serial `@njit` loops over contiguous rows (views of reshaped
arrays indexed by loop counters only, so that LLVM vectorizes them; numba
parallel=True is not used: its threads fight OpenBLAS's pool). CUDA twins run
one thread per output entry, col2im and conv_igrad as gathers (each input
pixel sums its own patches, in the CPU's order), so no atomics and the same
summation order on every run.
"""
import numpy as np
from numba import njit

# ---------------------------------------------------------------- CPU (@njit)


@njit(cache=True)
def im2col_cpu(X, U, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """U = the patch rows of X (module docstring); every entry of U is written.
    Per example: its patch columns S (K, P) in a scratch (strided 2-D block
    copies, _unfold_one), then transposed into the example's P rows."""
    n = X.shape[0]
    Kp = C * kh * kw
    P = Ho * Wo
    X4 = X.reshape(n, C, H, W)
    U3 = U.reshape(n, P, Kp)
    S = np.empty((Kp, P), dtype=U.dtype)
    S3 = S.reshape(Kp, Ho, Wo)
    for e in range(n):
        _unfold_one(X4[e], S3, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)
        Ue = U3[e]
        for p in range(P):
            for k in range(Kp):
                Ue[p, k] = S[k, p]


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
def chw_to_rows_cpu(Y, R, P):
    """R[e*P + p, o] = Y[e, o*P + p]: image rows -> one row per output position."""
    n = Y.shape[0]
    O = R.shape[1]
    for e in range(n):
        for o in range(O):
            for p in range(P):
                R[e * P + p, o] = Y[e, o * P + p]


@njit(cache=True)
def _x_range(j, pw, sw, W, Wo):
    """[lo, hi): the output columns ox whose input column ox*sw - pw + j lies
    inside the image (0 <= . < W), for kernel column j; lo <= hi. (The same
    for rows: _x_range(i, ph, sh, H, Ho).)"""
    lo = 0
    if pw - j > 0:
        lo = (pw - j + sw - 1) // sw
    hi = 0
    if W - 1 + pw - j >= 0:
        hi = min(Wo, (W - 1 + pw - j) // sw + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def _wide_offsets(C, kh, kw, Hp, Wp):
    """off[k] = c*Hp*Wp + i*Wp + j for patch entry k = (c, i, j)."""
    off = np.empty(C * kh * kw, dtype=np.int64)
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                off[(c * kh + i) * kw + j] = c * Hp * Wp + i * Wp + j
    return off


@njit(cache=True)
def _padded(Xe, Xp, ph, pw):
    """Example Xe (C, H, W) zero-padded, flattened: Xe itself without padding,
    else written into Xp (C*Hp*Wp,)."""
    C, H, W = Xe.shape
    if ph == 0 and pw == 0:
        return Xe.reshape(-1)
    Xp[:] = 0
    Xp3 = Xp.reshape(C, H + 2 * ph, W + 2 * pw)
    Xp3[:, ph:ph + H, pw:pw + W] = Xe
    return Xp


@njit(cache=True)
def _unfold_one(Xe, S3, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """S3 (K, Ho, Wo) = the patch columns of one example Xe (C, H, W):
    S3[k, oy, ox] = U[oy*Wo + ox, k], 0 in the padding."""
    z = S3.dtype.type(0)
    for c in range(C):
        for i in range(kh):
            ylo, yhi = _x_range(i, ph, sh, H, Ho)
            y0 = ylo * sh - ph + i
            for j in range(kw):
                lo, hi = _x_range(j, pw, sw, W, Wo)
                x0 = lo * sw - pw + j
                Sk = S3[(c * kh + i) * kw + j]
                Sk[:ylo, :] = z
                Sk[yhi:, :] = z
                Sk[ylo:yhi, :lo] = z
                Sk[ylo:yhi, hi:] = z
                if yhi > ylo and hi > lo:
                    Sk[ylo:yhi, lo:hi] = Xe[c, y0:y0 + (yhi - ylo - 1) * sh + 1:sh,
                                            x0:x0 + (hi - lo - 1) * sw + 1:sw]


@njit(cache=True)
def _fold_one(dS3, dXe, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """dXe (C, H, W) += the adjoint of _unfold_one applied to dS3, in (c, i, j) order."""
    for c in range(C):
        for i in range(kh):
            ylo, yhi = _x_range(i, ph, sh, H, Ho)
            y0 = ylo * sh - ph + i
            for j in range(kw):
                lo, hi = _x_range(j, pw, sw, W, Wo)
                x0 = lo * sw - pw + j
                k = (c * kh + i) * kw + j
                for oy in range(ylo, yhi):
                    xs = dXe[c, y0 + (oy - ylo) * sh]
                    vs = dS3[k, oy, lo:hi]
                    if sw == 1:
                        xs = xs[x0:x0 + hi - lo]
                        for t in range(hi - lo):
                            xs[t] += vs[t]
                    else:
                        for t in range(hi - lo):
                            xs[x0 + t * sw] += vs[t]


@njit(cache=True)
def _rows_fwd(xf, off, L, WT, b, Ye):
    """Ye[o, q] = b[o] + sum_k WT[k, o] xf[off[k] + q] for q < L, in k order;
    two outputs per pass over the rows (one for an odd last), four k per pass."""
    Kp, O = WT.shape
    K4 = Kp - Kp % 4
    O2 = O - O % 2
    for o in range(0, O2, 2):
        ya = Ye[o]
        yb = Ye[o + 1]
        ba = b[o]
        bb = b[o + 1]
        for q in range(L):
            ya[q] = ba
            yb[q] = bb
        for k in range(0, K4, 4):
            a0, a1, a2, a3 = WT[k, o], WT[k + 1, o], WT[k + 2, o], WT[k + 3, o]
            c0, c1, c2, c3 = WT[k, o + 1], WT[k + 1, o + 1], WT[k + 2, o + 1], WT[k + 3, o + 1]
            x0 = xf[off[k]:]
            x1 = xf[off[k + 1]:]
            x2 = xf[off[k + 2]:]
            x3 = xf[off[k + 3]:]
            for q in range(L):
                u0 = x0[q]
                u1 = x1[q]
                u2 = x2[q]
                u3 = x3[q]
                ya[q] = ya[q] + a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3
                yb[q] = yb[q] + c0 * u0 + c1 * u1 + c2 * u2 + c3 * u3
        for k in range(K4, Kp):
            a0 = WT[k, o]
            c0 = WT[k, o + 1]
            xs = xf[off[k]:]
            for q in range(L):
                ya[q] += a0 * xs[q]
                yb[q] += c0 * xs[q]
    for o in range(O2, O):
        yo = Ye[o]
        bo = b[o]
        for q in range(L):
            yo[q] = bo
        for k in range(0, K4, 4):
            w0, w1, w2, w3 = WT[k, o], WT[k + 1, o], WT[k + 2, o], WT[k + 3, o]
            x0 = xf[off[k]:]
            x1 = xf[off[k + 1]:]
            x2 = xf[off[k + 2]:]
            x3 = xf[off[k + 3]:]
            for q in range(L):
                yo[q] = yo[q] + w0 * x0[q] + w1 * x1[q] + w2 * x2[q] + w3 * x3[q]
        for k in range(K4, Kp):
            w = WT[k, o]
            xs = xf[off[k]:]
            for q in range(L):
                yo[q] += w * xs[q]


@njit(cache=True, fastmath={"reassoc"})
def _rows_wgrad(xf, off, L, Be, gWT):
    """gWT[k, o] += sum_{q < L} xf[off[k] + q] Be[o, q]: eight dot products
    (four k x two o) per pass, vectorized with reassociation."""
    Kp, O = gWT.shape
    K4 = Kp - Kp % 4
    O2 = O - O % 2
    z = gWT.dtype.type(0)
    for k in range(0, K4, 4):
        x0 = xf[off[k]:]
        x1 = xf[off[k + 1]:]
        x2 = xf[off[k + 2]:]
        x3 = xf[off[k + 3]:]
        for o in range(0, O2, 2):
            b0 = Be[o]
            b1 = Be[o + 1]
            s00 = z
            s01 = z
            s10 = z
            s11 = z
            s20 = z
            s21 = z
            s30 = z
            s31 = z
            for q in range(L):
                c = b0[q]
                d = b1[q]
                u0 = x0[q]
                u1 = x1[q]
                u2 = x2[q]
                u3 = x3[q]
                s00 += u0 * c
                s01 += u0 * d
                s10 += u1 * c
                s11 += u1 * d
                s20 += u2 * c
                s21 += u2 * d
                s30 += u3 * c
                s31 += u3 * d
            gWT[k, o] += s00
            gWT[k, o + 1] += s01
            gWT[k + 1, o] += s10
            gWT[k + 1, o + 1] += s11
            gWT[k + 2, o] += s20
            gWT[k + 2, o + 1] += s21
            gWT[k + 3, o] += s30
            gWT[k + 3, o + 1] += s31
        for o in range(O2, O):
            bo = Be[o]
            s0 = z
            s1 = z
            s2 = z
            s3 = z
            for q in range(L):
                c = bo[q]
                s0 += x0[q] * c
                s1 += x1[q] * c
                s2 += x2[q] * c
                s3 += x3[q] * c
            gWT[k, o] += s0
            gWT[k + 1, o] += s1
            gWT[k + 2, o] += s2
            gWT[k + 3, o] += s3
    for k in range(K4, Kp):
        xs = xf[off[k]:]
        for o in range(O):
            bo = Be[o]
            s = z
            for q in range(L):
                s += xs[q] * bo[q]
            gWT[k, o] += s


@njit(cache=True)
def _rows_igrad(Be, WT, off, L, dxf, t):
    """dxf[off[k] + q] += sum_o WT[k, o] Be[o, q] for q < L: per k the sum over
    o (in o order, four per pass) into a row of t (2, L), two k per pass, then
    added in k order."""
    Kp, O = WT.shape
    O4 = O - O % 4
    z = t.dtype.type(0)
    ta = t[0]
    tb = t[1]
    for k0 in range(0, Kp, 2):
        two = k0 + 1 < Kp
        k1 = k0 + 1 if two else k0        # an odd last k is summed twice, added once
        for q in range(L):
            ta[q] = z
            tb[q] = z
        for o in range(0, O4, 4):
            w0, w1, w2, w3 = WT[k0, o], WT[k0, o + 1], WT[k0, o + 2], WT[k0, o + 3]
            v0, v1, v2, v3 = WT[k1, o], WT[k1, o + 1], WT[k1, o + 2], WT[k1, o + 3]
            b0, b1, b2, b3 = Be[o], Be[o + 1], Be[o + 2], Be[o + 3]
            for q in range(L):
                c0 = b0[q]
                c1 = b1[q]
                c2 = b2[q]
                c3 = b3[q]
                ta[q] = ta[q] + w0 * c0 + w1 * c1 + w2 * c2 + w3 * c3
                tb[q] = tb[q] + v0 * c0 + v1 * c1 + v2 * c2 + v3 * c3
        for o in range(O4, O):
            w = WT[k0, o]
            v = WT[k1, o]
            bo = Be[o]
            for q in range(L):
                ta[q] += w * bo[q]
                tb[q] += v * bo[q]
        xs = dxf[off[k0]:]
        for q in range(L):
            xs[q] += ta[q]
        if two:
            xs = dxf[off[k1]:]
            for q in range(L):
                xs[q] += tb[q]


@njit(cache=True)
def conv_fwd_cpu(X, WT, b, Y, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """Y[e, o*P + p] = b[o] + sum_k WT[k, o] U[e*P + p, k] (U W^T + 1 b^T in the
    image layout), summed in k order, one example at a time (module docstring)."""
    n = X.shape[0]
    Kp, O = WT.shape
    P = Ho * Wo
    X4 = X.reshape(n, C, H, W)
    if sh == 1 and sw == 1:
        Hp, Wp = H + 2 * ph, W + 2 * pw
        L = (Ho - 1) * Wp + Wo
        off = _wide_offsets(C, kh, kw, Hp, Wp)
        Xp = np.empty(C * Hp * Wp, dtype=X.dtype)
        Yw = np.empty((O, Ho * Wp), dtype=X.dtype)
        Yw3 = Yw.reshape(O, Ho, Wp)
        Y4 = Y.reshape(n, O, Ho, Wo)
        for e in range(n):
            xf = _padded(X4[e], Xp, ph, pw)
            _rows_fwd(xf, off, L, WT, b, Yw)
            for o in range(O):
                for oy in range(Ho):
                    for ox in range(Wo):
                        Y4[e, o, oy, ox] = Yw3[o, oy, ox]
    else:
        S = np.empty(Kp * P, dtype=X.dtype)
        S3 = S.reshape(Kp, Ho, Wo)
        off = np.arange(Kp) * P
        Y3 = Y.reshape(n, O, P)
        for e in range(n):
            _unfold_one(X4[e], S3, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)
            _rows_fwd(S, off, P, WT, b, Y3[e])


@njit(cache=True, fastmath={"reassoc"})
def conv_wgrad_cpu(X, B, gWT, gb, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """gWT[k, o] = sum_{e,p} U[e*P + p, k] B[e, o*P + p] (U^T B_r) and
    gb[o] = sum_{e,p} B[e, o*P + p] (1^T B_r), both overwritten."""
    n = X.shape[0]
    Kp, O = gWT.shape
    P = Ho * Wo
    X4 = X.reshape(n, C, H, W)
    B3 = B.reshape(n, O, P)
    z = gWT.dtype.type(0)
    gWT[:, :] = z
    gb[:] = z
    for e in range(n):
        for o in range(O):
            s = z
            br = B3[e, o]
            for p in range(P):
                s += br[p]
            gb[o] += s
    if sh == 1 and sw == 1:
        Hp, Wp = H + 2 * ph, W + 2 * pw
        L = (Ho - 1) * Wp + Wo
        off = _wide_offsets(C, kh, kw, Hp, Wp)
        Xp = np.empty(C * Hp * Wp, dtype=X.dtype)
        Bw = np.zeros((O, Ho * Wp), dtype=X.dtype)         # columns past Wo stay 0
        Bw3 = Bw.reshape(O, Ho, Wp)
        B4 = B.reshape(n, O, Ho, Wo)
        for e in range(n):
            xf = _padded(X4[e], Xp, ph, pw)
            for o in range(O):
                for oy in range(Ho):
                    for ox in range(Wo):
                        Bw3[o, oy, ox] = B4[e, o, oy, ox]
            _rows_wgrad(xf, off, L, Bw, gWT)
    else:
        S = np.empty(Kp * P, dtype=X.dtype)
        S3 = S.reshape(Kp, Ho, Wo)
        off = np.arange(Kp) * P
        for e in range(n):
            _unfold_one(X4[e], S3, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)
            _rows_wgrad(S, off, P, B3[e], gWT)


@njit(cache=True)
def conv_igrad_cpu(B, WT, dX, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """dX = col2im(B_r W), B_r[e*P + p, o] = B[e, o*P + p]: the transposed
    convolution (dX overwritten); each pixel sums its patches in k order, each
    patch entry its sum over o in o order."""
    n = B.shape[0]
    Kp, O = WT.shape
    P = Ho * Wo
    B3 = B.reshape(n, O, P)
    X4 = dX.reshape(n, C, H, W)
    if sh == 1 and sw == 1:
        Hp, Wp = H + 2 * ph, W + 2 * pw
        L = (Ho - 1) * Wp + Wo
        off = _wide_offsets(C, kh, kw, Hp, Wp)
        Xp = np.empty(C * Hp * Wp, dtype=B.dtype)
        Xp3 = Xp.reshape(C, Hp, Wp)
        Bw = np.zeros((O, Ho * Wp), dtype=B.dtype)         # columns past Wo stay 0
        Bw3 = Bw.reshape(O, Ho, Wp)
        t = np.empty((2, L), dtype=B.dtype)
        B4 = B.reshape(n, O, Ho, Wo)
        for e in range(n):
            for o in range(O):
                for oy in range(Ho):
                    for ox in range(Wo):
                        Bw3[o, oy, ox] = B4[e, o, oy, ox]
            if ph == 0 and pw == 0:
                dxf = dX[e]
                dxf[:] = 0
                _rows_igrad(Bw, WT, off, L, dxf, t)
            else:
                Xp[:] = 0
                _rows_igrad(Bw, WT, off, L, Xp, t)
                X4[e, :, :, :] = Xp3[:, ph:ph + H, pw:pw + W]
    else:
        S = np.empty(Kp * P, dtype=B.dtype)
        S3 = S.reshape(Kp, Ho, Wo)
        off = np.arange(Kp) * P
        t = np.empty((2, P), dtype=B.dtype)
        for e in range(n):
            S[:] = 0
            _rows_igrad(B3[e], WT, off, P, S, t)
            X4[e, :, :, :] = 0
            _fold_one(S3, X4[e], C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)


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
def chw_to_rows_cuda(Y, R, P):
    """R[e*P + p, o] = Y[e, o*P + p]; one thread per entry of R."""
    m, O = R.shape
    for t in range(cuda.grid(1), m * O, cuda.gridsize(1)):
        r = t // O
        o = t - r * O
        e = r // P
        p = r - e * P
        R[r, o] = Y[e, o * P + p]



@cuda.jit
def conv_fwd_cuda(X, WT, b, Y, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """Y[e, o*P + p] = b[o] + sum_k WT[k, o] U[e*P + p, k] in k order (padding
    entries add WT[k, o] * 0, as on the CPU); one thread per entry of Y."""
    n, D = Y.shape
    O = WT.shape[1]
    P = Ho * Wo
    z = Y.dtype.type(0)
    for t in range(cuda.grid(1), n * D, cuda.gridsize(1)):
        e = t // D
        f = t - e * D
        o = f // P
        p = f - o * P
        oy = p // Wo
        ox = p - oy * Wo
        acc = b[o]
        for c in range(C):
            for i in range(kh):
                y = oy * sh - ph + i
                for j in range(kw):
                    x = ox * sw - pw + j
                    v = z
                    if 0 <= y < H and 0 <= x < W:
                        v = X[e, c * H * W + y * W + x]
                    acc += WT[(c * kh + i) * kw + j, o] * v
        Y[e, f] = acc


@cuda.jit
def conv_wgrad_cuda(X, B, gWT, gb, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """gWT[k, o] = sum_{e,p} U[e*P + p, k] B[e, o*P + p], gb[o] = sum_{e,p}
    B[e, o*P + p]; one thread per entry of gWT then of gb (K*O + O threads)."""
    Kp, O = gWT.shape
    n = X.shape[0]
    P = Ho * Wo
    khw = kh * kw
    for t in range(cuda.grid(1), Kp * O + O, cuda.gridsize(1)):
        acc = gWT.dtype.type(0)
        if t < Kp * O:
            k = t // O
            o = t - k * O
            c = k // khw
            q = k - c * khw
            i = q // kw
            j = q - i * kw
            for e in range(n):
                for oy in range(Ho):
                    y = oy * sh - ph + i
                    if 0 <= y < H:
                        for ox in range(Wo):
                            x = ox * sw - pw + j
                            if 0 <= x < W:
                                acc += X[e, c * H * W + y * W + x] * B[e, o * P + oy * Wo + ox]
            gWT[k, o] = acc
        else:
            o = t - Kp * O
            for e in range(n):
                for p in range(P):
                    acc += B[e, o * P + p]
            gb[o] = acc


@cuda.jit
def conv_igrad_cuda(B, WT, dX, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo):
    """dX = col2im(B_r W) as a gather: one thread per input pixel sums, in
    kernel-offset order, the patch entries that read it, each the sum over o
    of WT[k, o] B[e, o*P + p] in o order (the CPU's order)."""
    n, D = dX.shape
    O = WT.shape[1]
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
                        k = (c * kh + i) * kw + j
                        s = dX.dtype.type(0)
                        for o in range(O):
                            s += WT[k, o] * B[e, o * P + oy * Wo + ox]
                        acc += s
        dX[e, f] = acc

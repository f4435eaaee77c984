"""Conv2d stage: a 2-D convolution (cross-correlation, as in PyTorch) with zero
padding and stride, written as Linear's product on patch rows.

Index legend: n batch, C in-channels, (H, W) input size, (kh, kw) kernel,
(sh, sw) stride, (ph, pw) padding, (Ho, Wo) output size, P = Ho*Wo output
positions (the slides' "share" of a weight), K = C*kh*kw patch entries (its
"fanin"), O out-channels; p = K*O + O parameters.

Parameters: W (O, K) = torch_weight.reshape(O, -1) and b (O,); the stage's
slice of the flat vector is [vec(W); b], vec column-major (DESIGN.md), so
W^T is a C-ordered (K, O) view, as in Linear.

Per batch (tinynet.kernels.conv):
  U = im2col(Z)        (n*P, K) patch rows
  R = U W^T + 1 b^T    (n*P, O) one row per output position
  out = chw(R)         (n, O*P) C-major image rows
so grad_x f and grad_z f are Linear's with the patch rows as inputs:
  grad W^T = U^T B_r,  grad b = 1^T B_r  (B_r = rows(b_out): the signal at each position)
  b_in = col2im(B_r W)                    (col2im = im2col^T)
The stage computes the same sums without forming U or R: the kernels
conv_fwd (out), conv_wgrad (grad W^T, grad b) and conv_igrad (b_in) read the
image rows and the image-layout signal b_out directly (tinynet.kernels.conv).
The forward context is (z, cache): the input rows, and U once something asks
for the patch rows (kron_rows, the host methods).
A convolution is bilinear in (z, x), so grad_xx f = grad_zz f = 0 and the
mixed pieces are constant 0/1 tensors (see the second-order section).

Kronecker rows (the chapter-6 hook, Grosse & Martens 2016, KFC): H = U, B =
B_r, m = n*P rows, share = P (kron_rows forms U once per context). The optimizers' statistics are written once
against [grad W^T; grad b^T] = [H 1]^T B.
"""
import numpy as np

from tinynet.kernels import conv as K
from tinynet.layers.base import Stage


def int_pair(v, what, who="Conv2d"):
    """(a, b) from an int or a pair of ints (kernel_size, stride, padding), with a
    clear error naming `who` otherwise."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{who}: {what} must be an int or a pair, got {v!r}")
        a, b = v
    else:
        a = b = v
    if isinstance(a, bool) or isinstance(b, bool) or int(a) != a or int(b) != b:
        raise ValueError(f"{who}: {what} must be integers, got {v!r}")
    return int(a), int(b)


def conv_output_size(size, k, s, p, who, axis):
    """Output length (size + 2p - k) / s + 1 along one axis; clear errors for a
    kernel larger than the padded input or a stride that does not fit exactly."""
    span = size + 2 * p
    if k > span:
        raise ValueError(f"{who}: kernel {axis} {k} is larger than the padded input {axis} "
                         f"{span} (= {size} + 2 x padding {p})")
    if (span - k) % s:
        raise ValueError(f"{who}: the output {axis} ({span} - {k}) / {s} + 1 is not an integer "
                         f"(input {axis} {size}, kernel {k}, stride {s}, padding {p}); change the "
                         f"padding or the stride so that the windows tile the input")
    return (span - k) // s + 1


class Conv2d(Stage):
    needs_input_shape = True     # Sequential needs input_shape=(C, H, W) when this comes first

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        if int(in_channels) != in_channels or int(out_channels) != out_channels \
                or in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"Conv2d({in_channels}, {out_channels}, ...): channels must be positive integers")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kh, self.kw = int_pair(kernel_size, "kernel_size")
        self.sh, self.sw = int_pair(stride, "stride")
        self.ph, self.pw = int_pair(padding, "padding")
        if min(self.kh, self.kw, self.sh, self.sw) < 1 or min(self.ph, self.pw) < 0:
            raise ValueError(f"{self!r}: kernel_size and stride must be >= 1, padding >= 0")
        self.K = self.in_channels * self.kh * self.kw
        self.n_params = self.K * self.out_channels + self.out_channels
        self.share = None        # output positions P, known once the input shape is
        self._idx = self._zb = None

    def __repr__(self):
        def f(a, b):
            return str(a) if a == b else f"({a}, {b})"
        extra = ""
        if (self.sh, self.sw) != (1, 1):
            extra += f", stride={f(self.sh, self.sw)}"
        if (self.ph, self.pw) != (0, 0):
            extra += f", padding={f(self.ph, self.pw)}"
        return f"Conv2d({self.in_channels}, {self.out_channels}, {f(self.kh, self.kw)}{extra})"

    def set_input_shape(self, in_shape):
        in_shape = tuple(int(d) for d in in_shape)
        if len(in_shape) != 3:
            raise ValueError(f"{self!r} takes images of shape (C, H, W) but receives examples of shape "
                             f"{in_shape}; give Sequential input_shape=(C, H, W)")
        C, H, W = in_shape
        if C != self.in_channels:
            raise ValueError(f"{self!r} expects {self.in_channels} input channels, receives {C} "
                             f"(input shape {in_shape})")
        self.Ho = conv_output_size(H, self.kh, self.sh, self.ph, repr(self), "height")
        self.Wo = conv_output_size(W, self.kw, self.sw, self.pw, repr(self), "width")
        self.H, self.W_in = H, W
        self.share = self.Ho * self.Wo
        self._idx = None         # the index map of _index_map belongs to one input shape
        self.in_shape, self.out_shape = in_shape, (self.out_channels, self.Ho, self.Wo)
        return self.out_shape

    def _geometry(self):
        return (self.in_channels, self.H, self.W_in, self.kh, self.kw, self.sh, self.sw,
                self.ph, self.pw, self.Ho, self.Wo)

    # -- parameters (Linear's layout: W^T a C-ordered (K, O) view) ----------------------
    def bind(self, bk, theta):
        self.bk = bk
        self.theta = theta
        self._zb = None          # jvp's zero bias lives on the backend bound here
        self.WT = self.split(theta)[0]
        self.b = theta[self.K * self.out_channels:]

    @property
    def W(self):
        """(O, K) view of the weights: torch_weight.reshape(O, -1)."""
        return self.WT.T

    def split(self, v):
        """A flat (p,) slice -> (dW^T as (K, O) view, db as (O,) view)."""
        k = self.K * self.out_channels
        return v[:k].reshape(self.K, self.out_channels), v[k:]

    def init_params(self, rng, dtype, next_activation=None, alpha=None, scheme="auto"):
        """Linear's uniform init with fanin K and fanout O*kh*kw (PyTorch's
        convention for Glorot); He before a ReLU with `auto`. Zero bias."""
        if scheme == "auto":
            scheme = "he" if next_activation == "relu" else "glorot"
        a = 1.0 if alpha is None else float(alpha)
        fan_out = self.out_channels * self.kh * self.kw
        if scheme == "glorot":
            var = a * 2.0 / (self.K + fan_out)
        elif scheme == "he":
            var = a * 2.0 / self.K
        else:
            raise ValueError(f"unknown init scheme {scheme!r}: choose auto, glorot or he")
        r = np.sqrt(3.0 * var)
        W = rng.uniform(-r, r, size=(self.out_channels, self.K))
        return np.concatenate([W.ravel(order="F"), np.zeros(self.out_channels)]).astype(dtype)

    # -- the products (tinynet.kernels.conv) ------------------------------------------------------
    def _fwd(self, Z, WT, b):
        """(n, O*P): U(Z) WT + 1 b^T in the image layout."""
        Z = self.bk.asarray(Z)
        Y = self.bk.empty((Z.shape[0], self.out_channels * self.share), Z.dtype)
        self.bk.launch(K, "conv_fwd", Y.size, Z, WT, b, Y, *self._geometry(),
                       flops=2.0 * Y.size * self.K, nbytes=Z.nbytes + Y.nbytes)
        return Y

    def _wgrad(self, Z, B, gWT, gb):
        """gWT = U(Z)^T B_r (K, O) and gb = 1^T B_r (O,), in place; B in the image layout."""
        Z, B = self.bk.asarray(Z), self.bk.asarray(B)
        self.bk.launch(K, "conv_wgrad", gWT.size + gb.size, Z, B, gWT, gb, *self._geometry(),
                       flops=2.0 * B.size * self.K, nbytes=Z.nbytes + B.nbytes)

    def _igrad(self, B, WT):
        """col2im(B_r WT^T), (n, C*H*W); B in the image layout."""
        B = self.bk.asarray(B)
        dX = self.bk.empty((B.shape[0], self.in_channels * self.H * self.W_in), B.dtype)
        self.bk.launch(K, "conv_igrad", dX.size, B, WT, dX, *self._geometry(),
                       flops=2.0 * B.size * self.K, nbytes=B.nbytes + dX.nbytes)
        return dX

    def _im2col(self, Z):
        U = self.bk.empty((Z.shape[0] * self.share, self.K), Z.dtype)
        self.bk.launch(K, "im2col", U.size, self.bk.asarray(Z), U, *self._geometry(), nbytes=2 * U.nbytes)
        return U

    def _rows(self, Y):
        R = self.bk.empty((Y.shape[0] * self.share, self.out_channels), Y.dtype)
        self.bk.launch(K, "chw_to_rows", R.size, Y, R, self.share, nbytes=2 * R.nbytes)
        return R

    def _zero_bias(self, dtype):
        z = self._zb
        if z is None or z.dtype != dtype:
            z = self._zb = self.bk.zeros(self.out_channels, dtype)
        return z

    # -- the contract ------------------------------------------------------------------------
    def forward(self, z):
        z = self.bk.asarray(z)
        return self._fwd(z, self.WT, self.b), (z, {})

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        if grad is not None:
            gWT, gb = self.split(grad)
            self._wgrad(ctx[0], b_out, gWT, gb)     # dW^T = U^T B_r, db = 1^T B_r (sum over batch and positions)
        if not need_b_in:
            return None
        return self._igrad(b_out, self.WT)          # col2im(B_r W)

    def jvp(self, ctx, dz_in, dx):
        bk = self.bk
        z = ctx[0]
        R = None
        if dz_in is not None:
            R = self._fwd(dz_in, self.WT, self._zero_bias(z.dtype))
        if dx is not None:
            dWT, db = self.split(dx)
            t = self._fwd(z, dWT, db)
            if R is None:
                R = t
            else:
                bk.axpy(1.0, t.reshape(-1), R.reshape(-1))
        if R is None:
            return bk.zeros((z.shape[0], self.out_channels * self.share), z.dtype)
        return R

    # -- Kronecker rows (the chapter-6 statistics hook; see Linear) ------------------------------
    @property
    def fan_in(self):
        return self.K

    @property
    def fan_out(self):
        return self.out_channels

    def kron_rows(self, ctx):
        """H = U (n*P, K): the patch rows (formed once, then kept in the context)."""
        z, cache = ctx
        if "U" not in cache:
            cache["U"] = self._im2col(z)
        return cache["U"]

    def kron_signal(self, ctx, b_out):
        """B (n*P, O): the output signal at each position, as rows."""
        return self._rows(b_out)

    # -- explicit per-example Jacobians (host numpy) -----------------------------------------------
    # Output entry (o, q) of an example sits at column o*P + q of its row; W[o, k]
    # at parameter k*O + o, b[o] at K*O + o; idx[q, k] is the input entry that
    # patch entry k of position q reads (-1 in the padding).
    def _index_map(self):
        if self._idx is None:
            C, H, W = self.in_shape
            e = np.arange(C * H * W, dtype=np.float64).reshape(1, -1) + 1.0   # 0 marks padding
            U = np.empty((self.share, self.K))
            K.im2col_cpu(e, U, *self._geometry())
            self._idx = U.astype(np.int64) - 1
        return self._idx

    def _U_host(self, ctx):
        """(n, P, K) host patch rows."""
        return np.asarray(self.bk.to_host(self.kron_rows(ctx))).reshape(-1, self.share, self.K)

    def jac_x(self, ctx):
        U = self._U_host(ctx)
        n, P, O, Kp = U.shape[0], self.share, self.out_channels, self.K
        J = np.zeros((n, O * P, self.n_params), dtype=U.dtype)
        q = np.arange(P)
        for o in range(O):
            for k in range(Kp):
                J[:, o * P + q, k * O + o] = U[:, :, k]
            J[:, o * P + q, Kp * O + o] = 1.0
        return J

    def _unfold_matrix(self):
        """S (P, K, C*H*W): S[q, k, m] = 1 where patch entry k of position q reads input m."""
        idx = self._index_map()
        S = np.zeros((self.share, self.K, int(np.prod(self.in_shape))))
        q, k = np.nonzero(idx >= 0)
        S[q, k, idx[q, k]] = 1.0
        return S

    def jac_z(self, ctx):
        n = ctx[0].shape[0]
        W = np.asarray(self.bk.to_host(self.WT), dtype=np.float64).T          # (O, K)
        J = np.einsum("ok,qkm->oqm", W, self._unfold_matrix()).reshape(self.out_channels * self.share, -1)
        return np.broadcast_to(J, (n,) + J.shape).astype(ctx[0].dtype)

    # -- second-order pieces (seed 001, "The Hessian"; see Linear) ----------------------------------
    # a[o, q] = sum_k W[o, k] U[q, k](z) + b[o], U linear in z: the only nonzero
    # second derivative is d^2 a[o, q] / dW[o, k] dz_m = S[q, k, m].
    def hess_xx(self, ctx):
        n = ctx[0].shape[0]
        return np.zeros((n, self.out_channels * self.share, self.n_params, self.n_params))

    def hess_zx(self, ctx):
        """(n, O*P, p, C*H*W): [(o, q), x, m] = d^2 a[o, q] / dx dz_m."""
        n = ctx[0].shape[0]
        O, P, Kp = self.out_channels, self.share, self.K
        S = self._unfold_matrix()
        T = np.zeros((O * P, self.n_params, S.shape[2]))
        for o in range(O):
            T[o * P:(o + 1) * P, np.arange(Kp) * O + o, :] = S
        return np.broadcast_to(T, (n,) + T.shape).copy()

    def hess_xz(self, ctx):
        return np.ascontiguousarray(self.hess_zx(ctx).transpose(0, 1, 3, 2))

    def hess_zz(self, ctx):
        n = ctx[0].shape[0]
        d = int(np.prod(self.in_shape))
        return np.zeros((n, self.out_channels * self.share, d, d))

    def hvp_x(self, ctx, b, dz_in, dx, acc):
        """acc += [vec(im2col(dz)^T B_r); 0]: the stage's row of D_b D_zx N^{-1} D_x↘."""
        if dz_in is not None:
            t = self.bk.empty((self.K, self.out_channels), dz_in.dtype)      # dW^T layout
            self._wgrad(dz_in, b, t, self.bk.empty(self.out_channels, dz_in.dtype))
            self.bk.axpy(1.0, t.reshape(-1), acc[:self.K * self.out_channels])
        return acc

    def hvp_z(self, ctx, b, dz_in, dx):
        """col2im(B_r dW), (n, C*H*W): the stage's block of B_b D_xz; None when dx is None."""
        if dx is None:
            return None
        dWT, _ = self.split(dx)
        return self._igrad(b, dWT)

    # many directions at once, host numpy (see Linear.jvp_many): dZ (C, n, C*H*W), dX (C, p)
    def _im2col_host(self, Z):
        """(Cd, n, D) -> (Cd, n, P, K) patch rows of each direction."""
        Cd, n, D = Z.shape
        U = np.empty((Cd * n * self.share, self.K), dtype=Z.dtype)
        K.im2col_cpu(np.ascontiguousarray(Z.reshape(Cd * n, D)), U, *self._geometry())
        return U.reshape(Cd, n, self.share, self.K)

    def _col2im_host(self, dU):
        """(Cd, n, P, K) -> (Cd, n, C*H*W)."""
        Cd, n = dU.shape[:2]
        D = int(np.prod(self.in_shape))
        dX = np.empty((Cd * n, D), dtype=dU.dtype)
        K.col2im_cpu(np.ascontiguousarray(dU.reshape(-1, self.K)), dX, *self._geometry())
        return dX.reshape(Cd, n, D)

    def _chw_host(self, R):
        """(Cd, n, P, O) -> (Cd, n, O*P)."""
        Cd, n = R.shape[:2]
        return np.ascontiguousarray(R.transpose(0, 1, 3, 2)).reshape(Cd, n, -1)

    def _rows_host(self, Y):
        """(..., O*P) -> (..., P, O)."""
        return Y.reshape(Y.shape[:-1] + (self.out_channels, self.share)).swapaxes(-1, -2)

    def jvp_many(self, ctx, dZ, dX):
        if dZ is None and dX is None:
            return None          # no direction (as Linear and Flatten)
        U = self._U_host(ctx)
        WT = np.asarray(self.bk.to_host(self.WT))
        out = None if dZ is None else self._im2col_host(dZ) @ WT                 # (C, n, P, O)
        if dX is not None:
            Cd, k = dX.shape[0], self.K * self.out_channels
            t = np.einsum("npk,cko->cnpo", U, dX[:, :k].reshape(Cd, self.K, self.out_channels))
            t += dX[:, None, None, k:]
            out = t if out is None else out + t
        return self._chw_host(out)

    def vjp_many(self, ctx, Wv, need_in=True, need_x=True):
        Cd = Wv.shape[0]
        Wr = self._rows_host(Wv)                                                  # (C, n, P, O)
        gX = dZ = None
        if need_x:
            U = self._U_host(ctx)
            k = self.K * self.out_channels
            gX = np.empty((Cd, self.n_params), dtype=np.result_type(Wv, U))
            gX[:, :k] = np.einsum("npk,cnpo->cko", U, Wr).reshape(Cd, k)
            gX[:, k:] = Wr.sum(axis=(1, 2))
        if need_in:
            W = np.asarray(self.bk.to_host(self.WT)).T                           # (O, K)
            dZ = self._col2im_host(Wr @ W)
        return dZ, gX

    def hvp_x_many(self, ctx, B, dZ, dX):
        if dZ is None:
            return None
        Cd, k = dZ.shape[0], self.K * self.out_channels
        Br = self._rows_host(np.asarray(B))                                       # (n, P, O)
        out = np.zeros((Cd, self.n_params), dtype=np.result_type(dZ, Br))
        out[:, :k] = np.einsum("cnpk,npo->cko", self._im2col_host(dZ), Br).reshape(Cd, k)
        return out

    def hvp_z_many(self, ctx, B, dZ, dX):
        if dX is None:
            return None
        Cd, k = dX.shape[0], self.K * self.out_channels
        Br = self._rows_host(np.asarray(B))
        dU = np.einsum("npo,cko->cnpk", Br, dX[:, :k].reshape(Cd, self.K, self.out_channels))
        return self._col2im_host(dU)

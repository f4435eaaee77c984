"""MaxPool2d stage: the maximum over kh x kw windows with stride (sh, sw)
(default: the kernel size, as in PyTorch), no padding, no parameters.

Index legend: n batch, C channels, (H, W) input, (Ho, Wo) output, P = Ho*Wo,
D = C*H*W inputs and Q = C*P outputs per example (C-major image rows);
A (n, Q) int64 the column of the input row holding each window's max (the
first max in row-major window order, as PyTorch), computed by the forward
kernel and kept in the context.

Per example, with A fixed the map is a selection: out[q] = z[A[q]], so
  grad_z f = S, S[q, m] = 1 where m = A[q]   (jac_z, (n, Q, D))
  jvp:  dz_out[q] = dz[A[q]]                  (a gather)
  vjp:  b_in[m]  = sum_{q : A[q] = m} b[q]    (the signal scattered to the argmax)
Max pooling is piecewise linear: every second derivative is 0 (pool2d.py).
Kernels: tinynet.kernels.pool (maxpool_fwd, maxpool_bwd, maxpool_jvp).
"""
import numpy as np

from tinynet.kernels import pool as K
from tinynet.layers.pool2d import Pool2d


class MaxPool2d(Pool2d):
    def forward(self, z):
        n = z.shape[0]
        Y = self.bk.empty((n, self.d_out), z.dtype)
        A = self.bk.empty((n, self.d_out), np.int64)
        self.bk.launch(K, "maxpool_fwd", Y.size, z, Y, A, *self._geometry(),
                       nbytes=z.nbytes + Y.nbytes + A.nbytes)
        return Y, (z, A)

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        if not need_b_in:
            return None
        z, A = ctx
        dX = self.bk.empty((z.shape[0], self.d_in), b_out.dtype)
        self.bk.launch(K, "maxpool_bwd", dX.size, b_out, A, dX, *self._geometry(),
                       nbytes=b_out.nbytes + A.nbytes + dX.nbytes)
        return dX

    def jvp(self, ctx, dz_in, dx):
        z, A = ctx
        if dz_in is None:
            return self.bk.zeros((z.shape[0], self.d_out), z.dtype)
        dY = self.bk.empty((z.shape[0], self.d_out), dz_in.dtype)
        self.bk.launch(K, "maxpool_jvp", dY.size, dz_in, A, dY, nbytes=2 * dY.nbytes + A.nbytes)
        return dY

    def argmax(self, ctx):
        """Host (n, Q) int64: the input column each output entry is taken from."""
        return np.asarray(self.bk.to_host(ctx[1]))

    def jac_z(self, ctx):
        """(n, Q, D): 1 at [e, q, A[e, q]], 0 elsewhere."""
        A = self.argmax(ctx)
        n, Q = A.shape
        J = np.zeros((n, Q, self.d_in), dtype=ctx[0].dtype)
        J[np.arange(n)[:, None], np.arange(Q)[None, :], A] = 1
        return J

    # many directions at once, host numpy (see Linear.jvp_many): dZ (Cd, n, D), Wv (Cd, n, Q)
    def jvp_many(self, ctx, dZ, dX):
        if dZ is None:
            return None
        A = np.tile(self.argmax(ctx), (dZ.shape[0], 1))
        dY = np.empty(A.shape, dtype=dZ.dtype)
        K.maxpool_jvp_cpu(self._stack(dZ), A, dY)
        return dY.reshape(dZ.shape[:2] + (self.d_out,))

    def vjp_many(self, ctx, Wv, need_in=True, need_x=True):
        if not need_in:
            return None, None
        A = np.tile(self.argmax(ctx), (Wv.shape[0], 1))
        dZ = np.empty((A.shape[0], self.d_in), dtype=Wv.dtype)
        K.maxpool_bwd_cpu(self._stack(Wv), A, dZ, *self._geometry())
        return dZ.reshape(Wv.shape[:2] + (self.d_in,)), None

"""AvgPool2d stage: the mean over kh x kw windows with stride (sh, sw)
(default: the kernel size, as in PyTorch), no padding, no parameters.

Index legend: n batch, C channels, (H, W) input, (Ho, Wo) output, P = Ho*Wo,
D = C*H*W inputs and Q = C*P outputs per example (C-major image rows).

The map is linear and the same for every example: out = S z with
  S[q, m] = 1 / (kh*kw) where input m lies in window q   (jac_z, (n, Q, D))
  jvp:  dz_out = S dz       (the forward kernel applied to the tangent)
  vjp:  b_in   = S^T b      (each output signal spread as b / (kh*kw) over its window)
Every second derivative is 0 (pool2d.py).
Kernels: tinynet.kernels.pool (avgpool_fwd, avgpool_bwd).
"""
import numpy as np

from tinynet.kernels import pool as K
from tinynet.layers.pool2d import Pool2d


class AvgPool2d(Pool2d):
    def _pool(self, z):
        Y = self.bk.empty((z.shape[0], self.d_out), z.dtype)
        self.bk.launch(K, "avgpool_fwd", Y.size, z, Y, *self._geometry(), nbytes=z.nbytes + Y.nbytes)
        return Y

    def forward(self, z):
        return self._pool(z), (z,)

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        if not need_b_in:
            return None
        dX = self.bk.empty((b_out.shape[0], self.d_in), b_out.dtype)
        self.bk.launch(K, "avgpool_bwd", dX.size, b_out, dX, *self._geometry(), nbytes=b_out.nbytes + dX.nbytes)
        return dX

    def jvp(self, ctx, dz_in, dx):
        if dz_in is None:
            return self.bk.zeros((ctx[0].shape[0], self.d_out), ctx[0].dtype)
        return self._pool(dz_in)

    def pool_matrix(self, dtype=np.float64):
        """S (Q, D), host: the pooling as a matrix (the rows of the forward
        kernel applied to the identity, transposed)."""
        St = np.empty((self.d_in, self.d_out), dtype=dtype)
        K.avgpool_fwd_cpu(np.eye(self.d_in, dtype=dtype), St, *self._geometry())
        return np.ascontiguousarray(St.T)

    def jac_z(self, ctx):
        S = self.pool_matrix(ctx[0].dtype)
        return np.broadcast_to(S, (ctx[0].shape[0],) + S.shape).copy()

    # many directions at once, host numpy (see Linear.jvp_many): dZ (Cd, n, D), Wv (Cd, n, Q)
    def jvp_many(self, ctx, dZ, dX):
        if dZ is None:
            return None
        dY = np.empty((dZ.shape[0] * dZ.shape[1], self.d_out), dtype=dZ.dtype)
        K.avgpool_fwd_cpu(self._stack(dZ), dY, *self._geometry())
        return dY.reshape(dZ.shape[:2] + (self.d_out,))

    def vjp_many(self, ctx, Wv, need_in=True, need_x=True):
        if not need_in:
            return None, None
        dZ = np.empty((Wv.shape[0] * Wv.shape[1], self.d_in), dtype=Wv.dtype)
        K.avgpool_bwd_cpu(self._stack(Wv), dZ, *self._geometry())
        return dZ.reshape(Wv.shape[:2] + (self.d_in,)), None

"""Elementwise activation stages: z_l = f(z_{l-1}), no parameters.

Index legend: n batch, d features. Per example, grad_z f = diag(f'(z)),
grad_zz f (the only nonzero second-order piece) = diag(f''(z)) spread over
the (d, d, d) tensor's diagonal. f' and f'' come from the kernels of
tinynet.kernels.activations, written from the forward output.
"""
import numpy as np

from tinynet.layers.base import Stage


class Activation(Stage):
    kind = None   # kernel name: "sigmoid", "tanh", "relu"; None for identity

    def __repr__(self):
        return type(self).__name__ + "()"

    def forward(self, z):
        s = self.bk.act_fwd(self.kind, z)
        return s, (z, s)

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        if not need_b_in:
            return None
        return self.bk.act_mul_d1(self.kind, ctx[1], b_out)

    def jvp(self, ctx, dz_in, dx):
        if dz_in is None:
            return self.bk.zeros(ctx[0].shape, ctx[0].dtype)
        return self.bk.act_mul_d1(self.kind, ctx[1], dz_in)

    def d1(self, ctx):
        """f'(z) per entry, host (n, d)."""
        s = ctx[1]
        return self.bk.to_host(self.bk.act_mul_d1(self.kind, s, self.bk.asarray(np.ones(s.shape, s.dtype))))

    def d2(self, ctx):
        """f''(z) per entry, host (n, d)."""
        return self.bk.to_host(self.bk.act_d2(self.kind, ctx[1]))

    def jac_x(self, ctx):
        n, d = ctx[0].shape
        return np.zeros((n, d, 0), dtype=ctx[0].dtype)

    def jac_z(self, ctx):
        g = self.d1(ctx)
        n, d = g.shape
        J = np.zeros((n, d, d), dtype=g.dtype)
        J[:, np.arange(d), np.arange(d)] = g
        return J

    # -- second-order pieces (seed 001, "The Hessian"; used by tinynet.curvature) --
    # No parameters: grad_xx, grad_zx, grad_xz are empty; grad_zz f is f''(z)
    # on the diagonal of the (d, d, d) tensor, so (b^T ⊗ I) grad_zz f dz = f'' * b * dz.
    def hess_xx(self, ctx):
        n, d = ctx[0].shape
        return np.zeros((n, d, 0, 0))

    def hess_zx(self, ctx):
        n, d = ctx[0].shape
        return np.zeros((n, d, 0, d))

    def hess_xz(self, ctx):
        n, d = ctx[0].shape
        return np.zeros((n, d, d, 0))

    def hess_zz(self, ctx):
        """grad_zz f per example as (n, d, d, d): [j, m, k] = delta_jm delta_jk f''(z_j)."""
        g2 = np.asarray(self.d2(ctx), dtype=np.float64)
        n, d = g2.shape
        T = np.zeros((n, d, d, d))
        r = np.arange(d)
        T[:, r, r, r] = g2
        return T

    def hvp_x(self, ctx, b, dz_in, dx, acc):
        return acc

    def hvp_z(self, ctx, b, dz_in, dx):
        """(b^T ⊗ I) grad_zz f dz = f''(z) * b * dz, (n, d) backend; None if dz is None."""
        if dz_in is None:
            return None
        bk = self.bk
        if hasattr(bk, "act_d2_mul"):
            return bk.act_d2_mul(self.kind, ctx[1], b, dz_in)
        # a backend without the fused kernel: one host round trip
        v = self.d2(ctx) * bk.to_host(b) * bk.to_host(dz_in)
        return bk.asarray(v, dz_in.dtype)

    # many directions at once, host numpy (C, n, d); see Linear.jvp_many
    def jvp_many(self, ctx, dZ, dX):
        return None if dZ is None else np.asarray(self.d1(ctx))[None] * dZ

    def vjp_many(self, ctx, Wv, need_in=True, need_x=True):
        return (np.asarray(self.d1(ctx))[None] * Wv if need_in else None), None

    def hvp_x_many(self, ctx, B, dZ, dX):
        return None

    def hvp_z_many(self, ctx, B, dZ, dX):
        if dZ is None:
            return None
        return (np.asarray(self.d2(ctx)) * B)[None] * dZ

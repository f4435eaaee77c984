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

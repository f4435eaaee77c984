"""Flatten stage: the identity on rows. It marks where images become vectors
(DESIGN.md, "Images"): an image row is already the C-major flattening of its
(C, H, W) tensor, so only the recorded shape changes, from (C, H, W) to
(C*H*W,). Linear stages take vectors only, so a conv net puts Flatten()
between its last image stage and its first Linear one.

grad_z f = I, every second-order piece is 0; no parameters.
"""
import numpy as np

from tinynet.layers.base import Stage


class Flatten(Stage):
    def set_input_shape(self, in_shape):
        self.in_shape = tuple(int(d) for d in in_shape)
        self.out_shape = (int(np.prod(self.in_shape)),)
        return self.out_shape

    def forward(self, z):
        return z, (z,)

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        return b_out if need_b_in else None

    def jvp(self, ctx, dz_in, dx):
        if dz_in is None:
            return self.bk.zeros(ctx[0].shape, ctx[0].dtype)
        return dz_in

    def jac_x(self, ctx):
        n, d = ctx[0].shape
        return np.zeros((n, d, 0), dtype=ctx[0].dtype)

    def jac_z(self, ctx):
        n, d = ctx[0].shape
        return np.broadcast_to(np.eye(d, dtype=ctx[0].dtype), (n, d, d)).copy()

    # -- second-order pieces: all zero (the map is linear and parameter-free) --
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
        n, d = ctx[0].shape
        return np.zeros((n, d, d, d))

    def hvp_x(self, ctx, b, dz_in, dx, acc):
        return acc

    def hvp_z(self, ctx, b, dz_in, dx):
        return None

    def jvp_many(self, ctx, dZ, dX):
        return dZ

    def vjp_many(self, ctx, Wv, need_in=True, need_x=True):
        return (Wv if need_in else None), None

    def hvp_x_many(self, ctx, B, dZ, dX):
        return None

    def hvp_z_many(self, ctx, B, dZ, dX):
        return None

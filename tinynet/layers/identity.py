"""Identity stage: z_l = z_{l-1} (a linear code layer, as in the autoencoder's
30-unit layer). f' = 1, f'' = 0. Passes arrays through without a kernel."""
import numpy as np

from tinynet.layers.activation import Activation


class Identity(Activation):
    kind = None

    def forward(self, z):
        return z, (z, z)

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        return b_out if need_b_in else None

    def jvp(self, ctx, dz_in, dx):
        if dz_in is None:
            return self.bk.zeros(ctx[0].shape, ctx[0].dtype)
        return dz_in

    def d1(self, ctx):
        return np.ones(ctx[0].shape, dtype=ctx[0].dtype)

    def d2(self, ctx):
        return np.zeros(ctx[0].shape, dtype=ctx[0].dtype)

    def hvp_z(self, ctx, b, dz_in, dx):
        return None    # f'' = 0

    def hvp_z_many(self, ctx, B, dZ, dX):
        return None

"""What MaxPool2d and AvgPool2d share: the window geometry, the shape checks,
and the parts of the stage contract that are zero for a parameter-free,
piecewise linear map. Each stage's own math (forward, vjp, jvp, jac_z, the
many-direction products) is in its file: maxpool2d.py, avgpool2d.py.

Index legend: n batch, C channels, (H, W) input size, (kh, kw) kernel, (sh, sw)
stride (default: the kernel size, as in PyTorch), no padding, (Ho, Wo) output
size, Ho = (H - kh) / sh + 1; P = Ho*Wo, D = C*H*W inputs, Q = C*P outputs per
example. Rows are C-major image rows (DESIGN.md, "Images").

Second-order pieces: no parameters, so grad_x f, grad_xx f, grad_xz f,
grad_zx f are empty; grad_zz f = 0 (max pooling is linear on each region
where its argmax is constant, average pooling is linear), so hvp_x adds
nothing and hvp_z is None (zero).
"""
import numpy as np

from tinynet.layers.base import Stage
from tinynet.layers.conv2d import conv_output_size, int_pair


class Pool2d(Stage):
    needs_input_shape = True     # Sequential needs input_shape=(C, H, W) when this comes first

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.kh, self.kw = self._pair(kernel_size, "kernel_size")
        self.sh, self.sw = (self.kh, self.kw) if stride is None else self._pair(stride, "stride")
        if min(self.kh, self.kw, self.sh, self.sw) < 1:
            raise ValueError(f"{self!r}: kernel_size and stride must be >= 1")
        self.share = None        # output positions P, known once the input shape is

    def _pair(self, v, what):
        return int_pair(v, what, type(self).__name__)

    def __repr__(self):
        def f(a, b):
            return str(a) if a == b else f"({a}, {b})"
        extra = "" if self.stride is None else f", stride={f(self.sh, self.sw)}"
        return f"{type(self).__name__}({f(self.kh, self.kw)}{extra})"

    def set_input_shape(self, in_shape):
        in_shape = tuple(int(d) for d in in_shape)
        if len(in_shape) != 3:
            raise ValueError(f"{self!r} takes images of shape (C, H, W) but receives examples of shape "
                             f"{in_shape}; give Sequential input_shape=(C, H, W) and put it before Flatten()")
        C, H, W = in_shape
        who = f"{self!r} on input shape {in_shape}"
        self.Ho = conv_output_size(H, self.kh, self.sh, 0, who, "height")
        self.Wo = conv_output_size(W, self.kw, self.sw, 0, who, "width")
        self.C, self.H, self.W_in = C, H, W
        self.share = self.Ho * self.Wo
        self.in_shape, self.out_shape = in_shape, (C, self.Ho, self.Wo)
        return self.out_shape

    def _geometry(self):
        """The kernels' geometry arguments: C, H, W, kh, kw, sh, sw, Ho, Wo."""
        return (self.C, self.H, self.W_in, self.kh, self.kw, self.sh, self.sw, self.Ho, self.Wo)

    @property
    def d_in(self):
        return self.C * self.H * self.W_in

    @property
    def d_out(self):
        return self.C * self.share

    def _n(self, ctx):
        return ctx[0].shape[0]

    # -- no parameters: empty parameter Jacobian ----------------------------------------
    def jac_x(self, ctx):
        return np.zeros((self._n(ctx), self.d_out, 0), dtype=ctx[0].dtype)

    # -- second-order pieces: all zero (module docstring) ---------------------------------
    def hess_xx(self, ctx):
        return np.zeros((self._n(ctx), self.d_out, 0, 0))

    def hess_zx(self, ctx):
        return np.zeros((self._n(ctx), self.d_out, 0, self.d_in))

    def hess_xz(self, ctx):
        return np.zeros((self._n(ctx), self.d_out, self.d_in, 0))

    def hess_zz(self, ctx):
        return np.zeros((self._n(ctx), self.d_out, self.d_in, self.d_in))

    def hvp_x(self, ctx, b, dz_in, dx, acc):
        return acc

    def hvp_z(self, ctx, b, dz_in, dx):
        return None

    def hvp_x_many(self, ctx, B, dZ, dX):
        return None

    def hvp_z_many(self, ctx, B, dZ, dX):
        return None

    # -- host helpers for the many-direction products: (Cd, n, d) <-> (Cd*n, d) ---------
    @staticmethod
    def _stack(V):
        Cd, n, d = V.shape
        return np.ascontiguousarray(V.reshape(Cd * n, d))

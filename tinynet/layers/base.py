"""The stage contract (DESIGN.md, "The pipeline and the layer contract").

A stage computes z_l = f_l(z_{l-1}; x_l) for a batch (one example per row).
Seed 001 names the pieces a stage provides:

  forward(z)                 -> (out, ctx)       z_l = f_l(z_{l-1}; x_l)
  vjp(ctx, b_out, grad=None, need_b_in=True)
                             -> b_in             b_{l-1} = grad_z f_l b_l, and
                                                 grad_x f_l b_l summed over the
                                                 batch, written into `grad` (the
                                                 stage's slice of the flat gradient)
  vjp_sgd(ctx, b_out, theta, grad, alpha, need_b_in=True)
                             -> b_in             vjp, and the stage's slice theta
                                                 moved by -alpha (its gradient):
                                                 plain SGD inside the reverse pass
                                                 (default: vjp into grad, then axpy)
  jvp(ctx, dz_in, dx)        -> dz_out           dz_l = grad_x f_l dx_l + grad_z f_l dz_{l-1}
                                                 (dz_in or dx may be None: zero)
  jac_x(ctx)  (n, out, p)    per-example Jacobian of the output w.r.t. x_l
  jac_z(ctx)  (n, out, in)   per-example Jacobian of the output w.r.t. z_{l-1}

Shapes (DESIGN.md, "Images"): a batch is always (n, d); `set_input_shape(s)`
records the shape s of one input example (a tuple: (d,) for vectors,
(C, H, W) for images, rows C-major flattened) and returns the shape of one
output example, raising a ValueError naming the stage and both shapes when
the stage cannot take that input. Sequential calls it once per stage at
construction. Elementwise stages keep the shape (the default here).

Jacobians are returned as host numpy arrays (they are for explicit matrices on
small nets). Parameters live in the network's flat vector; `bind` gives a stage
views of its slice, so an update of the flat vector is an update of the stage.
"""
import numpy as np

from tinynet.distributed.comm import LOCAL


class Stage:
    """Base class: a parameter-free stage. Subclasses override what they need."""

    n_params = 0

    def __init__(self):
        self.bk = None
        self.training = True

    def bind(self, bk, theta):
        """Attach the backend and this stage's slice `theta` of the flat vector."""
        self.bk = bk

    def init_params(self, rng, dtype, next_activation=None, alpha=None, scheme="auto"):
        """Host array with initial values for this stage's slice (empty if none)."""
        return np.zeros(0, dtype=dtype)

    # state that is not a parameter but changes what the stage computes (BatchNorm's
    # running statistics): checkpoints keep it, so a resumed run evaluates as one never stopped
    buffer_names = ()

    def buffers(self):
        """{name: host array or string} of the stage's non-parameter state."""
        return {k: np.array(getattr(self, k), copy=True) for k in self.buffer_names}

    def load_buffers(self, state):
        for k in self.buffer_names:
            old = getattr(self, k)
            new = np.asarray(state[k], dtype=np.float64)
            if new.shape != np.shape(old):
                raise ValueError(f"{self!r}: buffer {k} has shape {new.shape}, expected {np.shape(old)}")
            setattr(self, k, new.copy())

    in_shape = out_shape = None
    mixes_batch = False     # True where an output row depends on other rows (BatchNorm in training)
    reduces_batch = False   # True where such a stage reduces its batch statistics over self.comm
    comm = LOCAL            # the data-parallel ranks (tinynet.distributed), set by Sequential.comm

    def set_input_shape(self, in_shape):
        """Record the input example shape; return the output example shape
        (elementwise default: the same shape)."""
        self.in_shape = self.out_shape = tuple(int(d) for d in in_shape)
        return self.out_shape

    def vjp_sgd(self, ctx, b_out, theta, grad, alpha, need_b_in=True):
        """Plain SGD's update fused into the reverse pass (Sequential.loss_and_sgd_update):
        b_in as `vjp` returns it, and the stage's slice `theta` moved by
        -alpha grad_x f b (summed over the batch), `grad` its scratch of the same
        size. This default is vjp, then axpy; a stage whose gradient is a GEMM
        overrides it to accumulate into theta in the GEMM itself (Linear)."""
        b_in = self.vjp(ctx, b_out, grad, need_b_in)
        self.bk.axpy(-alpha, grad, theta)
        return b_in

    def jac_x(self, ctx):
        raise NotImplementedError(f"{type(self).__name__} does not provide per-example Jacobians")

    def __repr__(self):
        return type(self).__name__ + "()"

"""The loss stage: the last, parameter-free stage f_L, whose output z_L is the
scalar batch loss (the mean of the per-example losses l_i, DESIGN.md).

Index legend: n batch, k network outputs. F (n, k) is the network output,
Y the targets as the loss expects them (see `prepare_targets`).

  forward(F, Y)        -> (mean loss as a float, ctx)
  vjp(ctx, b_out=1.0)  -> b_{L-1} = (b_out / n) dl_i/dF_i, one row per example
  jvp(ctx, dF)         -> dl_i = (dl_i/dF_i) . dF_i, (n,)
  per_example(ctx)     -> l (n,)
  jac_z(ctx)           -> (n, 1, k), dl_i/dF_i unscaled
  hess_f(ctx)          -> D_i = d^2 l_i / dF_i^2, (n, k, k) (thesis table 3.I, appendix A)
  hess_f_vp(ctx, V)    -> rows D_i V_i, (n, k): the matrix-free form of hess_f
  second-order pieces (hess_zz, hvp_z, fisher_f, sample_targets): see below
"""
import numpy as np

from tinynet.layers.base import Stage


class Loss(Stage):
    kernel = None

    def __repr__(self):
        return type(self).__name__ + "()"

    def prepare_targets(self, Y, k, dtype):
        """Host targets -> a host (n, k) array of `dtype`, checked."""
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[1] != k:
            raise ValueError(f"{self!r}: targets must have shape (n, {k}), got {Y.shape}")
        return np.ascontiguousarray(Y, dtype=dtype)

    def forward(self, F, Y):
        if Y.shape != F.shape:
            raise ValueError(f"{self!r}: targets {Y.shape} and outputs {F.shape} differ in shape")
        n = F.shape[0]
        l, G = self._kernel(F, Y, 1.0 / n)
        return self.bk.sum(l) / n, (F, Y, l, G)

    def _kernel(self, F, Y, scale):
        return self.bk.loss(self.kernel, F, Y, scale)

    def vjp(self, ctx, b_out=1.0, grad=None, need_b_in=True):
        G = ctx[3]
        if b_out == 1.0:
            return G
        out = self.bk.copy(G)
        self.bk.scale(b_out, out.reshape(-1))
        return out

    def per_example(self, ctx):
        return self.bk.to_host(ctx[2])

    def grad_f(self, ctx):
        """dl_i/dF_i (n, k), host, unscaled."""
        n = ctx[0].shape[0]
        return self.bk.to_host(ctx[3]) * n

    def output_gradient(self, F, Y):
        """dl_i/dF_i (n, k) at targets Y as a backend array, without the loss
        value (so without its host transfer): the same numbers as
        grad_f(forward(F, Y)[1]) (the kernel's 1/n-scaled rows times n)."""
        n = F.shape[0]
        _, G = self._kernel(F, Y, 1.0 / n)
        self.bk.scale(float(n), G.reshape(-1))
        return G

    def jvp(self, ctx, dF, dx=None):
        return np.einsum("nk,nk->n", self.grad_f(ctx), self.bk.to_host(dF))

    def jac_z(self, ctx):
        return self.grad_f(ctx)[:, None, :]

    def jac_x(self, ctx):
        return np.zeros((ctx[0].shape[0], 1, 0), dtype=ctx[0].dtype)

    def hess_f_vp(self, ctx, V):
        return np.einsum("nkj,nj->nk", self.hess_f(ctx), self.bk.to_host(V))

    # -- second-order pieces (seed 001: the loss is the last stage f_L(z_{L-1}; y),
    # parameter-free, with a scalar output; used by tinynet.curvature) ----------
    # Explicit tensors are those of the per-example loss l_i (n, 1, ., .); the
    # batch stage z_L = mean_i l_i adds the factor 1/n, which the contracted
    # products below include (b_L = 1 for the loss itself).
    def hess_xx(self, ctx):
        return np.zeros((ctx[0].shape[0], 1, 0, 0))

    def hess_zx(self, ctx):
        n, k = ctx[0].shape
        return np.zeros((n, 1, 0, k))

    def hess_xz(self, ctx):
        n, k = ctx[0].shape
        return np.zeros((n, 1, k, 0))

    def hess_zz(self, ctx):
        """grad_zz f_L per example, (n, 1, k, k) = d^2 l_i / dF_i^2."""
        return np.asarray(self.hess_f(ctx), dtype=np.float64)[:, None]

    def fisher_f(self, ctx):
        """D(f) of the Fisher (thesis table 3.II) for the predictive distribution
        p(y|f) with l = -log p(y|f) + const, (n, k, k); see each loss."""
        raise NotImplementedError(f"{self!r} has no predictive distribution")

    def sample_targets(self, ctx, rng):
        """Targets drawn from the model's predictive distribution at the outputs
        of ctx, host (n, k), from numpy Generator `rng` (Monte-Carlo Fisher)."""
        raise NotImplementedError(f"{self!r} has no predictive distribution")

    def hvp_x(self, ctx, b, dz_in, dx, acc):
        return acc

    def hvp_z(self, ctx, b, dz_in, dx=None, fisher=False):
        """(b/n) D_i dz_i per row, backend (n, k): (b^T ⊗ I) grad_zz f_L dz of the
        batch-mean stage, D = d2l/df2 (or the Fisher's D(f) when `fisher`)."""
        if dz_in is None:
            return None
        bk = self.bk
        F, Y = ctx[0], ctx[1]
        scale = float(b) / F.shape[0]
        if hasattr(bk, "loss_hess_vp"):
            eps = self._eps(F.dtype) if hasattr(self, "_eps") else 0.0
            return bk.loss_hess_vp(self.kernel, F, Y, dz_in, scale, eps=eps, fisher=fisher)
        D = self.fisher_f(ctx) if fisher else self.hess_f(ctx)   # host fallback
        v = scale * np.einsum("nkj,nj->nk", D, bk.to_host(dz_in))
        return bk.asarray(v, dz_in.dtype)

    def hvp_z_many(self, ctx, b, dZ, dX=None, fisher=False):
        """hvp_z for C directions, host numpy (C, n, k)."""
        if dZ is None:
            return None
        D = self.fisher_f(ctx) if fisher else self.hess_f(ctx)
        return (float(b) / dZ.shape[1]) * np.einsum("nkj,cnj->cnk", D, dZ)

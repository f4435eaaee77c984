"""Batch normalization stages (the baselines of thesis figures 6.1-6.3).

Index legend: n batch, d features. Batch statistics per feature:
  mu = 1/n sum_n z_n,  var = 1/n sum_n (z_n - mu)^2,  s = sqrt(var + eps),
  xhat = (z - mu) / s.

`BatchNorm(d)`: out = gamma * xhat + beta (Ioffe and Szegedy), parameters
[gamma; beta] (2d; gamma starts at 1, beta at 0).
`MeanOnlyBatchNorm(d)`: out = z - mu + beta (Salimans and Kingma's mean-only
batch norm, thesis 6.3.1 and figure 6.1), parameters beta (d).

Modes (`stage.training`): in training the batch statistics are used and the
running statistics are updated, r <- (1 - momentum) r + momentum * batch
(running variance with the unbiased n/(n-1) factor, as common practice); in
evaluation the running statistics replace the batch ones and each example is
normalized on its own.

Jacobians. In training mode the output of example m depends on every example
of the batch through mu and var, so a per-example Jacobian w.r.t. the input
does not exist: `jac_z` raises NotImplementedError there and `jac_z_batch`
returns the full coupled (n, d, n, d) Jacobian d out_m / d z_n instead. `jac_x`
(w.r.t. the parameters) is per-example in both modes: [diag(xhat_n), I].
vjp / jvp are exact in both modes (the coupling included).

Data-parallel (tinynet.distributed; `self.comm`, set by Sequential from its
own): the batch is every rank's rows, so mu, var and the two means of the
coupling term are means over the global batch of N = P n rows, each one
all-reduce of per-rank column sums ("batchnorm": 2d numbers per forward, 2d
per vjp / jvp): the synchronized batch norm that makes P ranks compute what
one process computes on the whole batch.
"""
import numpy as np

from tinynet.kernels import batchnorm2d as K
from tinynet.layers.base import Stage
from tinynet.layers.running_stats import RunningStats


class _BatchNormBase(RunningStats, Stage):
    has_scale = True
    buffer_names = ("running_mean", "running_var")

    def __init__(self, d, eps=1e-5, momentum=0.1):
        super().__init__()
        if d <= 0:
            raise ValueError(f"{type(self).__name__}({d}): the number of features must be positive")
        if not 0 < momentum <= 1:
            raise ValueError(f"{type(self).__name__}: momentum must lie in (0, 1], got {momentum}")
        self.d, self.eps, self.momentum = int(d), float(eps), float(momentum)
        self.n_params = (2 if self.has_scale else 1) * self.d
        self._init_running(self.d)

    def __repr__(self):
        return f"{type(self).__name__}({self.d})"

    mixes_batch = True
    reduces_batch = True    # its batch statistics are reduced over self.comm (_batch_means)

    def set_input_shape(self, in_shape):
        in_shape = tuple(int(d) for d in in_shape)
        if in_shape != (self.d,):
            hint = "; for images use BatchNorm2d(channels)" if len(in_shape) == 3 else ""
            raise ValueError(f"{self!r} receives examples of shape {in_shape}, expects ({self.d},){hint}")
        self.in_shape = self.out_shape = in_shape
        return in_shape

    def bind(self, bk, theta):
        self.bk = bk
        self.theta = theta
        d = self.d
        self.gamma = theta[:d] if self.has_scale else bk.asarray(np.ones(d, dtype=theta.dtype))
        self.beta = theta[d:] if self.has_scale else theta
        self._zeros = bk.zeros(d, theta.dtype)      # mean-only: no scale grad, no xhat coupling term
        self._bind_running(bk)

    def _host_params(self):
        p = np.asarray(self.bk.to_host(self.theta))
        if self.has_scale:
            return p[:self.d], p[self.d:]
        return np.ones(self.d, dtype=p.dtype), p

    def _check(self, z):
        if z.ndim != 2 or z.shape[1] != self.d:
            raise ValueError(f"{self!r}: input must have shape (n, {self.d}), got {tuple(z.shape)}")

    # The per-step work is BatchNorm2d's kernel pairs (tinynet.kernels.batchnorm2d)
    # with one position per channel (P = 1), through bk.launch, on the network's
    # device; mean-only batch norm is the same maps with gamma = s = 1 and no
    # xhat term in the centering (svx = 0). The running statistics are a
    # float64 backend vector too (tinynet.layers.running_stats).
    def forward(self, z):
        bk, d = self.bk, self.d
        self._check(z)
        n, dt = z.shape[0], z.dtype
        if self.training:
            if n < 2:
                raise ValueError(f"{self!r}: batch statistics need at least 2 examples in training mode")
            N = n * self.comm.size              # the global batch
            if self.comm.size > 1:
                mu, var, s = self._global_stats(z)
            else:
                mu, var, s = bk.empty(d, dt), bk.empty(d, dt), bk.empty(d, dt)
                bk.launch(K, "channel_stats", d, z, mu, var, s, dt.type(self.eps), 1, nbytes=2 * z.nbytes)
            self._update_running(mu, var, N, has_var=self.has_scale)
        else:
            mu, s = self._running_eval(dt)
        if not self.has_scale:
            s = self.gamma                      # ones (bind)
        Xhat, out = bk.empty(z.shape, dt), bk.empty(z.shape, dt)
        bk.launch(K, "bn_forward", z.size, z, mu, s, self.gamma, self.beta, Xhat, out, 1, nbytes=3 * z.nbytes)
        return out, (Xhat, s, bool(self.training))

    def _global_stats(self, z):
        """Data-parallel: mu, var, s over every rank's rows (two passes on the host,
        each one all-reduce of d numbers, "batchnorm")."""
        bk, comm = self.bk, self.comm
        zh = np.asarray(bk.to_host(z))
        mu, = self._batch_means(zh)
        var = self._batch_means((zh - mu) ** 2)[0] if self.has_scale else np.zeros(self.d, zh.dtype)
        dt = zh.dtype
        return bk.asarray(mu.astype(dt)), bk.asarray(var.astype(dt)), bk.asarray(np.sqrt(var + self.eps).astype(dt))

    def _batch_means(self, *arrays):
        """Column means over every rank's rows (host arrays, one all-reduce)."""
        sums = [np.ascontiguousarray(a.sum(axis=0)) for a in arrays]
        self.comm.allreduce_sum(sums, "batchnorm")
        N = arrays[0].shape[0] * self.comm.size
        return [(t / N).astype(a.dtype) for t, a in zip(sums, arrays)]

    def _center_scale(self, ctx, V, sv=None, svx=None):
        """gamma/s (V - mean(V) - xhat mean(V xhat)) in training (no xhat term for
        mean-only), gamma/s V in evaluation; sv, svx the column sums of V and
        V xhat when the caller has them."""
        bk, d = self.bk, self.d
        Xhat, s, coupled = ctx
        if coupled:
            if sv is None:
                sv, svx = bk.empty(d, V.dtype), bk.empty(d, V.dtype)
                bk.launch(K, "channel_sums", d, V, Xhat, sv, svx, 1, nbytes=2 * V.nbytes)
            if self.comm.size > 1:
                both = np.concatenate([np.asarray(bk.to_host(sv)), np.asarray(bk.to_host(svx))])
                self.comm.allreduce_sum([both], "batchnorm")
                sv, svx = bk.asarray(both[:d].copy()), bk.asarray(both[d:].copy())
            if not self.has_scale:
                svx = self._zeros
            inv_m = V.dtype.type(1.0 / (V.shape[0] * self.comm.size))
        else:
            sv = svx = self._zeros
            inv_m = V.dtype.type(0.0)
        out = bk.empty(V.shape, V.dtype)
        bk.launch(K, "bn_center_scale", V.size, V, Xhat, self.gamma, s, sv, svx, out, inv_m, 1,
                  nbytes=3 * V.nbytes)
        return out

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        bk, d = self.bk, self.d
        Xhat = ctx[0]
        sv = svx = None
        if grad is not None:       # grad gamma = sum b xhat, grad beta = sum b (column sums)
            sv, svx = (grad[d:], grad[:d]) if self.has_scale else (grad, bk.empty(d, b_out.dtype))
            bk.launch(K, "channel_sums", d, b_out, Xhat, sv, svx, 1, nbytes=2 * b_out.nbytes)
        if not need_b_in:
            return None
        return self._center_scale(ctx, b_out, sv, svx)

    def jvp(self, ctx, dz_in, dx):
        bk, d = self.bk, self.d
        Xhat = ctx[0]
        out = None
        if dz_in is not None:
            out = self._center_scale(ctx, dz_in)
        if dx is not None:
            if out is None:
                out = bk.empty(Xhat.shape, Xhat.dtype)
            a, b = (dx[:d], dx[d:]) if self.has_scale else (self._zeros, dx)
            bk.launch(K, "bn_affine", Xhat.size, Xhat, a, b, out, 1, dz_in is not None, nbytes=3 * Xhat.nbytes)
        if out is None:
            return bk.zeros(Xhat.shape, Xhat.dtype)
        return out

    def _host_ctx(self, ctx):
        return np.asarray(self.bk.to_host(ctx[0])), np.asarray(self.bk.to_host(ctx[1])), ctx[2]

    def jac_x(self, ctx):
        xhat = self._host_ctx(ctx)[0]
        n, d = xhat.shape
        J = np.zeros((n, d, self.n_params), dtype=xhat.dtype)
        r = np.arange(d)
        if self.has_scale:
            J[:, r, r] = xhat
            J[:, r, d + r] = 1.0
        else:
            J[:, r, r] = 1.0
        return J

    def jac_z(self, ctx):
        xhat, s, coupled = self._host_ctx(ctx)
        if coupled:
            raise NotImplementedError(
                f"{self!r} in training mode couples the examples of a batch (through the batch "
                "mean and variance): there is no per-example Jacobian. Use jac_z_batch(ctx) for the "
                "full (n, d, n, d) Jacobian, or evaluation mode (stage.training = False).")
        gamma, _ = self._host_params()
        n, d = xhat.shape
        J = np.zeros((n, d, d), dtype=xhat.dtype)
        J[:, np.arange(d), np.arange(d)] = gamma / s
        return J

    def jac_z_batch(self, ctx):
        """d out[m, j] / d z[n, k] as (n, d, n, d), coupling included."""
        xhat = self._host_ctx(ctx)[0]
        n, d = xhat.shape
        J = np.zeros((n, d, n, d), dtype=xhat.dtype)
        for a in range(n):
            for k in range(d):
                e = np.zeros_like(xhat)
                e[a, k] = 1.0
                J[:, :, a, k] = np.asarray(self.bk.to_host(self.jvp(ctx, self.bk.asarray(e), None)))
        return J


class BatchNorm(_BatchNormBase):
    has_scale = True

    def init_params(self, rng, dtype, next_activation=None, alpha=None, scheme="auto"):
        return np.concatenate([np.ones(self.d), np.zeros(self.d)]).astype(dtype)


class MeanOnlyBatchNorm(_BatchNormBase):
    has_scale = False

    def init_params(self, rng, dtype, next_activation=None, alpha=None, scheme="auto"):
        return np.zeros(self.d, dtype=dtype)

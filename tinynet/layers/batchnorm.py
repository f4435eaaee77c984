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

from tinynet.layers.base import Stage


class _BatchNormBase(Stage):
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
        self.running_mean = np.zeros(self.d)
        self.running_var = np.ones(self.d)

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

    def _host_params(self):
        p = np.asarray(self.bk.to_host(self.theta))
        if self.has_scale:
            return p[:self.d], p[self.d:]
        return np.ones(self.d, dtype=p.dtype), p

    def _check(self, z):
        if z.ndim != 2 or z.shape[1] != self.d:
            raise ValueError(f"{self!r}: input must have shape (n, {self.d}), got {z.shape}")

    def forward(self, z):
        zh = np.asarray(self.bk.to_host(z))
        self._check(zh)
        n = zh.shape[0]
        if self.training:
            if n < 2:
                raise ValueError(f"{self!r}: batch statistics need at least 2 examples in training mode")
            N = n * self.comm.size              # the global batch
            mu, = self._batch_means(zh)
            var = self._batch_means((zh - mu) ** 2)[0] if self.has_scale else np.zeros(self.d)
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mu
            if self.has_scale:
                self.running_var = (1 - m) * self.running_var + m * var * N / (N - 1)
        else:
            mu, var = self.running_mean.astype(zh.dtype), self.running_var.astype(zh.dtype)
        s = np.sqrt(var + self.eps) if self.has_scale else np.ones(self.d, dtype=zh.dtype)
        xhat = (zh - mu) / s
        gamma, beta = self._host_params()
        out = gamma * xhat + beta
        return self.bk.asarray(out.astype(zh.dtype)), (xhat, s, bool(self.training))

    def _center(self, v, xhat, coupled):
        """The batch-statistics part of the Jacobian (self-adjoint):
        v - mean(v) - xhat mean(v xhat) (full), v - mean(v) (mean-only)."""
        if not coupled:
            return v
        if self.comm.size > 1:               # both means in one all-reduce (mean(xhat) = 0)
            m1, m2 = self._batch_means(v, v * xhat)
            return v - m1 - xhat * m2 if self.has_scale else v - m1
        v = v - v.mean(axis=0)
        if self.has_scale:
            v = v - xhat * (v * xhat).mean(axis=0)
        return v

    def _batch_means(self, *arrays):
        """Column means over the batch: this process's rows, or all ranks' rows."""
        comm = self.comm
        if comm.size == 1:
            return [a.mean(axis=0) for a in arrays]
        sums = [np.ascontiguousarray(a.sum(axis=0)) for a in arrays]
        comm.allreduce_sum(sums, "batchnorm")
        N = arrays[0].shape[0] * comm.size
        return [(t / N).astype(a.dtype) for t, a in zip(sums, arrays)]

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        xhat, s, coupled = ctx
        b = np.asarray(self.bk.to_host(b_out))
        if grad is not None:
            g = b.sum(axis=0)
            flat = np.concatenate([(b * xhat).sum(axis=0), g]) if self.has_scale else g
            self.bk.copy_into(grad, self.bk.asarray(flat.astype(b.dtype)))
        if not need_b_in:
            return None
        gamma, _ = self._host_params()
        return self.bk.asarray(self._center(b * gamma / s, xhat, coupled).astype(b.dtype))

    def jvp(self, ctx, dz_in, dx):
        xhat, s, coupled = ctx
        gamma, _ = self._host_params()
        out = np.zeros_like(xhat)
        if dz_in is not None:
            out += gamma * self._center(np.asarray(self.bk.to_host(dz_in)) / s, xhat, coupled)
        if dx is not None:
            dxh = np.asarray(self.bk.to_host(dx))
            if self.has_scale:
                out += dxh[:self.d] * xhat + dxh[self.d:]
            else:
                out += dxh
        return self.bk.asarray(out)

    def jac_x(self, ctx):
        xhat = ctx[0]
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
        xhat, s, coupled = ctx
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
        xhat = ctx[0]
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

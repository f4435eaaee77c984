"""BatchNorm2d: batch normalization of images, per channel (torch.nn.BatchNorm2d).

Index legend: n batch, C channels, (H, W) image size, P = H*W positions,
D = C*P entries of a row (C-major: entry c*P + p is channel c at position p),
m = n*P values per channel. Statistics per channel, over the batch AND the
positions:
  mu_c = 1/m sum_{e,p} z[e, c, p],  var_c = 1/m sum_{e,p} (z - mu_c)^2,
  s_c = sqrt(var_c + eps),  xhat = (z - mu_c) / s_c,
  out = gamma_c xhat + beta_c,
parameters [gamma; beta] (2C; gamma starts at 1, beta at 0).

Modes (`stage.training`), as tinynet.layers.batchnorm.BatchNorm: in training the
batch statistics are used and the running statistics are updated,
r <- (1 - momentum) r + momentum * batch (running variance with the unbiased
factor m/(m-1), as PyTorch); in evaluation the running statistics replace the
batch ones and each example is normalized on its own.

Derivatives (per channel; mean_c is the mean over its m values):
  grad gamma = sum b xhat,  grad beta = sum b
  grad_z f b = gamma/s (b - mean_c(b) - xhat mean_c(b xhat))   (training: coupled)
             = gamma/s b                                         (evaluation)
  jvp: dout = gamma/s (dz - mean_c(dz) - xhat mean_c(dz xhat)) + dgamma xhat + dbeta
(the batch-statistics part is self-adjoint: one kernel serves vjp and jvp).

The per-step work runs in the kernel pairs of tinynet.kernels.batchnorm2d
through `bk.launch`, the running statistics' update too (a float64 backend
vector, tinynet.layers.running_stats).
Data-parallel (tinynet.distributed, `self.comm` set by Sequential): mu_c and
var_c are over every rank's rows (two all-reduces of C numbers per forward, on
the host), and the two coupling means of vjp / jvp over them too (2C numbers).

Jacobians. In training mode an output row depends on every row of the batch,
so `jac_z` raises NotImplementedError there and `jac_z_batch` returns the full
coupled (n, D, n, D) Jacobian; `jac_x` is per-example in both modes:
[xhat, 1] per channel. The second-order pieces (hess_*, hvp_*, *_many) are not
provided, as for BatchNorm: the dense and matrix-free curvature of tinynet
takes per-example stages.
"""
import numpy as np

from tinynet.kernels import batchnorm2d as K
from tinynet.layers.base import Stage
from tinynet.layers.running_stats import RunningStats


class BatchNorm2d(RunningStats, Stage):
    needs_input_shape = True     # Sequential needs input_shape=(C, H, W) when this comes first
    mixes_batch = True
    reduces_batch = True     # data-parallel: statistics and the coupling sums over self.comm
    buffer_names = ("running_mean", "running_var")

    def __init__(self, channels, eps=1e-5, momentum=0.1):
        super().__init__()
        if int(channels) != channels or channels <= 0:
            raise ValueError(f"BatchNorm2d({channels}): the number of channels must be a positive integer")
        if not 0 < momentum <= 1:
            raise ValueError(f"BatchNorm2d: momentum must lie in (0, 1], got {momentum}")
        self.channels, self.eps, self.momentum = int(channels), float(eps), float(momentum)
        self.n_params = 2 * self.channels
        self._init_running(self.channels)
        self.P = None            # positions H*W, known once the input shape is

    def __repr__(self):
        return f"BatchNorm2d({self.channels})"

    def set_input_shape(self, in_shape):
        in_shape = tuple(int(d) for d in in_shape)
        if len(in_shape) != 3:
            hint = f"; for vectors use BatchNorm({in_shape[0]})" if len(in_shape) == 1 else ""
            raise ValueError(f"{self!r} takes images of shape (C, H, W) but receives examples of shape "
                             f"{in_shape}{hint}")
        C, H, W = in_shape
        if C != self.channels:
            raise ValueError(f"{self!r} expects {self.channels} channels, receives {C} "
                             f"(input shape {in_shape})")
        self.P = H * W
        self.in_shape = self.out_shape = in_shape
        return in_shape

    def bind(self, bk, theta):
        self.bk = bk
        self.theta = theta
        self.gamma = theta[:self.channels]
        self.beta = theta[self.channels:]
        self._bind_running(bk)

    def init_params(self, rng, dtype, next_activation=None, alpha=None, scheme="auto"):
        return np.concatenate([np.ones(self.channels), np.zeros(self.channels)]).astype(dtype)

    def _check(self, z):
        if self.P is None:
            raise ValueError(f"{self!r}: the image size is unknown; call set_input_shape((C, H, W)) "
                             "or give Sequential input_shape=(C, H, W)")
        D = self.channels * self.P
        if z.ndim != 2 or z.shape[1] != D:
            raise ValueError(f"{self!r}: input must have shape (n, {D}) (examples of shape "
                             f"{self.in_shape}, flattened C-major), got {tuple(z.shape)}")

    # -- the contract ------------------------------------------------------------------------
    def forward(self, z):
        bk, C, P = self.bk, self.channels, self.P
        self._check(z)
        n, dt = z.shape[0], z.dtype
        m = n * P
        if self.training:
            if m < 2:
                raise ValueError(f"{self!r}: batch statistics need at least 2 values per channel in "
                                 f"training mode (n * H * W = {m})")
            if self.comm.size > 1:
                mu, var, s = self._global_stats(z)
                m *= self.comm.size
            else:
                mu, var, s = bk.empty(C, dt), bk.empty(C, dt), bk.empty(C, dt)
                bk.launch(K, "channel_stats", C, z, mu, var, s, dt.type(self.eps), P, nbytes=2 * z.nbytes)
            self._update_running(mu, var, m)
        else:
            mu, s = self._running_eval(dt)
        Xhat, out = bk.empty(z.shape, dt), bk.empty(z.shape, dt)
        bk.launch(K, "bn_forward", z.size, z, mu, s, self.gamma, self.beta, Xhat, out, P,
                  nbytes=3 * z.nbytes)
        return out, (Xhat, s, bool(self.training))

    def _inv_m(self, ctx):
        Xhat, _, coupled = ctx
        return Xhat.dtype.type(1.0 / (Xhat.shape[0] * self.P * self.comm.size) if coupled else 0.0)

    def _global_stats(self, z):
        """Data-parallel (self.comm over P ranks): mu, var, s per channel over every
        rank's rows, two passes on the host, each one all-reduce of C numbers
        ("batchnorm")."""
        bk, C, comm = self.bk, self.channels, self.comm
        zh = np.asarray(bk.to_host(z), dtype=np.float64).reshape(z.shape[0], C, self.P)
        M = zh.shape[0] * self.P * comm.size
        S = np.ascontiguousarray(zh.sum(axis=(0, 2)))
        comm.allreduce_sum([S], "batchnorm")
        mu = S / M
        Q = np.ascontiguousarray(((zh - mu[None, :, None]) ** 2).sum(axis=(0, 2)))
        comm.allreduce_sum([Q], "batchnorm")
        var = Q / M
        dt = z.dtype
        return (bk.asarray(mu.astype(dt)), bk.asarray(var.astype(dt)),
                bk.asarray(np.sqrt(var + self.eps).astype(dt)))

    def _global_sums(self, sv, svx):
        """The channel sums of V and V xhat over every rank's rows (copies: the
        local ones may be this stage's gradient, which the network reduces itself)."""
        bk = self.bk
        both = np.concatenate([np.asarray(bk.to_host(sv)), np.asarray(bk.to_host(svx))])
        self.comm.allreduce_sum([both], "batchnorm")
        C = self.channels
        return bk.asarray(both[:C].copy()), bk.asarray(both[C:].copy())

    def _center_scale(self, ctx, V, sv=None, svx=None):
        """gamma/s (V - mean_c(V) - xhat mean_c(V xhat)) (training), gamma/s V (evaluation);
        sv, svx: the channel sums of V and V xhat (computed here when not given)."""
        bk, C = self.bk, self.channels
        Xhat, s, coupled = ctx
        if sv is None and coupled:
            sv, svx = bk.empty(C, V.dtype), bk.empty(C, V.dtype)
            bk.launch(K, "channel_sums", C, V, Xhat, sv, svx, self.P, nbytes=2 * V.nbytes)
        elif sv is None:           # evaluation: inv_m = 0, the sums are not used
            sv, svx = bk.zeros(C, V.dtype), bk.zeros(C, V.dtype)
        if coupled and self.comm.size > 1:
            sv, svx = self._global_sums(sv, svx)
        out = bk.empty(V.shape, V.dtype)
        bk.launch(K, "bn_center_scale", V.size, V, Xhat, self.gamma, s, sv, svx, out,
                  self._inv_m(ctx), self.P, nbytes=3 * V.nbytes)
        return out

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        bk, C = self.bk, self.channels
        Xhat = ctx[0]
        sv = svx = None
        if grad is not None:       # grad gamma = sum b xhat, grad beta = sum b (channel sums)
            sv, svx = grad[C:], grad[:C]
            bk.launch(K, "channel_sums", C, b_out, Xhat, sv, svx, self.P, nbytes=2 * b_out.nbytes)
        if not need_b_in:
            return None
        return self._center_scale(ctx, b_out, sv, svx)

    def jvp(self, ctx, dz_in, dx):
        bk, C = self.bk, self.channels
        Xhat = ctx[0]
        out = None
        if dz_in is not None:
            out = self._center_scale(ctx, dz_in)
        if dx is not None:
            if out is None:
                out = bk.empty(Xhat.shape, Xhat.dtype)
            bk.launch(K, "bn_affine", Xhat.size, Xhat, dx[:C], dx[C:], out, self.P, dz_in is not None,
                      nbytes=3 * Xhat.nbytes)
        if out is None:
            return bk.zeros(Xhat.shape, Xhat.dtype)
        return out

    # -- explicit Jacobians (host numpy) -------------------------------------------------------
    # Output entry (c, p) of an example sits at column c*P + p; gamma_c at
    # parameter c, beta_c at C + c.
    def _channel_of_entry(self):
        return np.repeat(np.arange(self.channels), self.P)

    def jac_x(self, ctx):
        """(n, D, 2C): d out[c, p] / d gamma_c = xhat[c, p], d out[c, p] / d beta_c = 1."""
        xhat = np.asarray(self.bk.to_host(ctx[0]))
        n, D = xhat.shape
        ch, r = self._channel_of_entry(), np.arange(D)
        J = np.zeros((n, D, self.n_params), dtype=xhat.dtype)
        J[:, r, ch] = xhat
        J[:, r, self.channels + ch] = 1.0
        return J

    def _scale_host(self, ctx):
        gamma = np.asarray(self.bk.to_host(self.gamma))
        return gamma / np.asarray(self.bk.to_host(ctx[1]))

    def jac_z(self, ctx):
        """(n, D, D), evaluation mode only: diag(gamma_c / s_c) per example."""
        xhat, _, coupled = ctx
        if coupled:
            raise NotImplementedError(
                f"{self!r} in training mode couples the examples of a batch (through the batch "
                "mean and variance of each channel): there is no per-example Jacobian. Use "
                "jac_z_batch(ctx) for the full (n, D, n, D) Jacobian, or evaluation mode "
                "(stage.training = False).")
        n, D = xhat.shape
        g = self._scale_host(ctx)[self._channel_of_entry()]
        J = np.zeros((n, D, D), dtype=xhat.dtype)
        J[:, np.arange(D), np.arange(D)] = g
        return J

    def jac_z_batch(self, ctx):
        """d out[e, (c, p)] / d z[a, (c', p')] as (n, D, n, D), coupling included: zero for
        c != c'; else gamma_c/s_c (delta_ea delta_pp' - 1/m - xhat[e,c,p] xhat[a,c,p'] / m)
        in training, gamma_c/s_c delta_ea delta_pp' in evaluation."""
        xhat = np.asarray(self.bk.to_host(ctx[0]))
        coupled = ctx[2]
        n, D = xhat.shape
        C, P = self.channels, self.P
        m = n * P
        g = self._scale_host(ctx)
        X = xhat.reshape(n, C, P)
        J = np.zeros((n, C, P, n, C, P), dtype=xhat.dtype)
        for c in range(C):
            block = np.eye(m)
            if coupled:
                x = X[:, c, :].reshape(m)
                block = block - 1.0 / m - np.outer(x, x) / m
            J[:, c, :, :, c, :] = (g[c] * block).reshape(n, P, n, P)
        return J.reshape(n, D, n, D)

"""The shared machinery of the eigendecomposition stages of seed 004 (ZCA
whitening, PCA denoising): grouped batch statistics, one symmetric
eigendecomposition per group (tinynet.ed), and the linear map it gives.

Index legend: n batch, C channels (the features of a vector row, P = 1; the
channels of an image row, P = H*W positions), D = C*P entries of a row
(C-major), G groups of d = C/G consecutive channels (channels g*d .. g*d+d-1
form group g), m = n*P samples per channel, r eigenpairs kept per group.
Per group, with x_s in R^d the s-th sample (an example at a position):

  mu = 1/m sum_s x_s,  Sigma = 1/m sum_s (x_s - mu)(x_s - mu)^T + eps I   (biased)
  Sigma = U diag(lam) U^T,  Wm = sum_{i<r} f(lam_i) u_i u_i^T
  z_s = Wm (x_s - mu) + c mu

(ZCA: f = lam^{-1/2}, r = d, c = 0; PCA: f = 1, r = k, c = 1). Wm is symmetric.

Derivatives (training mode: the batch statistics couple the examples), with
b_s = dL/dz_s, bbar = 1/m sum_s b_s, xc_s = x_s - mu:
  dL/dWm = sum_s b_s xc_s^T,  dL/dv_i = f_i (dL/dWm + dL/dWm^T) v_i,
  dL/dlam_i = f'(lam_i) v_i^T dL/dWm v_i,  dL/dSigma = the ED rule (tinynet.ed),
  dL/dx_s = Wm (b_s - bbar) + c bbar + 2/m dL/dSigma xc_s
(the mean's own term cancels because sum_s xc_s = 0). jvp: dmu = mean(dx),
dSigma = O + O^T with O = 1/m sum_s (dx_s - dmu) xc_s^T, (dV, dlam) from the ED
rule's forward mode, dWm = sum_i f'_i dlam_i v_i v_i^T + f_i (dv_i v_i^T + v_i dv_i^T),
dz_s = Wm (dx_s - dmu) + dWm xc_s + c dmu.

Modes (`stage.training`), as BatchNorm: in training the batch statistics are
used and the running estimates are updated, r <- (1 - momentum) r + momentum *
batch, for mu and for Wm (Sigma^{-1/2} for ZCA, the projector U_k U_k^T for
PCA: the projector, not U_k itself, since eigenvectors have no sign to average);
in evaluation z_s = Wm_run (x_s - mu_run) + c mu_run, per example.

Jacobians: no parameters (`jac_x` is (n, D, 0)); in training mode there is no
per-example `jac_z` (NotImplementedError, as BatchNorm), `jac_z_batch` gives the
coupled (n, D, n, D) one; in evaluation `jac_z` is block-diagonal per position.
The per-step work runs in the kernel pairs of tinynet.kernels.ed (bk.launch);
the eigh factorization and the running estimates live on the host.
"""
import numpy as np

from tinynet.ed import SymmetricED
from tinynet.kernels import ed as K
from tinynet.layers.base import Stage


class GroupedEDStage(Stage):
    """Base of ZCAWhitening and PCADenoising: subclasses set `name`, `shift_mean`
    (c above) and `weights(lam) -> (f, f')` on host arrays (G, r); `r` is the number
    of eigenpairs kept per group (None: all d)."""

    mixes_batch = True
    needs_input_shape = True
    name = "GroupedEDStage"
    shift_mean = 0.0
    buffer_names = ("running_mean", "running_W")

    def buffers(self):
        """The running estimates, and the power iteration's generator (rule "pi" draws its starts)."""
        import json
        return {**super().buffers(), "rng": json.dumps(self.ed.rng.bit_generator.state)}

    def load_buffers(self, state):
        import json
        super().load_buffers(state)
        if "rng" in state:
            self.ed.rng.bit_generator.state = json.loads(state["rng"])

    def __init__(self, channels, r, groups=1, eps=1e-4, backward="hybrid", pi_iters=19,
                 momentum=0.1, seed=0):
        super().__init__()
        if int(channels) != channels or channels <= 0:
            raise ValueError(f"{self.name}({channels}): the number of channels must be a positive integer")
        if int(groups) != groups or groups <= 0 or channels % groups:
            raise ValueError(f"{self.name}({channels}, groups={groups}): groups must be a positive "
                             f"divisor of the {channels} channels")
        if not eps >= 0:
            raise ValueError(f"{self.name}: eps must be >= 0, got {eps}")
        if not 0 < momentum <= 1:
            raise ValueError(f"{self.name}: momentum must lie in (0, 1], got {momentum}")
        self.channels, self.groups = int(channels), int(groups)
        self.d = self.channels // self.groups
        r = self.d if r is None else r          # None: every eigenpair (ZCA)
        if int(r) != r or not 1 <= r <= self.d:
            raise ValueError(f"{self.name}: k = {r} eigenvectors per group must lie in 1..{self.d} "
                             f"(group size d = {channels} / {groups})")
        self.eps, self.momentum, self.backward, self.pi_iters = float(eps), float(momentum), backward, int(pi_iters)
        self.ed = SymmetricED(backward, int(r), K=pi_iters, eps=eps, seed=seed)
        self.r = int(r)
        self.running_mean = np.zeros(self.channels)
        self.running_W = np.broadcast_to(np.eye(self.d), (self.groups, self.d, self.d)).copy()
        self.P = None

    def __repr__(self):
        return f"{self.name}({self.channels}{self._extra_repr()}, groups={self.groups}, backward={self.backward!r})"

    def _extra_repr(self):
        return ""

    def set_input_shape(self, in_shape):
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) not in (1, 3):
            raise ValueError(f"{self!r} takes vectors (C,) or images (C, H, W), receives examples of "
                             f"shape {in_shape}")
        if in_shape[0] != self.channels:
            raise ValueError(f"{self!r} expects {self.channels} channels, receives {in_shape[0]} "
                             f"(input shape {in_shape})")
        self.P = 1 if len(in_shape) == 1 else in_shape[1] * in_shape[2]
        self.in_shape = self.out_shape = in_shape
        return in_shape

    def _check(self, z):
        if self.P is None:
            raise ValueError(f"{self!r}: the input shape is unknown; call set_input_shape((C,)) or "
                             "((C, H, W)), or give Sequential input_shape")
        D = self.channels * self.P
        if z.ndim != 2 or z.shape[1] != D:
            raise ValueError(f"{self!r}: input must have shape (n, {D}) (examples of shape "
                             f"{self.in_shape}, flattened C-major), got {tuple(z.shape)}")

    def weights(self, lam):
        raise NotImplementedError

    # -- the contract ------------------------------------------------------------------------
    def forward(self, z):
        bk, C, P, G, d = self.bk, self.channels, self.P, self.groups, self.d
        self._check(z)
        n, dt = z.shape[0], z.dtype
        t = dt.type
        out = bk.empty(z.shape, dt)
        if not self.training:
            mu = bk.asarray(self.running_mean.astype(dt))
            Wm = bk.asarray(self.running_W.astype(dt))
            shift = bk.asarray((self.shift_mean * self.running_mean).astype(dt))
            bk.launch(K, "group_apply", z.size, z, mu, Wm, shift, out, t(1), P, False, flops=2.0 * z.size * d)
            return out, (z, mu, Wm, False)
        m = n * P
        if m < 2:
            raise ValueError(f"{self!r}: batch statistics need at least 2 samples per channel in "
                             f"training mode (n * H * W = {m})")
        mu, S = bk.empty(C, dt), bk.empty((G, d, d), dt)
        bk.launch(K, "channel_mean", C, z, mu, P, nbytes=z.nbytes)
        bk.launch(K, "group_outer", G * d * d, z, mu, z, mu, S, t(1.0 / m), t(self.eps), P,
                  flops=2.0 * m * G * d * d)
        V, lam, ectx = self.ed.forward(bk, S)
        f, fp = self.weights(np.asarray(bk.to_host(lam), dtype=np.float64))
        f, fp = bk.asarray(f.astype(dt)), bk.asarray(fp.astype(dt))
        Wm = bk.empty((G, d, d), dt)
        bk.launch(K, "assemble", G * d * d, V, f, Wm, flops=3.0 * G * d * d * self.r)
        mu_h = np.asarray(bk.to_host(mu), dtype=np.float64)
        shift = bk.asarray((self.shift_mean * mu_h).astype(dt))
        bk.launch(K, "group_apply", z.size, z, mu, Wm, shift, out, t(1), P, False, flops=2.0 * z.size * d)
        a = self.momentum
        self.running_mean = (1 - a) * self.running_mean + a * mu_h
        self.running_W = (1 - a) * self.running_W + a * np.asarray(bk.to_host(Wm), dtype=np.float64)
        return out, (z, mu, Wm, True, V, f, fp, ectx)

    def _zeros_c(self, dt):
        return self.bk.zeros(self.channels, dt)

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        if not need_b_in:
            return None
        bk, C, P, G, d = self.bk, self.channels, self.P, self.groups, self.d
        z, mu, Wm, coupled = ctx[:4]
        dt = b_out.dtype
        t = dt.type
        out = bk.empty(b_out.shape, dt)
        if not coupled:
            zc = self._zeros_c(dt)
            bk.launch(K, "group_apply", out.size, b_out, zc, Wm, zc, out, t(1), P, False)
            return out
        V, f, fp, ectx = ctx[4:]
        m = z.shape[0] * P
        bbar, GW = bk.empty(C, dt), bk.empty((G, d, d), dt)
        bk.launch(K, "channel_mean", C, b_out, bbar, P)
        bk.launch(K, "group_outer", G * d * d, b_out, self._zeros_c(dt), z, mu, GW, t(1), t(0), P,
                  flops=2.0 * m * G * d * d)
        gV, glam = bk.empty((G, d, self.r), dt), bk.empty((G, self.r), dt)
        bk.launch(K, "weights_vjp", G * self.r, GW, V, f, fp, gV, glam, flops=4.0 * G * self.r * d * d)
        GS = self.ed.vjp(bk, ectx, gV, glam)
        shift = bk.asarray((self.shift_mean * np.asarray(bk.to_host(bbar))).astype(dt))
        bk.launch(K, "group_apply", out.size, b_out, bbar, Wm, shift, out, t(1), P, False)
        bk.launch(K, "group_apply", out.size, z, mu, GS, self._zeros_c(dt), out, t(2.0 / m), P, True)
        return out

    def jvp(self, ctx, dz_in, dx):
        bk, C, P, G, d = self.bk, self.channels, self.P, self.groups, self.d
        z, mu, Wm, coupled = ctx[:4]
        dt = z.dtype
        t = dt.type
        if dz_in is None:
            return bk.zeros(z.shape, dt)
        out = bk.empty(z.shape, dt)
        zc = self._zeros_c(dt)
        if not coupled:
            bk.launch(K, "group_apply", out.size, dz_in, zc, Wm, zc, out, t(1), P, False)
            return out
        V, f, fp, ectx = ctx[4:]
        m = z.shape[0] * P
        dmu, O, dS = bk.empty(C, dt), bk.empty((G, d, d), dt), bk.empty((G, d, d), dt)
        bk.launch(K, "channel_mean", C, dz_in, dmu, P)
        bk.launch(K, "group_outer", G * d * d, dz_in, dmu, z, mu, O, t(1.0 / m), t(0), P)
        bk.launch(K, "group_sym", G * d * d, O, dS)
        dV, dlam = self.ed.jvp(bk, ectx, dS)
        dW = bk.empty((G, d, d), dt)
        bk.launch(K, "weights_jvp", G * d * d, V, dV, f, fp, dlam, dW)
        shift = bk.asarray((self.shift_mean * np.asarray(bk.to_host(dmu))).astype(dt))
        bk.launch(K, "group_apply", out.size, dz_in, dmu, Wm, shift, out, t(1), P, False)
        bk.launch(K, "group_apply", out.size, z, mu, dW, zc, out, t(1), P, True)
        return out

    # -- explicit Jacobians (host numpy) -------------------------------------------------------
    def jac_x(self, ctx):
        n, D = ctx[0].shape
        return np.zeros((n, D, 0), dtype=ctx[0].dtype)

    def jac_z(self, ctx):
        """(n, D, D), evaluation mode only: entry (c, p) <- (c', p) with weight
        Wm_run[g, c - gd, c' - gd] for c, c' in group g."""
        z, _, Wm, coupled = ctx[:4]
        if coupled:
            raise NotImplementedError(
                f"{self!r} in training mode couples the examples of a batch (through the batch "
                "mean and covariance of each group): there is no per-example Jacobian. Use "
                "jac_z_batch(ctx) for the full (n, D, n, D) Jacobian, or evaluation mode "
                "(stage.training = False).")
        n, D = z.shape
        C, P, G, d = self.channels, self.P, self.groups, self.d
        Wh = np.asarray(self.bk.to_host(Wm))
        J = np.zeros((C, P, C, P), dtype=Wh.dtype)
        for g in range(G):
            for p in range(P):
                J[g * d:(g + 1) * d, p, g * d:(g + 1) * d, p] = Wh[g]
        return np.broadcast_to(J.reshape(D, D), (n, D, D)).copy()

    def jac_z_batch(self, ctx):
        """d out[e, j] / d z[a, k] as (n, D, n, D), coupling included (jvp columns)."""
        z = ctx[0]
        zh = np.asarray(self.bk.to_host(z))
        n, D = zh.shape
        J = np.zeros((n, D, n, D), dtype=zh.dtype)
        for a in range(n):
            for k in range(D):
                e = np.zeros_like(zh)
                e[a, k] = 1.0
                J[:, :, a, k] = np.asarray(self.bk.to_host(self.jvp(ctx, self.bk.asarray(e), None)))
        return J

"""Updated backpropagation, UBP (thesis chapter 5, algorithm 2).

Index legend: n batch, k network outputs, o / i out- / in-features of the
stage with parameters being visited (a Linear layer in the thesis; any stage
with parameters here, e.g. Conv2d), l its index; h = h_{l-1} (n, i) its input, a = a_l
(n, o) its output (pre-activation); J_i = d f / d a_l (k, o) per example;
D_i = d^2 l_i / d f^2 (k, k); lambda = lr.

Backpropagation visits the stages with parameters from the top down. UBP applies each
layer's update *before* the signal passes through it, and corrects the signal
to first order for that update (thesis 5.2):

  db = -(lambda/n) sum_i da_i ;  dW = -(lambda/n) sum_i da_i h_i^T    (alg. 2, lines 11-12)
  dh_i <- (W + dW)^T da_i + W^T H_i (dW h_i + db)                       (alg. 2, line 14)
  J_i <- J_i W   (W before its update)                                  (alg. 2, line 15)

For any stage f_l(h; x) the same three lines read: dx = -lambda grad_x f B
(the SGD update), the output change dA = grad_x f dx (the stage's jvp:
dW h_i + db for Linear, the convolution of the patches with dW plus db for
Conv2d), and the signal below
  grad_z f(x + dx)^T da + grad_z f^T H dA
  = grad_z f^T (da + H dA) + (d/dx grad_z f^T da) dx     (vjp, then hvp_z: B dW for Linear)
to first order. Parameter-free stages (activations, pooling, Flatten) pass
the signal and J through grad_z f. Stages that mix the examples of a batch
(batch norm in training) are refused: H_i is per example.

H_i = d^2 l_i / d a_l^2, either its Gauss-Newton form J_i^T D_i J_i
(`curvature="gn"`, the thesis's choice, 5.2) or the exact second derivative
(`curvature="exact"`: GN plus, for each activation stage above, the term
P^T diag(f''(z) * b) P, P = d z / d a_l, b = d l_i / d(activation output)).
All forward quantities, f'(a) and the Jacobians are those of the network
*before* the step (one forward pass); the exact H_i is taken there too, which
is all the first-order argument of 5.2 needs.

Scaling: tinynet's signals are B = rows da_i / n (the loss's vjp), so
dW^T = -lambda H^T B (the SGD gradient matmul) and the correction enters as
C = rows H_i (dW h_i + db) / n, added to B before the product with W.

Two modes give the same update:
- `explicit`: J_i stored as host arrays (n, k, width), propagated by J <- J W
  and J <- J diag(f'); kept after the step in `last_jacobians` (stage index ->
  (n, k, o) array, J at that Linear layer's output). With `curvature="exact"`
  the dense per-example Hessians H_i (n, o, o) are propagated instead
  (H <- W^T H W; H <- diag(f') H diag(f') + diag(f'' * b)) and kept in
  `last_hessians`. Cost n k o i (GN) or n o i^2 (exact) per layer: for
  teaching and small nets; a batch whose arrays would exceed
  `max_jacobian_bytes` is refused.
- `matrix_free`: H_i v by a forward-mode pass (the stages' jvp) from a_l up to
  the output, D_i, and a reverse pass (the stages' vjp) back down to a_l; for
  `exact`, the reverse pass adds f''(z) * b * dz at each activation (the R-op).
  All parameter updates are applied after the sweep, so every stage above
  still holds its pre-update weights during these passes. Never forms J.

Cost (matrix_free): the passes for layer l cross every stage above it, so the
sweep costs sum_l (2 x the GEMMs above l), O(L^2) in depth; the updates are
sequentially dependent (dW_l needs the corrected signal from l+1), so passes
of different layers cannot be fused. Two savings: the bottom Linear layer needs
no correction (its dh is never used), and dW h_i + db for the whole batch is
-lambda (H H^T + 1 1^T) B (a Gram product, n^2 (i + o) instead of n i o flops
when that is cheaper), likewise B dW = -lambda (B B^T) H. Measured on the
MNIST autoencoder, batch 200, float32, 2 cores (benchmarks/ubp.py): 3.4x an
SGD step (GN), 3.8x (exact; it adds one plain backward pass for the f'' * b
weights); the GEMM flops alone are 3.35x. Explicit mode: ~60x at batch 20.

Explosion control (thesis 5.5): per layer, rho_l = ||C|| / ||B|| (Frobenius
over the batch, both in the pre-activation space a_l, before the common product
with W^T) measures the correction's size relative to the plain signal;
`metrics["correction_ratio"]` is max_l rho_l, `last_ratios` the per-layer
values. With `clip=c`, a correction with rho_l > c is scaled down to
||C|| = c ||B||. Divergence beyond that is the trainer's guard's business.
On the MNIST autoencoder the top layer's rho grows during training (0.2 ->
0.9 at lr 0.03) and the loss climbs back from the ~53 plateau; clipping the
correction delays but does not stop it (the (W + dW)^T term goes wrong too):
UBP is usable there up to lr ~0.02 (default 0.01), where SGD takes 0.3.

Momentum (not in the thesis; issue 20 part 2 asks how UBP fares with it):
with `momentum=mu > 0` each layer keeps a velocity v_l <- mu v_l + g_l, g_l the
gradient from the corrected signal, and takes delta_l = -lambda v_l (heavy
ball, the form of tinynet.optim.SGD). The correction of line 14 is the
first-order effect of whatever update the layer takes, so it is computed for
this delta: dA = grad_x f delta (the stage's jvp) and B dW by hvp_z, not the
Gram forms, which assume delta = -lambda grad. mu = 0 is algorithm 2 exactly.

Data-parallel over P ranks (net.comm, tinynet.distributed): the rows carry
1/n of the global batch; each layer's update is all-reduced before the
signal below it is corrected (one collective per layer: the sweep is
sequential), and the norms of the explosion control are those of the global
batch (two numbers per layer).
"""
import numpy as np

from tinynet.kernels import scalars as _sc
from tinynet.layers.activation import Activation
from tinynet.optim.base import Optimizer, check_range

CURVATURES = ("gn", "exact")
MODES = ("matrix_free", "explicit")


class UBP(Optimizer):
    """`UBP(net, lr, curvature="gn", mode="matrix_free", clip=None,
    max_jacobian_bytes=2**30)`; `step(X, Y)` returns the batch loss before
    the update. A network with one Linear layer makes UBP exactly SGD."""

    name = "ubp"
    distributable = True     # each layer's update and the correction norms reduced over net.comm (step)

    def __init__(self, net, lr, curvature="gn", mode="matrix_free", clip=None,
                 max_jacobian_bytes=2 ** 30, momentum=0.0, *, ubp_curvature=None, ubp_mode=None,
                 ubp_clip=None):
        """ubp_curvature, ubp_mode, ubp_clip: the same three options under the
        names of the CLI's flags (--ubp-curvature, ...; --curvature belongs to
        the Newton family), for tinynet.optim.build_optimizer."""
        super().__init__(net, lr)
        curvature = _alias("curvature", curvature, "gn", ubp_curvature)
        mode = _alias("mode", mode, "matrix_free", ubp_mode)
        clip = _alias("clip", clip, None, ubp_clip)
        if curvature not in CURVATURES:
            raise ValueError(f"UBP: curvature must be one of {CURVATURES}, got {curvature!r}")
        if mode not in MODES:
            raise ValueError(f"UBP: mode must be one of {MODES}, got {mode!r}")
        for s in net.layers:
            if s.mixes_batch:
                raise TypeError(f"UBP: {s!r} mixes the examples of a batch (batch statistics), so the "
                                f"per-example curvature H_i of thesis 5.2 is not defined through it; "
                                f"use UBP on a network without batch normalization")
        if clip is not None:
            check_range("UBP", "clip", clip, 0)
        check_range("UBP", "max_jacobian_bytes", max_jacobian_bytes, 1, integer=True)
        check_range("UBP", "momentum", momentum, 0, 1, hi_open=True)
        self.momentum = float(momentum)
        self.curvature, self.mode = curvature, mode
        self.clip = None if clip is None else float(clip)
        self.max_jacobian_bytes = int(max_jacobian_bytes)
        self.linear = [t for t, s in enumerate(net.layers) if s.n_params > 0]   # the stages UBP updates
        if not self.linear:
            raise ValueError("UBP: the network has no stage with parameters to update")
        self._delta = net.bk.zeros(net.n_params, net.dtype)   # updates, applied after the sweep
        self.v = net.bk.zeros(net.n_params, net.dtype) if self.momentum > 0 else None   # velocity
        self.last_jacobians, self.last_hessians, self.last_ratios = {}, {}, {}
        self._acc = None          # explosion control's numbers on the backend (_scalars)

    # -- one step ----------------------------------------------------------------------
    def step(self, X, Y):
        net, bk, lam, comm = self.net, self.bk, self.lr, self.net.comm
        X = net.as_input(X)
        n = X.shape[0] * comm.size             # the global batch (data-parallel: this rank's rows x P)
        if self.mode == "explicit":
            self._check_memory(X.shape[0])
        F, ctxs = net.forward_ctx(X)
        loss, lctx = net.loss_stage.forward(F, net.as_target(Y))
        B = net.loss_stage.vjp(lctx)                 # rows dl_i/df / n
        loss_box = np.array([loss], dtype=np.float64)
        pending = [loss_box]                         # the loss travels with the first layer's gradient
        if comm.size > 1:
            bk.scale(1.0 / comm.size, B.reshape(-1))  # the shard's rows of the global batch's 1/n
        bottom = self.linear[0]
        w2 = self._second_order_weights(ctxs, B, bottom) if self.curvature == "exact" else {}
        J = Hs = None
        if self.mode == "explicit":
            if self.curvature == "gn":
                k = F.shape[1]
                J = np.broadcast_to(np.eye(k, dtype=net.dtype), (X.shape[0], k, k)).copy()
            else:
                Hs = np.asarray(net.loss_stage.hess_f(lctx), dtype=net.dtype)
        self.last_jacobians, self.last_hessians, self.last_ratios = {}, {}, {}

        for t in range(len(net.layers) - 1, bottom - 1, -1):
            stage, ctx = net.layers[t], ctxs[t]
            if isinstance(stage, Activation):
                B = stage.vjp(ctx, B)                # da = f'(a) dh
                if J is not None:
                    J = J * stage.d1(ctx)[:, None, :]
                if Hs is not None:
                    g = stage.d1(ctx)
                    Hs = g[:, :, None] * Hs * g[:, None, :]
                    if t in w2:                      # + diag(f'' * dl_i/dz), unscaled signal
                        idx = np.arange(g.shape[1])
                        Hs[:, idx, idx] += n * bk.to_host(w2[t])
                continue
            if stage.n_params == 0:                  # pooling, Flatten: signal and J through grad_z f
                B = stage.vjp(ctx, B)
                J, Hs = _through(stage, ctx, J), _through_both(stage, ctx, Hs)
                continue
            a, c = net.offsets[t]
            delta = self._delta[a:c]
            stage.vjp(ctx, B, grad=delta, need_b_in=False)
            if comm.size > 1:                        # this layer's gradient, summed over the shards
                comm.allreduce_sum([delta] + pending, "gradient")
                pending = []
            if self.v is None:
                bk.scale(-lam, delta)                # the SGD update: -lambda grad_x f B
            else:                                    # heavy ball: v <- mu v + g, delta = -lambda v
                v = self.v[a:c]
                bk.scale(self.momentum, v)
                bk.axpy(1.0, delta, v)
                bk.copy_into(delta, v)
                bk.scale(-lam, delta)
            if J is not None:
                self.last_jacobians[t] = J
            if Hs is not None:
                self.last_hessians[t] = Hs
            if t == bottom:
                break                                # the input's signal is never used
            general = self.v is not None             # delta is not -lambda grad: no Gram forms
            dA = _delta_out(stage, ctx, B, delta, lam, general)   # rows dW h_i + db (Linear): the output change
            if self.mode == "explicit":
                C = self._correction_explicit(dA, J, Hs, lctx, n)
            else:
                C = self._correction_matrix_free(t, dA, ctxs, lctx, w2, n)
            C = self._control(t, C, B)
            bk.axpy(1.0, B.reshape(-1), C.reshape(-1))
            Bnext = stage.vjp(ctx, C)                # (B + C) W: plain signal and correction, through W
            _add_signal_delta(stage, ctx, B, delta, lam, Bnext, general)   # + B dW: the plain signal through the update
            B = Bnext
            J, Hs = _through(stage, ctx, J), _through_both(stage, ctx, Hs)   # pre-update grad_z f

        bk.axpy(1.0, self._delta, net.theta)
        self.k += 1
        self.metrics["lr"] = lam
        if comm.size == 1 and self.last_ratios:      # acc[0], kept by ratio_clip
            self.metrics["correction_ratio"] = bk.value(self._scalars(), 0)
        else:
            self.metrics["correction_ratio"] = max(self.last_ratios.values(), default=0.0)
        if comm.size > 1:
            loss = float(loss_box[0]) / comm.size
        return loss

    def _vectors(self):
        return {"v": self.v} if self.v is not None else {}

    # -- pieces ---------------------------------------------------------------------------
    def _loss_dvp(self, lctx, V, scale):
        """scale * rows D_i V_i on the backend: the loss stage's hvp_z, (b/n) D_i V_i
        with b = scale n (its device kernel for MSE, BCE and softmax CE; a host
        fallback only for a loss without one)."""
        return self.net.loss_stage.hvp_z(lctx, scale * lctx[0].shape[0], V)

    def _correction_matrix_free(self, t, dA, ctxs, lctx, w2, n):
        """C = rows H_i dA_i / n: jvp up from a_l, D, vjp back down (R-op for exact)."""
        layers = self.net.layers
        dz, tangents = dA, {}
        for u in range(t + 1, len(layers)):
            if u in w2:
                tangents[u] = dz                     # dz at the activation's input
            dz = layers[u].jvp(ctxs[u], dz, None)
        r = self._loss_dvp(lctx, dz, 1.0 / n)
        for u in range(len(layers) - 1, t, -1):
            r = layers[u].vjp(ctxs[u], r)
            if u in w2:                              # + f''(z) * b * dz (exact curvature)
                self.bk.axpy(1.0, _mul(self.bk, w2[u], tangents[u]).reshape(-1), r.reshape(-1))
        return r

    def _correction_explicit(self, dA, J, Hs, lctx, n):
        bk, dt = self.bk, self.net.dtype
        dA = np.asarray(bk.to_host(dA))
        if Hs is not None:
            C = np.einsum("nop,np->no", Hs, dA) / n
        else:
            Jd = np.einsum("nko,no->nk", J, dA)
            DJd = np.asarray(self.net.loss_stage.hess_f_vp(lctx, bk.asarray(Jd, dt)))
            C = np.einsum("nko,nk->no", J, DJd) / n
        return bk.asarray(C, dt)

    def _second_order_weights(self, ctxs, G, bottom):
        """Exact curvature: for each activation stage u above the bottom layer with
        f'' != 0, w2[u] = f''(z) * b_u, b_u the plain (pre-step) backprop signal at
        its output (scaled by 1/n like all signals)."""
        layers, w2 = self.net.layers, {}
        b = G
        for u in range(len(layers) - 1, bottom, -1):
            s = layers[u]
            if isinstance(s, Activation) and s.kind not in (None, "relu"):
                w2[u] = _mul(self.bk, self.bk.act_d2(s.kind, ctxs[u][1]), b)
            b = s.vjp(ctxs[u], b)
        return w2

    def _control(self, t, C, B):
        """rho_t = ||C|| / ||B||; clip C to ||C|| <= clip ||B|| (thesis 5.5).
        In one process rho and the clip factor stay on the backend (a float64
        vector, tinynet.kernels.scalars.ratio_clip: on a GPU no copy back per
        layer; on the CPU the same numbers as host floats); over MPI the two
        squared norms are all-reduced on the host."""
        bk, comm = self.bk, self.net.comm
        if comm.size == 1:
            acc, j = self._scalars(), 1 + 4 * t
            bk.fill(acc[j:j + 2], 0.0)
            bk.dot_acc(C.reshape(-1), C.reshape(-1), acc, j)
            bk.dot_acc(B.reshape(-1), B.reshape(-1), acc, j + 1)
            bk.launch(_sc, "ratio_clip", 1, acc, j, -1.0 if self.clip is None else float(self.clip),
                      not self.last_ratios)
            self.last_ratios[t] = bk.value(acc, j + 2)
            if self.clip is not None:
                bk.scale_s(acc, j + 3, C.reshape(-1))
            return C
        sq = np.array([bk.dot(C.reshape(-1), C.reshape(-1)), bk.dot(B.reshape(-1), B.reshape(-1))])
        comm.allreduce_sum([sq], "norms")            # Frobenius norms over the global batch
        nc, nb = np.sqrt(sq)
        rho = nc / nb if nb > 0 else (0.0 if nc == 0 else np.inf)
        self.last_ratios[t] = float(rho)
        if self.clip is not None and rho > self.clip:
            bk.scale(self.clip / rho, C.reshape(-1))
        return C

    def _scalars(self):
        """acc: [the step's largest rho, then (||C||^2, ||B||^2, rho, clip factor)
        per layer index], a float64 backend vector made once."""
        if self._acc is None:
            self._acc = self.bk.zeros(1 + 4 * len(self.net.layers), np.float64)
        return self._acc

    def _check_memory(self, n):
        """Bytes explicit mode holds: the stored per-layer arrays plus the largest
        one being formed."""
        isz = self.net.dtype.itemsize
        k = self.net.n_out
        sz = self.net.sizes                          # features entering / leaving each stage
        if self.curvature == "gn":
            stored = sum(n * k * sz[t + 1] for t in self.linear)
            transient = max(n * k * d for d in sz)
            what = f"per-example Jacobians (n x {k} x width)"
        else:
            stored = sum(n * sz[t + 1] ** 2 for t in self.linear)
            transient = max(n * d ** 2 for d in sz)
            what = "per-example Hessians (n x width x width)"
        need = (stored + transient) * isz
        if need > self.max_jacobian_bytes:
            raise ValueError(
                f"UBP explicit mode: the {what} for a batch of {n} need {need / 2**20:.1f} MiB, "
                f"more than max_jacobian_bytes = {self.max_jacobian_bytes / 2**20:.1f} MiB; "
                f"use mode='matrix_free' (same update, no Jacobians), a smaller batch, "
                f"or raise max_jacobian_bytes")


def _through(stage, ctx, J):
    """J <- J grad_z f per example, (n, k, out) -> (n, k, in), by the stage's
    vjp_many with the k rows of J as directions (one GEMM for Linear)."""
    if J is None:
        return None
    dZ, _ = stage.vjp_many(ctx, np.ascontiguousarray(J.transpose(1, 0, 2)), need_x=False)
    return np.ascontiguousarray(dZ.transpose(1, 0, 2)).astype(J.dtype, copy=False)


def _through_both(stage, ctx, Hs):
    """H <- grad_z f^T H grad_z f per example, (n, out, out) -> (n, in, in)
    (the second-order terms of the stage are added by the caller where they
    exist: activations; Linear, Conv2d and pooling have none on this path)."""
    if Hs is None:
        return None
    M = _through(stage, ctx, Hs)                     # H grad_z f, (n, out, in)
    return np.ascontiguousarray(_through(stage, ctx, np.ascontiguousarray(M.transpose(0, 2, 1))).transpose(0, 2, 1))


def _delta_out(stage, ctx, B, delta, lr, general=False):
    """The change of the stage's output for the parameter change delta = -lr grad
    (grad from the signal B): grad_x f delta = jvp(ctx, None, delta), or the
    stage's own cheaper form of it (Linear's Gram product, `ubp_delta_out`)."""
    own = None if general else getattr(stage, "ubp_delta_out", None)
    return own(ctx, B, delta, lr) if own is not None else stage.jvp(ctx, None, delta)


def _add_signal_delta(stage, ctx, B, delta, lr, out, general=False):
    """out += (d/dx of grad_z f^T B) delta: the plain signal through the change
    (B dW for Linear), the stage's hvp_z, or its own cheaper form
    (`ubp_add_signal_delta`)."""
    own = None if general else getattr(stage, "ubp_add_signal_delta", None)
    if own is not None:
        return own(ctx, B, delta, lr, out)
    u = stage.hvp_z(ctx, B, None, delta)
    if u is not None:
        stage.bk.axpy(1.0, u.reshape(-1), out.reshape(-1))
    return out


def _alias(name, value, default, cli_value):
    if cli_value is None:
        return value
    if value != default and value != cli_value:
        raise ValueError(f"UBP: {name}={value!r} and ubp_{name}={cli_value!r} disagree; give one")
    return cli_value


def _mul(bk, x, y):
    """Elementwise product of two backend arrays (a host round trip where the
    backend has no `mul`; only the exact-curvature mode needs it)."""
    if hasattr(bk, "mul"):
        return bk.mul(x, y)
    return bk.asarray(np.multiply(bk.to_host(x), bk.to_host(y)))

"""Natural gradient "with a twist" (seed 003, slides "Natural gradient with a
twist" and "1990's style network"):

    w_B <- w_B - lr / sqrt(mu + E[g_B^T G_B^{-1} g_B]) G_B^{-1} <g>_B

for each block B of the parameters, with <g> the minibatch gradient and the
expectation E[.] a running average over steps (rate 1 - rho) of the minibatch
value <g>_B^T G_B^{-1} <g>_B. Blocks (`normalizer`): "global" (one block),
"layer" (each stage's parameters), "neuron" (the fan_in + 1 weights of one
output of a Linear / Conv2d: a column of [W^T; b^T]; other stages per
parameter), "weight" (each parameter). Metric (`metric`):

  "identity"  G = I;
  "neuron"    the slides' 1990's-style approximation of the per-neuron block
              of the empirical Fisher, E[g_j^2 x_i x_i'] ~ E[g_j^2] I, with
              g_j = dl/da_j of an example (a row of B; for a convolution each
              position is a row) and E a running average; `eps` is added to
              E[g_j^2] (the inverse of a near-zero second moment is damped);
  "gn"        the block-diagonal Gauss-Newton matrix, one exact dense block
              G_l = mean_i J_{i,l}^T D_i J_{i,l} per stage with parameters
              (tinynet.curvature.diagonal_blocks), averaged over steps;
  "fisher"    the same with the block-diagonal empirical Fisher
              G_l = mean_i g_{i,l} g_{i,l}^T (per-example gradients).
              For both, G_B is G restricted to block B: the layer block for
              "global" / "layer", its (fan_in + 1)-square sub-block of one
              neuron for "neuron", its diagonal entry for "weight"; `eps` is
              added to G_B's diagonal. Exact blocks cost p_l forward passes per
              stage and 8 p_l^2 bytes: for small nets (teaching, checks); a
              network whose blocks would exceed the dense-size guard
              (TINYNET_DENSE_MAX_BYTES) is refused at construction.

With metric="identity", normalizer="weight" and mu = 0 this is RMSProp with
eps = 0 exactly: r = rho r + (1 - rho) g^2, w -= lr g / sqrt(r). A per-block
normalizer changes the direction of the whole update, not only its length
(the slides' point; `direction_angle` measures it).

The identity and neuron metrics run on the network's backend
(tinynet.optim.twist_device: float64 running averages there, the gradient
never copied; a step copies only its loss back). The gn and fisher metrics
assemble their dense blocks on the host every step (the gradient goes down,
the update up).
"""
import numpy as np

from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.newton import check_choice
from tinynet.optim.stats import forward_backward_bk, kron_indices
from tinynet.optim.twist_device import TwistOnDevice

METRICS = ("identity", "neuron", "gn", "fisher")
BLOCK_METRICS = ("gn", "fisher")     # exact dense blocks of G, one per stage with parameters
NORMALIZERS = ("global", "layer", "neuron", "weight")


class NaturalTwist(Optimizer):
    name = "twist"

    def __init__(self, net, lr=0.01, metric="identity", normalizer="layer", rho=0.9, mu=1e-8, eps=1e-8):
        super().__init__(net, lr)
        check_choice("NaturalTwist", "metric", metric, METRICS)
        check_choice("NaturalTwist", "normalizer", normalizer, NORMALIZERS)
        self.rho = check_range("NaturalTwist", "rho", rho, 0, 1, hi_open=True)
        self.mu = check_range("NaturalTwist", "mu", mu, 0)
        self.eps = check_range("NaturalTwist", "eps", eps, 0)
        if metric == "neuron" and not self.eps > 0:
            raise ValueError("NaturalTwist: metric 'neuron' needs eps (--eps) > 0 (it divides by E[g_j^2] + eps)")
        self.G = {}                                           # stage index -> running E[G_l] (gn / fisher)
        if metric in BLOCK_METRICS:
            from tinynet.curvature.guard import check_dense
            sizes = [sl.stop - sl.start for _, sl in net.slices()]
            # the running block, this step's block and a factorization, each 8 p_l^2 bytes
            check_dense(net, nbytes=3 * 8 * sum(p * p for p in sizes),
                        what=f"NaturalTwist metric {metric!r} (exact dense blocks of sizes {sizes})")
            self.G = {i: np.zeros((sl.stop - sl.start,) * 2) for i, sl in net.slices()}
        self.metric, self.normalizer = metric, normalizer
        self.kron = kron_indices(net) if metric == "neuron" or normalizer == "neuron" else []
        self.block_id, self.n_blocks = self._blocks()
        if metric in BLOCK_METRICS:
            self._device = None
            self._norm = np.zeros(self.n_blocks)             # running E[g_B^T G_B^-1 g_B]
            self._grad = self.bk.zeros(net.n_params, net.dtype)
        else:
            self._device = TwistOnDevice(self)               # the same averages, on the backend

    @property
    def norm(self):
        """The running E[g_B^T G_B^-1 g_B] per block (host float64; a copy for the
        identity / neuron metrics, whose averages live on the backend)."""
        return self._norm if self._device is None else self._device.host_state()[0]

    @property
    def g2(self):
        """{Kronecker stage: running E[g_j^2]} of the neuron metric (host float64 copies)."""
        return {} if self._device is None else self._device.host_state()[1]

    def _blocks(self):
        """block index of every parameter (flat layout of DESIGN.md)."""
        net, P = self.net, self.net.n_params
        if self.normalizer == "global":
            return np.zeros(P, dtype=np.int64), 1
        if self.normalizer == "weight":
            return np.arange(P), P
        ids, nxt = np.empty(P, dtype=np.int64), 0
        for i, (a, b) in enumerate(net.offsets):
            if b == a:
                continue
            s = net.layers[i]
            if self.normalizer == "layer":
                ids[a:b] = nxt
                nxt += 1
            elif i in self.kron:              # neuron j: column j of [W^T; b^T] (fan_in + 1, fan_out)
                cols = np.tile(np.arange(s.fan_out), s.fan_in + 1)
                ids[a:b] = nxt + cols
                nxt += s.fan_out
            else:
                ids[a:b] = nxt + np.arange(b - a)
                nxt += b - a
        return ids, nxt

    def state_dict(self):
        st = super().state_dict()
        st["norm"] = np.array(self.norm, copy=True)
        st["g2"] = {str(i): v.copy() for i, v in self.g2.items()}
        st["G"] = {str(i): v.copy() for i, v in self.G.items()}
        return st

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self._device is None:
            self._norm = np.array(state["norm"], dtype=np.float64)
        else:
            self._device.load(state["norm"], state.get("g2", {}))
        if self.G:
            self.G = {int(i): np.array(v, dtype=np.float64) for i, v in state["G"].items()}

    def direction(self, X, Y):
        """(loss, the update d with w <- w - d) of this step, updating the running averages."""
        if self._device is not None:
            out = self.bk.empty(self.net.n_params, np.float64)
            loss = self._device.update(X, Y, out)
            return loss, np.array(self.bk.to_host(out), dtype=np.float64)
        net, bk = self.net, self.bk
        grad = self._grad
        loss, ctxs, _, Bs = forward_backward_bk(net, X, Y, grad)
        g = np.array(bk.to_host(grad), dtype=np.float64)
        for i, B in Bs.items():                               # the Kronecker stages' own gradient
            s, (a, b) = net.layers[i], net.offsets[i]
            H = np.asarray(bk.to_host(s.kron_rows(ctxs[i])), dtype=np.float64)
            Bh = np.asarray(bk.to_host(B), dtype=np.float64)
            k = s.fan_in * s.fan_out
            g[a:a + k] = (H.T @ Bh).reshape(-1)               # vec(dW) = dW^T C-ordered
            g[a + k:b] = Bh.sum(axis=0)
        Ginv_g = self._block_solve(X, Y, g)
        q = np.bincount(self.block_id, weights=g * Ginv_g, minlength=self.n_blocks)
        self._norm = self.rho * self._norm + (1 - self.rho) * q
        d = self.lr * Ginv_g / np.sqrt(self.mu + self._norm)[self.block_id]
        return float(loss), d

    def _block_solve(self, X, Y, g):
        """G_B^{-1} g_B for every normalizer block B, after the running
        average G_l <- rho G_l + (1 - rho) (this minibatch's block)."""
        from tinynet.curvature.block import diagonal_blocks
        net = self.net
        kind = dict(curvature="gn") if self.metric == "gn" else dict(curvature="fisher", fisher_kind="empirical")
        X = np.asarray(net.bk.to_host(net.as_input(X)))
        out = np.empty_like(g)
        stages = [i for i, _ in net.slices()]
        for l, sl, C in diagonal_blocks(net, X, Y, **kind):
            i = stages[l]
            G = self.G[i] = self.rho * self.G[i] + (1 - self.rho) * C
            gl = g[sl]
            if self.normalizer in ("global", "layer"):
                out[sl] = np.linalg.solve(G + self.eps * np.eye(len(gl)), gl)
            elif self.normalizer == "neuron" and i in self.kron:
                s = net.layers[i]                     # neuron j: column j of [W^T; b^T], (fan_in + 1, fan_out)
                cols = np.arange(len(gl)).reshape(s.fan_in + 1, s.fan_out)
                x = np.empty_like(gl)
                for j in range(s.fan_out):
                    idx = cols[:, j]
                    x[idx] = np.linalg.solve(G[np.ix_(idx, idx)] + self.eps * np.eye(len(idx)), gl[idx])
                out[sl] = x
            else:                                     # one parameter per block: the diagonal entry
                out[sl] = gl / (np.diag(G) + self.eps)
        return out

    def step(self, X, Y):
        if self._device is not None:
            loss = self._device.update(X, Y)
            self.k += 1
            return loss
        loss, d = self.direction(X, Y)
        self.bk.axpy(-1.0, self.bk.asarray(d, self.net.dtype), self.net.theta)
        self.k += 1
        return loss


def direction_angle(d1, d2):
    """The angle in degrees between two update vectors."""
    c = float(np.dot(d1, d2) / (np.linalg.norm(d1) * np.linalg.norm(d2)))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))

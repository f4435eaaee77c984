"""Natural Neural Networks, NNN (thesis 6.4.2, after Desjardins et al. 2015).

Index legend: n batch, i / o a Linear layer's inputs / outputs; H (n, i) its
input batch, B (n, o) = (1/n) grad_a l_i at its pre-activations.

Each Linear layer is reparametrized as  a = V U (h - mu) + d  (6.4.2) with
  mu = E[h],  U = (C + eps I)^{-1/2},  C = E[(h - mu)(h - mu)^T]   (6.1.1)
so that the effective input h_e = U (h - mu) is centered and white. U and mu
are not trained: every T updates they are re-estimated from the current
minibatch (U through a symmetric eigendecomposition, eigenvalues floored at
`floor`), and V, d are re-projected so that the network's function is
unchanged:  V' = W U'^{-1},  d' = b + W mu'  (W = V U, b = d - V U mu).
V and d follow SGD:  grad_V = B^T (H - 1 mu^T) U,  grad_d = sum_rows B.
The network keeps the effective W = V U and b = d - W mu in its flat vector,
so forward passes, checkpoints of theta and evaluation need nothing special.

moments="auto" forms mu and C where the network lives (on device="cuda"
tinynet.optim.device_moments: only mu and C come down, not the input rows);
"host" copies the rows and forms them in float64 (stats.input_moments). The
eigendecomposition and the re-projection stay on the host (amortized).

Data-parallel (net.comm over P ranks): the re-estimation uses the mean and
covariance of every rank's rows (tinynet.optim.stats.reduced_means,
reduced_covariances; every rank then does the same eigendecomposition), and
grad_V, grad_d, linear in the rows for the fixed mu and U, are summed by one
all-reduce with the other stages' gradient ("gradient", |theta| numbers).
"""
import numpy as np

from tinynet.backend_base import host_call
from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.device_moments import device_input_moments, moment_store
from tinynet.optim.stats import (forward_backward_bk, input_moments, layer_slot, other_stages_sgd,
                                 reduced_covariances, reduced_means)


def inverse_sqrt(C, floor):
    """(U, U^{-1}) with U = C^{-1/2}, eigenvalues of C floored at `floor`."""
    d = C.shape[0]
    w, Q = host_call("host.eigh", np.linalg.eigh, C, flops=9.0 * d ** 3)
    w = np.maximum(w, floor)
    return (host_call("host.gemm", np.matmul, Q / np.sqrt(w), Q.T, flops=2.0 * d ** 3),
            host_call("host.gemm", np.matmul, Q * np.sqrt(w), Q.T, flops=2.0 * d ** 3))


class NNN(Optimizer):
    name = "nnn"
    distributable = True     # step: reduced moments and gradients over net.comm

    def __init__(self, net, lr=0.01, eps=1e-3, T=100, floor=1e-6, moments="auto"):
        super().__init__(net, lr)
        self.moments = moment_store("NNN", net, moments)
        check_range("NNN", "eps", eps, 0)
        check_range("NNN", "T", T, 1, integer=True)
        check_range("NNN", "floor", floor, 0, lo_open=True)
        self.eps, self.T, self.floor = float(eps), int(T), float(floor)
        self.state = {}          # Linear index -> dict(V, d, U, mu)
        self._grad = self.bk.zeros(net.n_params, net.dtype)

    def _effective(self, i):
        s = self.net.layers[i]
        W = np.array(self.bk.to_host(s.WT), dtype=np.float64).T
        b = np.array(self.bk.to_host(s.b), dtype=np.float64)
        return W, b

    def _write(self, i, W, b):
        """theta[W, b of Linear stage i] <- [vec(W); b]."""
        a, c = self.net.offsets[i]
        flat = np.concatenate([W.ravel(order="F"), b]).astype(self.net.dtype)
        self.bk.copy_into(self.net.theta[a:c], self.bk.asarray(flat))

    def last_matrices(self):
        """What the last step applied, host float64 (empty before the first step),
        keyed "block{l}/NAME" (l the block index of curvature.block_slices): the
        whitening U = (C + eps I)^{-1/2}, the centring mu, and the trained V, d
        of a = V U (h - mu) + d (6.4.2)."""
        out = {}
        blocks = {i: l for l, (i, _) in enumerate(self.net.slices())}
        for i, st in self.state.items():
            key = f"block{blocks[i]}/"
            out[key + "U"] = np.array(self.bk.to_host(st["U"]), dtype=np.float64)
            out[key + "mu"] = np.array(self.bk.to_host(st["mu"]), dtype=np.float64)
            out[key + "V"] = np.array(self.bk.to_host(st["VT"]), dtype=np.float64).T
            out[key + "d"] = np.array(self.bk.to_host(st["d"]), dtype=np.float64)
        return out

    def state_dict(self):
        """k, lr and per layer V^T, d, U, mu (resume bit-for-bit)."""
        st = super().state_dict()
        st["layers"] = {str(i): {k: np.array(self.bk.to_host(v)) for k, v in s.items()}
                        for i, s in self.state.items()}
        return st

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.state = {int(i): {k: self.bk.asarray(np.asarray(v, dtype=self.net.dtype)) for k, v in s.items()}
                      for i, s in state.get("layers", {}).items()}

    def reproject(self, ctxs, moments=None):
        """Re-estimate mu, U from the inputs in ctxs (or the {index: (mu, C)} given)
        and re-project V, d (6.4.2)."""
        bk, dt = self.bk, self.net.dtype
        if moments is None:
            moments = (device_input_moments if self.moments == "device" else input_moments)(self.net, ctxs)
        for i, (mu, C) in moments.items():
            W, b = self._effective(i)
            U, Uinv = inverse_sqrt(C + self.eps * np.eye(len(C)), self.floor)
            V = host_call("host.gemm", np.matmul, W, Uinv, flops=2.0 * W.size * W.shape[1])
            d = b + W @ mu
            Weff = host_call("host.gemm", np.matmul, V, U, flops=2.0 * V.size * V.shape[1])
            self._write(i, Weff, d - Weff @ mu)
            self.state[i] = dict(VT=bk.asarray(np.ascontiguousarray(V.T).astype(dt)),
                                 d=bk.asarray(d.astype(dt)), U=bk.asarray(U.astype(dt)),
                                 mu=bk.asarray(mu.astype(dt)), negmu=bk.asarray((-mu).astype(dt)))

    def step(self, X, Y):
        net, bk = self.net, self.bk
        comm = net.comm
        loss, ctxs, _, Bs = forward_backward_bk(net, X, Y, self._grad)
        if self.k % self.T == 0:            # function unchanged: B, loss stay valid
            if comm.size > 1:
                mus, _ = reduced_means(net, ctxs, comm, loss)
                C = reduced_covariances(net, ctxs, mus, comm)
                self.reproject(ctxs, {i: (mus[i], C[i]) for i in mus})
            else:
                self.reproject(ctxs)
        grads = {}
        for i, B in Bs.items():
            st = self.state[i]
            He = bk.matmul(bk.add_bias(bk.copy(net.layers[i].kron_rows(ctxs[i])), st["negmu"]), st["U"])   # rows U (h - mu)
            grads[i] = (bk.matmul(He, B, ta=True), bk.col_sum(B))          # grad_V^T, grad_d
        if comm.size > 1:                   # this rank's shares, summed over the ranks in the gradient vector
            for i, (gV, gd) in grads.items():
                out = layer_slot(net, self._grad, i)
                bk.copy_into(out[:-1], gV)
                bk.copy_into(out[-1], gd)
                grads[i] = (out[:-1], out[-1])
            loss = comm.mean_gradient(bk, self._grad, loss)
        for i in Bs:
            st = self.state[i]
            gV, gd = grads[i]
            bk.axpy(-self.lr, gV.reshape(-1), st["VT"].reshape(-1))
            bk.axpy(-self.lr, gd, st["d"])
            WT = bk.matmul(st["U"], st["VT"])                      # (V U)^T = U V^T, (i, o)
            b = bk.copy(st["d"])
            bk.axpy(-1.0, bk.matmul(st["mu"].reshape(1, -1), WT).reshape(-1), b)   # d - W mu
            a, c = net.offsets[i]
            k = WT.size
            bk.copy_into(net.theta[a:a + k], WT.reshape(-1))
            bk.copy_into(net.theta[a + k:c], b)
        other_stages_sgd(net, self._grad, self.lr)
        self.k += 1
        return loss

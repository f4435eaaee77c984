"""NaturalTwist's identity and neuron metrics on the network's backend
(tinynet.kernels.twist): the running averages E[g_j^2] and the block
normalizers are float64 backend vectors, the gradient never leaves the
device, and a step copies only its loss back. tinynet.optim.twist uses it on
every backend for these metrics; its gn / fisher metrics assemble dense
blocks on the host.

The formulas are those of tinynet.optim.twist's module docstring:

  g2_j  <- rho g2_j + (1 - rho) E_rows[(n dl/da_j)^2]       (metric "neuron", per Kronecker stage)
  q_B    = g_B^T G_B^{-1} g_B  with G^{-1} g = g / den       (den = g2_j + eps on neuron j, else 1)
  norm_B <- rho norm_B + (1 - rho) q_B
  w     <- w - lr G^{-1} g / sqrt(mu + norm_B)
"""
import numpy as np

from tinynet.kernels import twist as K
from tinynet.optim.stats import forward_backward_bk, kron_indices


def block_chunks(block_id, n_blocks, chunk=None):
    """(perm, cuts, chunk_of) for the kernels: the entries of every block in
    increasing index order, cut into chunks of at most `chunk` entries
    (default kernels.twist.CHUNK)."""
    chunk = K.CHUNK if chunk is None else int(chunk)
    perm = np.argsort(block_id, kind="stable").astype(np.int64)
    counts = np.bincount(block_id, minlength=n_blocks)
    start = np.concatenate([[0], np.cumsum(counts)])
    n_chunks = np.maximum(1, -(-counts // chunk))
    chunk_of = np.concatenate([[0], np.cumsum(n_chunks)]).astype(np.int64)
    owner = np.repeat(np.arange(n_blocks), n_chunks)                 # block of each chunk
    cuts = start[owner] + (np.arange(chunk_of[-1]) - chunk_of[owner]) * chunk
    return perm, np.concatenate([cuts, [len(block_id)]]).astype(np.int64), chunk_of


class TwistOnDevice:
    """The device state of one NaturalTwist (identity / neuron metric)."""

    def __init__(self, opt):
        self.opt, bk, net = opt, opt.bk, opt.net
        P = net.n_params
        perm, cuts, chunk_of = block_chunks(opt.block_id, opt.n_blocks)
        self.block_id, self.perm = bk.asarray(opt.block_id.astype(np.int64)), bk.asarray(perm)
        self.cuts, self.chunk_of = bk.asarray(cuts), bk.asarray(chunk_of)
        self.partial = bk.empty(len(cuts) - 1, np.float64)
        self.norm = bk.zeros(opt.n_blocks, np.float64)
        self.root = bk.empty(opt.n_blocks, np.float64)   # sqrt(mu + norm), per block
        self.g2 = {i: bk.zeros(net.layers[i].fan_out, np.float64) for i in opt.kron} if opt.metric == "neuron" else {}
        self.den = bk.empty(P, np.float64)
        bk.fill(self.den, 1.0)
        self.grad = bk.zeros(P, net.dtype)

    def _gradient(self, X, Y):
        """loss; the gradient in self.grad (every stage's own kernel), g2 updated
        (neuron metric) from the Kronecker stages' signal rows."""
        opt, net, bk = self.opt, self.opt.net, self.opt.bk
        neuron = opt.metric == "neuron"
        loss, _, _, Bs = forward_backward_bk(net, X, Y, self.grad, grad_of=kron_indices(net), keep_rows=neuron)
        for i, B in Bs.items():
            s = net.layers[i]
            n_ex = B.shape[0] // int(s.share)      # rows of n B are dl/da of one example (position)
            bk.launch(K, "twist_g2", s.fan_out, B, n_ex, float(opt.rho), self.g2[i], nbytes=B.nbytes)
            a, c = net.offsets[i]
            bk.launch(K, "twist_den", c - a, self.g2[i], float(opt.eps), self.den[a:c], nbytes=8 * (c - a))
        return loss

    def update(self, X, Y, out=None):
        """One step's statistics; then theta -= d (out None) or out = d (float64)."""
        opt, net, bk = self.opt, self.opt.net, self.opt.bk
        loss = self._gradient(X, Y)
        P = net.n_params
        bk.launch(K, "twist_partial", self.partial.shape[0], self.grad, self.den, self.perm, self.cuts,
                  self.partial, nbytes=self.grad.nbytes + 24 * P)
        bk.launch(K, "twist_norm", opt.n_blocks, self.partial, self.chunk_of, float(opt.rho), float(opt.mu),
                  self.norm, self.root, nbytes=24 * opt.n_blocks + self.partial.nbytes)
        target = net.theta if out is None else out
        bk.launch(K, "twist_apply", P, self.grad, self.den, self.block_id, self.root, float(opt.lr),
                  target, out is None, nbytes=2 * self.grad.nbytes + 16 * P)
        return loss

    # host copies, for state_dict and inspection
    def host_state(self):
        bk = self.opt.bk
        return (np.array(bk.to_host(self.norm), dtype=np.float64),
                {i: np.array(bk.to_host(v), dtype=np.float64) for i, v in self.g2.items()})

    def load(self, norm, g2):
        bk = self.opt.bk
        norm = np.asarray(norm, dtype=np.float64)
        if norm.shape != (self.opt.n_blocks,):
            raise ValueError(f"NaturalTwist: the checkpoint's normalizers have shape {norm.shape}, this "
                             f"optimizer has {self.opt.n_blocks} blocks (another --normalizer or network?)")
        bk.copy_into(self.norm, bk.asarray(norm))
        for i, v in g2.items():                    # the neuron metric's; den follows from them
            i = int(i)
            bk.copy_into(self.g2[i], bk.asarray(np.asarray(v, dtype=np.float64)))
            a, c = self.opt.net.offsets[i]
            bk.launch(K, "twist_den", c - a, self.g2[i], float(self.opt.eps), self.den[a:c])

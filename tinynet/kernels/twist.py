"""Natural gradient with a twist (seed 003; tinynet.optim.twist) on the
network's device, for the metrics that need no dense block: "identity" and
"neuron". A step copies nothing but its loss back.

Index legend: P parameters; g (P,) the minibatch gradient (network dtype);
den (P,) float64, E[g_j^2] + eps on the fan_in + 1 weights of neuron j under
the "neuron" metric and 1 elsewhere, so that G_B^{-1} g = g / den; the
normalizer's blocks b, their entries listed in increasing index order by
perm and cut into chunks of at most CHUNK entries: chunk c covers
perm[cuts[c]:cuts[c + 1]], and block b's chunks are chunk_of[b] .. chunk_of[b + 1].

  twist_g2(B, n_ex, rho, g2)     g2_j <- rho g2_j + (1 - rho) 1/r sum_rows (n_ex B_rj)^2
                                 (B (r, m) a layer's signal rows, n_ex examples; float64 in
                                 row order: the host's mean over axis 0)
  twist_den(g2, eps, den)        den[r m + j] = g2_j + eps, den one Kronecker stage's slice
                                 ((fan_in + 1) x m, the [W^T; b^T] layout)
  twist_partial(g, den, perm, cuts, partial)
                                 partial_c = sum over chunk c of g_k (g_k / den_k), in order
  twist_norm(partial, chunk_of, rho, mu, norm, root)
                                 norm_b <- rho norm_b + (1 - rho) sum over b's chunks, in order;
                                 root_b = sqrt(mu + norm_b)
  twist_apply(g, den, block_id, root, lr, out, sub)
                                 d_k = lr (g_k / den_k) / root_{block_k};
                                 out_k -= d_k rounded to out's dtype (sub: the parameters),
                                 else out_k = d_k (the direction, float64)

A block of at most CHUNK entries (every block of the "neuron" and "weight"
normalizers, of small layers) is summed in index order, as the host's
bincount; a larger one as in-order chunk sums, so that one GPU thread never
walks a whole layer.

Each kernel's body, for one written entry, is one plain function compiled
twice (njit for the CPU twin's loop, cuda.jit(device=True) for the CUDA
twin's grid-stride loop), as in tinynet.kernels.ed.
"""
import math

import numpy as np
from numba import cuda, njit

CHUNK = 1024


def _g2_one(j, B, n_ex, rho, g2):
    r = B.shape[0]
    c = np.float64(n_ex)
    s = 0.0
    for i in range(r):
        v = c * np.float64(B[i, j])
        s += v * v
    g2[j] = rho * g2[j] + (1.0 - rho) * (s / r)


def _den_one(k, g2, eps, den):
    den[k] = g2[k % g2.shape[0]] + eps


def _partial_one(c, g, den, perm, cuts, partial):
    q = 0.0
    for t in range(cuts[c], cuts[c + 1]):
        k = perm[t]
        gk = np.float64(g[k])
        q += gk * (gk / den[k])
    partial[c] = q


def _norm_one(b, partial, chunk_of, rho, mu, norm, root):
    q = 0.0
    for c in range(chunk_of[b], chunk_of[b + 1]):
        q += partial[c]
    norm[b] = rho * norm[b] + (1.0 - rho) * q
    root[b] = math.sqrt(mu + norm[b])                # once per block, not per entry


def _apply_one(k, g, den, block_id, root, lr, out, sub):
    d = lr * (np.float64(g[k]) / den[k]) / root[block_id[k]]
    if sub:
        out[k] -= out.dtype.type(d)
    else:
        out[k] = d


_jit = njit(cache=True, error_model="numpy")      # IEEE division: a dead weight's 0 / 0 is NaN, as numpy
_g2_c, _den_c, _partial_c, _norm_c, _apply_c = (_jit(f) for f in (_g2_one, _den_one, _partial_one, _norm_one,
                                                                   _apply_one))


@njit(cache=True)
def twist_g2_cpu(B, n_ex, rho, g2):
    for j in range(B.shape[1]):
        _g2_c(j, B, n_ex, rho, g2)


@njit(cache=True)
def twist_den_cpu(g2, eps, den):
    for k in range(den.shape[0]):
        _den_c(k, g2, eps, den)


@njit(cache=True)
def twist_partial_cpu(g, den, perm, cuts, partial):
    for c in range(partial.shape[0]):
        _partial_c(c, g, den, perm, cuts, partial)


@njit(cache=True)
def twist_norm_cpu(partial, chunk_of, rho, mu, norm, root):
    for b in range(norm.shape[0]):
        _norm_c(b, partial, chunk_of, rho, mu, norm, root)


@njit(cache=True)
def twist_apply_cpu(g, den, block_id, root, lr, out, sub):
    for k in range(g.shape[0]):
        _apply_c(k, g, den, block_id, root, lr, out, sub)


# ---------------------------------------------------------------- CUDA twins (grid-stride loops)
_g2_d, _den_d, _partial_d, _norm_d, _apply_d = (cuda.jit(device=True)(f) for f in
                                                 (_g2_one, _den_one, _partial_one, _norm_one, _apply_one))


@cuda.jit
def twist_g2_cuda(B, n_ex, rho, g2):
    """One thread per column (coalesced across the row's entries)."""
    for j in range(cuda.grid(1), B.shape[1], cuda.gridsize(1)):
        _g2_d(j, B, n_ex, rho, g2)


@cuda.jit
def twist_den_cuda(g2, eps, den):
    for k in range(cuda.grid(1), den.shape[0], cuda.gridsize(1)):
        _den_d(k, g2, eps, den)


@cuda.jit
def twist_partial_cuda(g, den, perm, cuts, partial):
    for c in range(cuda.grid(1), partial.shape[0], cuda.gridsize(1)):
        _partial_d(c, g, den, perm, cuts, partial)


@cuda.jit
def twist_norm_cuda(partial, chunk_of, rho, mu, norm, root):
    for b in range(cuda.grid(1), norm.shape[0], cuda.gridsize(1)):
        _norm_d(b, partial, chunk_of, rho, mu, norm, root)


@cuda.jit
def twist_apply_cuda(g, den, block_id, root, lr, out, sub):
    for k in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
        _apply_d(k, g, den, block_id, root, lr, out, sub)

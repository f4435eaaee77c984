"""Exact curvature blocks between the parameters of two stages, assembled
without the full P x P matrix (issue 17; thesis 3.1.5 and 3.2.4 use the
diagonal ones).

Indexing: a block index is a position in `block_slices(net)`, i.e. the
parametrized stages counted from 0 in pipeline order (for a 3-layer MLP
Linear-Tanh-Linear-Tanh-Linear the blocks 0, 1, 2 are net.layers[0], [2],
[4]); it is NOT an index into net.layers. `block_index(net, l)` checks one and
`block_names(net)` lists them. Negative indices count from the end.

Index legend: n batch, k network outputs; block l has p_l parameters, the
slice s_l = block_slices(net)[l][1] of the flat vector; C directions in a
column chunk; "dir" the block whose unit vectors are pushed through the
passes, "row" the block whose rows are kept.

  hessian_block(net, X, Y, l, k=None)   H[s_l, s_k] of the batch-mean loss
  gauss_newton_block(net, X, Y, l, k)   G[s_l, s_k], G = mean_i J_i^T D_i J_i
  fisher_block(net, X, l, k, kind, Y)   F[s_l, s_k] (exact / mc / empirical)
  diagonal_blocks(net, X, Y, curvature) generator of (l, slice, C_ll), one
                                        linearization for all of them

How (seed 001, "The Hessian"): a column e_j of H with j in block d is
  H e_j = D_b(D_xx + D_zx N^{-1} D_x↘) e_j + D_x M^{-1} B_b(D_xz + D_zz N^{-1} D_x↘) e_j.
D_x↘ e_j is nonzero only in stage d's block row, so the forward substitution
N^{-1} starts at stage d (dz = 0 below it); the backward substitution M^{-1}
runs from the loss down to the row block's stage and stops there, and of the
result only the row block's entries D_b(...)_r + (D_x M^{-1} ...)_r are kept.
The p_d directions go C at a time through the stages' `*_many` methods (as
dense.hessian does for all P): time ~ p_d passes over stages >= min(d, r),
memory 8 p_l p_k bytes for the block plus one chunk of work arrays. Since
H_lk = H_kl^T, the directions are taken in the smaller of the two blocks.
The Gauss-Newton / exact Fisher block is the same without the second-order
stage terms: N^{-1} from stage d, the loss's D (or D(f)) at the output, M^{-1}
down to the row stage (J_r^T D J_d). The sampled and empirical Fisher blocks
are g_l^T g_k / n from the per-example gradients restricted to the two blocks
(J_l^T dl_i/df_i by forward mode, n x p per block).

The size guard (guard.py) applies to the block's bytes (and the per-example
gradients where used), not to P x P.
"""
import numpy as np

from tinynet.curvature.dense import FISHER_KINDS, _forward_many, block_slices
from tinynet.curvature.guard import check_dense
from tinynet.curvature.passes import backward_vectors, check_batch, linearize, require

_MANY = ("jvp_many", "vjp_many", "hvp_x_many", "hvp_z_many")
_CHUNK_BYTES = 128 * 2**20       # work arrays of one chunk of directions, at most ...
_MIN_CHUNK_BYTES = 16 * 2**20    # ... and at least this, else no more than the block itself


def block_names(net):
    """['block l: stage i (Stage repr), p_l parameters'] for each block index l."""
    return [f"block {l}: net.layers[{i}] {net.layers[i]!r}, {s.stop - s.start:,} parameters"
            for l, (i, s) in enumerate(block_slices(net))]


def block_index(net, l, who="block"):
    """(stage index in net.layers, slice of the flat vector) of block index l,
    with a clear error for anything else (module docstring: the indexing)."""
    blocks = block_slices(net)
    B = len(blocks)
    if isinstance(l, (bool, np.bool_)) or not isinstance(l, (int, np.integer)):
        raise TypeError(f"{who}: a block index must be an int (a position in block_slices(net)), got {l!r}")
    if not -B <= l < B:
        raise IndexError(f"{who}: block index {l} out of range: this network has {B} parametrized stages, "
                         f"block indices 0..{B - 1} (or -{B}..-1); they count the stages WITH parameters "
                         f"(block_slices(net)), not net.layers:\n  " + "\n  ".join(block_names(net)))
    return blocks[int(l)]


def block_bytes(net, X_rows, l, k=None, per_example=False):
    """Bytes a block assembly holds: the (p_l, p_k) float64 block, plus the
    per-example gradients (n, p_l + p_k) for the sampled / empirical Fisher."""
    k = l if k is None else k
    pl = _size(block_index(net, l)[1])
    pk = _size(block_index(net, k)[1])
    return 8 * pl * pk + (8 * X_rows * (pl + pk) if per_example else 0)


def _size(s):
    return s.stop - s.start


def _guard(net, n, l, k, max_bytes, what, per_example=False):
    il, sl = block_index(net, l, what)
    ik, sk = block_index(net, k, what)
    check_dense(net, max_bytes, nbytes=block_bytes(net, n, l, k, per_example),
                what=f"{what} ({l}, {k}) of {_size(sl):,} x {_size(sk):,} "
                     f"(net.layers[{il}] x net.layers[{ik}])")
    return (il, sl), (ik, sk)


class _Linearized:
    """The forward pass at (X, Y) that every block of one matrix shares: the
    stage ctxs, the loss ctx and (for the Hessian) the backward vectors b_l."""

    def __init__(self, net, X, Y, hessian):
        self.net = net
        self.n = X.shape[0]
        self.ctxs, self.lctx, _ = linearize(net, X, Y)
        self.bs = None
        if hessian:
            self.bs = [None if b is None else np.asarray(net.bk.to_host(b), dtype=np.float64)
                       for b in backward_vectors(net, self.ctxs, self.lctx)]


def _chunks(net, n, i_low, p_dir, p_row, block_bytes):
    """Direction count C per chunk: the forward tangents of stages >= i_low
    (kept for the reverse sweep), the reverse vectors and the (C, p) rows,
    within min(128 MiB, max(16 MiB, the block's bytes)): the work stays
    O(block + activations), never above the block for big blocks."""
    per_col = 8 * (2 * n * sum(net.sizes[i_low:]) + p_dir + 2 * p_row)
    budget = min(_CHUNK_BYTES, max(_MIN_CHUNK_BYTES, block_bytes))
    return max(1, int(budget // per_col))


def _columns(lin, d, r, kind):
    """Yield (local direction slice, rows (C, p_r)) = the entries of block r of
    C e_j for the directions e_j of block d, C chunk by chunk. kind: "hessian",
    "gn" or "fisher" (exact)."""
    net, ctxs = lin.net, lin.ctxs
    layers = net.layers
    (i_d, s_d), (i_r, s_r) = block_slices(net)[d], block_slices(net)[r]
    p_d, p_r = _size(s_d), _size(s_r)
    i_low = min(i_d, i_r)
    C = _chunks(net, lin.n, i_low, p_d, p_r, 8 * p_d * p_r)
    hess = kind == "hessian"
    for s in range(0, p_d, C):
        e = min(p_d, s + C)
        dX = np.zeros((e - s, p_d))
        dX[np.arange(e - s), np.arange(s, e)] = 1.0
        dzs, dz_out = _forward_many(net, ctxs, i_d, dX)                   # N^{-1} D_x↘, from stage d up
        w = net.loss_stage.hvp_z_many(lin.lctx, 1.0, dz_out, fisher=kind == "fisher")   # u_{L-1} (GN: D J v / n)
        rows = None
        for i in range(len(layers) - 1, i_r - 1, -1):                    # M^{-1} from the loss down to stage r
            st, ctx = layers[i], ctxs[i]
            dx = dX if i == i_d else None
            at_row = i == i_r
            w_in, gX = st.vjp_many(ctx, w, need_in=not at_row, need_x=at_row)   # grad_z f w, grad_x f w
            if at_row:
                rows = gX
                if hess:
                    t = st.hvp_x_many(ctx, lin.bs[i], dzs[i], dx)         # D_b(D_xx v + D_zx dz), stage r
                    if t is not None:
                        rows = rows + t
                break
            if hess:
                u = st.hvp_z_many(ctx, lin.bs[i], dzs[i], dx)             # B_b(D_xz v + D_zz dz), row i-1
                if u is not None:
                    w_in = w_in + u
            w = w_in
        yield slice(s, e), rows


def _block(lin, l, k, kind):
    """C[s_l, s_k] (p_l, p_k) from `_columns`, the directions in the smaller block."""
    net = lin.net
    pl, pk = _size(block_slices(net)[l][1]), _size(block_slices(net)[k][1])
    out = np.zeros((pl, pk))
    if pk <= pl:            # directions in k: C e_j restricted to block l is column j of the block
        for cols, rows in _columns(lin, k, l, kind):
            out[:, cols] = rows.T
    else:                   # directions in l: rows of block k = rows j of C_lk (C symmetric)
        for cols, rows in _columns(lin, l, k, kind):
            out[cols, :] = rows
    return out


def _norm(net, l, k, who="block"):
    B = len(block_slices(net))
    k = l if k is None else k
    block_index(net, l, who), block_index(net, k, who)
    return int(l) % B, int(k) % B


def hessian_block(net, X, Y, l, k=None, max_bytes=None):
    """H_lk = H[s_l, s_k], the block of the batch-mean loss's Hessian between
    block l's and block k's parameters (k = l by default), (p_l, p_k) float64
    host array, without forming H (module docstring). Refuses a block above
    the size guard with the memory it would need."""
    X, Y = check_batch(net, X, Y, "hessian_block")
    require(net, _MANY, "hessian_block")
    l, k = _norm(net, l, k, "hessian_block")
    _guard(net, X.shape[0], l, k, max_bytes, "the Hessian block")
    return _block(_Linearized(net, X, Y, True), l, k, "hessian")


def gauss_newton_block(net, X, Y, l, k=None, max_bytes=None):
    """G_lk = mean_i J_{i,l}^T D(f_i, y_i) J_{i,k} (thesis 3.1.4, table 3.I),
    (p_l, p_k) float64 host array, without forming G or J."""
    X, Y = check_batch(net, X, Y, "gauss_newton_block")
    require(net, ("jvp_many", "vjp_many"), "gauss_newton_block")
    l, k = _norm(net, l, k, "gauss_newton_block")
    _guard(net, X.shape[0], l, k, max_bytes, "the Gauss-Newton block")
    return _block(_Linearized(net, X, Y, False), l, k, "gn")


def fisher_block(net, X, l, k=None, kind="exact", Y=None, n_samples=1, seed=0, max_bytes=None):
    """F_lk, the block of `curvature.fisher(net, X, kind, Y, n_samples, seed)`
    between blocks l and k, (p_l, p_k) float64 host array, without forming F.
    kind "exact": mean_i J_{i,l}^T D(f_i) J_{i,k} (tables 3.II, 3.III); "mc":
    the same draws as `fisher` with the same seed (so the blocks are slices of
    one sampled matrix); "empirical": the given targets Y."""
    if kind not in FISHER_KINDS:
        raise ValueError(f"fisher_block: kind must be one of {', '.join(FISHER_KINDS)}, got {kind!r}")
    X, _ = check_batch(net, X, Y, "fisher_block")
    require(net, ("jvp_many", "vjp_many"), "fisher_block")
    l, k = _norm(net, l, k, "fisher_block")
    n = X.shape[0]
    _guard(net, n, l, k, max_bytes, "the Fisher block", per_example=kind != "exact")
    if kind == "exact":
        lin = _Linearized(net, X, np.zeros((n, net.n_out)), False)    # D(f) reads only the outputs
        return _block(lin, l, k, "fisher")
    if kind == "empirical" and Y is None:
        raise ValueError("fisher_block(kind='empirical') needs the targets Y")
    if kind == "mc" and (int(n_samples) != n_samples or n_samples < 1):
        raise ValueError(f"fisher_block: n_samples must be a positive integer, got {n_samples}")
    return _sampled_fisher_block(net, X, Y, l, k, kind, int(n_samples), seed)


def _per_example_block(net, ctxs, R, b):
    """(n, p_b): rows g_{i,b} = J_{i,b}^T r_i, the per-example gradients of
    block b for output gradients R (n, k), by forward mode C directions at a time."""
    i_b, s_b = block_slices(net)[b]
    n, p = R.shape[0], _size(s_b)
    g = np.zeros((n, p))
    C = _chunks(net, n, i_b, p, 0, 8 * n * p)
    for s in range(0, p, C):
        e = min(p, s + C)
        dX = np.zeros((e - s, p))
        dX[np.arange(e - s), np.arange(s, e)] = 1.0
        _, dz = _forward_many(net, ctxs, i_b, dX)                    # J_b e_j, (C, n, k)
        g[:, s:e] = np.einsum("cnk,nk->nc", dz, R)
    return g


def _sampled_fisher_block(net, X, Y, l, k, kind, n_samples, seed):
    """mean over draws of g_l^T g_k / n: the same targets, in the same order,
    as dense.fisher draws for this seed."""
    loss = net.loss_stage
    F, ctxs = net.forward_ctx(X)
    n = X.shape[0]
    if kind == "empirical":
        _, lctx = loss.forward(F, net.as_target(Y))
        Rs = [np.asarray(loss.grad_f(lctx), dtype=np.float64)]
    else:
        _, lctx = loss.forward(F, net.bk.asarray(np.zeros((n, net.n_out)), net.dtype))
        rng = np.random.default_rng(seed)
        Rs = []
        for _ in range(n_samples):
            _, sctx = loss.forward(F, net.bk.asarray(loss.sample_targets(lctx, rng), net.dtype))
            Rs.append(np.asarray(loss.grad_f(sctx), dtype=np.float64))
    out = 0.0
    for R in Rs:
        gl = _per_example_block(net, ctxs, R, l)
        gk = gl if k == l else _per_example_block(net, ctxs, R, k)
        out = out + gl.T @ gk
    return out / (n * len(Rs))


def diagonal_blocks(net, X, Y, curvature="hessian", fisher_kind="exact", seed=0, fisher_samples=1,
                    blocks=None, max_bytes=None):
    """Yield (l, slice s_l, C_ll) for each block index l (or those in `blocks`),
    C = "hessian", "gn" or "fisher" (fisher_kind exact / mc / empirical), the
    forward pass shared by all blocks: what block-diagonal Newton (thesis
    3.1.5) and natural gradient (3.2.4) solve with. Each block is checked by
    the size guard before it is assembled; one block is held at a time."""
    X, Y = check_batch(net, X, Y, "diagonal_blocks")
    if blocks is None:
        ls = range(len(block_slices(net)))
    else:
        ls = [_norm(net, b, None, "diagonal_blocks")[0] for b in blocks]
    n = X.shape[0]
    per_ex = curvature == "fisher" and fisher_kind != "exact"
    what = {"hessian": "the Hessian block", "gn": "the Gauss-Newton block", "fisher": "the Fisher block"}
    if curvature not in what:
        raise ValueError(f"diagonal_blocks: curvature must be one of hessian, gn, fisher, got {curvature!r}")
    for l in ls:
        _guard(net, n, l, l, max_bytes, what[curvature], per_ex)
    if curvature == "hessian":
        require(net, _MANY, "diagonal_blocks")
        lin = _Linearized(net, X, Y, True)
    elif curvature == "gn":
        lin = _Linearized(net, X, Y, False)
    elif fisher_kind == "exact":
        lin = _Linearized(net, X, np.zeros((n, net.n_out)), False)
    for l in ls:
        s = block_slices(net)[l][1]
        if per_ex:
            C = fisher_block(net, X, l, l, kind=fisher_kind, Y=Y, n_samples=fisher_samples, seed=seed,
                             max_bytes=max_bytes)
        else:
            C = _block(lin, l, l, {"hessian": "hessian", "gn": "gn", "fisher": "fisher"}[curvature])
        yield l, s, C

"""Dense curvature matrices of the batch-mean loss, host float64 arrays in the
flat parameter layout of DESIGN.md (for small networks; see guard.py).

Index legend: n batch, k network outputs, P parameters, C directions in a
column block; J (n, k, P) the per-example Jacobians of the network output
w.r.t. the parameters; D_i (k, k) a per-example middle matrix.

  hessian(net, X, Y)            H = d^2 mean_i l_i / dtheta^2, seed 001's formula
                                applied to column blocks of the identity
                                (products.py, with C directions at once)
  gauss_newton(net, X, Y)       G = mean_i J_i^T D(f_i, y_i) J_i, D = d2l/df2
                                (thesis 3.1.4, table 3.I)
  fisher(net, X, kind, ...)     exact:  mean_i J_i^T D(f_i) J_i (3.2.3, tables 3.II/3.III)
                                mc:     mean_i mean_s g_is g_is^T, g_is = J_i^T dl(f_i, y_s)/df,
                                        y_s ~ p(y | f_i) (the model's predictive distribution)
                                empirical: mean_i g_i g_i^T with the given targets
  outer_product(net, X, Y)      mean_i g_i g_i^T, the outer-product GN of thesis 3.4
                                (equal to G per example when the output is a
                                probability and l = -log f_y; not through logits)
  block_diagonal(matrix, net)   the per-layer diagonal blocks (thesis 3.1.5)
  output_jacobian(net, X)       J (n, k, P): N^{-1} D_x↘ with C directions at once
  per_example_gradients(...)    g (n, P), g_i = J_i^T dl_i/df_i (not divided by n)
"""
import numpy as np

from tinynet.curvature.guard import check_dense
from tinynet.curvature.passes import backward_vectors, check_batch, first_param_stage, linearize, require

_MANY = ("jvp_many", "vjp_many", "hvp_x_many", "hvp_z_many")

FISHER_KINDS = ("exact", "mc", "empirical")
_BLOCK_BYTES = 64 * 2**20        # work arrays of one column block


def _chunks(net, n, work_per_col):
    """(stage index, global column slice, dX (C, p_l) identity rows): column
    blocks of the identity that never straddle two stages, sized so that the
    work arrays of a block stay under _BLOCK_BYTES."""
    C = max(1, int(_BLOCK_BYTES // max(1, 8 * work_per_col)))
    for i, (a, c) in enumerate(net.offsets):
        for s in range(a, c, C):
            e = min(c, s + C)
            dX = np.zeros((e - s, c - a))
            dX[np.arange(e - s), np.arange(s - a, e - a)] = 1.0
            yield i, slice(s, e), dX


def _work_per_col(net, n):
    total = sum(net.sizes)
    return 4 * n * total + net.n_params


def _forward_many(net, ctxs, i0, dX):
    """N^{-1} D_x↘ applied to C directions that live in stage i0's parameters:
    [dZ entering each layer] (None below i0) and dZ entering the loss, (C, n, .)."""
    dzs, dz = [], None
    for i, (s, ctx) in enumerate(zip(net.layers, ctxs)):
        dzs.append(dz)
        if i == i0:
            dz = s.jvp_many(ctx, dz, dX)
        elif dz is not None:
            dz = s.jvp_many(ctx, dz, None)
    return dzs, dz


def _n(X):
    return X.shape[0]


def hessian(net, X, Y, max_bytes=None):
    """The Hessian of the batch-mean loss at (X, Y), (P, P) float64 host array.

    Seed 001's H = D_b(D_xx + D_zx N^{-1} D_x↘) + D_x M^{-1} B_b(D_xz + D_zz N^{-1} D_x↘)
    applied to the columns of the identity, C at a time: the three passes of
    products.hvp with C directions (stages' `*_many` methods). Refuses networks
    above the dense size limit (guard.check_dense)."""
    X, Y = check_batch(net, X, Y, "hessian")
    require(net, _MANY, "hessian")
    check_dense(net, max_bytes, what="the dense Hessian")
    layers, P = net.layers, net.n_params
    ctxs, lctx, _ = linearize(net, X, Y)
    bs = [None if b is None else np.asarray(net.bk.to_host(b), dtype=np.float64)
          for b in backward_vectors(net, ctxs, lctx)]
    first = first_param_stage(net)
    H = np.zeros((P, P))
    for i0, cols, dX in _chunks(net, _n(X), _work_per_col(net, _n(X))):
        dzs, dz_out = _forward_many(net, ctxs, i0, dX)
        w = net.loss_stage.hvp_z_many(lctx, 1.0, dz_out)            # u_{L-1}
        for i in range(len(layers) - 1, first - 1, -1):
            s, (a, c), ctx = layers[i], net.offsets[i], ctxs[i]
            dx = dX if i == i0 else None
            need_in = i > first
            w_in, gX = s.vjp_many(ctx, w, need_in)                  # grad_z f w, grad_x f w
            if c > a:
                r = s.hvp_x_many(ctx, bs[i], dzs[i], dx)            # D_b(D_xx v + D_zx dz)
                # column block of H stored as rows (H is symmetric): contiguous writes
                H[cols, a:c] = gX if r is None else gX + r
            if not need_in:
                break
            u = s.hvp_z_many(ctx, bs[i], dzs[i], dx)                # B_b(D_xz v + D_zz dz)
            w = w_in if u is None else w_in + u
    return H


def output_jacobian(net, X, max_bytes=None):
    """J (n, k, P), host float64: J[i] = d f(x_i) / d theta, by forward
    substitution (N^{-1} D_x↘) with C directions at once."""
    X, _ = check_batch(net, X, None, "output_jacobian")
    require(net, ("jvp_many",), "output_jacobian (gauss_newton, fisher, outer_product)")
    n, P = _n(X), net.n_params
    check_dense(net, max_bytes, nbytes=8 * n * net.n_out * P + 8 * P * P, what="the output Jacobian")
    F, ctxs = net.forward_ctx(X)
    J = np.zeros((n, net.n_out, P))
    for i0, cols, dX in _chunks(net, n, _work_per_col(net, n)):
        _, dz = _forward_many(net, ctxs, i0, dX)
        J[:, :, cols] = dz.transpose(1, 2, 0)
    return J


def _middle(net, J, D):
    """mean_i J_i^T D_i J_i for J (n, k, P), D (n, k, k)."""
    n, k, P = J.shape
    DJ = np.einsum("nkj,njp->nkp", D, J).reshape(n * k, P)
    return J.reshape(n * k, P).T @ DJ / n


def gauss_newton(net, X, Y, max_bytes=None):
    """G = mean_i J_i^T D(f_i, y_i) J_i with D = d2l/df2 of the loss at the
    network output (thesis 3.1.4, table 3.I), (P, P) float64 host array."""
    X, Y = check_batch(net, X, Y, "gauss_newton")
    check_dense(net, max_bytes, what="the dense Gauss-Newton matrix")
    J = output_jacobian(net, X, max_bytes)
    F, _ = net.forward_ctx(X)
    _, lctx = net.loss_stage.forward(F, net.as_target(Y))
    return _middle(net, J, np.asarray(net.loss_stage.hess_f(lctx), dtype=np.float64))


def per_example_gradients(net, X, Y, J=None):
    """g (n, P), g_i = J_i^T dl_i/df_i: the gradient of example i's loss (the
    batch-mean gradient is g.mean(0))."""
    if J is None:
        J = output_jacobian(net, X)
    F, _ = net.forward_ctx(X)
    _, lctx = net.loss_stage.forward(F, net.as_target(Y))
    return np.einsum("nk,nkp->np", np.asarray(net.loss_stage.grad_f(lctx), dtype=np.float64), J)


def outer_product(net, X, Y, max_bytes=None):
    """mean_i g_i g_i^T with g_i the gradient of example i's loss: the
    outer-product Gauss-Newton matrix of thesis 3.4 (eq. 3.4.1). It equals
    J_i^T D_i J_i example by example when the network output is a probability
    and the loss is -log f_y (one-hot y), e.g. one sigmoid output with BCE on
    0/1 targets; through softmax logits it does not (D = diag p - p p^T has
    rank k-1, g g^T rank 1)."""
    X, Y = check_batch(net, X, Y, "outer_product")
    check_dense(net, max_bytes, what="the dense outer-product matrix")
    g = per_example_gradients(net, X, Y)
    return g.T @ g / g.shape[0]


def fisher(net, X, kind="exact", Y=None, n_samples=1, seed=0, max_bytes=None):
    """The Fisher information matrix of the model's predictive distribution
    p(y | f(x)) (l = -log p + const), averaged over the batch, (P, P) float64.

    kind "exact": mean_i J_i^T D(f_i) J_i, D(f) = E_y[dl/df dl/df^T] in closed
    form (thesis 3.2.3, tables 3.II, 3.III; `Loss.fisher_f`). Y is not used.
    kind "mc": the expectation over y replaced by n_samples draws y ~ p(y|f_i)
    per example (`Loss.sample_targets`, numpy Generator seeded by `seed`).
    kind "empirical": the given targets Y instead of samples (= outer_product).
    """
    if kind not in FISHER_KINDS:
        raise ValueError(f"fisher: kind must be one of {', '.join(FISHER_KINDS)}, got {kind!r}")
    X, _ = check_batch(net, X, Y, "fisher")
    check_dense(net, max_bytes, what="the dense Fisher matrix")
    if kind == "empirical":
        if Y is None:
            raise ValueError("fisher(kind='empirical') needs the targets Y")
        return outer_product(net, X, Y, max_bytes)
    if kind == "mc" and (int(n_samples) != n_samples or n_samples < 1):
        raise ValueError(f"fisher: n_samples must be a positive integer, got {n_samples}")
    J = output_jacobian(net, X, max_bytes)
    F, _ = net.forward_ctx(X)
    loss = net.loss_stage
    n = _n(X)
    _, lctx = loss.forward(F, net.bk.asarray(np.zeros((n, net.n_out)), net.dtype))
    if kind == "exact":
        return _middle(net, J, loss.fisher_f(lctx))
    rng = np.random.default_rng(seed)
    P = net.n_params
    Fm = np.zeros((P, P))
    for _ in range(int(n_samples)):
        Ys = loss.sample_targets(lctx, rng)
        _, sctx = loss.forward(F, net.bk.asarray(Ys, net.dtype))
        g = np.einsum("nk,nkp->np", np.asarray(loss.grad_f(sctx), dtype=np.float64), J)
        Fm += g.T @ g
    return Fm / (n * int(n_samples))


def block_diagonal(matrix, net):
    """The diagonal blocks of a (P, P) curvature matrix, one per stage with
    parameters, in pipeline order: [matrix[s, s] for each stage slice s]
    (thesis 3.1.5, 3.2.4)."""
    matrix = np.asarray(matrix)
    P = net.n_params
    if matrix.shape != (P, P):
        raise ValueError(f"block_diagonal: expected a ({P}, {P}) matrix for this network, got {matrix.shape}")
    return [matrix[s, s] for _, s in net.slices()]


def block_slices(net):
    """[(stage index, slice of the flat vector)] for the stages with parameters."""
    return net.slices()

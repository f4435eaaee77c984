"""Per-layer statistics for the Kronecker-factored and covariance preconditioners
(thesis chapter 6), gathered from the forward ctxs and backward passes of a
Sequential. Math in tinynet.kernels.stats; this module decides which batch
matrices feed them.

Index legend: n batch, k network outputs, i / o a layer's fan-in / fan-out, m
rows. The statistics are written once against the stages' Kronecker-rows hook
(Linear and Conv2d implement it; see tinynet/layers/linear.py): a stage with
`kron_rows` gives, for the batch of a forward ctx,
  H (m, i)   its input rows (`kron_rows(ctx)`: the batch for Linear, m = n; the
             im2col patch rows for Conv2d, m = n * share, share = output positions)
  B (m, o)   the rows of a signal back-propagated to its output (`kron_signal`),
such that the stage's gradient is [grad W^T; grad b^T] = [H 1]^T B. Every other
stage with parameters (batch norm) is trained by plain SGD.

  mean, cov      mu, C of the rows of H                     (thesis 6.1.1)
  A              1/n sum over examples and rows [h h^T, h; h^T, 1]   (6.2.2, bias last)
  G              1/m sum over rows J_a^T D J_a              (6.2.2)
For a Linear layer m = n. For a convolution these are the KFC factors of
Grosse and Martens (2016) ("expand": every position a row): A = Omega sums
the patch outer products over the positions of an example, G = Gamma
averages the output-gradient outer products over them (its 1/|T| spatial
scaling), so A ⊗ G = share x (row-mean A) ⊗ (row-mean G), the Fisher
block under KFC's spatial homogeneity and uncorrelated derivatives.
    curvature "gn":     D = d2l/df2 = S S^T; rows s_n = S_n eps_n with eps_n
                        standard normal give E[b b^T] = J_a^T D J_a (one backward
                        pass per batch; exact=True instead back-propagates every
                        column of S: k passes, for tests and small outputs)
    curvature "fisher": rows dl/df at targets sampled from the model's predictive
                        distribution (Monte-Carlo Fisher, one backward pass, seeded)
    curvature "empirical": rows dl/df at the minibatch's own targets (the empirical
                        Fisher; for the cross-entropy it is the thesis's "cheaper
                        Gauss-Newton" of 3.4, eq simplified-gn, the GN with the
                        softmax inside the network, and what its 6.5.3.4 calls
                        KFAC for GN: no extra backward pass in the thesis's code)

Cost: one backward pass of n x k rows per statistics batch, no per-example
Jacobians; A and C are one (i x n)(n x i) GEMM each.
"""
import numpy as np

from tinynet.backend_base import host_call
from tinynet.kernels import stats as K
from tinynet.losses.bce import BCELoss
from tinynet.losses.mse import MSELoss
from tinynet.losses.softmax_ce import SoftmaxCrossEntropyLoss


def kron_indices(net):
    """Indices in net.layers of the stages with Kronecker rows (Linear, Conv2d), in
    pipeline order."""
    idx = [i for i, s in enumerate(net.layers) if hasattr(s, "kron_rows")]
    if not idx:
        raise ValueError("this preconditioner needs at least one stage with Kronecker rows "
                         "(Linear or Conv2d) in the network")
    return idx


def shares(net):
    """{stage index: rows per example} of the Kronecker stages (1 Linear, Ho*Wo Conv2d)."""
    return {i: int(net.layers[i].share) for i in kron_indices(net)}


def layer_input(net, ctxs, i):
    """H (m, i): the Kronecker input rows of stage i, host float array."""
    return np.asarray(net.bk.to_host(net.layers[i].kron_rows(ctxs[i])))


def backward_rows(net, ctxs, b, grad=None):
    """Reverse pass of the rows b (n, k) at the network output: {Kronecker index: B}
    with B (m, o) the rows of the vectors reaching that stage's output (host).

    Kronecker stages get grad=None (the preconditioners form their own weight
    updates from B and H); any other stage with parameters writes its plain
    gradient into `grad` (its slice of a flat vector) when `grad` is given."""
    return {i: np.asarray(net.bk.to_host(B)) for i, B in backward_rows_bk(net, ctxs, b, grad).items()}

def forward_backward(net, X, Y, grad=None):
    """Forward and backward of the batch-mean loss, without the Linear weight
    GEMMs: (loss, ctxs, loss ctx, {Linear index: B}) with B = (1/n) dl_i/da_i."""
    F, ctxs = net.forward_ctx(X)
    value, lctx = net.loss_stage.forward(F, net.as_target(Y))
    B = backward_rows(net, ctxs, net.loss_stage.vjp(lctx), grad)
    return float(value), ctxs, lctx, B


def sqrt_D_rows(loss, lctx, eps):
    """Rows S_n eps_n (n, k) with S_n S_n^T = D_n = d2l/df2 of example n.
    MSE: D = 2I. Softmax cross-entropy on logits: D = (diag(sqrt p) - p sqrt(p)^T)
    (diag(sqrt p) - sqrt(p) p^T) times sum(y). Binary cross-entropy: D is
    diagonal, S = sqrt(D). Otherwise a symmetric eigendecomposition of hess_f
    per example (small k only)."""
    if isinstance(loss, MSELoss):
        return np.sqrt(2.0) * eps
    if isinstance(loss, BCELoss):              # d in the outputs' dtype, as the device twin
        d = loss.hess_f_vp(lctx, np.ones(lctx[0].shape, dtype=lctx[0].dtype))
        return np.sqrt(d) * eps
    if isinstance(loss, SoftmaxCrossEntropyLoss):
        p = loss.probabilities(lctx).astype(np.float64)
        ys = np.asarray(loss.bk.to_host(lctx[1])).sum(axis=1, keepdims=True)
        sp = np.sqrt(p)
        r = sp * eps - p * np.sum(sp * eps, axis=1, keepdims=True)
        return r * np.sqrt(ys)
    D = np.asarray(loss.hess_f(lctx), dtype=np.float64)
    w, V = host_call("host.eigh", np.linalg.eigh, D, flops=9.0 * D.shape[0] * D.shape[1] ** 3)
    S = V * np.sqrt(np.clip(w, 0.0, None))[:, None, :]
    return np.einsum("nkj,nj->nk", S, eps)


def sqrt_D_columns(loss, lctx):
    """(k, n, k): column c of each example's square-root factor S_n, so that
    sum_c s_nc s_nc^T = D_n (exact GN factors)."""
    n, k = lctx[0].shape
    return np.stack([sqrt_D_rows(loss, lctx, np.tile(np.eye(k)[c], (n, 1))) for c in range(k)])


def curvature_rows(net, ctxs, lctx, curvature, rng, exact=False):
    """List of (n, k) row batches at the output whose back-propagation B gives
    G = 1/n sum over the list of B^T B (see the module docstring)."""
    loss = net.loss_stage
    F = lctx[0]
    n, k = F.shape
    if curvature == "gn":
        if exact:
            return list(sqrt_D_columns(loss, lctx))
        return [sqrt_D_rows(loss, lctx, rng.standard_normal((n, k)))]
    if curvature == "fisher":
        Ys = loss.sample_targets(lctx, rng)
        _, sctx = loss.forward(F, net.bk.asarray(np.asarray(Ys, dtype=net.dtype)))
        return [loss.grad_f(sctx)]
    if curvature == "empirical":
        return [loss.grad_f(lctx)]
    raise ValueError(f"curvature must be 'gn', 'fisher' or 'empirical', got {curvature!r}")


def kfac_sums(net, ctxs, lctx, curvature="gn", rng=None, exact=False):
    """{Kronecker index: (H, S_B)} for the batch of ctxs: the layer's input rows H
    (m, i) and S_B = sum over the curvature row batches of B^T B (o, o),
    unscaled, so that A = share * kfac_A(H) and G = S_B / m (thesis 6.2.2; KFC
    for convolutions, module docstring). Host arrays in the network's dtype
    (float64 in the exactness tests)."""
    rng = np.random.default_rng(0) if rng is None else rng
    rows = curvature_rows(net, ctxs, lctx, curvature, rng, exact)
    SB = {}
    for R in rows:
        Bs = backward_rows(net, ctxs, net.bk.asarray(np.asarray(R, dtype=net.dtype)))
        for i, B in Bs.items():
            B = np.ascontiguousarray(B)
            g = host_call("host.gram", K.gram, B, flops=2.0 * B.shape[0] * B.shape[1] ** 2)
            SB[i] = g if i not in SB else SB[i] + g
    return {i: (np.ascontiguousarray(layer_input(net, ctxs, i)), SB[i]) for i in kron_indices(net)}


def kfac_factors(net, ctxs, lctx, curvature="gn", rng=None, exact=False):
    """{Kronecker index: (A, G)} for the batch of ctxs (thesis 6.2.2; KFC)."""
    sh = shares(net)
    return {i: (sh[i] * K.kfac_A(H), SB / H.shape[0])
            for i, (H, SB) in kfac_sums(net, ctxs, lctx, curvature, rng, exact).items()}


def input_moments(net, ctxs):
    """{Kronecker index: (mu, C)}: mean and covariance of each stage's input rows
    (thesis 6.1.1; for a convolution over examples and positions, m rows)."""
    out = {}
    for i in kron_indices(net):
        H = np.ascontiguousarray(layer_input(net, ctxs, i), dtype=np.float64)
        mu = host_call("host.col_mean", K.col_mean, H, nbytes=H.nbytes)
        out[i] = (mu, host_call("host.centered_cov", K.centered_cov, H, mu,
                                flops=2.0 * H.shape[0] * H.shape[1] ** 2))
    return out


def reduced_means(net, ctxs, comm, loss, rows=None):
    """Data-parallel input_moments, first half: ({Kronecker index: mu}, loss) with
    mu the mean of the stage's input rows over every rank's shard and loss the
    global batch-mean loss, from one all-reduce of column sums ("moments":
    sum_l i_l + 1 numbers). Host float64. rows: {index: kron_rows} when the
    caller has them already (a convolution's patch rows are formed once)."""
    kron = kron_indices(net)
    rows = rows or {i: net.layers[i].kron_rows(ctxs[i]) for i in kron}
    sums = [np.array(net.bk.to_host(net.bk.col_sum(rows[i])), dtype=np.float64) for i in kron]
    box = np.array([loss], dtype=np.float64)
    comm.allreduce_sum(sums + [box], "moments")
    return {i: sums[j] / (rows[i].shape[0] * comm.size) for j, i in enumerate(kron)}, float(box[0]) / comm.size


def reduced_covariances(net, ctxs, mus, comm):
    """Data-parallel input_moments, second half: {Kronecker index: C} with C =
    1/m sum over every rank's rows (h - mu)(h - mu)^T for the global mu (two
    passes, as centered_cov), the upper triangles all-reduced ("covariance":
    sum_l i_l (i_l + 1) / 2 numbers). Host float64."""
    from tinynet.distributed.comm import pack_upper, unpack_upper
    kron = kron_indices(net)
    packed, dims, m = [], [], {}
    for i in kron:
        H = np.asarray(layer_input(net, ctxs, i), dtype=np.float64) - mus[i]
        packed.append(pack_upper(host_call("host.gemm", np.matmul, H.T, H, flops=2.0 * H.shape[0] * H.shape[1] ** 2)))
        dims.append(H.shape[1])
        m[i] = H.shape[0] * comm.size
    comm.allreduce_sum(packed, "covariance")
    return {i: unpack_upper(packed[j], dims[j]) / m[i] for j, i in enumerate(kron)}


class RunningFactors:
    """Exponential running averages of KFAC's factors per Linear layer across
    statistics batches, R <- rho R + (1 - rho) S, the first batch initializing
    R; float64 whatever the network's dtype.

    `update` takes the raw batch sums of kfac_sums (H and S_B = sum B^T B), so
    that the 1/n scaling and the average are one pass over each R
    (kfac_A_running, running_update_upper), and writes the upper triangles
    only: the factors are symmetric, and this halves the memory traffic of
    the statistics step. `value` mirrors the lower triangles when read."""

    def __init__(self, rho=0.95):
        if not 0 <= rho < 1:
            raise ValueError(f"running-average rho must lie in [0, 1), got {rho}")
        self.rho = float(rho)
        self._R = {}
        self._mirrored = True

    def update(self, sums, shares=None, comm=None):
        """sums: {Kronecker index: (H, S_B)} from kfac_sums; shares: {index: rows
        per example} (default 1: Linear layers), A's KFC scaling. comm: the
        data-parallel ranks whose shards the sums are of (update_reduced)."""
        if comm is not None and comm.size > 1:
            return self.update_reduced(sums, shares, comm)
        for i, (H, SB) in sums.items():
            n, ni = H.shape
            rho = self.rho
            if i not in self._R:
                self._R[i] = (np.zeros((ni + 1, ni + 1)), np.zeros(SB.shape))
                rho = 0.0
            RA, RG = self._R[i]
            # the kernels index without bounds checks: refuse mismatched sums here
            if H.ndim != 2 or RA.shape[0] != ni + 1 or SB.ndim != 2 or SB.shape != RG.shape:
                raise ValueError(f"RunningFactors.update: layer {i} got H {H.shape} and S_B {SB.shape}, "
                                 f"the averages are A {RA.shape} and G {RG.shape}; pass kfac_sums' (H, S_B)")
            host_call("host.kfac_A_running", K.kfac_A_running, RA, H, rho,
                      float(1 if shares is None else shares[i]), flops=2.0 * n * ni * ni)
            host_call("host.running_update_upper", K.running_update_upper, RG, SB, rho, 1.0 / n,
                      nbytes=RG.nbytes + SB.nbytes)
        self._mirrored = False

    def update_reduced(self, sums, shares, comm):
        """update() from P ranks' shards: each rank's raw sums S_A = [H 1]^T [H 1]
        (in H's dtype, as kfac_A_running forms H^T H) and S_B, as float64 upper
        triangles, summed by one bucketed all-reduce ("factors": sum over layers
        ((i+1)(i+2) + o(o+1)) / 2 numbers), then averaged into the upper
        triangles with the global row count m = P x the local one (equal shards)."""
        from tinynet.distributed.comm import pack_upper
        order = sorted(sums)
        packed = []
        for i in order:
            H, SB = sums[i]
            H1 = np.empty((H.shape[0], H.shape[1] + 1), dtype=H.dtype)
            H1[:, :-1], H1[:, -1] = H, 1.0
            SA = host_call("host.gemm", np.matmul, H1.T, H1, flops=2.0 * H1.shape[0] * H1.shape[1] ** 2)
            packed += [pack_upper(SA, np.float64), pack_upper(np.asarray(SB), np.float64)]
        comm.allreduce_sum(packed, "factors")
        for j, i in enumerate(order):
            H, SB = sums[i]
            m = H.shape[0] * comm.size
            share = float(1 if shares is None else shares[i])
            rho = self.rho
            if i not in self._R:
                self._R[i] = (np.zeros((H.shape[1] + 1,) * 2), np.zeros(SB.shape))
                rho = 0.0
            RA, RG = self._R[i]
            host_call("host.running_update_packed", K.running_update_packed, RA, packed[2 * j], rho, share / m,
                      nbytes=RA.nbytes)
            host_call("host.running_update_packed", K.running_update_packed, RG, packed[2 * j + 1], rho, 1.0 / m,
                      nbytes=RG.nbytes)
        self._mirrored = False

    @property
    def upper(self):
        """{Linear index: (A, G)} with only the upper triangles current: what
        damped_inverse and the traces of the factored damping read (no mirroring)."""
        return self._R

    @property
    def value(self):
        """{Linear index: (A, G)}, full symmetric float64 matrices (the stored ones)."""
        if not self._mirrored:
            for RA, RG in self._R.values():
                for R in (RA, RG):
                    host_call("host.symmetric_from_upper", K.symmetric_from_upper, R, R, nbytes=R.nbytes)
            self._mirrored = True
        return self._R

    def load(self, value):
        """Set the averages from {Linear index: (A, G)} full matrices."""
        self._R = {int(i): tuple(np.array(m, dtype=np.float64, copy=True) for m in v) for i, v in value.items()}
        self._mirrored = True


# -- shared by the layer-wise optimizers (centered, ACP, KFAC, NNN) ------------
# Per-step work goes through the backend (its GEMM kernels), so that every
# per-step GEMM uses one BLAS (mixing numpy's and Numba's BLAS thread pools on
# a CPU made each step several times slower) and runs on the selected device.
def centered_input(bk, H):
    """(mu, H - 1 mu^T) as backend arrays (mu = minibatch mean of the rows)."""
    n = H.shape[0]
    mu = bk.col_sum(H)
    bk.scale(1.0 / n, mu)
    neg = bk.copy(mu)
    bk.scale(-1.0, neg)
    return mu, bk.add_bias(bk.copy(H), neg)


def backward_rows_bk(net, ctxs, b, grad=None, grad_of=(), keep_rows=False):
    """backward_rows keeping B as backend arrays (the optimizers' hot path).

    grad_of: Kronecker stages whose plain gradient, not their rows, the caller
    wants (KFAC's gradient route): they write it into their slice of `grad`
    (the stage's own fast kernel: for a Conv2d no patch rows are formed) and
    get no entry in the result, unless keep_rows: then they get both."""
    out = {}
    lin = set(kron_indices(net))
    first = min(lin)
    for i in range(len(net.layers) - 1, -1, -1):
        s = net.layers[i]
        a, c = net.offsets[i]
        g = grad[a:c] if (grad is not None and c > a) else None
        if i in lin:
            if i in grad_of:
                if g is None:
                    raise ValueError(f"backward_rows_bk: stage {i} asks for its gradient but no grad vector was given")
                if keep_rows:
                    out[i] = s.kron_signal(ctxs[i], b)
            else:
                out[i] = s.kron_signal(ctxs[i], b)
                g = None
                if i <= first:
                    break
        b = s.vjp(ctxs[i], b, g, need_b_in=i > first)
        if i <= first:
            break
    return out


def forward_backward_bk(net, X, Y, grad=None, grad_of=(), keep_rows=False):
    """forward_backward with B as backend arrays (the optimizers' hot path)."""
    F, ctxs = net.forward_ctx(X)
    value, lctx = net.loss_stage.forward(F, net.as_target(Y))
    B = backward_rows_bk(net, ctxs, net.loss_stage.vjp(lctx), grad, grad_of, keep_rows)
    return float(value), ctxs, lctx, B


def layer_axpy(net, i, a, dWT=None, db=None):
    """theta[W, b of Kronecker stage i] += a [vec(dW); db] (backend arrays; dWT as
    (i, o) C-ordered, whose flat order is vec(W) column-major)."""
    s = net.layers[i]
    p0, p1 = net.offsets[i]
    k = s.fan_in * s.fan_out
    if dWT is not None:
        net.bk.axpy(a, dWT.reshape(-1), net.theta[p0:p0 + k])
    if db is not None:
        net.bk.axpy(a, db.reshape(-1), net.theta[p0 + k:p1])


def other_stages_sgd(net, grad, lr):
    """Plain SGD on the parameters of the stages without Kronecker rows (e.g.
    batch-norm scales), whose gradient backward_rows wrote into `grad`."""
    lin = set(kron_indices(net))
    for i, (a, c) in enumerate(net.offsets):
        if c > a and i not in lin:
            net.bk.axpy(-lr, grad[a:c], net.theta[a:c])


def layer_slot(net, vec, i):
    """The (i+1, o) view [dW^T; db^T] of Kronecker stage i's slice of a flat
    vector (its flat order is [vec(W); b]): where a data-parallel rank writes
    its share of that layer's update."""
    s = net.layers[i]
    a, c = net.offsets[i]
    return vec[a:c].reshape(s.fan_in + 1, s.fan_out)


def sum_shares_and_step(net, vec, lr, layers):
    """Data-parallel: `vec` holds this rank's share of each Kronecker layer's
    update (layer_slot) and the plain gradient of the other stages with
    parameters. One all-reduce ("gradient", |theta| numbers) and the mean over
    the ranks (B's rows carry the shard's 1/(n/P)) give the global ones; then
    theta -= lr x each, the other stages by SGD."""
    comm = net.comm
    comm.allreduce_sum([vec], "gradient")
    net.bk.scale(1.0 / comm.size, vec)
    for i in layers:
        upd = layer_slot(net, vec, i)
        layer_axpy(net, i, -lr, upd[:-1], upd[-1])
    other_stages_sgd(net, vec, lr)


def damped_inverse(M, damping, dtype=np.float64):
    """(M + damping I)^{-1} of a symmetric positive semi-definite M, read from
    its upper triangle only (the lower one may be stale, as in RunningFactors);
    computed in float64 on the host, returned in `dtype`, exactly symmetric.
    By Cholesky (LAPACK potrf + potri: about n^3 flops, a third of an LU
    solve); a symmetric eigendecomposition when the damped matrix is not
    numerically positive definite."""
    from scipy.linalg import lapack
    d = M.shape[0]
    # M^T of a C-ordered M is F-ordered, so this is a plain copy; its lower
    # triangle (as LAPACK reads an F-ordered array) is M's upper one
    S = np.array(np.asarray(M, dtype=np.float64).T, order="F", copy=True)
    S[np.diag_indices(d)] += damping
    c, info = host_call("host.potrf", lapack.dpotrf, S, lower=True, overwrite_a=True, flops=d ** 3 / 3.0)
    if info == 0:
        inv, info = host_call("host.potri", lapack.dpotri, c, lower=True, overwrite_c=True,
                              flops=2.0 * d ** 3 / 3.0)
        if info == 0:
            out = np.empty((d, d), dtype=dtype)
            # potri sets inv's lower triangle = inv.T's upper
            host_call("host.symmetric_from_upper", K.symmetric_from_upper, inv.T, out, nbytes=inv.nbytes + out.nbytes)
            return out
    w, Q = host_call("host.eigh", np.linalg.eigh, np.asarray(M, dtype=np.float64) + damping * np.eye(d),
                     UPLO="U", flops=9.0 * d ** 3)
    w = np.maximum(w, max(damping, 1e-12 * np.abs(w).max(), np.finfo(np.float64).tiny))
    out = np.empty((d, d), dtype=dtype)
    QwQ = host_call("host.gemm", np.matmul, Q / w, Q.T, flops=2.0 * d ** 3)
    host_call("host.symmetric_from_upper", K.symmetric_from_upper, QwQ, out,
              nbytes=QwQ.nbytes + out.nbytes)     # exactly symmetric: callers use M^T for M
    return out

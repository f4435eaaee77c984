"""KFAC's statistics on the network's device (issue 18 part 4): the running
factors A and G of thesis 6.2.2 kept as backend float64 arrays and updated by
the backend's GEMMs and kernels, so that with device="cuda" a statistics step
copies no matrix to the host. Only the amortized inversion (every T steps)
reads the factors down (`upper`) and sends the inverses back.

The host twin is tinynet.optim.stats (kfac_sums + RunningFactors), which
KFAC uses on the CPU and over MPI; this module computes the same numbers:

  S_A = H^T H          (i, i), a backend GEMM in the network's dtype, as
                        kfac_A_running forms it on the host
  R_A <- rho R_A + (1 - rho) share/m S_A        upper triangle (running_upper)
  R_A[:i, i] <- rho R_A[:i, i] + (1 - rho) share mu,  R_A[i, i] = share
                        mu = col_mean(H), the bias column (kfac_bias_running)
  S_B = sum over the curvature row batches of B^T B   (o, o), backend GEMMs
  R_G <- rho R_G + (1 - rho) 1/m S_B            upper triangle

with m the rows of H (n for Linear, n x positions for Conv2d) and share the
rows per example (KFC's scaling). The first batch initializes (rho = 0).

The curvature rows at the output (stats.curvature_rows): "empirical" is the
loss's own scaled gradient, already on the device. The random numbers of the
sampled rows are drawn on the host from the optimizer's generator (the same
draws as the host twin) and uploaded, one copy to the device and no round
trip: "gn" for MSE is sqrt(2) eps; for the softmax cross-entropy "gn" is
S_n eps_n and "fisher" the gradient at targets drawn from softmax(f) by
uniforms, both formed on the device from the probabilities
(tinynet.kernels.sampling); for the binary cross-entropy "gn" is sqrt(d) eps
(its D is diagonal) and "fisher" the gradient at Bernoulli(f) targets, and
for the squared error "fisher" is the gradient at N(f, 1/2) targets, all
formed on the device from the outputs. exact=True's k columns (GN only) are
the same square-root rows at unit draws e_c (kernels.sampling.unit_column),
formed there too with no upload; only a loss without a closed-form square
root (the eigendecomposition path of stats.sqrt_D_rows) forms them on the host.
"""
import numpy as np

from tinynet.kernels import sampling as KS
from tinynet.kernels import stats as K
from tinynet.losses.bce import BCELoss
from tinynet.losses.mse import MSELoss
from tinynet.losses.softmax_ce import SoftmaxCrossEntropyLoss
from tinynet.optim.stats import backward_rows_bk, curvature_rows, kron_indices


def device_curvature_rows(net, lctx, curvature, rng, exact=False):
    """curvature_rows as backend arrays, on the device where the rows can be
    formed there (module docstring); the same values and generator draws."""
    bk, loss = net.bk, net.loss_stage
    F = lctx[0]
    n, k = F.shape
    if curvature == "empirical":                 # dl_i/df = n x the loss's scaled gradient
        return [_unscaled_gradient(bk, lctx)]
    if curvature == "gn" and exact and isinstance(loss, (MSELoss, SoftmaxCrossEntropyLoss, BCELoss)):
        return _exact_columns(net, lctx)
    if curvature == "gn" and isinstance(loss, MSELoss) and not exact:
        return [bk.asarray(np.sqrt(2.0) * rng.standard_normal((n, k)), net.dtype)]
    if isinstance(loss, SoftmaxCrossEntropyLoss) and curvature in ("gn", "fisher") and not exact:
        P = bk.softmax(F)
        out = bk.empty((n, k), net.dtype)
        if curvature == "gn":                    # S_n eps_n, eps standard normal
            E = bk.asarray(rng.standard_normal((n, k)))
            bk.launch(KS, "softmax_sqrt_d_rows", n, P, lctx[1], E, out, nbytes=4 * out.nbytes)
            return [out]
        U = bk.asarray(rng.random((n, 1)).reshape(n))   # targets ~ Categorical(p), then dl/df there
        bk.launch(KS, "softmax_sample", n, P, U, out, nbytes=2 * out.nbytes)
        return [loss.output_gradient(F, out)]
    if isinstance(loss, BCELoss) and curvature in ("gn", "fisher") and not exact:
        lo, hi = loss.clip_bounds(F.dtype)
        out = bk.empty((n, k), net.dtype)
        if curvature == "gn":
            E = bk.asarray(rng.standard_normal((n, k)))
            bk.launch(KS, "bce_sqrt_d_rows", n * k, F, lctx[1], E, out, lo, hi, nbytes=4 * out.nbytes)
            return [out]
        U = bk.asarray(rng.random((n, k)))
        bk.launch(KS, "bce_sample", n * k, F, U, out, lo, hi, nbytes=3 * out.nbytes)
        return [loss.output_gradient(F, out)]
    if isinstance(loss, MSELoss) and curvature == "fisher" and not exact:
        E = bk.asarray(rng.standard_normal((n, k)))
        out = bk.empty((n, k), net.dtype)
        bk.launch(KS, "gauss_sample", n * k, F, E, float(np.sqrt(0.5)), out, nbytes=3 * out.nbytes)
        return [loss.output_gradient(F, out)]
    return [bk.asarray(np.asarray(R), net.dtype) for R in curvature_rows(net, None, lctx, curvature, rng, exact)]


def _exact_columns(net, lctx):
    """[column c of every example's square-root factor S_n for c < k]
    (stats.sqrt_D_columns): the sampled rows' kernels applied to the unit rows e_c."""
    bk, loss = net.bk, net.loss_stage
    F = lctx[0]
    n, k = F.shape
    P = bk.softmax(F) if isinstance(loss, SoftmaxCrossEntropyLoss) else None
    E = bk.empty((n, k), np.float64)
    cols = []
    for c in range(k):
        out = bk.empty((n, k), net.dtype)
        if isinstance(loss, MSELoss):            # sqrt(2) e_c, rounded to the dtype as the host upload
            bk.launch(KS, "unit_column", n * k, out, c, float(np.sqrt(2.0)), nbytes=out.nbytes)
            cols.append(out)
            continue
        bk.launch(KS, "unit_column", n * k, E, c, 1.0, nbytes=E.nbytes)
        if P is not None:
            bk.launch(KS, "softmax_sqrt_d_rows", n, P, lctx[1], E, out, nbytes=4 * out.nbytes)
        else:
            lo, hi = loss.clip_bounds(F.dtype)
            bk.launch(KS, "bce_sqrt_d_rows", n * k, F, lctx[1], E, out, lo, hi, nbytes=4 * out.nbytes)
        cols.append(out)
    return cols


def _unscaled_gradient(bk, lctx):
    """dl_i/df rows: n x the loss stage's scaled gradient (its ctx[3]), on the device."""
    G = bk.copy(lctx[3])
    bk.scale(float(lctx[0].shape[0]), G.reshape(-1))
    return G


def device_kfac_sums(net, ctxs, lctx, curvature="gn", rng=None, exact=False):
    """{Kronecker index: (H, S_B)} as stats.kfac_sums, backend arrays in the
    network's dtype: H the stage's input rows, S_B = sum of B^T B over the
    curvature row batches (unscaled)."""
    bk = net.bk
    rng = np.random.default_rng(0) if rng is None else rng
    SB = {}
    for R in device_curvature_rows(net, lctx, curvature, rng, exact):
        for i, B in backward_rows_bk(net, ctxs, R).items():
            g = bk.matmul(B, B, ta=True)
            if i in SB:
                bk.axpy(1.0, g.reshape(-1), SB[i].reshape(-1))
            else:
                SB[i] = g
    return {i: (net.layers[i].kron_rows(ctxs[i]), SB[i]) for i in kron_indices(net)}


class DeviceRunningFactors:
    """RunningFactors with the averages on the backend (float64 arrays; the
    upper triangles current). Same interface: update(sums, shares), upper,
    value, load; `upper` and `value` are host copies, taken once per update."""

    def __init__(self, bk, rho=0.95):
        if not 0 <= rho < 1:
            raise ValueError(f"running-average rho must lie in [0, 1), got {rho}")
        self.bk, self.rho = bk, float(rho)
        self._R = {}
        self._host = None        # host copies of _R, taken on the first read after an update
        self._mirrored = False

    def update(self, sums, shares=None, comm=None):
        """sums: {Kronecker index: (H, S_B)} from device_kfac_sums (backend arrays)."""
        if comm is not None and comm.size > 1:
            raise ValueError("DeviceRunningFactors is single-process; over MPI KFAC keeps the host "
                             "factors (RunningFactors.update_reduced)")
        bk = self.bk
        for i, (H, SB) in sums.items():
            m, ni = H.shape
            o = SB.shape[0]
            rho = self.rho
            if i not in self._R:
                self._R[i] = (bk.zeros((ni + 1, ni + 1), np.float64), bk.zeros((o, o), np.float64))
                rho = 0.0
            RA, RG = self._R[i]
            if RA.shape[0] != ni + 1 or tuple(SB.shape) != tuple(RG.shape):
                raise ValueError(f"DeviceRunningFactors.update: layer {i} got H {tuple(H.shape)} and S_B "
                                 f"{tuple(SB.shape)}, the averages are A {tuple(RA.shape)} and G "
                                 f"{tuple(RG.shape)}; pass device_kfac_sums' (H, S_B)")
            share = float(1 if shares is None else shares[i])
            SA = bk.matmul(H, H, ta=True)
            bk.launch(K, "running_upper", ni * ni, RA, SA, rho, share / m, flops=2.0 * m * ni * ni,
                      nbytes=RA.nbytes + SA.nbytes)
            mu = bk.empty(ni, H.dtype)
            bk.launch(K, "col_mean", ni, H, mu, nbytes=H.nbytes)
            bk.launch(K, "kfac_bias_running", ni + 1, RA, mu, rho, share, nbytes=8 * (ni + 1))
            bk.launch(K, "running_upper", o * o, RG, SB, rho, 1.0 / m, nbytes=RG.nbytes + SB.nbytes)
        self._host = None

    @property
    def upper(self):
        """{index: (A, G)} host float64, upper triangles current (what
        damped_inverse and factored_damping read): one copy down per update."""
        if self._host is None:
            self._host = {i: tuple(np.array(self.bk.to_host(R)) for R in pair) for i, pair in self._R.items()}
            self._mirrored = False
        return self._host

    @property
    def value(self):
        """{index: (A, G)} full symmetric host float64 matrices."""
        host = self.upper
        if not self._mirrored:
            for pair in host.values():
                for R in pair:
                    K.symmetric_from_upper(R, R)
            self._mirrored = True
        return host

    def load(self, value):
        """Set the averages from {index: (A, G)} full host matrices."""
        self._R = {int(i): tuple(self.bk.asarray(np.array(m, dtype=np.float64)) for m in v)
                   for i, v in value.items()}
        self._host = None

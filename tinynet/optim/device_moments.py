"""ACP's and NNN's amortized statistics on the network's device (issue 18,
part 4). Index legend as tinynet.optim.stats: H (m, i) a stage's input rows
(m = n for a Linear layer, n x positions for a Conv2d's patch rows), B its
signal rows.

Every T updates both methods need, per layer, the mean and covariance of H
(thesis 6.1.1):

  mu = 1/m 1^T H,   C = 1/m (H - 1 mu^T)^T (H - 1 mu^T)

and ACP with the heuristic alpha also max over the rows of (n B)^2 (6.3.2).
The host twin (stats.input_moments) copies H down and forms both in float64;
here the centring (stats.centered_input) and the GEMM run where H lives, in
the network's dtype, and only mu (i numbers) and C (i x i) come down for the
inversion, which stays on the host (amortized). For a convolution's patch
rows (m = n x positions >> i) that replaces a copy of m x i numbers by one of
i x i: for cifar-cnn at batch 128 in float32 the first convolution's
100,352 x 75 patch rows are 30.1 MB and its C 22.5 KB, the second's 12,800 x
150 rows 7.7 MB and its C 90 KB. For a dense layer with fewer
rows than inputs (the MNIST autoencoder's 784-input first layer at batch
200) C is the larger copy, and the device pays the GEMM instead of the host.

The heuristic alpha comes back as P partial maxima (kernels.stats.sq_max)
instead of the rows; max is exact, so it keeps the host formula's bits.
"""
import numpy as np

from tinynet.kernels import stats as K
from tinynet.optim.stats import centered_input, kron_indices

SQ_MAX_PARTIALS = 256


def moment_store(who, net, moments):
    """Where `who`'s amortized moments are formed: "auto" is "device" on a GPU
    backend in one process and "host" otherwise; "device" over MPI is refused
    (the reduced statistics are host sums, tinynet.optim.stats)."""
    if moments not in ("auto", "host", "device"):
        raise ValueError(f"{who}: moments must be 'auto', 'host' or 'device', got {moments!r}")
    if net.comm.size > 1:
        if moments == "device":
            raise ValueError(f"{who}: moments='device' is single-process; over MPI the moments are "
                             "reduced on the host (use moments='auto' or 'host')")
        return "host"
    if moments == "auto":
        return "device" if net.bk.name != "cpu" else "host"
    return moments


def device_input_moments(net, ctxs, centered=None):
    """{Kronecker index: (mu, C)} as stats.input_moments (host float64), formed on
    the backend. centered: {index: (mu, H - 1 mu^T)} backend arrays when the
    caller has them (ACP centres every step's rows anyway)."""
    bk = net.bk
    out = {}
    for i in kron_indices(net):
        mu, Hc = centered[i] if centered else centered_input(bk, net.layers[i].kron_rows(ctxs[i]))
        S = bk.matmul(Hc, Hc, ta=True)
        out[i] = (np.array(bk.to_host(mu), dtype=np.float64),
                  np.array(bk.to_host(S), dtype=np.float64) / Hc.shape[0])
    return out


def device_sq_max(bk, B, c):
    """max over the entries of (c B)^2 as a host float, in B's dtype (c cast to it):
    one launch and SQ_MAX_PARTIALS numbers copied back."""
    x = B.reshape(-1)
    partial = bk.empty(min(SQ_MAX_PARTIALS, max(x.shape[0], 1)), B.dtype)
    bk.launch(K, "sq_max", partial.shape[0], x, B.dtype.type(c), partial, nbytes=x.nbytes)
    return float(np.max(bk.to_host(partial)))

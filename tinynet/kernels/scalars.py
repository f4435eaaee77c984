"""Per-step scalars kept where the arrays are (issue 18, part 4: no host round
trip inside a step). A step that scales its update by a number computed from
the step's own arrays (KFAC's trust region, tinynet.optim.trust_region) keeps
that number in a small float64 backend vector `acc` instead of a host float:
on the GPU each host float is a device-to-host copy and a wait for the device.

  acc[0]   q  = sum over layers of <Gamma, K_d^{-1} Gamma>   (bk.dot_acc)
  acc[1]   nu = min(1, sqrt(kl_clip / (lr^2 q))), 1 unless q > 0   (kl_clip_factor, through bk.launch)
  y += (c acc[j]) x                                          (axpy_s)

UBP's per-layer ratio rho = ||C|| / ||B|| and its clip factor likewise
(ratio_clip, scale_s): acc[0] the step's largest rho, then four entries per
layer.

The CPU twins compute the same numbers in the same order as the host floats
they replace (float64 adds, IEEE sqrt, the coefficient rounded to y's dtype
once), so a CPU step keeps its bits.
"""
import math

from numba import cuda, float64, njit


@njit(cache=True, error_model="numpy")
def kl_clip_factor_cpu(acc, lr, kl_clip):
    """acc[1] = nu from q = acc[0] (module docstring); one entry."""
    q = acc[0]
    acc[1] = 1.0 if not q > 0 else min(1.0, math.sqrt(kl_clip / (lr * lr * q)))


@njit(cache=True)
def axpy_s_cpu(c, s, j, x, y):
    """y += a x with a = c s[j] rounded to y's dtype (as axpy_cpu's caller does)."""
    a = y.dtype.type(c * s[j])
    for i in range(x.shape[0]):
        y[i] += a * x[i]


@njit(cache=True, error_model="numpy")
def ratio_clip_cpu(acc, j, clip, first):
    """UBP's explosion control for one layer (tinynet.optim.ubp, thesis 5.5),
    from acc[j] = ||C||^2 and acc[j+1] = ||B||^2: acc[j+2] = rho = ||C|| / ||B||
    (0 when both are 0, inf when only B is), acc[j+3] = the factor C is scaled
    by (clip / rho where rho > clip, else 1; clip < 0: no clip), and
    acc[0] the step's largest ratio so far (`first`: this layer's rho; then
    replaced by a larger one, as Python's max over the layers in order)."""
    nc = math.sqrt(acc[j])
    nb = math.sqrt(acc[j + 1])
    if nb > 0:
        rho = nc / nb
    elif nc == 0:
        rho = 0.0
    else:
        rho = math.inf
    acc[j + 2] = rho
    acc[j + 3] = clip / rho if clip >= 0 and rho > clip else 1.0
    if first or rho > acc[0]:
        acc[0] = rho


@njit(cache=True)
def scale_s_cpu(s, j, x):
    """x *= s[j] rounded to x's dtype (as scale_cpu's caller does)."""
    a = x.dtype.type(s[j])
    for i in range(x.shape[0]):
        x[i] *= a


# ---------------------------------------------------------------- CUDA twins
@cuda.jit
def ratio_clip_cuda(acc, j, clip, first):
    if cuda.grid(1) == 0:
        nc = math.sqrt(acc[j])
        nb = math.sqrt(acc[j + 1])
        if nb > 0:
            rho = nc / nb
        elif nc == 0:
            rho = float64(0)
        else:
            rho = math.inf
        acc[j + 2] = rho
        acc[j + 3] = clip / rho if clip >= 0 and rho > clip else float64(1)
        if first or rho > acc[0]:
            acc[0] = rho


@cuda.jit
def scale_s_cuda(s, j, x):
    a = x.dtype.type(s[j])
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        x[i] *= a


@cuda.jit
def kl_clip_factor_cuda(acc, lr, kl_clip):
    if cuda.grid(1) == 0:
        q = acc[0]
        acc[1] = float64(1) if not q > 0 else min(float64(1), math.sqrt(kl_clip / (lr * lr * q)))


@cuda.jit
def axpy_s_cuda(c, s, j, x, y):
    a = y.dtype.type(c * s[j])
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        y[i] += a * x[i]


@cuda.jit
def sum_into_cuda(partial, acc, i):
    """acc[i] += sum of partial (dot_cuda's per-block sums), in order, on one
    thread: the device-resident end of bk.dot_acc (bk.dot adds them on the host)."""
    if cuda.grid(1) == 0:
        s = float64(0)
        for b in range(partial.shape[0]):
            s += partial[b]
        acc[i] += s

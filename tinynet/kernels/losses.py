"""Loss kernels: per-example loss and its gradient with respect to the network
output, in one pass.

Index legend: F (network output) and Y (targets) are (n, k); l is (n,);
G is (n, k). `scale` multiplies the gradient (the loss stage passes 1/n, so
that summing a layer's per-example gradients gives the batch-mean gradient).

  MSE:        l_i = sum_j (F_ij - Y_ij)^2            G = scale * 2 (F - Y)
  BCE:        l_i = -sum_j Y log F + (1-Y) log(1-F)   G = scale * (F - Y) / (F (1 - F))
              (F is clipped to [eps, 1 - eps] in the log and the division only)
  softmax-CE: p = softmax(F_i), l_i = -sum_j Y_ij log p_j,
              G = scale * (p sum_j Y_ij - Y)   (= p - y for one-hot rows)
"""
import math

from numba import njit


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def mse_cpu(F, Y, scale, l, G):
    # reassoc lets the float64 sum of squares vectorize: in order, every add
    # waited on the last (latency-bound; (200, 784) on Zen 3: float32 171 -> 62 us,
    # float64 146 -> 69 us). G is elementwise and keeps its bits; l moves in its
    # last float64 bits (2e-15 relative), below float32's rounding of l
    n, k = F.shape
    for i in range(n):
        acc = 0.0
        for j in range(k):
            r = F[i, j] - Y[i, j]
            acc += r * r
            G[i, j] = scale * 2 * r
        l[i] = acc


@njit(cache=True, error_model="numpy")
def bce_cpu(F, Y, scale, eps, l, G):
    n, k = F.shape
    for i in range(n):
        acc = 0.0
        for j in range(k):
            f = min(max(F[i, j], eps), 1 - eps)
            y = Y[i, j]
            acc -= y * math.log(f) + (1 - y) * math.log(1 - f)
            G[i, j] = scale * (f - y) / (f * (1 - f))
        l[i] = acc


@njit(cache=True, error_model="numpy")
def softmax_ce_cpu(F, Y, scale, l, G):
    n, k = F.shape
    for i in range(n):
        m = F[i, 0]
        for j in range(1, k):
            m = max(m, F[i, j])
        se = 0.0
        for j in range(k):
            se += math.exp(F[i, j] - m)
        lse = m + math.log(se)
        acc = 0.0
        ysum = 0.0
        for j in range(k):
            acc -= Y[i, j] * (F[i, j] - lse)
            ysum += Y[i, j]
        for j in range(k):
            G[i, j] = scale * (math.exp(F[i, j] - lse) * ysum - Y[i, j])
        l[i] = acc


@njit(cache=True, error_model="numpy")
def softmax_cpu(F, P):
    """P = row-wise softmax of F (stable)."""
    n, k = F.shape
    for i in range(n):
        m = F[i, 0]
        for j in range(1, k):
            m = max(m, F[i, j])
        se = 0.0
        for j in range(k):
            P[i, j] = math.exp(F[i, j] - m)
            se += P[i, j]
        for j in range(k):
            P[i, j] /= se


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# One thread per example (row), grid-stride over rows. Precision follows the CPU
# twins line by line: under @njit `acc = 0.0` is float64 and `1 - eps` promotes a
# float32 eps to float64, so the losses are accumulated in float64, BCE and the
# softmax-CE log-sum-exp are evaluated in float64, and only the stores round to
# the array dtype. Written with explicit float64(...) here, because on the device
# a bare literal's type is not what the simulator shows (TOOLCHAIN.md).
from numba import cuda, float64  # noqa: E402  (CUDA section of the module)


@cuda.jit
def mse_cuda(F, Y, scale, l, G):
    n, k = F.shape
    two = F.dtype.type(2)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        acc = float64(0)
        for j in range(k):
            r = F[i, j] - Y[i, j]
            acc += r * r
            G[i, j] = scale * two * r
        l[i] = acc


@cuda.jit
def bce_cuda(F, Y, scale, eps, l, G):
    n, k = F.shape
    one = float64(1)
    lo = float64(eps)
    hi = one - float64(eps)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        acc = float64(0)
        for j in range(k):
            f = min(max(float64(F[i, j]), lo), hi)
            y = float64(Y[i, j])
            acc -= y * math.log(f) + (one - y) * math.log(one - f)
            G[i, j] = scale * (f - y) / (f * (one - f))
        l[i] = acc


@cuda.jit
def softmax_ce_cuda(F, Y, scale, l, G):
    n, k = F.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = F[i, 0]
        for j in range(1, k):
            m = max(m, F[i, j])
        se = float64(0)
        for j in range(k):
            se += math.exp(F[i, j] - m)
        lse = float64(m) + math.log(se)
        acc = float64(0)
        ysum = float64(0)
        for j in range(k):
            acc -= Y[i, j] * (float64(F[i, j]) - lse)
            ysum += Y[i, j]
        for j in range(k):
            G[i, j] = scale * (math.exp(float64(F[i, j]) - lse) * ysum - Y[i, j])
        l[i] = acc


@cuda.jit
def softmax_cuda(F, P):
    """P = row-wise softmax of F (stable)."""
    n, k = F.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = F[i, 0]
        for j in range(1, k):
            m = max(m, F[i, j])
        se = float64(0)
        for j in range(k):
            P[i, j] = math.exp(F[i, j] - m)
            se += P[i, j]
        for j in range(k):
            P[i, j] /= se

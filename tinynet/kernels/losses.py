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


@njit(cache=True)
def mse_cpu(F, Y, scale, l, G):
    n, k = F.shape
    for i in range(n):
        acc = 0.0
        for j in range(k):
            r = F[i, j] - Y[i, j]
            acc += r * r
            G[i, j] = scale * 2 * r
        l[i] = acc


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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

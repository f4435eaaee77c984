"""Elementwise optimizer update kernels on flat vectors (in place).

  momentum(x, v, g, lr, mu, nesterov):  v = mu v + g;  x -= lr (g + mu v) if nesterov else lr v
  rmsprop(x, r, g, lr, rho, eps):       r = rho r + (1 - rho) g^2;  x -= lr g / (sqrt(r) + eps)
  adam(x, m, v, g, lr, b1, b2, eps, c1, c2):
      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
      x -= lr (m / c1) / (sqrt(v / c2) + eps)   with c1 = 1 - b1^k, c2 = 1 - b2^k
"""
import math

from numba import njit


@njit(cache=True, error_model="numpy")
def momentum_cpu(x, v, g, lr, mu, nesterov):
    for i in range(x.shape[0]):
        v[i] = mu * v[i] + g[i]
        if nesterov:
            x[i] -= lr * (g[i] + mu * v[i])
        else:
            x[i] -= lr * v[i]


@njit(cache=True, error_model="numpy")
def rmsprop_cpu(x, r, g, lr, rho, eps):
    for i in range(x.shape[0]):
        r[i] = rho * r[i] + (1 - rho) * g[i] * g[i]
        x[i] -= lr * g[i] / (math.sqrt(r[i]) + eps)


@njit(cache=True, error_model="numpy")
def adam_cpu(x, m, v, g, lr, b1, b2, eps, c1, c2):
    for i in range(x.shape[0]):
        m[i] = b1 * m[i] + (1 - b1) * g[i]
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
        x[i] -= lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# One thread per parameter, grid-stride. The scalars arrive in x's dtype (the
# backend converts them) and the constant 1 is written in that dtype, so a
# float32 update runs in float32 on the device.
from numba import cuda  # noqa: E402  (CUDA section of the module)


@cuda.jit
def momentum_cuda(x, v, g, lr, mu, nesterov):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v[i] = mu * v[i] + g[i]
        if nesterov:
            x[i] -= lr * (g[i] + mu * v[i])
        else:
            x[i] -= lr * v[i]


@cuda.jit
def rmsprop_cuda(x, r, g, lr, rho, eps):
    one = x.dtype.type(1)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        r[i] = rho * r[i] + (one - rho) * g[i] * g[i]
        x[i] -= lr * g[i] / (math.sqrt(r[i]) + eps)


@cuda.jit
def adam_cuda(x, m, v, g, lr, b1, b2, eps, c1, c2):
    one = x.dtype.type(1)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        m[i] = b1 * m[i] + (one - b1) * g[i]
        v[i] = b2 * v[i] + (one - b2) * g[i] * g[i]
        x[i] -= lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)

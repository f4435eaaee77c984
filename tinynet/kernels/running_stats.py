"""Batch norm's running statistics on the network's device (issue 18, part 4:
a training step of a net with BatchNorm / BatchNorm2d copies nothing but its
loss back). The statistics are one float64 backend vector per stage,

  run[:C]   running mean,   run[C:]   running variance       (C features or channels)

  running_update   run[:C] = (1 - m) run[:C] + m mu,
                   run[C:] = (1 - m) run[C:] + m var N / (N - 1)   (N values per entry:
                   the unbiased variance, as torch.nn.BatchNorm*; skipped for mean-only BN)
  running_eval     mu = run[:C], s = sqrt(run[C:] + eps), both in the batch's dtype:
                   the evaluation-mode statistics

The CPU twins evaluate the expressions the host numpy code did, in its order
(float64 products and sums, no FMA; the cast to the batch's dtype before the
sqrt), so the statistics and the evaluation outputs keep their bits.
"""
import math

import numpy as np
from numba import cuda, njit


@njit(cache=True, error_model="numpy")
def running_update_cpu(run, mu, var, m, N, has_var):
    C = mu.shape[0]
    for c in range(C):
        run[c] = (1.0 - m) * run[c] + m * np.float64(mu[c])
        if has_var:
            run[C + c] = (1.0 - m) * run[C + c] + m * np.float64(var[c]) * N / (N - 1)


@njit(cache=True, error_model="numpy")
def running_eval_cpu(run, mu, s, eps):
    C = mu.shape[0]
    for c in range(C):
        mu[c] = mu.dtype.type(run[c])
        s[c] = math.sqrt(s.dtype.type(run[C + c]) + eps)


# ---------------------------------------------------------------- CUDA twins (one thread per entry)
@cuda.jit
def running_update_cuda(run, mu, var, m, N, has_var):
    C = mu.shape[0]
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        run[c] = (1.0 - m) * run[c] + m * np.float64(mu[c])
        if has_var:
            run[C + c] = (1.0 - m) * run[C + c] + m * np.float64(var[c]) * N / (N - 1)


@cuda.jit
def running_eval_cuda(run, mu, s, eps):
    C = mu.shape[0]
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        mu[c] = mu.dtype.type(run[c])
        s[c] = math.sqrt(s.dtype.type(run[C + c]) + eps)

"""Elementwise activation kernels: forward, first and second derivatives.

Index legend: Z, S, G, out are (n, d) arrays, one example per row.
Each activation f is given by three kernels:
  `<f>_fwd(Z, out)`:      out = f(Z)
  `<f>_mul_d1(S, G, out)`: out = f'(Z) * G, with f' written in terms of the
                           forward output S = f(Z) (sigmoid, tanh) or of Z itself
                           (relu, where S > 0 iff Z > 0 so either works);
                           the same product is the vjp and the jvp of a
                           diagonal-Jacobian stage.
  `<f>_d2(S, out)`:        out = f''(Z), used by the second-order pieces.
"""
import math

import numpy as np
from numba import njit


@njit(cache=True)
def sigmoid_fwd_cpu(Z, out):
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            z = Z[i, j]
            # two branches keep exp() from overflowing for large |z|
            if z >= 0:
                out[i, j] = 1.0 / (1.0 + math.exp(-z))
            else:
                e = math.exp(z)
                out[i, j] = e / (1.0 + e)


@njit(cache=True)
def sigmoid_mul_d1_cpu(S, G, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            s = S[i, j]
            out[i, j] = G[i, j] * s * (1 - s)


@njit(cache=True)
def sigmoid_d2_cpu(S, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            s = S[i, j]
            out[i, j] = s * (1 - s) * (1 - 2 * s)


@njit(cache=True)
def tanh_fwd_cpu(Z, out):
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = math.tanh(Z[i, j])


@njit(cache=True)
def tanh_mul_d1_cpu(S, G, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            t = S[i, j]
            out[i, j] = G[i, j] * (1 - t * t)


@njit(cache=True)
def tanh_d2_cpu(S, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            t = S[i, j]
            out[i, j] = -2 * t * (1 - t * t)


@njit(cache=True)
def relu_fwd_cpu(Z, out):
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            z = Z[i, j]
            out[i, j] = z if z > 0 else 0


@njit(cache=True)
def relu_mul_d1_cpu(S, G, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = G[i, j] if S[i, j] > 0 else 0


@njit(cache=True)
def relu_d2_cpu(S, out):
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = 0

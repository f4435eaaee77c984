"""Truncated (linear) conjugate gradient for A x = b with A given only as a
product v -> A v: the inner solver of Hessian-free optimization (Martens 2010)
and of the CG mode of the seed-001 Hessian preconditioner.

Index legend: p unknowns; x, b, r, d are (p,) vectors (host numpy, or a
tinynet backend's with `bk`); A is symmetric (p, p), never formed.

CG minimizes the quadratic  phi(x) = 1/2 x^T A x - b^T x  over growing Krylov
spaces (slides 003, "Standard solutions for batch optimization": search
directions made A-conjugate, d_t^T A d_{t-i} = 0, with an exact line search
along each). Because r = b - A x,  phi(x) = -1/2 x^T (b + r)  costs no extra
product, which is what the Martens progress criterion needs.

Stopping rules, whichever comes first:
  * max_iters products (the "CG iteration cap" of truncated Newton);
  * ||r|| <= tol ||b||;
  * Martens (2010, section 4.4) relative progress: stop at iteration i when
    phi_i < 0 and (phi_i - phi_{i-k}) / phi_i < k * progress_tol,
    k = max(min_window, ceil(0.1 i));
  * negative or zero curvature d^T A d <= 0 (A not positive definite): CG's
    quadratic model is unbounded along d, so the iterate before it is returned
    and `negative_curvature` is set (truncated Newton / Steihaug's rule).

Iterates are kept at iterations ceil(gamma^j) (Martens's CG backtracking)
when `keep_iterates` is set.
"""
import math

import numpy as np


class CGResult:
    """x: the solution estimate; iters: products of A used; residual: ||r|| / ||b||
    at the end; phi: phi(x); stop: why it stopped ("tol", "max_iters",
    "progress", "negative_curvature", "zero_rhs"); negative_curvature: bool;
    iterates: [(i, x_i)] kept for backtracking (the last one is x); xx: x^T x
    where the solver read it back with its other scalars (the device CG), else None."""

    def __init__(self, x, iters, residual, phi, stop, iterates, xx=None):
        self.x, self.iters, self.residual, self.phi = x, iters, residual, phi
        self.stop, self.iterates, self.xx = stop, iterates, xx
        self.negative_curvature = stop == "negative_curvature"

    def __repr__(self):
        return (f"CGResult(iters={self.iters}, residual={self.residual:.3g}, "
                f"phi={self.phi:.6g}, stop={self.stop!r})")


class _HostOps:
    """Vector operations on host numpy arrays (the default)."""

    def prepare(self, b):
        b = np.asarray(b)
        if b.ndim != 1:
            raise ValueError(f"conjugate_gradient: b must be a vector, got shape {b.shape}")
        return b

    def dot(self, x, y):
        return float(x @ y)

    def axpy(self, a, x, y):
        y += a * x

    def scale(self, a, x):
        x *= a

    def copy(self, x):
        return x.copy()

    def zeros(self, like):
        return np.zeros(like.shape[0], dtype=like.dtype)

    def start(self, x0, like):
        return np.array(x0, dtype=like.dtype, copy=True)

    def phi(self, x, b, r):
        return -0.5 * float(x @ (b + r))


class _BackendOps:
    """The same on a tinynet backend's flat vectors (bk.dot, bk.axpy, ...): the
    vectors stay on the device, each dot product returns one host float."""

    def __init__(self, bk):
        self.bk = bk

    def prepare(self, b):
        if len(b.shape) != 1:
            raise ValueError(f"conjugate_gradient: b must be a vector, got shape {tuple(b.shape)}")
        return b

    def dot(self, x, y):
        return float(self.bk.dot(x, y))

    def axpy(self, a, x, y):
        self.bk.axpy(a, x, y)

    def scale(self, a, x):
        self.bk.scale(a, x)

    def copy(self, x):
        return self.bk.copy(x)

    def zeros(self, like):
        return self.bk.zeros(like.shape[0], like.dtype)

    def start(self, x0, like):
        return self.bk.copy(self.bk.asarray(x0, like.dtype))

    def phi(self, x, b, r):
        return -0.5 * (float(self.bk.dot(x, b)) + float(self.bk.dot(x, r)))


def conjugate_gradient(A, b, x0=None, max_iters=250, tol=1e-10, progress_tol=None,
                       min_window=10, keep_iterates=False, gamma=1.3, bk=None):
    """Solve A x = b approximately by CG started at x0 (zero if None).

    A: callable v -> A v on (p,) arrays, A symmetric; b: (p,) array.
    bk: None for host numpy vectors, or a tinynet backend whose flat vectors
    b, x0 and A's values are (Hessian-free on the GPU: nothing but the dot
    products' scalars leaves the device).
    Returns a CGResult; x has b's dtype. See the module docstring for the rules.
    """
    ops = _HostOps() if bk is None else _BackendOps(bk)
    b = ops.prepare(b)
    if max_iters < 1:
        raise ValueError(f"conjugate_gradient: max_iters must be >= 1, got {max_iters}")
    p = b.shape[0]
    x = ops.zeros(b) if x0 is None else ops.start(x0, b)
    if tuple(x.shape) != (p,):
        raise ValueError(f"conjugate_gradient: x0 has shape {tuple(x.shape)}, expected ({p},)")
    bnorm = math.sqrt(ops.dot(b, b))
    if bnorm == 0.0:
        return CGResult(ops.zeros(b), 0, 0.0, 0.0, "zero_rhs", [(0, ops.zeros(b))] if keep_iterates else [])

    iters = 0
    if x0 is None or ops.dot(x, x) == 0.0:
        r = ops.copy(b)
    else:
        r = ops.copy(b)
        ops.axpy(-1.0, _apply(A, x, p), r)
        iters += 1
    d = ops.copy(r)
    rr = ops.dot(r, r)
    phis = [ops.phi(x, b, r)]                 # phi at iteration 0, 1, ...
    kept, next_keep, j = [], 1, 0
    stop = "max_iters"
    i = 0
    while iters < max_iters:
        if math.sqrt(rr) <= tol * bnorm:
            stop = "tol"
            break
        Ad = _apply(A, d, p)
        iters += 1
        dAd = ops.dot(d, Ad)
        if not dAd > 0.0:                     # also catches NaN
            stop = "negative_curvature"
            break
        alpha = rr / dAd
        ops.axpy(alpha, d, x)
        ops.axpy(-alpha, Ad, r)
        rr_new = ops.dot(r, r)
        ops.scale(rr_new / rr, d)
        ops.axpy(1.0, r, d)
        rr = rr_new
        i += 1
        phis.append(ops.phi(x, b, r))
        if keep_iterates and i >= next_keep:
            kept.append((i, ops.copy(x)))
            while next_keep <= i:
                j += 1
                next_keep = math.ceil(gamma ** j)
        if progress_tol is not None:
            k = max(min_window, math.ceil(0.1 * i))
            if i > k and phis[-1] < 0 and (phis[-1] - phis[-1 - k]) / phis[-1] < k * progress_tol:
                stop = "progress"
                break
    if keep_iterates and (not kept or kept[-1][0] != i):
        kept.append((i, ops.copy(x)))
    return CGResult(x, iters, math.sqrt(rr) / bnorm, phis[-1], stop, kept)


def _apply(A, v, p):
    out = A(v)
    if not hasattr(out, "shape"):
        out = np.asarray(out)
    if tuple(out.shape) != (p,):
        raise ValueError(f"conjugate_gradient: A(v) returned shape {tuple(out.shape)}, expected ({p},)")
    return out

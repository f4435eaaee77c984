"""Truncated CG whose scalars stay on the backend (issue 18, part 4): the
rules, iterates and result of tinynet.optim.cg.conjugate_gradient, with
alpha, beta, r^T r, phi and the stopping rules computed on the device
(tinynet.kernels.cg) instead of as host floats.

The host still runs the loop (one product of A per iteration, launched from
Python), but learns whether CG has stopped from one entry, read every
`check_every` iterations: one copy back per check instead of four dot
products per iteration. Once a rule fires on the device the vector updates
become no-ops, so products launched before the host notices change nothing:
x, the kept iterates and every reported number equal those of
check_every = 1 (and, on the CPU backend, the bits of conjugate_gradient
with bk); check_every > 1 trades up to check_every - 1 unused products for
fewer waits on the device.
"""
import math

import numpy as np

from tinynet.kernels import cg as _k
from tinynet.optim.cg import CGResult, _apply


def conjugate_gradient_device(A, b, bk, x0=None, max_iters=250, tol=1e-10, progress_tol=None,
                              min_window=10, keep_iterates=False, gamma=1.3, check_every=1):
    """conjugate_gradient(A, b, ..., bk=bk) with the scalars on the backend.

    A: v -> A v on bk's flat vectors; b: (p,) bk vector; check_every: the host
    reads the stop flag every this many iterations (>= 1). Returns a CGResult
    (x and the kept iterates are bk vectors).
    """
    if len(b.shape) != 1:
        raise ValueError(f"conjugate_gradient: b must be a vector, got shape {tuple(b.shape)}")
    if max_iters < 1:
        raise ValueError(f"conjugate_gradient: max_iters must be >= 1, got {max_iters}")
    if int(check_every) != check_every or check_every < 1:
        raise ValueError(f"conjugate_gradient: check_every must be an integer >= 1, got {check_every}")
    p = b.shape[0]
    x = bk.zeros(p, b.dtype) if x0 is None else bk.copy(bk.asarray(x0, b.dtype))
    if tuple(x.shape) != (p,):
        raise ValueError(f"conjugate_gradient: x0 has shape {tuple(x.shape)}, expected ({p},)")
    acc = bk.zeros(_k.PHI + max_iters + 1, np.float64)

    def launch(name, *args):
        bk.launch(_k, name, 1, acc, *args)

    def axpy(c, j, v, y):                       # y += (c acc[j]) v while CG runs
        bk.launch(_k, "cg_axpy_if", p, float(c), acc, j, v, y, nbytes=3 * v.nbytes)

    bk.dot_acc(b, b, acc, _k.BB)
    if x0 is not None:
        bk.dot_acc(x, x, acc, _k.XX)
    bb, xx = (float(v) for v in np.asarray(bk.to_host(acc[_k.BB:_k.XX + 1])))   # the one start-up read
    if bb == 0.0:
        return CGResult(bk.zeros(p, b.dtype), 0, 0.0, 0.0, "zero_rhs",
                        [(0, bk.zeros(p, b.dtype))] if keep_iterates else [], xx=0.0)
    iters = 0
    r = bk.copy(b)
    if x0 is not None and xx != 0.0:
        bk.axpy(-1.0, _apply(A, x, p), r)
        iters = 1
    d = bk.copy(r)
    bk.dot_acc(r, r, acc, _k.RRNEW)
    bk.dot_acc(x, b, acc, _k.XB)
    bk.dot_acc(x, r, acc, _k.XR)
    launch("cg_start", iters, float(tol), int(max_iters))
    kept, next_keep, j = [], 1, 0
    i = 0
    while iters < max_iters:
        if i % check_every == 0 and not float(bk.value(acc, _k.ACTIVE)):
            break
        Ad = _apply(A, d, p)
        iters += 1
        bk.dot_acc(d, Ad, acc, _k.DAD)
        launch("cg_step_length")
        axpy(1.0, _k.ALPHA, d, x)
        axpy(-1.0, _k.ALPHA, Ad, r)
        bk.dot_acc(r, r, acc, _k.RRNEW)
        launch("cg_direction")
        bk.launch(_k, "cg_scale_if", p, acc, _k.BETA, d, nbytes=2 * d.nbytes)
        axpy(1.0, _k.ONE, r, d)
        i += 1
        bk.dot_acc(x, b, acc, _k.XB)
        bk.dot_acc(x, r, acc, _k.XR)
        k = max(min_window, math.ceil(0.1 * i))
        launch("cg_stop_rules", i, k, progress_tol is not None and i > k,
               0.0 if progress_tol is None else float(progress_tol), float(tol), int(max_iters))
        if keep_iterates and i >= next_keep:
            kept.append((i, bk.copy(x)))
            while next_keep <= i:
                j += 1
                next_keep = math.ceil(gamma ** j)
    bk.dot_acc(x, x, acc, _k.XX)             # x^T x for the caller (cg_start zeroed the slot)
    s = np.asarray(bk.to_host(acc))          # the one read at the end
    i_dev, iters_dev = int(s[_k.I]), int(s[_k.ITERS])
    stop = _k.STOP_CODES[int(s[_k.STOP])]
    kept = [(ki, xi) for ki, xi in kept if ki <= i_dev]   # copies of the frozen x after a stop
    if keep_iterates and (not kept or kept[-1][0] != i_dev):
        kept.append((i_dev, bk.copy(x)))
    return CGResult(x, iters_dev, math.sqrt(s[_k.RR]) / s[_k.BNORM], float(s[_k.PHI + i_dev]), stop, kept,
                    xx=float(s[_k.XX]))

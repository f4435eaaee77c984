"""Hessian-free optimization (Martens 2010): truncated CG on the damped
curvature system with matrix-free products, Levenberg-Marquardt damping.

Index legend: p parameters; g (p,) the minibatch gradient; C the minibatch
Gauss-Newton matrix (thesis 3.1.4) or Hessian, never formed: only the
products C v of tinynet.curvature (gvp / hvp: the N^{-1} forward and M^{-1}
backward substitutions of seed 001); λ the damping.

One update:
  1. g and f(θ) on the minibatch (X, Y); with curvature_fraction = 1 the
     curvature products reuse this forward pass's contexts.
  2. CG on (C + λ I) p = -g (the damped Newton system of thesis 3.1.3, with
     the Tikhonov eps = λ adapted), from p_0 = decay * p_prev (warm start),
     at most `cg_iters` products, Martens's relative-progress stop.
  3. CG backtracking (optional): among the iterates kept at i = ceil(1.3^j),
     walk back from the last while the minibatch loss keeps decreasing.
  4. Reduction ratio ρ = (f(θ + p) - f(θ)) / q(p), q(p) = g^T p + 1/2 p^T C p
     the *undamped* quadratic model; Levenberg-Marquardt: λ *= 3/2 if ρ < 1/4,
     λ *= 2/3 if ρ > 3/4.
  5. Optional Armijo backtracking line search on the step size α (from lr,
     shrink by 0.8, f(θ + α p) <= f(θ) + 1e-2 α g^T p; no step when it fails),
     as in Martens & Sutskever (2012).
  6. θ += α p.

All of it runs on the network's backend: g, CG's vectors, the kept iterates
and the trial parameters are device vectors; the forward pass behind the
products is done once per step (curvature.products.linearized_product). CG's
scalars stay there too (tinynet.optim.cg_device): the host reads CG's stop
flag every `cg_check_every` iterations, and otherwise only the losses and a
few dot products of the step's end (p^T p, g^T p and p^T C p) come back.

With the Hessian as C the damped system may be indefinite: CG stops on the
first direction of non-positive curvature and keeps the iterate before it;
if that is the zero vector, the step falls back to p = -g (steepest descent,
sized by the line search). Both are reported in `metrics`.
"""
import math

import numpy as np

from tinynet.curvature.products import linearized_product, product_at
from tinynet.optim.base import Optimizer, check_range
from tinynet.optim.cg_device import conjugate_gradient_device

HF_CURVATURES = ("gn", "hessian")
HF_PRODUCTS = {"gn": "gvp", "hessian": "hvp"}


def curvature_product(net, X, Y, curvature):
    """v -> C v on the backend (flat vectors of the net's dtype) for C the
    minibatch GN matrix ("gn") or Hessian ("hessian") at the current
    parameters, from tinynet.curvature: the forward pass once, then one
    forward-mode and one reverse pass per product."""
    return linearized_product(net, X, Y, HF_PRODUCTS[curvature])


class HessianFree(Optimizer):
    """`HessianFree(net, lr=1.0, curvature="gn", damping=1.0, cg_iters=250,
    cg_tol=1e-10, progress_tol=5e-4, warm_start=0.95, backtrack=True,
    line_search=True, adapt_damping=True, curvature_fraction=1.0,
    min_damping=1e-8, cg_check_every=1)`: see the module docstring.

    warm_start: decay of the previous CG solution used as the start (0 = cold);
    curvature_fraction: the share of the minibatch (its first rows) used for
    the curvature products (Martens uses a smaller batch for them than for g);
    cg_check_every: how often (in CG iterations) the host asks the device
    whether CG has stopped; the result does not depend on it, only the
    number of waits (fewer) and of unused products after a stop (up to
    cg_check_every - 1).
    metrics: cg_iters, damping (λ after the update), rho, alpha,
    backtrack_iter, negative_curvature; `last_cg` holds the last CGResult
    (its `stop` says why CG stopped).
    """

    name = "hf"

    def __init__(self, net, lr=1.0, curvature="gn", damping=1.0, cg_iters=250, cg_tol=1e-10,
                 progress_tol=5e-4, warm_start=0.95, backtrack=True, line_search=True,
                 adapt_damping=True, curvature_fraction=1.0, min_damping=1e-8, cg_check_every=1):
        super().__init__(net, lr)
        if curvature not in HF_CURVATURES:
            raise ValueError(f"HessianFree: curvature must be one of {', '.join(HF_CURVATURES)}, "
                             f"got {curvature!r}")
        check_range("HessianFree", "damping", damping, 0)
        check_range("HessianFree", "cg_iters", cg_iters, 1, integer=True)
        check_range("HessianFree", "cg_tol", cg_tol, 0, lo_open=True)
        if progress_tol is not None:           # None: no relative-progress stop
            check_range("HessianFree", "progress_tol", progress_tol, 0, lo_open=True)
        check_range("HessianFree", "warm_start", warm_start, 0, 1, hi_open=True)
        check_range("HessianFree", "curvature_fraction", curvature_fraction, 0, 1, lo_open=True)
        check_range("HessianFree", "min_damping", min_damping, 0)
        check_range("HessianFree", "cg_check_every", cg_check_every, 1, integer=True)
        self.curvature, self.damping = curvature, float(damping)
        self.cg_iters, self.cg_tol, self.progress_tol = int(cg_iters), float(cg_tol), progress_tol
        self.warm_start, self.backtrack, self.line_search = float(warm_start), bool(backtrack), bool(line_search)
        self.adapt_damping, self.curvature_fraction = bool(adapt_damping), float(curvature_fraction)
        self.min_damping, self.cg_check_every = float(min_damping), int(cg_check_every)
        self.p_prev = self.bk.zeros(net.n_params, net.dtype)   # the last CG solution
        self.last_cg = None

    def state_dict(self):
        return {**super().state_dict(), "damping": self.damping,
                "p_prev": np.array(self.bk.to_host(self.p_prev), copy=True)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.damping = float(state["damping"])
        self.p_prev = self.bk.asarray(np.array(state["p_prev"], dtype=self.net.dtype))

    def _loss_at(self, theta0, p, alpha=1.0):
        bk, theta = self.bk, self.net.theta
        bk.copy_into(theta, theta0)
        bk.axpy(alpha, p, theta)
        return float(self.net.loss(self._X, self._Y))

    def step(self, X, Y):
        # every vector (g, the CG iterates, theta0) stays on the network's
        # device; what crosses to the host is the dot products' scalars and losses
        net, bk = self.net, self.bk
        f0, gb, ctxs, lctx = net.loss_gradient_contexts(X, Y)
        f0 = float(f0)
        g = bk.copy(gb)
        theta0 = bk.copy(net.theta)
        self._X, self._Y = X, Y
        n = X.shape[0] if hasattr(X, "shape") else len(X)       # host or device batch
        m = max(1, math.ceil(self.curvature_fraction * n))
        if m == n:                              # the gradient's forward pass serves the products
            Cv = product_at(net, ctxs, lctx, HF_PRODUCTS[self.curvature])
        else:
            Cv = curvature_product(net, X[:m], Y[:m], self.curvature)
        lam = self.damping

        def damped(v):
            out = Cv(v)
            bk.axpy(lam, v, out)
            return out

        minus_g = bk.copy(g)
        bk.scale(-1.0, minus_g)
        x0 = None
        if self.warm_start > 0:                 # a zero p_prev starts CG cold (CG checks x0^T x0)
            x0 = bk.copy(self.p_prev)
            bk.scale(self.warm_start, x0)
        res = conjugate_gradient_device(damped, minus_g, bk, x0=x0, max_iters=self.cg_iters,
                                        tol=self.cg_tol, progress_tol=self.progress_tol,
                                        keep_iterates=self.backtrack, check_every=self.cg_check_every)
        p, back_i, f1 = res.x, res.iters, None
        if res.xx == 0:                         # negative curvature at the start (p^T p, read with CG's scalars)
            p = minus_g                         # steepest descent; the line search sizes it
        elif self.backtrack and len(res.iterates) > 1:
            # walk back over the kept iterates while the loss keeps decreasing
            its = res.iterates
            best_i, best_p = its[-1]
            best_f = self._loss_at(theta0, best_p)
            for i, pi in reversed(its[:-1]):
                fi = self._loss_at(theta0, pi)
                if fi >= best_f:
                    break
                best_i, best_p, best_f = i, pi, fi
            p, back_i, f1 = best_p, best_i, best_f
        self.p_prev = bk.copy(res.x)

        if f1 is None:
            f1 = self._loss_at(theta0, p)
        bk.copy_into(net.theta, theta0)         # C is the curvature at θ, not at θ + p
        Cp = Cv(p)
        s = bk.zeros(2, np.float64)             # g^T p and p^T C p, read back together
        bk.dot_acc(g, p, s, 0)
        bk.dot_acc(p, Cp, s, 1)
        gp, pCp = (float(v) for v in np.asarray(bk.to_host(s)))
        q = gp + 0.5 * pCp
        rho = (f1 - f0) / q if q < 0 else float("nan")   # q >= 0: the model predicts no decrease
        if self.adapt_damping:
            if not rho >= 0.25:
                lam *= 1.5
            elif rho > 0.75:
                lam *= 2.0 / 3.0
            self.damping = max(lam, self.min_damping)   # a floor, so that λ = 0 can grow

        alpha = self.lr
        if self.line_search:
            f_alpha = self._loss_at(theta0, p, alpha) if alpha != 1.0 else f1
            tries = 0
            while not (math.isfinite(f_alpha) and f_alpha <= f0 + 1e-2 * alpha * gp):
                tries += 1
                if tries > 20:      # 0.8^20 ~ 1e-2 of lr: give up, no step
                    alpha = 0.0
                    break
                alpha *= 0.8
                f_alpha = self._loss_at(theta0, p, alpha)
        bk.copy_into(net.theta, theta0)
        bk.axpy(alpha, p, net.theta)
        self._X = self._Y = None
        self.k += 1
        self.last_cg = res
        self.metrics = {"cg_iters": res.iters, "damping": self.damping,
                        "rho": rho, "alpha": alpha, "backtrack_iter": back_i,
                        "negative_curvature": float(res.negative_curvature)}
        return f0

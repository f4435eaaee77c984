"""Matrix-free curvature products for networks of any size: Hv, Gv, Fv of the
batch-mean loss (seed 001, "The Hessian"; thesis 3.1.4, 3.2.3), never forming
the matrix. Written against the backend API: they run where the net lives.

Index legend: P parameters; stages l = 1 .. L-1 (`net.layers`), L the loss;
z_l stage outputs, b_l backward vectors (passes.backward_vectors); v (P,) a
direction in the flat layout; dz_l = (N^{-1} D_x↘ v)_l.

Seed 001's Hessian applied to v,
  H v = D_b (D_xx + D_zx N^{-1} D_x↘) v + D_x M^{-1} B_b (D_xz + D_zz N^{-1} D_x↘) v,
is computed in three passes:
  1. forward substitution N dz = D_x↘ v: dz_l = grad_x f_l v_l + grad_z f_l dz_{l-1},
     dz_0 = 0 (forward mode, each stage's `jvp`);
  2. per stage, the contracted second-order pieces of the b_l (`hvp_x`: the
     stage's block of D_b(D_xx v + D_zx dz), `hvp_z`: its block of
     B_b(D_xz v + D_zz dz), which B_b puts in the row of stage l-1);
  3. backward substitution M w = u (u = the hvp_z blocks), w_L = 0,
     w_{l-1} = grad_z f_l w_l + u_{l-1} (reverse mode, each stage's `vjp`),
     and (H v)_l = hvp_x_l + grad_x f_l w_l.
Passes 2 and 3 run together in one reverse sweep, with the b_l recomputed in
the same sweep. Cost: one forward, one forward-mode and one two-vector
reverse pass (benchmarks/curvature.py measures it against one gradient).

The Gauss-Newton product is pass 1, the loss's D = d2l/df2 at the output
(thesis table 3.I), and a plain reverse pass: G v = mean_i J_i^T D_i J_i v.
The Fisher product is the same with D(f) of the predictive distribution
(table 3.II; `Loss.fisher_f`).
"""
import numpy as np

from tinynet.curvature.passes import check_batch, first_param_stage, linearize, require


def _direction(net, v, who):
    """Host or backend (P,) vector -> backend vector in the net's dtype."""
    shape = getattr(v, "shape", None)
    if shape != (net.n_params,):
        raise ValueError(f"{who}: v must be a flat vector of the {net.n_params} parameters "
                         f"(shape ({net.n_params},)), got shape {shape}")
    if isinstance(v, np.ndarray) or net.bk.name == "cpu":
        v = np.asarray(v)
        if not np.isfinite(v).all():
            raise ValueError(f"{who}: v contains NaN or inf: give a finite direction")
        return net.bk.asarray(v, net.dtype)
    return v


def _forward_tangents(net, ctxs, v):
    """Pass 1: [dz_{l-1} entering each layer l], and dz_{L-1} entering the loss."""
    dzs, dz = [], None
    for s, (a, c), ctx in zip(net.layers, net.offsets, ctxs):
        dzs.append(dz)
        dz = s.jvp(ctx, dz, v[a:c] if c > a else None)
    return dzs, dz


def hvp(net, X, Y, v):
    """H v for H the Hessian of the batch-mean loss at (X, Y), as a backend
    vector (P,): seed 001's formula with N^{-1} a forward and M^{-1} a backward
    substitution (module docstring). v: host or backend (P,)."""
    return linearized_product(net, X, Y, "hvp")(_direction(net, v, "hvp"))


def _hvp_at(net, ctxs, lctx, v):
    """hvp from a linearization (ctxs, lctx) at the current parameters."""
    bk, layers = net.bk, net.layers
    dzs, dz_out = _forward_tangents(net, ctxs, v)
    out = bk.zeros(net.n_params, net.dtype)
    first = first_param_stage(net)
    b = net.loss_stage.vjp(lctx)                     # b_{L-1}
    w = net.loss_stage.hvp_z(lctx, 1.0, dz_out)      # w_{L-1} = u_{L-1} (M's last row: w_L = 0)
    for i in range(len(layers) - 1, first - 1, -1):
        s, (a, c), ctx = layers[i], net.offsets[i], ctxs[i]
        dx = v[a:c] if c > a else None
        need_in = i > first
        w_in = s.vjp(ctx, w, out[a:c] if c > a else None, need_b_in=need_in)   # grad_z f w, grad_x f w
        if c > a:
            s.hvp_x(ctx, b, dzs[i], dx, out[a:c])    # + D_b (D_xx v + D_zx dz), stage l's block
        if not need_in:
            break
        u = s.hvp_z(ctx, b, dzs[i], dx)              # B_b (D_xz v + D_zz dz), row l-1
        if u is not None:
            bk.axpy(1.0, u.reshape(-1), w_in.reshape(-1))
        b = s.vjp(ctx, b, None, need_b_in=True)      # b_{l-1}
        w = w_in
    return out


def _outer_at(net, ctxs, lctx, v, fisher):
    """J^T (1/n) D J v from a linearization (ctxs, lctx) at the current parameters."""
    _, dz_out = _forward_tangents(net, ctxs, v)                  # J v
    u = net.loss_stage.hvp_z(lctx, 1.0, dz_out, fisher=fisher)   # (1/n) D J v
    out = net.bk.zeros(net.n_params, net.dtype)
    return net.backward(ctxs, u, out)                            # J^T (1/n) D J v


def gvp(net, X, Y, v):
    """G v for G = mean_i J_i^T D(f_i, y_i) J_i, the Gauss-Newton matrix of the
    batch-mean loss (thesis 3.1.4, table 3.I; D = the loss's d2l/df2), as a
    backend vector (P,). J_i: Jacobian of the network output w.r.t. the
    parameters at example i."""
    return linearized_product(net, X, Y, "gvp")(_direction(net, v, "gvp"))


def fvp(net, X, Y, v):
    """F v for the exact Fisher F = mean_i J_i^T D(f_i) J_i (thesis 3.2.3,
    table 3.II; D(f) of the model's predictive distribution, `Loss.fisher_f`),
    as a backend vector (P,). F does not depend on targets: Y is ignored (pass
    None); it is in the signature so that hvp / gvp / fvp share call sites."""
    return linearized_product(net, X, None, "fvp")(_direction(net, v, "fvp"))


def linearized_product(net, X, Y, kind):
    """v -> C v (backend (P,) vectors) for C = H ("hvp"), G ("gvp") or the Fisher
    ("fvp") of the batch (X, Y) at the current parameters, with the forward pass
    done once here and reused by every product (the inner loop of truncated
    Newton / Hessian-free CG, where the parameters stay fixed). The closure is
    valid while the parameters equal those at the call; v must already be a
    backend vector of the net's dtype."""
    if kind not in ("hvp", "gvp", "fvp"):
        raise ValueError(f"linearized_product: kind must be 'hvp', 'gvp' or 'fvp', got {kind!r}")
    if kind == "fvp":
        X, _ = check_batch(net, X, None, kind)
        Y = np.zeros((X.shape[0], net.n_out))     # D(f) reads only the outputs
    else:
        X, Y = check_batch(net, X, Y, kind)
    if kind == "hvp":
        require(net, ("hvp_x", "hvp_z"), "hvp")
    ctxs, lctx, _ = linearize(net, X, Y)
    return product_at(net, ctxs, lctx, kind)


def product_at(net, ctxs, lctx, kind):
    """linearized_product from a forward pass already done (the contexts of
    Network.loss_gradient_contexts at the current parameters): v -> C v."""
    if kind not in ("hvp", "gvp", "fvp"):
        raise ValueError(f"product_at: kind must be 'hvp', 'gvp' or 'fvp', got {kind!r}")
    if kind == "hvp":
        require(net, ("hvp_x", "hvp_z"), "hvp")
        return lambda v: _hvp_at(net, ctxs, lctx, v)
    return lambda v: _outer_at(net, ctxs, lctx, v, kind == "fvp")

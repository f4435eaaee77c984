"""Shared passes of the curvature code: the forward pass that linearizes the
network at a batch, and the backward vectors b_l of seed 001.

Index legend: stage l = 1 .. L-1 are `net.layers`, stage L is the loss; b_l is
the backward vector at the output of stage l (b_L = 1: the loss's output is
the scalar batch-mean loss z_L); n batch.
"""
import numpy as np


def check_batch(net, X, Y, who):
    """Host/backend batch -> (X, Y) as the net expects, with clear errors."""
    if isinstance(X, np.ndarray) or net.bk.name == "cpu":
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != net.n_in:
            raise ValueError(f"{who}: inputs must have shape (n, {net.n_in}), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{who}: the batch is empty")
    return X, Y


def require(net, methods, who):
    """A clear error when a stage lacks the contract methods `methods` that `who`
    is written against (batch-statistics stages have no per-example second-order
    pieces: their output rows depend on the whole batch)."""
    for i, s in enumerate(net.layers):
        missing = [m for m in methods if not hasattr(s, m)]
        if missing:
            why = (" (it mixes the examples of a batch through its batch statistics, so it has no "
                   "per-example pieces)" if s.mixes_batch else "")
            raise NotImplementedError(
                f"{who}: stage {i} ({s!r}) does not provide {', '.join(missing)}{why}; "
                f"the matrix-free gvp / fvp work through it, or build the network without it")


def linearize(net, X, Y):
    """Forward pass through the stages and the loss: (ctxs, loss ctx, loss value)."""
    F, ctxs = net.forward_ctx(X)
    value, lctx = net.loss_stage.forward(F, net.as_target(Y))
    return ctxs, lctx, value


def first_param_stage(net):
    """Index of the first stage with parameters (the reverse passes stop there)."""
    return next((i for i, (a, c) in enumerate(net.offsets) if c > a), len(net.layers))


def backward_vectors(net, ctxs, lctx):
    """[b_l for each layer l] (backend arrays (n, out_l)): b_{L-1} = grad of the
    batch-mean loss w.r.t. the network output, b_{l-1} = grad_z f_l b_l (seed 001,
    "Backpropagation ... the recursive way"). Entries below the first
    parametrized stage are None (no one needs them)."""
    layers = net.layers
    first = first_param_stage(net)
    bs = [None] * len(layers)
    b = net.loss_stage.vjp(lctx)
    for i in range(len(layers) - 1, first - 1, -1):
        bs[i] = b
        if i > first:
            b = layers[i].vjp(ctxs[i], b, None, need_b_in=True)
    return bs

"""Per-layer stepsizes of the slides' "1990's style network" (seed 003,
"Divide stepsizes by sqrt(share x fanin)"): the stepsize of a layer's
parameters is lr / sqrt(share x fanin), where

  share = the number of output positions a weight is applied to
          (1 for Linear, H_out x W_out for Conv2d: the stage's `share`),
  fanin = the inputs of one output (in_features, or in_channels x kh x kw:
          the stage's `fan_in`).

The slides derive it from the per-neuron block of the empirical Fisher,
E[g_j^2 x_i x_i'] ~ E[g_j^2] I, whose normalizer sqrt(E[g^T G^-1 g]) is
~ sqrt(fanin), times sqrt(share) for a weight summed over share positions.
The layer's bias takes the same stepsize as its weights (one block per
neuron). Stages without Kronecker rows (BatchNorm) keep lr.
"""
import math

LR_SCALINGS = ("none", "share-fanin")


def layer_factors(net, kind):
    """[(slice of theta, factor)]: the layers whose stepsize is lr x factor."""
    if kind not in LR_SCALINGS:
        raise ValueError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {kind!r}")
    if kind == "none":
        return []
    out = []
    for i, (a, b) in enumerate(net.offsets):
        s = net.layers[i]
        if b > a and hasattr(s, "kron_rows"):
            out.append((slice(a, b), 1.0 / math.sqrt(int(s.share) * int(s.fan_in))))
    return out


def scale_gradient(bk, g, factors):
    """g[slice] *= factor for each layer, in place (one pass over g)."""
    for sl, f in factors:
        bk.scale(f, g[sl])
    return g

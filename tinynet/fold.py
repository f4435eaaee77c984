"""Folding batch normalization into the layer before it (seed 003's
"a few epochs of batch normalization first, then whitening"): in evaluation
mode BN is the affine map z -> s (z - mean) + beta per feature (channel), with
s = gamma / sqrt(running_var + eps) (s = 1 for mean-only BN), so after a
Linear or Conv2d it folds into that layer:

    W'[c, :] = s_c W[c, :],    b'_c = s_c (b_c - mean_c) + beta_c.

`fold_batchnorm(net)` returns a new Sequential without the BN stages whose
outputs equal `net`'s in evaluation mode; the BN statistics are carried over
into the weights, so a run can switch from BN to the whitening
reparametrization (tinynet.optim.reparam) without changing the function."""
import copy

import numpy as np

from tinynet.layers.batchnorm import BatchNorm, MeanOnlyBatchNorm
from tinynet.layers.batchnorm2d import BatchNorm2d
from tinynet.network import Sequential

_BN = (BatchNorm, MeanOnlyBatchNorm, BatchNorm2d)


def _bn_affine(bn, theta):
    """(s, shift) with out = s z + shift in evaluation mode."""
    if isinstance(bn, MeanOnlyBatchNorm):
        s = np.ones_like(bn.running_mean)
        beta = theta
    else:
        d = theta.shape[0] // 2
        gamma, beta = theta[:d], theta[d:]
        s = gamma / np.sqrt(bn.running_var + bn.eps)
    return s, beta - s * bn.running_mean


def fold_batchnorm(net):
    theta = net.get_flat().astype(np.float64)
    layers, params = [], []
    i = 0
    while i < len(net.layers):
        s = net.layers[i]
        a, b = net.offsets[i]
        p = theta[a:b].copy()
        nxt = net.layers[i + 1] if i + 1 < len(net.layers) else None
        if isinstance(nxt, _BN):
            if not hasattr(s, "kron_rows"):
                raise ValueError(f"fold_batchnorm: {nxt!r} follows {s!r}, not a Linear or Conv2d; "
                                 f"only a BN right after one of those folds")
            c, d = net.offsets[i + 1]
            scale, shift = _bn_affine(nxt, theta[c:d])
            k = s.fan_in * s.fan_out
            WT = p[:k].reshape(s.fan_in, s.fan_out) * scale     # [W^T; b^T]: column c is output c
            p = np.concatenate([WT.reshape(-1), p[k:] * scale + shift])
            i += 1
        elif isinstance(s, _BN):
            raise ValueError(f"fold_batchnorm: {s!r} does not follow a Linear or Conv2d")
        layers.append(copy.deepcopy(s))
        params.append(p)
        i += 1
    out = Sequential(layers, copy.deepcopy(net.loss_stage), dtype=net.dtype, device=net.device,
                     input_shape=net.input_shape)
    out.set_flat(np.concatenate(params) if params else np.zeros(0))
    return out

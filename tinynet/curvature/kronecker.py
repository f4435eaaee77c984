"""The chapter-6 matrices of a network at a batch, explicit and inspectable
(issue 17): each layer's KFAC factors A and G, its input mean and covariance,
and the Kronecker approximation A ⊗ G beside the exact Gauss-Newton (or
Fisher) block it approximates.

Indexing: `layer` is a block index as in tinynet.curvature.block (a position
in block_slices(net): the stages with parameters, from 0), restricted to the
stages with Kronecker rows (Linear, Conv2d; `kron_layers(net)` lists them).

Index legend: n batch, m rows (n for Linear, n * share for a Conv2d's patch
rows), i / o a layer's fan-in / fan-out; H (m, i) the input rows, B (m, o)
the back-propagated curvature rows (tinynet.optim.stats: the same code the
optimizers use, so these ARE the factors they apply).

  kfac_factors(net, X, Y, curvature)  {layer: (A, G)}
      A = share/m sum_rows [h h^T, h; h^T, 1]  ((i+1) x (i+1), bias last, thesis 6.2.2)
      G = 1/m sum over curvature rows B^T B    (o x o):
          "gn":     D = d2l/df2 = S S^T, every column of S back-propagated
                    (exact=True, k passes) or one Gaussian probe (exact=False)
          "fisher": dl/df at targets sampled from the model (Monte Carlo, seeded)
  input_moments(net, X)               {layer: (mu, C)}, C = E[(h - mu)(h - mu)^T] (6.1.1)
  kron_vs_exact(net, X, Y, layer, curvature)
      {"kron": A ⊗ G, "exact": the exact block of G (or F), "diff": kron - exact}
      in the flat layout [vec(W); b] (J_theta = (h^T 1) ⊗ J_a, so A ⊗ G is
      np.kron(A, G)). They are equal for one example through one Linear
      layer with MSE (J_a = I, D = 2I); KFAC's error in general is diff.
"""
import numpy as np

from tinynet.curvature.block import block_index, fisher_block, gauss_newton_block
from tinynet.curvature.dense import block_slices
from tinynet.curvature.passes import check_batch


def kron_layers(net):
    """Block indices (positions in block_slices) of the stages with Kronecker rows."""
    return [l for l, (i, _) in enumerate(block_slices(net)) if hasattr(net.layers[i], "kron_rows")]


def kron_stage(net, layer, who="kron_stage"):
    """Index in net.layers of Kronecker block `layer`; a clear error for a block
    out of range or without Kronecker rows."""
    i, _ = block_index(net, layer, who)
    if not hasattr(net.layers[i], "kron_rows"):
        raise ValueError(f"{who}: block {layer} (net.layers[{i}] {net.layers[i]!r}) has no Kronecker rows "
                         f"(only Linear and Conv2d do); the Kronecker layers are blocks {kron_layers(net)}")
    return i


def _to_blocks(net, by_stage):
    stage_to_block = {i: l for l, (i, _) in enumerate(block_slices(net))}
    return {stage_to_block[i]: v for i, v in sorted(by_stage.items())}


def kfac_factors(net, X, Y=None, curvature="gn", exact=True, seed=0):
    """{layer: (A, G)} of KFAC at the batch (X, Y) (module docstring), host
    arrays in the network's dtype. exact=True back-propagates every column of
    the loss's square-root factor (the exact GN factor G); exact=False one
    Gaussian probe, as KFAC's default statistics. curvature "fisher" samples
    targets with numpy Generator(seed) (Y is then not used)."""
    from tinynet.optim.stats import kfac_factors as stats_kfac_factors
    if curvature not in ("gn", "fisher"):
        raise ValueError(f"kfac_factors: curvature must be 'gn' or 'fisher', got {curvature!r}")
    X, Y = check_batch(net, X, Y, "kfac_factors")
    if Y is None:
        if curvature == "gn":
            raise ValueError("kfac_factors(curvature='gn') needs the targets Y")
        Y = np.zeros((X.shape[0], net.n_out))
    F, ctxs = net.forward_ctx(X)
    _, lctx = net.loss_stage.forward(F, net.as_target(Y))
    return _to_blocks(net, stats_kfac_factors(net, ctxs, lctx, curvature, np.random.default_rng(seed), exact))


def input_moments(net, X):
    """{layer: (mu, C)}: mean and covariance of each Kronecker layer's input
    rows at the batch X (thesis 6.1.1; for a convolution over examples and
    positions), float64 host arrays: what ACP's C and NNN's whitening start from."""
    from tinynet.optim.stats import input_moments as stats_input_moments
    X, _ = check_batch(net, X, None, "input_moments")
    _, ctxs = net.forward_ctx(X)
    return _to_blocks(net, stats_input_moments(net, ctxs))


def kron_vs_exact(net, X, Y, layer, curvature="gn", exact=True, seed=0):
    """{"A", "G", "kron": A ⊗ G, "exact", "diff": kron - exact} for one
    Kronecker layer: the exact block is gauss_newton_block (curvature "gn") or
    fisher_block(kind="exact") (curvature "fisher"; KFAC's Fisher G is
    sampled, so the difference includes the sampling error)."""
    kron_stage(net, layer, "kron_vs_exact")
    l = int(layer) % len(block_slices(net))
    A, G = kfac_factors(net, X, Y, curvature, exact, seed)[l]
    A, G = np.asarray(A, dtype=np.float64), np.asarray(G, dtype=np.float64)
    kron = np.kron(A, G)
    ref = gauss_newton_block(net, X, Y, l) if curvature == "gn" else fisher_block(net, X, l)
    return {"A": A, "G": G, "kron": kron, "exact": ref, "diff": kron - ref}

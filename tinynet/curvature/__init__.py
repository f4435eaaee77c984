"""Every matrix of the math, explicit (DESIGN.md, "Curvature and explicit matrices").

  matrices(net, z0, y0)            seed 001's M, N, D_x, D_x_shift, D_b, B_b, D_xx,
                                   D_xz, D_zx, D_zz, b, H and its four terms, one example
  hessian / gauss_newton / fisher / outer_product (net, X, ...)
                                   dense batch-mean curvature, (P, P) float64
  block_diagonal(matrix, net)      per-layer blocks
  hvp / gvp / fvp (net, X, Y, v)   matrix-free products for networks of any size
  check_dense(net, max_bytes=None) the size guard of the dense assembly

Stage contract used here (one file per stage kind holds its pieces):
  hess_xx, hess_zx, hess_xz, hess_zz (ctx)   explicit per-example second derivatives
  hvp_x(ctx, b, dz, dx, acc), hvp_z(ctx, b, dz, dx)   contracted with b, backend, one direction
  jvp_many, vjp_many, hvp_x_many, hvp_z_many          the same for C directions, host numpy
                                   (vjp_many(ctx, Wv, need_in=True, need_x=True))
  losses also: fisher_f(ctx), sample_targets(ctx, rng)
"""
from tinynet.curvature.dense import (FISHER_KINDS, block_diagonal, block_slices, fisher, gauss_newton,
                                     hessian, outer_product, output_jacobian, per_example_gradients)
from tinynet.curvature.guard import DEFAULT_MAX_BYTES, DenseTooLarge, check_dense, max_dense_bytes
from tinynet.curvature.products import fvp, gvp, hvp
from tinynet.curvature.seed import NAMES, SeedMatrices, matrices

__all__ = [
    "matrices", "SeedMatrices", "NAMES", "hessian", "gauss_newton", "fisher", "outer_product",
    "block_diagonal", "block_slices", "output_jacobian", "per_example_gradients", "FISHER_KINDS",
    "hvp", "gvp", "fvp", "check_dense", "DenseTooLarge", "DEFAULT_MAX_BYTES", "max_dense_bytes",
]

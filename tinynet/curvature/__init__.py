"""Every matrix of the math, explicit (DESIGN.md, "Curvature and explicit matrices").

  matrices(net, z0, y0)            seed 001's M, N, D_x, D_x_shift, D_b, B_b, D_xx,
                                   D_xz, D_zx, D_zz, b, H and its four terms, one example
  hessian / gauss_newton / fisher / outer_product (net, X, ...)
                                   dense batch-mean curvature, (P, P) float64
  block_diagonal(matrix, net)      per-layer blocks (slices of a dense matrix)
  hessian_block / gauss_newton_block / fisher_block (net, X, ..., l, k)
                                   one exact block between block indices l, k
                                   (positions in block_slices), no P x P matrix
  kfac_factors / input_moments / kron_vs_exact (net, X, ...)
                                   chapter 6: KFAC's A, G, the input mean and
                                   covariance C, A ⊗ G beside the exact GN block
  hvp / gvp / fvp (net, X, Y, v)   matrix-free products for networks of any size
  eigenvalues(A), top_eigenvalues(net, X, Y, curvature, k)
                                   spectra: dense eigvalsh, or scipy's Lanczos
                                   (eigsh) over a LinearOperator of hvp / gvp / fvp
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
from tinynet.curvature.block import (block_bytes, block_index, block_names, diagonal_blocks, fisher_block,
                                     gauss_newton_block, hessian_block)
from tinynet.curvature.kronecker import input_moments, kfac_factors, kron_layers, kron_vs_exact
from tinynet.curvature.guard import DEFAULT_MAX_BYTES, DenseTooLarge, check_dense, max_dense_bytes
from tinynet.curvature.products import fvp, gvp, hvp
from tinynet.curvature.spectrum import curvature_operator, eigenvalues, top_eigenvalues
from tinynet.curvature.seed import NAMES, SeedMatrices, matrices

__all__ = [
    "matrices", "SeedMatrices", "NAMES", "hessian", "gauss_newton", "fisher", "outer_product",
    "block_diagonal", "block_slices", "output_jacobian", "per_example_gradients", "FISHER_KINDS",
    "hessian_block", "gauss_newton_block", "fisher_block", "diagonal_blocks", "block_index", "block_names",
    "block_bytes", "kfac_factors", "input_moments", "kron_vs_exact", "kron_layers",
    "eigenvalues", "top_eigenvalues", "curvature_operator",
    "hvp", "gvp", "fvp", "check_dense", "DenseTooLarge", "DEFAULT_MAX_BYTES", "max_dense_bytes",
]
